//! The gRPC richer error model used by both services: every error carries an `ErrorInfo`
//! (UPPER_SNAKE reason, the service's domain, metadata with WeChat's errcode and rid when
//! WeChat caused it), invalid requests a `BadRequest` with field violations, and retryable ones
//! a `RetryInfo`.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use wechat::{CallError, ErrorKind, WechatError};

/// Field violations collected while validating a request.
#[derive(Clone, Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// When other fields are invalid too, adds the violations of `result`'s error (which has a
    /// reason of its own, such as INVALID_PAGE_TOKEN) so that all are reported at once.
    pub fn add_with_others<T>(&mut self, result: &Result<T, ApiError>) {
        if let Err(error) = result
            && !self.is_empty()
        {
            self.0.extend(error.violations.iter().cloned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|v| v.field.as_str())
    }

    /// Ok when nothing was violated, else an INVALID_ARGUMENT error listing every violation.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::invalid_argument(self)) }
    }
}

/// An error on its way to becoming a `tonic::Status`.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: Code,
    /// UPPER_SNAKE_CASE, stable.
    pub reason: &'static str,
    pub message: String,
    pub metadata: HashMap<String, String>,
    pub violations: Vec<FieldViolation>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            metadata: HashMap::new(),
            violations: Vec::new(),
            retry_after: None,
        }
    }

    pub fn invalid_argument(violations: Violations) -> Self {
        let summary: Vec<String> = violations.0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect();
        let mut error =
            Self::new(Code::InvalidArgument, "INVALID_ARGUMENT", format!("invalid request: {}", summary.join("; ")));
        error.violations = violations.0;
        error
    }

    /// INVALID_ARGUMENT with its own reason, about one field.
    pub fn invalid_field(reason: &'static str, field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut error = Self::new(Code::InvalidArgument, reason, format!("invalid request: {field}: {description}"));
        error.violations = vec![FieldViolation::new(field, description)];
        error
    }

    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The status a caller should see when a WeChat call failed.
    pub fn from_call(error: &CallError) -> Self {
        match error {
            CallError::Wechat(error) => Self::from_wechat(error),
            CallError::UnknownAccount(appid) => Self::new(
                Code::FailedPrecondition,
                "WECHAT_ACCOUNT_NOT_CONFIGURED",
                format!("no WeChat appsecret is configured for appid {appid}"),
            )
            .with("appid", appid),
            CallError::Store(error) => Self::new(Code::Unavailable, "STORAGE_UNAVAILABLE", error.to_string())
                .retry_after(Duration::from_secs(1)),
        }
    }

    pub fn from_wechat(error: &WechatError) -> Self {
        let (code, reason) = wechat_code_and_reason(error);
        let mut api = Self::new(code, reason, error.to_string()).with("wechat_endpoint", error.endpoint().name());
        if let Some(errcode) = error.errcode() {
            api = api.with("wechat_errcode", errcode);
        }
        if let Some(rid) = error.rid() {
            api = api.with("wechat_rid", rid);
        }
        if code == Code::Unavailable {
            api = api.retry_after(Duration::from_secs(1));
        }
        api
    }

    pub fn into_status(self, domain: &str) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(self.reason, domain, self.metadata);
        if !self.violations.is_empty() {
            details.set_bad_request(self.violations);
        }
        if let Some(delay) = self.retry_after {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(self.code, self.message, details)
    }
}

/// The ErrorInfo reason of a status (empty when it has none).
pub fn error_reason(status: &Status) -> String {
    status.get_error_details().error_info().map(|info| info.reason.clone()).unwrap_or_default()
}

/// The fields named by the BadRequest violations of a status.
pub fn violation_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// How a WeChat failure surfaces to gRPC callers: by its kind in the rulebook.
pub fn wechat_code_and_reason(error: &WechatError) -> (Code, &'static str) {
    kind_code_and_reason(error.kind())
}

/// The gRPC code and ErrorInfo reason of each kind of WeChat failure.
pub fn kind_code_and_reason(kind: ErrorKind) -> (Code, &'static str) {
    match kind {
        ErrorKind::Busy => (Code::Unavailable, "WECHAT_BUSY"),
        ErrorKind::MinuteQuota => (Code::Unavailable, "WECHAT_MINUTE_QUOTA"),
        ErrorKind::DailyQuota => (Code::ResourceExhausted, "WECHAT_DAILY_QUOTA"),
        ErrorKind::TokenRejected => (Code::Unavailable, "WECHAT_TOKEN_REJECTED"),
        ErrorKind::CredentialsRejected => (Code::FailedPrecondition, "WECHAT_CREDENTIALS_REJECTED"),
        ErrorKind::IpNotWhitelisted => (Code::FailedPrecondition, "WECHAT_IP_NOT_WHITELISTED"),
        ErrorKind::PermissionMissing => (Code::FailedPrecondition, "WECHAT_PERMISSION_MISSING"),
        ErrorKind::NeverAuthorized => (Code::FailedPrecondition, "WECHAT_ORDER_NEVER_AUTHORIZED"),
        ErrorKind::OrderRejected => (Code::FailedPrecondition, "WECHAT_ORDER_REJECTED"),
        ErrorKind::BillingNumbersRepeated => (Code::AlreadyExists, "WECHAT_BILLING_NUMBER_REPEATED"),
        ErrorKind::BillingNumberSize => (Code::InvalidArgument, "WECHAT_BILLING_NUMBER_SIZE"),
        ErrorKind::InvalidCardStatus => (Code::FailedPrecondition, "WECHAT_INVALID_CARD_STATUS"),
        ErrorKind::MediaGone => (Code::FailedPrecondition, "WECHAT_MEDIA_GONE"),
        ErrorKind::PdfRejected => (Code::InvalidArgument, "WECHAT_PDF_REJECTED"),
        ErrorKind::InvalidParameters => (Code::InvalidArgument, "WECHAT_INVALID_PARAMS"),
        ErrorKind::MalformedRequest | ErrorKind::Unknown => (Code::Internal, "WECHAT_ERROR"),
        ErrorKind::Unreachable => (Code::Unavailable, "WECHAT_UNREACHABLE"),
        ErrorKind::MalformedResponse => (Code::Unavailable, "WECHAT_MALFORMED_RESPONSE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wechat::Endpoint;

    #[test]
    fn violations_become_bad_request_details() {
        let mut violations = Violations::default();
        violations.add("order_id", "must not be empty");
        violations.add("content.fee", "must be > 0");
        let status = violations.into_result().unwrap_err().into_status("bureau.fiscalbill");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("order_id: must not be empty"));
        let details = status.get_error_details();
        let fields: Vec<&str> =
            details.bad_request().unwrap().field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["order_id", "content.fee"]);
        assert_eq!(details.error_info().unwrap().domain, "bureau.fiscalbill");
    }

    #[test]
    fn wechat_errors_carry_errcode_and_rid() {
        let error = WechatError::Api {
            endpoint: Endpoint::InsertBill,
            errcode: wechat::rulebook::ORDER_NEVER_AUTHORIZED.errcode,
            errmsg: "invoice order never auth".into(),
            rid: Some("a-b-c".into()),
            hint: None,
        };
        let status = ApiError::from_wechat(&error).into_status("bureau.fiscalbill");
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "WECHAT_ORDER_NEVER_AUTHORIZED");
        assert_eq!(info.metadata["wechat_errcode"], wechat::rulebook::ORDER_NEVER_AUTHORIZED.errcode.to_string());
        assert_eq!(info.metadata["wechat_rid"], "a-b-c");
        let busy = ApiError::from_wechat(&WechatError::Timeout { endpoint: Endpoint::GetPdf }).into_status("d");
        assert_eq!(busy.code(), Code::Unavailable);
        assert!(busy.get_error_details().retry_info().is_some());
    }
}
