//! bureau-svc: the finance bureau's side of issuing fiscal e-bills into WeChat card packages
//! (wechat-fiscal-api.md steps 3 and 7–11). See README.md for running it.

mod app;
mod callback;
pub mod config;
mod convert;
pub mod domain;
mod error;
mod failures;
mod issuer;
pub mod pdf;
mod reimburse;
mod service;
mod spappid;
mod store;
mod templates;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fiscalbill_common::auth::Authenticator;
use fiscalbill_common::config::ConfigError;
use fiscalbill_common::db::{COMMON_MIGRATIONS, Db};
use fiscalbill_common::metrics::Metrics;
use fiscalbill_common::proto::bureau::bureau_service_server::BureauServiceServer;
use fiscalbill_common::server::{GrpcOptions, Health, Servers, admin_router, base_router, bind};
use fiscalbill_common::sql_credentials::SqlCredentialStore;
use fiscalbill_common::tls::ServerTls;
use tokio::sync::watch;
use wechat::callback::CallbackKeys;
use wechat::clock::SystemClock;
use wechat::{Credentials, WechatClient};

pub use config::BureauConfig;
pub use error::DOMAIN;

use app::App;

const SERVICE_NAME: &str = "fiscalbill.bureau.v1.BureauService";
const SCHEMA: &str = "bureau";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("bureau account: {0}")]
    Keys(String),
    #[error("WeChat client: {0}")]
    Client(String),
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] fiscalbill_common::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] fiscalbill_common::auth::AuthConfigError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// A started bureau-svc: its addresses and how to stop it.
pub struct RunningBureau {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBureau {
    /// Drains and stops: health NOT_SERVING, no new bills, in-flight bills finish their step
    /// or are parked, servers close.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds both listeners, then connects the database (retrying until it answers), migrates,
/// and only then reports SERVING.
pub async fn start(config: BureauConfig) -> Result<RunningBureau, StartError> {
    let secret = config.account.secret.resolve()?;
    let keys = match &config.account.callback_token {
        Some(token) => {
            let resolve =
                |s: &Option<fiscalbill_common::config::SecretSetting>| s.as_ref().map(|s| s.resolve()).transpose();
            let aes = resolve(&config.account.encoding_aes_key)?;
            let previous = resolve(&config.account.previous_encoding_aes_key)?;
            Some(
                CallbackKeys::new(
                    &config.account.appid,
                    token.resolve()?,
                    aes.as_ref(),
                    previous.as_ref(),
                    config.account.push_mode,
                )
                .map_err(|e| StartError::Keys(e.to_string()))?,
            )
        }
        None => None,
    };
    let metrics = Metrics::new("Bills by state");
    let client = WechatClient::new(&config.wechat)
        .map_err(|e| StartError::Client(e.to_string()))?
        .with_observer(metrics.clone());
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
    let max_message = config.issuing.pdf_max_bytes + 256 * 1024;
    let service = BureauServiceServer::new(service::BureauGrpc::new(app_cell.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let router = router.add_service(service);
    let http = callback::router(callback::CallbackState { keys, app: app_cell.clone(), metrics: metrics.clone() });
    let admin = admin_router(metrics.clone(), health.clone(), {
        let (app_cell, metrics) = (app_cell.clone(), metrics.clone());
        move || {
            let (app, metrics) = (app_cell.get().cloned(), metrics.clone());
            async move {
                if let Some(app) = app {
                    match app.store.count_by_state().await {
                        Ok(counts) => {
                            metrics.set_states(&domain::BillState::ALL.map(domain::BillState::as_str), &counts)
                        }
                        Err(error) => tracing::warn!(%error, "cannot count bills for metrics"),
                    }
                }
            }
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = Servers::spawn(router, grpc_listener, vec![(http, http_listener), (admin, admin_listener)], stop_rx);
    tracing::info!(%grpc_addr, %http_addr, %admin_addr, "bureau-svc listening");

    let parts = Parts { config, client, secret, metrics };
    let task = tokio::spawn(run(parts, app_cell, health, stop_tx.subscribe(), servers));
    Ok(RunningBureau { grpc_addr, http_addr, admin_addr, stop: stop_tx, task })
}

/// What the bureau is built from once its database is ready.
struct Parts {
    config: BureauConfig,
    client: WechatClient,
    secret: wechat::Secret,
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
    let mut worker = None;
    if let Some(db) = &db {
        let app = build(&parts, db.clone()).await;
        if let Err(error) = app.templates.onboard(&parts.config.units).await {
            tracing::error!(%error, "cannot record the configured units");
        }
        worker = Some(tokio::spawn(app.issuer.clone().run_worker()));
        let _ = app_cell.set(app);
        health.set(true).await;
        tracing::info!("bureau-svc ready");
        let _ = stop.wait_for(|stop| *stop).await;
    }

    tracing::info!("bureau-svc draining");
    health.set(false).await;
    if let Some(app) = app_cell.get() {
        app.issuer.shutdown(Duration::from_millis(parts.config.server.shutdown_grace_ms)).await;
    }
    if let Some(worker) = worker {
        worker.abort();
    }
    servers.join().await;
    if let Some(db) = db {
        db.close().await;
    }
    tracing::info!("bureau-svc stopped");
}

async fn build(parts: &Parts, db: Db) -> Arc<App> {
    let config = &parts.config;
    let store = store::Store::new(db.clone());
    let appid = config.account.appid.clone();
    let credentials = Arc::new(Credentials::new(
        parts.client.clone(),
        [(appid.clone(), parts.secret.clone())],
        config.account.token_mode,
        Arc::new(SqlCredentialStore::new(db)),
        Arc::new(SystemClock),
    ));
    parts.metrics.watch_credentials(credentials.clone());
    let holder = app::replica_id();
    let sp_app_ids = Arc::new(spappid::SpAppIds::new(store.clone(), credentials.clone(), appid.clone()));
    let templates =
        Arc::new(templates::Templates::new(store.clone(), credentials.clone(), appid.clone(), holder.clone()));
    let issuer = Arc::new(issuer::Issuer::new(
        store.clone(),
        credentials.clone(),
        templates.clone(),
        sp_app_ids.clone(),
        config.issuing.clone(),
        appid.clone(),
        config.account.name.clone(),
        holder,
    ));
    let reimburse = reimburse::Reimburse::new(store.clone(), credentials.clone(), appid);
    Arc::new(App { store, sp_app_ids, templates, issuer, reimburse, issuing: config.issuing.clone() })
}
