//! The bureau's failure policy: what a failed step of a bill does next (retry, wait for the
//! payer, fail), and which failed bills a repeated IssueBill may start over. Both read the kind
//! of the failure from WeChat's rulebook, never an errcode.

use fiscalbill_common::status::wechat_code_and_reason;
use wechat::{CallError, Retry, WechatError, rulebook};

use crate::domain::Failure;
use crate::error::BureauError;

/// How long a bill waits after WeChat's daily quota ran out.
const DAILY_QUOTA_PAUSE_MS: i64 = 15 * 60_000;

/// The reason of a bill that kept failing transiently until `give_up_after_secs`.
pub const RETRIES_EXHAUSTED: &str = "RETRIES_EXHAUSTED";
/// The reason of a bill whose WeChat account has no secret configured.
const ACCOUNT_NOT_CONFIGURED: &str = "WECHAT_ACCOUNT_NOT_CONFIGURED";

/// What to do after a failed step.
pub enum Disposition {
    Retry {
        min_delay_ms: i64,
    },
    /// The payer has not authorized yet: retry for `never_authorized_retry_secs`, then fail.
    NeverAuthorized,
    /// The card's state forbids the insert: retry `invalid_card_status_tries` times, then fail.
    InvalidCardStatus,
    Fail(Failure),
}

pub fn classify(error: &BureauError, now: i64, minute_quota_pause_ms: i64) -> Disposition {
    match error {
        BureauError::Wechat(CallError::Wechat(wechat)) => match wechat.kind().retry() {
            Retry::Backoff | Retry::WithFreshToken => Disposition::Retry { min_delay_ms: 0 },
            Retry::NextMinute => Disposition::Retry { min_delay_ms: minute_quota_pause_ms },
            Retry::Later => Disposition::Retry { min_delay_ms: DAILY_QUOTA_PAUSE_MS },
            Retry::WhilePayerMayAuthorize => Disposition::NeverAuthorized,
            Retry::FewTimesThenFix => Disposition::InvalidCardStatus,
            Retry::AfterFix | Retry::Never => Disposition::Fail(failure_of(error, now)),
        },
        BureauError::Wechat(CallError::Store(_)) | BureauError::Storage(_) | BureauError::Busy(_) => {
            Disposition::Retry { min_delay_ms: 0 }
        }
        _ => Disposition::Fail(failure_of(error, now)),
    }
}

/// The recorded failure for an error: its reason code, and WeChat's errcode, errmsg and rid.
pub fn failure_of(error: &BureauError, now: i64) -> Failure {
    let (reason, wechat) = match error {
        BureauError::Wechat(CallError::Wechat(wechat)) => (wechat_code_and_reason(wechat).1, Some(wechat)),
        BureauError::Wechat(CallError::UnknownAccount(_)) => (ACCOUNT_NOT_CONFIGURED, None),
        BureauError::UnitNotOnboarded(_) => ("UNIT_NOT_ONBOARDED", None),
        BureauError::Render(_) => ("PDF_MISSING", None),
        BureauError::PdfMismatch { .. } => ("PDF_MISMATCH", None),
        _ => ("ISSUE_FAILED", None),
    };
    let (errmsg, rid) = match wechat {
        Some(WechatError::Api { errmsg, rid, .. }) => (errmsg.clone(), rid.clone().unwrap_or_default()),
        _ => (String::new(), String::new()),
    };
    Failure {
        reason: reason.to_owned(),
        message: error.to_string(),
        wechat_errcode: wechat.and_then(WechatError::errcode).unwrap_or(0),
        wechat_errmsg: errmsg,
        wechat_rid: rid,
        at: now,
    }
}

/// The failure of a bill whose inserts WeChat kept answering "invalid card status": what to
/// check, since WeChat gives several causes and none of them is "already inserted".
pub fn invalid_card_status(error: &BureauError, tries: i64, card_id: &str, now: i64) -> Failure {
    let failure = failure_of(error, now);
    Failure {
        message: format!(
            "WeChat answered \"invalid card status\" to {tries} inserts: check at WeChat that the unit's bill \
             template {card_id} is authorized and its card permission enabled, and that the template was not \
             created moments before; then issue the bill again ({})",
            failure.message
        ),
        ..failure
    }
}

/// Whether a repeated IssueBill may start a failed bill over: its cause can go away (the payer
/// authorizes, the account or configuration is fixed, the daily quota renews), or it failed
/// only because retries ran out. A final answer (rejected order, numbers repeated, PDF
/// refused) stays final.
pub fn reissuable(failure: &Failure) -> bool {
    match failure.reason.as_str() {
        RETRIES_EXHAUSTED | ACCOUNT_NOT_CONFIGURED => true,
        _ => {
            failure.wechat_errcode != 0
                && matches!(
                    rulebook::kind_of(failure.wechat_errcode).retry(),
                    Retry::AfterFix | Retry::WhilePayerMayAuthorize | Retry::FewTimesThenFix | Retry::Later
                )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_with(rule: &rulebook::Rule) -> Failure {
        let reason = fiscalbill_common::status::kind_code_and_reason(rule.kind).1;
        Failure { reason: reason.to_owned(), wechat_errcode: rule.errcode, ..Failure::default() }
    }

    #[test]
    fn fixable_failures_are_reissuable_and_final_ones_not() {
        for rule in [
            &rulebook::ORDER_NEVER_AUTHORIZED,
            &rulebook::API_UNAUTHORIZED,
            &rulebook::UNAUTHORIZED_CREATE_INVOICE,
            &rulebook::INVALID_APPSECRET,
            &rulebook::IP_NOT_WHITELISTED,
            &rulebook::DAILY_QUOTA,
            &rulebook::INVALID_CARD_STATUS,
        ] {
            assert!(reissuable(&failed_with(rule)), "{}", rule.name);
        }
        for rule in [
            &rulebook::ORDER_REJECTED,
            &rulebook::BILLING_NUMBERS_REPEATED,
            &rulebook::PDF_ERROR,
            &rulebook::INVALID_PARAMS,
        ] {
            assert!(!reissuable(&failed_with(rule)), "{}", rule.name);
        }
        let exhausted = Failure { reason: RETRIES_EXHAUSTED.to_owned(), ..failed_with(&rulebook::SYSTEM_BUSY) };
        assert!(reissuable(&exhausted));
        assert!(!reissuable(&Failure { reason: "PDF_MISSING".to_owned(), ..Failure::default() }));
    }
}
