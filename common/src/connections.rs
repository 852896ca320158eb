//! What a client may hold on each port, so that slow, silent or numerous connections cannot
//! tie a service up: `[server.limits]`. The HTTP ports (WeChat's pushes, the admin endpoints)
//! read request headers within `header_read_timeout_ms` (also how long an idle connection
//! stays open) and finish each request, body included, within `request_timeout_ms`; the gRPC
//! port closes a connection that does not begin its HTTP/2 (or TLS) handshake within
//! `handshake_timeout_ms` and pings idle connections, closing those that stop answering. Each
//! port takes at most `max_connections`; further ones are closed at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// `[server.limits]`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// HTTP: a request's headers must arrive within this; an idle connection is closed after it.
    pub header_read_timeout_ms: u64,
    /// HTTP: a request, its body and its answer must be done within this (else 408).
    pub request_timeout_ms: u64,
    /// gRPC: a new connection must send its HTTP/2 preface and first frame (or its TLS hello)
    /// within this; TLS handshakes must also complete within it.
    pub handshake_timeout_ms: u64,
    /// gRPC: idle connections are pinged this often...
    pub keepalive_interval_ms: u64,
    /// ...and closed when a ping is not answered within this.
    pub keepalive_timeout_ms: u64,
    /// Open connections per port.
    pub max_connections: usize,
    /// gRPC: the request messages being received and handled at once may total this many MiB,
    /// each counted at the length its prefix declares; a request that does not fit is refused
    /// with UNAVAILABLE `SERVER_BUSY` before its message is read ([`crate::message_budget`]).
    /// 0: no bound but the connection and stream caps.
    pub message_budget_mib: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            handshake_timeout_ms: 10_000,
            keepalive_interval_ms: 60_000,
            keepalive_timeout_ms: 20_000,
            max_connections: 1_024,
            message_budget_mib: 256,
        }
    }
}

impl ConnectionLimits {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The gRPC server with keepalive pings.
    pub fn grpc_builder(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_millis(self.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(Duration::from_millis(self.keepalive_timeout_ms)))
    }
}

/// Serves `router` over HTTP/1.1 on `listener` within `limits` until `shutdown`, then lets the
/// requests in flight finish.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let request_timeout = Duration::from_millis(limits.request_timeout_ms);
    let router = router.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async { http::StatusCode::REQUEST_TIMEOUT }))
            .timeout(request_timeout),
    );
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the cap: closed at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
        let _ = stream.set_nodelay(true);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    // In-flight requests finish (bounded by the request timeout).
    let _ = tokio::time::timeout(request_timeout, graceful.shutdown()).await;
    Ok(())
}

/// The gRPC port's connections: at most `max_connections`, each closed unless it begins its
/// handshake in time.
pub fn guarded_incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl futures_util::Stream<Item = io::Result<GuardedStream>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
            let _ = stream.set_nodelay(true);
            let guarded = GuardedStream::new(stream, permit, limits.handshake_timeout());
            return Some((Ok(guarded), (listener, slots)));
        }
    })
}

/// Bytes a client sends first: the HTTP/2 preface (24) and a frame header (9); a TLS hello is
/// longer.
const HANDSHAKE_BYTES: usize = 33;

/// A gRPC connection: holds its place under the cap, and fails its reads if the client has not
/// sent its first bytes before the deadline.
pub struct GuardedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Until the handshake's first bytes arrived.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    received: usize,
}

impl GuardedStream {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, handshake_timeout: Duration) -> Self {
        let deadline = Some(Box::pin(tokio::time::sleep(handshake_timeout)));
        Self { stream, _permit: permit, deadline, received: 0 }
    }
}

impl Connected for GuardedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no handshake in time")));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if this.deadline.is_some() {
            this.received += buf.filled().len() - before;
            if this.received >= HANDSHAKE_BYTES {
                this.deadline = None;
            }
        }
        read
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
