//! The link to bureau-svc: a lazily connected gRPC channel (TLS, mutual TLS and the API key
//! when configured), and the bureau's s_pappid (from configuration, or asked once and stored).

use std::sync::OnceLock;
use std::time::Duration;

use fiscalbill_common::auth::BearerKey;
use fiscalbill_common::proto::bureau as pb;
use fiscalbill_common::proto::bureau::bureau_service_client::BureauServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::BureauConfig;
use crate::error::CollectionError;
use crate::store::Store;

const S_PAPPID: &str = "s_pappid";

pub type BureauClient = BureauServiceClient<InterceptedService<Channel, BearerKey>>;

#[derive(Debug, thiserror::Error)]
pub enum BureauLinkError {
    #[error("bureau endpoint: {0}")]
    Endpoint(#[from] tonic::transport::Error),
    #[error("bureau TLS: {0}")]
    Tls(#[from] fiscalbill_common::tls::TlsError),
    #[error("bureau api_key: {0}")]
    Key(#[from] fiscalbill_common::config::ConfigError),
    #[error("bureau api_key must be printable ASCII")]
    KeyFormat,
}

/// The bureau's gRPC client, connecting on first use.
pub fn client(config: &BureauConfig, max_message: usize) -> Result<BureauClient, BureauLinkError> {
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())?
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .tcp_nodelay(true);
    if let Some(tls) = &config.tls {
        endpoint = endpoint.tls_config(tls.tonic()?)?;
    }
    let key = config.api_key.as_ref().map(|k| k.resolve()).transpose()?;
    let api_key = BearerKey::new(key.as_ref().map(|k| k.expose())).ok_or(BureauLinkError::KeyFormat)?;
    Ok(BureauServiceClient::with_interceptor(endpoint.connect_lazy(), api_key)
        .max_encoding_message_size(max_message)
        .max_decoding_message_size(max_message))
}

pub struct BureauLink {
    client: BureauClient,
    /// The s_pappid: configured, or once read or stored (a stored setting never changes).
    s_pappid: OnceLock<String>,
    store: Store,
    pub issue_deadline: Duration,
}

impl BureauLink {
    pub fn new(client: BureauClient, config: &BureauConfig, store: Store) -> Self {
        let s_pappid = OnceLock::new();
        if let Some(configured) = &config.s_pappid {
            let _ = s_pappid.set(configured.clone());
        }
        Self { client, s_pappid, store, issue_deadline: Duration::from_millis(config.issue_deadline_ms) }
    }

    pub fn client(&self) -> BureauClient {
        self.client.clone()
    }

    /// The bureau's s_pappid: configured, or stored, or asked of the bureau and stored.
    pub async fn s_pappid(&self) -> Result<String, CollectionError> {
        if let Some(s_pappid) = self.s_pappid.get() {
            return Ok(s_pappid.clone());
        }
        let s_pappid = self.stored_or_asked().await?;
        Ok(self.s_pappid.get_or_init(|| s_pappid).clone())
    }

    async fn stored_or_asked(&self) -> Result<String, CollectionError> {
        if let Some(s_pappid) = self.store.setting(S_PAPPID).await? {
            return Ok(s_pappid);
        }
        let mut request = tonic::Request::new(pb::GetSpAppIdRequest {});
        request.set_timeout(Duration::from_secs(10));
        let answer = self
            .client()
            .get_sp_app_id(request)
            .await
            .map_err(|status| CollectionError::BureauUnavailable(format!("GetSpAppId: {}", status.message())))?
            .into_inner();
        tracing::info!(bureau_appid = %answer.bureau_appid, "learnt the bureau's s_pappid");
        Ok(self.store.put_setting(S_PAPPID, &answer.s_pappid).await?)
    }
}
