//! The link to bureau-svc: a lazily connected gRPC channel, and the bureau's s_pappid (from
//! configuration, or asked once and stored).

use std::time::Duration;

use fiscalbill_common::proto::bureau as pb;
use fiscalbill_common::proto::bureau::bureau_service_client::BureauServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::config::BureauConfig;
use crate::error::CollectionError;
use crate::store::Store;

const S_PAPPID: &str = "s_pappid";

pub struct BureauLink {
    client: BureauServiceClient<Channel>,
    configured_s_pappid: Option<String>,
    store: Store,
    pub issue_deadline: Duration,
}

impl BureauLink {
    pub fn new(config: &BureauConfig, store: Store, max_message: usize) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(config.endpoint.clone())?
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .connect_lazy();
        let client = BureauServiceClient::new(channel)
            .max_encoding_message_size(max_message)
            .max_decoding_message_size(max_message);
        Ok(Self {
            client,
            configured_s_pappid: config.s_pappid.clone(),
            store,
            issue_deadline: Duration::from_millis(config.issue_deadline_ms),
        })
    }

    pub fn client(&self) -> BureauServiceClient<Channel> {
        self.client.clone()
    }

    /// The bureau's s_pappid: configured, or stored, or asked of the bureau and stored.
    pub async fn s_pappid(&self) -> Result<String, CollectionError> {
        if let Some(s_pappid) = &self.configured_s_pappid {
            return Ok(s_pappid.clone());
        }
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
