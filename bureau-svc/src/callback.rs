//! The bureau's HTTP callback endpoint for WeChat pushes (`/wechat/callback`): URL
//! verification and `update_invoice_status` events, verified and decrypted per the account's
//! push mode. Forged or malformed requests are refused without any effect; every verified push
//! is acknowledged at once with `success`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use wechat::callback::{CallbackError, CallbackKeys, CallbackQuery, MAX_PUSH_BYTES, open_push, verify_url};

use crate::app::App;
use crate::error::BureauError;
use fiscalbill_common::lifecycle::AppCell;
use fiscalbill_common::metrics::Metrics;

#[derive(Clone)]
pub struct CallbackState {
    pub keys: Option<CallbackKeys>,
    pub app: AppCell<App>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: CallbackState) -> Router {
    Router::new()
        .route("/wechat/callback", get(verify).post(receive))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
        .with_state(state)
}

fn refuse(metrics: &Metrics, error: &CallbackError) -> Response {
    tracing::warn!(reason = error.reason(), %error, "callback request refused");
    metrics.record_push(&format!("refused_{}", error.reason()));
    let status = match error {
        CallbackError::BadSignature
        | CallbackError::BadMsgSignature
        | CallbackError::AppidMismatch
        | CallbackError::Decrypt(_) => StatusCode::FORBIDDEN,
        CallbackError::Message(wechat::callback::MessageError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, error.reason()).into_response()
}

async fn verify(State(state): State<CallbackState>, RawQuery(query): RawQuery) -> Response {
    let Some(keys) = &state.keys else {
        return (StatusCode::NOT_FOUND, "callbacks are not configured").into_response();
    };
    match verify_url(keys, &CallbackQuery::parse(&query.unwrap_or_default())) {
        Ok(echostr) => echostr.into_response(),
        Err(error) => refuse(&state.metrics, &error),
    }
}

async fn receive(State(state): State<CallbackState>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let Some(keys) = &state.keys else {
        return (StatusCode::NOT_FOUND, "callbacks are not configured").into_response();
    };
    let opened = match open_push(keys, &CallbackQuery::parse(&query.unwrap_or_default()), &body) {
        Ok(opened) => opened,
        Err(error) => return refuse(&state.metrics, &error),
    };
    if opened.used_previous_key {
        tracing::warn!("push decrypted with the previous EncodingAESKey: WeChat still uses the old key");
    }
    match opened.message.event() {
        Some(wechat::callback::message::EVENT_UPDATE_INVOICE_STATUS) => {}
        other => {
            tracing::info!(event = other.unwrap_or_default(), "push without a bureau event acknowledged");
            state.metrics.record_push("ignored");
            return "success".into_response();
        }
    }
    let event = match opened.message.status_event() {
        Ok(event) => event,
        Err(error) => return refuse(&state.metrics, &CallbackError::Message(error)),
    };
    let Some(app) = state.app.get() else {
        // Not acknowledged: WeChat retries, and the bureau is ready by then.
        return (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response();
    };
    match app.reimburse.record_push(&event, &opened.plaintext).await {
        Ok(outcome) => {
            state.metrics.record_push(outcome.as_str());
            "success".into_response()
        }
        Err(BureauError::Storage(error)) => {
            tracing::error!(%error, "cannot record a status push; WeChat will retry");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable").into_response()
        }
        Err(error) => {
            tracing::error!(%error, "cannot record a status push");
            (StatusCode::INTERNAL_SERVER_ERROR, "error").into_response()
        }
    }
}
