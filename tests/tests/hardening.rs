//! Probed from outside as a careless client or an attacker would: requests no stub sends, made-up
//! method paths, forged and mismatched page tokens.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::*;
use fiscalbill_common::proto::bureau as bureau_pb;
use fiscalbill_common::proto::collection as pb;
use serde_json::Value;

/// What the server answered for each of `tests/grpc/raw_requests.py`'s cases.
fn raw_requests(target: &str, key: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc/raw_requests.py");
    let output = Command::new("python3")
        .arg(script)
        .args([target, key])
        .output()
        .expect("python3 with grpcio and grpcio-status (./run-tests installs them)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "raw_requests.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_the_framework_answers_carry_error_info() {
    let stack = Stack::start(Options::default()).await;
    let target = stack.collection_grpc.to_string();
    let answers = tokio::task::spawn_blocking(move || raw_requests(&target, HIS_API_KEY)).await.unwrap();
    for (case, code, reason) in [
        ("garbage", "INVALID_ARGUMENT", "MALFORMED_REQUEST"),
        ("invalid_utf8", "INVALID_ARGUMENT", "MALFORMED_REQUEST"),
        ("too_large", "RESOURCE_EXHAUSTED", "MESSAGE_TOO_LARGE"),
        ("unknown_method", "UNIMPLEMENTED", "UNKNOWN_METHOD"),
        ("unknown_service", "UNIMPLEMENTED", "UNKNOWN_METHOD"),
    ] {
        let answer = &answers[case];
        assert_eq!(
            (answer["code"].as_str(), answer["reason"].as_str()),
            (Some(code), Some(reason)),
            "{case}: {answer}"
        );
        assert_eq!(answer["domain"], "collection.fiscalbill", "{case}: {answer}");
    }
    let limit: usize = answers["too_large"]["metadata"]["limit_bytes"].as_str().unwrap().parse().unwrap();
    assert_eq!(limit, stack.collection_config().authorization.pdf_max_bytes + 256 * 1024);
    assert_eq!(
        answers["unknown_method"]["metadata"]["method"],
        "/fiscalbill.collection.v1.CollectionService/NoSuchMethod"
    );
}

/// The lines of collection-svc's `/metrics`.
async fn metric_lines(stack: &Stack) -> usize {
    let url = format!("http://{}/metrics", stack.collection_admin);
    stack.http.get(url).send().await.unwrap().text().await.unwrap().lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_method_paths_do_not_grow_the_metrics() {
    let stack = Stack::start(Options::default()).await;
    // gRPC over HTTP/2 without any stub: what an unauthenticated prober sends.
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let call = |path: String| {
        client
            .post(format!("http://{}{path}", stack.collection_grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
    };
    // One made-up path first: the series of unknown methods exist from then on.
    call("/probe.Service/First".to_owned()).await.unwrap();
    let before = metric_lines(&stack).await;
    for i in 0..1_000 {
        let path = match i % 3 {
            0 => format!("/fiscalbill.collection.v1.CollectionService/Random{i}"),
            1 => format!("/probe{i}.Service/Method{i}"),
            _ => format!("/{i}"),
        };
        let response = call(path).await.unwrap();
        assert_eq!(response.status(), 200, "gRPC answers errors in its status, not HTTP");
    }
    let after = metric_lines(&stack).await;
    assert_eq!(after, before, "1,000 made-up paths added {} metric lines", after as i64 - before as i64);
    let text = stack.http.get(format!("http://{}/metrics", stack.collection_admin)).send().await.unwrap();
    let text = text.text().await.unwrap();
    assert!(text.contains("fiscalbill_grpc_requests_total{method=\"unknown\""), "{text}");
    assert!(!text.contains("Random"), "no made-up name is a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_continue_only_the_list_they_came_from() {
    let mut stack = Stack::start(Options::default()).await;
    for i in 0..3 {
        stack.create(&format!("order-page-{i}")).await;
    }
    let list = |state: pb::AuthorizationState, page_token: String| pb::ListAuthorizationsRequest {
        unit_appid: UNIT.into(),
        state: state as i32,
        page_size: 1,
        page_token,
    };
    let first = stack
        .collection
        .list_authorizations(list(pb::AuthorizationState::Pending, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    // The same filters: the next page.
    let second = stack
        .collection
        .list_authorizations(list(pb::AuthorizationState::Pending, first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.authorizations[0].order_id, first.authorizations[0].order_id);
    // Other filters, a forged token, another list's token: refused.
    let forged = "MTcwMDAwMDAwMDAwMAp3eGMwMDAwMDAwMDAwMDAwYzEKb3JkZXItcGFnZS0x".to_owned();
    for (case, request) in [
        ("other state", list(pb::AuthorizationState::Issued, first.next_page_token.clone())),
        ("no state", list(pb::AuthorizationState::Unspecified, first.next_page_token.clone())),
        ("forged", list(pb::AuthorizationState::Pending, forged)),
    ] {
        let status = stack.collection.list_authorizations(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{case}");
        assert_eq!(reason(&status), "INVALID_PAGE_TOKEN", "{case}");
        assert_eq!(violations(&status), ["page_token"], "{case}");
    }

    let mut bureau = stack.bureau_client.clone();
    let templates = |page_token: String| bureau_pb::ListCardTemplatesRequest { page_size: 1, page_token };
    for token in [first.next_page_token.clone(), "d3hjMDAwMDAwMDAwMDAwMGMx".to_owned(), "!!".to_owned()] {
        let status = bureau.list_card_templates(templates(token.clone())).await.unwrap_err();
        assert_eq!(reason(&status), "INVALID_PAGE_TOKEN", "{token}");
    }
    // Without a token: the first page.
    bureau.list_card_templates(templates(String::new())).await.unwrap();
}

/// Opens a connection to `addr` and sends `bytes` (and then nothing more).
async fn hold(addr: std::net::SocketAddr, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// What the server sent before it closed the connection, or None if it is still open after
/// `limit`.
async fn until_closed(mut stream: tokio::net::TcpStream, limit: std::time::Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.ok().map(|()| received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed_while_others_are_answered() {
    use fiscalbill_common::connections::ConnectionLimits;
    use std::time::Instant;
    let limits = ConnectionLimits {
        header_read_timeout_ms: 1_000,
        request_timeout_ms: 1_500,
        handshake_timeout_ms: 1_000,
        max_connections: 400,
        ..ConnectionLimits::default()
    };
    let mut stack = Stack::start(Options { limits, ..Options::default() }).await;
    let started = Instant::now();
    let mut held = Vec::new();
    // 250 slowloris connections on the port that faces WeChat: headers never finished.
    for _ in 0..250 {
        held.push(("callback slowloris", hold(stack.collection_http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await));
    }
    held.push(("admin, half a header", hold(stack.bureau_admin, b"GET /healthz HTTP/1.1\r\nHo").await));
    held.push(("callback, silent", hold(stack.collection_http, b"").await));
    held.push(("gRPC, silent", hold(stack.bureau_grpc, b"").await));
    held.push((
        "gRPC, the HTTP/2 preface only",
        hold(stack.collection_grpc, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await,
    ));
    // A body announced and never sent.
    let stalled_body = hold(
        stack.collection_http,
        format!("POST /wechat/callback/{UNIT}?signature=1&timestamp=1&nonce=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n<xml>").as_bytes(),
    )
    .await;

    // Meanwhile everyone else is answered.
    let health = stack.http.get(format!("http://{}/healthz", stack.collection_admin)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    stack.create("order-during-slowloris").await;

    for (case, stream) in held {
        assert!(until_closed(stream, Duration::from_secs(10)).await.is_some(), "{case}: still open after 10 s");
    }
    let answer =
        until_closed(stalled_body, Duration::from_secs(10)).await.expect("the stalled body's connection closes");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "closed only after the timeouts, not at once: {elapsed:?}");

    // Past the cap, a connection is closed at once; the service still answers afterwards.
    let mut crowd = Vec::new();
    for _ in 0..400 {
        crowd.push(hold(stack.collection_http, b"").await);
    }
    let refused = hold(stack.collection_http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        until_closed(refused, Duration::from_secs(1)).await,
        Some(Vec::new()),
        "over the cap: closed unanswered"
    );
    drop(crowd);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = stack.http.get(format!("http://{}/healthz", stack.collection_admin)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// Request bytes beyond `[server.limits] message_budget_mib` are refused at once, not held:
/// while one CreateAuthorization with a 700 KiB PDF waits for WeChat, a second does not fit a
/// 1 MiB budget; once the first is answered, the second goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_beyond_the_budget_are_refused_until_given_back() {
    use fiscalbill_common::connections::ConnectionLimits;
    use fiscalbill_common::proto::types as types_pb;
    use tonic_types::StatusExt;

    let limits = ConnectionLimits { message_budget_mib: 1, ..ConnectionLimits::default() };
    let stack = Stack::start(Options { limits, ..Options::default() }).await;
    let with_pdf = |order_id: &str| {
        let mut request = stack.create_request(order_id, types_pb::Source::Web);
        request.pdf = wechat::pdf::sample_of_size(700 * 1024).into();
        request
    };
    // WeChat is slow to give the first order its link: its request holds the budget meanwhile.
    let delay = serde_json::json!({"path": "/nontax/getbillauthurl", "kind": "delay", "delay_ms": 1000, "count": 1});
    stack.post("/sandbox/faults", delay).await;
    let (mut first_client, first_request) = (stack.collection.clone(), with_pdf("budget-1"));
    let first = tokio::spawn(async move { first_client.create_authorization(first_request).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stack.calls("/nontax/getbillauthurl").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first order never reached WeChat");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let refused = stack.collection.clone().create_authorization(with_pdf("budget-2")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), "SERVER_BUSY");
    let details = refused.get_error_details();
    assert_eq!(details.error_info().unwrap().metadata["budget_bytes"], (1024 * 1024).to_string());
    assert!(details.retry_info().is_some(), "the client is told to retry");
    let metrics = stack.http.get(format!("http://{}/metrics", stack.collection_admin)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.lines().any(|line| line == "fiscalbill_grpc_busy_refusals_total 1"), "{metrics}");

    first.await.unwrap().expect("the first is answered");
    stack.collection.clone().create_authorization(with_pdf("budget-2")).await.expect("taken once the budget is back");
    // The refused request left nothing behind: one call to WeChat for each order.
    assert_eq!(stack.calls("/nontax/getbillauthurl").await, 2);
}
