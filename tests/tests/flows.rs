//! The whole flow, end to end: a unit's business system creates an authorization, the payer
//! authorizes in WeChat (the sandbox), the push reaches collection-svc, the bureau issues the
//! bill into the payer's card package.

use e2e::*;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::types::Source;
use wechat::callback::{PushFormat, PushMode};

async fn service_account_flow(options: Options) {
    let mut stack = Stack::start(options).await;
    let created = stack.create("order-sa").await;
    assert_eq!(created.state, pb::AuthorizationState::Pending as i32);
    assert!(created.auth_url.starts_with(stack.sandbox.base_url()));
    assert_eq!(created.authorized_appid, stack.unit());
    assert!(created.auth_url_expire_time.is_some());

    let push = stack.answer(&created.auth_url, false).await;
    assert_eq!(push["delivered"], true, "{push}");
    assert_eq!(push["attempts"][0]["response_body"], "success");
    let issued = stack.wait_for("order-sa", pb::AuthorizationState::Issued).await;
    assert_eq!(issued.openid, PAYER);
    assert!(!issued.card_code.is_empty() && issued.card_id.len() == 28);
    assert!(issued.authorize_time.is_some());

    let cards = stack.cards(PAYER).await;
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0]["code"], issued.card_code.as_str());
    assert_eq!(cards[0]["order_id"], "order-sa");
    assert_eq!(cards[0]["fee"], 2_500);
    assert_eq!(stack.calls("/nontax/getbillauthurl").await, 1);
    assert_eq!(stack.calls("/nontax/insertbill").await, 1);
    assert_eq!(stack.calls("/cgi-bin/ticket/getticket").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_scenario() {
    service_account_flow(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_scenario_on_postgres() {
    service_account_flow(Options { postgres: true, ..Options::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_json_pushes() {
    service_account_flow(Options { push_mode: PushMode::Plain, push_format: PushFormat::Json, ..Options::default() })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatible_mode_pushes() {
    service_account_flow(Options { push_mode: PushMode::Compatible, ..Options::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_scenario() {
    let mut stack = Stack::start(Options::default()).await;
    let request = stack.create_request("order-app", Source::App);
    let created = stack.collection.create_authorization(request).await.unwrap().into_inner().authorization.unwrap();
    assert_eq!(created.authorized_appid, APP);
    assert_eq!(created.source, Source::App as i32);
    let push = stack.answer(&created.auth_url, false).await;
    assert_eq!(push["recipient"], UNIT, "the App's pushes reach its Service Account");
    let issued = stack.wait_for("order-app", pb::AuthorizationState::Issued).await;
    let card = &stack.cards(PAYER).await[0];
    assert_eq!(card["code"], issued.card_code.as_str());
    assert_eq!(card["appid"], APP, "inserted under the App's appid, as authorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_built_platform() {
    let mut stack = Stack::start(Options { self_built: true, ..Options::default() }).await;
    let created = stack.create("order-self").await;
    assert_eq!(created.authorized_appid, SELF_BUILT);
    stack.answer(&created.auth_url, false).await;
    let issued = stack.wait_for("order-self", pb::AuthorizationState::Issued).await;
    let card = &stack.cards(PAYER).await[0];
    assert_eq!((card["issuer"].as_str(), card["appid"].as_str()), (Some(SELF_BUILT), Some(SELF_BUILT)));

    // The account's one callback URL is collection-svc's; the status push is forwarded to the
    // bureau, which records it.
    let changed = stack
        .post(
            &format!("/sandbox/cards/{}/status", issued.card_code),
            serde_json::json!({"reimburse_status": "INVOICE_REIMBURSE_LOCK"}),
        )
        .await;
    let push_id = changed["push_id"].as_u64().unwrap();
    for _ in 0..200 {
        if stack.get(&format!("/sandbox/pushes/{push_id}")).await["finished"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let push = stack.get(&format!("/sandbox/pushes/{push_id}")).await;
    assert_eq!(push["delivered"], true, "{push}");
    let bill = stack
        .bureau_client
        .get_bill(fiscalbill_common::proto::bureau::GetBillRequest {
            unit_appid: SELF_BUILT.into(),
            order_id: "order-self".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .bill
        .unwrap();
    assert_eq!(bill.reimburse_status, fiscalbill_common::proto::types::ReimburseStatus::Lock as i32);
    // Both services fetch the account's stable token (one each); neither invalidates the other.
    assert_eq!(stack.calls("/cgi-bin/stable_token").await, 2);
    let stats = stack.get("/sandbox/stats").await;
    for row in stats["calls"].as_array().unwrap() {
        assert!(row["outcomes"].get("40001").is_none(), "no token was invalidated: {row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_who_declines() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("order-no").await;
    let push = stack.answer(&created.auth_url, true).await;
    assert_eq!(push["delivered"], true);
    let declined = stack.wait_for("order-no", pb::AuthorizationState::Declined).await;
    assert_eq!(declined.openid, PAYER);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(stack.calls("/nontax/insertbill").await, 0);
    assert!(stack.cards(PAYER).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_order_is_never_billed() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("order-rej").await;
    let rejected = stack
        .collection
        .reject_authorization(pb::RejectAuthorizationRequest {
            unit_appid: UNIT.into(),
            order_id: "order-rej".into(),
            reason: "退费".into(),
            url: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .authorization
        .unwrap();
    assert_eq!(rejected.state, pb::AuthorizationState::Rejected as i32);
    assert_eq!(rejected.reject_reason, "退费");
    // The payer can no longer authorize it.
    let response = stack
        .http
        .post(format!("{}/sandbox/authorize", stack.sandbox.base_url()))
        .json(&serde_json::json!({"auth_url": created.auth_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let synced = stack
        .collection
        .sync_authorization(pb::SyncAuthorizationRequest { unit_appid: UNIT.into(), order_id: "order-rej".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(synced.authorization.unwrap().state, pb::AuthorizationState::Rejected as i32);
    // Rejecting again is answered from the store.
    let again = stack
        .collection
        .reject_authorization(pb::RejectAuthorizationRequest {
            unit_appid: UNIT.into(),
            order_id: "order-rej".into(),
            reason: "x".into(),
            url: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(again.into_inner().authorization.unwrap().reject_reason, "退费");
    assert_eq!(stack.calls("/card/invoice/rejectinsert").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_ends_expired_and_can_be_renewed() {
    let mut stack = Stack::start(Options { link_lifetime_secs: 1, ..Options::default() }).await;
    let created = stack.create("order-exp").await;
    let expired = stack.wait_for("order-exp", pb::AuthorizationState::Expired).await;
    assert_eq!(expired.auth_url, created.auth_url);
    let status = stack
        .http
        .post(format!("{}/sandbox/authorize", stack.sandbox.base_url()))
        .json(&serde_json::json!({"auth_url": created.auth_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 410, "the payer finds the link expired");
    // The same CreateAuthorization again gives the order a fresh link.
    let renewed = stack.create("order-exp").await;
    assert_eq!(renewed.state, pb::AuthorizationState::Pending as i32);
    assert_ne!(renewed.auth_url, created.auth_url);
    stack.answer(&renewed.auth_url, false).await;
    stack.wait_for("order-exp", pb::AuthorizationState::Issued).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_built_platform_must_use_stable_token_in_both_services() {
    let stack = Stack::start(Options { self_built: true, ..Options::default() }).await;
    // cgi-bin/token in either service: each fetch would invalidate the other's token.
    let mut bureau = stack.bureau_config();
    bureau.account.token_mode = wechat::TokenMode::Token;
    let error = bureau_svc::start(bureau).await.err().expect("the bureau refuses to start");
    assert!(error.to_string().contains("token_mode = \"stable_token\""), "{error}");
    let mut collection = stack.collection_config();
    collection.token_mode = wechat::TokenMode::Token;
    let error = collection_svc::start(collection).await.err().expect("collection-svc refuses to start");
    assert!(error.to_string().contains("self-built") && error.to_string().contains("stable_token"), "{error}");
    // cgi-bin/token is fine for accounts that play one role.
    let plain = Stack::start(Options::default()).await;
    let mut collection = plain.collection_config();
    collection.token_mode = wechat::TokenMode::Token;
    collection.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    collection.server.http_listen = "127.0.0.1:0".parse().unwrap();
    collection.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    collection_svc::start(collection).await.expect("starts").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_hold_no_more_pdf_bytes_than_the_budget() {
    // A budget of 1 MiB and three 700-KiB PDFs: one IssueBill at a time, though 8 calls may
    // be in flight. (The bureau waits for WeChat longer than the upload held below.)
    let options = Options { pdf_budget_mib: 1, wechat_timeout_ms: 5_000, ..Options::default() };
    let mut stack = Stack::start(options).await;
    let orders = ["order-big-1", "order-big-2", "order-big-3"];
    let mut links = Vec::new();
    for order in orders {
        let request = pb::CreateAuthorizationRequest {
            pdf: wechat::pdf::sample_of_size(700 * 1024).into(),
            ..stack.create_request(order, Source::Web)
        };
        let created = stack.collection.create_authorization(request).await.unwrap().into_inner();
        links.push(created.authorization.unwrap().auth_url);
    }
    // The first bill's PDF upload is held for 2 s: its IssueBill keeps the budget meanwhile.
    stack
        .post(
            "/sandbox/faults",
            serde_json::json!({"path": "/card/invoice/platform/setpdf", "kind": "delay", "delay_ms": 2000, "count": 1}),
        )
        .await;
    for link in &links {
        stack.answer(link, false).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(stack.calls("/card/invoice/platform/setpdf").await, 1, "the other two wait for the budget");
    assert!(stack.cards(PAYER).await.is_empty());

    for order in orders {
        stack.wait_for(order, pb::AuthorizationState::Issued).await;
    }
    assert_eq!(stack.calls("/card/invoice/platform/setpdf").await, 3);
    assert_eq!(stack.calls("/nontax/insertbill").await, 3);
    assert_eq!(stack.cards(PAYER).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_of_several_chunks_goes_with_the_bill_its_push_delivers() {
    // With a delivery slot and PDF budget free, the push delivers its order's IssueBill at once
    // with what its unit read; a PDF of more than one chunk is left out of that read, and the
    // delivery reads it on its own. The bill in the card package is the supplied PDF (signed
    // by an incremental update, which keeps its bytes), not one the bureau rendered.
    let mut stack = Stack::start(Options::default()).await;
    let pdf = wechat::pdf::sample_of_size(700 * 1024);
    let request =
        pb::CreateAuthorizationRequest { pdf: pdf.clone().into(), ..stack.create_request("order-large", Source::Web) };
    let created = stack.collection.create_authorization(request).await.unwrap().into_inner();
    stack.answer(&created.authorization.unwrap().auth_url, false).await;
    stack.wait_for("order-large", pb::AuthorizationState::Issued).await;
    let cards = stack.cards(PAYER).await;
    assert_eq!(cards.len(), 1);
    let url = cards[0]["pdf_url"].as_str().unwrap();
    let on_card = reqwest::get(url).await.unwrap().error_for_status().unwrap().bytes().await.unwrap();
    assert!(on_card.starts_with(&pdf), "the card's PDF ({} bytes) is not the supplied one", on_card.len());
}
