//! WeChat misbehaving on every business endpoint: -1, 45011, HTTP 503, answers slower than
//! the client's timeout, dropped connections and 40001, each injected with 20% probability on
//! every call. Across a thousand flows every authorized order ends issued exactly once, and
//! the token cache refreshes once per rejection, never in a storm.

use std::sync::Arc;

use e2e::*;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::types::Source;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const FLOWS: usize = 1_000;
const CONCURRENCY: usize = 64;
/// The services give a WeChat call this long; "slow" answers take longer.
const TIMEOUT_MS: u64 = 300;

const BUSINESS_PATHS: &[&str] = &[
    "/card/invoice/seturl",
    "/nontax/getbillauthurl",
    "/card/invoice/getauthdata",
    "/nontax/createbillcard",
    "/card/invoice/platform/setpdf",
    "/card/invoice/platform/getpdf",
    "/nontax/insertbill",
];

fn faults() -> Vec<Value> {
    let kinds = [
        json!({"kind": "errcode", "errcode": -1}),
        json!({"kind": "errcode", "errcode": 45011}),
        json!({"kind": "http_status", "status": 503}),
        json!({"kind": "delay", "delay_ms": TIMEOUT_MS + 100}),
        json!({"kind": "drop"}),
        json!({"kind": "errcode", "errcode": 40001}),
    ];
    BUSINESS_PATHS
        .iter()
        .flat_map(|path| {
            kinds.iter().map(move |kind| {
                let mut rule = kind.clone();
                rule["path"] = json!(path);
                rule["probability"] = json!(0.2);
                rule
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_flows_through_faulty_wechat_each_issued_once() {
    let stack = Stack::start(Options { wechat_timeout_ms: TIMEOUT_MS, workers: 64, ..Options::default() }).await;
    for rule in faults() {
        stack.post("/sandbox/faults", rule).await;
    }
    let stack = Arc::new(stack);
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let flows: Vec<_> = (0..FLOWS)
        .map(|i| {
            let (stack, slots) = (stack.clone(), slots.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire().await.unwrap();
                let order = format!("fault-{i}");
                let mut client = stack.collection.clone();
                // CreateAuthorization is idempotent: the business system retries what was unavailable.
                let created = loop {
                    match client.create_authorization(stack.create_request(&order, Source::Web)).await {
                        Ok(answer) => break answer.into_inner().authorization.unwrap(),
                        Err(status)
                            if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted) =>
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        Err(status) => panic!("{order}: {status:?}"),
                    }
                };
                authorize_at_sandbox(&stack.http, stack.sandbox.base_url(), &created.auth_url).await;
            })
        })
        .collect();
    for flow in flows {
        flow.await.unwrap();
    }

    // Everything ends issued.
    let mut client = stack.collection.clone();
    let issued = wait_until_issued(&mut client, FLOWS, std::time::Duration::from_secs(240)).await;
    let failed = client
        .list_authorizations(pb::ListAuthorizationsRequest {
            state: pb::AuthorizationState::IssueFailed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        failed.authorizations.is_empty(),
        "no issue may fail for a transient fault: {:?}",
        failed.authorizations.first()
    );
    assert_eq!(issued, FLOWS, "every authorized order is issued");

    // Exactly once: one bill per order in the card package.
    let cards = stack.cards(PAYER).await;
    assert_eq!(cards.len(), FLOWS);
    let orders: std::collections::BTreeSet<&str> = cards.iter().map(|c| c["order_id"].as_str().unwrap()).collect();
    assert_eq!(orders.len(), FLOWS, "no order billed twice");

    // The faults really happened, and no refresh storm followed the 40001s.
    let stats = stack.get("/sandbox/stats").await;
    let rows = stats["calls"].as_array().unwrap();
    let outcome = |code: &str| rows.iter().map(|r| r["outcomes"][code].as_u64().unwrap_or(0)).sum::<u64>();
    let rejections = outcome("40001");
    assert!(
        outcome("-1") > 100
            && outcome("45011") > 100
            && outcome("http_503") > 100
            && outcome("dropped") > 100
            && rejections > 100
    );
    let refreshes: u64 =
        rows.iter().filter(|r| r["endpoint"] == "/cgi-bin/stable_token").map(|r| r["calls"].as_u64().unwrap()).sum();
    assert!(refreshes <= rejections + 4, "{refreshes} token fetches for {rejections} rejections");
    eprintln!(
        "{FLOWS} flows: {rejections} token rejections, {refreshes} token fetches; faults -1 {} 45011 {} 503 {} dropped {}",
        outcome("-1"),
        outcome("45011"),
        outcome("http_503"),
        outcome("dropped")
    );
}
