//! The lifecycle every service shares, from start to stop:
//!
//! 1. bind the gRPC, callback HTTP and admin listeners (an address in use fails the start);
//! 2. serve at once: health (NOT_SERVING), reflection, authentication and metrics on gRPC, the
//!    callback routes, `/metrics` and `/healthz`; the service's handlers answer NOT_READY until
//!    its application exists;
//! 3. connect and migrate the database, retrying until it answers;
//! 4. build the application, start its background work, report SERVING;
//! 5. on stop: NOT_SERVING, the application drains (no new work, in-flight work finishes up to
//!    the grace), background work ends, the servers finish their requests, the database closes.
//!
//! Once the application runs, the start check tries its WeChat accounts and makes a refusal
//! visible (a log line with the fix, `/healthz`, `fiscalbill_wechat_ready`) before a request
//! meets it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::Router;
use wechat::CallError;

use crate::connections::ConnectionLimits;
use crate::db::{DatabaseConfig, Db, Migration};
use crate::metrics::Metrics;
use crate::preflight::fix_for;
use crate::server::{GrpcLayers, GrpcOptions, Health, Servers, admin_router, base_router, bind};

/// A service's application once its database is ready: what the lifecycle drives.
pub trait Application: Send + Sync + 'static {
    /// Starts the background work (workers, reconcilers). The tasks are aborted after the
    /// drain; `stop` turns true when the drain begins.
    fn spawn_background(self: &Arc<Self>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>>;

    /// Stops taking work and lets in-flight work finish or park, up to `grace`.
    fn drain(&self, grace: Duration) -> impl Future<Output = ()> + Send;

    /// Updates the gauges read at scrape time (records by state, queue depths).
    fn refresh_metrics(&self, metrics: &Metrics) -> impl Future<Output = ()> + Send;

    /// Tries the service's WeChat accounts (an access token each; a cached one counts): the
    /// start check, which makes a misconfiguration visible before the first request meets it.
    fn check_wechat(&self) -> impl Future<Output = Result<(), AccountProblem>> + Send;
}

/// An account WeChat would not serve at the start check.
#[derive(Debug)]
pub struct AccountProblem {
    pub appid: String,
    pub error: CallError,
}

/// How often the start check is repeated until it passes.
const WECHAT_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The application, once built: handlers hold this from the start and answer NOT_READY while
/// it is empty.
pub type AppCell<A> = Arc<OnceLock<Arc<A>>>;

/// Where a service listens.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    pub grpc: SocketAddr,
    /// WeChat's pushes.
    pub http: SocketAddr,
    /// Metrics and health, for operators.
    pub admin: SocketAddr,
    /// Timeouts and connection caps on all three.
    pub limits: ConnectionLimits,
}

/// A service's database: where, its schema and its migrations.
pub struct Storage {
    pub config: DatabaseConfig,
    pub schema: &'static str,
    pub migrations: Vec<&'static [Migration]>,
}

/// Everything the lifecycle needs to know of a service, but its own parts.
pub struct ServiceSpec {
    /// For logs: `bureau-svc`, `collection-svc`.
    pub name: &'static str,
    pub listen: Listen,
    pub grpc: GrpcOptions,
    pub storage: Storage,
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// A started service: its addresses as bound, and how to stop it.
pub struct RunningService {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningService {
    /// Drains and stops (see the module documentation); returns when everything is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts a service: `add_service` adds its gRPC service to the router, `callback` is its HTTP
/// router for WeChat's pushes, and `build` makes its application once the database is ready.
/// Returns once the listeners are bound; the rest happens in the background.
pub async fn start<A, Build, Built>(
    spec: ServiceSpec,
    cell: AppCell<A>,
    add_service: impl FnOnce(Router<GrpcLayers>) -> Router<GrpcLayers>,
    callback: axum::Router,
    build: Build,
) -> Result<RunningService, LifecycleError>
where
    A: Application,
    Build: FnOnce(Db) -> Built + Send + 'static,
    Built: Future<Output = Arc<A>> + Send + 'static,
{
    let ServiceSpec { name, listen, grpc, storage, shutdown_grace } = spec;
    let metrics = grpc.metrics.clone();
    let grpc_metrics = metrics.clone();
    let grpc_listener = bind(listen.grpc).await?;
    let http_listener = bind(listen.http).await?;
    let admin_listener = bind(listen.admin).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let (router, health) = base_router(grpc, listen.limits).await?;
    let router = add_service(router);
    let admin = admin_router(metrics.clone(), health.clone(), {
        let cell = cell.clone();
        move || {
            let (app, metrics) = (cell.get().cloned(), metrics.clone());
            async move {
                if let Some(app) = app {
                    app.refresh_metrics(&metrics).await;
                }
            }
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = Servers::spawn(
        router,
        grpc_listener,
        vec![(callback, http_listener), (admin, admin_listener)],
        listen.limits,
        stop_rx,
    );
    tracing::info!(service = name, %grpc_addr, %http_addr, %admin_addr, "listening");

    let lifecycle = Lifecycle { name, storage, shutdown_grace, cell, health, servers, metrics: grpc_metrics };
    let task = tokio::spawn(lifecycle.run(build, stop_tx.subscribe()));
    Ok(RunningService { grpc_addr, http_addr, admin_addr, stop: stop_tx, task })
}

struct Lifecycle<A> {
    name: &'static str,
    storage: Storage,
    shutdown_grace: Duration,
    cell: AppCell<A>,
    health: Health,
    servers: Servers,
    metrics: Arc<Metrics>,
}

impl<A: Application> Lifecycle<A> {
    async fn run<Build, Built>(self, build: Build, mut stop: watch::Receiver<bool>)
    where
        Build: FnOnce(Db) -> Built + Send + 'static,
        Built: Future<Output = Arc<A>> + Send + 'static,
    {
        let Lifecycle { name, storage, shutdown_grace, cell, health, servers, metrics } = self;
        let db = tokio::select! {
            db = Db::connect_until_ready(&storage.config, storage.schema, &storage.migrations) => Some(db),
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let mut background = Vec::new();
        if let Some(db) = &db {
            let app = build(db.clone()).await;
            background = app.spawn_background(stop.clone());
            background.push(tokio::spawn(check_wechat(name, app.clone(), metrics, health.clone())));
            let _ = cell.set(app);
            health.set(true).await;
            tracing::info!(service = name, "ready");
            let _ = stop.wait_for(|stop| *stop).await;
        }

        tracing::info!(service = name, "draining");
        health.set(false).await;
        if let Some(app) = cell.get() {
            app.drain(shutdown_grace).await;
        }
        for task in background {
            task.abort();
        }
        servers.join().await;
        if let Some(db) = db {
            db.close().await;
        }
        tracing::info!(service = name, "stopped");
    }
}

/// The start check: tries the service's WeChat accounts until WeChat serves them all, and
/// until then logs each new problem once with its fix, shows it on `/healthz` and keeps
/// `fiscalbill_wechat_ready` at 0. The service stays up meanwhile: WeChat may come back.
async fn check_wechat<A: Application>(name: &'static str, app: Arc<A>, metrics: Arc<Metrics>, health: Health) {
    let mut last_problem = String::new();
    loop {
        match app.check_wechat().await {
            Ok(()) => {
                metrics.wechat_ready.set(1);
                health.set_detail(None);
                tracing::info!(service = name, "WeChat serves every account of this service");
                return;
            }
            Err(AccountProblem { appid, error }) => {
                metrics.wechat_ready.set(0);
                let fix = fix_for(&appid, &error);
                let problem = format!("WeChat account {appid}: {error}; fix: {fix}");
                if problem != last_problem {
                    let (errcode, rid) = match &error {
                        CallError::Wechat(wechat) => (wechat.errcode(), wechat.rid().map(str::to_owned)),
                        _ => (None, None),
                    };
                    tracing::error!(service = name, %appid, errcode, rid, %error, %fix, "WeChat does not serve this account");
                    health.set_detail(Some(problem.clone()));
                    last_problem = problem;
                }
            }
        }
        tokio::time::sleep(WECHAT_CHECK_INTERVAL).await;
    }
}
