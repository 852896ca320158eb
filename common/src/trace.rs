//! W3C trace context (`traceparent`): one order is one trace, from the unit's business system
//! through collection-svc into bureau-svc, visible as `trace_id` in both services' logs and,
//! with span export on, in the exported spans (see [`crate::telemetry`]). Every gRPC request
//! runs in a server span whose parent is the caller's `traceparent`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::metadata::MetadataMap;
use tracing::Instrument;

use crate::telemetry;

/// A trace and the span that is its current parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub parent_id: String,
}

fn is_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && value.bytes().any(|b| b != b'0')
}

impl TraceContext {
    /// A new trace.
    pub fn root() -> Self {
        Self { trace_id: hex::encode(rand::random::<[u8; 16]>()), parent_id: hex::encode(rand::random::<[u8; 8]>()) }
    }

    /// The same trace with a new span of ours as parent.
    pub fn child(&self) -> Self {
        Self { trace_id: self.trace_id.clone(), parent_id: hex::encode(rand::random::<[u8; 8]>()) }
    }

    /// Continues `trace_id` (as stored) with a new span.
    pub fn continuing(trace_id: &str) -> Self {
        if is_hex(trace_id, 32) {
            Self { trace_id: trace_id.to_owned(), parent_id: String::new() }.child()
        } else {
            Self::root()
        }
    }

    /// Parses `00-<trace-id>-<parent-id>-<flags>`; anything else is None.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid =
            version.len() == 2 && version != "ff" && is_hex(trace_id, 32) && is_hex(parent_id, 16) && flags.len() == 2;
        valid.then(|| Self { trace_id: trace_id.to_owned(), parent_id: parent_id.to_owned() })
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.parent_id)
    }

    /// The caller's trace, or a new one.
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        metadata.get("traceparent").and_then(|v| v.to_str().ok()).and_then(Self::parse).unwrap_or_else(Self::root)
    }

    /// The trace a request runs in, to store with what it creates: the current (server) span's
    /// when spans are exported, so that later work continues it as a child of that span; else
    /// the caller's, or a new one.
    pub fn of_request(metadata: &MetadataMap) -> Self {
        match telemetry::current_ids() {
            Some((trace_id, parent_id)) => Self { trace_id, parent_id },
            None => Self::from_metadata(metadata),
        }
    }

    /// The context to send with a call made now on behalf of `stored` (an order's trace): the
    /// current (client) span's when spans are exported; else the stored trace with a new span id.
    pub fn for_call(stored: &TraceContext) -> Self {
        match telemetry::current_ids() {
            Some((trace_id, parent_id)) => Self { trace_id, parent_id },
            None => Self::continuing(&stored.trace_id),
        }
    }

    /// Makes `span` (not yet entered) a child of this context's span, when spans are exported
    /// and the span is known; later work on a stored order thus stays in the order's trace.
    pub fn continue_in(&self, span: &tracing::Span) {
        if !self.parent_id.is_empty() && telemetry::exporting() {
            telemetry::continue_trace(span, &self.trace_id, &self.parent_id);
        }
    }

    /// Sends this trace on with a call.
    pub fn inject(&self, metadata: &mut MetadataMap) {
        if let Ok(value) = self.header().parse() {
            metadata.insert("traceparent", value);
        }
    }
}

/// A tower layer running every request to this project's gRPC services in a server span, a
/// child of the caller's `traceparent` (health and reflection stay out).
#[derive(Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTraceService { inner }
    }
}

#[derive(Clone)]
pub struct GrpcTraceService<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for GrpcTraceService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !path.starts_with("/fiscalbill.") {
            return Box::pin(self.inner.call(request));
        }
        // A made-up path is named "unknown": callers cannot grow the span names.
        let name = crate::proto::method_name(path).map_or("unknown", |_| path.trim_start_matches('/'));
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let caller = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
        if let Some(caller) = caller {
            telemetry::continue_trace(&span, &caller.trace_id, &caller.parent_id);
        }
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let response = response.await?;
                let code = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0");
                tracing::Span::current().record("rpc.grpc.status_code", code);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_traceparent() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header).unwrap();
        assert_eq!(context.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.header(), header);
        let child = context.child();
        assert_eq!(child.trace_id, context.trace_id);
        assert_ne!(child.parent_id, context.parent_id);
        for bad in [
            "",
            "00-zz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        assert_eq!(TraceContext::continuing(&context.trace_id).trace_id, context.trace_id);
        assert_ne!(TraceContext::continuing("junk").trace_id, "junk");
    }

    #[test]
    fn travels_in_metadata() {
        let context = TraceContext::root();
        let mut metadata = MetadataMap::new();
        context.inject(&mut metadata);
        assert_eq!(TraceContext::from_metadata(&metadata), context);
        assert_ne!(TraceContext::from_metadata(&MetadataMap::new()).trace_id, context.trace_id);
    }
}
