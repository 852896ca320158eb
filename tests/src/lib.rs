//! A whole system for tests: the WeChat sandbox, bureau-svc and collection-svc on
//! 127.0.0.1, each service in a runtime of its own so that a test can stop, crash and restart
//! it on the same ports and database.

pub mod processes;

use std::net::SocketAddr;
use std::time::Duration;

use fiscalbill_common::auth::{AuthConfig, BearerKey, ClientConfig, key_sha256};
use fiscalbill_common::config::SecretSetting;
use fiscalbill_common::connections::ConnectionLimits;
use fiscalbill_common::db::DatabaseConfig;
use fiscalbill_common::lifecycle::RunningService;
use fiscalbill_common::proto::bureau::bureau_service_client::BureauServiceClient;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use fiscalbill_common::proto::types as types_pb;
use fiscalbill_common::tls::{ClientTls, ServerTls};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wechat::Secret;
use wechat::WechatHttpConfig;
use wechat::callback::{PushFormat, PushMode};
use wechat_sandbox::{AccountConfig, RunningSandbox, SandboxConfig};

pub const BUREAU: &str = "wxb0000000000000b1";
pub const UNIT: &str = "wxc0000000000000c1";
pub const APP: &str = "wxa0000000000000a1";
/// The account of the self-built platform: bureau and collection unit at once.
pub const SELF_BUILT: &str = "wxe0000000000000e1";
pub const PAYER: &str = "oPayer000000000000000000001";
/// Every credential of the stack is recognizable, so that tests can prove none leaks.
pub const TOKEN: &str = "SECRETcallbackTokenQ7";
pub const AES_KEY: &str = "SECRETaesKeySECRETaesKeySECRETaesKeySECRETa";
/// The API key collection-svc presents to the bureau (with `auth`).
pub const BUREAU_API_KEY: &str = "SECRET-apikey-collection-to-bureau";
/// The unit's business system: every ordinary method (with `auth`).
pub const HIS_API_KEY: &str = "SECRET-apikey-his";
/// A system allowed only the token server (with `auth`).
pub const TOKENS_API_KEY: &str = "SECRET-apikey-tokens";

/// The test PKI in `tests/certs` (see make.sh there).
pub fn cert(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs").join(name)
}

/// A service in a runtime of its own.
pub struct Hosted {
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<RunningService>,
}

/// gRPC, push (HTTP) and admin addresses, as bound.
type Bound = (SocketAddr, SocketAddr, SocketAddr);

impl Hosted {
    fn start<F>(start: impl FnOnce() -> F) -> (Self, Bound)
    where
        F: std::future::Future<Output = RunningService>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let running = runtime.block_on(start());
        let bound = (running.grpc_addr, running.http_addr, running.admin_addr);
        (Hosted { runtime: Some(runtime), running: Some(running) }, bound)
    }

    /// A clean stop (drain, park, close), or a crash: every task dies at once.
    fn stop(mut self, crash: bool) {
        let runtime = self.runtime.take().unwrap();
        if let (false, Some(running)) = (crash, self.running.take()) {
            runtime.block_on(running.stop());
        }
        runtime.shutdown_background();
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A further replica of a service.
pub struct Replica {
    host: Hosted,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl Replica {
    pub async fn stop(self) {
        let host = self.host;
        tokio::task::spawn_blocking(move || host.stop(false)).await.unwrap();
    }
}

/// Port 0: the service binds a free port and reports it, which no other test can take in
/// between (as it could a port picked beforehand).
fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[derive(Clone, Debug)]
pub struct Options {
    pub postgres: bool,
    pub self_built: bool,
    pub push_mode: PushMode,
    pub push_format: PushFormat,
    /// Lifetime of authorization links in the sandbox, seconds.
    pub link_lifetime_secs: i64,
    /// Pending authorizations this old are checked with WeChat.
    pub reconcile_after_secs: u64,
    /// TLS on both gRPC servers; mutual TLS between collection-svc and the bureau.
    pub tls: bool,
    /// API keys required by both services.
    pub auth: bool,
    /// An HTTP proxy for the calls to WeChat.
    pub wechat_proxy: Option<String>,
    /// The services' timeout for one WeChat call.
    pub wechat_timeout_ms: u64,
    /// Bills the bureau's worker drives at once; IssueBill deliveries collection-svc makes at once.
    pub workers: usize,
    /// PDF bytes collection-svc's deliveries in flight may hold, MiB.
    pub pdf_budget_mib: usize,
    /// Timeouts and connection caps of both services' ports.
    pub limits: ConnectionLimits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            postgres: false,
            self_built: false,
            push_mode: PushMode::Safe,
            push_format: PushFormat::Xml,
            link_lifetime_secs: 7200,
            reconcile_after_secs: 300,
            tls: false,
            auth: false,
            wechat_proxy: None,
            wechat_timeout_ms: 1_500,
            workers: 8,
            pdf_budget_mib: collection_svc::config::DispatchConfig::default().pdf_budget_mib,
            limits: ConnectionLimits::default(),
        }
    }
}

pub struct Stack {
    pub options: Options,
    pub sandbox: RunningSandbox,
    pub http: reqwest::Client,
    bureau_host: Option<Hosted>,
    collection_host: Option<Hosted>,
    bureau_db: DatabaseConfig,
    collection_db: DatabaseConfig,
    pub bureau_grpc: SocketAddr,
    pub bureau_http: SocketAddr,
    pub collection_grpc: SocketAddr,
    pub collection_http: SocketAddr,
    pub bureau_admin: SocketAddr,
    pub collection_admin: SocketAddr,
    /// collection-svc as the unit's business system (with its API key under `auth`).
    pub collection: CollectionClient,
    /// bureau-svc as collection-svc calls it.
    pub bureau_client: BureauServiceClient<InterceptedService<Channel, BearerKey>>,
}

pub fn secret(appid: &str) -> Secret {
    Secret::new(format!("SECRET-appsecret-{appid}"))
}

pub fn sandbox_accounts(options: &Options) -> Vec<AccountConfig> {
    let account = |appid: &str, name: &str| AccountConfig {
        appid: appid.to_owned(),
        secret: secret(appid),
        name: name.to_owned(),
        original_id: None,
        callback_url: None,
        callback_token: Some(Secret::new(TOKEN)),
        encoding_aes_key: Some(Secret::new(AES_KEY)),
        push_mode: options.push_mode,
        push_format: options.push_format,
        service_account: None,
        token_lifetime_secs: 7200,
        daily_quota: Default::default(),
    };
    let mut app = account(APP, "Sandbox Hospital App");
    app.service_account = Some(UNIT.to_owned());
    vec![
        account(BUREAU, "Sandbox Finance Bureau"),
        account(UNIT, "Sandbox Hospital"),
        app,
        account(SELF_BUILT, "Sandbox Self-built Platform"),
    ]
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl Stack {
    pub async fn start(options: Options) -> Stack {
        init_logs();
        let sandbox = wechat_sandbox::start(SandboxConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            accounts: sandbox_accounts(&options),
            auth_link_lifetime_secs: options.link_lifetime_secs,
            push_timeout_ms: 1_000,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let postgres = options.postgres;
        let db = |name: &str| {
            let mut config = if postgres {
                fiscalbill_common::db::test_support::postgres()
            } else {
                fiscalbill_common::db::test_support::sqlite()
            };
            if let Some(schema) = &mut config.schema {
                schema.push_str(name);
            }
            config
        };
        let http = reqwest::Client::new();
        let tls = options.tls;
        let his_key = options.auth.then_some(HIS_API_KEY);
        let bureau_key = options.auth.then_some(BUREAU_API_KEY);
        let mut stack = Stack {
            options,
            sandbox,
            http,
            bureau_host: None,
            collection_host: None,
            bureau_db: db("_bureau"),
            collection_db: db("_collection"),
            // The services bind free ports; their addresses are known once they run.
            bureau_grpc: any_port(),
            bureau_http: any_port(),
            collection_grpc: any_port(),
            collection_http: any_port(),
            bureau_admin: any_port(),
            collection_admin: any_port(),
            collection: CollectionServiceClient::with_interceptor(
                channel(any_port(), tls, false),
                BearerKey::new(his_key).unwrap(),
            ),
            bureau_client: BureauServiceClient::with_interceptor(
                channel(any_port(), tls, true),
                BearerKey::new(bureau_key).unwrap(),
            ),
        };
        stack.start_bureau().await;
        stack.start_collection().await;
        stack.point_callbacks().await;
        stack.collection = CollectionServiceClient::with_interceptor(
            channel(stack.collection_grpc, tls, false),
            BearerKey::new(his_key).unwrap(),
        );
        stack.bureau_client = BureauServiceClient::with_interceptor(
            channel(stack.bureau_grpc, tls, true),
            BearerKey::new(bureau_key).unwrap(),
        );
        stack.wait_wechat_ready().await;
        stack
    }

    /// Waits until both services' start checks found WeChat serving their accounts, so that
    /// what tests count at the sandbox afterwards is their own doing.
    pub async fn wait_wechat_ready(&self) {
        for admin in [self.bureau_admin, self.collection_admin] {
            let ready = async {
                loop {
                    let metrics = self.http.get(format!("http://{admin}/metrics")).send().await;
                    if let Ok(response) = metrics
                        && response.text().await.is_ok_and(|text| text.contains("fiscalbill_wechat_ready 1"))
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(20), ready)
                .await
                .unwrap_or_else(|_| panic!("the start check of the service at {admin} never passed"));
        }
    }

    fn bureau_appid(&self) -> &'static str {
        if self.options.self_built { SELF_BUILT } else { BUREAU }
    }

    /// The unit whose orders the tests create.
    pub fn unit(&self) -> &'static str {
        if self.options.self_built { SELF_BUILT } else { UNIT }
    }

    /// Authentication with these (name, key, methods) clients, or off.
    fn auth(&self, clients: &[(&str, &str, &[&str])]) -> AuthConfig {
        AuthConfig {
            enabled: self.options.auth,
            clients: clients
                .iter()
                .map(|(name, key, methods)| ClientConfig {
                    name: (*name).to_owned(),
                    key_sha256: Some(key_sha256(key)),
                    key: None,
                    methods: methods.iter().map(|m| (*m).to_owned()).collect(),
                })
                .collect(),
        }
    }

    /// The Debug output of both services' configurations.
    pub fn configs_debug(&self) -> String {
        format!("{:?}\n{:?}", self.bureau_config(), self.collection_config())
    }

    /// A client of collection-svc presenting `key`.
    pub fn collection_with_key(
        &self,
        key: Option<&str>,
    ) -> CollectionServiceClient<InterceptedService<Channel, BearerKey>> {
        CollectionServiceClient::with_interceptor(
            channel(self.collection_grpc, self.options.tls, false),
            BearerKey::new(key).unwrap(),
        )
    }

    fn wechat(&self) -> WechatHttpConfig {
        WechatHttpConfig {
            proxy: self.options.wechat_proxy.clone(),
            base_url: self.sandbox.base_url().to_owned(),
            timeout_ms: self.options.wechat_timeout_ms,
            resend_backoff_ms: 10,
            ..Default::default()
        }
    }

    /// Points each account's pushes at the service that receives them.
    async fn point_callbacks(&self) {
        let collection = format!("http://{}/wechat/callback", self.collection_http);
        let bureau = format!("http://{}/wechat/callback", self.bureau_http);
        for mut account in sandbox_accounts(&self.options) {
            account.callback_url = match account.appid.as_str() {
                BUREAU => Some(bureau.clone()),
                UNIT | SELF_BUILT => Some(format!("{collection}/{}", account.appid)),
                _ => None,
            };
            self.post("/sandbox/accounts", serde_json::to_value(&account).unwrap()).await;
        }
    }

    /// collection-svc's database, for a test that plays what only time would do to it.
    pub fn collection_database(&self) -> &DatabaseConfig {
        &self.collection_db
    }

    pub fn bureau_config(&self) -> bureau_svc::BureauConfig {
        self.bureau_config_at(self.bureau_grpc, self.bureau_http, self.bureau_admin)
    }

    fn bureau_config_at(&self, grpc: SocketAddr, http: SocketAddr, admin: SocketAddr) -> bureau_svc::BureauConfig {
        use bureau_svc::config::*;
        let appid = self.bureau_appid();
        BureauConfig {
            server: ServerConfig {
                grpc_listen: grpc,
                http_listen: http,
                admin_listen: admin,
                tls: self.options.tls.then(|| ServerTls {
                    cert_file: cert("server.pem"),
                    key_file: cert("server.key"),
                    client_ca_file: Some(cert("ca.pem")),
                }),
                shutdown_grace_ms: 2_000,
                replica_id: None,
                limits: self.options.limits,
            },
            database: self.bureau_db.clone(),
            wechat: self.wechat(),
            account: AccountConfig {
                appid: appid.to_owned(),
                secret: SecretSetting::Inline(secret(appid)),
                name: "沙箱市财政局".to_owned(),
                token_mode: Default::default(),
                callback_token: Some(SecretSetting::Inline(Secret::new(TOKEN))),
                encoding_aes_key: Some(SecretSetting::Inline(Secret::new(AES_KEY))),
                previous_encoding_aes_key: None,
                push_mode: self.options.push_mode,
            },
            issuing: IssuingConfig {
                retry_base_ms: 20,
                retry_max_ms: 300,
                poll_interval_ms: 20,
                lease_secs: 2,
                never_authorized_retry_secs: 2,
                minute_quota_pause_ms: 200,
                workers: self.options.workers,
                ..IssuingConfig::default()
            },
            units: vec![UnitConfig {
                appid: self.unit().to_owned(),
                payee: "沙箱市人民医院".to_owned(),
                logo_url: None,
                logo_file: Some(devstack::demo_logo_file(&std::env::temp_dir().join("fiscalbill-tests"))),
            }],
            auth: self.auth(&[("collection", BUREAU_API_KEY, &["*"])]),
            log: Default::default(),
            telemetry: Default::default(),
            signing: Some(throwaway_signing()),
        }
    }

    pub fn collection_config(&self) -> collection_svc::CollectionConfig {
        self.collection_config_at(self.collection_grpc, self.collection_http, self.collection_admin, self.bureau_grpc)
    }

    fn collection_config_at(
        &self,
        grpc: SocketAddr,
        http: SocketAddr,
        admin: SocketAddr,
        bureau_grpc: SocketAddr,
    ) -> collection_svc::CollectionConfig {
        use collection_svc::config::*;
        let unit = self.unit();
        CollectionConfig {
            server: ServerConfig {
                grpc_listen: grpc,
                http_listen: http,
                admin_listen: admin,
                tls: self.options.tls.then(|| ServerTls {
                    cert_file: cert("server.pem"),
                    key_file: cert("server.key"),
                    client_ca_file: None,
                }),
                shutdown_grace_ms: 2_000,
                replica_id: None,
                limits: self.options.limits,
            },
            database: self.collection_db.clone(),
            wechat: self.wechat(),
            token_mode: Default::default(),
            bureau: BureauConfig {
                endpoint: format!("{}://{}", if self.options.tls { "https" } else { "http" }, bureau_grpc),
                s_pappid: None,
                issue_deadline_ms: 3_000,
                connect_timeout_ms: 500,
                tls: self.options.tls.then(client_tls),
                api_key: self.options.auth.then(|| SecretSetting::Inline(Secret::new(BUREAU_API_KEY))),
            },
            units: vec![UnitConfig {
                appid: unit.to_owned(),
                secret: SecretSetting::Inline(secret(unit)),
                callback_token: SecretSetting::Inline(Secret::new(TOKEN)),
                encoding_aes_key: Some(SecretSetting::Inline(Secret::new(AES_KEY))),
                previous_encoding_aes_key: None,
                push_mode: self.options.push_mode,
                app: (!self.options.self_built)
                    .then(|| AppConfig { appid: APP.to_owned(), secret: SecretSetting::Inline(secret(APP)) }),
                forward_url: self.options.self_built.then(|| format!("http://{}/wechat/callback", self.bureau_http)),
            }],
            authorization: AuthorizationConfig {
                reconcile_after_secs: self.options.reconcile_after_secs,
                reconcile_interval_secs: 1,
                ..AuthorizationConfig::default()
            },
            dispatch: DispatchConfig {
                workers: self.options.workers,
                pdf_budget_mib: self.options.pdf_budget_mib,
                poll_interval_ms: 20,
                retry_base_ms: 50,
                retry_max_ms: 500,
                progress_poll_ms: 50,
                lease_secs: 3,
            },
            auth: self.auth(&[
                ("his", HIS_API_KEY, &["*"]),
                ("tokens", TOKENS_API_KEY, &["GetAccessToken", "GetCardTicket"]),
            ]),
            log: Default::default(),
            telemetry: Default::default(),
        }
    }

    pub async fn start_bureau(&mut self) {
        let config = self.bureau_config();
        let start = || async move { bureau_svc::start(config).await.expect("bureau starts") };
        let (hosted, bound) = host(start, self.options.tls, true).await;
        self.bureau_host = Some(hosted);
        // A restart binds the same ports again.
        (self.bureau_grpc, self.bureau_http, self.bureau_admin) = bound;
    }

    pub async fn start_collection(&mut self) {
        let config = self.collection_config();
        let start = || async move { collection_svc::start(config).await.expect("collection starts") };
        let (hosted, bound) = host(start, self.options.tls, false).await;
        self.collection_host = Some(hosted);
        (self.collection_grpc, self.collection_http, self.collection_admin) = bound;
    }

    /// Another bureau-svc on free ports, sharing this stack's database.
    pub async fn bureau_replica(&self) -> Replica {
        let config = self.bureau_config_at(any_port(), any_port(), any_port());
        let start = || async move { bureau_svc::start(config).await.expect("bureau replica starts") };
        let (host, (grpc, http, admin)) = host(start, self.options.tls, true).await;
        Replica { host, grpc, http, admin }
    }

    /// Another collection-svc on free ports, sharing this stack's database, calling the
    /// bureau at `bureau_grpc`.
    pub async fn collection_replica(&self, bureau_grpc: SocketAddr) -> Replica {
        let config = self.collection_config_at(any_port(), any_port(), any_port(), bureau_grpc);
        let start = || async move { collection_svc::start(config).await.expect("collection replica starts") };
        let (host, (grpc, http, admin)) = host(start, self.options.tls, false).await;
        Replica { host, grpc, http, admin }
    }

    /// Stops the bureau cleanly (or crashes it).
    pub async fn stop_bureau(&mut self, crash: bool) {
        let hosted = self.bureau_host.take().expect("the bureau runs");
        tokio::task::spawn_blocking(move || hosted.stop(crash)).await.unwrap();
    }

    pub async fn stop_collection(&mut self, crash: bool) {
        let hosted = self.collection_host.take().expect("collection runs");
        tokio::task::spawn_blocking(move || hosted.stop(crash)).await.unwrap();
    }

    // --- sandbox ---

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

    /// Calls of `path` by any account.
    pub async fn calls(&self, path: &str) -> u64 {
        let stats = self.get("/sandbox/stats").await;
        stats["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["endpoint"] == path)
            .map(|r| r["calls"].as_u64().unwrap())
            .sum()
    }

    /// Calls the sandbox saw for an endpoint path by one account.
    pub async fn calls_by(&self, path: &str, appid: &str) -> u64 {
        let stats = self.get("/sandbox/stats").await;
        stats["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["endpoint"] == path && r["appid"] == appid)
            .map(|r| r["calls"].as_u64().unwrap())
            .sum()
    }

    pub async fn cards(&self, openid: &str) -> Vec<Value> {
        self.get(&format!("/sandbox/users/{openid}/cards")).await["cards"].as_array().unwrap().clone()
    }

    /// The payer answers on the authorization page; returns the push record.
    pub async fn answer(&self, auth_url: &str, decline: bool) -> Value {
        self.post(
            "/sandbox/authorize",
            json!({"auth_url": auth_url, "openid": PAYER, "decline": decline, "wait": true}),
        )
        .await["push"]
            .clone()
    }

    // --- collection ---

    pub fn create_request(&self, order_id: &str, source: types_pb::Source) -> pb::CreateAuthorizationRequest {
        let content = content(order_id, 2_500);
        pb::CreateAuthorizationRequest {
            unit_appid: self.unit().to_owned(),
            order_id: order_id.to_owned(),
            money: content.fee,
            source: source as i32,
            redirect_url: "https://hospital.example/paid".to_owned(),
            bill: Some(content),
            pdf: Default::default(),
            request_id: String::new(),
        }
    }

    pub async fn create(&mut self, order_id: &str) -> pb::Authorization {
        let request = self.create_request(order_id, types_pb::Source::Web);
        self.collection.create_authorization(request).await.unwrap().into_inner().authorization.unwrap()
    }

    pub async fn authorization(&mut self, order_id: &str) -> pb::Authorization {
        self.collection
            .get_authorization(pb::GetAuthorizationRequest {
                unit_appid: self.unit().to_owned(),
                order_id: order_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .authorization
            .unwrap()
    }

    /// Polls until the authorization is in `state` (up to 20 s).
    pub async fn wait_for(&mut self, order_id: &str, state: pb::AuthorizationState) -> pb::Authorization {
        for _ in 0..800 {
            let authorization = self.authorization(order_id).await;
            if authorization.state == state as i32 {
                return authorization;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{order_id} never reached {state:?}: {:?}", self.authorization(order_id).await);
    }
}

/// The TLS of collection-svc's client to the bureau: the test CA, and a client certificate.
fn client_tls() -> ClientTls {
    ClientTls {
        ca_file: Some(cert("ca.pem")),
        cert_file: Some(cert("client.pem")),
        key_file: Some(cert("client.key")),
        domain: Some("localhost".to_owned()),
    }
}

/// A lazily connected channel; over TLS (with the client certificate when `mutual`).
pub fn channel(addr: SocketAddr, tls: bool, mutual: bool) -> Channel {
    let endpoint = if tls {
        let mut config = client_tls();
        if !mutual {
            config.cert_file = None;
            config.key_file = None;
        }
        Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(config.tonic().unwrap()).unwrap()
    } else {
        Channel::from_shared(format!("http://{addr}")).unwrap()
    };
    endpoint.connect_lazy()
}

/// Starts a service on a runtime of its own (so that a crash can end all its tasks at once)
/// and waits until it serves; `mutual` as for [`channel`].
async fn host<F>(start: impl FnOnce() -> F + Send + 'static, tls: bool, mutual: bool) -> (Hosted, Bound)
where
    F: std::future::Future<Output = RunningService>,
{
    let (hosted, bound) = tokio::task::spawn_blocking(move || Hosted::start(start)).await.unwrap();
    wait_serving(channel(bound.0, tls, mutual)).await;
    (hosted, bound)
}

async fn wait_serving(channel: Channel) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..400 {
        let answer = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
        if answer.is_ok_and(|a| {
            a.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("a service never became ready");
}

/// Asks collection-svc until the order reaches `state`, for up to 20 s.
pub async fn wait_for_state(
    client: &mut CollectionServiceClient<Channel>,
    unit_appid: &str,
    order_id: &str,
    state: pb::AuthorizationState,
) -> pb::Authorization {
    let request = pb::GetAuthorizationRequest { unit_appid: unit_appid.to_owned(), order_id: order_id.to_owned() };
    for _ in 0..800 {
        let authorization =
            client.get_authorization(request.clone()).await.unwrap().into_inner().authorization.unwrap();
        if authorization.state == state as i32 {
            return authorization;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{order_id} never reached {state:?}");
}

/// CreateAuthorization for `order_id` of the unit: 25.00 yuan, Service Account, no PDF.
pub fn order_request(order_id: &str) -> pb::CreateAuthorizationRequest {
    pb::CreateAuthorizationRequest {
        unit_appid: UNIT.into(),
        order_id: order_id.into(),
        money: 2_500,
        source: types_pb::Source::Web as i32,
        redirect_url: String::new(),
        bill: Some(content(order_id, 2_500)),
        pdf: Default::default(),
        request_id: String::new(),
    }
}

/// collection-svc's client as the tests hold it.
pub type CollectionClient = CollectionServiceClient<InterceptedService<Channel, BearerKey>>;

/// The payer authorizes `auth_url` at the sandbox, which then pushes to the unit.
pub async fn authorize_at_sandbox(http: &reqwest::Client, sandbox_url: &str, auth_url: &str) {
    let answer = http
        .post(format!("{sandbox_url}/sandbox/authorize"))
        .json(&json!({"auth_url": auth_url, "openid": PAYER}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "authorizing {auth_url}: {}", answer.status());
}

/// Waits (at most `limit`) until `expected` authorizations are ISSUED; returns how many are.
/// Errors count as "not yet": the service may be restarting.
pub async fn wait_until_issued(client: &mut CollectionClient, expected: usize, limit: Duration) -> usize {
    let deadline = std::time::Instant::now() + limit;
    let mut issued = 0;
    loop {
        if let Ok(count) = issued_count(client).await {
            issued = count;
        }
        if issued >= expected || std::time::Instant::now() > deadline {
            return issued;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ISSUED authorizations, across every page.
pub async fn issued_count(client: &mut CollectionClient) -> Result<usize, tonic::Status> {
    let (mut count, mut page_token) = (0, String::new());
    loop {
        let request = pb::ListAuthorizationsRequest {
            state: pb::AuthorizationState::Issued as i32,
            page_size: 1000,
            page_token,
            ..Default::default()
        };
        let page = client.list_authorizations(request).await?.into_inner();
        count += page.authorizations.len();
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        page_token = page.next_page_token;
    }
}

/// A valid bill; billing codes differ per order.
pub fn content(order_id: &str, fee: i64) -> types_pb::BillContent {
    let code: u64 = order_id.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) % 10_000_000_000;
    types_pb::BillContent {
        fee,
        payer_title: "张三".to_owned(),
        billing_no: "44010125".to_owned(),
        billing_code: format!("{code:010}"),
        billing_time: Some(prost_types::Timestamp { seconds: 1_760_000_000, nanos: 0 }),
        items: vec![types_pb::BillItem {
            name: "住院押金".into(),
            quantity: "1".into(),
            unit: "次".into(),
            unit_price: fee,
            amount: fee,
        }],
        remarks: String::new(),
    }
}

pub use fiscalbill_common::status::{error_reason as reason, violation_fields as violations};

/// A throwaway bill-signing certificate and key, inline: the bureau signs what it renders.
pub fn throwaway_signing() -> bureau_svc::config::SigningConfig {
    let (_, certificate, key) = bureau_svc::pdf::sign::BillSigner::generate_throwaway("沙箱市财政局").unwrap();
    bureau_svc::config::SigningConfig {
        certificate: SecretSetting::Inline(Secret::new(certificate)),
        key: SecretSetting::Inline(Secret::new(key)),
        sign_supplied: false,
    }
}
