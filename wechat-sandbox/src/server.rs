//! The accept loop. It is hand-written (not `axum::serve`) so that a handler can drop its
//! connection without answering, the way a broken network does.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;

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

pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
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
        let _ = stream.set_nodelay(true);
        let kill = Arc::new(Notify::new());
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(ConnectionControl(kill.clone()))));
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                () = kill.notified() => {}
            }
        });
    }
}
