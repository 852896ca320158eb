//! Pushes that go wrong: lost (the reconciler recovers them), duplicated, replayed later,
//! forged.

use e2e::*;
use fiscalbill_common::proto::collection as pb;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_push_is_recovered_by_the_reconciler() {
    let mut stack = Stack::start(Options { reconcile_after_secs: 1, ..Options::default() }).await;
    let created = stack.create("order-lost").await;
    // Every delivery attempt of the push fails.
    let dead = json!({
        "appid": UNIT, "secret": secret(UNIT).expose(), "name": "Sandbox Hospital",
        "callback_url": "http://127.0.0.1:9/nowhere", "callback_token": TOKEN, "encoding_aes_key": AES_KEY
    });
    stack.post("/sandbox/accounts", dead).await;
    let push = stack.answer(&created.auth_url, false).await;
    assert_eq!(push["delivered"], false);
    assert_eq!(push["attempts"].as_array().unwrap().len(), 3);

    let issued = stack.wait_for("order-lost", pb::AuthorizationState::Issued).await;
    assert!(stack.calls("/card/invoice/getauthdata").await >= 1);
    assert_eq!(stack.cards(PAYER).await[0]["code"], issued.card_code.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_replayed_pushes_give_one_bill() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("order-dup").await;
    let push = stack.answer(&created.auth_url, false).await;
    let push_id = push["id"].as_u64().unwrap();
    stack.wait_for("order-dup", pb::AuthorizationState::Issued).await;
    // WeChat's retries carry the same message; a replay minutes later (sandbox clock moved).
    stack.post(&format!("/sandbox/pushes/{push_id}/replay"), json!({})).await;
    stack.post(&format!("/sandbox/pushes/{push_id}/replay"), json!({})).await;
    stack.post("/sandbox/clock/advance", json!({"seconds": 600})).await;
    let replay = stack.post(&format!("/sandbox/pushes/{push_id}/replay"), json!({})).await;
    assert_eq!(replay["push"]["attempts"][0]["response_body"], "success", "acknowledged, so WeChat stops");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(stack.calls("/nontax/insertbill").await, 1);
    assert_eq!(stack.cards(PAYER).await.len(), 1);
    assert_eq!(stack.authorization("order-dup").await.state, pb::AuthorizationState::Issued as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_pushes_change_nothing() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("order-forged").await;
    // A genuine push for another order, to copy from.
    let other = stack.create("order-genuine").await;
    let genuine = stack.answer(&other.auth_url, false).await;
    let query = genuine["query"].as_str().unwrap().to_owned();
    let body = genuine["body"].as_str().unwrap().to_owned();
    let url = format!("http://{}/wechat/callback/{UNIT}", stack.collection_http);

    let forged_plain = format!(
        "<xml><ToUserName>gh_x</ToUserName><FromUserName>{PAYER}</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>\
         <Event>user_authorize_invoice</Event><SuccOrderId>order-forged</SuccOrderId><FailOrderId></FailOrderId></xml>"
    );
    let cases: Vec<(String, String, u16)> = vec![
        (query.replace("msg_signature=", "msg_signature=f"), body.clone(), 403),
        (query.replace("signature=", "signature=0"), body.clone(), 403),
        (query.clone(), body.replace("<Encrypt><![CDATA[", "<Encrypt><![CDATA[QUFB"), 403),
        (query.clone(), body[..body.len() / 2].to_owned(), 400),
        (query.clone(), "x".repeat(70_000), 413),
        ("signature=1&timestamp=1&nonce=1".to_owned(), forged_plain.clone(), 400),
        (
            query.clone(),
            "<!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>&e;</Encrypt></xml>".to_owned(),
            400,
        ),
    ];
    for (query, body, expected) in cases {
        let response = stack.http.post(format!("{url}?{query}")).body(body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "query {query}");
    }
    let unknown_unit = stack
        .http
        .post(format!("http://{}/wechat/callback/wx00000000000000ff?{query}", stack.collection_http))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_unit.status().as_u16(), 404);

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(stack.authorization("order-forged").await.state, pb::AuthorizationState::Pending as i32);
    assert_eq!(created.state, pb::AuthorizationState::Pending as i32);
    assert_eq!(
        stack.wait_for("order-genuine", pb::AuthorizationState::Issued).await.order_id,
        "order-genuine",
        "the endpoint stays up"
    );

    // URL verification.
    let signature = wechat::callback::signature::signature(TOKEN, "1714036504", "1514711492");
    let echo = stack
        .http
        .get(format!("{url}?signature={signature}&timestamp=1714036504&nonce=1514711492&echostr=42"))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.text().await.unwrap(), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_three_times_and_replays_later_give_one_bill_each() {
    let mut stack = Stack::start(Options::default()).await;
    stack.post("/sandbox/push-settings", json!({"copies": 3})).await;
    let mut push_ids = Vec::new();
    for i in 0..10 {
        let created = stack.create(&format!("triple-{i}")).await;
        let push = stack.answer(&created.auth_url, false).await;
        assert_eq!(push["attempts"].as_array().unwrap().len(), 3, "delivered three times: {push}");
        push_ids.push(push["id"].as_u64().unwrap());
    }
    for i in 0..10 {
        stack.wait_for(&format!("triple-{i}"), pb::AuthorizationState::Issued).await;
    }
    // Minutes later, some pushes come again, once each.
    stack.post("/sandbox/push-settings", json!({"copies": 1})).await;
    stack.post("/sandbox/clock/advance", json!({"seconds": 300})).await;
    for id in push_ids.iter().step_by(3) {
        let replay = stack.post(&format!("/sandbox/pushes/{id}/replay"), json!({})).await;
        assert_eq!(replay["push"]["attempts"][0]["response_body"], "success");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(stack.cards(PAYER).await.len(), 10);
    assert_eq!(stack.calls("/nontax/insertbill").await, 10);
    let metrics = stack
        .http
        .get(format!("http://{}/metrics", stack.collection_admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("fiscalbill_pushes_total{outcome=\"authorized\"} 10"), "{metrics}");
    assert!(
        metrics.contains("fiscalbill_pushes_total{outcome=\"duplicate\"} 24"),
        "20 copies and 4 replays: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_sealed_for_another_appid_or_with_another_key_are_refused() {
    use wechat::Secret;
    use wechat::callback::{CallbackKeys, PushFormat, PushMessage, PushMode, seal_push};
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("order-sealed").await;
    let message = PushMessage::new(
        PushFormat::Xml,
        [
            ("ToUserName", "gh_c0000000000000"),
            ("FromUserName", PAYER),
            ("CreateTime", "1760000000"),
            ("MsgType", "event"),
            ("Event", "user_authorize_invoice"),
            ("SuccOrderId", "order-sealed"),
            ("FailOrderId", ""),
            ("AuthorizeAppId", UNIT),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    let url = format!("http://{}/wechat/callback/{UNIT}", stack.collection_http);
    let keys = |appid: &str, aes: &str| {
        CallbackKeys::new(appid, Secret::new(TOKEN), Some(&Secret::new(aes)), None, PushMode::Safe).unwrap()
    };
    let other_key = "OTHERaesKeyOTHERaesKeyOTHERaesKeyOTHERaesKe";
    for (case, keys) in [("another appid", keys("wx00000000000000ff", AES_KEY)), ("another key", keys(UNIT, other_key))]
    {
        let sealed = seal_push(&keys, PushFormat::Xml, &message, 1_760_000_000, "42");
        let response =
            stack.http.post(format!("{url}?{}", sealed.query_string())).body(sealed.body).send().await.unwrap();
        assert_eq!(response.status(), 403, "{case}");
    }
    // Nothing changed; the payer's real authorization, pushed with the real keys, still goes through.
    assert_eq!(stack.authorization("order-sealed").await.state, pb::AuthorizationState::Pending as i32);
    stack.answer(&created.auth_url, false).await;
    stack.wait_for("order-sealed", pb::AuthorizationState::Issued).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_naming_another_s_pappid_is_refused_without_effect_and_counted() {
    use wechat::Secret;
    use wechat::callback::{CallbackKeys, PushFormat, PushMessage, PushMode, seal_push};
    let mut stack = Stack::start(Options::default()).await;
    let created = stack.create("order-spapp").await;
    let message = |s_pappid: &str, create_time: &str| {
        PushMessage::new(
            PushFormat::Xml,
            [
                ("ToUserName", "gh_c0000000000000"),
                ("FromUserName", PAYER),
                ("CreateTime", create_time),
                ("MsgType", "event"),
                ("Event", "user_authorize_invoice"),
                ("SuccOrderId", "order-spapp"),
                ("FailOrderId", ""),
                ("AuthorizeAppId", UNIT),
                ("SPAppId", s_pappid),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        )
    };
    let keys = CallbackKeys::new(UNIT, Secret::new(TOKEN), Some(&Secret::new(AES_KEY)), None, PushMode::Safe).unwrap();
    let url = format!("http://{}/wechat/callback/{UNIT}", stack.collection_http);
    let sealed = seal_push(&keys, PushFormat::Xml, &message("d3hvdGhlcmJ1cmVhdV8=", "1760000000"), 1_760_000_000, "7");
    let response = stack.http.post(format!("{url}?{}", sealed.query_string())).body(sealed.body).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), "spappid_mismatch");
    assert_eq!(stack.authorization("order-spapp").await.state, pb::AuthorizationState::Pending as i32);
    let metrics = stack.http.get(format!("http://{}/metrics", stack.collection_admin)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("fiscalbill_pushes_total{outcome=\"refused_spappid_mismatch\"} 1"), "{metrics}");

    // The same push under the order's own s_pappid is taken: the refused one left no
    // deduplication record behind.
    assert_eq!(created.state, pb::AuthorizationState::Pending as i32);
    let request = fiscalbill_common::proto::bureau::GetSpAppIdRequest {};
    let s_pappid = stack.bureau_client.get_sp_app_id(request).await.unwrap().into_inner().s_pappid;
    let sealed = seal_push(&keys, PushFormat::Xml, &message(&s_pappid, "1760000000"), 1_760_000_000, "8");
    let response = stack.http.post(format!("{url}?{}", sealed.query_string())).body(sealed.body).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "success");
    let metrics = stack.http.get(format!("http://{}/metrics", stack.collection_admin)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("fiscalbill_pushes_total{outcome=\"authorized\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_with_an_absurd_create_time_is_refused_and_counted() {
    use wechat::Secret;
    use wechat::callback::{CallbackKeys, PushFormat, PushMessage, PushMode, seal_push};
    let mut stack = Stack::start(Options::default()).await;
    stack.create("order-time").await;
    let keys = CallbackKeys::new(UNIT, Secret::new(TOKEN), Some(&Secret::new(AES_KEY)), None, PushMode::Safe).unwrap();
    let url = format!("http://{}/wechat/callback/{UNIT}", stack.collection_http);
    // Signed with the unit's own keys: only the time is wrong (i64::MAX overflowed as
    // milliseconds; year 10000 is no Timestamp a client can read; 1999 is before any bill).
    for (nonce, create_time) in ["9223372036854775807", "253402300800", "946684799"].into_iter().enumerate() {
        let message = PushMessage::new(
            PushFormat::Xml,
            [
                ("ToUserName", "gh_c0000000000000"),
                ("FromUserName", PAYER),
                ("CreateTime", create_time),
                ("MsgType", "event"),
                ("Event", "user_authorize_invoice"),
                ("SuccOrderId", "order-time"),
                ("FailOrderId", ""),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let sealed = seal_push(&keys, PushFormat::Xml, &message, 1_760_000_000, &nonce.to_string());
        let response =
            stack.http.post(format!("{url}?{}", sealed.query_string())).body(sealed.body).send().await.unwrap();
        assert_eq!(response.status(), 400, "CreateTime {create_time}");
    }
    assert_eq!(stack.authorization("order-time").await.state, pb::AuthorizationState::Pending as i32);
    let metrics = stack.http.get(format!("http://{}/metrics", stack.collection_admin)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("fiscalbill_pushes_total{outcome=\"refused_implausible_time\"} 3"), "{metrics}");
}
