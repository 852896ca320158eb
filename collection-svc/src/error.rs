//! collection-svc's errors and their one exhaustive mapping to gRPC statuses.

use std::time::Duration;

use fiscalbill_common::status::{ApiError, Violations};
use tonic::{Code, Status};
use wechat::CallError;

use crate::domain::{AuthState, OrderKey};

/// The ErrorInfo domain of every collection-svc error.
pub const DOMAIN: &str = "collection.fiscalbill";

#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    #[error("{}", .0.message)]
    Invalid(ApiError),
    #[error("collection unit {0} is not served here")]
    UnitNotServed(String),
    #[error("collection unit {0} has no App configured for the App scenario")]
    AppNotConfigured(String),
    #[error("WeChat account {0} is not a unit or App served here")]
    AccountNotServed(String),
    #[error("no authorization for order {0}")]
    NotFound(OrderKey),
    #[error("order {0} already has an authorization with different data")]
    OrderConflict(OrderKey),
    #[error("billing number {billing_no}/{billing_code} belongs to order {holder}")]
    BillingNumberTaken { billing_no: String, billing_code: String, holder: OrderKey },
    #[error("order {key} failed with {reason}, which the same request to the bureau would meet again")]
    RetryCannotFix { key: OrderKey, reason: String },
    #[error("request_id {0:?} was used for another order")]
    RequestIdReused(String),
    #[error("order {key} is {}: cannot {action}", state.as_str())]
    WrongState { key: OrderKey, state: AuthState, action: &'static str },
    #[error("the bill of order {0} is being handed to the bureau right now; try again shortly")]
    IssueInProgress(OrderKey),
    #[error(transparent)]
    Wechat(#[from] CallError),
    #[error("the bureau is unavailable: {0}")]
    BureauUnavailable(String),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("collection-svc is starting: its database is not ready")]
    NotReady,
    #[error(
        "collection-svc is shutting down: watch again with the last resume_token (another replica, or this one once back)"
    )]
    ShuttingDown,
    #[error(
        "the changes after this resume_token were deleted (older than watch_retention_hours): read the current state with ListAuthorizations and watch from now"
    )]
    ResumeTokenExpired,
}

impl From<ApiError> for CollectionError {
    fn from(error: ApiError) -> Self {
        CollectionError::Invalid(error)
    }
}

fn order(api: ApiError, key: &OrderKey) -> ApiError {
    api.with("unit_appid", &key.unit_appid).with("order_id", &key.order_id)
}

impl From<CollectionError> for Status {
    fn from(error: CollectionError) -> Self {
        let message = error.to_string();
        let api = match error {
            CollectionError::Invalid(api) => api,
            CollectionError::UnitNotServed(appid) => {
                ApiError::new(Code::FailedPrecondition, "UNIT_NOT_SERVED", message).with("unit_appid", appid)
            }
            CollectionError::AppNotConfigured(appid) => {
                ApiError::new(Code::FailedPrecondition, "APP_NOT_CONFIGURED", message).with("unit_appid", appid)
            }
            CollectionError::AccountNotServed(appid) => {
                ApiError::new(Code::NotFound, "ACCOUNT_NOT_SERVED", message).with("appid", appid)
            }
            CollectionError::NotFound(key) => {
                order(ApiError::new(Code::NotFound, "AUTHORIZATION_NOT_FOUND", message), &key)
            }
            CollectionError::OrderConflict(key) => {
                order(ApiError::new(Code::AlreadyExists, "ORDER_CONFLICT", message), &key)
            }
            CollectionError::BillingNumberTaken { billing_no, billing_code, holder } => {
                ApiError::new(Code::AlreadyExists, "BILLING_NUMBER_TAKEN", message)
                    .with("billing_no", billing_no)
                    .with("billing_code", billing_code)
                    .with("other_unit_appid", &holder.unit_appid)
                    .with("other_order_id", &holder.order_id)
            }
            CollectionError::RetryCannotFix { key, reason } => {
                order(ApiError::new(Code::FailedPrecondition, "RETRY_CANNOT_FIX", message), &key)
                    .with("failure_reason", reason)
            }
            CollectionError::RequestIdReused(request_id) => {
                let mut violations = Violations::default();
                violations.add("request_id", "was already used for another order");
                let mut api = ApiError::invalid_argument(violations).with("request_id", request_id);
                api.reason = "REQUEST_ID_REUSED";
                api
            }
            CollectionError::WrongState { key, state, .. } => {
                order(ApiError::new(Code::FailedPrecondition, "INVALID_STATE", message), &key)
                    .with("state", state.as_str())
            }
            CollectionError::IssueInProgress(key) => {
                order(ApiError::new(Code::FailedPrecondition, "ISSUE_IN_PROGRESS", message), &key)
                    .retry_after(Duration::from_secs(2))
            }
            CollectionError::Wechat(error) => ApiError::from_call(&error),
            CollectionError::BureauUnavailable(_) => {
                ApiError::new(Code::Unavailable, "BUREAU_UNAVAILABLE", message).retry_after(Duration::from_secs(1))
            }
            CollectionError::Storage(error) => {
                tracing::error!(%error, "storage failure");
                ApiError::new(Code::Unavailable, "STORAGE_UNAVAILABLE", "the collection unit's database is unavailable")
                    .retry_after(Duration::from_secs(1))
            }
            CollectionError::NotReady => {
                ApiError::new(Code::Unavailable, "NOT_READY", message).retry_after(Duration::from_secs(1))
            }
            CollectionError::ResumeTokenExpired => ApiError::new(Code::OutOfRange, "RESUME_TOKEN_EXPIRED", message),
            CollectionError::ShuttingDown => {
                ApiError::new(Code::Unavailable, "SHUTTING_DOWN", message).retry_after(Duration::from_secs(1))
            }
        };
        api.into_status(DOMAIN)
    }
}
