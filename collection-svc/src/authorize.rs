//! Authorizations: links for payers (getbillauthurl), the unit's rejection (rejectinsert),
//! checks with WeChat (getauthdata) on demand and by the reconciler, which also ends links
//! that expired unused.

use std::sync::Arc;
use std::time::Duration;

use fiscalbill_common::db::now_millis;
use fiscalbill_common::paging::{Page, fetch_page};
use fiscalbill_common::telemetry;
use sha2::{Digest, Sha256};
use tracing::Instrument;
use wechat::types::{AuthSource, GetBillAuthUrlRequest, OrderRef, RejectInsertRequest};
use wechat::{CallError, Credentials, ErrorKind};

use crate::bureau::BureauLink;
use crate::config::AuthorizationConfig;
use crate::dispatch::Dispatcher;
use crate::domain::{AuthEvent, AuthQuery, AuthState, Authorization, CreateRequest, Job, JobPhase, OrderKey};
use crate::error::CollectionError;
use crate::store::{PushOutcome, PushRow, Store};
use crate::units::Units;

pub struct Authorizations {
    store: Store,
    credentials: Arc<Credentials>,
    units: Arc<Units>,
    bureau: Arc<BureauLink>,
    dispatcher: Arc<Dispatcher>,
    config: AuthorizationConfig,
}

impl Authorizations {
    pub fn new(
        store: Store,
        credentials: Arc<Credentials>,
        units: Arc<Units>,
        bureau: Arc<BureauLink>,
        dispatcher: Arc<Dispatcher>,
        config: AuthorizationConfig,
    ) -> Self {
        Self { store, credentials, units, bureau, dispatcher, config }
    }

    pub async fn get(&self, key: &OrderKey) -> Result<Authorization, CollectionError> {
        self.store.authorization(key).await?.ok_or_else(|| CollectionError::NotFound(key.clone()))
    }

    /// ListAuthorizations: newest first, after the query's cursor.
    pub async fn list(&self, query: &AuthQuery) -> Result<Page<Authorization>, CollectionError> {
        let page =
            fetch_page(
                query.limit,
                |limit| async move { self.store.list(&AuthQuery { limit, ..query.clone() }).await },
            )
            .await?;
        Ok(page)
    }

    /// Records a verified push (once: WeChat's retries and replays are duplicates) and applies
    /// it; an authorization it authorizes has its IssueBill queued in the same transaction.
    pub async fn record_push(&self, push: &PushRow<'_>) -> Result<PushOutcome, CollectionError> {
        let span = tracing::info_span!(
            "push",
            otel.name = "wechat push user_authorize_invoice",
            otel.kind = "server",
            unit_appid = %push.unit_appid,
            order_id = %push.order_id,
        );
        // Exported, the push is a child of its order's span (read first, only then).
        if telemetry::exporting() {
            let key = OrderKey { unit_appid: push.unit_appid.to_owned(), order_id: push.order_id.to_owned() };
            if let Some(trace) = self.store.trace(&key).await? {
                trace.continue_in(&span);
            }
        }
        // With a delivery slot free, the push's job is queued leased to this replica and
        // delivered at once, with what its unit read: no claim (a write), nor a read, in between.
        let slot = self.dispatcher.free_slot();
        let now = now_millis();
        let lease = slot.as_ref().map(|_| self.dispatcher.push_lease(now));
        let (outcome, leased) = self.store.record_push(push, now, lease).instrument(span).await?;
        match (outcome, slot, leased) {
            (PushOutcome::Authorized, Some(slot), Some(read)) => {
                let key = OrderKey { unit_appid: push.unit_appid.to_owned(), order_id: push.order_id.to_owned() };
                self.dispatcher.deliver_pushed(Job { key, phase: JobPhase::Issue, attempts: 0 }, slot, read);
            }
            (PushOutcome::Authorized, ..) => self.dispatcher.kick(),
            _ => {}
        }
        Ok(outcome)
    }

    /// CreateAuthorization. A repeat with the same data returns the stored authorization (with
    /// a fresh link if the old one expired unused); different data is a conflict.
    pub async fn create(&self, request: CreateRequest) -> Result<Authorization, CollectionError> {
        let unit = self
            .units
            .get(&request.key.unit_appid)
            .ok_or_else(|| CollectionError::UnitNotServed(request.key.unit_appid.clone()))?;
        let authorized_appid = match request.source {
            AuthSource::Web => unit.appid.clone(),
            AuthSource::App => {
                unit.app_appid.clone().ok_or_else(|| CollectionError::AppNotConfigured(unit.appid.clone()))?
            }
        };
        let pdf_sha256 = request.pdf.as_ref().map(|pdf| hex::encode(Sha256::digest(pdf)));
        let (billing_no, billing_code) = (&request.bill.billing_no, &request.bill.billing_code);
        let found =
            self.store.orders_in_the_way(&request.key, request.request_id.as_deref(), billing_no, billing_code).await?;
        if let (Some(request_id), Some(holder)) = (&request.request_id, &found.request_id)
            && *holder != request.key
        {
            return Err(CollectionError::RequestIdReused(request_id.clone()));
        }
        if found.created
            && let Some(existing) = self.store.authorization(&request.key).await?
        {
            return self.repeat(existing, &request, &pdf_sha256).await;
        }
        // Before any WeChat call: a number another order holds gets no link.
        if let Some(holder) = found.billing_number {
            billing_number_free(&request, holder)?;
        }

        let s_pappid = self.bureau.s_pappid().await?;
        let link = self.auth_link(&authorized_appid, &s_pappid, &request).await?;
        let now = now_millis();
        let authorization = Authorization {
            key: request.key.clone(),
            authorized_appid,
            source: request.source,
            money: request.money,
            bill: request.bill.clone(),
            pdf_sha256,
            redirect_url: request.redirect_url.clone(),
            request_id: request.request_id.clone(),
            trace: request.trace.clone(),
            s_pappid,
            auth_url: link.auth_url,
            auth_url_expires_at: now + link.expire_time.max(0) * 1000,
            state: AuthState::Pending,
            openid: None,
            authorize_time: 0,
            card_id: None,
            card_code: None,
            failure: None,
            issue_attempts: 0,
            reject_reason: None,
            wechat_invoice_status: None,
            created_at: now,
            updated_at: now,
        };
        if let Err(error) = self.store.insert_authorization(&authorization, request.pdf.as_ref()).await {
            // A concurrent call created the order, or another order took the number, first.
            if let Some(existing) = self.store.authorization(&request.key).await? {
                return self.repeat(existing, &request, &authorization.pdf_sha256).await;
            }
            self.check_billing_number(&request).await?;
            return Err(error.into());
        }
        tracing::info!(order = %request.key, source = request.source.as_str(), "authorization link created");
        Ok(authorization)
    }

    /// Refuses a billing number that another order holds.
    async fn check_billing_number(&self, request: &CreateRequest) -> Result<(), CollectionError> {
        let (billing_no, billing_code) = (&request.bill.billing_no, &request.bill.billing_code);
        match self.store.billing_number_holder(billing_no, billing_code).await? {
            Some(holder) => billing_number_free(request, holder),
            None => Ok(()),
        }
    }

    async fn repeat(
        &self,
        existing: Authorization,
        request: &CreateRequest,
        pdf_sha256: &Option<String>,
    ) -> Result<Authorization, CollectionError> {
        let same = existing.money == request.money
            && existing.source == request.source
            && existing.redirect_url == request.redirect_url
            && existing.bill == request.bill
            && &existing.pdf_sha256 == pdf_sha256;
        if !same {
            return Err(CollectionError::OrderConflict(existing.key));
        }
        if existing.state.after(AuthEvent::LinkRenewed).is_some() {
            let link = self.auth_link(&existing.authorized_appid, &existing.s_pappid, request).await?;
            let now = now_millis();
            self.store.renew_link(&existing.key, &link.auth_url, now + link.expire_time.max(0) * 1000, now).await?;
            tracing::info!(order = %existing.key, "expired authorization link renewed");
            return self.get(&existing.key).await;
        }
        Ok(existing)
    }

    async fn auth_link(
        &self,
        appid: &str,
        s_pappid: &str,
        request: &CreateRequest,
    ) -> Result<wechat::types::AuthUrl, CollectionError> {
        let account = self.credentials.account(appid);
        let ticket = account.card_ticket().await?.value;
        let body = &GetBillAuthUrlRequest {
            s_pappid: s_pappid.to_owned(),
            order_id: request.key.order_id.clone(),
            money: request.money,
            timestamp: wechat::clock::unix_now(),
            source: request.source,
            redirect_url: request.redirect_url.clone(),
            ticket,
        };
        Ok(account.get_bill_auth_url(body).await?)
    }

    /// RejectAuthorization: rejectinsert at WeChat, then REJECTED here (final).
    pub async fn reject(
        &self,
        key: &OrderKey,
        reason: String,
        url: Option<String>,
    ) -> Result<Authorization, CollectionError> {
        let existing = self.get(key).await?;
        if existing.state == AuthState::Rejected {
            return Ok(existing);
        }
        if existing.state.after(AuthEvent::UnitRejected).is_none() {
            return Err(CollectionError::WrongState { key: key.clone(), state: existing.state, action: "reject it" });
        }
        // Handed to the bureau right now: the bill may be inserted before WeChat hears of the
        // rejection.
        if existing.state.after(AuthEvent::BureauIssuing).is_some()
            && self.store.job_in_flight(key, now_millis()).await?
        {
            return Err(CollectionError::IssueInProgress(key.clone()));
        }
        let body = &RejectInsertRequest {
            s_pappid: existing.s_pappid.clone(),
            order_id: key.order_id.clone(),
            reason: reason.clone(),
            url,
        };
        self.credentials.account(&existing.authorized_appid).reject_insert(body).await?;
        if !self.store.reject(key, &reason, now_millis()).await? {
            let now = self.get(key).await?;
            return Err(CollectionError::WrongState { key: key.clone(), state: now.state, action: "reject it" });
        }
        tracing::info!(order = %key, "authorization rejected");
        self.get(key).await
    }

    /// SyncAuthorization: asks WeChat (getauthdata) and records the answer. Returns WeChat's
    /// invoice_status when it gave one.
    pub async fn sync(&self, key: &OrderKey) -> Result<(Authorization, Option<String>), CollectionError> {
        let existing = self.get(key).await?;
        let body = &OrderRef { s_pappid: existing.s_pappid.clone(), order_id: key.order_id.clone() };
        let answer = self.credentials.account(&existing.authorized_appid).get_auth_data(body).await;
        let now = now_millis();
        let status = match answer {
            Ok(data) if data.is_authorized() => {
                // WeChat says authorized; an absurd auth_time is not kept (the time we learned
                // of it stands in), so that no stored time overflows or becomes unreadable.
                let auth_time = if wechat::clock::is_plausible(data.auth_time, now / 1000) {
                    data.auth_time * 1000
                } else {
                    tracing::warn!(order = %key, auth_time = data.auth_time, "getauthdata answered an implausible auth_time; using the time of the sync");
                    now
                };
                if self.store.authorize_by_sync(key, auth_time, &data.invoice_status, now).await? {
                    tracing::info!(order = %key, "authorization found through getauthdata (the push was lost)");
                    self.dispatcher.kick();
                }
                Some(data.invoice_status)
            }
            Ok(data) => {
                self.store.record_sync(key, Some(&data.invoice_status), now).await?;
                if data.invoice_status == "auth fail" {
                    self.store.transition(key, AuthEvent::PayerDeclined, now).await?;
                } else {
                    self.expire_if_due(&existing, now).await?;
                }
                Some(data.invoice_status)
            }
            Err(CallError::Wechat(error)) if error.kind() == ErrorKind::NeverAuthorized => {
                self.store.record_sync(key, None, now).await?;
                self.expire_if_due(&existing, now).await?;
                None
            }
            Err(CallError::Wechat(error)) if error.kind() == ErrorKind::OrderRejected => {
                self.store.record_sync(key, None, now).await?;
                self.store.transition(key, AuthEvent::FoundRejected, now).await?;
                None
            }
            Err(error) => return Err(error.into()),
        };
        Ok((self.get(key).await?, status))
    }

    async fn expire_if_due(&self, existing: &Authorization, now: i64) -> Result<(), CollectionError> {
        if existing.state.after(AuthEvent::LinkExpired).is_some()
            && existing.auth_url_expires_at <= now
            && self.store.transition(&existing.key, AuthEvent::LinkExpired, now).await?
        {
            tracing::info!(order = %existing.key, "authorization link expired unused");
        }
        Ok(())
    }

    /// RetryIssue: a failed issue goes to the bureau again.
    pub async fn retry_issue(&self, key: &OrderKey) -> Result<Authorization, CollectionError> {
        let existing = self.get(key).await?;
        if let Some(failure) = &existing.failure
            && existing.state == AuthState::IssueFailed
            && !failure.retry_may_help()
        {
            return Err(CollectionError::RetryCannotFix { key: key.clone(), reason: failure.reason.clone() });
        }
        if !self.store.retry_issue(key, now_millis()).await? {
            return Err(CollectionError::WrongState {
                key: key.clone(),
                state: existing.state,
                action: "retry its issue",
            });
        }
        self.dispatcher.kick();
        self.get(key).await
    }

    /// The reconciler: pending authorizations older than `reconcile_after_secs`, or whose link
    /// expired, are checked with WeChat, so a lost push never loses a bill.
    pub async fn run_reconciler(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.config.reconcile_interval_secs.max(1));
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let now = now_millis();
            let older_than = now - self.config.reconcile_after_secs as i64 * 1000;
            let due = match self.store.claim_for_sync(now, older_than, self.config.reconcile_batch).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "reconciler cannot read pending authorizations");
                    continue;
                }
            };
            for key in due {
                if let Err(error) = self.sync(&key).await {
                    tracing::warn!(order = %key, %error, "reconciler could not check the authorization");
                }
            }
        }
    }
}

/// Refuses a billing number another order holds (`holder`, the order holding it).
fn billing_number_free(request: &CreateRequest, holder: OrderKey) -> Result<(), CollectionError> {
    if holder == request.key {
        return Ok(());
    }
    Err(CollectionError::BillingNumberTaken {
        billing_no: request.bill.billing_no.clone(),
        billing_code: request.bill.billing_code.clone(),
        holder,
    })
}
