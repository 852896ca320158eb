//! The dispatcher: delivers each authorized order's IssueBill to the bureau from the outbox,
//! with a deadline and a request_id; retries while the bureau is unavailable (with backoff and
//! jitter); polls bills still in progress; records the final outcome on the authorization.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fiscalbill_common::byte_budget::{ByteBudget, Reservation};
use fiscalbill_common::db::now_millis;
use fiscalbill_common::proto::bureau as pb;
use fiscalbill_common::trace::TraceContext;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tonic::Code;
use tonic_types::StatusExt;
use tracing::Instrument;
use wechat::backoff::jittered;

use crate::bureau::BureauLink;
use crate::config::DispatchConfig;
use crate::domain::{AuthEvent, Authorization, Failure, Job, JobPhase, OrderKey};
use crate::store::{JobLease, JobOutcome, Store, ToDeliver};

pub struct Dispatcher {
    store: Store,
    bureau: Arc<BureauLink>,
    config: DispatchConfig,
    holder: String,
    wake: Notify,
    accepting: AtomicBool,
    slots: Arc<Semaphore>,
    /// The PDF bytes deliveries may hold at once: a delivery holds its PDF about twice until
    /// IssueBill returns. It does not know the PDF's size before reading it, so it reserves
    /// `pdf_max_bytes` first and gives back the rest once it has read it.
    pdf_budget: ByteBudget,
    /// The largest PDF an authorization can hold: what a delivery reserves before it reads one.
    pdf_max_bytes: usize,
}

/// A delivery slot taken for a push, with the PDF budget its delivery may need.
pub struct PushSlot {
    slot: OwnedSemaphorePermit,
    pdf_bytes: Reservation,
}

/// The request_id of an order's IssueBill: stable across retries and replicas.
pub fn request_id(key: &OrderKey) -> String {
    hex::encode(&Sha256::digest(format!("{}\n{}", key.unit_appid, key.order_id))[..16])
}

impl Dispatcher {
    pub fn new(
        store: Store,
        bureau: Arc<BureauLink>,
        config: DispatchConfig,
        pdf_max_bytes: usize,
        holder: String,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.workers.max(1)));
        let pdf_budget = ByteBudget::new(config.pdf_budget_mib.saturating_mul(1024 * 1024));
        Self {
            store,
            bureau,
            config,
            holder,
            wake: Notify::new(),
            accepting: AtomicBool::new(true),
            slots,
            pdf_budget,
            pdf_max_bytes,
        }
    }

    /// Look for jobs now (a push or a sync just queued one).
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    pub async fn run(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.poll_interval_ms.max(10));
        while self.accepting.load(Ordering::SeqCst) {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
            let free = self.slots.available_permits();
            if free == 0 || !self.accepting.load(Ordering::SeqCst) {
                continue;
            }
            let now = now_millis();
            let jobs = match self.store.claim_jobs(&self.holder, now, self.lease_until(now), free as i64).await {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the outbox");
                    continue;
                }
            };
            if jobs.len() == free {
                self.wake.notify_one();
            }
            for job in jobs {
                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                    let _ = self.store.release_job(&job.key, &self.holder).await;
                    continue;
                };
                self.spawn_delivery(job, permit, None);
            }
        }
    }

    /// A free delivery slot and the PDF budget for it, for a push that leases the job it
    /// queues (none while stopping, or when either would have to be waited for).
    pub fn free_slot(&self) -> Option<PushSlot> {
        if !self.accepting.load(Ordering::SeqCst) {
            return None;
        }
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let pdf_bytes = self.pdf_budget.try_reserve(self.pdf_max_bytes)?;
        Some(PushSlot { slot, pdf_bytes })
    }

    /// The lease a push takes on the job it queues, for this replica to deliver at once.
    pub fn push_lease(&self, now: i64) -> JobLease<'_> {
        JobLease { holder: &self.holder, until: self.lease_until(now) }
    }

    /// When a lease this replica takes at `now` ends.
    fn lease_until(&self, now: i64) -> i64 {
        now + self.config.lease_secs as i64 * 1000
    }

    /// Delivers, in the push's slot, the job a push queued leased to this replica, with what
    /// the push read for it. A PDF of more than one chunk is not in it (the push's unit leaves
    /// it out: `Store::record_push`): the delivery reads it first, as a claimed job's.
    pub fn deliver_pushed(self: &Arc<Self>, job: Job, slot: PushSlot, read: ToDeliver) {
        let (authorization, pdf) = &read;
        let complete = authorization.pdf_sha256.is_none() || pdf.is_some();
        self.spawn_delivery(job, slot.slot, complete.then_some((read, slot.pdf_bytes)));
    }

    /// Delivers, in `slot`, a job this replica holds the lease of: with what was read for it
    /// (by the push that queued it) and the PDF budget reserved then, or (claimed) reading it
    /// first.
    fn spawn_delivery(self: &Arc<Self>, job: Job, slot: OwnedSemaphorePermit, read: Option<(ToDeliver, Reservation)>) {
        let dispatcher = self.clone();
        tokio::spawn(async move {
            let delivered = match read {
                Some((read, pdf_bytes)) => dispatcher.send(&job, read, Some(pdf_bytes)).await,
                None => dispatcher.deliver(&job).await,
            };
            if let Err(error) = delivered {
                tracing::warn!(order = %job.key, %error, "delivery interrupted; the job is retried after its lease");
            }
            drop(slot);
        });
    }

    /// Stops taking jobs and waits (up to `grace`) for deliveries in flight.
    pub async fn shutdown(&self, grace: Duration) {
        self.accepting.store(false, Ordering::SeqCst);
        self.wake.notify_one();
        let all = self.config.workers.max(1) as u32;
        if tokio::time::timeout(grace, self.slots.acquire_many(all)).await.is_err() {
            tracing::warn!("shutdown grace over with deliveries in flight; their jobs are retried after their lease");
        }
    }

    async fn deliver(&self, job: &Job) -> Result<(), sqlx::Error> {
        let with_pdf = job.phase == JobPhase::Issue;
        // Taken before the PDF is read, whose size is not known until then.
        let pdf_bytes = if with_pdf { Some(self.pdf_budget.reserve(self.pdf_max_bytes).await) } else { None };
        match self.store.authorization_to_deliver(&job.key, with_pdf).await? {
            Some(read) => self.send(job, read, pdf_bytes).await,
            None => self.store.release_job(&job.key, &self.holder).await,
        }
    }

    /// Sends what was read for a job to the bureau and records the answer; `pdf_bytes`, the
    /// budget reserved for the PDF, is kept for the PDF read until the call returns.
    async fn send(
        &self,
        job: &Job,
        (authorization, pdf): ToDeliver,
        pdf_bytes: Option<Reservation>,
    ) -> Result<(), sqlx::Error> {
        let _pdf_bytes = pdf_bytes.map(|mut reserved| {
            reserved.shrink_to(pdf.as_ref().map_or(0, Bytes::len));
            reserved
        });
        // The order's trace goes on: the delivery is a child of the order's span.
        let span = tracing::info_span!(
            "deliver",
            unit_appid = %job.key.unit_appid,
            order_id = %job.key.order_id,
            trace_id = %authorization.trace.trace_id,
            phase = job.phase.as_str(),
        );
        authorization.trace.continue_in(&span);
        self.deliver_authorization(job, &authorization, pdf.unwrap_or_default()).instrument(span).await
    }

    async fn deliver_authorization(
        &self,
        job: &Job,
        authorization: &Authorization,
        pdf: Bytes,
    ) -> Result<(), sqlx::Error> {
        if authorization.state.after(AuthEvent::BureauIssuing).is_none() {
            let outcome = JobOutcome::Failed(Failure { reason: "NOT_AUTHORIZED".into(), ..Failure::default() });
            return self.store.finish_job(&job.key, &self.holder, &outcome, now_millis()).await;
        }
        tracing::info!("delivering the bill to the bureau");
        let answer = self.call_bureau(job, authorization, pdf).await;
        let now = now_millis();
        match answer {
            Ok(Some(bill)) => self.record_bill(job, &bill, now).await,
            Ok(None) => self.retry(job, "the bureau answered without a bill", "BUREAU_ERROR", now).await,
            Err(status) if job.phase == JobPhase::Poll && status.code() == Code::NotFound => {
                // The bureau does not know the bill: issue it (again).
                self.retry(job, "the bureau does not know the bill", "BUREAU_BILL_MISSING", now).await
            }
            Err(status) if retryable(&status) => {
                let message = format!("bureau {}: {}", code_name(status.code()), status.message());
                // The bureau's reason when it gave one (WECHAT_UNREACHABLE: the bill waits at
                // the bureau for WeChat).
                let reason = status.get_error_details().error_info().map(|info| info.reason.clone());
                self.retry(job, &message, reason.as_deref().unwrap_or("BUREAU_UNAVAILABLE"), now).await
            }
            Err(status) => {
                let info = status.get_error_details().error_info().cloned();
                let failure = Failure {
                    reason: info.as_ref().map(|i| i.reason.clone()).unwrap_or_else(|| "BUREAU_REFUSED".to_owned()),
                    message: status.message().to_owned(),
                    wechat_errcode: info
                        .as_ref()
                        .and_then(|i| i.metadata.get("wechat_errcode"))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0),
                    wechat_errmsg: String::new(),
                    wechat_rid: info.as_ref().and_then(|i| i.metadata.get("wechat_rid")).cloned().unwrap_or_default(),
                    at: now,
                };
                tracing::warn!(order = %job.key, reason = %failure.reason, "the bureau refused the bill");
                self.store.finish_job(&job.key, &self.holder, &JobOutcome::Failed(failure), now).await
            }
        }
    }

    /// IssueBill or GetBill, in a client span whose context goes with the call.
    async fn call_bureau(
        &self,
        job: &Job,
        authorization: &Authorization,
        pdf: Bytes,
    ) -> Result<Option<pb::Bill>, tonic::Status> {
        let method = match job.phase {
            JobPhase::Issue => "fiscalbill.bureau.v1.BureauService/IssueBill",
            JobPhase::Poll => "fiscalbill.bureau.v1.BureauService/GetBill",
        };
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = method,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let call = async {
            let mut client = self.bureau.client();
            match job.phase {
                JobPhase::Issue => {
                    let mut request = tonic::Request::new(pb::IssueBillRequest {
                        unit_appid: job.key.unit_appid.clone(),
                        order_id: job.key.order_id.clone(),
                        content: Some(authorization.bill.to_proto()),
                        pdf,
                        request_id: request_id(&job.key),
                        authorized_appid: authorization.authorized_appid.clone(),
                    });
                    request.set_timeout(self.bureau.issue_deadline);
                    TraceContext::for_call(&authorization.trace).inject(request.metadata_mut());
                    client.issue_bill(request).await.map(|r| r.into_inner().bill)
                }
                JobPhase::Poll => {
                    let mut request = tonic::Request::new(pb::GetBillRequest {
                        unit_appid: job.key.unit_appid.clone(),
                        order_id: job.key.order_id.clone(),
                    });
                    request.set_timeout(Duration::from_secs(5));
                    TraceContext::for_call(&authorization.trace).inject(request.metadata_mut());
                    client.get_bill(request).await.map(|r| r.into_inner().bill)
                }
            }
        };
        let answer = call.instrument(span.clone()).await;
        match &answer {
            Ok(_) => span.record("rpc.grpc.status_code", 0),
            Err(status) => {
                span.record("otel.status_code", "ERROR");
                span.record("rpc.grpc.status_code", status.code() as i32)
            }
        };
        answer
    }

    async fn record_bill(&self, job: &Job, bill: &pb::Bill, now: i64) -> Result<(), sqlx::Error> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match pb::BillState::try_from(bill.state) {
            Ok(pb::BillState::Inserted) => {
                tracing::info!(order = %job.key, "bill issued");
                let outcome = JobOutcome::Issued {
                    card_id: non_empty(&bill.card_id),
                    card_code: non_empty(&bill.card_code),
                    openid: non_empty(&bill.openid),
                };
                self.store.finish_job(&job.key, &self.holder, &outcome, now).await
            }
            Ok(pb::BillState::Failed) => {
                let failure = Failure::from_proto(bill.failure.clone().unwrap_or_default(), now);
                tracing::warn!(order = %job.key, reason = %failure.reason, "the bureau could not issue the bill");
                self.store.finish_job(&job.key, &self.holder, &JobOutcome::Failed(failure), now).await
            }
            _ => {
                let next = now + self.config.progress_poll_ms as i64;
                self.store.job_in_progress(&job.key, &self.holder, next, now).await
            }
        }
    }

    async fn retry(&self, job: &Job, message: &str, reason: &str, now: i64) -> Result<(), sqlx::Error> {
        let delay = jittered(
            Duration::from_millis(self.config.retry_base_ms),
            Duration::from_millis(self.config.retry_max_ms),
            (job.attempts + 1).clamp(1, 1000) as u32,
        )
        .as_millis() as i64;
        tracing::info!(order = %job.key, attempt = job.attempts + 1, delay_ms = delay, %message, "IssueBill not delivered; retrying later");
        let failure = Failure { reason: reason.to_owned(), message: message.to_owned(), at: now, ..Failure::default() };
        self.store.retry_job(&job.key, &self.holder, now + delay, &failure, now).await
    }
}

/// Codes worth retrying: the bureau is down, overloaded, or the call timed out.
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
    )
}

fn code_name(code: Code) -> String {
    format!("{code:?}").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_stable_and_short() {
        let key = OrderKey { unit_appid: "wxc0000000000000c1".into(), order_id: "o".repeat(64) };
        assert_eq!(request_id(&key), request_id(&key.clone()));
        assert_eq!(request_id(&key).len(), 32);
        let other = OrderKey { order_id: "p".into(), ..key.clone() };
        assert_ne!(request_id(&key), request_id(&other));
    }

    #[test]
    fn only_transient_codes_are_retried() {
        assert!(retryable(&tonic::Status::unavailable("x")));
        assert!(retryable(&tonic::Status::deadline_exceeded("x")));
        assert!(!retryable(&tonic::Status::invalid_argument("x")));
        assert!(!retryable(&tonic::Status::failed_precondition("x")));
    }
}
