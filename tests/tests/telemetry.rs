//! OpenTelemetry: both services, each a process of its own, export their spans over OTLP/gRPC
//! to a receiver built from the OpenTelemetry project's own protocol package
//! (`opentelemetry-proto`, Python; tests/otlp/receiver.py). One order, started by a business
//! system that sends a `traceparent`, is one trace across collection-svc and bureau-svc.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::processes::ProcessStack;
use e2e::*;
use fiscalbill_common::auth::BearerKey;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use serde_json::{Value, json};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

struct Receiver {
    child: Child,
    port: u16,
}

impl Receiver {
    fn start(spans: &Path) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("otlp/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(spans)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the OTLP receiver (./run-tests installs opentelemetry-proto)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the receiver printed {line:?}, not its port"));
        Receiver { child, port }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Span {
    service: String,
    name: String,
    kind: String,
    span_id: String,
    parent: String,
    attributes: Value,
}

fn read_spans(path: &Path) -> Vec<(String, Span)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let s = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
            let span = Span {
                service: s("service"),
                name: s("name"),
                kind: s("kind"),
                span_id: s("span_id"),
                parent: s("parent_span_id"),
                attributes: v["attributes"].clone(),
            };
            (s("trace_id"), span)
        })
        .collect()
}

/// The one span of `service` named `name` (with attribute `order_id` = the order, when it has
/// one) whose parent is `parent`.
fn child<'a>(spans: &'a [Span], service: &str, name: &str, parent: &Span) -> &'a Span {
    let found: Vec<_> =
        spans.iter().filter(|s| s.service == service && s.name == name && s.parent == parent.span_id).collect();
    assert!(
        !found.is_empty(),
        "no {service} span {name:?} under {} {:?}; the trace:\n{}",
        parent.service,
        parent.name,
        render(spans)
    );
    found[0]
}

fn render(spans: &[Span]) -> String {
    spans.iter().map(|s| format!("  {} {} {} {} <- {}\n", s.service, s.kind, s.name, s.span_id, s.parent)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_both_services() {
    let dir = std::env::temp_dir().join(format!("fiscalbill-telemetry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spans_file = dir.join("spans.jsonl");
    let receiver = Receiver::start(&spans_file);
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let mut stack = ProcessStack::new(env!("CARGO_BIN_EXE_fiscalbill-service"), &dir, |bureau, collection| {
        bureau["telemetry"] = json!({"otlp_endpoint": endpoint});
        collection["telemetry"] = json!({"otlp_endpoint": endpoint});
    })
    .await;
    stack.bureau.start();
    stack.collection.start();
    stack.wait_serving(Duration::from_secs(30)).await;

    // A business system that traces its own work sends its span as traceparent.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", stack.collection_grpc)).unwrap().connect_lazy();
    let mut collection = CollectionServiceClient::with_interceptor(channel, BearerKey::default());
    let order = "traced-1";
    let mut request = tonic::Request::new(order_request(order));
    request.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap());
    let created = collection.create_authorization(request).await.unwrap().into_inner().authorization.unwrap();
    authorize_at_sandbox(&reqwest::Client::new(), &stack.base, &created.auth_url).await;
    wait_until_issued(&mut collection, 1, Duration::from_secs(30)).await;
    let issued = collection
        .get_authorization(pb::GetAuthorizationRequest { unit_appid: UNIT.into(), order_id: order.into() })
        .await
        .unwrap()
        .into_inner()
        .authorization
        .unwrap();
    assert_eq!(issued.state, pb::AuthorizationState::Issued as i32);

    // Stopped as an operator stops them, the services flush their spans.
    stack.collection.stop();
    stack.bureau.stop();

    let all = read_spans(&spans_file);
    assert!(!all.is_empty(), "the receiver got no span at all");
    let mut by_trace: HashMap<String, Vec<Span>> = HashMap::new();
    for (trace_id, span) in all {
        by_trace.entry(trace_id).or_default().push(span);
    }
    let spans = by_trace.remove(TRACE_ID).unwrap_or_else(|| {
        panic!("no span in the caller's trace {TRACE_ID}; traces: {:?}", by_trace.keys().collect::<Vec<_>>())
    });
    // The caller's span is the root's parent.
    let caller = Span {
        service: "caller".into(),
        name: "business system".into(),
        kind: "client".into(),
        span_id: CALLER_SPAN.into(),
        parent: String::new(),
        attributes: Value::Null,
    };

    // collection-svc: the CreateAuthorization server span, its WeChat calls and its storage.
    let create =
        child(&spans, "collection-svc", "fiscalbill.collection.v1.CollectionService/CreateAuthorization", &caller);
    assert_eq!(create.kind, "server");
    assert_eq!(create.attributes["rpc.grpc.status_code"], "0", "{create:?}");
    let handler = child(&spans, "collection-svc", "CreateAuthorization", create);
    let auth_url_call = child(&spans, "collection-svc", "/nontax/getbillauthurl", handler);
    assert_eq!(auth_url_call.kind, "client");
    assert!(
        !auth_url_call.attributes.to_string().contains("access_token"),
        "no token in span attributes: {auth_url_call:?}"
    );
    child(&spans, "collection-svc", "insert_authorization", handler);

    // The payer's push and the delivery continue the order's trace under its span.
    let push = child(&spans, "collection-svc", "wechat push user_authorize_invoice", create);
    child(&spans, "collection-svc", "record_push", push);
    let deliver = child(&spans, "collection-svc", "deliver", create);
    let issue_call = child(&spans, "collection-svc", "fiscalbill.bureau.v1.BureauService/IssueBill", deliver);
    assert_eq!(issue_call.kind, "client");

    // bureau-svc: IssueBill as a child of collection's client span; the bill's drive, its
    // WeChat calls (the insertion into the card package) and storage.
    let issue = child(&spans, "bureau-svc", "fiscalbill.bureau.v1.BureauService/IssueBill", issue_call);
    assert_eq!(issue.kind, "server");
    let issue_handler = child(&spans, "bureau-svc", "IssueBill", issue);
    child(&spans, "bureau-svc", "insert_bill", issue_handler);
    let drive = child(&spans, "bureau-svc", "drive", issue);
    child(&spans, "bureau-svc", "/nontax/insertbill", drive);
    child(&spans, "bureau-svc", "advance", drive);

    // Every span of the trace hangs off the caller's span: one tree, no orphans.
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).chain([CALLER_SPAN]).collect();
    let orphans: Vec<_> = spans.iter().filter(|s| !ids.contains(s.parent.as_str())).collect();
    assert!(orphans.is_empty(), "spans whose parent is not in the trace: {orphans:?}\n{}", render(&spans));
    eprintln!("the order's trace:\n{}", render(&spans));
    let _ = std::fs::remove_dir_all(dir);
}
