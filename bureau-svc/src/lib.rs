//! bureau-svc: the finance bureau's side of issuing fiscal e-bills into WeChat card packages
//! (wechat-fiscal-api.md steps 3 and 7–11). See README.md for running it.

mod app;
mod bills;
mod callback;
pub mod config;
mod convert;
pub mod domain;
mod error;
mod failures;
mod issuer;
pub mod pdf;
mod preflight;
mod reimburse;
mod service;
mod spappid;
mod store;
mod templates;

use std::sync::Arc;
use std::time::Duration;

use crate::pdf::sign::BillSigner;
use fiscalbill_common::auth::Authenticator;
use fiscalbill_common::config::ConfigError;
use fiscalbill_common::db::{COMMON_MIGRATIONS, Db};
use fiscalbill_common::lifecycle::{self, AppCell, LifecycleError, Listen, RunningService, ServiceSpec, Storage};
use fiscalbill_common::metrics::Metrics;
use fiscalbill_common::proto::bureau::bureau_service_server::BureauServiceServer;
use fiscalbill_common::replica::replica_id;
use fiscalbill_common::server::GrpcOptions;
use fiscalbill_common::sql_credentials::SqlCredentialStore;
use fiscalbill_common::tls::ServerTls;
use wechat::callback::CallbackKeys;
use wechat::clock::SystemClock;
use wechat::reachability::Reachability;
use wechat::{Credentials, TokenMode, WechatClient};

pub use config::BureauConfig;
pub use error::DOMAIN;
pub use preflight::preflight;

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
    Signing(String),
    #[error("TLS: {0}")]
    Tls(#[from] fiscalbill_common::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] fiscalbill_common::auth::AuthConfigError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(
        "account {0} is also a collection unit here (a self-built platform): both services must use token_mode = \"stable_token\", \
         because each cgi-bin/token fetch invalidates the other service's token after 5 minutes"
    )]
    SelfBuiltTokenMode(String),
}

/// Starts bureau-svc (see [`fiscalbill_common::lifecycle`]): listening once this returns,
/// SERVING once its database is ready.
pub async fn start(config: BureauConfig) -> Result<RunningService, StartError> {
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
    let appid = &config.account.appid;
    if config.account.token_mode != TokenMode::StableToken && config.units.iter().any(|unit| &unit.appid == appid) {
        return Err(StartError::SelfBuiltTokenMode(appid.clone()));
    }
    let signer = match &config.signing {
        Some(signing) => Some(Arc::new(signing.signer().map_err(StartError::Signing)?)),
        None => {
            tracing::warn!("[signing] is not configured: the bills this bureau renders are not signed");
            None
        }
    };
    if let Some(signer) = &signer {
        tracing::info!(certificate_sha256 = signer.fingerprint(), "bills are signed");
    }
    let image_host = image_host(&config.wechat.base_url);
    let units = config.units.iter().map(|unit| unit.resolve(image_host.as_deref())).collect::<Result<Vec<_>, _>>()?;
    let metrics = Metrics::new("Bills by state");
    let reachability = Arc::new(Reachability::default());
    let client = WechatClient::new(&config.wechat)
        .map_err(|e| StartError::Client(e.to_string()))?
        .with_observer(metrics.clone())
        .with_observer(reachability.clone());
    let max_message = config.issuing.pdf_max_bytes + 256 * 1024;
    let server = &config.server;
    let spec = ServiceSpec {
        name: "bureau-svc",
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
    let service = BureauServiceServer::new(service::BureauGrpc::new(cell.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let callback = callback::router(callback::CallbackState { keys, app: cell.clone(), metrics: metrics.clone() });
    let parts = Parts { config, client, secret, metrics, image_host, reachability, signer };
    let build = move |db: Db| async move {
        let app = build(&parts, db).await;
        if let Err(error) = app.templates.onboard(&units).await {
            tracing::error!(%error, "cannot record the configured units");
        }
        app
    };
    Ok(lifecycle::start(spec, cell, |router| router.add_service(service), callback, build).await?)
}

/// What the bureau is built from once its database is ready.
struct Parts {
    config: BureauConfig,
    client: WechatClient,
    secret: wechat::Secret,
    metrics: Arc<Metrics>,
    image_host: Option<String>,
    reachability: Arc<Reachability>,
    signer: Option<Arc<BillSigner>>,
}

/// The host of the WeChat API base URL: its image URLs are taken as logos too.
fn image_host(base_url: &str) -> Option<String> {
    url::Url::parse(base_url).ok()?.host_str().map(str::to_owned)
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
    parts.metrics.watch_credentials(&credentials);
    let holder = replica_id(config.server.replica_id.as_deref(), config.server.grpc_listen);
    // This replica's leases from before a restart are its own again at once.
    match store.release_leases(&holder).await {
        Ok(0) => {}
        Ok(released) => {
            tracing::info!(released, replica = %holder, "took back the bills this replica held before its restart")
        }
        Err(error) => tracing::warn!(%error, "cannot release this replica's old leases; they expire on their own"),
    }
    let sp_app_ids = Arc::new(spappid::SpAppIds::new(store.clone(), credentials.clone(), appid.clone()));
    let templates = Arc::new(templates::Templates::new(
        store.clone(),
        credentials.clone(),
        appid.clone(),
        config.account.token_mode,
        holder.clone(),
    ));
    let issuer = Arc::new(issuer::Issuer::new(
        store.clone(),
        credentials.clone(),
        templates.clone(),
        sp_app_ids.clone(),
        config.issuing.clone(),
        appid.clone(),
        config.account.name.clone(),
        holder,
        parts.reachability.clone(),
        parts.signer.clone(),
        config.signing.as_ref().is_some_and(|signing| signing.sign_supplied),
    ));
    let reimburse = reimburse::Reimburse::new(store.clone(), credentials.clone(), appid.clone());
    let bills = bills::Bills::new(store);
    Arc::new(App {
        bureau_appid: appid,
        credentials,
        bills,
        sp_app_ids,
        templates,
        issuer,
        reimburse,
        issuing: config.issuing.clone(),
        image_host: parts.image_host.clone(),
    })
}
