//! Injected faults reach the client as the typed errors it acts on, and resends happen only
//! where the doc allows them.

use serde_json::json;
use wechat::types::OrderRef;
use wechat::{CallError, TokenMode, WechatError, WechatHttpConfig};

use crate::support::*;

async fn get_auth_data(creds: &wechat::Credentials) -> Result<(), CallError> {
    let client = creds.client();
    let order = &OrderRef { s_pappid: "unknown".into(), order_id: "o".into() };
    match creds.with_access_token(UNIT, |t| async move { client.get_auth_data(&t, order).await }).await {
        Err(CallError::Wechat(error)) if error.errcode() == Some(72038) => Ok(()),
        other => other.map(|_| ()),
    }
}

#[tokio::test]
async fn system_busy_is_resent_only_where_safe() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    creds.access_token(UNIT).await.unwrap();
    creds.access_token(BUREAU).await.unwrap();
    env.fault(json!({"path": "/card/invoice/getauthdata", "kind": "errcode", "errcode": -1, "count": 2})).await;
    get_auth_data(&creds).await.unwrap();
    assert_eq!(env.calls("/card/invoice/getauthdata", UNIT).await, 3, "two resends, then success");

    // insertbill is never resent by the client: the bureau decides.
    env.fault(json!({"path": "/nontax/insertbill", "kind": "errcode", "errcode": -1, "count": 1})).await;
    let client = creds.client();
    let request = &insert_request("o", "p", UNIT, "1", "1");
    let error =
        creds.with_access_token(BUREAU, |t| async move { client.insert_bill(&t, request).await }).await.unwrap_err();
    assert!(matches!(error, CallError::Wechat(ref e) if e.errcode() == Some(-1) && e.is_transient()));
    assert_eq!(env.calls("/nontax/insertbill", BUREAU).await, 1);
}

#[tokio::test]
async fn http_errors_timeouts_and_dropped_connections_are_typed() {
    let env = Env::start().await;
    let config = WechatHttpConfig { max_resends: 0, timeout_ms: 300, ..env.http_config() };
    let client = wechat::WechatClient::new(&config).unwrap();
    let token = client.stable_token(BUREAU, &secret_of(BUREAU), false).await.unwrap().access_token;

    env.fault(json!({"path": "/card/invoice/seturl", "kind": "http_status", "status": 502, "count": 1})).await;
    let error = client.set_url(&token).await.unwrap_err();
    assert_eq!(error, WechatError::HttpStatus { endpoint: wechat::Endpoint::SetUrl, status: 502 });
    assert!(error.is_transient() && !error.outcome_unknown());

    env.fault(json!({"path": "/card/invoice/seturl", "kind": "delay", "delay_ms": 1500, "count": 1})).await;
    let error = client.set_url(&token).await.unwrap_err();
    assert!(matches!(error, WechatError::Timeout { .. }), "{error:?}");
    assert!(error.outcome_unknown());

    env.fault(json!({"path": "/card/invoice/seturl", "kind": "drop", "count": 1})).await;
    let error = client.set_url(&token).await.unwrap_err();
    assert!(matches!(error, WechatError::Transport { connected: true, .. }), "{error:?}");
    assert!(error.outcome_unknown());
    assert!(!error.to_string().contains(token.expose()), "no token in error text: {error}");

    // A dropped answer after the work was done: seturl ran (and keeps its s_pappid).
    env.fault(json!({"path": "/card/invoice/seturl", "kind": "drop", "after_processing": true, "count": 1})).await;
    assert!(client.set_url(&token).await.is_err());
    let sp = client.set_url(&token).await.unwrap();
    assert_eq!(sp.s_pappid.len(), 68);
}

#[tokio::test]
async fn safe_endpoints_are_resent_after_5xx_and_lost_answers() {
    let env = Env::start().await;
    let client = env.client();
    let token = client.stable_token(BUREAU, &secret_of(BUREAU), false).await.unwrap().access_token;
    env.fault(json!({"path": "/card/invoice/seturl", "kind": "http_status", "status": 503, "count": 1})).await;
    env.fault(json!({"path": "/card/invoice/seturl", "kind": "drop", "count": 1})).await;
    client.set_url(&token).await.unwrap();
    assert_eq!(env.calls("/card/invoice/seturl", BUREAU).await, 3);

    // createbillcard is not idempotent: a lost answer is reported, not resent.
    env.fault(json!({"path": "/nontax/createbillcard", "kind": "http_status", "status": 503, "count": 1})).await;
    let logo = wechat::image::LogoImage::new(bytes::Bytes::from_static(wechat_sandbox::DEMO_LOGO_PNG)).unwrap();
    let logo_url = client.upload_image(&token, &logo).await.unwrap();
    let info = wechat::types::BillCardInfo { payee: "p".into(), logo_url };
    assert!(client.create_bill_card(&token, &info).await.is_err());
    assert_eq!(env.calls("/nontax/createbillcard", BUREAU).await, 1);
}

#[tokio::test]
async fn connection_refused_is_resent_and_then_reported() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = WechatHttpConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        resend_backoff_ms: 1,
        ..WechatHttpConfig::default()
    };
    let client = wechat::WechatClient::new(&config).unwrap();
    let error = client.insert_bill(&"t".into(), &insert_request("o", "p", UNIT, "1", "1")).await.unwrap_err();
    assert!(matches!(error, WechatError::Transport { connected: false, .. }), "{error:?}");
    assert!(!error.outcome_unknown());
}

#[tokio::test]
async fn faults_can_target_one_appid_and_be_removed() {
    let env = Env::start().await;
    let creds = env.credentials(TokenMode::StableToken);
    env.fault(json!({"path": "*", "appid": BUREAU, "kind": "errcode", "errcode": 48001})).await;
    get_auth_data(&creds).await.unwrap();
    let error = creds.access_token(BUREAU).await.unwrap_err();
    assert!(matches!(error, CallError::Wechat(ref e) if e.errcode() == Some(48001)));
    let (status, _) = env.control(reqwest::Method::DELETE, "/sandbox/faults", None).await;
    assert_eq!(status, 200);
    let listed = env.get("/sandbox/faults").await;
    assert!(listed["faults"].as_array().unwrap().is_empty());
    let stats = env.get("/sandbox/stats").await;
    let row = stats["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["endpoint"] == "/cgi-bin/stable_token" && r["appid"] == BUREAU)
        .unwrap()
        .clone();
    assert_eq!(row["outcomes"]["48001"], 1);
}
