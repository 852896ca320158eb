//! Proto messages ⇄ collection-svc's domain, with every violation reported at once.

use fiscalbill_common::bill::{
    BillContent, check_appid, check_order_id, check_page_size, check_request_id, optional_timestamp, timestamp,
};
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::types as types_pb;
use fiscalbill_common::status::{ApiError, Violations};
use fiscalbill_common::trace::TraceContext;
use wechat::types::AuthSource;

use crate::domain::{
    AuthChange, AuthQuery, AuthState, Authorization, ChangePosition, CreateRequest, OrderKey, WatchFilter,
};
use crate::watch::WatchItem;
use fiscalbill_common::paging::{Cursor, decode_token, encode_token};

fn check_url(violations: &mut Violations, field: &str, value: &str, https_only: bool) {
    let valid = url::Url::parse(value).is_ok_and(|url| {
        (url.scheme() == "https" || (!https_only && url.scheme() == "http")) && url.host_str().is_some()
    });
    if !valid || value.len() > 512 {
        let scheme = if https_only { "https" } else { "http(s)" };
        violations.add(field, format!("must be an absolute {scheme} URL of at most 512 characters"));
    }
}

pub fn create_request(
    request: pb::CreateAuthorizationRequest,
    trace: TraceContext,
    pdf_max_bytes: usize,
    now_secs: i64,
) -> Result<CreateRequest, ApiError> {
    let pb::CreateAuthorizationRequest { unit_appid, order_id, money, source, redirect_url, bill, pdf, request_id } =
        request;
    let mut violations = Violations::default();
    check_appid(&mut violations, "unit_appid", &unit_appid);
    check_order_id(&mut violations, "order_id", &order_id);
    let source = match types_pb::Source::try_from(source) {
        Ok(types_pb::Source::Web) => Some(AuthSource::Web),
        Ok(types_pb::Source::App) => Some(AuthSource::App),
        _ => {
            violations.add("source", "must be SOURCE_WEB or SOURCE_APP");
            None
        }
    };
    if !redirect_url.is_empty() {
        check_url(&mut violations, "redirect_url", &redirect_url, false);
    }
    let bill = BillContent::from_proto(bill.as_ref(), "bill", now_secs, &mut violations);
    match &bill {
        Some(bill) if money != bill.fee => violations.add("money", format!("must equal bill.fee ({} fen)", bill.fee)),
        _ if money <= 0 => violations.add("money", "must be > 0 fen"),
        _ => {}
    }
    if !pdf.is_empty()
        && let Err(error) = wechat::pdf::validate(&pdf, pdf_max_bytes)
    {
        violations.add("pdf", error.to_string());
    }
    check_request_id(&mut violations, "request_id", &request_id);
    violations.into_result()?;
    Ok(CreateRequest {
        key: OrderKey { unit_appid, order_id },
        money,
        source: source.expect("validated"),
        redirect_url: (!redirect_url.is_empty()).then_some(redirect_url),
        bill: bill.expect("validated"),
        pdf: (!pdf.is_empty()).then_some(pdf),
        request_id: (!request_id.is_empty()).then_some(request_id),
        trace,
    })
}

pub fn order_key(unit_appid: String, order_id: String) -> Result<OrderKey, ApiError> {
    let mut violations = Violations::default();
    check_appid(&mut violations, "unit_appid", &unit_appid);
    check_order_id(&mut violations, "order_id", &order_id);
    violations.into_result()?;
    Ok(OrderKey { unit_appid, order_id })
}

/// RejectAuthorization: the order, the reason and the optional URL.
pub fn reject_request(request: pb::RejectAuthorizationRequest) -> Result<(OrderKey, String, Option<String>), ApiError> {
    let pb::RejectAuthorizationRequest { unit_appid, order_id, reason, url } = request;
    let mut violations = Violations::default();
    check_appid(&mut violations, "unit_appid", &unit_appid);
    check_order_id(&mut violations, "order_id", &order_id);
    let chars = reason.chars().count();
    if reason.trim().is_empty() || chars > 128 || reason.chars().any(char::is_control) {
        violations.add("reason", "must be 1 to 128 characters");
    }
    if !url.is_empty() {
        check_url(&mut violations, "url", &url, true);
    }
    violations.into_result()?;
    Ok((OrderKey { unit_appid, order_id }, reason, (!url.is_empty()).then_some(url)))
}

pub fn appid(field: &str, value: &str) -> Result<(), ApiError> {
    let mut violations = Violations::default();
    check_appid(&mut violations, field, value);
    violations.into_result()
}

pub fn list_request(request: pb::ListAuthorizationsRequest) -> Result<AuthQuery, ApiError> {
    let pb::ListAuthorizationsRequest { unit_appid, state, page_size, page_token } = request;
    let mut violations = Violations::default();
    if !unit_appid.is_empty() {
        check_appid(&mut violations, "unit_appid", &unit_appid);
    }
    let state = match pb::AuthorizationState::try_from(state) {
        Ok(pb::AuthorizationState::Unspecified) => None,
        Ok(known) => Some(state_from_proto(known)),
        Err(_) => {
            violations.add("state", "is not an AuthorizationState value");
            None
        }
    };
    let limit = check_page_size(&mut violations, "page_size", page_size);
    let mut query = AuthQuery { unit_appid: (!unit_appid.is_empty()).then_some(unit_appid), state, limit, after: None };
    let after = Cursor::from_token(&page_token, LIST_AUTHORIZATIONS, &filters(&query));
    violations.add_with_others(&after);
    violations.into_result()?;
    query.after = after?;
    Ok(query)
}

const LIST_AUTHORIZATIONS: &str = "ListAuthorizations";

/// What a ListAuthorizations page token is bound to.
fn filters(query: &AuthQuery) -> [&str; 2] {
    [query.unit_appid.as_deref().unwrap_or_default(), query.state.map_or("", AuthState::as_str)]
}

/// The token of the ListAuthorizations page after `last`, for the same `query`.
pub fn page_token(query: &AuthQuery, last: &Authorization) -> String {
    Cursor { created_at: last.created_at, unit_appid: last.key.unit_appid.clone(), order_id: last.key.order_id.clone() }
        .token(LIST_AUTHORIZATIONS, &filters(query))
}

/// Orders one WatchAuthorizations stream may name.
const WATCH_MAX_ORDERS: usize = 1_000;
const WATCH_AUTHORIZATIONS: &str = "WatchAuthorizations";

pub fn watch_request(
    request: pb::WatchAuthorizationsRequest,
) -> Result<(WatchFilter, Option<ChangePosition>), ApiError> {
    let pb::WatchAuthorizationsRequest { unit_appid, order_ids, states, resume_token } = request;
    let mut violations = Violations::default();
    check_appid(&mut violations, "unit_appid", &unit_appid);
    if order_ids.len() > WATCH_MAX_ORDERS {
        violations.add("order_ids", format!("at most {WATCH_MAX_ORDERS} orders"));
    }
    for (i, order_id) in order_ids.iter().enumerate() {
        check_order_id(&mut violations, &format!("order_ids[{i}]"), order_id);
    }
    let mut wanted = Vec::new();
    for (i, state) in states.iter().enumerate() {
        match pb::AuthorizationState::try_from(*state) {
            Ok(pb::AuthorizationState::Unspecified) | Err(_) => {
                violations.add(format!("states[{i}]"), "must be an AuthorizationState other than UNSPECIFIED")
            }
            Ok(known) => wanted.push(state_from_proto(known)),
        }
    }
    let from = resume_position(&resume_token);
    violations.add_with_others(&from);
    violations.into_result()?;
    Ok((WatchFilter { unit_appid, order_ids: order_ids.into_iter().collect(), states: wanted }, from?))
}

/// The position of a resume token (None when empty). Tokens are not bound to filters: a
/// position in the change log means the same whatever a stream shows of it.
fn resume_position(token: &str) -> Result<Option<ChangePosition>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::invalid_field(
            "INVALID_RESUME_TOKEN",
            "resume_token",
            "is not a token from a previous WatchAuthorizations message",
        )
    };
    let [txid, seq] = decode_token(token, WATCH_AUTHORIZATIONS, &[]).map_err(|_| invalid())?;
    match (txid.parse::<i64>(), seq.parse::<i64>()) {
        (Ok(txid), Ok(seq)) if txid >= 0 && seq >= 0 => Ok(Some(ChangePosition { txid, seq })),
        _ => Err(invalid()),
    }
}

fn resume_token(position: ChangePosition) -> String {
    encode_token(WATCH_AUTHORIZATIONS, &[], &[&position.txid.to_string(), &position.seq.to_string()])
}

pub fn watch_response(item: WatchItem) -> pb::WatchAuthorizationsResponse {
    match item {
        WatchItem::Started(position) => {
            pb::WatchAuthorizationsResponse { change: None, resume_token: resume_token(position) }
        }
        WatchItem::Change(change) => pb::WatchAuthorizationsResponse {
            resume_token: resume_token(change.position),
            change: Some(change_to_proto(*change)),
        },
    }
}

fn change_to_proto(change: AuthChange) -> pb::AuthorizationChange {
    pb::AuthorizationChange {
        unit_appid: change.key.unit_appid,
        order_id: change.key.order_id,
        state: state_to_proto(change.state) as i32,
        change_time: Some(timestamp(change.changed_at)),
        card_id: change.card_id.unwrap_or_default(),
        card_code: change.card_code.unwrap_or_default(),
        failure: change.failure.as_ref().map(|f| f.to_proto()),
    }
}

fn state_from_proto(state: pb::AuthorizationState) -> AuthState {
    match state {
        pb::AuthorizationState::Pending | pb::AuthorizationState::Unspecified => AuthState::Pending,
        pb::AuthorizationState::Authorized => AuthState::Authorized,
        pb::AuthorizationState::Issuing => AuthState::Issuing,
        pb::AuthorizationState::Issued => AuthState::Issued,
        pb::AuthorizationState::IssueFailed => AuthState::IssueFailed,
        pb::AuthorizationState::Declined => AuthState::Declined,
        pb::AuthorizationState::Rejected => AuthState::Rejected,
        pb::AuthorizationState::Expired => AuthState::Expired,
    }
}

fn state_to_proto(state: AuthState) -> pb::AuthorizationState {
    match state {
        AuthState::Pending => pb::AuthorizationState::Pending,
        AuthState::Authorized => pb::AuthorizationState::Authorized,
        AuthState::Issuing => pb::AuthorizationState::Issuing,
        AuthState::Issued => pb::AuthorizationState::Issued,
        AuthState::IssueFailed => pb::AuthorizationState::IssueFailed,
        AuthState::Declined => pb::AuthorizationState::Declined,
        AuthState::Rejected => pb::AuthorizationState::Rejected,
        AuthState::Expired => pb::AuthorizationState::Expired,
    }
}

pub fn to_proto(auth: &Authorization) -> pb::Authorization {
    pb::Authorization {
        unit_appid: auth.key.unit_appid.clone(),
        order_id: auth.key.order_id.clone(),
        state: state_to_proto(auth.state) as i32,
        source: match auth.source {
            AuthSource::Web => types_pb::Source::Web,
            AuthSource::App => types_pb::Source::App,
        } as i32,
        money: auth.money,
        bill: Some(auth.bill.to_proto()),
        auth_url: auth.auth_url.clone(),
        auth_url_expire_time: Some(timestamp(auth.auth_url_expires_at)),
        redirect_url: auth.redirect_url.clone().unwrap_or_default(),
        openid: auth.openid.clone().unwrap_or_default(),
        authorize_time: optional_timestamp(auth.authorize_time),
        card_id: auth.card_id.clone().unwrap_or_default(),
        card_code: auth.card_code.clone().unwrap_or_default(),
        failure: auth.failure.as_ref().map(|f| f.to_proto()),
        issue_attempts: auth.issue_attempts.min(i64::from(i32::MAX)) as i32,
        reject_reason: auth.reject_reason.clone().unwrap_or_default(),
        request_id: auth.request_id.clone().unwrap_or_default(),
        create_time: Some(timestamp(auth.created_at)),
        update_time: Some(timestamp(auth.updated_at)),
        authorized_appid: auth.authorized_appid.clone(),
    }
}
