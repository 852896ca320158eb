//! Typed failures of a WeChat call, classified by the [rulebook](crate::rulebook). Messages
//! never contain the request URL (which carries the access_token) or any secret.

use crate::Endpoint;
use crate::rulebook::{self, ErrorKind, Rule};

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

    /// What this failure means to the caller (see the rulebook).
    pub fn kind(&self) -> ErrorKind {
        match self {
            WechatError::Api { errcode, .. } => rulebook::kind_of(*errcode),
            WechatError::HttpStatus { .. } | WechatError::Timeout { .. } | WechatError::Transport { .. } => {
                ErrorKind::Unreachable
            }
            WechatError::Malformed { .. } => ErrorKind::MalformedResponse,
        }
    }

    /// The rulebook's row for WeChat's errcode, when WeChat answered with a known one.
    pub fn rule(&self) -> Option<&'static Rule> {
        self.errcode().and_then(rulebook::by_errcode)
    }

    /// The access token was rejected: refresh once and retry once.
    pub fn is_token_rejected(&self) -> bool {
        self.kind() == ErrorKind::TokenRejected
    }

    /// Trying again later may succeed: system busy, per-minute quota, no answer or an answer
    /// not as documented. Everything else needs a fix or is final.
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
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

/// An error's text followed by its causes, on one line (`a: b: c`): many errors (reqwest's,
/// hyper's) say only the outermost part of what went wrong.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
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
    fn an_error_is_told_with_its_causes() {
        #[derive(Debug)]
        struct Request(std::io::Error);
        impl std::fmt::Display for Request {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Request {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        assert_eq!(with_causes(&Request(reset)), "error sending request: connection reset by peer");
        assert_eq!(with_causes(&std::fmt::Error), "an error occurred when formatting an argument");
    }

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
        use crate::rulebook::*;
        let api = |rule: &Rule| WechatError::Api {
            endpoint: Endpoint::InsertBill,
            errcode: rule.errcode,
            errmsg: "x".into(),
            rid: Some("r-1".into()),
            hint: None,
        };
        for rule in [&INVALID_CREDENTIAL, &INVALID_ACCESS_TOKEN, &ACCESS_TOKEN_EXPIRED] {
            assert!(api(rule).is_token_rejected());
        }
        assert!(!api(&DAILY_QUOTA).is_token_rejected());
        assert!(!api(&DAILY_QUOTA).is_transient());
        assert!(api(&SYSTEM_BUSY).is_transient() && api(&MINUTE_QUOTA).is_transient());
        let never = api(&ORDER_NEVER_AUTHORIZED);
        assert!(!never.is_transient());
        assert_eq!(never.kind(), ErrorKind::NeverAuthorized);
        assert_eq!(never.rule(), Some(&ORDER_NEVER_AUTHORIZED));
        assert_eq!(never.rid(), Some("r-1"));
        assert_eq!(
            never.to_string(),
            format!("WeChat insertbill returned errcode {}: x (rid r-1)", ORDER_NEVER_AUTHORIZED.errcode)
        );
        let unknown = api(&Rule { errcode: 99_999, name: "x", errmsg: "x", kind: ErrorKind::Unknown });
        assert_eq!((unknown.kind(), unknown.rule()), (ErrorKind::Unknown, None));
        let lost = WechatError::Transport { endpoint: Endpoint::InsertBill, connected: true, message: "reset".into() };
        assert!(lost.is_transient() && lost.outcome_unknown());
        assert_eq!(lost.kind(), ErrorKind::Unreachable);
        let refused =
            WechatError::Transport { endpoint: Endpoint::InsertBill, connected: false, message: "refused".into() };
        assert!(!refused.outcome_unknown());
    }
}
