//! Sandbox settings and account definitions (TOML file, or JSON through the control API).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use wechat::Secret;
use wechat::callback::{PushFormat, PushMode};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Where to listen, e.g. `127.0.0.1:8900` (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The URL browsers use to reach the sandbox, for auth_url and pdf_url. Default:
    /// `http://<listen address>`.
    pub public_url: Option<String>,
    /// Largest PDF setpdf accepts, in bytes.
    pub pdf_max_bytes: usize,
    /// Lifetime of auth links (getbillauthurl `expire_time`), seconds.
    pub auth_link_lifetime_secs: i64,
    /// Timeout of one push delivery attempt, milliseconds (WeChat: 5 s).
    pub push_timeout_ms: u64,
    /// Delivery attempts per push (WeChat: 3).
    pub push_attempts: u32,
    pub accounts: Vec<AccountConfig>,
    /// A SQLite file keeping what the sandbox remembers across restarts (tokens, orders, card
    /// packages, ...). None: everything lives in memory and is gone at stop.
    pub state_file: Option<std::path::PathBuf>,
    /// A request's headers must arrive within this, milliseconds; idle connections close after it.
    pub header_read_timeout_ms: u64,
    /// A request, its body and its answer must be done within this, milliseconds (else 408).
    pub request_timeout_ms: u64,
    /// Open connections; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8900)),
            public_url: None,
            pdf_max_bytes: 2 * 1024 * 1024,
            auth_link_lifetime_secs: 7200,
            push_timeout_ms: 5_000,
            push_attempts: 3,
            accounts: Vec::new(),
            state_file: None,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            max_connections: 1_024,
        }
    }
}

/// A WeChat account in the sandbox: a bureau's or a collection unit's Service Account, or a
/// unit's App.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub appid: String,
    pub secret: Secret,
    /// Display name (the unit's or bureau's name) on the sandbox pages.
    #[serde(default)]
    pub name: String,
    /// The account's original id (`gh_...`), the ToUserName of its pushes. Derived from the
    /// appid when absent.
    #[serde(default)]
    pub original_id: Option<String>,
    /// Where pushes for this account go. None: the account receives no pushes.
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub callback_token: Option<Secret>,
    #[serde(default)]
    pub encoding_aes_key: Option<Secret>,
    #[serde(default)]
    pub push_mode: PushMode,
    #[serde(default = "default_push_format")]
    pub push_format: PushFormat,
    /// For an App: the Service Account that receives the pushes of orders authorized through
    /// it (Apps cannot receive pushes).
    #[serde(default)]
    pub service_account: Option<String>,
    /// Lifetime of access tokens and tickets, seconds.
    #[serde(default = "default_lifetime")]
    pub token_lifetime_secs: i64,
    /// Daily call quotas by endpoint name (`token`, `stable_token`, `getticket`, ...).
    /// Defaults: token 2000, stable_token 500000, getticket 1000.
    #[serde(default)]
    pub daily_quota: BTreeMap<String, u64>,
}

fn default_push_format() -> PushFormat {
    PushFormat::Xml
}

fn default_lifetime() -> i64 {
    7200
}

impl AccountConfig {
    pub fn original_id(&self) -> String {
        self.original_id.clone().unwrap_or_else(|| {
            format!("gh_{}", &self.appid.trim_start_matches("wx").chars().take(12).collect::<String>())
        })
    }

    pub fn quota(&self, endpoint: &str) -> Option<u64> {
        self.daily_quota.get(endpoint).copied().or(match endpoint {
            "token" => Some(2_000),
            "stable_token" => Some(500_000),
            "getticket" => Some(1_000),
            _ => None,
        })
    }

    /// The account as the control API lists it: no secrets.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::json!({
            "appid": self.appid,
            "name": self.name,
            "original_id": self.original_id(),
            "callback_url": self.callback_url,
            "push_mode": self.push_mode,
            "push_format": self.push_format,
            "service_account": self.service_account,
            "token_lifetime_secs": self.token_lifetime_secs,
        })
    }
}
