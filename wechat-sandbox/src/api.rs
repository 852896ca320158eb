//! The WeChat API endpoints. One handler routes every call through the same steps WeChat
//! takes: count it, apply any injected fault, check the method and the access token, run the
//! endpoint, and answer JSON with a ` rid: ...` on errors.

use std::collections::HashMap;
use wechat::rulebook;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Map, Value};
use wechat::Endpoint;

use crate::Sandbox;
use crate::faults::FaultAction;
use crate::fields;
use crate::server::ConnectionControl;
use crate::world::{HEX, WxError, WxResult, random_string};

pub fn router(sandbox: Sandbox) -> Router {
    let limit = sandbox.config().pdf_max_bytes + 1024 * 1024;
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        router = router.route(endpoint.path(), any(handle));
    }
    router.layer(DefaultBodyLimit::max(limit)).with_state(sandbox)
}

/// Query parameters, percent-decoded; the first occurrence wins.
fn parse_query(uri: &Uri) -> HashMap<String, String> {
    let mut query = HashMap::new();
    for pair in uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        query.entry(decode(key)).or_insert_with(|| decode(value));
    }
    query
}

async fn handle(
    State(sandbox): State<Sandbox>,
    axum::Extension(connection): axum::Extension<ConnectionControl>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let endpoint = Endpoint::from_path(uri.path()).expect("routed paths are endpoints");
    let path = endpoint.path();
    let query = parse_query(&uri);
    let appid = caller_appid(&sandbox, endpoint, &query, &body);

    let fault = {
        let mut world = sandbox.world();
        world.count_call(path, appid.as_deref());
        world.pick_fault(path, appid.as_deref())
    };
    let mut drop_after = false;
    match fault {
        Some(FaultAction::Errcode { errcode, errmsg }) => {
            return answer(&sandbox, path, appid.as_deref(), Err(WxError::injected(errcode, errmsg)));
        }
        Some(FaultAction::Error { name }) => {
            let rule = rulebook::by_name(&name).expect("fault names are checked when added");
            return answer(&sandbox, path, appid.as_deref(), Err(WxError::from(rule)));
        }
        Some(FaultAction::HttpStatus { status }) => {
            sandbox.world().count_outcome(path, appid.as_deref(), format!("http_{status}"));
            return StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response();
        }
        Some(FaultAction::Delay { delay_ms }) => tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await,
        Some(FaultAction::Drop { after_processing: false }) => {
            sandbox.world().count_outcome(path, appid.as_deref(), "dropped".to_owned());
            connection.drop_connection().await;
        }
        Some(FaultAction::Drop { after_processing: true }) => drop_after = true,
        // Only for downloads (`/sandbox/pdf`): refused for API paths when added.
        Some(FaultAction::Corrupt) | None => {}
    }

    let result = if endpoint.is_get() && method != Method::GET {
        Err(WxError::from(&rulebook::REQUIRE_GET))
    } else if !endpoint.is_get() && method != Method::POST {
        Err(WxError::from(&rulebook::REQUIRE_POST))
    } else {
        run(&sandbox, endpoint, &query, &headers, body).await
    };
    let response = answer(&sandbox, path, appid.as_deref(), result);
    if drop_after {
        sandbox.world().count_outcome(path, appid.as_deref(), "dropped_after_processing".to_owned());
        connection.drop_connection().await;
    }
    response
}

/// The account a call is made by: named in the request for token fetches, else the owner of
/// the access token (known even when the token is no longer valid).
fn caller_appid(sandbox: &Sandbox, endpoint: Endpoint, query: &HashMap<String, String>, body: &[u8]) -> Option<String> {
    match endpoint {
        Endpoint::Token => query.get("appid").cloned(),
        Endpoint::StableToken => serde_json::from_slice::<Value>(body).ok()?.get("appid")?.as_str().map(str::to_owned),
        _ => sandbox.world().token_owner(query.get("access_token")?).map(str::to_owned),
    }
}

async fn run(
    sandbox: &Sandbox,
    endpoint: Endpoint,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> WxResult {
    let now = sandbox.now();
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    match endpoint {
        Endpoint::Token => sandbox.world().token(param("grant_type"), param("appid"), param("secret"), now),
        Endpoint::StableToken => {
            let object = fields::parse_object(&body)?;
            let force = match object.get("force_refresh") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(force)) => *force,
                Some(_) => return Err(WxError::data_format()),
            };
            let grant_type = fields::string(&object, "grant_type")?;
            let appid = fields::string(&object, "appid")?;
            let secret = fields::string(&object, "secret")?;
            sandbox.world().stable_token(&grant_type, &appid, &secret, force, now)
        }
        Endpoint::SetPdf => {
            let pdf = multipart_file(headers, body, "pdf").await?;
            let mut world = sandbox.world();
            let caller = world.token_state(param("access_token"), now)?;
            world.set_pdf(&caller, pdf, sandbox.config().pdf_max_bytes, now)
        }
        Endpoint::UploadImg => {
            let image = multipart_file(headers, body, "media").await?;
            let mut world = sandbox.world();
            world.token_state(param("access_token"), now)?;
            world.upload_image(image, sandbox.public_url())
        }
        _ => {
            let mut world = sandbox.world();
            let caller = world.token_state(param("access_token"), now)?;
            if endpoint == Endpoint::GetTicket {
                return world.card_ticket(&caller, param("type"), now);
            }
            let object = if endpoint == Endpoint::SetUrl && body.iter().all(u8::is_ascii_whitespace) {
                Map::new()
            } else {
                fields::parse_object(&body)?
            };
            let public_url = sandbox.public_url();
            match endpoint {
                Endpoint::SetUrl => world.set_url(&caller),
                Endpoint::GetBillAuthUrl => {
                    world.bill_auth_url(&caller, &object, public_url, sandbox.config().auth_link_lifetime_secs, now)
                }
                Endpoint::GetAuthData => world.auth_data(&caller, &object),
                Endpoint::RejectInsert => world.reject_insert(&caller, &object, now),
                Endpoint::CreateBillCard => world.create_bill_card(&caller, &object, public_url, now),
                Endpoint::GetPdf => {
                    world.get_pdf(&caller, &object, query.get("action").map(String::as_str), public_url, now)
                }
                Endpoint::InsertBill => world.insert_bill(&caller, &object, now),
                Endpoint::UpdateStatus => world.update_status(&caller, &object),
                Endpoint::Token
                | Endpoint::StableToken
                | Endpoint::GetTicket
                | Endpoint::SetPdf
                | Endpoint::UploadImg => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

/// The file part named `name` of a multipart/form-data body; a data format error when the body
/// is not multipart.
async fn multipart_file(headers: &HeaderMap, body: Bytes, name: &str) -> Result<Option<Bytes>, WxError> {
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| WxError::data_format())?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    while let Some(field) = multipart.next_field().await.map_err(|_| WxError::data_format())? {
        if field.name() == Some(name) {
            return field.bytes().await.map(Some).map_err(|_| WxError::data_format());
        }
    }
    Ok(None)
}

fn answer(sandbox: &Sandbox, path: &str, appid: Option<&str>, result: WxResult) -> Response {
    let (outcome, body) = match result {
        Ok(body) => (body.get("errcode").and_then(Value::as_i64).unwrap_or(0), Value::Object(body)),
        Err(error) => {
            let rid = format!("{}-{}-{}", random_string(HEX, 8), random_string(HEX, 8), random_string(HEX, 8));
            (
                error.errcode,
                serde_json::json!({"errcode": error.errcode, "errmsg": format!("{} rid: {rid}", error.errmsg)}),
            )
        }
    };
    sandbox.world().count_outcome(path, appid, outcome.to_string());
    ([(http::header::CONTENT_TYPE, "application/json; encoding=utf-8")], body.to_string()).into_response()
}
