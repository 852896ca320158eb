//! collection-svc's parts, wired together once the database is ready, and what the shared
//! lifecycle does with them.

use std::sync::Arc;
use std::time::Duration;

use fiscalbill_common::lifecycle::{AccountProblem, Application};
use fiscalbill_common::metrics::Metrics;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wechat::Credentials;

use crate::authorize::Authorizations;
use crate::config::AuthorizationConfig;
use crate::dispatch::Dispatcher;
use crate::domain::AuthState;
use crate::store::Store;
use crate::units::Units;
use crate::watch::Watches;

pub struct App {
    pub store: Store,
    pub watches: Arc<Watches>,
    pub credentials: Arc<Credentials>,
    pub units: Arc<Units>,
    pub authorizations: Arc<Authorizations>,
    pub dispatcher: Arc<Dispatcher>,
    pub config: AuthorizationConfig,
}

impl Application for App {
    fn spawn_background(self: &Arc<Self>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.dispatcher.clone().run()),
            tokio::spawn(self.authorizations.clone().run_reconciler(stop.clone())),
            tokio::spawn(
                self.watches.clone().run_pruner(Duration::from_secs(self.config.watch_retention_hours * 3600), stop),
            ),
        ]
    }

    async fn drain(&self, grace: Duration) {
        self.watches.stop();
        self.dispatcher.shutdown(grace).await;
    }

    /// Authorizations by state, outbox depth and age.
    async fn refresh_metrics(&self, metrics: &Metrics) {
        match self.store.count_by_state().await {
            Ok(counts) => metrics.set_states(&AuthState::ALL.map(AuthState::as_str), &counts),
            Err(error) => tracing::warn!(%error, "cannot count authorizations for metrics"),
        }
        match self.store.outbox_depth(fiscalbill_common::db::now_millis()).await {
            Ok((jobs, oldest_ms)) => {
                metrics.outbox_jobs.set(jobs);
                metrics.outbox_oldest_seconds.set(oldest_ms as f64 / 1000.0);
            }
            Err(error) => tracing::warn!(%error, "cannot measure the outbox for metrics"),
        }
    }

    /// An access token of every account: each unit's Service Account and App.
    async fn check_wechat(&self) -> Result<(), AccountProblem> {
        for appid in self.units.accounts() {
            if let Err(error) = self.credentials.account(appid).access_token().await {
                return Err(AccountProblem { appid: appid.to_owned(), error });
            }
        }
        Ok(())
    }
}
