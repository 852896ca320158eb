//! Typed failures of a WeChat call. Messages never contain the request URL (which carries the
//! access_token) or any secret.

use super::Endpoint;

/// errcode values with a meaning the client acts on (wechat-fiscal-api.md, "Error codes").
pub mod errcode {
    pub const SYSTEM_BUSY: i64 = -1;
    pub const INVALID_CREDENTIAL: i64 = 40001;
    pub const INVALID_ACCESS_TOKEN: i64 = 40014;
    pub const ACCESS_TOKEN_EXPIRED: i64 = 42001;
    pub const ACCESS_TOKEN_MISSING: i64 = 41001;
    pub const INVALID_APPID: i64 = 40013;
    pub const INVALID_APPSECRET: i64 = 40125;
    pub const IP_NOT_WHITELISTED: i64 = 40164;
    pub const REQUIRE_POST: i64 = 43002;
    pub const DAILY_QUOTA: i64 = 45009;
    pub const MINUTE_QUOTA: i64 = 45011;
    pub const DATA_FORMAT: i64 = 47001;
    pub const API_UNAUTHORIZED: i64 = 48001;
    pub const INVALID_CARD_STATUS: i64 = 40078;
    pub const UNAUTHORIZED_CREATE_INVOICE: i64 = 72015;
    pub const INVALID_PARAMS: i64 = 72031;
    pub const ORDER_REJECTED: i64 = 72035;
    pub const ORDER_NEVER_AUTHORIZED: i64 = 72038;
    pub const PDF_ERROR: i64 = 72040;
    pub const BILLING_REPEATED: i64 = 72042;
    pub const BILLING_SIZE: i64 = 72043;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    /// WeChat answered with a non-zero errcode.
    #[error("WeChat {endpoint} returned errcode {errcode}: {errmsg}{}", rid_suffix(rid))]
    Api {
        endpoint: Endpoint,
        errcode: i64,
        /// errmsg without its ` rid: ...` / ` hint: [...]` suffix.
        errmsg: String,
        rid: Option<String>,
        hint: Option<String>,
    },
    /// WeChat answered with an HTTP status other than 200.
    #[error("WeChat {endpoint} answered HTTP {status}")]
    HttpStatus { endpoint: Endpoint, status: u16 },
    /// No complete answer within the configured timeout. The request may have been processed.
    #[error("WeChat {endpoint} did not answer in time")]
    Timeout { endpoint: Endpoint },
    /// The connection failed. `connected` tells whether the request may have reached WeChat.
    #[error("WeChat {endpoint} could not be reached: {message}")]
    Transport { endpoint: Endpoint, connected: bool, message: String },
    /// WeChat answered 200 with a body that is not what the documentation describes.
    #[error("WeChat {endpoint} sent a malformed response: {message}")]
    Malformed { endpoint: Endpoint, message: String },
}

fn rid_suffix(rid: &Option<String>) -> String {
    rid.as_deref().map(|r| format!(" (rid {r})")).unwrap_or_default()
}

impl WechatError {
    pub fn endpoint(&self) -> Endpoint {
        match self {
            WechatError::Api { endpoint, .. }
            | WechatError::HttpStatus { endpoint, .. }
            | WechatError::Timeout { endpoint }
            | WechatError::Transport { endpoint, .. }
            | WechatError::Malformed { endpoint, .. } => *endpoint,
        }
    }

    /// WeChat's errcode, when WeChat answered with one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WechatError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// WeChat's request id, for support tickets.
    pub fn rid(&self) -> Option<&str> {
        match self {
            WechatError::Api { rid, .. } => rid.as_deref(),
            _ => None,
        }
    }

    /// The access token was rejected (40001, 40014, 42001): refresh once and retry once.
    pub fn is_token_rejected(&self) -> bool {
        matches!(
            self.errcode(),
            Some(errcode::INVALID_CREDENTIAL | errcode::INVALID_ACCESS_TOKEN | errcode::ACCESS_TOKEN_EXPIRED)
        )
    }

    /// Trying again later may succeed: system busy, per-minute quota, HTTP 5xx, timeouts and
    /// connection failures. Everything else needs a fix or is final.
    pub fn is_transient(&self) -> bool {
        match self {
            WechatError::Api { errcode, .. } => {
                matches!(*errcode, errcode::SYSTEM_BUSY | errcode::MINUTE_QUOTA)
            }
            WechatError::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            WechatError::Timeout { .. } | WechatError::Transport { .. } => true,
            WechatError::Malformed { .. } => false,
        }
    }

    /// Whether WeChat may have acted on the request although no answer arrived: a timeout, or
    /// a connection lost after sending. Callers of non-idempotent calls must then reconcile.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            WechatError::Timeout { .. } => true,
            WechatError::Transport { connected, .. } => *connected,
            _ => false,
        }
    }
}

/// Splits WeChat's errmsg into the message and its ` rid: ...` or ` hint: [...]` trace suffix.
pub fn split_errmsg(raw: &str) -> (String, Option<String>, Option<String>) {
    let mut message = raw;
    let mut rid = None;
    let mut hint = None;
    if let Some(at) = message.rfind(" rid: ") {
        let value = message[at + " rid: ".len()..].trim();
        if !value.is_empty() {
            rid = Some(value.to_owned());
        }
        message = &message[..at];
    }
    if let Some(at) = message.rfind(" hint: [") {
        let rest = &message[at + " hint: [".len()..];
        if let Some(end) = rest.find(']') {
            hint = Some(rest[..end].to_owned());
            message = &message[..at];
        }
    }
    (message.trim_end().to_owned(), rid, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_rid_and_hint_suffixes() {
        let (msg, rid, hint) =
            split_errmsg("invalid credential, access_token is invalid or not latest rid: 6720e4d5-3c8b1a7e-1b0d4e07");
        assert_eq!(msg, "invalid credential, access_token is invalid or not latest");
        assert_eq!(rid.as_deref(), Some("6720e4d5-3c8b1a7e-1b0d4e07"));
        assert_eq!(hint, None);

        let (msg, rid, hint) = split_errmsg("invoice order never auth hint: [A0aTsa0124vr22]");
        assert_eq!(msg, "invoice order never auth");
        assert_eq!(rid, None);
        assert_eq!(hint.as_deref(), Some("A0aTsa0124vr22"));

        assert_eq!(split_errmsg("ok"), ("ok".to_owned(), None, None));
    }

    #[test]
    fn classifies_errors() {
        let api = |code| WechatError::Api {
            endpoint: Endpoint::InsertBill,
            errcode: code,
            errmsg: "x".into(),
            rid: Some("r-1".into()),
            hint: None,
        };
        for code in [40001, 40014, 42001] {
            assert!(api(code).is_token_rejected());
        }
        assert!(!api(errcode::DAILY_QUOTA).is_token_rejected());
        assert!(!api(errcode::DAILY_QUOTA).is_transient());
        assert!(api(-1).is_transient() && api(45011).is_transient());
        assert!(!api(72038).is_transient());
        assert_eq!(api(72038).rid(), Some("r-1"));
        assert_eq!(api(72038).to_string(), "WeChat insertbill returned errcode 72038: x (rid r-1)");
        let lost = WechatError::Transport { endpoint: Endpoint::InsertBill, connected: true, message: "reset".into() };
        assert!(lost.is_transient() && lost.outcome_unknown());
        let refused =
            WechatError::Transport { endpoint: Endpoint::InsertBill, connected: false, message: "refused".into() };
        assert!(!refused.outcome_unknown());
    }
}
