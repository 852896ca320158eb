//! Issuing a bill: a resumable state machine, accepted → pdf_uploaded → pdf_checked →
//! inserted | failed. A step's result is stored before the bill is driven on, and the insert's
//! pending mark before the insert is sent, so a crash resumes from the last stored state and
//! never repeats an insert. A step runs the upload, the check and the insert one after the other
//! while each succeeds (one record for the upload and the check, with the pending mark; one
//! for the insert's answer): a crash before a record repeats only an upload or a check, which
//! WeChat allows (each setpdf gives a new media id; getpdf only reads).
//!
//! A bill is driven by one replica at a time (a lease on its row): first by the IssueBill call
//! that recorded it, later by the background worker for retries and for bills left behind by
//! a crash or a shutdown.
//!
//! A lost insert answer (sent, no answer: timeout or dropped connection) is recorded as
//! `insert_pending` before the insert is sent and kept until an answer arrives. The insert is
//! then sent again with the same order and billing numbers: success means the first never
//! landed; "billing numbers repeated" or "invalid card status" means it did, so the bill is
//! INSERTED (its card code unknown, since that answer was lost). A bill is thus
//! never inserted twice and never reported inserted when it was not.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fiscalbill_common::db::now_millis;
use fiscalbill_common::pdf_store::CHUNK_BYTES;
use fiscalbill_common::status::ApiError;
use fiscalbill_common::telemetry;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore, watch};
use wechat::backoff::jittered;
use wechat::pdf_check::PdfCheck;
use wechat::reachability::Reachability;
use wechat::types::{InsertBillRequest, InvoiceUserData, ReimburseStatus};
use wechat::{CallError, Credentials, ErrorKind};

use crate::config::IssuingConfig;
use crate::domain::{Bill, BillEvent, BillKey, BillState, Failure, IssueRequest, NewBill, PdfOrigin};
use crate::error::BureauError;
use crate::failures::{Disposition, RETRIES_EXHAUSTED, classify, failure_of, invalid_card_status, reissuable};
use crate::pdf::render::{BillHeader, render};
use crate::pdf::sign::BillSigner;
use crate::spappid::SpAppIds;
use crate::store::{BillsInTheWay, Change, Lease, Store};
use crate::templates::Templates;

/// WeChat destroys an uploaded PDF after 3 days; re-upload an hour before.
const MEDIA_LIFETIME_MS: i64 = 3 * 86_400_000 - 3_600_000;

pub struct Issuer {
    store: Store,
    credentials: Arc<Credentials>,
    templates: Arc<Templates>,
    sp_app_ids: Arc<SpAppIds>,
    config: IssuingConfig,
    bureau_appid: String,
    bureau_name: String,
    holder: String,
    /// Whether WeChat answers this process's calls at all.
    reachability: Arc<Reachability>,
    /// Signs the bills this bureau renders...
    signer: Option<Arc<BillSigner>>,
    /// ...and, with this, the PDFs units supply.
    sign_supplied: bool,
    /// Bills being driven in this process.
    driving: Mutex<HashSet<BillKey>>,
    /// Where a drive publishes its bill when it ends (final, waiting for a retry, or the lease
    /// lost: None), for the IssueBill calls waiting on it.
    waiters: Mutex<HashMap<BillKey, watch::Sender<Option<Bill>>>>,
    accepting: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Bounds the bills the background worker drives at once.
    worker_slots: Arc<Semaphore>,
}

/// A bill just inserted, leased to this replica, and its PDF when small enough to keep at
/// hand until the upload.
struct Leased {
    bill: Bill,
    pdf: Option<Bytes>,
}

impl Issuer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        credentials: Arc<Credentials>,
        templates: Arc<Templates>,
        sp_app_ids: Arc<SpAppIds>,
        config: IssuingConfig,
        bureau_appid: String,
        bureau_name: String,
        holder: String,
        reachability: Arc<Reachability>,
        signer: Option<Arc<BillSigner>>,
        sign_supplied: bool,
    ) -> Self {
        let workers = config.workers.max(1);
        Self {
            store,
            credentials,
            templates,
            sp_app_ids,
            config,
            bureau_appid,
            bureau_name,
            holder,
            reachability,
            signer,
            sign_supplied,
            driving: Mutex::default(),
            waiters: Mutex::default(),
            accepting: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            worker_slots: Arc::new(Semaphore::new(workers)),
        }
    }

    /// The signer for supplied PDFs, when `[signing] sign_supplied` asks for it.
    fn supplied_signer(&self) -> Option<&BillSigner> {
        self.signer.as_deref().filter(|_| self.sign_supplied)
    }

    fn lease_ms(&self) -> i64 {
        self.config.lease_secs as i64 * 1000
    }

    /// IssueBill: records the bill (or finds the one recorded before), drives it, and returns
    /// its state once final or when `wait` runs out.
    pub async fn issue(self: &Arc<Self>, mut request: IssueRequest, wait: Duration) -> Result<Bill, BureauError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(BureauError::ShuttingDown);
        }
        // The supplied PDF is needed only until it is stored; from then on its digest stands
        // for it, so that a large PDF is not held in memory while the bill is issued.
        let supplied_pdf = request.pdf.take();
        let unit = self
            .templates
            .unit(&request.key.unit_appid)
            .await?
            .ok_or_else(|| BureauError::UnitNotOnboarded(request.key.unit_appid.clone()))?;

        // No read first: the bill's insert finds a bill in the way (its order, request_id and
        // billing number are each unique), and only then is it read. A repeat call (a caller's
        // retry) renders or signs its PDF before it is found; a new bill, the usual call, saves
        // a round trip.
        //
        // The PDF to store and upload, its digest where already known, and the supplied PDF's.
        let (pdf, pdf_origin, signer_sha256, pdf_sha256, supplied_sha256) = match supplied_pdf {
            Some(pdf) => match self.supplied_signer() {
                Some(signer) => {
                    // The PDF is a slice of the request's buffer: copied out once, the buffer
                    // goes, and signing appends to the copy.
                    let supplied_len = pdf.len();
                    let signed = signer
                        .sign_supplied(Vec::from(pdf), &self.bureau_name, now_millis() / 1000)
                        .map_err(BureauError::Render)?;
                    // WeChat refuses a PDF over its limit (40006): say so now, not at setpdf.
                    if signed.pdf.len() > self.config.pdf_max_bytes {
                        return Err(BureauError::Invalid(ApiError::invalid_field(
                            "INVALID_ARGUMENT",
                            "pdf",
                            format!(
                                "is {} bytes, {} with the bureau's signature, more than the limit of {}: supply \
                                 a PDF at least {} bytes smaller",
                                supplied_len,
                                signed.pdf.len(),
                                self.config.pdf_max_bytes,
                                signed.pdf.len() - self.config.pdf_max_bytes
                            ),
                        )));
                    }
                    let fingerprint = Some(signer.fingerprint().to_owned());
                    let supplied = Some(signed.original_sha256);
                    (Bytes::from(signed.pdf), PdfOrigin::Supplied, fingerprint, Some(signed.sha256), supplied)
                }
                None => {
                    let sha256 = hex::encode(Sha256::digest(&pdf));
                    (pdf, PdfOrigin::Supplied, None, Some(sha256.clone()), Some(sha256))
                }
            },
            None => {
                let header = BillHeader {
                    title: &self.config.bill_title,
                    bureau: &self.bureau_name,
                    payee: &unit.payee,
                    order_id: &request.key.order_id,
                };
                let signer = self.signer.as_deref().map(|signer| (signer, now_millis() / 1000));
                let rendered = Bytes::from(render(&header, &request.content, signer).map_err(BureauError::Render)?);
                if rendered.len() > self.config.pdf_max_bytes {
                    return Err(BureauError::Render(format!(
                        "the rendered PDF has {} bytes, more than pdf_max_bytes",
                        rendered.len()
                    )));
                }
                let fingerprint = self.signer.as_ref().map(|s| s.fingerprint().to_owned());
                (rendered, PdfOrigin::Rendered, fingerprint, None, None)
            }
        };
        let new = NewBill {
            key: request.key.clone(),
            authorized_appid: request.authorized_appid.clone(),
            request_id: request.request_id.clone(),
            trace: request.trace.clone(),
            content: request.content.clone(),
            // The digest of what is stored and uploaded; a supplied PDF the bureau signed keeps
            // the digest it came with for repeats.
            pdf_sha256: pdf_sha256.unwrap_or_else(|| hex::encode(Sha256::digest(&pdf))),
            supplied_sha256: supplied_sha256.clone().filter(|_| signer_sha256.is_some()),
            pdf,
            pdf_origin,
            signer_sha256,
        };
        let now = now_millis();
        let inserted = self.store.insert_bill(&new, now, &self.holder, now + self.lease_ms()).await;
        // A small PDF goes to the first upload as it is (no read back); a large one is not held
        // while the bill is issued.
        let small_pdf = (new.pdf.len() <= CHUNK_BYTES).then(|| new.pdf.clone());
        drop(new);
        let bill = match inserted {
            Ok(bill) => bill,
            Err(error) => {
                // A call before (or a concurrent one) recorded the same order, request_id or
                // billing number.
                let found = self.bills_in_the_way(&request).await?;
                if let Some(existing) = &found.request_id
                    && existing.key != request.key
                {
                    return Err(BureauError::RequestIdReused(request.request_id.clone().unwrap_or_default()));
                }
                // The same call again, found by its request_id or its order.
                if let Some(existing) = found.request_id.or(found.order) {
                    return self.repeat(existing, &request, supplied_sha256.as_deref(), wait).await;
                }
                if let Some(other) = found.billing_number {
                    return Err(billing_taken(&request, other.key));
                }
                return Err(error.into());
            }
        };
        tracing::info!(bill = %request.key, origin = pdf_origin.as_str(), "bill accepted");
        let published = self.subscribe(&request.key);
        // Leased to this replica by its insert: driven without claiming it again.
        self.spawn_drive_with(request.key.clone(), None, Some(Leased { bill, pdf: small_pdf }));
        self.wait_for(&request.key, wait, published, Known::JustAccepted).await
    }

    async fn bills_in_the_way(&self, request: &IssueRequest) -> Result<BillsInTheWay, BureauError> {
        let content = &request.content;
        Ok(self
            .store
            .bills_in_the_way(&request.key, request.request_id.as_deref(), &content.billing_no, &content.billing_code)
            .await?)
    }

    /// A repeat of an IssueBill call (`supplied_sha256`: the digest of the PDF it supplied):
    /// the stored bill, driven on if needed. A failure whose cause can be fixed (authorization,
    /// permissions, quota) starts over.
    async fn repeat(
        self: &Arc<Self>,
        existing: Bill,
        request: &IssueRequest,
        supplied_sha256: Option<&str>,
        wait: Duration,
    ) -> Result<Bill, BureauError> {
        let same_pdf = match supplied_sha256 {
            Some(sha256) => {
                existing.pdf_origin == PdfOrigin::Supplied
                    && sha256 == existing.supplied_sha256.as_deref().unwrap_or(&existing.pdf_sha256)
            }
            None => existing.pdf_origin == PdfOrigin::Rendered,
        };
        if existing.content != request.content || existing.authorized_appid != request.authorized_appid || !same_pdf {
            return Err(BureauError::OrderConflict(existing.key));
        }
        match existing.state {
            BillState::Inserted => Ok(existing),
            BillState::Failed => {
                if existing.failure.as_ref().is_some_and(reissuable)
                    && self.store.restart_failed(&existing.key, now_millis()).await?
                {
                    tracing::info!(bill = %existing.key, "failed bill issued again");
                    let published = self.subscribe(&existing.key);
                    self.spawn_drive(existing.key.clone());
                    return self.wait_for(&existing.key, wait, published, Known::Nothing).await;
                }
                Ok(existing)
            }
            BillState::Accepted | BillState::PdfUploaded | BillState::PdfChecked => {
                let published = self.subscribe(&existing.key);
                self.spawn_drive(existing.key.clone());
                self.wait_for(&existing.key, wait, published, Known::Nothing).await
            }
        }
    }

    /// What the drive of `key` will publish, from now on (subscribe before the drive starts).
    fn subscribe(&self, key: &BillKey) -> watch::Receiver<Option<Bill>> {
        self.waiters.lock().unwrap().entry(key.clone()).or_insert_with(|| watch::channel(None).0).subscribe()
    }

    fn publish(&self, key: &BillKey, bill: Option<&Bill>) {
        if let Some(waiters) = self.waiters.lock().unwrap().get(key) {
            waiters.send_replace(bill.cloned());
        }
    }

    /// Waits until the bill is final, waits for a retry, or `wait` runs out. The bill comes
    /// from its drive in this process when that ends; another replica may be driving it, so
    /// the store is read too, at least every 200 ms.
    async fn wait_for(
        &self,
        key: &BillKey,
        wait: Duration,
        mut published: watch::Receiver<Option<Bill>>,
        known: Known,
    ) -> Result<Bill, BureauError> {
        let deadline = tokio::time::Instant::now() + wait;
        // A bill just accepted is waiting for its drive: nothing to read before the drive
        // publishes or the first pause ends.
        let mut read = known != Known::JustAccepted;
        let mut from_drive: Option<Bill> = None;
        let result = loop {
            let bill = match from_drive.take() {
                Some(bill) => Some(bill),
                None if read => match self.store.bill(key).await {
                    Ok(Some(bill)) => Some(bill),
                    Ok(None) => break Err(BureauError::BillNotFound(key.clone())),
                    Err(error) => break Err(error.into()),
                },
                None => None,
            };
            read = true;
            // A bill waiting for a retry (WeChat failed a step) is answered as it stands: its
            // caller polls GetBill instead of holding the call (and its own slot) for the wait.
            if let Some(bill) = bill
                && (bill.state.is_final()
                    || bill.next_attempt_at > now_millis()
                    || tokio::time::Instant::now() >= deadline)
            {
                break Ok(bill);
            }
            // WeChat does not answer: say so now rather than at the deadline. The bill is kept
            // and driven on in the background.
            if let Some(why) = self.reachability.unreachable() {
                break Err(BureauError::WechatUnreachable { key: key.clone(), why });
            }
            let pause = deadline.min(tokio::time::Instant::now() + Duration::from_millis(200));
            tokio::select! {
                Ok(()) = published.changed() => from_drive = published.borrow_and_update().clone(),
                () = tokio::time::sleep_until(pause) => {}
            }
        };
        let mut waiters = self.waiters.lock().unwrap();
        if waiters.get(key).is_some_and(|waiters| waiters.receiver_count() <= 1) {
            waiters.remove(key);
        }
        result
    }

    /// Drives the bill in a task of its own (it outlives the RPC), unless this process
    /// already drives it.
    fn spawn_drive(self: &Arc<Self>, key: BillKey) {
        self.spawn_drive_with(key, None, None);
    }

    /// `leased`: the bill, already leased to this replica (just inserted); otherwise the drive
    /// claims it first.
    fn spawn_drive_with(
        self: &Arc<Self>,
        key: BillKey,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        leased: Option<Leased>,
    ) {
        if !self.driving.lock().unwrap().insert(key.clone()) {
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let issuer = self.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("drive", unit_appid = %key.unit_appid, order_id = %key.order_id, trace_id = tracing::field::Empty);
            // Exported, the drive is a child of the bill's IssueBill span (read first, only then).
            if telemetry::exporting()
                && let Ok(Some(trace)) = issuer.store.trace(&key).await
            {
                trace.continue_in(&span);
            }
            if let Err(error) = tracing::Instrument::instrument(issuer.drive(&key, leased), span).await {
                tracing::warn!(bill = %key, %error, "driving the bill stopped; the worker resumes it");
            }
            issuer.driving.lock().unwrap().remove(&key);
            drop(permit);
            if issuer.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                issuer.idle.notify_waiters();
            }
        });
    }

    /// Takes the bill's lease (unless `leased` is the bill, already leased to this replica) and
    /// runs its due steps until it is final, waiting for a retry, or the service is shutting
    /// down; then gives the lease back (with the last step's change when there is one). The
    /// bill comes back from each write: no read between steps.
    async fn drive(&self, key: &BillKey, leased: Option<Leased>) -> Result<(), BureauError> {
        let (mut bill, mut pdf) = match leased {
            Some(Leased { bill, pdf }) => (bill, pdf),
            None => {
                let now = now_millis();
                match self.store.claim_bill(key, &self.holder, now, now + self.lease_ms()).await? {
                    Some(bill) => (bill, None),
                    None => return Ok(()),
                }
            }
        };
        tracing::Span::current().record("trace_id", bill.trace.trace_id.as_str());
        loop {
            if bill.state.is_final() || bill.next_attempt_at > now_millis() || !self.accepting.load(Ordering::SeqCst) {
                self.store.release_bill(key, &self.holder).await?;
                return Ok(());
            }
            let change = self.step(&bill, pdf.take()).await?;
            let now = now_millis();
            // A final state or a retry ends the drive: the lease goes with the change.
            let last = change.state.is_final() || change.next_attempt_at > now;
            let lease = if last { Lease::Release } else { Lease::Until(now + self.lease_ms()) };
            let advanced = self.store.advance(key, &self.holder, &change, now, lease).await?;
            // Waiters care about final states and retries (and re-read every 200 ms anyway).
            if last || advanced.is_none() {
                self.publish(key, advanced.as_ref());
            }
            let Some(advanced) = advanced else {
                tracing::warn!(bill = %key, "lost the bill's lease; another replica drives it");
                return Ok(());
            };
            if change.state != bill.state {
                tracing::info!(bill = %key, from = bill.state.as_str(), to = change.state.as_str(), "bill advanced");
            }
            if last {
                return Ok(());
            }
            bill = advanced;
        }
    }

    /// One step of the state machine: the WeChat calls due from the bill's state, one after
    /// the other while each moves the bill forward (an upload goes on to its check, a check to
    /// the insert), recorded together when the step ends. WeChat failures become a retry or a
    /// failure in the returned change; only storage errors escape. A crash before the record
    /// repeats the step's upload or check, never an insert: the insert's pending mark is stored
    /// before it is sent. The step also ends once half the lease is spent, so that the record
    /// renews it in time.
    /// `pdf`: the bill's PDF when the caller has it at hand (for an upload); the PDF uploaded
    /// stays at hand for the check that follows it.
    async fn step(&self, bill: &Bill, mut pdf: Option<Bytes>) -> Result<Change, BureauError> {
        let started = now_millis();
        let mut change = Change::from(bill);
        loop {
            let now = now_millis();
            let before = change.state;
            let media_expired = change.s_media_id.is_none() || change.media_expires_at <= now;
            let outcome = match change.state {
                BillState::Accepted => self.upload(bill, &mut pdf, &mut change, now).await,
                BillState::PdfUploaded | BillState::PdfChecked if media_expired => {
                    tracing::info!(bill = %bill.key, "uploaded PDF expired at WeChat; uploading again");
                    change.apply(BillEvent::PdfLost);
                    change.s_media_id = None;
                    change.media_expires_at = 0;
                    Ok(())
                }
                BillState::PdfUploaded => self.check(bill, pdf.as_deref(), &mut change).await,
                BillState::PdfChecked => {
                    // Checked: the PDF is not needed again.
                    pdf = None;
                    self.insert(bill, &mut change, now).await
                }
                BillState::Inserted | BillState::Failed => Ok(()),
            };
            match outcome {
                Ok(()) => {
                    change.last_error = None;
                    change.next_attempt_at = now;
                    change.never_authorized_since = 0;
                    change.card_status_failures = 0;
                }
                Err(BureauError::Storage(error)) => return Err(BureauError::Storage(error)),
                Err(error) => return Ok(self.after_failure(bill, change, &error, now)),
            }
            let forward = matches!(
                (before, change.state),
                (BillState::Accepted, BillState::PdfUploaded) | (BillState::PdfUploaded, BillState::PdfChecked)
            );
            if !forward || now_millis() - started > self.lease_ms() / 2 {
                return Ok(change);
            }
        }
    }

    /// Uploads the PDF at hand, or the stored one, which is then at hand.
    async fn upload(
        &self,
        bill: &Bill,
        at_hand: &mut Option<Bytes>,
        change: &mut Change,
        now: i64,
    ) -> Result<(), BureauError> {
        let (card_id, _) = self.templates.ensure(&bill.key.unit_appid).await?;
        let pdf = match at_hand {
            Some(pdf) => pdf,
            None => at_hand.insert(
                self.store
                    .pdf(&bill.key)
                    .await?
                    .ok_or_else(|| BureauError::Render("the stored PDF is missing".to_owned()))?,
            ),
        };
        let s_media_id = self.credentials.account(&self.bureau_appid).set_pdf(pdf).await?;
        change.apply(BillEvent::PdfUploaded);
        change.card_id = Some(card_id);
        change.s_media_id = Some(s_media_id);
        change.media_expires_at = now + MEDIA_LIFETIME_MS;
        Ok(())
    }

    /// The guide's check of the upload: getpdf gives the PDF's URL at WeChat, and the file
    /// there must be the one uploaded: byte for byte the PDF `uploaded` when it is at hand (the
    /// step that uploaded it), else the same SHA-256. A different file is uploaded again once;
    /// a second difference fails the bill.
    async fn check(&self, bill: &Bill, uploaded: Option<&[u8]>, change: &mut Change) -> Result<(), BureauError> {
        let media = change.s_media_id.clone().unwrap_or_default();
        let link = match self.credentials.account(&self.bureau_appid).get_pdf(&media).await {
            Ok(link) => link,
            // WeChat no longer knows the media: upload again.
            Err(CallError::Wechat(error)) if error.kind() == ErrorKind::MediaGone => {
                change.apply(BillEvent::PdfLost);
                change.s_media_id = None;
                change.media_expires_at = 0;
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let limit = self.config.pdf_max_bytes + 64 * 1024;
        let checked =
            self.credentials.client().check_pdf(&link.pdf_url, limit, uploaded).await.map_err(CallError::from)?;
        let (sha256, size) = match checked {
            PdfCheck::Digest { sha256, size } if sha256 != bill.pdf_sha256 => (sha256, size),
            PdfCheck::Same | PdfCheck::Digest { .. } => {
                change.apply(BillEvent::PdfChecked);
                return Ok(());
            }
        };
        if change.pdf_mismatches == 0 {
            tracing::warn!(bill = %bill.key, size, "the PDF at WeChat differs from the one uploaded; uploading again");
            change.pdf_mismatches = 1;
            change.apply(BillEvent::PdfLost);
            change.s_media_id = None;
            change.media_expires_at = 0;
            return Ok(());
        }
        Err(BureauError::PdfMismatch { uploaded: bill.pdf_sha256.clone(), at_wechat: sha256 })
    }

    async fn insert(&self, bill: &Bill, change: &mut Change, now: i64) -> Result<(), BureauError> {
        // The insert must use the account that called seturl.
        self.sp_app_ids.get().await?;
        let was_pending = change.insert_pending;
        if !was_pending {
            let mut pending = change.clone();
            pending.insert_pending = true;
            let lease = Lease::Until(now + self.lease_ms());
            if self.store.advance(&bill.key, &self.holder, &pending, now, lease).await?.is_none() {
                return Err(BureauError::Busy("lost the bill's lease".to_owned()));
            }
            change.insert_pending = true;
            change.stored();
        }
        let request = &InsertBillRequest::new(
            bill.key.order_id.clone(),
            change.card_id.clone().unwrap_or_default(),
            bill.authorized_appid.clone(),
            InvoiceUserData {
                fee: bill.content.fee,
                title: bill.content.payer_title.clone(),
                billing_time: bill.content.billing_time,
                billing_no: bill.content.billing_no.clone(),
                billing_code: bill.content.billing_code.clone(),
                s_pdf_media_id: change.s_media_id.clone().unwrap_or_default(),
            },
        );
        let inserted = self.credentials.account(&self.bureau_appid).insert_bill(request).await;
        match inserted {
            Ok(inserted) => {
                change.apply(BillEvent::Inserted);
                change.card_code = Some(inserted.code);
                change.openid = Some(inserted.openid);
                change.reimburse_status = Some(ReimburseStatus::Init);
                change.insert_pending = false;
                change.inserted_at = now;
                Ok(())
            }
            Err(CallError::Wechat(error)) if was_pending && error.kind() == ErrorKind::BillingNumbersRepeated => {
                tracing::warn!(bill = %bill.key, errcode = error.errcode(), rid = error.rid(),
                    "an earlier insert whose answer was lost had landed: the bill is inserted, its card code unknown");
                change.apply(BillEvent::Inserted);
                change.reimburse_status = Some(ReimburseStatus::Init);
                change.insert_pending = false;
                change.inserted_at = now;
                change.failure = None;
                Ok(())
            }
            Err(CallError::Wechat(error)) if error.outcome_unknown() => Err(CallError::Wechat(error).into()),
            Err(error) => {
                // WeChat answered: this insert did not land. An earlier one whose answer was
                // lost still may have: only success or "billing numbers repeated" settles it.
                change.insert_pending = was_pending;
                Err(error.into())
            }
        }
    }

    /// Turns a failed step into a scheduled retry or a final failure.
    fn after_failure(&self, bill: &Bill, mut change: Change, error: &BureauError, now: i64) -> Change {
        let give_up_at = bill.created_at + self.config.give_up_after_secs as i64 * 1000;
        let disposition = classify(error, now, self.config.minute_quota_pause_ms as i64);
        let retry = |mut change: Change, min_delay_ms: i64| {
            change.attempts = bill.attempts + 1;
            change.last_error = Some(error.to_string());
            let delay = jittered(
                Duration::from_millis(self.config.retry_base_ms),
                Duration::from_millis(self.config.retry_max_ms),
                change.attempts.clamp(1, 1000) as u32,
            );
            let delay = (delay.as_millis() as i64).max(min_delay_ms);
            change.next_attempt_at = now + delay;
            tracing::info!(bill = %bill.key, attempt = change.attempts, delay_ms = delay, %error, "bill step failed; retrying later");
            change
        };
        let fail = |mut change: Change, failure: Failure| {
            tracing::warn!(bill = %bill.key, reason = %failure.reason, message = %failure.message, "bill failed");
            change.apply(BillEvent::Failed);
            change.attempts = bill.attempts + 1;
            change.failure = Some(failure);
            change.last_error = None;
            change
        };
        match disposition {
            Disposition::Fail(failure) => fail(change, failure),
            Disposition::NeverAuthorized => {
                let since = if change.never_authorized_since > 0 { change.never_authorized_since } else { now };
                change.never_authorized_since = since;
                if now - since >= self.config.never_authorized_retry_secs as i64 * 1000 {
                    fail(change, failure_of(error, now))
                } else {
                    retry(change, 0)
                }
            }
            Disposition::InvalidCardStatus => {
                change.card_status_failures += 1;
                if change.card_status_failures >= i64::from(self.config.invalid_card_status_tries.max(1)) {
                    let failures = change.card_status_failures;
                    let card_id = change.card_id.clone().unwrap_or_default();
                    fail(change, invalid_card_status(error, failures, &card_id, now))
                } else {
                    retry(change, 0)
                }
            }
            Disposition::Retry { .. } if now >= give_up_at => {
                let failure = Failure {
                    reason: RETRIES_EXHAUSTED.to_owned(),
                    message: format!("gave up after {} attempts; last error: {error}", bill.attempts + 1),
                    ..failure_of(error, now)
                };
                fail(change, failure)
            }
            Disposition::Retry { min_delay_ms } => retry(change, min_delay_ms),
        }
    }

    /// The background worker: every poll interval, leases due bills (retries, and bills left
    /// by crashed or stopped replicas) and drives them, a bounded number at a time.
    pub async fn run_worker(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.poll_interval_ms.max(10));
        while self.accepting.load(Ordering::SeqCst) {
            tokio::time::sleep(interval).await;
            let free = self.worker_slots.available_permits();
            if free == 0 || !self.accepting.load(Ordering::SeqCst) {
                continue;
            }
            let now = now_millis();
            let due = match self.store.claim_due(&self.holder, now, now + self.lease_ms(), free as i64).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "cannot look for due bills");
                    continue;
                }
            };
            for key in due {
                match self.worker_slots.clone().try_acquire_owned() {
                    Ok(permit) => self.spawn_drive_with(key, Some(permit), None),
                    Err(_) => {
                        let _ = self.store.release_bill(&key, &self.holder).await;
                    }
                }
            }
        }
    }

    /// Stops taking work; in-flight bills finish their current step (up to `grace`) and give
    /// their lease back, so a restart or another replica resumes them where they stopped.
    pub async fn shutdown(&self, grace: Duration) {
        self.accepting.store(false, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    in_flight = self.in_flight.load(Ordering::SeqCst),
                    "shutdown grace over; leases lapse by themselves"
                );
                break;
            }
        }
    }
}

fn billing_taken(request: &IssueRequest, other: BillKey) -> BureauError {
    BureauError::BillingNumberTaken {
        billing_no: request.content.billing_no.clone(),
        billing_code: request.content.billing_code.clone(),
        other,
    }
}

/// What an IssueBill call waiting for its bill knows of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// Just accepted: the drive has not moved it yet.
    JustAccepted,
    Nothing,
}
