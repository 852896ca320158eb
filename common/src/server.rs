//! Server bootstrap shared by both services: gRPC with health (`grpc.health.v1`, NOT_SERVING
//! until ready and while draining), reflection (v1 and v1alpha, every descriptor registered),
//! TLS, metrics and authentication layers; the admin HTTP endpoints; graceful shutdown; and
//! logging.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tonic::transport::ServerTlsConfig;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

use crate::auth::{AuthLayer, Authenticator};
use crate::connections::{ConnectionLimits, guarded_incoming, serve_http};
use crate::grpc_errors::ErrorInfoLayer;
use crate::message_budget::{MessageBudgetLayer, budget_of_mib};
use crate::metrics::{GrpcMetricsLayer, Metrics};
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::trace::GrpcTraceLayer;

/// Health of one gRPC server: the overall status ("") and the named services.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
    serving: Arc<AtomicBool>,
    /// A problem that leaves the service up but worth an operator's eye (WeChat refusing an
    /// account), shown by `/healthz`.
    detail: Arc<std::sync::Mutex<Option<String>>>,
}

impl Health {
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    pub fn set_detail(&self, detail: Option<String>) {
        *self.detail.lock().unwrap() = detail;
    }

    pub fn detail(&self) -> Option<String> {
        self.detail.lock().unwrap().clone()
    }

    pub async fn set(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

/// The layers every gRPC request passes: its server span (outermost), metrics, ErrorInfo on
/// the framework's own statuses, authentication, then the budget of request bytes.
pub type GrpcLayers = Stack<
    Stack<
        MessageBudgetLayer,
        Stack<AuthLayer, Stack<ErrorInfoLayer, Stack<GrpcMetricsLayer, Stack<GrpcTraceLayer, Identity>>>>,
    >,
    Identity,
>;

/// What a service's gRPC server is built with.
pub struct GrpcOptions {
    /// The services it serves, e.g. `fiscalbill.bureau.v1.BureauService`.
    pub services: Vec<&'static str>,
    pub tls: Option<ServerTlsConfig>,
    pub authenticator: Authenticator,
    pub metrics: Arc<Metrics>,
    /// The largest message the service decodes (named when a larger one is refused).
    pub max_message_bytes: usize,
}

/// A tonic router with health and reflection, NOT_SERVING until [`Health::set`], behind TLS
/// (when configured), metrics and authentication. Add the service itself, then [`serve`].
pub async fn base_router(
    options: GrpcOptions,
    limits: ConnectionLimits,
) -> Result<(Router<GrpcLayers>, Health), tonic::transport::Error> {
    let GrpcOptions { services, tls, authenticator, metrics, max_message_bytes } = options;
    let errors = ErrorInfoLayer { domain: authenticator.domain(), max_message_bytes };
    let budget = budget_of_mib(limits.message_budget_mib);
    let budget = MessageBudgetLayer::new(budget, max_message_bytes, authenticator.domain(), metrics.clone());
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health { reporter, services, serving: Arc::default(), detail: Arc::default() };
    health.set(false).await;
    // Every descriptor is registered (so error details decode), but only the services this
    // server really serves are listed.
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for service in &health.services {
            builder = builder.with_service_name(*service);
        }
        builder
    };
    let v1 = reflection()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .expect("descriptors are valid");
    let v1alpha = reflection()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .expect("descriptors are valid");
    let mut builder = limits.grpc_builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.timeout(limits.handshake_timeout()))?;
    }
    let layers = ServiceBuilder::new()
        .layer(GrpcTraceLayer)
        .layer(GrpcMetricsLayer(metrics))
        .layer(errors)
        .layer(AuthLayer::new(authenticator))
        .layer(budget)
        .into_inner();
    let router = builder.layer(layers).add_service(health_service).add_service(v1).add_service(v1alpha);
    Ok((router, health))
}

/// The admin HTTP endpoints: `GET /metrics` (Prometheus text, after `refresh` updated the
/// scrape-time gauges) and `GET /healthz` (200 while serving, 503 otherwise; a further line
/// names a problem that leaves the service up, such as WeChat refusing an account).
pub fn admin_router<F, Fut>(metrics: Arc<Metrics>, health: Health, refresh: F) -> axum::Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    use axum::response::IntoResponse;
    let scrape = move || {
        let (metrics, refresh) = (metrics.clone(), refresh.clone());
        async move {
            let text = metrics.scrape(refresh()).await;
            ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
    };
    let healthz = move || {
        let (serving, detail) = (health.is_serving(), health.detail());
        async move {
            let (status, state) = if serving {
                (http::StatusCode::OK, "serving")
            } else {
                (http::StatusCode::SERVICE_UNAVAILABLE, "not serving")
            };
            match detail {
                Some(detail) => (status, format!("{state}\n{detail}\n")),
                None => (status, state.to_owned()),
            }
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(scrape)).route("/healthz", axum::routing::get(healthz))
}

/// A service's gRPC server and HTTP servers (callback, admin), running until the stop signal
/// turns true.
pub struct Servers {
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Servers {
    pub fn spawn(
        grpc: Router<GrpcLayers>,
        grpc_listener: TcpListener,
        http: Vec<(axum::Router, TcpListener)>,
        limits: ConnectionLimits,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let until_stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let grpc = tokio::spawn(serve(grpc, grpc_listener, limits, until_stopped(stop.clone())));
        let http = http
            .into_iter()
            .map(|(router, listener)| tokio::spawn(serve_http(listener, router, limits, until_stopped(stop.clone()))))
            .collect();
        Self { grpc, http }
    }

    /// Waits for the servers to finish their in-flight requests after the stop signal.
    pub async fn join(self) {
        if let Ok(Err(error)) = self.grpc.await {
            tracing::error!(%error, "gRPC server failed");
        }
        for server in self.http {
            if let Ok(Err(error)) = server.await {
                tracing::error!(%error, "HTTP server failed");
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight calls finish.
pub async fn serve(
    router: Router<GrpcLayers>,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    router.serve_with_incoming_shutdown(guarded_incoming(listener, limits), shutdown).await
}

/// Binds a listener, with the address in the error.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))
}

/// Waits until the gRPC server at `addr` reports SERVING (plaintext), up to `limit`.
pub async fn wait_until_serving(addr: SocketAddr, limit: std::time::Duration) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?.connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let answer = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
        if answer.is_ok_and(|a| a.into_inner().status == Status::Serving as i32) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Err(format!("{addr} did not report SERVING within {limit:?}"))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Sets glibc's two malloc thresholds for a service's pattern of buffers. Called first in each
/// service's `main`; nothing to do with other C libraries.
///
/// - Large buffers (a bill PDF, a whole gRPC message) go back to the system as soon as they are
///   freed. Left to itself, glibc raises its mmap threshold after the first large buffer is freed
///   (up to 32 MiB) and from then on keeps such buffers in the freeing thread's arena: a service
///   that once handled a 10 MiB PDF stays several PDFs larger. Setting the threshold turns that
///   adjustment off.
/// - The heap that holds everything smaller keeps up to 8 MiB free at its top. With the mmap
///   threshold set, glibc's trim threshold stays at its 128 KiB default, below what a service
///   frees and allocates again for each bill, so the top of the heap went back to the system and
///   was faulted in again about 15 times per bill (BENCHMARKS.md).
pub fn set_malloc_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; glibc serializes it with allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    }
}
