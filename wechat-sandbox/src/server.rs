//! The accept loop. It is hand-written (not `axum::serve`) so that a handler can drop its
//! connection without answering, the way a broken network does. HTTP/1.1 only, as WeChat's API
//! is used; a connection must send its request headers in time and finish each request in time,
//! and there are at most so many at once, so that silent or slow clients cannot tie it up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// How long and how many: see [`crate::SandboxConfig`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

/// Lets a handler close its connection without an answer.
#[derive(Clone)]
pub struct ConnectionControl(Arc<Notify>);

impl ConnectionControl {
    /// Closes the connection; the handler should then never return.
    pub async fn drop_connection(&self) -> ! {
        self.0.notify_one();
        std::future::pending().await
    }
}

pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let router = router.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async { http::StatusCode::REQUEST_TIMEOUT }))
            .timeout(limits.request_timeout),
    );
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Over the cap: closed at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
        let _ = stream.set_nodelay(true);
        let kill = Arc::new(Notify::new());
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(ConnectionControl(kill.clone()))));
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                () = kill.notified() => {}
            }
            drop(permit);
        });
    }
}
