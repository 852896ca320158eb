//! Reimbursement status: UpdateBillStatus and the `update_invoice_status` push.

use fiscalbill_common::db::test_support;
use fiscalbill_common::proto::bureau as pb;
use fiscalbill_common::proto::types::ReimburseStatus;
use serde_json::json;

use crate::support::*;

async fn update(env: &mut Env, order: &str, status: ReimburseStatus) -> Result<pb::Bill, tonic::Status> {
    env.client
        .update_bill_status(pb::UpdateBillStatusRequest {
            unit_appid: UNIT.into(),
            order_id: order.into(),
            reimburse_status: status as i32,
        })
        .await
        .map(|r| r.into_inner().bill.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_updates_follow_the_documented_transitions() {
    let mut env = Env::start(test_support::sqlite()).await;
    env.authorize("o-s").await;
    env.issue(request("o-s")).await.unwrap();

    let locked = update(&mut env, "o-s", ReimburseStatus::Lock).await.unwrap();
    assert_eq!(locked.reimburse_status, ReimburseStatus::Lock as i32);
    assert_eq!(env.cards().await[0]["reimburse_status"], "INVOICE_REIMBURSE_LOCK");
    // The same status again: answered without a WeChat call.
    update(&mut env, "o-s", ReimburseStatus::Lock).await.unwrap();
    assert_eq!(env.calls("/card/invoice/platform/updatestatus").await, 1);

    update(&mut env, "o-s", ReimburseStatus::Closure).await.unwrap();
    assert!(env.cards().await.is_empty(), "written off: out of the card package");
    let status = update(&mut env, "o-s", ReimburseStatus::Init).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::FailedPrecondition, "REIMBURSE_STATUS_FINAL"));
    assert_eq!(env.calls("/card/invoice/platform/updatestatus").await, 2);

    let status = update(&mut env, "o-s", ReimburseStatus::Unspecified).await.unwrap_err();
    assert_eq!(violations(&status), ["reimburse_status"]);
    let status = update(&mut env, "o-none", ReimburseStatus::Lock).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let never = env.issue(request("o-unauthorized")).await.unwrap();
    assert_eq!(state(&never), pb::BillState::Failed);
    let status = update(&mut env, "o-unauthorized", ReimburseStatus::Lock).await.unwrap_err();
    assert_eq!(reason(&status), "BILL_NOT_INSERTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pushes_are_verified_applied_once_and_forgeries_refused() {
    let mut env = Env::start(test_support::sqlite()).await;
    env.authorize("o-push").await;
    let bill = env.issue(request("o-push")).await.unwrap();

    // A reimbursing party locks the bill: WeChat pushes update_invoice_status (safe mode).
    let changed = env
        .post(
            &format!("/sandbox/cards/{}/status", bill.card_code),
            json!({"reimburse_status": "INVOICE_REIMBURSE_LOCK"}),
        )
        .await;
    let push_id = changed["push_id"].as_u64().unwrap();
    let mut delivered = serde_json::Value::Null;
    for _ in 0..100 {
        delivered = env.get(&format!("/sandbox/pushes/{push_id}")).await;
        if delivered["finished"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(delivered["delivered"], true, "{delivered}");
    assert_eq!(delivered["attempts"][0]["response_body"], "success");
    assert_eq!(env.bill("o-push").await.reimburse_status, ReimburseStatus::Lock as i32);

    // Replayed: acknowledged, no second effect (the bureau moved on meanwhile).
    update(&mut env, "o-push", ReimburseStatus::Init).await.unwrap();
    let replay = env.post(&format!("/sandbox/pushes/{push_id}/replay"), json!({})).await;
    assert_eq!(replay["push"]["attempts"][0]["response_body"], "success");
    assert_eq!(env.bill("o-push").await.reimburse_status, ReimburseStatus::Init as i32, "the replay changed nothing");

    // Forged: wrong signature, tampered body, no body, oversized: refused, nothing changes.
    let original = env.get(&format!("/sandbox/pushes/{push_id}")).await;
    let url = format!("http://{}/wechat/callback", env.bureau.as_ref().unwrap().http_addr);
    let query = original["query"].as_str().unwrap();
    let body = original["body"].as_str().unwrap();
    let forged_query = query.replace("msg_signature=", "msg_signature=0");
    for (query, body, expected) in [
        (forged_query.as_str(), body.to_owned(), 403),
        (query, body.replace("<Encrypt><![CDATA[", "<Encrypt><![CDATA[AAAA"), 403),
        (query, String::new(), 400),
        (query, "<".repeat(70_000), 413),
        ("", body.to_owned(), 400),
    ] {
        let response = env.http.post(format!("{url}?{query}")).body(body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{query}");
    }
    assert_eq!(env.bill("o-push").await.reimburse_status, ReimburseStatus::Init as i32);

    // URL verification.
    let token = "sandboxToken";
    let signature = wechat::callback::signature::signature(token, "1714036504", "1514711492");
    let echo = env
        .http
        .get(format!("{url}?signature={signature}&timestamp=1714036504&nonce=1514711492&echostr=hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.text().await.unwrap(), "hello");
    let bad = env
        .http
        .get(format!("{url}?signature=00&timestamp=1714036504&nonce=1514711492&echostr=hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_is_final_like_a_write_off() {
    let mut env = Env::start(test_support::sqlite()).await;
    env.authorize("o-cancel").await;
    env.issue(request("o-cancel")).await.unwrap();
    let cancelled = update(&mut env, "o-cancel", ReimburseStatus::Cancel).await.unwrap();
    assert_eq!(cancelled.reimburse_status, ReimburseStatus::Cancel as i32);
    // WeChat shows a reversal as the card written off: it stays in the card package, marked so.
    let cards = env.cards().await;
    assert_eq!((cards.len(), &cards[0]["written_off"]), (1, &json!(true)));
    for next in [ReimburseStatus::Init, ReimburseStatus::Lock, ReimburseStatus::Closure] {
        let status = update(&mut env, "o-cancel", next).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (tonic::Code::FailedPrecondition, "REIMBURSE_STATUS_FINAL"),
            "{next:?}"
        );
    }
    assert_eq!(env.calls("/card/invoice/platform/updatestatus").await, 1, "refused before WeChat");

    // A reimburser cannot move it on at the sandbox either, and a push after it changes nothing.
    let code = cards[0]["code"].as_str().unwrap();
    let refused = env
        .http
        .post(format!("{}/sandbox/cards/{code}/status", env.sandbox.base_url()))
        .json(&json!({"reimburse_status": "INVOICE_REIMBURSE_LOCK"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    assert_eq!(env.bill("o-cancel").await.reimburse_status, ReimburseStatus::Cancel as i32);
}
