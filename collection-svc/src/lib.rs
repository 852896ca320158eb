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
mod service;
mod store;
mod units;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fiscalbill_common::auth::Authenticator;
use fiscalbill_common::config::ConfigError;
use fiscalbill_common::db::{COMMON_MIGRATIONS, Db};
use fiscalbill_common::metrics::Metrics;
use fiscalbill_common::proto::collection::collection_service_server::CollectionServiceServer;
use fiscalbill_common::server::{GrpcOptions, Health, Servers, admin_router, base_router, bind};
use fiscalbill_common::sql_credentials::SqlCredentialStore;
use fiscalbill_common::tls::ServerTls;
use tokio::sync::watch;
use wechat::clock::SystemClock;
use wechat::{Credentials, WechatClient};

pub use config::CollectionConfig;
pub use dispatch::request_id;
pub use error::DOMAIN;

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
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] fiscalbill_common::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] fiscalbill_common::auth::AuthConfigError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// A started collection-svc: its addresses and how to stop it.
pub struct RunningCollection {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningCollection {
    /// Drains and stops: health NOT_SERVING, no new deliveries, servers close.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds both listeners, then connects the database (retrying until it answers), migrates,
/// and only then reports SERVING.
pub async fn start(config: CollectionConfig) -> Result<RunningCollection, StartError> {
    let (units, accounts) = Units::from_config(&config.units)?;
    let units = Arc::new(units);
    let metrics = Metrics::new("Authorizations by state");
    let client = WechatClient::new(&config.wechat)
        .map_err(|e| StartError::Client(e.to_string()))?
        .with_observer(metrics.clone());
    let max_message = config.authorization.pdf_max_bytes + 256 * 1024;
    let bureau_client = bureau::client(&config.bureau, max_message)?;
    let grpc = GrpcOptions {
        services: vec![SERVICE_NAME],
        tls: config.server.tls.as_ref().map(ServerTls::tonic).transpose()?,
        authenticator: Authenticator::new(&config.auth, DOMAIN)?,
        metrics: metrics.clone(),
    };

    let grpc_listener = bind(config.server.grpc_listen).await?;
    let http_listener = bind(config.server.http_listen).await?;
    let admin_listener = bind(config.server.admin_listen).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let app_cell: Arc<OnceLock<Arc<App>>> = Arc::default();
    let (router, health) = base_router(grpc).await?;
    let service = CollectionServiceServer::new(service::CollectionGrpc::new(app_cell.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let router = router.add_service(service);
    let http = callback::router(callback::CallbackState {
        units: units.clone(),
        app: app_cell.clone(),
        forwarder: callback::forwarder(),
        metrics: metrics.clone(),
    });
    let admin = admin_router(metrics.clone(), health.clone(), {
        let (app_cell, metrics) = (app_cell.clone(), metrics.clone());
        move || {
            let (app, metrics) = (app_cell.get().cloned(), metrics.clone());
            async move {
                if let Some(app) = app {
                    app.refresh_metrics(&metrics).await;
                }
            }
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = Servers::spawn(router, grpc_listener, vec![(http, http_listener), (admin, admin_listener)], stop_rx);
    tracing::info!(%grpc_addr, %http_addr, %admin_addr, "collection-svc listening");

    let parts = Parts { config, client, accounts, units, bureau_client, metrics };
    let task = tokio::spawn(run(parts, app_cell, health, stop_tx.subscribe(), servers));
    Ok(RunningCollection { grpc_addr, http_addr, admin_addr, stop: stop_tx, task })
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

async fn run(
    parts: Parts,
    app_cell: Arc<OnceLock<Arc<App>>>,
    health: Health,
    mut stop: watch::Receiver<bool>,
    servers: Servers,
) {
    let db = tokio::select! {
        db = Db::connect_until_ready(&parts.config.database, SCHEMA, &[COMMON_MIGRATIONS, store::MIGRATIONS]) => Some(db),
        _ = stop.wait_for(|stop| *stop) => None,
    };
    let grace = Duration::from_millis(parts.config.server.shutdown_grace_ms);
    let mut tasks = Vec::new();
    if let Some(db) = &db {
        let app = match build(parts, db.clone()) {
            Ok(app) => app,
            Err(error) => {
                tracing::error!(%error, "cannot build collection-svc");
                return;
            }
        };
        tasks.push(tokio::spawn(app.dispatcher.clone().run()));
        tasks.push(tokio::spawn(app.authorizations.clone().run_reconciler(stop.clone())));
        let _ = app_cell.set(app);
        health.set(true).await;
        tracing::info!("collection-svc ready");
        let _ = stop.wait_for(|stop| *stop).await;
    }

    tracing::info!("collection-svc draining");
    health.set(false).await;
    if let Some(app) = app_cell.get() {
        app.dispatcher.shutdown(grace).await;
    }
    for task in tasks {
        task.abort();
    }
    servers.join().await;
    if let Some(db) = db {
        db.close().await;
    }
    tracing::info!("collection-svc stopped");
}

fn build(parts: Parts, db: Db) -> Result<Arc<App>, StartError> {
    let store = store::Store::new(db.clone());
    let credentials = Arc::new(Credentials::new(
        parts.client,
        parts.accounts,
        parts.config.token_mode,
        Arc::new(SqlCredentialStore::new(db)),
        Arc::new(SystemClock),
    ));
    parts.metrics.watch_credentials(credentials.clone());
    let bureau = Arc::new(bureau::BureauLink::new(parts.bureau_client, &parts.config.bureau, store.clone()));
    let dispatcher = Arc::new(dispatch::Dispatcher::new(
        store.clone(),
        bureau.clone(),
        parts.config.dispatch.clone(),
        app::replica_id(),
    ));
    let authorizations = Arc::new(authorize::Authorizations::new(
        store.clone(),
        credentials.clone(),
        parts.units.clone(),
        bureau,
        dispatcher.clone(),
        parts.config.authorization.clone(),
    ));
    Ok(Arc::new(App {
        store,
        credentials,
        units: parts.units,
        authorizations,
        dispatcher,
        config: parts.config.authorization,
    }))
}
