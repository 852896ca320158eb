//! Probed from outside as a careless client or an attacker would: requests no stub sends, made-up
//! method paths, forged and mismatched page tokens.

use std::path::Path;
use std::process::Command;

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
