//! collection-svc's parts, wired together once the database is ready.

use std::sync::Arc;

use fiscalbill_common::wechat::Credentials;

use crate::authorize::Authorizations;
use crate::config::AuthorizationConfig;
use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::units::Units;

pub struct App {
    pub store: Store,
    pub credentials: Arc<Credentials>,
    pub units: Arc<Units>,
    pub authorizations: Arc<Authorizations>,
    pub dispatcher: Arc<Dispatcher>,
    pub config: AuthorizationConfig,
}

/// Who this replica is in leases.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "collection".to_owned());
    format!("{host}-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 4]>()))
}
