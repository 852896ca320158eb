//! A sandbox on 127.0.0.1:0 with the demo accounts, the real client pointed at it, and
//! helpers for its control API.

use std::sync::Arc;

use serde_json::{Value, json};
use wechat::clock::OffsetClock;
use wechat::types::{AuthSource, GetBillAuthUrlRequest, InsertBillRequest, InvoiceUserData};
use wechat::{
    Credentials, MemoryCredentialStore, TokenMode, WechatClient, WechatHttpConfig, credentials::CredentialStore,
};
use wechat::{Secret, pdf};
use wechat_sandbox::{AccountConfig, RunningSandbox, SandboxConfig};

pub const BUREAU: &str = "wxb0000000000000b1";
pub const UNIT: &str = "wxc0000000000000c1";
pub const APP: &str = "wxa0000000000000a1";

pub struct Env {
    pub sandbox: RunningSandbox,
    pub base: String,
    pub http: reqwest::Client,
    /// Moves together with the sandbox clock (see [`Env::advance`]).
    pub clock: OffsetClock,
}

pub fn demo_accounts() -> Vec<AccountConfig> {
    wechat_sandbox::demo_accounts()
}

pub fn secret_of(appid: &str) -> Secret {
    demo_accounts().into_iter().find(|a| a.appid == appid).expect("demo account").secret
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(SandboxConfig { accounts: demo_accounts(), ..test_config() }).await
    }

    pub async fn start_with(config: SandboxConfig) -> Env {
        let sandbox = wechat_sandbox::start(config).await.expect("sandbox starts");
        let base = sandbox.base_url().to_owned();
        Env { sandbox, base, http: reqwest::Client::new(), clock: OffsetClock::default() }
    }

    pub fn http_config(&self) -> WechatHttpConfig {
        WechatHttpConfig {
            base_url: self.base.clone(),
            timeout_ms: 2_000,
            resend_backoff_ms: 10,
            ..WechatHttpConfig::default()
        }
    }

    pub fn client(&self) -> WechatClient {
        WechatClient::new(&self.http_config()).expect("client builds")
    }

    pub fn credentials(&self, mode: TokenMode) -> Credentials {
        self.credentials_with(self.client(), mode, Arc::new(MemoryCredentialStore::default()))
    }

    pub fn credentials_with(
        &self,
        client: WechatClient,
        mode: TokenMode,
        store: Arc<dyn CredentialStore>,
    ) -> Credentials {
        let accounts = [BUREAU, UNIT, APP].map(|appid| (appid.to_owned(), secret_of(appid)));
        Credentials::new(client, accounts, mode, store, Arc::new(self.clock.clone()))
    }

    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, value) = self.control(reqwest::Method::POST, path, Some(body)).await;
        assert!(status < 300, "POST {path}: {status} {value}");
        value
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, value) = self.control(reqwest::Method::GET, path, None).await;
        assert!(status < 300, "GET {path}: {status} {value}");
        value
    }

    /// Calls recorded by the sandbox for an endpoint path and appid.
    pub async fn calls(&self, path: &str, appid: &str) -> u64 {
        let stats = self.get("/sandbox/stats").await;
        stats["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["endpoint"] == path && row["appid"] == appid)
            .map_or(0, |row| row["calls"].as_u64().unwrap())
    }

    pub async fn fault(&self, rule: Value) {
        self.post("/sandbox/faults", rule).await;
    }

    /// Advances the sandbox clock and the clients' clock together.
    pub async fn advance(&self, seconds: i64) {
        self.post("/sandbox/clock/advance", json!({ "seconds": seconds })).await;
        self.clock.advance(seconds);
    }

    pub fn now(&self) -> i64 {
        self.sandbox.sandbox.now()
    }
}

pub fn test_config() -> SandboxConfig {
    SandboxConfig { listen: "127.0.0.1:0".parse().unwrap(), push_timeout_ms: 1_000, ..SandboxConfig::default() }
}

/// The bureau's s_pappid (seturl) and a template for the unit.
pub async fn bureau_setup(env: &Env, creds: &Credentials) -> (String, String) {
    let client = creds.client();
    let sp = creds.with_access_token(BUREAU, |t| async move { client.set_url(&t).await }).await.unwrap();
    let info = &wechat::types::BillCardInfo { payee: "沙箱医院".to_owned(), logo_url: demo_logo_url(creds).await };
    let card_id =
        creds.with_access_token(BUREAU, |t| async move { client.create_bill_card(&t, info).await }).await.unwrap();
    assert_eq!(env.get("/sandbox/templates").await["templates"].as_array().unwrap().len(), 1);
    (sp.s_pappid, card_id)
}

/// The demo logo, uploaded through uploadimg: the URL a template's logo_url must be.
pub async fn demo_logo_url(creds: &Credentials) -> String {
    let logo = wechat::image::LogoImage::new(bytes::Bytes::from_static(wechat_sandbox::DEMO_LOGO_PNG)).unwrap();
    creds.account(BUREAU).upload_image(&logo).await.unwrap()
}

/// Creates an authorization link for `order_id` as the unit and authorizes it as `openid`.
pub async fn authorized_order(env: &Env, creds: &Credentials, s_pappid: &str, order_id: &str, openid: &str) -> String {
    let auth_url = auth_link(env, creds, UNIT, s_pappid, order_id, 1234).await;
    env.post("/sandbox/authorize", json!({ "auth_url": auth_url, "openid": openid })).await;
    auth_url
}

pub async fn auth_link(
    env: &Env,
    creds: &Credentials,
    appid: &str,
    s_pappid: &str,
    order_id: &str,
    money: i64,
) -> String {
    let ticket = creds.card_ticket(appid).await.unwrap().value;
    let request = GetBillAuthUrlRequest {
        s_pappid: s_pappid.to_owned(),
        order_id: order_id.to_owned(),
        money,
        timestamp: env.now(),
        source: if appid == APP { AuthSource::App } else { AuthSource::Web },
        redirect_url: None,
        ticket,
    };
    let (client, request) = (creds.client(), &request);
    creds
        .with_access_token(appid, |t| async move { client.get_bill_auth_url(&t, request).await })
        .await
        .unwrap()
        .auth_url
}

pub async fn upload_pdf(creds: &Credentials, text: &str) -> String {
    let (client, bytes) = (creds.client(), &bytes::Bytes::from(pdf::sample(text)));
    creds.with_access_token(BUREAU, |t| async move { client.set_pdf(&t, bytes.clone()).await }).await.unwrap()
}

pub fn insert_request(
    order_id: &str,
    card_id: &str,
    appid: &str,
    media: &str,
    billing_code: &str,
) -> InsertBillRequest {
    InsertBillRequest::new(
        order_id.to_owned(),
        card_id.to_owned(),
        appid.to_owned(),
        InvoiceUserData {
            fee: 1234,
            title: "张三".to_owned(),
            billing_time: 1_700_000_000,
            billing_no: "44010125".to_owned(),
            billing_code: billing_code.to_owned(),
            s_pdf_media_id: media.to_owned(),
        },
    )
}
