//! The bureau's parts, wired together once the database is ready, and what the shared
//! lifecycle does with them.

use std::sync::Arc;
use std::time::Duration;

use fiscalbill_common::lifecycle::{AccountProblem, Application};
use fiscalbill_common::metrics::Metrics;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wechat::Credentials;

use crate::bills::Bills;
use crate::config::IssuingConfig;
use crate::domain::BillState;
use crate::issuer::Issuer;
use crate::reimburse::Reimburse;
use crate::spappid::SpAppIds;
use crate::templates::Templates;

pub struct App {
    pub bureau_appid: String,
    pub credentials: Arc<Credentials>,
    pub bills: Bills,
    pub sp_app_ids: Arc<SpAppIds>,
    pub templates: Arc<Templates>,
    pub issuer: Arc<Issuer>,
    pub reimburse: Reimburse,
    pub issuing: IssuingConfig,
    /// The host of the WeChat API this bureau talks to: its image URLs are taken as logos
    /// besides WeChat's image host (the sandbox's, in development).
    pub image_host: Option<String>,
}

impl Application for App {
    fn spawn_background(self: &Arc<Self>, _stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![tokio::spawn(self.issuer.clone().run_worker())]
    }

    async fn drain(&self, grace: Duration) {
        self.issuer.shutdown(grace).await;
    }

    async fn refresh_metrics(&self, metrics: &Metrics) {
        match self.bills.count_by_state().await {
            Ok(counts) => metrics.set_states(&BillState::ALL.map(BillState::as_str), &counts),
            Err(error) => tracing::warn!(%error, "cannot count bills for metrics"),
        }
    }

    /// The bureau's token, then its s_pappid (seturl, the first time: the invoice permission).
    async fn check_wechat(&self) -> Result<(), AccountProblem> {
        let problem = |error| AccountProblem { appid: self.bureau_appid.clone(), error };
        self.credentials.account(&self.bureau_appid).access_token().await.map_err(problem)?;
        match self.sp_app_ids.get().await {
            Ok(_) => Ok(()),
            Err(crate::error::BureauError::Wechat(error)) => Err(problem(error)),
            // A database problem: not WeChat's; the service reports it where it matters.
            Err(_) => Ok(()),
        }
    }
}
