//! The development stack: the WeChat sandbox, bureau-svc and collection-svc in one process,
//! on SQLite under a data directory, with a finance bureau and one collection unit (and its
//! App) registered at the sandbox. Dev-only credentials.

pub mod demo;
pub mod services;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bureau_svc::config as bureau_config;
use collection_svc::config as collection_config;
use fiscalbill_common::auth::AuthConfig;
use fiscalbill_common::config::SecretSetting;
use fiscalbill_common::db::DatabaseConfig;
use fiscalbill_common::lifecycle::RunningService;
use serde_json::json;
use wechat::Secret;
use wechat::WechatHttpConfig;
use wechat_sandbox::{AccountConfig, DEMO_APP, DEMO_BUREAU, DEMO_UNIT};

/// The demo payer: the authorization page suggests this openid.
pub const DEMO_OPENID: &str = "oSandboxDemoUser00000000000";

#[derive(Clone, Debug)]
pub struct Addresses {
    pub sandbox: SocketAddr,
    pub bureau_grpc: SocketAddr,
    pub bureau_http: SocketAddr,
    pub bureau_admin: SocketAddr,
    pub collection_grpc: SocketAddr,
    pub collection_http: SocketAddr,
    pub collection_admin: SocketAddr,
}

impl Default for Addresses {
    fn default() -> Self {
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            sandbox: local(8900),
            bureau_grpc: local(50052),
            bureau_http: local(8082),
            bureau_admin: local(9082),
            collection_grpc: local(50051),
            collection_http: local(8081),
            collection_admin: local(9081),
        }
    }
}

impl Addresses {
    /// Port 0 on 127.0.0.1 everywhere: each listener binds a free port of its own, and
    /// [`start`] reports the ones bound (for the demo and tests).
    pub fn any_free() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            sandbox: any,
            bureau_grpc: any,
            bureau_http: any,
            bureau_admin: any,
            collection_grpc: any,
            collection_http: any,
            collection_admin: any,
        }
    }

    /// Free ports on 127.0.0.1 chosen now, for processes started apart that must keep their
    /// ports (the benchmark's, the crash test's).
    /// All seven listeners stay open until the last port is chosen, so that no port is handed
    /// out twice; another program could still take one before it is bound.
    pub fn ephemeral() -> Self {
        let listeners: [std::net::TcpListener; 7] =
            std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"));
        let [sandbox, bureau_grpc, bureau_http, bureau_admin, collection_grpc, collection_http, collection_admin] =
            listeners.each_ref().map(|listener| listener.local_addr().expect("a bound address"));
        Self { sandbox, bureau_grpc, bureau_http, bureau_admin, collection_grpc, collection_http, collection_admin }
    }
}

fn account<'a>(accounts: &'a [AccountConfig], appid: &str) -> &'a AccountConfig {
    accounts.iter().find(|a| a.appid == appid).expect("demo account")
}

fn secret(value: &Option<Secret>) -> Option<SecretSetting> {
    value.clone().map(SecretSetting::Inline)
}

/// The sandbox's accounts with their callback URLs pointing at the services.
pub fn sandbox_accounts(addresses: &Addresses) -> Vec<AccountConfig> {
    let mut accounts = wechat_sandbox::demo_accounts();
    for account in &mut accounts {
        account.callback_url = match account.appid.as_str() {
            DEMO_BUREAU => Some(format!("http://{}/wechat/callback", addresses.bureau_http)),
            DEMO_UNIT => Some(format!("http://{}/wechat/callback/{DEMO_UNIT}", addresses.collection_http)),
            _ => None,
        };
    }
    accounts
}

/// The dev stack is the one place without client authentication.
fn development_auth() -> AuthConfig {
    AuthConfig { enabled: false, clients: Vec::new() }
}

fn wechat(addresses: &Addresses) -> WechatHttpConfig {
    WechatHttpConfig { base_url: format!("http://{}", addresses.sandbox), ..WechatHttpConfig::default() }
}

fn sqlite(data_dir: &Path, name: &str) -> DatabaseConfig {
    DatabaseConfig { url: format!("sqlite://{}", data_dir.join(name).display()), ..DatabaseConfig::default() }
}

/// The demo unit's logo, written into the data directory: the bureau uploads it through WeChat's
/// image upload before it creates the unit's template.
pub fn demo_logo_file(data_dir: &Path) -> PathBuf {
    let path = data_dir.join("hospital-logo.png");
    if std::fs::read(&path).ok().as_deref() != Some(wechat_sandbox::DEMO_LOGO_PNG) {
        let _ = std::fs::create_dir_all(data_dir);
        // Written aside and renamed: whoever reads it meanwhile sees the old file or the whole new one.
        let partial = data_dir.join(format!("hospital-logo.png.{}.partial", std::process::id()));
        let written =
            std::fs::write(&partial, wechat_sandbox::DEMO_LOGO_PNG).and_then(|()| std::fs::rename(&partial, &path));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write the demo logo");
        }
    }
    path
}

/// The dev stack's bill-signing certificate and key (`bureau-signing.pem`, `bureau-signing.key`
/// in the data directory): generated once, for this stack only, and kept with its data. Never for
/// production: a bureau signs with the certificate its CA issued.
pub fn dev_signing_files(data_dir: &Path) -> (PathBuf, PathBuf) {
    let (certificate, key) = (data_dir.join("bureau-signing.pem"), data_dir.join("bureau-signing.key"));
    let usable = || {
        let (Ok(certificate), Ok(key)) = (std::fs::read_to_string(&certificate), std::fs::read_to_string(&key)) else {
            return false;
        };
        bureau_svc::pdf::sign::BillSigner::from_pem(&certificate, &key).is_ok()
    };
    if !usable() {
        let _ = std::fs::create_dir_all(data_dir);
        match bureau_svc::pdf::sign::BillSigner::generate_throwaway(
            &account(&wechat_sandbox::demo_accounts(), DEMO_BUREAU).name,
        ) {
            Ok((signer, certificate_pem, key_pem)) => {
                let written =
                    std::fs::write(&certificate, certificate_pem).and_then(|()| std::fs::write(&key, key_pem));
                match written {
                    Ok(()) => tracing::info!(
                        certificate = %certificate.display(),
                        sha256 = signer.fingerprint(),
                        "generated a throwaway bill-signing certificate for the dev stack (not for production)"
                    ),
                    Err(error) => tracing::warn!(%error, "cannot write the dev stack's signing certificate"),
                }
            }
            Err(error) => tracing::warn!(%error, "cannot generate the dev stack's signing certificate"),
        }
    }
    (certificate, key)
}

fn dev_signing(data_dir: &Path) -> bureau_config::SigningConfig {
    let (certificate, key) = dev_signing_files(data_dir);
    bureau_config::SigningConfig {
        certificate: SecretSetting::File { file: certificate },
        key: SecretSetting::File { file: key },
        // The dev stack shows everything: supplied PDFs are signed too.
        sign_supplied: true,
    }
}

pub fn bureau(addresses: &Addresses, data_dir: &Path) -> bureau_config::BureauConfig {
    let accounts = wechat_sandbox::demo_accounts();
    let bureau = account(&accounts, DEMO_BUREAU);
    bureau_config::BureauConfig {
        server: bureau_config::ServerConfig {
            grpc_listen: addresses.bureau_grpc,
            http_listen: addresses.bureau_http,
            admin_listen: addresses.bureau_admin,
            ..bureau_config::ServerConfig::default()
        },
        database: sqlite(data_dir, "bureau.db"),
        wechat: wechat(addresses),
        account: bureau_config::AccountConfig {
            appid: DEMO_BUREAU.to_owned(),
            secret: SecretSetting::Inline(bureau.secret.clone()),
            name: bureau.name.clone(),
            token_mode: Default::default(),
            callback_token: secret(&bureau.callback_token),
            encoding_aes_key: secret(&bureau.encoding_aes_key),
            previous_encoding_aes_key: None,
            push_mode: bureau.push_mode,
        },
        issuing: bureau_config::IssuingConfig {
            bill_title: "沙箱省非税收入统一票据（电子）".to_owned(),
            ..Default::default()
        },
        units: vec![bureau_config::UnitConfig {
            appid: DEMO_UNIT.to_owned(),
            payee: account(&accounts, DEMO_UNIT).name.clone(),
            logo_url: None,
            logo_file: Some(demo_logo_file(data_dir)),
        }],
        auth: development_auth(),
        log: Default::default(),
        telemetry: Default::default(),
        signing: Some(dev_signing(data_dir)),
    }
}

pub fn collection(addresses: &Addresses, data_dir: &Path) -> collection_config::CollectionConfig {
    let accounts = wechat_sandbox::demo_accounts();
    let unit = account(&accounts, DEMO_UNIT);
    let app = account(&accounts, DEMO_APP);
    collection_config::CollectionConfig {
        server: collection_config::ServerConfig {
            grpc_listen: addresses.collection_grpc,
            http_listen: addresses.collection_http,
            admin_listen: addresses.collection_admin,
            ..collection_config::ServerConfig::default()
        },
        database: sqlite(data_dir, "collection.db"),
        wechat: wechat(addresses),
        token_mode: Default::default(),
        bureau: collection_config::BureauConfig {
            endpoint: format!("http://{}", addresses.bureau_grpc),
            s_pappid: None,
            issue_deadline_ms: 10_000,
            connect_timeout_ms: 3_000,
            tls: None,
            api_key: None,
        },
        units: vec![collection_config::UnitConfig {
            appid: DEMO_UNIT.to_owned(),
            secret: SecretSetting::Inline(unit.secret.clone()),
            callback_token: SecretSetting::Inline(unit.callback_token.clone().expect("demo unit has a token")),
            encoding_aes_key: secret(&unit.encoding_aes_key),
            previous_encoding_aes_key: None,
            push_mode: unit.push_mode,
            app: Some(collection_config::AppConfig {
                appid: DEMO_APP.to_owned(),
                secret: SecretSetting::Inline(app.secret.clone()),
            }),
            forward_url: None,
        }],
        authorization: collection_config::AuthorizationConfig { reconcile_after_secs: 60, ..Default::default() },
        dispatch: Default::default(),
        auth: development_auth(),
        log: Default::default(),
        telemetry: Default::default(),
    }
}

/// The running stack.
pub struct DevStack {
    pub addresses: Addresses,
    pub data_dir: PathBuf,
    pub sandbox: wechat_sandbox::RunningSandbox,
    pub bureau: RunningService,
    pub collection: RunningService,
    /// It went on with the data of an earlier run.
    pub resumed: bool,
}

#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Files of the dev stack's state under its data directory: the services' databases and the
/// sandbox's state file.
const STATE_FILES: [&str; 9] = [
    "bureau.db",
    "bureau.db-wal",
    "bureau.db-shm",
    "collection.db",
    "collection.db-wal",
    "collection.db-shm",
    "sandbox.db",
    "sandbox.db-wal",
    "sandbox.db-shm",
];

/// Whether the stack starts over or keeps what earlier runs left in its data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// Keep everything: authorizations, bills, tokens, and the sandbox's orders and card
    /// packages.
    Keep,
    /// Delete the state files first.
    Fresh,
}

/// Starts the three parts and waits until both services are ready. A requested address with
/// port 0 gets a free port; [`DevStack::addresses`] holds the addresses bound. The sandbox keeps
/// its state in `data_dir/sandbox.db` beside the services' databases, so that with
/// [`Data::Keep`] a restarted stack goes on where it stopped.
pub async fn start(requested: Addresses, data_dir: PathBuf, data: Data) -> Result<DevStack, StartError> {
    std::fs::create_dir_all(&data_dir).map_err(|e| StartError(format!("cannot create {}: {e}", data_dir.display())))?;
    let kept = data_dir.join("bureau.db").exists();
    if data == Data::Fresh {
        for name in STATE_FILES {
            let path = data_dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| StartError(format!("cannot reset {}: {e}", path.display())))?;
            }
        }
    }
    let sandbox = wechat_sandbox::start(wechat_sandbox::SandboxConfig {
        listen: requested.sandbox,
        accounts: sandbox_accounts(&requested),
        state_file: Some(data_dir.join("sandbox.db")),
        ..Default::default()
    })
    .await
    .map_err(|e| StartError(e.to_string()))?;
    // Each part learns the addresses the parts before it bound (port 0 becomes a real port).
    let mut addresses = Addresses { sandbox: sandbox.local_addr, ..requested };
    let bureau =
        bureau_svc::start(bureau(&addresses, &data_dir)).await.map_err(|e| StartError(format!("bureau-svc: {e}")))?;
    (addresses.bureau_grpc, addresses.bureau_http, addresses.bureau_admin) =
        (bureau.grpc_addr, bureau.http_addr, bureau.admin_addr);
    let collection = collection_svc::start(collection(&addresses, &data_dir))
        .await
        .map_err(|e| StartError(format!("collection-svc: {e}")))?;
    (addresses.collection_grpc, addresses.collection_http, addresses.collection_admin) =
        (collection.grpc_addr, collection.http_addr, collection.admin_addr);
    // The sandbox pushes to the services' bound callback addresses.
    for account in sandbox_accounts(&addresses) {
        sandbox.sandbox.upsert_account(account);
    }
    for addr in [addresses.bureau_grpc, addresses.collection_grpc] {
        fiscalbill_common::server::wait_until_serving(addr, std::time::Duration::from_secs(30))
            .await
            .map_err(StartError)?;
    }
    let resumed = kept && data == Data::Keep;
    Ok(DevStack { addresses, data_dir, sandbox, bureau, collection, resumed })
}

impl DevStack {
    /// Everything a script needs to drive the stack: addresses, and for each sandbox account
    /// its credentials and callback settings (dev-only values), and the bureau's s_pappid.
    pub fn description(&self, s_pappid: &str) -> serde_json::Value {
        let a = &self.addresses;
        let accounts: Vec<serde_json::Value> = sandbox_accounts(a)
            .iter()
            .map(|account| {
                json!({
                    "appid": account.appid,
                    "name": account.name,
                    "secret": account.secret.expose(),
                    "callback_url": account.callback_url,
                    "callback_token": account.callback_token.as_ref().map(Secret::expose),
                    "encoding_aes_key": account.encoding_aes_key.as_ref().map(Secret::expose),
                    "push_mode": account.push_mode,
                    "push_format": account.push_format,
                    "service_account": account.service_account,
                })
            })
            .collect();
        json!({
            "note": "development stack: these credentials are for the WeChat sandbox only",
            "sandbox": {"url": format!("http://{}", a.sandbox), "control_api": format!("http://{}/sandbox/", a.sandbox)},
            "collection": {
                "grpc": a.collection_grpc.to_string(),
                "callback": format!("http://{}/wechat/callback/{{appid}}", a.collection_http),
                "http": format!("http://{}", a.collection_http),
                "admin": format!("http://{}", a.collection_admin),
                "metrics": format!("http://{}/metrics", a.collection_admin),
            },
            "bureau": {
                "grpc": a.bureau_grpc.to_string(),
                "callback": format!("http://{}/wechat/callback", a.bureau_http),
                "http": format!("http://{}", a.bureau_http),
                "admin": format!("http://{}", a.bureau_admin),
                "metrics": format!("http://{}/metrics", a.bureau_admin),
            },
            "accounts": accounts,
            "units": [{"appid": DEMO_UNIT, "app_appid": DEMO_APP}],
            "bureau_appid": DEMO_BUREAU,
            "s_pappid": s_pappid,
            "demo_openid": DEMO_OPENID,
            "data_dir": self.data_dir.display().to_string(),
        })
    }

    /// Asks the bureau for its s_pappid (it calls seturl the first time).
    pub async fn s_pappid(&self) -> Result<String, tonic::Status> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.addresses.bureau_grpc))
            .expect("valid URI")
            .connect_lazy();
        let mut client = fiscalbill_common::proto::bureau::bureau_service_client::BureauServiceClient::new(channel);
        Ok(client.get_sp_app_id(fiscalbill_common::proto::bureau::GetSpAppIdRequest {}).await?.into_inner().s_pappid)
    }

    pub async fn stop(self) {
        self.collection.stop().await;
        self.bureau.stop().await;
        self.sandbox.stop().await;
    }
}
