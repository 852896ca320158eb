//! Pushes as WeChat sends them, received by a test endpoint that verifies them with the
//! project's own callback toolkit.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::post;
use bytes::Bytes;
use http::StatusCode;
use serde_json::json;
use wechat::Secret;
use wechat::TokenMode;
use wechat::callback::{CallbackKeys, CallbackQuery, PushFormat, PushMessage, PushMode, open_push};

use crate::support::*;

const TOKEN: &str = "sandboxToken";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

#[derive(Default)]
struct Inbox {
    /// Verified pushes.
    messages: Vec<PushMessage>,
    /// Raw bodies of every request.
    bodies: Vec<String>,
    /// Answer 500 to this many requests first.
    fail_first: usize,
    /// The body of the answer to a verified push (default `success`).
    answer: Option<&'static str>,
}

#[derive(Clone)]
struct Receiver {
    keys: CallbackKeys,
    inbox: Arc<Mutex<Inbox>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let mut inbox = receiver.inbox.lock().unwrap();
    inbox.bodies.push(String::from_utf8_lossy(&body).into_owned());
    if inbox.fail_first > 0 {
        inbox.fail_first -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "busy");
    }
    let query = CallbackQuery::parse(&query.unwrap_or_default());
    match open_push(&receiver.keys, &query, &body) {
        Ok(opened) => {
            inbox.messages.push(opened.message);
            (StatusCode::OK, inbox.answer.unwrap_or("success"))
        }
        Err(_) => (StatusCode::BAD_REQUEST, "rejected"),
    }
}

/// A callback endpoint for `appid` in `mode`, and a sandbox whose accounts push to it.
async fn setup(mode: PushMode, format: PushFormat, fail_first: usize) -> (Env, Arc<Mutex<Inbox>>) {
    let keys = CallbackKeys::new(UNIT, Secret::new(TOKEN), Some(&Secret::new(AES_KEY)), None, mode).unwrap();
    let inbox = Arc::new(Mutex::new(Inbox { fail_first, ..Inbox::default() }));
    let bureau_keys = CallbackKeys { appid: BUREAU.to_owned(), ..keys.clone() };
    let router = Router::new()
        .route("/unit", post(receive).with_state(Receiver { keys, inbox: inbox.clone() }))
        .route("/bureau", post(receive).with_state(Receiver { keys: bureau_keys, inbox: inbox.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let mut accounts = demo_accounts();
    for account in &mut accounts {
        account.push_mode = mode;
        account.push_format = format;
    }
    accounts[0].callback_url = Some(format!("{url}/bureau"));
    accounts[1].callback_url = Some(format!("{url}/unit"));
    let env = Env::start_with(wechat_sandbox::SandboxConfig { accounts, ..test_config() }).await;
    (env, inbox)
}

#[tokio::test]
async fn authorization_pushes_arrive_verified_in_every_mode_and_format() {
    for mode in [PushMode::Plain, PushMode::Compatible, PushMode::Safe] {
        for format in [PushFormat::Xml, PushFormat::Json] {
            let (env, inbox) = setup(mode, format, 0).await;
            let creds = env.credentials(TokenMode::StableToken);
            let (s_pappid, _) = bureau_setup(&env, &creds).await;
            let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-push", 100).await;
            let answer =
                env.post("/sandbox/authorize", json!({"auth_url": link, "openid": "oPayer", "wait": true})).await;
            assert_eq!(answer["push"]["delivered"], true, "{mode:?}/{format:?}: {answer}");
            assert_eq!(answer["push"]["attempts"].as_array().unwrap().len(), 1);

            let inbox = inbox.lock().unwrap();
            assert_eq!(inbox.messages.len(), 1);
            let event = inbox.messages[0].authorize_event().unwrap();
            assert_eq!(inbox.messages[0].format, format);
            assert_eq!(event.order_id, "o-push");
            assert!(event.authorized);
            assert_eq!(event.openid, "oPayer");
            assert_eq!(event.authorize_appid.as_deref(), Some(UNIT));
            assert_eq!(event.source.as_deref(), Some("web"));
            assert_eq!(event.s_pappid.as_deref(), Some(s_pappid.as_str()));
            assert!(event.to_user_name.starts_with("gh_"));
            assert_eq!(
                inbox.bodies[0].contains("o-push"),
                mode != PushMode::Safe,
                "{mode:?} hides the content only in safe mode"
            );
        }
    }
}

#[tokio::test]
async fn pushes_are_retried_three_times_like_wechat() {
    let (env, inbox) = setup(PushMode::Safe, PushFormat::Xml, 2).await;
    let creds = env.credentials(TokenMode::StableToken);
    let (s_pappid, _) = bureau_setup(&env, &creds).await;
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-retry", 100).await;
    let answer = env.post("/sandbox/authorize", json!({"auth_url": link, "wait": true})).await;
    let attempts: Vec<&str> =
        answer["push"]["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(attempts, ["http_500", "http_500", "http_200"]);
    assert_eq!(inbox.lock().unwrap().messages.len(), 1);

    inbox.lock().unwrap().fail_first = 3;
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-lost", 100).await;
    let answer = env.post("/sandbox/authorize", json!({"auth_url": link, "wait": true})).await;
    assert_eq!(answer["push"]["delivered"], false);
    assert_eq!(answer["push"]["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(inbox.lock().unwrap().messages.len(), 1, "a push lost three times is lost");
}

#[tokio::test]
async fn declines_app_orders_replays_and_status_pushes() {
    let (env, inbox) = setup(PushMode::Safe, PushFormat::Xml, 0).await;
    let creds = env.credentials(TokenMode::StableToken);
    let client = creds.client();
    let (s_pappid, card_id) = bureau_setup(&env, &creds).await;

    // A decline pushes FailOrderId.
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-no", 100).await;
    env.post("/sandbox/authorize", json!({"auth_url": link, "decline": true, "wait": true})).await;
    let declined = inbox.lock().unwrap().messages[0].authorize_event().unwrap();
    assert_eq!((declined.order_id.as_str(), declined.authorized), ("o-no", false));
    // Answering twice is refused.
    let (status, _) = env.control(reqwest::Method::POST, "/sandbox/authorize", Some(json!({"auth_url": link}))).await;
    assert_eq!(status, 409);

    // An order authorized through the App: the push goes to the Service Account and names the App.
    let app_link = auth_link(&env, &creds, APP, &s_pappid, "o-app", 100).await;
    let answer = env
        .post("/sandbox/authorize", json!({"s_pappid": s_pappid, "appid": APP, "order_id": "o-app", "wait": true}))
        .await;
    assert_eq!(answer["push"]["recipient"], UNIT);
    let app_event = inbox.lock().unwrap().messages[1].authorize_event().unwrap();
    assert_eq!(app_event.authorize_appid.as_deref(), Some(APP));
    assert_eq!(app_event.source.as_deref(), Some("app"));
    let _ = app_link;

    // A replay is the same request again, byte for byte.
    let push_id = answer["push_id"].as_u64().unwrap();
    let replay = env.post(&format!("/sandbox/pushes/{push_id}/replay"), json!({})).await;
    assert_eq!(replay["push"]["delivered"], true);
    {
        let inbox = inbox.lock().unwrap();
        assert_eq!(inbox.bodies[inbox.bodies.len() - 1], inbox.bodies[inbox.bodies.len() - 2]);
    }

    // A reimbursing party locks the bill: the bureau gets update_invoice_status.
    let media = upload_pdf(&creds, "app bill").await;
    let request = &insert_request("o-app", &card_id, APP, &media, "77");
    let inserted =
        creds.with_access_token(BUREAU, |t| async move { client.insert_bill(&t, request).await }).await.unwrap();
    let changed = env
        .post(
            &format!("/sandbox/cards/{}/status", inserted.code),
            json!({"reimburse_status": "INVOICE_REIMBURSE_LOCK"}),
        )
        .await;
    let push_id = changed["push_id"].as_u64().unwrap();
    let push = env.get(&format!("/sandbox/pushes/{push_id}")).await;
    assert_eq!(push["recipient"], BUREAU);
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while inbox.lock().unwrap().messages.len() < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("status push arrives");
    let status = inbox.lock().unwrap().messages[3].status_event().unwrap();
    assert_eq!(
        (status.status.as_str(), status.code.as_str(), status.card_id.as_str()),
        ("INVOICE_REIMBURSE_LOCK", inserted.code.as_str(), card_id.as_str())
    );
}

#[tokio::test]
async fn only_success_or_an_empty_body_acknowledges_and_anything_else_tells_the_payer() {
    let (env, inbox) = setup(PushMode::Safe, PushFormat::Xml, 0).await;
    let creds = env.credentials(TokenMode::StableToken);
    let (s_pappid, _) = bureau_setup(&env, &creds).await;

    inbox.lock().unwrap().answer = Some("");
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-empty", 100).await;
    let answer = env.post("/sandbox/authorize", json!({"auth_url": link, "openid": "oAck", "wait": true})).await;
    assert_eq!(
        (answer["push"]["delivered"].as_bool(), answer["push"]["abnormal"].as_bool()),
        (Some(true), Some(false))
    );

    // HTTP 200 with another body is abnormal data: not retried, not acknowledged, and WeChat
    // shows the payer that the account cannot serve them.
    inbox.lock().unwrap().answer = Some("OK");
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-ok", 100).await;
    let answer = env.post("/sandbox/authorize", json!({"auth_url": link, "openid": "oAbnormal", "wait": true})).await;
    assert_eq!(answer["push"]["delivered"], false, "{answer}");
    assert_eq!(answer["push"]["abnormal"], true);
    let attempts = answer["push"]["attempts"].as_array().unwrap();
    assert_eq!((attempts.len(), attempts[0]["outcome"].as_str()), (1, Some("abnormal_answer")));
    let messages = env.get("/sandbox/users/oAbnormal/messages").await;
    assert_eq!(messages["messages"][0]["kind"], "service_unavailable");
    assert_eq!(messages["messages"][0]["text"], "该公众号暂时无法提供服务，请稍后再试");
    let page = env.http.get(format!("{}/sandbox/users/oAbnormal", env.base)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("该公众号暂时无法提供服务，请稍后再试"));
    // A proper acknowledgement tells the payer nothing.
    assert!(env.get("/sandbox/users/oAck/messages").await["messages"].as_array().unwrap().is_empty());

    // No answer three times (errors): retried, then the payer is told as well.
    inbox.lock().unwrap().fail_first = 3;
    let link = auth_link(&env, &creds, UNIT, &s_pappid, "o-down", 100).await;
    let answer = env.post("/sandbox/authorize", json!({"auth_url": link, "openid": "oDown", "wait": true})).await;
    assert_eq!(answer["push"]["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(env.get("/sandbox/users/oDown/messages").await["messages"][0]["kind"], "service_unavailable");
}
