//! bureau-svc settings: `--config bureau.toml`, every setting overridable as
//! `BUREAU__SECTION__KEY` (e.g. `BUREAU__DATABASE__URL`), secrets from env or files.

use std::net::SocketAddr;

use fiscalbill_common::auth::AuthConfig;
use fiscalbill_common::config::{LogConfig, SecretSetting};
use fiscalbill_common::db::DatabaseConfig;
use fiscalbill_common::tls::ServerTls;
use serde::Deserialize;
use wechat::callback::PushMode;
use wechat::{TokenMode, WechatHttpConfig};

pub const ENV_PREFIX: &str = "BUREAU";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BureauConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default = "default_database")]
    pub database: DatabaseConfig,
    /// How to reach WeChat (or the sandbox).
    #[serde(default)]
    pub wechat: WechatHttpConfig,
    /// The bureau's own WeChat Service Account.
    pub account: AccountConfig,
    #[serde(default)]
    pub issuing: IssuingConfig,
    /// Collection units onboarded by configuration (more can be added with CreateCardTemplate).
    #[serde(default)]
    pub units: Vec<UnitConfig>,
    /// Which clients may call which methods; on unless disabled.
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub log: LogConfig,
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig { url: "sqlite://var/bureau.db".to_owned(), ..DatabaseConfig::default() }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub grpc_listen: SocketAddr,
    /// WeChat's pushes (`/wechat/callback`) arrive here.
    pub http_listen: SocketAddr,
    /// Metrics (`/metrics`) and health (`/healthz`), for operators only.
    pub admin_listen: SocketAddr,
    /// TLS (and mutual TLS) of the gRPC server; plaintext without it.
    pub tls: Option<ServerTls>,
    /// How long a shutdown waits for in-flight bills before parking them.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9082)),
            tls: None,
            shutdown_grace_ms: 20_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub appid: String,
    pub secret: SecretSetting,
    /// The bureau's name, printed on rendered bills as the issuer.
    pub name: String,
    #[serde(default)]
    pub token_mode: TokenMode,
    /// The callback token configured at WeChat for `update_invoice_status` pushes.
    #[serde(default)]
    pub callback_token: Option<SecretSetting>,
    #[serde(default)]
    pub encoding_aes_key: Option<SecretSetting>,
    /// The EncodingAESKey before the last rotation, tried when the current one fails.
    #[serde(default)]
    pub previous_encoding_aes_key: Option<SecretSetting>,
    #[serde(default)]
    pub push_mode: PushMode,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuingConfig {
    /// Largest bill PDF accepted or rendered, bytes.
    pub pdf_max_bytes: usize,
    /// The title printed on rendered bills.
    pub bill_title: String,
    /// How long an insert answered "invoice order never auth" is retried, seconds.
    pub never_authorized_retry_secs: u64,
    /// How many consecutive inserts WeChat may answer "invalid card status" (retried with
    /// backoff: it may follow a template created moments before) before the bill fails.
    pub invalid_card_status_tries: u32,
    /// How long transient failures are retried before a bill fails, seconds.
    pub give_up_after_secs: u64,
    /// The pause after WeChat's per-minute quota, milliseconds.
    pub minute_quota_pause_ms: u64,
    /// First retry delay; doubles per attempt (with jitter) up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Bills the background worker drives at once.
    pub workers: usize,
    /// How often the worker looks for due bills.
    pub poll_interval_ms: u64,
    /// How long a replica owns a bill it is driving before another may take over.
    pub lease_secs: u64,
    /// The longest an IssueBill call waits for its bill when the caller set no deadline.
    pub default_wait_ms: u64,
}

impl Default for IssuingConfig {
    fn default() -> Self {
        Self {
            pdf_max_bytes: 2 * 1024 * 1024,
            bill_title: "非税收入统一票据（电子）".to_owned(),
            never_authorized_retry_secs: 600,
            invalid_card_status_tries: 8,
            give_up_after_secs: 86_400,
            minute_quota_pause_ms: 60_000,
            retry_base_ms: 500,
            retry_max_ms: 300_000,
            workers: 8,
            poll_interval_ms: 250,
            lease_secs: 60,
            default_wait_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    pub appid: String,
    /// The payee's full name (收款单位全称) shown on the card.
    pub payee: String,
    pub logo_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/bureau.example.toml");
        let config: BureauConfig = fiscalbill_common::config::load_from(Some(&path), ENV_PREFIX, []).unwrap();
        assert_eq!(config.units.len(), 1);
        assert_eq!(config.server.grpc_listen.port(), 50052);
    }
}
