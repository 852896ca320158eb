//! collection-svc: the collection unit's side of issuing fiscal e-bills into WeChat card
//! packages (wechat-fiscal-api.md steps 1–6). See README.md for running it.

mod app;
mod authorize;
mod bureau;
mod callback;
pub mod config;
mod convert;
mod dispatch;
pub mod domain;
mod error;
mod preflight;
mod service;
mod store;
mod units;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use fiscalbill_common::auth::Authenticator;
use fiscalbill_common::config::ConfigError;
use fiscalbill_common::db::{COMMON_MIGRATIONS, Db};
use fiscalbill_common::lifecycle::{self, AppCell, LifecycleError, Listen, RunningService, ServiceSpec, Storage};
use fiscalbill_common::metrics::Metrics;
use fiscalbill_common::proto::collection::collection_service_server::CollectionServiceServer;
use fiscalbill_common::replica::replica_id;
use fiscalbill_common::server::GrpcOptions;
use fiscalbill_common::sql_credentials::SqlCredentialStore;
use fiscalbill_common::tls::ServerTls;
use wechat::clock::SystemClock;
use wechat::{Credentials, TokenMode, WechatClient};

pub use config::CollectionConfig;
pub use dispatch::request_id;
pub use error::DOMAIN;
pub use preflight::preflight;

use app::App;
use units::Units;

const SERVICE_NAME: &str = "fiscalbill.collection.v1.CollectionService";
const SCHEMA: &str = "collection";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Units(#[from] units::UnitsError),
    #[error("WeChat client: {0}")]
    Client(String),
    #[error(transparent)]
    Bureau(#[from] bureau::BureauLinkError),
    #[error("TLS: {0}")]
    Tls(#[from] fiscalbill_common::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] fiscalbill_common::auth::AuthConfigError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(
        "unit {0} forwards status pushes to the bureau (a self-built platform, one account for both roles): both services \
         must use token_mode = \"stable_token\", because each cgi-bin/token fetch invalidates the other service's token \
         after 5 minutes"
    )]
    SelfBuiltTokenMode(String),
}

/// Starts collection-svc (see [`fiscalbill_common::lifecycle`]): listening once this returns,
/// SERVING once its database is ready.
pub async fn start(config: CollectionConfig) -> Result<RunningService, StartError> {
    if config.token_mode != TokenMode::StableToken
        && let Some(unit) = config.units.iter().find(|unit| unit.forward_url.is_some())
    {
        return Err(StartError::SelfBuiltTokenMode(unit.appid.clone()));
    }
    let (units, accounts) = Units::from_config(&config.units)?;
    let units = Arc::new(units);
    let metrics = Metrics::new("Authorizations by state");
    let client = WechatClient::new(&config.wechat)
        .map_err(|e| StartError::Client(e.to_string()))?
        .with_observer(metrics.clone());
    let max_message = config.authorization.pdf_max_bytes + 256 * 1024;
    let bureau_client = bureau::client(&config.bureau, max_message)?;
    let server = &config.server;
    let spec = ServiceSpec {
        name: "collection-svc",
        listen: Listen {
            grpc: server.grpc_listen,
            http: server.http_listen,
            admin: server.admin_listen,
            limits: server.limits,
        },
        grpc: GrpcOptions {
            services: vec![SERVICE_NAME],
            tls: server.tls.as_ref().map(ServerTls::tonic).transpose()?,
            authenticator: Authenticator::new(&config.auth, DOMAIN)?,
            metrics: metrics.clone(),
            max_message_bytes: max_message,
        },
        storage: Storage {
            config: config.database.clone(),
            schema: SCHEMA,
            migrations: vec![COMMON_MIGRATIONS, store::MIGRATIONS],
        },
        shutdown_grace: Duration::from_millis(server.shutdown_grace_ms),
    };

    let cell: AppCell<App> = Arc::default();
    let service = CollectionServiceServer::new(service::CollectionGrpc::new(cell.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let callback = callback::router(callback::CallbackState {
        units: units.clone(),
        app: cell.clone(),
        forwarder: callback::forwarder(),
        metrics: metrics.clone(),
    });
    let parts = Parts { config, client, accounts, units, bureau_client, metrics };
    let build = move |db: Db| build(parts, db);
    Ok(lifecycle::start(spec, cell, |router| router.add_service(service), callback, build).await?)
}

/// What the service is built from once its database is ready.
struct Parts {
    config: CollectionConfig,
    client: WechatClient,
    accounts: Vec<(String, wechat::Secret)>,
    units: Arc<Units>,
    bureau_client: bureau::BureauClient,
    metrics: Arc<Metrics>,
}

async fn build(parts: Parts, db: Db) -> Arc<App> {
    let store = store::Store::new(db.clone());
    let holder = replica_id(parts.config.server.replica_id.as_deref(), parts.config.server.grpc_listen);
    // This replica's leases from before a restart are its own again at once.
    match store.release_leases(&holder).await {
        Ok(0) => {}
        Ok(released) => {
            tracing::info!(released, replica = %holder, "took back the deliveries this replica held before its restart")
        }
        Err(error) => tracing::warn!(%error, "cannot release this replica's old leases; they expire on their own"),
    }
    let credentials = Arc::new(Credentials::new(
        parts.client,
        parts.accounts,
        parts.config.token_mode,
        Arc::new(SqlCredentialStore::new(db)),
        Arc::new(SystemClock),
    ));
    parts.metrics.watch_credentials(&credentials);
    let bureau = Arc::new(bureau::BureauLink::new(parts.bureau_client, &parts.config.bureau, store.clone()));
    let dispatcher = Arc::new(dispatch::Dispatcher::new(
        store.clone(),
        bureau.clone(),
        parts.config.dispatch.clone(),
        parts.config.authorization.pdf_max_bytes,
        holder,
    ));
    let authorizations = Arc::new(authorize::Authorizations::new(
        store.clone(),
        credentials.clone(),
        parts.units.clone(),
        bureau,
        dispatcher.clone(),
        parts.config.authorization.clone(),
    ));
    let watches = Arc::new(watch::Watches::new(
        store.clone(),
        parts.units.clone(),
        std::time::Duration::from_millis(parts.config.authorization.watch_poll_ms),
    ));
    Arc::new(App {
        store,
        watches,
        credentials,
        units: parts.units,
        authorizations,
        dispatcher,
        config: parts.config.authorization,
    })
}
