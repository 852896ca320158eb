//! The bureau's parts, wired together once the database is ready.

use std::sync::Arc;

use crate::config::IssuingConfig;
use crate::issuer::Issuer;
use crate::reimburse::Reimburse;
use crate::spappid::SpAppIds;
use crate::store::Store;
use crate::templates::Templates;

pub struct App {
    pub store: Store,
    pub sp_app_ids: Arc<SpAppIds>,
    pub templates: Arc<Templates>,
    pub issuer: Arc<Issuer>,
    pub reimburse: Reimburse,
    pub issuing: IssuingConfig,
}

/// Who this replica is in leases and claims.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "bureau".to_owned());
    format!("{host}-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 4]>()))
}
