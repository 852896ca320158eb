//! collection-svc settings: `--config collection.toml`, every setting overridable as
//! `COLLECTION__SECTION__KEY`, secrets from env or files.

use std::net::SocketAddr;

use fiscalbill_common::auth::AuthConfig;
use fiscalbill_common::config::{LogConfig, SecretSetting};
use fiscalbill_common::connections::ConnectionLimits;
use fiscalbill_common::db::DatabaseConfig;
use fiscalbill_common::telemetry::TelemetryConfig;
use fiscalbill_common::tls::{ClientTls, ServerTls};
use serde::Deserialize;
use wechat::callback::PushMode;
use wechat::{TokenMode, WechatHttpConfig};

pub const ENV_PREFIX: &str = "COLLECTION";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default = "default_database")]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub wechat: WechatHttpConfig,
    /// Access tokens come from stable_token (default) or cgi-bin/token.
    #[serde(default)]
    pub token_mode: TokenMode,
    pub bureau: BureauConfig,
    /// The collection units this service serves.
    pub units: Vec<UnitConfig>,
    #[serde(default)]
    pub authorization: AuthorizationConfig,
    #[serde(default)]
    pub dispatch: DispatchConfig,
    /// Which clients may call which methods; on unless disabled.
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Span export over OTLP; off unless `otlp_endpoint` is set.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig { url: "sqlite://var/collection.db".to_owned(), ..DatabaseConfig::default() }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub grpc_listen: SocketAddr,
    /// WeChat's pushes arrive at `/wechat/callback/{appid}` here.
    pub http_listen: SocketAddr,
    /// Metrics (`/metrics`) and health (`/healthz`), for operators only.
    pub admin_listen: SocketAddr,
    /// TLS (and mutual TLS) of the gRPC server; plaintext without it.
    pub tls: Option<ServerTls>,
    pub shutdown_grace_ms: u64,
    /// This replica's name on the leases it holds; default `host:grpc_port`. Stable across
    /// restarts, so that a restarted replica resumes its own work at once; unique per replica.
    pub replica_id: Option<String>,
    /// Timeouts and connection caps of every port (see README, Security).
    pub limits: ConnectionLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9081)),
            tls: None,
            shutdown_grace_ms: 10_000,
            replica_id: None,
            limits: ConnectionLimits::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BureauConfig {
    /// bureau-svc's gRPC endpoint, e.g. `http://bureau.internal:50052`.
    pub endpoint: String,
    /// The bureau's s_pappid; when absent it is asked of the bureau once (GetSpAppId) and
    /// stored.
    #[serde(default)]
    pub s_pappid: Option<String>,
    /// Deadline of one IssueBill call.
    #[serde(default = "default_issue_deadline")]
    pub issue_deadline_ms: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// TLS to the bureau (an `https://` endpoint); with a client certificate for mutual TLS.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// The API key collection-svc presents to the bureau.
    #[serde(default)]
    pub api_key: Option<SecretSetting>,
}

fn default_issue_deadline() -> u64 {
    10_000
}

fn default_connect_timeout() -> u64 {
    3_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// The unit's Service Account.
    pub appid: String,
    pub secret: SecretSetting,
    /// The callback token configured at WeChat for this account.
    pub callback_token: SecretSetting,
    #[serde(default)]
    pub encoding_aes_key: Option<SecretSetting>,
    /// The EncodingAESKey before the last rotation, tried when the current one fails.
    #[serde(default)]
    pub previous_encoding_aes_key: Option<SecretSetting>,
    #[serde(default)]
    pub push_mode: PushMode,
    /// The unit's App (Open Platform), for the App scenario.
    #[serde(default)]
    pub app: Option<AppConfig>,
    /// Where pushes this service does not handle (`update_invoice_status`) are forwarded,
    /// unchanged: the bureau's callback in the self-built platform, where one account plays
    /// both roles and WeChat has one callback URL.
    #[serde(default)]
    pub forward_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub appid: String,
    pub secret: SecretSetting,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// A pending authorization this old is checked with WeChat (getauthdata), seconds.
    pub reconcile_after_secs: u64,
    /// How often the reconciler looks, seconds.
    pub reconcile_interval_secs: u64,
    /// Authorizations checked per round.
    pub reconcile_batch: i64,
    /// Largest PDF accepted with CreateAuthorization, bytes (the bureau's limit applies too).
    pub pdf_max_bytes: usize,
    /// How often a WatchAuthorizations stream looks for changes other replicas made (this
    /// replica's own changes wake its streams at once), milliseconds.
    pub watch_poll_ms: u64,
    /// How long changes are kept for WatchAuthorizations: a stream can be resumed within this,
    /// hours.
    pub watch_retention_hours: u64,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        Self {
            reconcile_after_secs: 300,
            reconcile_interval_secs: 30,
            reconcile_batch: 50,
            pdf_max_bytes: 2 * 1024 * 1024,
            watch_poll_ms: 500,
            watch_retention_hours: 168,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// IssueBill calls in flight at once.
    pub workers: usize,
    /// PDF bytes the calls in flight may hold, MiB: a call holds its PDF about twice while it
    /// is sent. A call reserves `[authorization] pdf_max_bytes` before it reads its PDF and
    /// keeps what the PDF needs; a PDF larger than the budget goes alone.
    pub pdf_budget_mib: usize,
    pub poll_interval_ms: u64,
    /// First retry delay after the bureau was unavailable; doubles up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How often a bill still in progress at the bureau is polled.
    pub progress_poll_ms: u64,
    /// How long a replica owns a job it delivers.
    pub lease_secs: u64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            workers: 64,
            pdf_budget_mib: 64,
            poll_interval_ms: 200,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            progress_poll_ms: 1_000,
            lease_secs: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/collection.example.toml");
        // Its environment: the secrets it names and TLS off (its files are the deployment's).
        let env = |more: &[(&str, &str)]| {
            [
                ("BUREAU_API_KEY", "x"),
                ("UNIT_APPSECRET", "x"),
                ("UNIT_CALLBACK_TOKEN", "x"),
                ("UNIT_ENCODING_AES_KEY", "x"),
                ("UNIT_APP_APPSECRET", "x"),
                ("COLLECTION__SERVER__TLS", ""),
                ("COLLECTION__BUREAU__TLS", ""),
            ]
            .iter()
            .chain(more)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
        };
        let config: CollectionConfig = fiscalbill_common::config::load_from(Some(&path), ENV_PREFIX, env(&[])).unwrap();
        assert_eq!(config.units.len(), 1);
        assert!(config.units[0].app.is_some());
        assert!(config.telemetry.otlp_endpoint.is_some());
        let overridden: CollectionConfig = fiscalbill_common::config::load_from(
            Some(&path),
            ENV_PREFIX,
            env(&[("COLLECTION__DATABASE__URL", "sqlite://var/x.db")]),
        )
        .unwrap();
        assert_eq!(overridden.database.url, "sqlite://var/x.db");
    }
}
