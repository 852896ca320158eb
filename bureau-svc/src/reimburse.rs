//! Reimbursement status: UpdateBillStatus through WeChat updatestatus (CLOSURE and CANCEL are
//! final), and the `update_invoice_status` pushes WeChat sends when a reimbursing party
//! changes it.

use std::sync::Arc;

use fiscalbill_common::db::now_millis;
use sha2::{Digest, Sha256};
use wechat::Credentials;
use wechat::callback::StatusEvent;
use wechat::types::{ReimburseStatus, UpdateStatusRequest};

use crate::domain::{Bill, BillKey, BillState};
use crate::error::BureauError;
use crate::store::{EventOutcome, StatusEventRow, Store};

pub struct Reimburse {
    store: Store,
    credentials: Arc<Credentials>,
    bureau_appid: String,
}

impl Reimburse {
    pub fn new(store: Store, credentials: Arc<Credentials>, bureau_appid: String) -> Self {
        Self { store, credentials, bureau_appid }
    }

    /// Sets the status at WeChat, then records it. Setting the current status again is
    /// answered from the store without a call.
    pub async fn update(&self, key: &BillKey, status: ReimburseStatus) -> Result<Bill, BureauError> {
        let bill = self.store.bill(key).await?.ok_or_else(|| BureauError::BillNotFound(key.clone()))?;
        if bill.state != BillState::Inserted {
            return Err(BureauError::BillNotInserted(key.clone()));
        }
        let (Some(card_id), Some(code)) = (bill.card_id.clone(), bill.card_code.clone()) else {
            return Err(BureauError::CardCodeUnknown(key.clone()));
        };
        let current = bill.reimburse_status.unwrap_or(ReimburseStatus::Init);
        if current == status {
            return Ok(bill);
        }
        if !current.can_change_to(status) {
            return Err(BureauError::StatusFinal(key.clone(), current));
        }
        let request = &UpdateStatusRequest { card_id, code, reimburse_status: status };
        self.credentials.account(&self.bureau_appid).update_status(request).await?;
        let now = now_millis();
        if !self.store.set_reimburse_status(key, bill.reimburse_status, status, now / 1000, now).await? {
            tracing::warn!(bill = %key, "the status changed meanwhile (a push); keeping the newer one");
        }
        tracing::info!(bill = %key, status = status.as_str(), "reimbursement status updated");
        Ok(self.store.bill(key).await?.expect("the bill exists"))
    }

    /// Records a verified `update_invoice_status` push once, applying it to its bill.
    pub async fn record_push(&self, event: &StatusEvent, plaintext: &[u8]) -> Result<EventOutcome, BureauError> {
        let Some(status) = ReimburseStatus::parse(&event.status) else {
            tracing::warn!(status = %event.status, "push with an unknown reimbursement status ignored");
            return Ok(EventOutcome::Recorded);
        };
        // WeChat's retries and replays carry the same values: they share one key.
        let digest = Sha256::digest(
            format!("{}|{}|{}|{}|{}", event.openid, event.create_time, event.card_id, event.code, event.status)
                .as_bytes(),
        );
        let row = StatusEventRow {
            dedupe_key: &hex::encode(digest),
            openid: &event.openid,
            card_id: &event.card_id,
            code: &event.code,
            status,
            create_time: event.create_time,
            body: &String::from_utf8_lossy(plaintext),
        };
        let outcome = self.store.record_status_event(&row, now_millis()).await?;
        tracing::info!(card_id = %event.card_id, code = %event.code, status = %event.status, ?outcome, "status push");
        Ok(outcome)
    }
}
