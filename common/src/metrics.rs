//! Prometheus metrics of a service, served as text on its admin port (`GET /metrics`):
//! WeChat calls by endpoint and outcome with latencies, token and ticket fetches, gRPC
//! requests by method and code with latencies, pushes by outcome, and state gauges the
//! service refreshes from its database at each scrape.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use wechat::{Credentials, Endpoint};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WechatLabels {
    pub endpoint: String,
    /// errcode (`0` for success), `http_503`, `timeout`, `transport` or `malformed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
    /// The gRPC status code, e.g. `OK`, `INVALID_ARGUMENT`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    wechat_calls: Family<WechatLabels, Counter>,
    wechat_latency: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_latency: Family<MethodLabel, Histogram, fn() -> Histogram>,
    pushes: Family<OutcomeLabel, Counter>,
    busy_refusals: Counter,
    /// Bills (bureau) or authorizations (collection) by state, refreshed at scrape.
    pub states: Family<StateLabel, Gauge>,
    /// Outbox jobs waiting, and the age of the oldest (collection), refreshed at scrape.
    pub outbox_jobs: Gauge,
    pub outbox_oldest_seconds: Gauge<f64, AtomicU64>,
    /// 1 once WeChat accepted every account of the service at the start check, 0 before.
    pub wechat_ready: Gauge,
    token_fetches: Counter,
    ticket_fetches: Counter,
    failed_fetches: Counter,
    token_rejections: Counter,
    /// Weak: the credentials' WeChat client reports to these metrics, and a strong reference
    /// back would keep both (and the database behind the credentials) alive forever.
    credentials: OnceLock<Weak<Credentials>>,
    /// Serializes scrapes: refresh, then encode.
    scraping: tokio::sync::Mutex<()>,
    last_credential_counts: Mutex<[u64; 4]>,
}

impl Metrics {
    /// `states_help` describes the state gauge (e.g. "Bills by state").
    pub fn new(states_help: &str) -> Arc<Self> {
        let mut registry = Registry::with_prefix("fiscalbill");
        let wechat_calls = Family::<WechatLabels, Counter>::default();
        registry.register("wechat_calls", "WeChat API calls by endpoint and outcome", wechat_calls.clone());
        let wechat_latency =
            Family::<EndpointLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("wechat_call_duration_seconds", "WeChat API call latency", wechat_latency.clone());
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register("grpc_requests", "gRPC requests by method and status code", grpc_requests.clone());
        let grpc_latency = Family::<MethodLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("grpc_request_duration_seconds", "gRPC request latency", grpc_latency.clone());
        let pushes = Family::<OutcomeLabel, Counter>::default();
        registry.register("pushes", "WeChat pushes received, by outcome", pushes.clone());
        let busy_refusals = Counter::default();
        registry.register(
            "grpc_busy_refusals",
            "gRPC requests refused because their message did not fit the budget of request bytes (SERVER_BUSY)",
            busy_refusals.clone(),
        );
        let states = Family::<StateLabel, Gauge>::default();
        registry.register("records_by_state", states_help, states.clone());
        let outbox_jobs = Gauge::default();
        registry.register("outbox_jobs", "IssueBill jobs waiting in the outbox", outbox_jobs.clone());
        let outbox_oldest_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register("outbox_oldest_age_seconds", "Age of the oldest outbox job", outbox_oldest_seconds.clone());
        let wechat_ready = Gauge::default();
        registry.register(
            "wechat_ready",
            "1 once WeChat accepted every account of the service (token fetch at start), 0 before",
            wechat_ready.clone(),
        );
        let token_fetches = Counter::default();
        registry.register("access_token_fetches", "Access tokens fetched from WeChat", token_fetches.clone());
        let ticket_fetches = Counter::default();
        registry.register("card_ticket_fetches", "wx_card tickets fetched from WeChat", ticket_fetches.clone());
        let failed_fetches = Counter::default();
        registry.register("credential_fetch_failures", "Failed token or ticket fetches", failed_fetches.clone());
        let token_rejections = Counter::default();
        registry.register(
            "access_token_rejections",
            "Calls WeChat answered with a rejected access token",
            token_rejections.clone(),
        );
        registry.register(
            "db_statements",
            "SQL statements run, by kind (BEGIN and COMMIT are counted as transactions)",
            crate::statement_counts::STATEMENTS.clone(),
        );
        registry.register(
            "db_queries",
            "SQL queries sent to the database, each one round trip (a batch sent as one query counts once)",
            crate::statement_counts::QUERIES.clone(),
        );
        registry.register(
            "db_write_transactions",
            "Write transactions begun",
            crate::statement_counts::WRITE_TRANSACTIONS.clone(),
        );
        Arc::new(Self {
            registry,
            wechat_calls,
            wechat_latency,
            grpc_requests,
            grpc_latency,
            pushes,
            busy_refusals,
            states,
            outbox_jobs,
            outbox_oldest_seconds,
            wechat_ready,
            token_fetches,
            ticket_fetches,
            failed_fetches,
            token_rejections,
            credentials: OnceLock::new(),
            scraping: tokio::sync::Mutex::new(()),
            last_credential_counts: Mutex::new([0; 4]),
        })
    }

    /// The token cache whose fetch counters to export.
    pub fn watch_credentials(&self, credentials: &Arc<Credentials>) {
        let _ = self.credentials.set(Arc::downgrade(credentials));
    }

    pub fn record_push(&self, outcome: &str) {
        self.pushes.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }

    /// A request refused with SERVER_BUSY ([`crate::message_budget`]).
    pub fn record_busy_refusal(&self) {
        self.busy_refusals.inc();
    }

    fn record_grpc(&self, method: &str, code: &str, elapsed: Duration) {
        self.grpc_requests.get_or_create(&GrpcLabels { method: method.to_owned(), code: code.to_owned() }).inc();
        self.grpc_latency.get_or_create(&MethodLabel { method: method.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Sets the state gauges to `counts`, zeroing states that no longer occur.
    pub fn set_states(&self, all: &[&str], counts: &[(String, i64)]) {
        for state in all {
            let count = counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
            self.states.get_or_create(&StateLabel { state: (*state).to_owned() }).set(count);
        }
    }

    fn sync_credentials(&self) {
        let Some(credentials) = self.credentials.get().and_then(Weak::upgrade) else { return };
        let stats = credentials.stats();
        let now = [
            stats.token_fetches.load(Ordering::Relaxed),
            stats.ticket_fetches.load(Ordering::Relaxed),
            stats.failed_fetches.load(Ordering::Relaxed),
            stats.token_rejections.load(Ordering::Relaxed),
        ];
        let mut last = self.last_credential_counts.lock().unwrap();
        for (counter, (now, last)) in
            [&self.token_fetches, &self.ticket_fetches, &self.failed_fetches, &self.token_rejections]
                .into_iter()
                .zip(now.iter().zip(last.iter_mut()))
        {
            counter.inc_by(now.saturating_sub(*last));
            *last = *now;
        }
    }

    /// The text exposition, after `refresh` updated the scrape-time gauges.
    pub async fn scrape<F: Future<Output = ()>>(&self, refresh: F) -> String {
        let _one = self.scraping.lock().await;
        refresh.await;
        self.sync_credentials();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

impl wechat::CallObserver for Metrics {
    fn observe(&self, endpoint: Endpoint, outcome: &str, elapsed: Duration) {
        self.wechat_calls
            .get_or_create(&WechatLabels { endpoint: endpoint.name().to_owned(), outcome: outcome.to_owned() })
            .inc();
        self.wechat_latency
            .get_or_create(&EndpointLabel { endpoint: endpoint.name().to_owned() })
            .observe(elapsed.as_secs_f64());
    }
}

/// The name of a gRPC status code as in `grpc-status` documentation.
fn code_name(code: &str) -> &'static str {
    match code.parse::<i32>().map(tonic::Code::from) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "CANCELLED",
        Ok(tonic::Code::Unknown) => "UNKNOWN",
        Ok(tonic::Code::InvalidArgument) => "INVALID_ARGUMENT",
        Ok(tonic::Code::DeadlineExceeded) => "DEADLINE_EXCEEDED",
        Ok(tonic::Code::NotFound) => "NOT_FOUND",
        Ok(tonic::Code::AlreadyExists) => "ALREADY_EXISTS",
        Ok(tonic::Code::PermissionDenied) => "PERMISSION_DENIED",
        Ok(tonic::Code::ResourceExhausted) => "RESOURCE_EXHAUSTED",
        Ok(tonic::Code::FailedPrecondition) => "FAILED_PRECONDITION",
        Ok(tonic::Code::Aborted) => "ABORTED",
        Ok(tonic::Code::OutOfRange) => "OUT_OF_RANGE",
        Ok(tonic::Code::Unimplemented) => "UNIMPLEMENTED",
        Ok(tonic::Code::Internal) => "INTERNAL",
        Ok(tonic::Code::Unavailable) => "UNAVAILABLE",
        Ok(tonic::Code::DataLoss) => "DATA_LOSS",
        Ok(tonic::Code::Unauthenticated) => "UNAUTHENTICATED",
        Err(_) => "UNKNOWN",
    }
}

/// A tower layer counting and timing every gRPC request by method and status code. Errors
/// travel as trailers-only responses (`grpc-status` in the headers); a response without one
/// is counted OK.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetricsService<S>
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
        // Only known methods become labels: a caller's made-up paths all count as "unknown".
        let method = crate::proto::method_name(request.uri().path()).unwrap_or("unknown");
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let code = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map_or("OK", code_name);
            metrics.record_grpc(method, code, started.elapsed());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wechat::CallObserver;

    #[tokio::test]
    async fn exposes_counters_histograms_and_gauges() {
        let metrics = Metrics::new("Bills by state");
        metrics.observe(Endpoint::InsertBill, "0", Duration::from_millis(12));
        let never = wechat::rulebook::ORDER_NEVER_AUTHORIZED.errcode.to_string();
        metrics.observe(Endpoint::InsertBill, &never, Duration::from_millis(3));
        metrics.record_push("duplicate");
        metrics.record_grpc("IssueBill", "OK", Duration::from_millis(40));
        metrics.set_states(&["accepted", "inserted"], &[("inserted".to_owned(), 7)]);
        let text = metrics.scrape(async {}).await;
        let never_line = format!("fiscalbill_wechat_calls_total{{endpoint=\"insertbill\",outcome=\"{never}\"}} 1");
        for line in [
            "fiscalbill_wechat_calls_total{endpoint=\"insertbill\",outcome=\"0\"} 1",
            &never_line,
            "fiscalbill_wechat_call_duration_seconds_count{endpoint=\"insertbill\"} 2",
            "fiscalbill_pushes_total{outcome=\"duplicate\"} 1",
            "fiscalbill_grpc_requests_total{method=\"IssueBill\",code=\"OK\"} 1",
            "fiscalbill_records_by_state{state=\"inserted\"} 7",
            "fiscalbill_records_by_state{state=\"accepted\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    /// The credentials' client reports to the metrics that read the credentials: when the
    /// service lets go of its credentials, nothing of that loop may keep them (and the
    /// database behind their store) alive. It did: a restarted service's old writer kept its
    /// SQLite lock.
    #[tokio::test]
    async fn watching_credentials_does_not_keep_them_alive() {
        let metrics = Metrics::new("Bills by state");
        let client =
            wechat::WechatClient::new(&wechat::WechatHttpConfig::default()).unwrap().with_observer(metrics.clone());
        let store = Arc::new(wechat::MemoryCredentialStore::default());
        let credentials = Arc::new(Credentials::new(
            client,
            [("wxa0000000000000a1".to_owned(), wechat::Secret::new("s".repeat(32)))],
            wechat::TokenMode::StableToken,
            store,
            Arc::new(wechat::clock::SystemClock),
        ));
        metrics.watch_credentials(&credentials);
        assert!(metrics.scrape(async {}).await.contains("access_token_fetches"));
        let gone = Arc::downgrade(&credentials);
        drop(credentials);
        assert!(gone.upgrade().is_none(), "the metrics keep the credentials alive");
        metrics.scrape(async {}).await;
    }

    #[test]
    fn status_codes_have_their_names() {
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("3"), "INVALID_ARGUMENT");
        assert_eq!(code_name("16"), "UNAUTHENTICATED");
        assert_eq!(code_name("x"), "UNKNOWN");
    }
}
