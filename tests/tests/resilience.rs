//! The bureau unreachable for a while, restarts of either service.

use e2e::*;
use fiscalbill_common::proto::collection as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_is_issued_once_the_bureau_is_back() {
    let mut stack = Stack::start(Options::default()).await;
    let first = stack.create("order-warm").await; // the s_pappid is learnt while the bureau is up
    stack.answer(&first.auth_url, false).await;
    stack.wait_for("order-warm", pb::AuthorizationState::Issued).await;

    stack.stop_bureau(false).await;
    let created = stack.create("order-away").await;
    let push = stack.answer(&created.auth_url, false).await;
    assert_eq!(push["attempts"][0]["response_body"], "success", "acknowledged without the bureau");
    // Deliveries fail while the bureau is away, and are retried.
    let waiting = loop {
        let authorization = stack.authorization("order-away").await;
        if authorization.issue_attempts >= 2 {
            break authorization;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert_eq!(waiting.state, pb::AuthorizationState::Authorized as i32);
    assert_eq!(waiting.failure.unwrap().reason, "BUREAU_UNAVAILABLE");

    stack.start_bureau().await;
    let issued = stack.wait_for("order-away", pb::AuthorizationState::Issued).await;
    assert!(issued.failure.is_none());
    assert_eq!(stack.cards(PAYER).await.len(), 2);
    assert_eq!(stack.calls("/nontax/insertbill").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bureau_crash_mid_flow_still_issues_once() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("order-crash").await;
    // WeChat keeps failing the PDF check: IssueBill answers "in progress" at its deadline and
    // the bureau crashes while retrying.
    stack
        .post(
            "/sandbox/faults",
            serde_json::json!({"path": "/card/invoice/platform/getpdf", "kind": "http_status", "status": 503}),
        )
        .await;
    stack.answer(&created.auth_url, false).await;
    stack.wait_for("order-crash", pb::AuthorizationState::Issuing).await;
    stack.stop_bureau(true).await;
    let cleared = stack.http.delete(format!("{}/sandbox/faults", stack.sandbox.base_url())).send().await.unwrap();
    assert!(cleared.status().is_success());
    stack.start_bureau().await;
    stack.wait_for("order-crash", pb::AuthorizationState::Issued).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(stack.cards(PAYER).await.len(), 1, "exactly one bill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_crash_after_the_push_loses_nothing() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("order-c").await;
    // The bureau is slow to answer; collection-svc crashes after acknowledging the push.
    stack
        .post(
            "/sandbox/faults",
            serde_json::json!({"path": "/card/invoice/platform/setpdf", "kind": "delay", "delay_ms": 800, "count": 1}),
        )
        .await;
    stack.answer(&created.auth_url, false).await;
    stack.stop_collection(true).await;
    stack.start_collection().await;
    let issued = stack.wait_for("order-c", pb::AuthorizationState::Issued).await;
    assert!(!issued.card_code.is_empty());
    assert_eq!(stack.cards(PAYER).await.len(), 1);
    assert_eq!(stack.calls("/nontax/insertbill").await, 1);
}
