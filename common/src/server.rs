//! Server bootstrap shared by both services: gRPC with health (`grpc.health.v1`, NOT_SERVING
//! until ready and while draining) and reflection (v1 and v1alpha, every descriptor
//! registered), graceful shutdown, and logging.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::proto::FILE_DESCRIPTOR_SET;

/// Health of one gRPC server: the overall status ("") and the named services.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl Health {
    pub async fn set(&self, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

/// A tonic router with health and reflection, NOT_SERVING until [`Health::set`]. Add the
/// service itself, then [`serve`].
pub async fn base_router(services: Vec<&'static str>) -> (Router, Health) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health { reporter, services };
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
    let router = tonic::transport::Server::builder().add_service(health_service).add_service(v1).add_service(v1alpha);
    (router, health)
}

/// A service's gRPC and HTTP servers, running until the stop signal turns true.
pub struct Servers {
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Servers {
    pub fn spawn(
        grpc: Router,
        grpc_listener: TcpListener,
        http: axum::Router,
        http_listener: TcpListener,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let until_stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let grpc = tokio::spawn(serve(grpc, grpc_listener, until_stopped(stop.clone())));
        let http =
            tokio::spawn(
                async move { axum::serve(http_listener, http).with_graceful_shutdown(until_stopped(stop)).await },
            );
        Self { grpc, http }
    }

    /// Waits for both servers to finish their in-flight requests after the stop signal.
    pub async fn join(self) {
        if let Ok(Err(error)) = self.grpc.await {
            tracing::error!(%error, "gRPC server failed");
        }
        if let Ok(Err(error)) = self.http.await {
            tracing::error!(%error, "HTTP server failed");
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight calls finish.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, shutdown).await
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

/// Human-readable logs by default, JSON lines with `json`; `RUST_LOG` filters, else
/// `default_filter` (e.g. "info").
pub fn init_tracing(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
