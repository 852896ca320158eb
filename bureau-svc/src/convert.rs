//! Proto messages ⇄ the bureau's domain. Requests are destructured without `..`, so a new
//! field is a compile error here until it is handled; every violation is reported at once.

use fiscalbill_common::bill::{
    BillContent, check_appid, check_order_id, check_page_size, check_request_id, is_appid, optional_timestamp,
    timestamp,
};
use fiscalbill_common::proto::bureau as pb;
use fiscalbill_common::proto::types as types_pb;
use fiscalbill_common::status::{ApiError, Violations};
use wechat::image::{IMAGE_HOST, LogoImage, is_wechat_image_url};
use wechat::types::ReimburseStatus;

use crate::domain::{Bill, BillKey, BillQuery, BillState, Failure, IssueRequest, Logo, PdfOrigin, Unit};
use fiscalbill_common::paging::{Cursor, decode_token, encode_token};
use fiscalbill_common::trace::TraceContext;

pub fn issue_request(
    request: pb::IssueBillRequest,
    trace: TraceContext,
    pdf_max_bytes: usize,
    now_secs: i64,
) -> Result<IssueRequest, ApiError> {
    let pb::IssueBillRequest { unit_appid, order_id, content, pdf, request_id, authorized_appid } = request;
    let mut violations = Violations::default();
    check_appid(&mut violations, "unit_appid", &unit_appid);
    check_order_id(&mut violations, "order_id", &order_id);
    let content = BillContent::from_proto(content.as_ref(), "content", now_secs, &mut violations);
    if !pdf.is_empty()
        && let Err(error) = wechat::pdf::validate(&pdf, pdf_max_bytes)
    {
        violations.add("pdf", error.to_string());
    }
    check_request_id(&mut violations, "request_id", &request_id);
    if !authorized_appid.is_empty() {
        check_appid(&mut violations, "authorized_appid", &authorized_appid);
    }
    violations.into_result()?;
    Ok(IssueRequest {
        authorized_appid: if authorized_appid.is_empty() { unit_appid.clone() } else { authorized_appid },
        key: BillKey { unit_appid, order_id },
        request_id: (!request_id.is_empty()).then_some(request_id),
        trace,
        content: content.expect("validated"),
        pdf: (!pdf.is_empty()).then_some(pdf),
    })
}

pub fn bill_key(unit_appid: String, order_id: String) -> Result<BillKey, ApiError> {
    let mut violations = Violations::default();
    check_appid(&mut violations, "unit_appid", &unit_appid);
    check_order_id(&mut violations, "order_id", &order_id);
    violations.into_result()?;
    Ok(BillKey { unit_appid, order_id })
}

pub fn unit_appid(unit_appid: &str) -> Result<(), ApiError> {
    let mut violations = Violations::default();
    check_appid(&mut violations, "unit_appid", unit_appid);
    violations.into_result()
}

/// CreateCardTemplate, validated: the unit, its payee and its logo. `image_host` is the host
/// of the WeChat this bureau talks to (the sandbox in development), whose image URLs are taken
/// besides WeChat's image host.
pub fn template_request(
    request: pb::CreateCardTemplateRequest,
    image_host: Option<&str>,
) -> Result<(String, String, Logo), ApiError> {
    let pb::CreateCardTemplateRequest { unit_appid, payee, logo_url, logo_image } = request;
    let mut violations = Violations::default();
    check_appid(&mut violations, "unit_appid", &unit_appid);
    let payee_chars = payee.chars().count();
    if payee.trim().is_empty() || payee_chars > 64 || payee.chars().any(char::is_control) {
        violations.add("payee", "must be the payee's full name, 1 to 64 characters");
    }
    let logo = match (logo_url.is_empty(), logo_image.is_empty()) {
        (false, true) if is_wechat_image_url(&logo_url, image_host) => Some(Logo::Url(logo_url)),
        (false, true) => {
            violations.add(
                "logo_url",
                format!(
                    "must be a URL on WeChat's image host (http(s)://{IMAGE_HOST}/..., as WeChat's image upload answers) \
                     of at most 512 characters; or give the image as logo_image"
                ),
            );
            None
        }
        (true, false) => match LogoImage::new(logo_image) {
            Ok(image) => Some(Logo::image(image)),
            Err(error) => {
                violations.add("logo_image", error.to_string());
                None
            }
        },
        (true, true) => {
            violations.add("logo_url", "give the logo as logo_url or logo_image");
            None
        }
        (false, false) => {
            violations.add("logo_image", "give the logo as logo_url or logo_image, not both");
            None
        }
    };
    violations.into_result()?;
    Ok((unit_appid, payee, logo.expect("a logo when nothing was violated")))
}

pub fn list_bills(request: pb::ListBillsRequest) -> Result<BillQuery, ApiError> {
    let pb::ListBillsRequest { unit_appid, state, page_size, page_token } = request;
    let mut violations = Violations::default();
    if !unit_appid.is_empty() {
        check_appid(&mut violations, "unit_appid", &unit_appid);
    }
    let state = match pb::BillState::try_from(state) {
        Ok(pb::BillState::Unspecified) => None,
        Ok(known) => Some(state_from_proto(known)),
        Err(_) => {
            violations.add("state", "is not a BillState value");
            None
        }
    };
    let limit = check_page_size(&mut violations, "page_size", page_size);
    let mut query = BillQuery { unit_appid: (!unit_appid.is_empty()).then_some(unit_appid), state, limit, after: None };
    let after = Cursor::from_token(&page_token, LIST_BILLS, &bill_filters(&query));
    violations.add_with_others(&after);
    violations.into_result()?;
    query.after = after?;
    Ok(query)
}

const LIST_BILLS: &str = "ListBills";
const LIST_CARD_TEMPLATES: &str = "ListCardTemplates";

/// What a ListBills page token is bound to.
fn bill_filters(query: &BillQuery) -> [&str; 2] {
    [query.unit_appid.as_deref().unwrap_or_default(), query.state.map_or("", BillState::as_str)]
}

/// ListCardTemplates: (after appid, limit).
pub fn list_templates(request: pb::ListCardTemplatesRequest) -> Result<(String, i64), ApiError> {
    let pb::ListCardTemplatesRequest { page_size, page_token } = request;
    let mut violations = Violations::default();
    let limit = check_page_size(&mut violations, "page_size", page_size);
    let after = match page_token.as_str() {
        "" => Ok(String::new()),
        token => decode_token(token, LIST_CARD_TEMPLATES, &[]).and_then(|[appid]| {
            is_appid(&appid).then_some(appid).ok_or_else(|| {
                ApiError::invalid_field(
                    "INVALID_PAGE_TOKEN",
                    "page_token",
                    "is not a token from a previous ListCardTemplates response",
                )
            })
        }),
    };
    violations.add_with_others(&after);
    violations.into_result()?;
    Ok((after?, limit))
}

pub fn template_page_token(last: &Unit) -> String {
    encode_token(LIST_CARD_TEMPLATES, &[], &[&last.appid])
}

/// The token of the ListBills page after `last`, for the same `query`.
pub fn bill_page_token(query: &BillQuery, last: &Bill) -> String {
    Cursor { created_at: last.created_at, unit_appid: last.key.unit_appid.clone(), order_id: last.key.order_id.clone() }
        .token(LIST_BILLS, &bill_filters(query))
}

pub fn reimburse_status(value: i32) -> Result<ReimburseStatus, ApiError> {
    let status = match types_pb::ReimburseStatus::try_from(value) {
        Ok(types_pb::ReimburseStatus::Init) => Some(ReimburseStatus::Init),
        Ok(types_pb::ReimburseStatus::Lock) => Some(ReimburseStatus::Lock),
        Ok(types_pb::ReimburseStatus::Closure) => Some(ReimburseStatus::Closure),
        Ok(types_pb::ReimburseStatus::Cancel) => Some(ReimburseStatus::Cancel),
        Ok(types_pb::ReimburseStatus::Unspecified) | Err(_) => None,
    };
    status.ok_or_else(|| {
        let mut violations = Violations::default();
        violations.add("reimburse_status", "must be INIT, LOCK, CLOSURE or CANCEL");
        ApiError::invalid_argument(violations)
    })
}

fn reimburse_to_proto(status: ReimburseStatus) -> types_pb::ReimburseStatus {
    match status {
        ReimburseStatus::Init => types_pb::ReimburseStatus::Init,
        ReimburseStatus::Lock => types_pb::ReimburseStatus::Lock,
        ReimburseStatus::Closure => types_pb::ReimburseStatus::Closure,
        ReimburseStatus::Cancel => types_pb::ReimburseStatus::Cancel,
    }
}

fn state_from_proto(state: pb::BillState) -> BillState {
    match state {
        pb::BillState::Accepted | pb::BillState::Unspecified => BillState::Accepted,
        pb::BillState::PdfUploaded => BillState::PdfUploaded,
        pb::BillState::PdfChecked => BillState::PdfChecked,
        pb::BillState::Inserted => BillState::Inserted,
        pb::BillState::Failed => BillState::Failed,
    }
}

fn state_to_proto(state: BillState) -> pb::BillState {
    match state {
        BillState::Accepted => pb::BillState::Accepted,
        BillState::PdfUploaded => pb::BillState::PdfUploaded,
        BillState::PdfChecked => pb::BillState::PdfChecked,
        BillState::Inserted => pb::BillState::Inserted,
        BillState::Failed => pb::BillState::Failed,
    }
}

pub fn bill_to_proto(bill: &Bill) -> pb::Bill {
    pb::Bill {
        unit_appid: bill.key.unit_appid.clone(),
        order_id: bill.key.order_id.clone(),
        state: state_to_proto(bill.state) as i32,
        content: Some(bill.content.to_proto()),
        card_id: bill.card_id.clone().unwrap_or_default(),
        card_code: bill.card_code.clone().unwrap_or_default(),
        openid: bill.openid.clone().unwrap_or_default(),
        reimburse_status: bill.reimburse_status.map_or(types_pb::ReimburseStatus::Unspecified, reimburse_to_proto)
            as i32,
        failure: bill.failure.as_ref().map(Failure::to_proto),
        pdf_sha256: bill.pdf_sha256.clone(),
        signer_certificate_sha256: bill.signer_sha256.clone().unwrap_or_default(),
        pdf_size: bill.pdf_size,
        pdf_origin: match bill.pdf_origin {
            PdfOrigin::Supplied => pb::PdfOrigin::Supplied,
            PdfOrigin::Rendered => pb::PdfOrigin::Rendered,
        } as i32,
        request_id: bill.request_id.clone().unwrap_or_default(),
        attempts: bill.attempts.min(i64::from(i32::MAX)) as i32,
        last_error: bill.last_error.clone().unwrap_or_default(),
        create_time: Some(timestamp(bill.created_at)),
        update_time: Some(timestamp(bill.updated_at)),
        insert_time: optional_timestamp(bill.inserted_at),
        authorized_appid: bill.authorized_appid.clone(),
    }
}

pub fn template_to_proto(unit: &Unit) -> pb::CardTemplate {
    pb::CardTemplate {
        unit_appid: unit.appid.clone(),
        payee: unit.payee.clone(),
        logo_url: unit.logo_url.clone(),
        logo_sha256: unit.logo_sha256.clone().unwrap_or_default(),
        card_id: unit.card_id.clone().unwrap_or_default(),
        create_time: optional_timestamp(unit.template_created_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_invalid_field_of_issue_bill() {
        let request = pb::IssueBillRequest {
            unit_appid: "nope".into(),
            order_id: "".into(),
            content: None,
            pdf: bytes::Bytes::from_static(b"<html>"),
            request_id: "has space".into(),
            authorized_appid: "wx1".into(),
        };
        let error = issue_request(request, TraceContext::root(), 1 << 20, 1_800_000_000).unwrap_err();
        let fields: Vec<&str> = error.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["unit_appid", "order_id", "content", "pdf", "request_id", "authorized_appid"]);
    }
}
