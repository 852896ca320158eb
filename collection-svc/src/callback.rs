//! The collection units' HTTP callback endpoint, `/wechat/callback/{appid}`: URL verification
//! and event pushes in plain, compatible or safe mode. A verified `user_authorize_invoice` is
//! recorded (deduplicated), applied and its IssueBill queued in one transaction, and answered
//! `success` at once: the bureau is never waited for. Forged, malformed or oversized requests
//! are refused without any effect.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use sha2::{Digest, Sha256};
use wechat::callback::message::{EVENT_UPDATE_INVOICE_STATUS, EVENT_USER_AUTHORIZE_INVOICE};
use wechat::callback::{CallbackError, CallbackQuery, MAX_PUSH_BYTES, open_push, verify_url};

use fiscalbill_common::metrics::Metrics;

use crate::app::App;
use crate::store::{PushOutcome, PushRow};
use crate::units::Units;
use fiscalbill_common::lifecycle::AppCell;

#[derive(Clone)]
pub struct CallbackState {
    pub units: Arc<Units>,
    pub app: AppCell<App>,
    /// Forwards pushes meant for the bureau (self-built platform).
    pub forwarder: reqwest::Client,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: CallbackState) -> Router {
    Router::new()
        .route("/wechat/callback/{appid}", get(verify).post(receive))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
        .with_state(state)
}

pub fn forwarder() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(3)).no_proxy().build().expect("HTTP client builds")
}

fn refuse(metrics: &Metrics, appid: &str, error: &CallbackError) -> Response {
    tracing::warn!(appid, reason = error.reason(), %error, "callback request refused");
    metrics.record_push(&format!("refused_{}", error.reason()));
    (StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST), error.reason()).into_response()
}

async fn verify(State(state): State<CallbackState>, Path(appid): Path<String>, RawQuery(query): RawQuery) -> Response {
    let Some(unit) = state.units.get(&appid) else {
        return (StatusCode::NOT_FOUND, "no such unit").into_response();
    };
    match verify_url(&unit.keys, &CallbackQuery::parse(&query.unwrap_or_default())) {
        Ok(echostr) => echostr.into_response(),
        Err(error) => refuse(&state.metrics, &appid, &error),
    }
}

async fn receive(
    State(state): State<CallbackState>,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(unit) = state.units.get(&appid) else {
        return (StatusCode::NOT_FOUND, "no such unit").into_response();
    };
    let raw_query = query.unwrap_or_default();
    let opened = match open_push(&unit.keys, &CallbackQuery::parse(&raw_query), &body) {
        Ok(opened) => opened,
        Err(error) => return refuse(&state.metrics, &appid, &error),
    };
    if opened.used_previous_key {
        tracing::warn!(%appid, "push decrypted with the previous EncodingAESKey: WeChat still uses the old key");
    }
    match opened.message.event() {
        Some(EVENT_USER_AUTHORIZE_INVOICE) => {}
        Some(EVENT_UPDATE_INVOICE_STATUS) if unit.forward_url.is_some() => {
            state.metrics.record_push("forwarded");
            return forward(&state.forwarder, unit.forward_url.as_deref().unwrap_or_default(), &raw_query, body).await;
        }
        other => {
            tracing::info!(%appid, event = other.unwrap_or_default(), "push without a collection event acknowledged");
            state.metrics.record_push("ignored");
            return "success".into_response();
        }
    }
    let event = match opened.message.authorize_event() {
        Ok(event) => event,
        Err(error) => return refuse(&state.metrics, &appid, &CallbackError::Message(error)),
    };
    let Some(app) = state.app.get() else {
        // Not acknowledged: WeChat retries, and the service is ready by then.
        return (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response();
    };
    // WeChat's retries and later replays of a push carry the same values: one key.
    let dedupe_key = hex::encode(Sha256::digest(
        format!("{appid}\n{}\n{}\n{}\n{}", event.openid, event.create_time, event.order_id, event.authorized)
            .as_bytes(),
    ));
    let row = PushRow {
        dedupe_key: &dedupe_key,
        unit_appid: &appid,
        order_id: &event.order_id,
        openid: &event.openid,
        authorize_appid: event.authorize_appid.as_deref(),
        s_pappid: event.s_pappid.as_deref(),
        authorized: event.authorized,
        create_time: event.create_time,
        body: &String::from_utf8_lossy(&opened.plaintext),
    };
    match app.authorizations.record_push(&row).await {
        Ok(PushOutcome::SpAppIdMismatch) => {
            // Verified, but about an order of another s_pappid than this one was created
            // under: nothing is recorded or changed.
            tracing::warn!(%appid, order_id = %event.order_id, "push refused: its SPAppId is not the order's s_pappid");
            state.metrics.record_push("refused_spappid_mismatch");
            (StatusCode::BAD_REQUEST, "spappid_mismatch").into_response()
        }
        Ok(outcome) => {
            tracing::info!(%appid, order_id = %event.order_id, outcome = outcome.as_str(), "authorization push");
            state.metrics.record_push(outcome.as_str());
            "success".into_response()
        }
        Err(error) => {
            tracing::error!(%error, "cannot record a push; WeChat will retry");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable").into_response()
        }
    }
}

/// Passes a push on unchanged (query and body); acknowledged only if the target acknowledged
/// it as WeChat requires (HTTP 200 with `success` or an empty body).
async fn forward(client: &reqwest::Client, url: &str, query: &str, body: Bytes) -> Response {
    let separator = if url.contains('?') { '&' } else { '?' };
    let sent = client.post(format!("{url}{separator}{query}")).body(body).send().await;
    match sent {
        Ok(answer) if answer.status() == StatusCode::OK => match answer.text().await {
            Ok(text) if text.is_empty() || text == "success" => "success".into_response(),
            _ => {
                tracing::warn!("forwarded push answered abnormally");
                (StatusCode::BAD_GATEWAY, "forward answered abnormally").into_response()
            }
        },
        Ok(answer) => {
            tracing::warn!(status = answer.status().as_u16(), "forwarded push refused");
            (StatusCode::BAD_GATEWAY, "forward refused").into_response()
        }
        Err(error) => {
            tracing::warn!(error = %error.without_url(), "cannot forward a push");
            (StatusCode::BAD_GATEWAY, "forward failed").into_response()
        }
    }
}
