//! The errcode rulebook: every errcode this project knows, with its name, the errmsg WeChat
//! sends (before its ` rid: ...` suffix), and its kind, which says what a caller does about it.
//! The client classifies answers by it, the services' failure policies and gRPC statuses read
//! kinds from it, and the sandbox raises its errors by name from it. A new errcode is one row.
//!
//! Sources: wechat-fiscal-api.md ("Error codes of this flow", the token-fetch errors), WeChat's
//! global return codes for media uploads (40005, 40006, 40007, 40009), and the errors the sandbox
//! answers for the documented checks.

/// What an errcode means to the caller, and so how it is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// WeChat is busy: try again with backoff.
    Busy,
    /// The per-minute quota: slow down, try again next minute.
    MinuteQuota,
    /// The daily quota: no token refresh helps; try again hours later.
    DailyQuota,
    /// The access token was rejected (replaced, malformed, expired): refresh it once and retry
    /// once.
    TokenRejected,
    /// The appid or appsecret is wrong, or the secret frozen: fix the configuration.
    CredentialsRejected,
    /// The caller's IP is not on the account's whitelist: add it at WeChat.
    IpNotWhitelisted,
    /// The account lacks the invoice permission: apply for it.
    PermissionMissing,
    /// The payer has not authorized this order (yet).
    NeverAuthorized,
    /// The unit rejected the order (rejectinsert): final.
    OrderRejected,
    /// This billing_no + billing_code is already in a card package: final.
    BillingNumbersRepeated,
    /// billing_no or billing_code is too long: fix the bill.
    BillingNumberSize,
    /// The card's state forbids the call (card_id not authorized, card permission off, insert
    /// too soon after createbillcard, a written-off card). It never says that a bill is
    /// already in a card package: only `BillingNumbersRepeated` does.
    InvalidCardStatus,
    /// The uploaded media is unknown or expired: upload again.
    MediaGone,
    /// WeChat refuses the PDF (not a real PDF, too large).
    PdfRejected,
    /// A field of the request is missing or invalid.
    InvalidParameters,
    /// The request is malformed (method, body, encoding, missing token): a bug in the caller.
    MalformedRequest,
    /// An errcode missing from this rulebook.
    Unknown,
    /// No WeChat answer: HTTP error status, timeout or lost connection.
    Unreachable,
    /// An HTTP 200 answer that is not what the documentation describes.
    MalformedResponse,
}

/// Whether, and when, a call that failed this way is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Soon, with backoff (and resent by the client itself where the endpoint allows).
    Backoff,
    /// After a pause of about a minute.
    NextMinute,
    /// Hours later; never by refreshing the token.
    Later,
    /// Once, with a freshly fetched access token.
    WithFreshToken,
    /// For a while: the payer may still authorize.
    WhilePayerMayAuthorize,
    /// A few times with backoff (the condition may pass, e.g. an insert too soon after the
    /// template was created); after that it needs a fix, and then a caller may start over.
    FewTimesThenFix,
    /// Not by itself: once the configuration or the account is fixed, a caller may start over.
    AfterFix,
    /// Never: the answer is final, or the request must change.
    Never,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::Busy,
        ErrorKind::MinuteQuota,
        ErrorKind::DailyQuota,
        ErrorKind::TokenRejected,
        ErrorKind::CredentialsRejected,
        ErrorKind::IpNotWhitelisted,
        ErrorKind::PermissionMissing,
        ErrorKind::NeverAuthorized,
        ErrorKind::OrderRejected,
        ErrorKind::BillingNumbersRepeated,
        ErrorKind::BillingNumberSize,
        ErrorKind::InvalidCardStatus,
        ErrorKind::MediaGone,
        ErrorKind::PdfRejected,
        ErrorKind::InvalidParameters,
        ErrorKind::MalformedRequest,
        ErrorKind::Unknown,
        ErrorKind::Unreachable,
        ErrorKind::MalformedResponse,
    ];

    pub fn retry(self) -> Retry {
        match self {
            ErrorKind::Busy | ErrorKind::Unreachable | ErrorKind::MalformedResponse => Retry::Backoff,
            ErrorKind::MinuteQuota => Retry::NextMinute,
            ErrorKind::DailyQuota => Retry::Later,
            ErrorKind::TokenRejected => Retry::WithFreshToken,
            ErrorKind::NeverAuthorized => Retry::WhilePayerMayAuthorize,
            ErrorKind::CredentialsRejected | ErrorKind::IpNotWhitelisted | ErrorKind::PermissionMissing => {
                Retry::AfterFix
            }
            ErrorKind::InvalidCardStatus => Retry::FewTimesThenFix,
            ErrorKind::OrderRejected
            | ErrorKind::BillingNumbersRepeated
            | ErrorKind::BillingNumberSize
            | ErrorKind::MediaGone
            | ErrorKind::PdfRejected
            | ErrorKind::InvalidParameters
            | ErrorKind::MalformedRequest
            | ErrorKind::Unknown => Retry::Never,
        }
    }

    /// Trying the same call again later may succeed by itself (busy, quota, no answer).
    pub fn is_transient(self) -> bool {
        matches!(self.retry(), Retry::Backoff | Retry::NextMinute)
    }

    /// An answer about the order rather than a fault of the call: the payer has not authorized
    /// it (yet), or the unit rejected it. Callers expect these (the reconciler asks about every
    /// waiting order), so they are logged as information, not as warnings.
    pub fn tells_order_state(self) -> bool {
        matches!(self, ErrorKind::NeverAuthorized | ErrorKind::OrderRejected)
    }
}

/// One errcode.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub errcode: i64,
    /// snake_case, stable: how the sandbox and tests name it.
    pub name: &'static str,
    /// WeChat's errmsg (some carry a detail after it, e.g. `invalid params, order_id is empty`).
    pub errmsg: &'static str,
    pub kind: ErrorKind,
}

macro_rules! rules {
    ($($constant:ident = $errcode:literal, $name:literal, $errmsg:literal, $kind:ident;)*) => {
        $(pub const $constant: Rule = Rule { errcode: $errcode, name: $name, errmsg: $errmsg, kind: ErrorKind::$kind };)*
        /// Every rule, in errcode order.
        pub const RULES: &[&Rule] = &[$(&$constant),*];
    };
}

rules! {
    SYSTEM_BUSY = -1, "system_busy", "system error", Busy;
    INVALID_CREDENTIAL = 40001, "invalid_credential", "invalid credential, access_token is invalid or not latest", TokenRejected;
    INVALID_GRANT_TYPE = 40002, "invalid_grant_type", "invalid grant_type", MalformedRequest;
    INVALID_FILE_TYPE = 40005, "invalid_file_type", "invalid file type", InvalidParameters;
    INVALID_MEDIA_SIZE = 40006, "invalid_media_size", "invalid meida size", PdfRejected;
    INVALID_MEDIA_ID = 40007, "invalid_media_id", "invalid media_id", MediaGone;
    INVALID_IMAGE_SIZE = 40009, "invalid_image_size", "invalid image size", InvalidParameters;
    INVALID_APPID = 40013, "invalid_appid", "invalid appid", CredentialsRejected;
    INVALID_ACCESS_TOKEN = 40014, "invalid_access_token", "invalid access_token", TokenRejected;
    INVALID_CARD_ID = 40073, "invalid_card_id", "invalid card_id", InvalidParameters;
    INVALID_CARD_STATUS = 40078, "invalid_card_status", "invalid card status", InvalidCardStatus;
    INVALID_ARGS = 40097, "invalid_args", "invalid args", InvalidParameters;
    INVALID_APPSECRET = 40125, "invalid_appsecret", "invalid appsecret", CredentialsRejected;
    IP_NOT_WHITELISTED = 40164, "ip_not_whitelisted", "invalid ip, not in whitelist", IpNotWhitelisted;
    APPSECRET_FROZEN = 40243, "appsecret_frozen", "AppSecret已被冻结，请登录MP解冻后再次调用。", CredentialsRejected;
    ACCESS_TOKEN_MISSING = 41001, "access_token_missing", "access_token missing", MalformedRequest;
    ACCESS_TOKEN_EXPIRED = 42001, "access_token_expired", "access_token expired", TokenRejected;
    REQUIRE_GET = 43001, "require_get", "require GET method", MalformedRequest;
    REQUIRE_POST = 43002, "require_post", "require POST method", MalformedRequest;
    REQUIRE_HTTPS = 43003, "require_https", "require https", MalformedRequest;
    EMPTY_POST_DATA = 44002, "empty_post_data", "empty post data", MalformedRequest;
    DAILY_QUOTA = 45009, "daily_quota", "reach max api daily quota limit", DailyQuota;
    MINUTE_QUOTA = 45011, "minute_quota", "api minute-quota reach limit  mustslower  retry next minute", MinuteQuota;
    DATA_FORMAT = 47001, "data_format_error", "data format error", MalformedRequest;
    API_UNAUTHORIZED = 48001, "api_unauthorized", "api unauthorized", PermissionMissing;
    UNAUTHORIZED_CREATE_INVOICE = 72015, "unauthorized_create_invoice", "unauthorized create invoice", PermissionMissing;
    INVALID_PARAMS = 72031, "invalid_params", "invalid params", InvalidParameters;
    ORDER_REJECTED = 72035, "biz_reject_insert", "biz reject insert", OrderRejected;
    ORDER_NEVER_AUTHORIZED = 72038, "invoice_order_never_auth", "invoice order never auth", NeverAuthorized;
    PDF_ERROR = 72040, "invoice_pdf_error", "invoice pdf error", PdfRejected;
    BILLING_NUMBERS_REPEATED = 72042, "billing_numbers_repeated", "billing_code and billing_no repeated", BillingNumbersRepeated;
    BILLING_NUMBER_SIZE = 72043, "billing_number_size", "billing_code or billing_no size error", BillingNumberSize;
}

/// The rule of an errcode.
pub fn by_errcode(errcode: i64) -> Option<&'static Rule> {
    RULES.iter().copied().find(|rule| rule.errcode == errcode)
}

/// The rule of a name.
pub fn by_name(name: &str) -> Option<&'static Rule> {
    RULES.iter().copied().find(|rule| rule.name == name)
}

/// The kind of an errcode; `Unknown` when the rulebook has no row for it.
pub fn kind_of(errcode: i64) -> ErrorKind {
    by_errcode(errcode).map_or(ErrorKind::Unknown, |rule| rule.kind)
}

impl Rule {
    /// The errmsg with a detail appended as WeChat does (`invalid params, order_id is empty`).
    pub fn errmsg_with(&self, detail: &str) -> String {
        format!("{}, {detail}", self.errmsg)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn errcodes_and_names_are_unique_and_sorted() {
        let codes: Vec<i64> = RULES.iter().map(|r| r.errcode).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted, "one row per errcode, in errcode order");
        let names: HashSet<&str> = RULES.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), RULES.len());
        for rule in RULES {
            assert!(rule.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", rule.name);
            assert_eq!(by_errcode(rule.errcode), Some(*rule));
            assert_eq!(by_name(rule.name), Some(*rule));
            assert!(!rule.errmsg.is_empty());
        }
    }

    #[test]
    fn kinds_decide_retries() {
        assert_eq!(kind_of(INVALID_CREDENTIAL.errcode).retry(), Retry::WithFreshToken);
        assert!(kind_of(SYSTEM_BUSY.errcode).is_transient() && kind_of(MINUTE_QUOTA.errcode).is_transient());
        assert!(!kind_of(DAILY_QUOTA.errcode).is_transient());
        assert_eq!(kind_of(ORDER_NEVER_AUTHORIZED.errcode).retry(), Retry::WhilePayerMayAuthorize);
        assert_eq!(kind_of(IP_NOT_WHITELISTED.errcode).retry(), Retry::AfterFix);
        assert_eq!(kind_of(123_456), ErrorKind::Unknown);
        let order_states: Vec<ErrorKind> = ErrorKind::ALL.into_iter().filter(|k| k.tells_order_state()).collect();
        assert_eq!(order_states, [ErrorKind::NeverAuthorized, ErrorKind::OrderRejected]);
        assert_eq!(INVALID_PARAMS.errmsg_with("order_id is empty"), "invalid params, order_id is empty");
    }
}
