//! bureau-svc settings: `--config bureau.toml`, every setting overridable as
//! `BUREAU__SECTION__KEY` (e.g. `BUREAU__DATABASE__URL`), secrets from env or files.

use std::net::SocketAddr;
use std::path::PathBuf;

use fiscalbill_common::auth::AuthConfig;
use fiscalbill_common::config::{ConfigError, LogConfig, SecretSetting};
use fiscalbill_common::connections::ConnectionLimits;
use fiscalbill_common::db::DatabaseConfig;
use fiscalbill_common::telemetry::TelemetryConfig;

use crate::pdf::sign::BillSigner;
use fiscalbill_common::tls::ServerTls;
use serde::Deserialize;
use wechat::callback::PushMode;
use wechat::image::{IMAGE_HOST, LogoImage, is_wechat_image_url};
use wechat::{TokenMode, WechatHttpConfig};

use crate::domain::Logo;
use crate::templates::ConfiguredUnit;

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
    /// Span export over OTLP; off unless `otlp_endpoint` is set.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The certificate and key that sign the bills the bureau renders; without it they are not
    /// signed (a warning at start, a failed preflight check).
    #[serde(default)]
    pub signing: Option<SigningConfig>,
}

/// `[signing]`: the bureau's document-signing certificate (PEM) and its P-256 private key (PEM,
/// PKCS #8 or SEC1), each `{ file = "..." }` or `{ env = "..." }`; `sign_supplied` for the PDFs
/// units supply.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    pub certificate: SecretSetting,
    pub key: SecretSetting,
    /// Also sign the PDFs units supply, as an incremental update that keeps their bytes (the
    /// bill's pdf_sha256 is then the signed file's).
    #[serde(default)]
    pub sign_supplied: bool,
}

impl SigningConfig {
    pub fn signer(&self) -> Result<BillSigner, String> {
        let certificate = self.certificate.resolve().map_err(|e| format!("signing.certificate: {e}"))?;
        let key = self.key.resolve().map_err(|e| format!("signing.key: {e}"))?;
        BillSigner::from_pem(certificate.expose(), key.expose())
    }
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
    /// This replica's name on the leases it holds; default `host:grpc_port`. Stable across
    /// restarts, so that a restarted replica resumes its own work at once; unique per replica.
    pub replica_id: Option<String>,
    /// Timeouts and connection caps of every port (see README, Security).
    pub limits: ConnectionLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9082)),
            tls: None,
            shutdown_grace_ms: 20_000,
            replica_id: None,
            limits: ConnectionLimits::default(),
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
    /// The logo as a URL on WeChat's image host (`http://mmbiz.qpic.cn/...`, from WeChat's
    /// image upload). Give this or `logo_file`.
    #[serde(default)]
    pub logo_url: Option<String>,
    /// The logo as a JPG or PNG file of at most 1 MB, uploaded through WeChat's image upload
    /// (media/uploadimg) before the unit's template is created. Give this or `logo_url`.
    #[serde(default)]
    pub logo_file: Option<PathBuf>,
}

impl UnitConfig {
    /// The unit with its logo read and checked; `image_host` as for CreateCardTemplate.
    pub fn resolve(&self, image_host: Option<&str>) -> Result<ConfiguredUnit, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid(format!("units {}: {message}", self.appid));
        let logo = match (&self.logo_url, &self.logo_file) {
            (Some(url), None) if is_wechat_image_url(url, image_host) => Logo::Url(url.clone()),
            (Some(url), None) => {
                return Err(invalid(format!(
                    "logo_url {url:?} is not on WeChat's image host ({IMAGE_HOST}); upload the logo with WeChat's \
                     image upload, or give the image as logo_file"
                )));
            }
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|e| invalid(format!("logo_file {}: {e}", path.display())))?;
                Logo::image(
                    LogoImage::new(bytes.into()).map_err(|e| invalid(format!("logo_file {}: {e}", path.display())))?,
                )
            }
            _ => return Err(invalid("give the logo as logo_url or logo_file (one of them)".to_owned())),
        };
        Ok(ConfiguredUnit { appid: self.appid.clone(), payee: self.payee.clone(), logo })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/bureau.example.toml");
        // Its environment: the secrets it names, TLS and signing off (their files are the
        // deployment's) and the logo from this repository.
        let logo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wechat-sandbox/assets/demo-logo.png");
        let env = [
            ("BUREAU_APPSECRET", "x"),
            ("BUREAU_CALLBACK_TOKEN", "x"),
            ("BUREAU_ENCODING_AES_KEY", "x"),
            ("BUREAU__SERVER__TLS", ""),
            ("BUREAU__SIGNING", ""),
            ("BUREAU__UNITS__0__LOGO_FILE", logo.to_str().unwrap()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config: BureauConfig = fiscalbill_common::config::load_from(Some(&path), ENV_PREFIX, env).unwrap();
        assert_eq!(config.telemetry.otlp_endpoint.as_deref(), Some("http://otel-collector.internal:4317"));
        assert_eq!(config.units.len(), 1);
        assert_eq!(config.server.grpc_listen.port(), 50052);
    }
}
