//! collection-svc's validated domain model.

use bytes::Bytes;
use fiscalbill_common::bill::BillContent;
use fiscalbill_common::paging::Cursor;
use fiscalbill_common::trace::TraceContext;
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

    /// The state after `event`, or None when this state does not allow it: the one table of
    /// the authorization lifecycle, read by the handlers, the store (as the "from" set of each
    /// change) and the tests.
    pub fn after(self, event: AuthEvent) -> Option<AuthState> {
        use AuthState::*;
        let allowed = match event {
            AuthEvent::PayerAuthorized => matches!(self, Pending | Expired | Declined),
            AuthEvent::PayerDeclined => matches!(self, Pending | Expired),
            AuthEvent::LinkExpired => self == Pending,
            AuthEvent::LinkRenewed => self == Expired,
            AuthEvent::UnitRejected => matches!(self, Pending | Authorized | IssueFailed | Declined | Expired),
            AuthEvent::FoundRejected => matches!(self, Pending | Expired | Declined),
            AuthEvent::BureauIssuing | AuthEvent::BureauIssued | AuthEvent::BureauFailed => {
                matches!(self, Authorized | Issuing)
            }
            AuthEvent::RetryIssue => self == IssueFailed,
        };
        allowed.then(|| event.target())
    }
}

/// What can happen to an authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthEvent {
    /// The payer authorized (a push, or getauthdata's `auth success`).
    PayerAuthorized,
    /// The payer declined (a push, or getauthdata's `auth fail`).
    PayerDeclined,
    /// The link ran out unused.
    LinkExpired,
    /// A repeated CreateAuthorization renewed an expired link.
    LinkRenewed,
    /// The unit rejected the order (RejectAuthorization).
    UnitRejected,
    /// getauthdata says the order was rejected.
    FoundRejected,
    /// The bureau accepted the bill and is issuing it.
    BureauIssuing,
    /// The bureau inserted the bill.
    BureauIssued,
    /// The bureau could not issue the bill, or refused it.
    BureauFailed,
    /// RetryIssue: the bill goes to the bureau again.
    RetryIssue,
}

impl AuthEvent {
    pub const ALL: [AuthEvent; 10] = [
        AuthEvent::PayerAuthorized,
        AuthEvent::PayerDeclined,
        AuthEvent::LinkExpired,
        AuthEvent::LinkRenewed,
        AuthEvent::UnitRejected,
        AuthEvent::FoundRejected,
        AuthEvent::BureauIssuing,
        AuthEvent::BureauIssued,
        AuthEvent::BureauFailed,
        AuthEvent::RetryIssue,
    ];

    /// The state an allowed event leads to.
    pub fn target(self) -> AuthState {
        match self {
            AuthEvent::PayerAuthorized | AuthEvent::RetryIssue => AuthState::Authorized,
            AuthEvent::PayerDeclined => AuthState::Declined,
            AuthEvent::LinkExpired => AuthState::Expired,
            AuthEvent::LinkRenewed => AuthState::Pending,
            AuthEvent::UnitRejected | AuthEvent::FoundRejected => AuthState::Rejected,
            AuthEvent::BureauIssuing => AuthState::Issuing,
            AuthEvent::BureauIssued => AuthState::Issued,
            AuthEvent::BureauFailed => AuthState::IssueFailed,
        }
    }

    /// The states that allow this event: the "from" set of the store's update.
    pub fn sources(self) -> Vec<AuthState> {
        AuthState::ALL.into_iter().filter(|state| state.after(self).is_some()).collect()
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
    /// The order's W3C trace and the span its later work continues under.
    pub trace: TraceContext,
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
    pub trace: TraceContext,
}

#[derive(Clone, Debug, Default)]
pub struct AuthQuery {
    pub unit_appid: Option<String>,
    pub state: Option<AuthState>,
    pub limit: i64,
    pub after: Option<Cursor>,
}

/// A position in the log of authorization changes: after every change up to (txid, seq).
/// On SQLite txid is always 0; on PostgreSQL it is the id of the transaction that wrote the
/// change, which orders changes by when they became visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangePosition {
    pub txid: i64,
    pub seq: i64,
}

/// One change of an authorization's state, as WatchAuthorizations sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthChange {
    pub position: ChangePosition,
    pub key: OrderKey,
    pub state: AuthState,
    pub card_id: Option<String>,
    pub card_code: Option<String>,
    pub failure: Option<Failure>,
    /// Unix milliseconds.
    pub changed_at: i64,
}

/// What a WatchAuthorizations stream delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchFilter {
    pub unit_appid: String,
    /// Empty for every order of the unit.
    pub order_ids: std::collections::HashSet<String>,
    /// Empty for every state.
    pub states: Vec<AuthState>,
}

impl WatchFilter {
    pub fn wants(&self, change: &AuthChange) -> bool {
        (self.order_ids.is_empty() || self.order_ids.contains(&change.key.order_id))
            && (self.states.is_empty() || self.states.contains(&change.state))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_table() {
        use AuthEvent::*;
        use AuthState::*;
        let sources = |event: AuthEvent| event.sources();
        assert_eq!(sources(PayerAuthorized), [Pending, Declined, Expired]);
        assert_eq!(sources(PayerDeclined), [Pending, Expired]);
        assert_eq!(sources(LinkExpired), [Pending]);
        assert_eq!(sources(LinkRenewed), [Expired]);
        assert_eq!(sources(UnitRejected), [Pending, Authorized, IssueFailed, Declined, Expired]);
        assert_eq!(sources(FoundRejected), [Pending, Declined, Expired]);
        for event in [BureauIssuing, BureauIssued, BureauFailed] {
            assert_eq!(sources(event), [Authorized, Issuing]);
        }
        assert_eq!(sources(RetryIssue), [IssueFailed]);
        // Issued and rejected are final; an issue in progress can be neither rejected nor
        // authorized again.
        for event in AuthEvent::ALL {
            assert_eq!(Issued.after(event), None, "{event:?}");
            assert_eq!(Rejected.after(event), None, "{event:?}");
        }
        assert_eq!(Issuing.after(UnitRejected), None);
        assert_eq!(IssueFailed.after(PayerAuthorized), None, "a late push does not re-issue a failed bill");
        assert_eq!(Expired.after(PayerAuthorized), Some(Authorized), "the payer may answer an expired link");
    }
}
