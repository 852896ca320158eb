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
mod persist;
mod push;
mod server;
mod stats;
mod tokens;
mod world;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Counts accesses to the world, so that the saver knows when to write.
    changes: AtomicU64,
    /// Where the world is kept across restarts, if anywhere.
    state: Option<persist::StateFile>,
    /// Sends pushes to callback URLs.
    http: reqwest::Client,
    /// Wakes those waiting for a push to finish.
    push_done: tokio::sync::Notify,
}

impl Sandbox {
    fn new(config: SandboxConfig, public_url: String, world: world::World, state: Option<persist::StateFile>) -> Self {
        wechat::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.push_timeout_ms))
            .no_proxy()
            .build()
            .expect("push HTTP client builds");
        Self {
            inner: Arc::new(Inner {
                config,
                public_url,
                clock: OffsetClock::default(),
                world: Mutex::new(world),
                changes: AtomicU64::new(0),
                state,
                http,
                push_done: tokio::sync::Notify::new(),
            }),
        }
    }

    fn world(&self) -> MutexGuard<'_, world::World> {
        self.inner.changes.fetch_add(1, Ordering::Relaxed);
        self.inner.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the world to the state file when it changed since `saved` (a change count);
    /// returns the count written.
    async fn save(&self, saved: u64) -> u64 {
        let Some(state) = &self.inner.state else { return saved };
        let (count, json) = {
            let world = self.inner.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = self.inner.changes.load(Ordering::Relaxed);
            if count == saved {
                return saved;
            }
            (count, persist::StateFile::snapshot_json(&world, self.inner.clock.offset()))
        };
        match state.write(json, self.now()).await {
            Ok(()) => count,
            Err(error) => {
                tracing::warn!(%error, "cannot write the sandbox's state file");
                saved
            }
        }
    }

    /// Saves about every second while the world changes, and once more at stop.
    async fn keep_saved(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut saved = self.inner.changes.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                () = tokio::time::sleep(persist::SAVE_INTERVAL) => saved = self.save(saved).await,
                _ = stop.changed() => break,
            }
        }
        self.save(u64::MAX).await;
        if let Some(state) = &self.inner.state {
            state.close().await;
        }
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
    /// The state file's saver, when there is one.
    saver: Option<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl RunningSandbox {
    /// The base URL for WeChat API clients and browsers.
    pub fn base_url(&self) -> &str {
        self.sandbox.public_url()
    }

    /// Stops accepting connections, waits for the server task, and writes the state file.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some((stop, saver)) = self.saver.take() {
            let _ = stop.send(true);
            let _ = saver.await;
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some((_, saver)) = &self.saver {
            saver.abort();
        }
    }
}

/// Binds `config.listen`, restores the state file (when configured), and serves the sandbox
/// until stopped.
pub async fn start(config: SandboxConfig) -> std::io::Result<RunningSandbox> {
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("the WeChat sandbox cannot listen on {}: {e}", config.listen))
    })?;
    let local_addr = listener.local_addr()?;
    let public_url =
        config.public_url.clone().unwrap_or_else(|| format!("http://{local_addr}")).trim_end_matches('/').to_owned();
    let mut world = world::World::default();
    for account in &config.accounts {
        world.accounts.insert(account.appid.clone(), account.clone());
    }
    let (state, clock_offset) = match &config.state_file {
        Some(path) => {
            let failed = |e: String| std::io::Error::other(format!("sandbox state file {}: {e}", path.display()));
            let state = persist::StateFile::open(path).await.map_err(|e| failed(e.to_string()))?;
            let offset = state.load(&mut world).await.map_err(failed)?;
            match offset {
                Some(_) => tracing::info!(path = %path.display(), "wechat sandbox restored its state"),
                None => tracing::info!(path = %path.display(), "wechat sandbox starts empty; it keeps its state there"),
            }
            (Some(state), offset.unwrap_or(0))
        }
        None => (None, 0),
    };
    let limits = server::Limits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        max_connections: config.max_connections,
    };
    let sandbox = Sandbox::new(config, public_url, world, state);
    sandbox.inner.clock.advance(clock_offset);
    let saver = sandbox.inner.state.is_some().then(|| {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        (stop, tokio::spawn(sandbox.clone().keep_saved(stopped)))
    });
    let router = control::router(sandbox.clone()).merge(api::router(sandbox.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server::serve(listener, router, limits, async {
        let _ = rx.await;
    }));
    tracing::info!(%local_addr, "wechat sandbox listening");
    Ok(RunningSandbox { sandbox, local_addr, shutdown: Some(tx), task: Some(task), saver })
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
