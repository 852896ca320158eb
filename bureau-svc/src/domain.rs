//! The bureau's validated domain model: what handlers convert requests into and the store
//! reads and writes.

use bytes::Bytes;
use fiscalbill_common::bill::BillContent;
use fiscalbill_common::paging::Cursor;
use fiscalbill_common::trace::TraceContext;
use sha2::{Digest, Sha256};
use wechat::image::LogoImage;
use wechat::types::ReimburseStatus;

/// A bill's identity: the collection unit and its order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BillKey {
    pub unit_appid: String,
    pub order_id: String,
}

impl std::fmt::Display for BillKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.unit_appid, self.order_id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillState {
    Accepted,
    PdfUploaded,
    PdfChecked,
    Inserted,
    Failed,
}

impl BillState {
    pub const ALL: [BillState; 5] =
        [BillState::Accepted, BillState::PdfUploaded, BillState::PdfChecked, BillState::Inserted, BillState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            BillState::Accepted => "accepted",
            BillState::PdfUploaded => "pdf_uploaded",
            BillState::PdfChecked => "pdf_checked",
            BillState::Inserted => "inserted",
            BillState::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    pub fn is_final(self) -> bool {
        matches!(self, BillState::Inserted | BillState::Failed)
    }

    /// The states of bills still being issued (the worker's and the leases' concern).
    pub fn open() -> Vec<BillState> {
        Self::ALL.into_iter().filter(|state| !state.is_final()).collect()
    }

    /// The state after `event`, or None when this state does not allow it: the one table of a
    /// bill's lifecycle, read by the issuer, the store (as the "from" set of each change) and
    /// the tests.
    pub fn after(self, event: BillEvent) -> Option<BillState> {
        use BillState::*;
        let next = match (self, event) {
            (Accepted, BillEvent::PdfUploaded) => PdfUploaded,
            (PdfUploaded, BillEvent::PdfChecked) => PdfChecked,
            (PdfChecked, BillEvent::Inserted) => Inserted,
            (PdfUploaded | PdfChecked, BillEvent::PdfLost) => Accepted,
            (Accepted | PdfUploaded | PdfChecked, BillEvent::Failed) => Failed,
            (Accepted | PdfUploaded | PdfChecked, BillEvent::Stayed) => self,
            (Failed, BillEvent::Restarted) => Accepted,
            _ => return None,
        };
        Some(next)
    }
}

/// What can happen to a bill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillEvent {
    /// setpdf took the PDF.
    PdfUploaded,
    /// getpdf confirmed the uploaded PDF.
    PdfChecked,
    /// insertbill put the bill into the payer's card package.
    Inserted,
    /// WeChat no longer has the uploaded PDF (expired or gone): upload again.
    PdfLost,
    /// A step failed for good.
    Failed,
    /// No change of state: a step will be tried again, or an insert is about to be sent.
    Stayed,
    /// A repeated IssueBill starts a failed bill over.
    Restarted,
}

impl BillEvent {
    pub const ALL: [BillEvent; 7] = [
        BillEvent::PdfUploaded,
        BillEvent::PdfChecked,
        BillEvent::Inserted,
        BillEvent::PdfLost,
        BillEvent::Failed,
        BillEvent::Stayed,
        BillEvent::Restarted,
    ];

    /// The states that allow this event: the "from" set of the store's update.
    pub fn sources(self) -> Vec<BillState> {
        BillState::ALL.into_iter().filter(|state| state.after(self).is_some()).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdfOrigin {
    Supplied,
    Rendered,
}

impl PdfOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            PdfOrigin::Supplied => "supplied",
            PdfOrigin::Rendered => "rendered",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "supplied" => Some(PdfOrigin::Supplied),
            "rendered" => Some(PdfOrigin::Rendered),
            _ => None,
        }
    }
}

pub use fiscalbill_common::bill::Failure;

/// A collection unit and its bill template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub appid: String,
    pub payee: String,
    /// The logo's URL on WeChat's image host; empty while a logo image is not uploaded yet.
    pub logo_url: String,
    /// The SHA-256 of the logo image, when the logo was given as an image.
    pub logo_sha256: Option<String>,
    pub card_id: Option<String>,
    pub template_created_at: i64,
}

/// A unit's logo as given: a URL on WeChat's image host, or an image to upload through
/// WeChat's image upload before the template is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logo {
    Url(String),
    Image { image: LogoImage, sha256: String },
}

impl Logo {
    pub fn image(image: LogoImage) -> Self {
        let sha256 = hex::encode(Sha256::digest(image.bytes()));
        Logo::Image { image, sha256 }
    }

    /// Whether `unit` was recorded with this very logo.
    pub fn is_that_of(&self, unit: &Unit) -> bool {
        match self {
            Logo::Url(url) => unit.logo_sha256.is_none() && &unit.logo_url == url,
            Logo::Image { sha256, .. } => unit.logo_sha256.as_ref() == Some(sha256),
        }
    }
}

/// The s_pappid and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpApp {
    pub bureau_appid: String,
    pub s_pappid: String,
    pub invoice_url: String,
}

/// A bill as stored (without its PDF bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bill {
    pub key: BillKey,
    pub authorized_appid: String,
    pub request_id: Option<String>,
    /// The bill's W3C trace and the span its later work continues under.
    pub trace: TraceContext,
    pub state: BillState,
    pub content: BillContent,
    pub pdf_sha256: String,
    pub pdf_size: i64,
    /// SHA-256 of the certificate that signed the PDF.
    pub signer_sha256: Option<String>,
    /// SHA-256 of the PDF as supplied, when the bureau signed it (pdf_sha256 is the signed one).
    pub supplied_sha256: Option<String>,
    pub pdf_origin: PdfOrigin,
    pub card_id: Option<String>,
    pub s_media_id: Option<String>,
    pub media_expires_at: i64,
    pub insert_pending: bool,
    pub card_code: Option<String>,
    pub openid: Option<String>,
    pub reimburse_status: Option<ReimburseStatus>,
    pub failure: Option<Failure>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub never_authorized_since: i64,
    /// Consecutive inserts answered "invalid card status".
    pub card_status_failures: i64,
    /// Uploads whose copy at WeChat differed from the PDF sent.
    pub pdf_mismatches: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub inserted_at: i64,
}

/// A bill to record, validated.
#[derive(Clone, Debug)]
pub struct NewBill {
    pub key: BillKey,
    pub authorized_appid: String,
    pub request_id: Option<String>,
    pub trace: TraceContext,
    pub content: BillContent,
    pub pdf: Bytes,
    pub pdf_sha256: String,
    pub pdf_origin: PdfOrigin,
    pub signer_sha256: Option<String>,
    pub supplied_sha256: Option<String>,
}

/// An IssueBill call after validation; the PDF is rendered later if absent.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub key: BillKey,
    pub authorized_appid: String,
    pub request_id: Option<String>,
    pub trace: TraceContext,
    pub content: BillContent,
    pub pdf: Option<Bytes>,
}

/// Filters and position of ListBills.
#[derive(Clone, Debug, Default)]
pub struct BillQuery {
    pub unit_appid: Option<String>,
    pub state: Option<BillState>,
    pub limit: i64,
    pub after: Option<Cursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_table() {
        use BillState::*;
        assert_eq!(BillEvent::PdfUploaded.sources(), [Accepted]);
        assert_eq!(BillEvent::PdfChecked.sources(), [PdfUploaded]);
        assert_eq!(BillEvent::Inserted.sources(), [PdfChecked]);
        assert_eq!(BillEvent::PdfLost.sources(), [PdfUploaded, PdfChecked]);
        assert_eq!(BillEvent::Failed.sources(), BillState::open());
        assert_eq!(BillEvent::Stayed.sources(), BillState::open());
        assert_eq!(BillEvent::Restarted.sources(), [Failed]);
        assert_eq!(BillState::open(), [Accepted, PdfUploaded, PdfChecked]);
        // An inserted bill is final; a failed one only starts over.
        for event in BillEvent::ALL {
            assert_eq!(Inserted.after(event), None, "{event:?}");
            assert_eq!(Failed.after(event), (event == BillEvent::Restarted).then_some(Accepted), "{event:?}");
        }
        assert_eq!(Accepted.after(BillEvent::Inserted), None, "no insert before the PDF is checked");
    }
}
