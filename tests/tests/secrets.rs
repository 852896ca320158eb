//! No secret ever appears in what the services print, answer or export: a full flow with
//! recognizable secrets (appsecrets, callback token, EncodingAESKey, API keys, access tokens,
//! tickets), every log line captured (JSON, debug level for the project's crates), metrics,
//! error answers and the configurations' Debug output, all scanned. The same logs show one
//! order as one trace across collection-svc and bureau-svc.

use std::io::Write;
use std::sync::{Arc, Mutex};

use e2e::*;
use fiscalbill_common::proto::bureau as bureau_pb;
use fiscalbill_common::proto::collection as pb;
use wechat::{WechatClient, WechatHttpConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const TRACE_ID: &str = "5ec2e7b0a1c34d77b2f6e91d00c0ffee";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_leaks_no_secret_anywhere() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("info,fiscalbill_common=debug,bureau_svc=debug,collection_svc=debug,wechat_sandbox=debug")
        .with_writer(logs.clone())
        .init();

    let mut stack = Stack::start(Options { auth: true, tls: true, ..Options::default() }).await;
    let mut answers = Vec::new();

    // The happy path, with the caller's trace context.
    let mut request =
        tonic::Request::new(stack.create_request("order-secret", fiscalbill_common::proto::types::Source::Web));
    request.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01").parse().unwrap());
    let created = stack.collection.create_authorization(request).await.unwrap().into_inner().authorization.unwrap();
    stack.answer(&created.auth_url, false).await;
    let issued = stack.wait_for("order-secret", pb::AuthorizationState::Issued).await;
    let bill = stack
        .bureau_client
        .update_bill_status(bureau_pb::UpdateBillStatusRequest {
            unit_appid: UNIT.into(),
            order_id: "order-secret".into(),
            reimburse_status: fiscalbill_common::proto::types::ReimburseStatus::Lock as i32,
        })
        .await
        .unwrap()
        .into_inner();
    answers.push(format!("{bill:?}"));
    stack
        .post(
            &format!("/sandbox/cards/{}/status", issued.card_code),
            serde_json::json!({"reimburse_status": "INVOICE_REIMBURSE_CANCEL"}),
        )
        .await;
    let pending = stack.create("order-sync").await;
    answers.push(format!("{pending:?}"));
    let mut tokens = stack.collection_with_key(Some(TOKENS_API_KEY));
    let token = tokens.get_access_token(pb::GetAccessTokenRequest { appid: UNIT.into() }).await.unwrap().into_inner();
    let ticket = tokens.get_card_ticket(pb::GetCardTicketRequest { appid: UNIT.into() }).await.unwrap().into_inner();
    answers.push(format!("{token:?} {ticket:?}"));

    // Failures of every kind, whose answers are scanned too.
    let synced = stack
        .collection
        .sync_authorization(pb::SyncAuthorizationRequest { unit_appid: UNIT.into(), order_id: "order-sync".into() })
        .await;
    answers.push(format!("{synced:?}"));
    for key in [None, Some("SECRET-apikey-wrong"), Some(TOKENS_API_KEY)] {
        let denied = stack
            .collection_with_key(key)
            .get_authorization(pb::GetAuthorizationRequest { unit_appid: UNIT.into(), order_id: "x".into() })
            .await;
        answers.push(format!("{denied:?}"));
    }
    stack
        .post("/sandbox/faults", serde_json::json!({"path": "*", "kind": "errcode", "errcode": 40001, "count": 4}))
        .await;
    let rejected = stack
        .collection
        .reject_authorization(pb::RejectAuthorizationRequest {
            unit_appid: UNIT.into(),
            order_id: "order-sync".into(),
            reason: "x".into(),
            url: String::new(),
        })
        .await;
    answers.push(format!("{rejected:?}"));
    let forged = stack
        .http
        .post(format!(
            "http://{}/wechat/callback/{UNIT}?timestamp=1&nonce=1&encrypt_type=aes&msg_signature=00",
            stack.collection_http
        ))
        .body("<xml><Encrypt>QUFB</Encrypt></xml>")
        .send()
        .await
        .unwrap();
    answers.push(forged.text().await.unwrap());
    for admin in [stack.collection_admin, stack.bureau_admin] {
        answers.push(stack.http.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap());
    }
    answers.push(stack.configs_debug());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Every account's current access token, as WeChat knows it.
    stack.http.delete(format!("{}/sandbox/faults", stack.sandbox.base_url())).send().await.unwrap();
    let client =
        WechatClient::new(&WechatHttpConfig { base_url: stack.sandbox.base_url().to_owned(), ..Default::default() })
            .unwrap();
    let mut secrets: Vec<String> = vec![
        TOKEN.into(),
        AES_KEY.into(),
        BUREAU_API_KEY.into(),
        HIS_API_KEY.into(),
        TOKENS_API_KEY.into(),
        token.access_token.clone(),
        ticket.ticket.clone(),
    ];
    for appid in [BUREAU, UNIT, APP] {
        secrets.push(secret(appid).expose().to_owned());
        secrets.push(client.stable_token(appid, &secret(appid), false).await.unwrap().access_token.expose().to_owned());
    }

    let printed = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(printed.lines().count() > 20, "logs were captured: {}", printed.lines().count());
    let everything = format!("{printed}\n{}", answers.join("\n"));
    for secret in &secrets {
        assert!(secret.len() >= 16);
        assert!(!everything.contains(secret.as_str()), "a secret leaked: {}…", &secret[..8]);
    }

    // One order, one trace: both services logged the caller's trace id.
    let traced: Vec<&str> = printed.lines().filter(|line| line.contains(TRACE_ID)).collect();
    assert!(traced.iter().any(|line| line.contains("\"target\":\"collection_svc")), "collection-svc logs the trace");
    assert!(traced.iter().any(|line| line.contains("\"target\":\"bureau_svc")), "bureau-svc logs the trace");
}
