//! bureau-svc's errors and the one exhaustive mapping to gRPC statuses.

use fiscalbill_common::status::ApiError;
use tonic::{Code, Status};
use wechat::CallError;
use wechat::types::ReimburseStatus;

use crate::domain::BillKey;

/// The ErrorInfo domain of every bureau-svc error.
pub const DOMAIN: &str = "bureau.fiscalbill";

#[derive(Debug, thiserror::Error)]
pub enum BureauError {
    /// A request failed validation (field violations inside).
    #[error("{}", .0.message)]
    Invalid(ApiError),
    #[error("collection unit {0} is not onboarded at this bureau")]
    UnitNotOnboarded(String),
    #[error("collection unit {0} has no bill template yet")]
    TemplateNotFound(String),
    #[error(
        "collection unit {appid} already has a template with payee {payee:?} and logo {logo_url}; WeChat templates cannot change"
    )]
    TemplateConflict { appid: String, payee: String, logo_url: String },
    #[error("no bill for order {0}")]
    BillNotFound(BillKey),
    #[error("order {0} was already issued with different content or PDF")]
    OrderConflict(BillKey),
    #[error("request_id {0:?} was used for another order")]
    RequestIdReused(String),
    #[error("billing_no {billing_no} with billing_code {billing_code} is already used by order {other}")]
    BillingNumberTaken { billing_no: String, billing_code: String, other: BillKey },
    #[error("bill {0} is not inserted yet")]
    BillNotInserted(BillKey),
    #[error("bill {0} was inserted but WeChat's answer with its card code was lost; its status cannot be changed here")]
    CardCodeUnknown(BillKey),
    #[error("bill {0} is {status}, which is final (written off)", status = .1.as_str())]
    StatusFinal(BillKey, ReimburseStatus),
    #[error(
        "unit {0} is the bureau's own account (a self-built platform): set token_mode = \"stable_token\" in both services, \
         because each cgi-bin/token fetch invalidates the other service's token"
    )]
    SelfBuiltTokenMode(String),
    #[error("collection unit {0} has neither a logo URL nor a logo image")]
    LogoMissing(String),
    #[error("the logo image of collection unit {0}: {1}")]
    LogoInvalid(String, wechat::image::LogoError),
    #[error("cannot render the bill PDF: {0}")]
    Render(String),
    #[error(
        "the PDF WeChat keeps (getpdf's pdf_url, SHA-256 {at_wechat}) differs from the one uploaded (SHA-256 {uploaded}), twice"
    )]
    PdfMismatch { uploaded: String, at_wechat: String },
    #[error(transparent)]
    Wechat(#[from] CallError),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error(
        "WeChat cannot be reached from the bureau ({why}); the bill of order {key} is kept and retried in the background: \
         call IssueBill again with the same request, or GetBill, to learn its state"
    )]
    WechatUnreachable { key: BillKey, why: String },
    #[error("the bureau is shutting down")]
    ShuttingDown,
    #[error("the bureau is starting: its database is not ready")]
    NotReady,
    #[error("{0}")]
    Busy(String),
}

impl From<ApiError> for BureauError {
    fn from(error: ApiError) -> Self {
        BureauError::Invalid(error)
    }
}

impl From<BureauError> for Status {
    fn from(error: BureauError) -> Self {
        let message = error.to_string();
        let api = match error {
            BureauError::Invalid(api) => api,
            BureauError::UnitNotOnboarded(appid) => {
                ApiError::new(Code::FailedPrecondition, "UNIT_NOT_ONBOARDED", message).with("unit_appid", appid)
            }
            BureauError::TemplateNotFound(appid) => {
                ApiError::new(Code::NotFound, "TEMPLATE_NOT_FOUND", message).with("unit_appid", appid)
            }
            BureauError::TemplateConflict { appid, .. } => {
                ApiError::new(Code::FailedPrecondition, "TEMPLATE_CONFLICT", message).with("unit_appid", appid)
            }
            BureauError::BillNotFound(key) => ApiError::new(Code::NotFound, "BILL_NOT_FOUND", message)
                .with("unit_appid", key.unit_appid)
                .with("order_id", key.order_id),
            BureauError::OrderConflict(key) => ApiError::new(Code::AlreadyExists, "ORDER_CONFLICT", message)
                .with("unit_appid", key.unit_appid)
                .with("order_id", key.order_id),
            BureauError::RequestIdReused(request_id) => {
                let mut violations = fiscalbill_common::status::Violations::default();
                violations.add("request_id", "was already used for another order");
                let mut api = ApiError::invalid_argument(violations).with("request_id", request_id);
                api.reason = "REQUEST_ID_REUSED";
                api
            }
            BureauError::BillingNumberTaken { other, .. } => {
                ApiError::new(Code::AlreadyExists, "BILLING_NUMBER_TAKEN", message)
                    .with("unit_appid", other.unit_appid)
                    .with("order_id", other.order_id)
            }
            BureauError::BillNotInserted(key) => ApiError::new(Code::FailedPrecondition, "BILL_NOT_INSERTED", message)
                .with("unit_appid", key.unit_appid)
                .with("order_id", key.order_id),
            BureauError::CardCodeUnknown(key) => ApiError::new(Code::FailedPrecondition, "CARD_CODE_UNKNOWN", message)
                .with("unit_appid", key.unit_appid)
                .with("order_id", key.order_id),
            BureauError::StatusFinal(key, status) => {
                ApiError::new(Code::FailedPrecondition, "REIMBURSE_STATUS_FINAL", message)
                    .with("unit_appid", key.unit_appid)
                    .with("order_id", key.order_id)
                    .with("reimburse_status", status.as_str())
            }
            BureauError::SelfBuiltTokenMode(appid) => {
                ApiError::new(Code::FailedPrecondition, "SELF_BUILT_TOKEN_MODE", message).with("unit_appid", appid)
            }
            BureauError::LogoMissing(appid) | BureauError::LogoInvalid(appid, _) => {
                ApiError::new(Code::FailedPrecondition, "LOGO_INVALID", message).with("unit_appid", appid)
            }
            BureauError::Render(_) => ApiError::new(Code::Internal, "PDF_RENDER_FAILED", message),
            BureauError::PdfMismatch { .. } => ApiError::new(Code::DataLoss, "PDF_MISMATCH", message),
            BureauError::Wechat(error) => ApiError::from_call(&error),
            BureauError::Storage(error) => {
                tracing::error!(%error, "storage failure");
                ApiError::new(Code::Unavailable, "STORAGE_UNAVAILABLE", "the bureau's database is unavailable")
                    .retry_after(std::time::Duration::from_secs(1))
            }
            BureauError::WechatUnreachable { key, .. } => {
                ApiError::new(Code::Unavailable, "WECHAT_UNREACHABLE", message)
                    .with("unit_appid", key.unit_appid)
                    .with("order_id", key.order_id)
                    .retry_after(std::time::Duration::from_secs(5))
            }
            BureauError::ShuttingDown => ApiError::new(Code::Unavailable, "SHUTTING_DOWN", message)
                .retry_after(std::time::Duration::from_secs(1)),
            BureauError::NotReady => {
                ApiError::new(Code::Unavailable, "NOT_READY", message).retry_after(std::time::Duration::from_secs(1))
            }
            BureauError::Busy(_) => {
                ApiError::new(Code::Unavailable, "BUSY", message).retry_after(std::time::Duration::from_secs(1))
            }
        };
        api.into_status(DOMAIN)
    }
}
