//! A stand-in for the WeChat fiscal e-bill API (api.weixin.qq.com), which WeChat does not
//! offer. It behaves like WeChat for every endpoint the project uses, serves the payer's
//! authorization page and card package, pushes events to callback URLs, and has a control API
//! under `/sandbox/` for tests and demos (see README.md).

mod api;
mod bills;
pub mod config;
mod control;
mod faults;
mod fields;
mod invoice;
mod pages;
mod push;
mod server;
mod stats;
mod tokens;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use wechat::clock::{Clock, OffsetClock};

pub use config::{AccountConfig, SandboxConfig};
pub use faults::{FaultAction, FaultRule};

/// The sandbox's shared state; cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    config: SandboxConfig,
    public_url: String,
    clock: OffsetClock,
    world: Mutex<world::World>,
    /// Sends pushes to callback URLs.
    http: reqwest::Client,
    /// Wakes those waiting for a push to finish.
    push_done: tokio::sync::Notify,
}

impl Sandbox {
    fn new(config: SandboxConfig, public_url: String) -> Self {
        wechat::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.push_timeout_ms))
            .no_proxy()
            .build()
            .expect("push HTTP client builds");
        let mut world = world::World::default();
        for account in &config.accounts {
            world.accounts.insert(account.appid.clone(), account.clone());
        }
        Self {
            inner: Arc::new(Inner {
                config,
                public_url,
                clock: OffsetClock::default(),
                world: Mutex::new(world),
                http,
                push_done: tokio::sync::Notify::new(),
            }),
        }
    }

    fn world(&self) -> MutexGuard<'_, world::World> {
        self.inner.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sandbox time: the system clock plus every advance.
    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// Adds the account, or replaces the one with its appid.
    pub fn upsert_account(&self, account: AccountConfig) {
        self.world().accounts.insert(account.appid.clone(), account);
    }

    fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }
}

/// A sandbox listening on a socket.
pub struct RunningSandbox {
    pub sandbox: Sandbox,
    pub local_addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSandbox {
    /// The base URL for WeChat API clients and browsers.
    pub fn base_url(&self) -> &str {
        self.sandbox.public_url()
    }

    /// Stops accepting connections and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Binds `config.listen` and serves the sandbox until stopped.
pub async fn start(config: SandboxConfig) -> std::io::Result<RunningSandbox> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let public_url =
        config.public_url.clone().unwrap_or_else(|| format!("http://{local_addr}")).trim_end_matches('/').to_owned();
    let sandbox = Sandbox::new(config, public_url);
    let router = control::router(sandbox.clone()).merge(api::router(sandbox.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server::serve(listener, router, async {
        let _ = rx.await;
    }));
    tracing::info!(%local_addr, "wechat sandbox listening");
    Ok(RunningSandbox { sandbox, local_addr, shutdown: Some(tx), task: Some(task) })
}

/// Dev-only demo accounts: a finance bureau, a collection unit and the unit's App, with
/// callback tokens and keys but no callback URLs. Never use these values outside a sandbox.
pub fn demo_accounts() -> Vec<AccountConfig> {
    let account = |appid: &str, secret: &str, name: &str| AccountConfig {
        appid: appid.to_owned(),
        secret: wechat::Secret::new(secret),
        name: name.to_owned(),
        original_id: None,
        callback_url: None,
        callback_token: Some(wechat::Secret::new(DEMO_CALLBACK_TOKEN)),
        encoding_aes_key: Some(wechat::Secret::new(DEMO_ENCODING_AES_KEY)),
        push_mode: wechat::callback::PushMode::Safe,
        push_format: wechat::callback::PushFormat::Xml,
        service_account: None,
        token_lifetime_secs: 7200,
        daily_quota: Default::default(),
    };
    let mut app = account(DEMO_APP, "sandbox-app-secret-000001", "沙箱市人民医院 App");
    app.service_account = Some(DEMO_UNIT.to_owned());
    app.callback_token = None;
    app.encoding_aes_key = None;
    vec![
        account(DEMO_BUREAU, "sandbox-bureau-secret-0001", "沙箱市财政局"),
        account(DEMO_UNIT, "sandbox-unit-secret-00001", "沙箱市人民医院"),
        app,
    ]
}

/// A logo for the demo units' bill templates (a PNG, to upload through uploadimg).
pub const DEMO_LOGO_PNG: &[u8] = include_bytes!("../assets/demo-logo.png");

/// The demo accounts' appids and callback settings (dev-only values).
pub const DEMO_BUREAU: &str = "wxb0000000000000b1";
pub const DEMO_UNIT: &str = "wxc0000000000000c1";
pub const DEMO_APP: &str = "wxa0000000000000a1";
pub const DEMO_CALLBACK_TOKEN: &str = "sandboxToken";
pub const DEMO_ENCODING_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
