//! Logs and traces. Logs are human-readable or JSON lines (`[log] json`), filtered by
//! `RUST_LOG`. With `[telemetry] otlp_endpoint` the spans also go to an OpenTelemetry collector
//! over OTLP (gRPC), W3C trace context links the services, and one order is one trace: the
//! gRPC server and client spans, each WeChat call, each storage unit of work and each push.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogConfig;

/// `[telemetry]`: where spans go.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An OTLP/gRPC receiver (an OpenTelemetry collector, Jaeger, Tempo), e.g.
    /// `http://otel-collector:4317`. None: no spans are exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans; default: the program's name.
    pub service_name: Option<String>,
}

/// Spans are exported (`[telemetry] otlp_endpoint` set): worth reading a stored trace to
/// continue it.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The installed exporter, to flush at exit.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (waits up to a few seconds).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: {error}");
        }
    }
}

/// Installs logging and, when configured, span export. Call once, inside a Tokio runtime
/// (the OTLP client runs on it). Later calls leave the first installation in place.
pub fn init(service: &str, log: &LogConfig, telemetry: &TelemetryConfig, default_filter: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = if log.json {
        tracing_subscriber::fmt::layer().json().with_filter(filter).boxed()
    } else {
        // Colours only for a terminal: log files and journald get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt::layer().with_ansi(ansi).with_filter(filter).boxed()
    };
    let provider = telemetry.otlp_endpoint.as_ref().and_then(|endpoint| {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| eprintln!("telemetry: cannot export to {endpoint}: {error}"))
            .ok()?;
        let name = telemetry.service_name.clone().unwrap_or_else(|| service.to_owned());
        let resource = Resource::builder().with_service_name(name).build();
        Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
    });
    // Spans of this project's crates at info and above; the dependencies' own stay out.
    let otel = provider.as_ref().map(|provider| {
        let targets = tracing_subscriber::filter::Targets::new()
            .with_target("fiscalbill_common", tracing::Level::INFO)
            .with_target("bureau_svc", tracing::Level::INFO)
            .with_target("collection_svc", tracing::Level::INFO)
            .with_target("wechat", tracing::Level::INFO);
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned())).with_filter(targets)
    });
    // Without an exporter, no OpenTelemetry layer at all: an absent (`None`) layer declares an
    // interest in every callsite, so every event of every crate (h2's and hyper's trace events
    // among them) would be built and offered to the filters, 2-4% of a service's CPU.
    let registry = tracing_subscriber::registry().with(fmt).with(crate::statement_counts::layer());
    let installed = match otel {
        Some(otel) => registry.with(otel).try_init(),
        None => registry.try_init(),
    }
    .is_ok();
    EXPORTING.store(installed && provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    Telemetry { provider }
}

/// The W3C trace context of the current span, if spans are exported: `(trace_id, span_id)` in
/// lowercase hex.
pub fn current_ids() -> Option<(String, String)> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.span_id().to_string()))
}

/// Makes `span` a child of the span `(trace_id, span_id)` of another task or process (a stored
/// order's trace), so that one order is one trace. Ids that do not parse are ignored.
pub fn continue_trace(span: &tracing::Span, trace_id: &str, span_id: &str) {
    let (Ok(trace_id), Ok(span_id)) = (TraceId::from_hex(trace_id), SpanId::from_hex(span_id)) else { return };
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return;
    }
    let remote = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::default());
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}

/// The span of one storage unit of work (a statement or a transaction): a child of the current
/// piece of work, or none outside one, so that background sweeps do not each start a trace.
/// Held (not entered) for the unit's duration: `let _span = storage_span("insert_bill");`.
/// Only an exported trace shows it (no log line is written inside it), so without an exporter
/// there is none: building and dropping a span for every storage call cost 1–2% of a service's
/// CPU under load.
pub fn storage_span(operation: &'static str) -> tracing::Span {
    if !exporting() || tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!("db", otel.name = operation, otel.kind = "client", db.operation.name = operation)
}
