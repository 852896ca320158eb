//! A WeChat sandbox and a bureau-svc on 127.0.0.1:0, the bureau in a runtime of its own so a
//! test can crash it (drop every task at once) and start it again on the same database.

use std::time::Duration;

use bureau_svc::config::{AccountConfig, BureauConfig, IssuingConfig, ServerConfig, UnitConfig};
use fiscalbill_common::config::SecretSetting;
use fiscalbill_common::db::DatabaseConfig;
use fiscalbill_common::lifecycle::RunningService;
use fiscalbill_common::proto::bureau as pb;
use fiscalbill_common::proto::bureau::bureau_service_client::BureauServiceClient;
use fiscalbill_common::proto::types as types_pb;
use serde_json::{Value, json};
use tonic::transport::Channel;
use wechat::Secret;
use wechat::callback::PushMode;
use wechat::types::{AuthSource, GetBillAuthUrlRequest};
use wechat::{Credentials, MemoryCredentialStore, TokenMode, WechatClient, WechatHttpConfig};
use wechat_sandbox::{RunningSandbox, SandboxConfig};

pub const BUREAU: &str = "wxb0000000000000b1";
pub const UNIT: &str = "wxc0000000000000c1";
pub const APP: &str = "wxa0000000000000a1";
/// A unit WeChat knows but the bureau has not onboarded.
pub const OTHER_UNIT: &str = "wxd0000000000000d1";
/// A unit known to the bureau only.
pub const THIRD_UNIT: &str = "wxd0000000000000d2";
pub const PAYER: &str = "oPayer000000000000000000001";

pub struct Bureau {
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<RunningService>,
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
}

impl Bureau {
    /// Starts a bureau in its own runtime.
    pub fn start(config: BureauConfig) -> Bureau {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let running = runtime.block_on(bureau_svc::start(config)).expect("bureau starts");
        Bureau {
            grpc_addr: running.grpc_addr,
            http_addr: running.http_addr,
            admin_addr: running.admin_addr,
            runtime: Some(runtime),
            running: Some(running),
        }
    }

    /// A clean stop: drain, park, close.
    pub fn stop(mut self) {
        let runtime = self.runtime.take().unwrap();
        runtime.block_on(self.running.take().unwrap().stop());
        runtime.shutdown_background();
    }

    /// A crash: every task of the bureau dies at once, mid-step.
    pub fn crash(mut self) {
        self.running.take();
        self.runtime.take().unwrap().shutdown_background();
    }
}

impl Drop for Bureau {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub struct Env {
    pub sandbox: RunningSandbox,
    pub db: DatabaseConfig,
    pub bureau: Option<Bureau>,
    pub client: BureauServiceClient<Channel>,
    pub channel: Channel,
    pub http: reqwest::Client,
    /// The unit's side of WeChat, for authorizing orders.
    pub unit: Credentials,
    pub issuing: IssuingConfig,
    /// SHA-256 of the certificate the bureau signs with.
    pub signer_sha256: String,
}

fn sandbox_accounts() -> Vec<wechat_sandbox::AccountConfig> {
    let mut accounts = wechat_sandbox::demo_accounts();
    let mut other = accounts[1].clone();
    other.appid = OTHER_UNIT.to_owned();
    other.name = "Unboarded Court".to_owned();
    accounts.push(other);
    accounts
}

pub fn secret_of(appid: &str) -> Secret {
    sandbox_accounts().into_iter().find(|a| a.appid == appid).unwrap().secret
}

pub fn fast_issuing() -> IssuingConfig {
    IssuingConfig {
        retry_base_ms: 20,
        retry_max_ms: 200,
        poll_interval_ms: 20,
        lease_secs: 2,
        default_wait_ms: 8_000,
        never_authorized_retry_secs: 1,
        ..IssuingConfig::default()
    }
}

/// The demo logo as a file, for the configured unit: written once per test process (tests
/// run in parallel, and a file being rewritten reads as empty to another).
pub fn demo_logo_file() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join("fiscalbill-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("logo-{}.png", std::process::id()));
        std::fs::write(&path, wechat_sandbox::DEMO_LOGO_PNG).unwrap();
        path
    })
    .clone()
}

pub fn bureau_config(sandbox: &str, db: &DatabaseConfig, issuing: &IssuingConfig) -> BureauConfig {
    BureauConfig {
        server: ServerConfig {
            grpc_listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            shutdown_grace_ms: 2_000,
            replica_id: None,
            limits: Default::default(),
        },
        database: db.clone(),
        wechat: WechatHttpConfig {
            base_url: sandbox.to_owned(),
            timeout_ms: 1_000,
            resend_backoff_ms: 10,
            ..WechatHttpConfig::default()
        },
        account: AccountConfig {
            appid: BUREAU.to_owned(),
            secret: SecretSetting::Inline(secret_of(BUREAU)),
            name: "沙箱市财政局".to_owned(),
            token_mode: TokenMode::StableToken,
            callback_token: Some(SecretSetting::Inline(Secret::new("sandboxToken"))),
            encoding_aes_key: Some(SecretSetting::Inline(Secret::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"))),
            previous_encoding_aes_key: None,
            push_mode: PushMode::Safe,
        },
        issuing: issuing.clone(),
        units: vec![UnitConfig {
            appid: UNIT.to_owned(),
            payee: "沙箱市人民医院".to_owned(),
            logo_url: None,
            logo_file: Some(demo_logo_file()),
        }],
        auth: fiscalbill_common::auth::AuthConfig { enabled: false, clients: Vec::new() },
        log: Default::default(),
        telemetry: Default::default(),
        signing: Some(test_signing().0.clone()),
    }
}

impl Env {
    pub async fn start(db: DatabaseConfig) -> Env {
        Self::start_with(db, fast_issuing()).await
    }

    pub async fn start_with(db: DatabaseConfig, issuing: IssuingConfig) -> Env {
        let sandbox = wechat_sandbox::start(SandboxConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            accounts: sandbox_accounts(),
            push_timeout_ms: 1_000,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let base = sandbox.base_url().to_owned();
        let bureau = {
            let (base, db, issuing) = (base.clone(), db.clone(), issuing.clone());
            tokio::task::spawn_blocking(move || Bureau::start(bureau_config(&base, &db, &issuing))).await.unwrap()
        };
        let channel = connect(bureau.grpc_addr).await;
        let client = client_for(channel.clone());
        let unit = Credentials::new(
            WechatClient::new(&WechatHttpConfig { base_url: base, ..WechatHttpConfig::default() }).unwrap(),
            [UNIT, APP, OTHER_UNIT].map(|a| (a.to_owned(), secret_of(a))),
            TokenMode::StableToken,
            std::sync::Arc::new(MemoryCredentialStore::default()),
            std::sync::Arc::new(wechat::clock::SystemClock),
        );
        let env = Env {
            sandbox,
            db,
            bureau: Some(bureau),
            client,
            channel,
            http: reqwest::Client::new(),
            unit,
            issuing,
            signer_sha256: test_signing().1.clone(),
        };
        env.point_callback().await;
        env.wait_ready().await;
        env
    }

    /// Tells the sandbox where the bureau's callback endpoint is.
    async fn point_callback(&self) {
        let mut account = sandbox_accounts().into_iter().find(|a| a.appid == BUREAU).unwrap();
        account.callback_url = Some(format!("http://{}/wechat/callback", self.bureau.as_ref().unwrap().http_addr));
        self.post("/sandbox/accounts", serde_json::to_value(&account).unwrap()).await;
    }

    async fn wait_ready(&self) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        for _ in 0..200 {
            let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
            if status.is_ok_and(|s| {
                s.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("bureau never became ready");
    }

    /// Waits until the bureau's start check found WeChat serving its account.
    pub async fn wait_wechat_ready(&self) {
        let admin = self.bureau.as_ref().unwrap().admin_addr;
        for _ in 0..200 {
            let metrics = self.http.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
            if metrics.contains("fiscalbill_wechat_ready 1") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the bureau's start check never passed");
    }

    /// Stops (cleanly) or crashes the bureau, then starts it again on the same database.
    pub async fn restart(&mut self, crash: bool) {
        self.restart_with(crash, |_| {}).await;
    }

    /// Stops (or crashes) the bureau and starts it again with its configuration changed by
    /// `adjust`.
    pub async fn restart_with(&mut self, crash: bool, adjust: impl FnOnce(&mut BureauConfig) + Send + 'static) {
        let bureau = self.bureau.take().unwrap();
        tokio::task::spawn_blocking(move || if crash { bureau.crash() } else { bureau.stop() }).await.unwrap();
        let (base, db, issuing) = (self.sandbox.base_url().to_owned(), self.db.clone(), self.issuing.clone());
        let bureau = tokio::task::spawn_blocking(move || {
            let mut config = bureau_config(&base, &db, &issuing);
            adjust(&mut config);
            Bureau::start(config)
        })
        .await
        .unwrap();
        self.channel = connect(bureau.grpc_addr).await;
        self.client = client_for(self.channel.clone());
        self.bureau = Some(bureau);
        self.point_callback().await;
        self.wait_ready().await;
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(format!("{}{path}", self.sandbox.base_url())).json(&body).send().await.unwrap();
        let status = response.status();
        let value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {value}");
        value
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.sandbox.base_url())).send().await.unwrap().json().await.unwrap()
    }

    /// Calls the sandbox saw for an endpoint path by the bureau.
    pub async fn calls(&self, path: &str) -> u64 {
        let stats = self.get("/sandbox/stats").await;
        stats["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["endpoint"] == path && r["appid"] == BUREAU)
            .map(|r| r["calls"].as_u64().unwrap())
            .sum()
    }

    pub async fn fault(&self, rule: Value) {
        self.post("/sandbox/faults", rule).await;
    }

    pub async fn s_pappid(&mut self) -> String {
        self.client.get_sp_app_id(pb::GetSpAppIdRequest {}).await.unwrap().into_inner().s_pappid
    }

    /// The payer authorizes `order_id` of `appid` (the unit's Service Account or its App).
    pub async fn authorize_as(&mut self, appid: &str, order_id: &str, decline: bool) {
        let s_pappid = self.s_pappid().await;
        let ticket = self.unit.card_ticket(appid).await.unwrap().value;
        let request = &GetBillAuthUrlRequest {
            s_pappid,
            order_id: order_id.to_owned(),
            money: 1,
            timestamp: wechat::clock::unix_now(),
            source: if appid == APP { AuthSource::App } else { AuthSource::Web },
            redirect_url: None,
            ticket,
        };
        let client = self.unit.client();
        let link = self
            .unit
            .with_access_token(appid, |t| async move { client.get_bill_auth_url(&t, request).await })
            .await
            .unwrap();
        self.post("/sandbox/authorize", json!({"auth_url": link.auth_url, "openid": PAYER, "decline": decline})).await;
    }

    pub async fn authorize(&mut self, order_id: &str) {
        self.authorize_as(UNIT, order_id, false).await;
    }

    /// The payer's card package in the sandbox.
    pub async fn cards(&self) -> Vec<Value> {
        self.get(&format!("/sandbox/users/{PAYER}/cards")).await["cards"].as_array().unwrap().clone()
    }

    /// IssueBill, then GetBill until the bill is final, as the contract says a caller does when
    /// IssueBill answers with a bill in progress (a step waiting for its retry).
    pub async fn issue(&mut self, request: pb::IssueBillRequest) -> Result<pb::Bill, tonic::Status> {
        let order_id = request.order_id.clone();
        let mut bill = self.client.issue_bill(request).await.map(|r| r.into_inner().bill.unwrap())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !is_final(&bill) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            bill = self.bill(&order_id).await;
        }
        Ok(bill)
    }

    pub async fn bill(&mut self, order_id: &str) -> pb::Bill {
        self.client
            .get_bill(pb::GetBillRequest { unit_appid: UNIT.into(), order_id: order_id.into() })
            .await
            .unwrap()
            .into_inner()
            .bill
            .unwrap()
    }

    /// Polls GetBill until the bill is final.
    pub async fn final_bill(&mut self, order_id: &str) -> pb::Bill {
        for _ in 0..400 {
            let bill = self.bill(order_id).await;
            if matches!(pb::BillState::try_from(bill.state), Ok(pb::BillState::Inserted | pb::BillState::Failed)) {
                return bill;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("bill {order_id} never became final: {:?}", self.bill(order_id).await);
    }
}

pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

pub fn client_for(channel: Channel) -> BureauServiceClient<Channel> {
    BureauServiceClient::new(channel).max_decoding_message_size(16 << 20).max_encoding_message_size(16 << 20)
}

/// A valid bill for `order_id`; billing codes differ per order.
pub fn content(order_id: &str, fee: i64) -> types_pb::BillContent {
    let code: u64 = order_id.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) % 10_000_000_000;
    types_pb::BillContent {
        fee,
        payer_title: "张三".to_owned(),
        billing_no: "44010125".to_owned(),
        billing_code: format!("{code:010}"),
        billing_time: Some(prost_types::Timestamp { seconds: 1_760_000_000, nanos: 0 }),
        items: vec![types_pb::BillItem {
            name: "门诊挂号费".into(),
            quantity: "1".into(),
            unit: "次".into(),
            unit_price: fee,
            amount: fee,
        }],
        remarks: "测试".to_owned(),
    }
}

pub fn request(order_id: &str) -> pb::IssueBillRequest {
    pb::IssueBillRequest {
        unit_appid: UNIT.to_owned(),
        order_id: order_id.to_owned(),
        content: Some(content(order_id, 1_500)),
        pdf: Default::default(),
        request_id: String::new(),
        authorized_appid: String::new(),
    }
}

pub fn state(bill: &pb::Bill) -> pb::BillState {
    pb::BillState::try_from(bill.state).unwrap()
}

pub use fiscalbill_common::status::{error_reason as reason, violation_fields as violations};

/// Inserted or failed.
pub fn is_final(bill: &pb::Bill) -> bool {
    matches!(pb::BillState::try_from(bill.state), Ok(pb::BillState::Inserted | pb::BillState::Failed))
}

/// This test process's throwaway signing certificate and key (inline), and the certificate's
/// SHA-256: the same for every bureau the tests start, so that restarts keep it.
pub fn test_signing() -> &'static (bureau_svc::config::SigningConfig, String) {
    use fiscalbill_common::config::SecretSetting;
    static SIGNING: std::sync::OnceLock<(bureau_svc::config::SigningConfig, String)> = std::sync::OnceLock::new();
    SIGNING.get_or_init(|| {
        let (signer, certificate, key) = bureau_svc::pdf::sign::BillSigner::generate_throwaway("沙箱市财政局").unwrap();
        let config = bureau_svc::config::SigningConfig {
            certificate: SecretSetting::Inline(wechat::Secret::new(certificate)),
            key: SecretSetting::Inline(wechat::Secret::new(key)),
            sign_supplied: false,
        };
        (config, signer.fingerprint().to_owned())
    })
}
