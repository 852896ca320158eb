//! collection-svc's validated domain model.

use bytes::Bytes;
use fiscalbill_common::bill::BillContent;
use fiscalbill_common::paging::Cursor;
use wechat::types::AuthSource;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderKey {
    pub unit_appid: String,
    pub order_id: String,
}

impl std::fmt::Display for OrderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.unit_appid, self.order_id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthState {
    Pending,
    Authorized,
    Issuing,
    Issued,
    IssueFailed,
    Declined,
    Rejected,
    Expired,
}

impl AuthState {
    pub const ALL: [AuthState; 8] = [
        AuthState::Pending,
        AuthState::Authorized,
        AuthState::Issuing,
        AuthState::Issued,
        AuthState::IssueFailed,
        AuthState::Declined,
        AuthState::Rejected,
        AuthState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthState::Pending => "pending",
            AuthState::Authorized => "authorized",
            AuthState::Issuing => "issuing",
            AuthState::Issued => "issued",
            AuthState::IssueFailed => "issue_failed",
            AuthState::Declined => "declined",
            AuthState::Rejected => "rejected",
            AuthState::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The payer has not authorized (yet): a push or getauthdata may still say so.
    pub fn awaits_payer(self) -> bool {
        matches!(self, AuthState::Pending | AuthState::Expired | AuthState::Declined)
    }
}

pub use fiscalbill_common::bill::Failure;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub key: OrderKey,
    /// The appid the link was requested with: the unit's, or its App's.
    pub authorized_appid: String,
    pub source: AuthSource,
    pub money: i64,
    pub bill: BillContent,
    pub pdf_sha256: Option<String>,
    pub redirect_url: Option<String>,
    pub request_id: Option<String>,
    /// The W3C trace id of the order (32 hex digits).
    pub trace_id: String,
    pub s_pappid: String,
    pub auth_url: String,
    pub auth_url_expires_at: i64,
    pub state: AuthState,
    pub openid: Option<String>,
    pub authorize_time: i64,
    pub card_id: Option<String>,
    pub card_code: Option<String>,
    pub failure: Option<Failure>,
    pub issue_attempts: i64,
    pub reject_reason: Option<String>,
    pub wechat_invoice_status: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A CreateAuthorization call after validation.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    pub key: OrderKey,
    pub money: i64,
    pub source: AuthSource,
    pub redirect_url: Option<String>,
    pub bill: BillContent,
    pub pdf: Option<Bytes>,
    pub request_id: Option<String>,
    pub trace_id: String,
}

#[derive(Clone, Debug, Default)]
pub struct AuthQuery {
    pub unit_appid: Option<String>,
    pub state: Option<AuthState>,
    pub limit: i64,
    pub after: Option<Cursor>,
}

/// What an outbox job does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobPhase {
    /// Send IssueBill.
    Issue,
    /// The bureau accepted the bill: poll GetBill until it is final.
    Poll,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Issue => "issue",
            JobPhase::Poll => "poll",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "issue" => Some(JobPhase::Issue),
            "poll" => Some(JobPhase::Poll),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Job {
    pub key: OrderKey,
    pub phase: JobPhase,
    pub attempts: i64,
}
