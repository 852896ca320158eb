//! The control API under `/sandbox/` for tests, demos and people: accounts, the payer's
//! answer, card packages, faults, the clock, statistics, pushes and reset. JSON in and out;
//! errors are `{"error": "..."}` with a 4xx status.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use wechat::types::ReimburseStatus;

use crate::Sandbox;
use crate::config::AccountConfig;
use crate::faults::{FaultAction, FaultRule};
use crate::invoice::{Answer, AnswerError};
use crate::pages;

/// The openid the authorization page suggests.
pub const DEMO_OPENID: &str = "oSandboxDemoUser00000000000";

pub fn router(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/sandbox/") }))
        .route("/sandbox/", get(index))
        .route("/sandbox/accounts", get(list_accounts).post(upsert_account))
        .route("/sandbox/accounts/{appid}/invalidate-tokens", post(invalidate_tokens))
        .route("/sandbox/auth/{id}", get(auth_page).post(auth_form))
        .route("/sandbox/authorize", post(authorize))
        .route("/sandbox/orders", get(list_orders))
        .route("/sandbox/users/{openid}", get(card_package_page))
        .route("/sandbox/users/{openid}/cards", get(card_package))
        .route("/sandbox/users/{openid}/messages", get(messages))
        .route("/sandbox/cards/{code}/pdf", get(card_pdf))
        .route("/sandbox/cards/{code}/status", post(reimburser_status))
        .route("/sandbox/pdf/{token}", get(pdf_link))
        .route("/mmbiz/{id}/0", get(image))
        .route("/sandbox/templates", get(list_templates))
        .route("/sandbox/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/sandbox/faults/{id}", axum::routing::delete(remove_fault))
        .route("/sandbox/clock", get(clock))
        .route("/sandbox/clock/advance", post(advance_clock))
        .route("/sandbox/stats", get(stats))
        .route("/sandbox/pushes", get(list_pushes))
        .route("/sandbox/push-settings", post(push_settings))
        .route("/sandbox/pushes/{id}", get(get_push))
        .route("/sandbox/pushes/{id}/replay", post(replay_push))
        .route("/sandbox/reset", post(reset))
        .with_state(sandbox)
}

/// A JSON body, whatever its Content-Type says (`curl -d` sends form encoding by default).
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = bytes::Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn index(State(sandbox): State<Sandbox>) -> Html<String> {
    let accounts: Vec<AccountConfig> = sandbox.world().accounts.values().cloned().collect();
    Html(pages::index(&accounts, DEMO_OPENID))
}

async fn list_accounts(State(sandbox): State<Sandbox>) -> Json<Value> {
    let accounts: Vec<Value> = sandbox.world().accounts.values().map(AccountConfig::redacted).collect();
    Json(json!({ "accounts": accounts }))
}

async fn upsert_account(State(sandbox): State<Sandbox>, JsonBody(account): JsonBody<AccountConfig>) -> Response {
    if !account.appid.starts_with("wx") || account.appid.len() != 18 {
        return error(StatusCode::BAD_REQUEST, "appid must be wx followed by 16 characters");
    }
    if account.secret.is_empty() {
        return error(StatusCode::BAD_REQUEST, "secret must not be empty");
    }
    let listed = account.redacted();
    sandbox.upsert_account(account);
    Json(listed).into_response()
}

async fn invalidate_tokens(State(sandbox): State<Sandbox>, Path(appid): Path<String>) -> Json<Value> {
    let now = sandbox.now();
    let invalidated = sandbox.world().invalidate_tokens(&appid, now);
    Json(json!({ "invalidated": invalidated }))
}

async fn auth_page(State(sandbox): State<Sandbox>, Path(id): Path<String>) -> Response {
    let now = sandbox.now();
    let world = sandbox.world();
    let Some(link) = world.links.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html(pages::message("Authorization", "This authorization link does not exist.")),
        )
            .into_response();
    };
    if link.expires_at <= now {
        return (StatusCode::GONE, Html(pages::message("Authorization", "This authorization link has expired.")))
            .into_response();
    }
    // An order already answered, or rejected by the unit, offers no buttons any more.
    let order = (link.s_pappid.clone(), link.appid.clone(), link.order_id.clone());
    let answered = match world.orders.get(&order) {
        Some(crate::world::OrderState::Rejected { .. }) => {
            Some("The collection unit has rejected this order: no bill will be issued for it.")
        }
        Some(crate::world::OrderState::Authorized { .. }) => Some("This order is authorized already."),
        Some(crate::world::OrderState::Declined { .. }) => Some("This order was declined."),
        None => None,
    };
    if let Some(text) = answered {
        return (StatusCode::CONFLICT, Html(pages::message("Authorization", text))).into_response();
    }
    let unit = world.push_recipient(&link.appid).map(|a| a.name.clone()).unwrap_or_default();
    let bureau =
        world.bureau_of(&link.s_pappid).and_then(|b| world.account(b)).map(|a| a.name.clone()).unwrap_or_default();
    Html(pages::auth(link, &unit, &bureau, DEMO_OPENID)).into_response()
}

#[derive(Deserialize)]
struct AuthForm {
    action: String,
    openid: String,
}

async fn auth_form(State(sandbox): State<Sandbox>, Path(id): Path<String>, Form(form): Form<AuthForm>) -> Response {
    let answer = match form.action.as_str() {
        "authorize" => Answer::Authorize,
        "decline" => Answer::Decline,
        _ => return error(StatusCode::BAD_REQUEST, "action must be authorize or decline"),
    };
    match answer_and_push(&sandbox, &id, &form.openid, answer, false).await {
        Ok(result) => {
            let redirect = result.get("redirect_url").and_then(Value::as_str).map(str::to_owned);
            Html(pages::answered(answer == Answer::Authorize, &form.openid, redirect.as_deref())).into_response()
        }
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    /// The link to answer...
    auth_url: Option<String>,
    /// ...or the order, by s_pappid, authorizing appid and order_id (its newest link).
    s_pappid: Option<String>,
    appid: Option<String>,
    order_id: Option<String>,
    #[serde(default = "demo_openid")]
    openid: String,
    #[serde(default)]
    decline: bool,
    /// Answer only after the push was delivered (or ran out of attempts).
    #[serde(default)]
    wait: bool,
}

fn demo_openid() -> String {
    DEMO_OPENID.to_owned()
}

/// Answers as the payer: `{"auth_url": ..., "openid": ..., "decline": false, "wait": true}`.
async fn authorize(State(sandbox): State<Sandbox>, JsonBody(request): JsonBody<AuthorizeRequest>) -> Response {
    let link_id = match (&request.auth_url, &request.s_pappid, &request.appid, &request.order_id) {
        (Some(url), None, None, None) => match url.rsplit_once("/sandbox/auth/") {
            Some((_, id)) => id.split(['?', '#']).next().unwrap_or_default().to_owned(),
            None => return error(StatusCode::BAD_REQUEST, "auth_url is not a sandbox authorization link"),
        },
        (None, Some(s_pappid), Some(appid), Some(order_id)) => {
            match sandbox.world().latest_link(s_pappid, appid, order_id) {
                Some(link) => link.id.clone(),
                None => return error(StatusCode::NOT_FOUND, "no authorization link for this order"),
            }
        }
        _ => return error(StatusCode::BAD_REQUEST, "give auth_url, or s_pappid + appid + order_id"),
    };
    let answer = if request.decline { Answer::Decline } else { Answer::Authorize };
    match answer_and_push(&sandbox, &link_id, &request.openid, answer, request.wait).await {
        Ok(result) => Json(result).into_response(),
        Err(response) => response,
    }
}

async fn answer_and_push(
    sandbox: &Sandbox,
    link_id: &str,
    openid: &str,
    answer: Answer,
    wait: bool,
) -> Result<Value, Response> {
    let now = sandbox.now();
    let answered = sandbox.world().answer(link_id, openid, answer, now).map_err(|e| {
        let status = match e {
            AnswerError::UnknownLink => StatusCode::NOT_FOUND,
            AnswerError::Expired => StatusCode::GONE,
            AnswerError::Rejected | AnswerError::AlreadyAnswered => StatusCode::CONFLICT,
            AnswerError::BadOpenid => StatusCode::BAD_REQUEST,
        };
        error(status, e.to_string())
    })?;
    let push_id = sandbox.push_answer(&answered);
    // Without `wait`, the push as it stands (delivery under way, or done already).
    let push = if wait {
        sandbox.wait_for_push(push_id, Duration::from_secs(60)).await
    } else {
        sandbox.world().push(push_id).cloned()
    };
    Ok(json!({
        "order_id": answered.link.order_id,
        "appid": answered.link.appid,
        "openid": answered.openid,
        "authorized": answer == Answer::Authorize,
        "redirect_url": answered.link.redirect_url,
        "push_id": push_id,
        "push": push,
    }))
}

async fn list_orders(State(sandbox): State<Sandbox>) -> Json<Value> {
    let world = sandbox.world();
    let orders: Vec<Value> = world
        .orders
        .iter()
        .map(|((s_pappid, appid, order_id), state)| {
            let state = match state {
                crate::world::OrderState::Authorized { openid, at } => {
                    json!({"state": "authorized", "openid": openid, "at": at})
                }
                crate::world::OrderState::Declined { openid, at } => {
                    json!({"state": "declined", "openid": openid, "at": at})
                }
                crate::world::OrderState::Rejected { reason, url, at } => {
                    json!({"state": "rejected", "reason": reason, "url": url, "at": at})
                }
            };
            json!({"s_pappid": s_pappid, "appid": appid, "order_id": order_id, "answer": state})
        })
        .collect();
    Json(json!({ "orders": orders }))
}

fn card_json(sandbox: &Sandbox, bill: &crate::world::CardBill) -> Value {
    json!({
        "code": bill.code, "card_id": bill.card_id, "issuer": bill.issuer, "appid": bill.appid,
        "order_id": bill.order_id, "openid": bill.openid, "fee": bill.fee, "title": bill.title,
        "billing_time": bill.billing_time, "billing_no": bill.billing_no, "billing_code": bill.billing_code,
        "reimburse_status": bill.status.as_str(), "written_off": bill.status.is_final(), "pdf_sha256": bill.pdf_sha256, "pdf_size": bill.pdf.len(),
        "pdf_url": format!("{}/sandbox/cards/{}/pdf", sandbox.public_url(), bill.code), "inserted_at": bill.inserted_at,
    })
}

async fn card_package(State(sandbox): State<Sandbox>, Path(openid): Path<String>) -> Json<Value> {
    let world = sandbox.world();
    let cards: Vec<Value> = world.card_package(&openid).into_iter().map(|b| card_json(&sandbox, b)).collect();
    Json(json!({ "openid": openid, "cards": cards }))
}

/// What WeChat showed the payer, newest first: bill notifications and service notices.
async fn messages(State(sandbox): State<Sandbox>, Path(openid): Path<String>) -> Json<Value> {
    let world = sandbox.world();
    let messages: Vec<Value> = world
        .messages_of(&openid)
        .into_iter()
        .map(|m| {
            json!({
                "at": m.at, "kind": m.kind, "from": m.from, "text": m.text,
                "link": m.link.as_ref().map(|link| format!("{}{link}", sandbox.public_url())),
            })
        })
        .collect();
    Json(json!({ "openid": openid, "messages": messages }))
}

async fn card_package_page(State(sandbox): State<Sandbox>, Path(openid): Path<String>) -> Html<String> {
    let world = sandbox.world();
    let cards: Vec<(crate::world::CardBill, String)> = world
        .card_package(&openid)
        .into_iter()
        .map(|b| {
            let payee = world.templates.get(&b.card_id).map(|t| t.payee.clone()).unwrap_or_default();
            (b.clone(), payee)
        })
        .collect();
    let messages: Vec<crate::world::PayerMessage> = world.messages_of(&openid).into_iter().cloned().collect();
    Html(pages::card_package(&openid, &messages, &cards))
}

fn pdf_response(pdf: bytes::Bytes) -> Response {
    ([(http::header::CONTENT_TYPE, "application/pdf")], pdf).into_response()
}

async fn card_pdf(State(sandbox): State<Sandbox>, Path(code): Path<String>) -> Response {
    match sandbox.world().bill_by_code(&code) {
        Some(bill) => pdf_response(bill.pdf.clone()),
        None => error(StatusCode::NOT_FOUND, "no such card"),
    }
}

/// The file behind a getpdf `pdf_url`, as WeChat serves it (counted as `/sandbox/pdf`, and
/// subject to faults on that path).
async fn pdf_link(State(sandbox): State<Sandbox>, Path(token): Path<String>) -> Response {
    const PATH: &str = "/sandbox/pdf";
    let now = sandbox.now();
    let mut world = sandbox.world();
    let Some((owner, pdf)) = world.pdf_by_link(&token, now) else {
        return error(StatusCode::NOT_FOUND, "no such PDF link, or it expired");
    };
    world.count_call(PATH, Some(&owner));
    match world.pick_fault(PATH, Some(&owner)) {
        Some(FaultAction::Corrupt) => {
            let mut altered = pdf.to_vec();
            if let Some(last) = altered.iter_mut().rev().find(|b| b.is_ascii_digit()) {
                *last = if *last == b'0' { b'1' } else { b'0' };
            }
            altered.extend_from_slice(b"\n% altered\n");
            pdf_response(altered.into())
        }
        Some(FaultAction::HttpStatus { status }) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY).into_response()
        }
        _ => pdf_response(pdf),
    }
}

/// An image uploaded through uploadimg, at the URL the upload answered.
async fn image(State(sandbox): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sandbox.world().images.get(&id) {
        Some(image) => {
            let mime =
                wechat::image::ImageKind::of(&image.bytes).map_or("application/octet-stream", |kind| kind.mime());
            ([(http::header::CONTENT_TYPE, mime)], image.bytes.clone()).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such image"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    reimburse_status: String,
}

/// A reimbursing party changes the status; the issuer gets `update_invoice_status`.
async fn reimburser_status(
    State(sandbox): State<Sandbox>,
    Path(code): Path<String>,
    JsonBody(request): JsonBody<StatusRequest>,
) -> Response {
    let Some(status) = ReimburseStatus::parse(&request.reimburse_status) else {
        return error(StatusCode::BAD_REQUEST, "reimburse_status must be an INVOICE_REIMBURSE_* value");
    };
    let change = match sandbox.world().reimburser_sets_status(&code, status) {
        Ok(change) => change,
        Err(message) => return error(StatusCode::CONFLICT, message),
    };
    let push_id = sandbox.push_status(&change);
    Json(json!({"code": code, "reimburse_status": status.as_str(), "push_id": push_id})).into_response()
}

async fn list_templates(State(sandbox): State<Sandbox>) -> Json<Value> {
    let world = sandbox.world();
    let templates: Vec<Value> = world
        .templates
        .values()
        .map(|t| json!({"card_id": t.card_id, "owner": t.owner, "payee": t.payee, "logo_url": t.logo_url, "created_at": t.created_at}))
        .collect();
    Json(json!({ "templates": templates }))
}

async fn list_faults(State(sandbox): State<Sandbox>) -> Json<Value> {
    Json(json!({ "faults": sandbox.world().faults }))
}

async fn add_fault(State(sandbox): State<Sandbox>, JsonBody(rule): JsonBody<FaultRule>) -> Response {
    match sandbox.world().add_fault(rule) {
        Ok(id) => Json(json!({ "id": id })).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn clear_faults(State(sandbox): State<Sandbox>) -> Json<Value> {
    let mut world = sandbox.world();
    let removed = world.faults.len();
    world.faults.clear();
    Json(json!({ "removed": removed }))
}

async fn remove_fault(State(sandbox): State<Sandbox>, Path(id): Path<u64>) -> Response {
    let mut world = sandbox.world();
    let before = world.faults.len();
    world.faults.retain(|f| f.id != id);
    if world.faults.len() == before {
        error(StatusCode::NOT_FOUND, "no such fault")
    } else {
        Json(json!({"removed": 1})).into_response()
    }
}

async fn clock(State(sandbox): State<Sandbox>) -> Json<Value> {
    Json(json!({ "now": sandbox.now(), "offset": sandbox.inner.clock.offset() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(State(sandbox): State<Sandbox>, JsonBody(advance): JsonBody<Advance>) -> Response {
    if advance.seconds < 0 {
        return error(StatusCode::BAD_REQUEST, "the clock only moves forward");
    }
    sandbox.inner.clock.advance(advance.seconds);
    Json(json!({ "now": sandbox.now(), "offset": sandbox.inner.clock.offset() })).into_response()
}

async fn stats(State(sandbox): State<Sandbox>) -> Json<Value> {
    Json(sandbox.world().stats_json())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushSettings {
    /// Deliver each push this many times (1..=10), acknowledged or not.
    copies: u32,
}

async fn push_settings(State(sandbox): State<Sandbox>, JsonBody(settings): JsonBody<PushSettings>) -> Response {
    if !(1..=10).contains(&settings.copies) {
        return error(StatusCode::BAD_REQUEST, "copies must be 1 to 10");
    }
    sandbox.world().push_copies = settings.copies;
    Json(json!({ "copies": settings.copies })).into_response()
}

async fn list_pushes(State(sandbox): State<Sandbox>) -> Json<Value> {
    Json(json!({ "pushes": sandbox.world().pushes }))
}

async fn get_push(State(sandbox): State<Sandbox>, Path(id): Path<u64>) -> Response {
    match sandbox.world().push(id) {
        Some(push) => Json(json!(push)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such push"),
    }
}

async fn replay_push(State(sandbox): State<Sandbox>, Path(id): Path<u64>) -> Response {
    match sandbox.replay(id) {
        Some(replay) => {
            let push = sandbox.wait_for_push(replay, Duration::from_secs(30)).await;
            Json(json!({ "push_id": replay, "push": push })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such push"),
    }
}

async fn reset(State(sandbox): State<Sandbox>) -> Json<Value> {
    sandbox.world().reset();
    Json(json!({ "reset": true }))
}
