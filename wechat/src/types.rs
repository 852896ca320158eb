//! Request and response bodies of the WeChat endpoints, serialized exactly as documented:
//! snake_case keys, and the wrapped forms the doc's examples use (`invoice_info`,
//! `invoice_user_data`).

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Secret;

/// An access token with its lifetime in seconds as WeChat reported it.
#[derive(Clone, Debug, Deserialize)]
pub struct AccessToken {
    pub access_token: Secret,
    pub expires_in: i64,
}

/// A wx_card api ticket.
#[derive(Clone, Debug, Deserialize)]
pub struct Ticket {
    pub ticket: Secret,
    pub expires_in: i64,
}

#[derive(Serialize)]
pub(crate) struct StableTokenRequest<'a> {
    pub grant_type: &'static str,
    pub appid: &'a str,
    pub secret: &'a str,
    pub force_refresh: bool,
}

/// seturl's answer, with the s_pappid parsed out of invoice_url.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpAppId {
    pub invoice_url: String,
    pub s_pappid: String,
}

#[derive(Deserialize)]
pub(crate) struct SetUrlResponse {
    pub invoice_url: String,
}

/// Where the payer authorizes: `source` of getbillauthurl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthSource {
    /// Inside WeChat, through the Service Account.
    Web,
    /// From the unit's App.
    App,
}

impl AuthSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthSource::Web => "web",
            AuthSource::App => "app",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "web" => Some(AuthSource::Web),
            "app" => Some(AuthSource::App),
            _ => None,
        }
    }
}

/// Body of `nontax/getbillauthurl`.
#[derive(Clone, Debug, Serialize)]
pub struct GetBillAuthUrlRequest {
    pub s_pappid: String,
    pub order_id: String,
    /// Amount in fen.
    pub money: i64,
    /// Unix seconds.
    pub timestamp: i64,
    pub source: AuthSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// The wx_card ticket of the account calling.
    pub ticket: Secret,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AuthUrl {
    pub auth_url: String,
    /// Seconds the link stays valid.
    pub expire_time: i64,
}

/// Body of `card/invoice/getauthdata` (and the order key of rejectinsert).
#[derive(Clone, Debug, Serialize)]
pub struct OrderRef {
    pub s_pappid: String,
    pub order_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AuthData {
    /// `auth success` when the payer authorized; other values are not documented.
    pub invoice_status: String,
    /// Unix seconds of the authorization.
    #[serde(default)]
    pub auth_time: i64,
}

impl AuthData {
    pub const AUTH_SUCCESS: &'static str = "auth success";

    pub fn is_authorized(&self) -> bool {
        self.invoice_status == Self::AUTH_SUCCESS
    }
}

/// Body of `card/invoice/rejectinsert`.
#[derive(Clone, Debug, Serialize)]
pub struct RejectInsertRequest {
    pub s_pappid: String,
    pub order_id: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The bill template of one collection unit, sent wrapped in `invoice_info` as the doc's
/// example does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillCardInfo {
    /// The payee's full name.
    pub payee: String,
    pub logo_url: String,
}

#[derive(Serialize)]
pub(crate) struct CreateBillCardRequest<'a> {
    pub invoice_info: InvoiceInfo<'a>,
}

#[derive(Serialize)]
pub(crate) struct InvoiceInfo<'a> {
    pub payee: &'a str,
    pub base_info: BaseInfo<'a>,
}

#[derive(Serialize)]
pub(crate) struct BaseInfo<'a> {
    pub logo_url: &'a str,
}

/// uploadimg's answer: no errcode on success, only the image's URL.
#[derive(Deserialize)]
pub(crate) struct UploadImgResponse {
    pub url: String,
}

#[derive(Deserialize)]
pub(crate) struct CreateBillCardResponse {
    pub card_id: String,
}

#[derive(Deserialize)]
pub(crate) struct SetPdfResponse {
    #[serde(deserialize_with = "string_or_number")]
    pub s_media_id: String,
}

#[derive(Serialize)]
pub(crate) struct GetPdfRequest<'a> {
    pub action: &'static str,
    pub s_media_id: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PdfUrl {
    pub pdf_url: String,
    #[serde(default)]
    pub pdf_url_expire_time: i64,
}

/// The six bill fields of insertbill (`card_ext.user_card.invoice_user_data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvoiceUserData {
    /// Amount in fen.
    pub fee: i64,
    /// The payer's name.
    pub title: String,
    /// Unix seconds.
    pub billing_time: i64,
    pub billing_no: String,
    pub billing_code: String,
    pub s_pdf_media_id: String,
}

/// Body of `nontax/insertbill`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InsertBillRequest {
    pub order_id: String,
    pub card_id: String,
    /// The appid the payer authorized under.
    pub appid: String,
    pub card_ext: CardExt,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CardExt {
    pub user_card: UserCard,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserCard {
    pub invoice_user_data: InvoiceUserData,
}

impl InsertBillRequest {
    pub fn new(order_id: String, card_id: String, appid: String, data: InvoiceUserData) -> Self {
        Self { order_id, card_id, appid, card_ext: CardExt { user_card: UserCard { invoice_user_data: data } } }
    }
}

/// What insertbill answers: the card code and the receiving user.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct InsertedBill {
    #[serde(deserialize_with = "string_or_number")]
    pub code: String,
    pub openid: String,
}

/// `reimburse_status` values of updatestatus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReimburseStatus {
    #[serde(rename = "INVOICE_REIMBURSE_INIT")]
    Init,
    #[serde(rename = "INVOICE_REIMBURSE_LOCK")]
    Lock,
    #[serde(rename = "INVOICE_REIMBURSE_CLOSURE")]
    Closure,
    #[serde(rename = "INVOICE_REIMBURSE_CANCEL")]
    Cancel,
}

impl ReimburseStatus {
    pub const ALL: [ReimburseStatus; 4] =
        [ReimburseStatus::Init, ReimburseStatus::Lock, ReimburseStatus::Closure, ReimburseStatus::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            ReimburseStatus::Init => "INVOICE_REIMBURSE_INIT",
            ReimburseStatus::Lock => "INVOICE_REIMBURSE_LOCK",
            ReimburseStatus::Closure => "INVOICE_REIMBURSE_CLOSURE",
            ReimburseStatus::Cancel => "INVOICE_REIMBURSE_CANCEL",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// CLOSURE (written off) and CANCEL (reversed, 冲红) are final: the guide says a reversal
    /// shows in WeChat as the card being written off.
    pub fn is_final(self) -> bool {
        matches!(self, ReimburseStatus::Closure | ReimburseStatus::Cancel)
    }

    /// A final status changes no more. Setting the current status again is a no-op.
    pub fn can_change_to(self, next: ReimburseStatus) -> bool {
        !self.is_final() || next == self
    }

    /// The statuses from which a change to `next` takes effect: the "from" set of a store's
    /// update (a final status stays, even when set again).
    pub fn sources(next: ReimburseStatus) -> Vec<ReimburseStatus> {
        Self::ALL.into_iter().filter(|status| !status.is_final() && status.can_change_to(next)).collect()
    }
}

/// Body of `card/invoice/platform/updatestatus`.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateStatusRequest {
    pub card_id: String,
    pub code: String,
    pub reimburse_status: ReimburseStatus,
}

/// Accepts `"123"` or `123`: WeChat's examples show ids both ways.
fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::Text(text) => text,
        Either::Number(number) => number.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn insertbill_body_has_the_documented_wrapped_shape() {
        let request = InsertBillRequest::new(
            "1511169724".into(),
            "pjZ8Yt7xiy3b9UfffRIA4Tm2xTnw".into(),
            "wxc0b84a53ed8e8d29".into(),
            InvoiceUserData {
                fee: 123,
                title: "张三".into(),
                billing_time: 1511169724,
                billing_no: "12345678".into(),
                billing_code: "0000000001".into(),
                s_pdf_media_id: "3015806758683707".into(),
            },
        );
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"order_id":"1511169724","card_id":"pjZ8Yt7xiy3b9UfffRIA4Tm2xTnw","appid":"wxc0b84a53ed8e8d29",
                "card_ext":{"user_card":{"invoice_user_data":{"fee":123,"title":"张三","billing_time":1511169724,
                "billing_no":"12345678","billing_code":"0000000001","s_pdf_media_id":"3015806758683707"}}}})
        );
    }

    #[test]
    fn getbillauthurl_body_omits_absent_redirect_and_uses_lowercase_source() {
        let request = GetBillAuthUrlRequest {
            s_pappid: "c3A=".into(),
            order_id: "o-1".into(),
            money: 100,
            timestamp: 1_700_000_000,
            source: AuthSource::App,
            redirect_url: None,
            ticket: Secret::new("tkt"),
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"s_pappid":"c3A=","order_id":"o-1","money":100,"timestamp":1700000000,"source":"app","ticket":"tkt"})
        );
        assert!(!format!("{request:?}").contains("tkt"));
    }

    #[test]
    fn createbillcard_body_is_wrapped_in_invoice_info() {
        let body = CreateBillCardRequest {
            invoice_info: InvoiceInfo { payee: "某某医院", base_info: BaseInfo { logo_url: "https://l/x.png" } },
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"invoice_info":{"payee":"某某医院","base_info":{"logo_url":"https://l/x.png"}}})
        );
    }

    #[test]
    fn ids_parse_from_strings_and_numbers() {
        let a: InsertedBill = serde_json::from_value(json!({"code": 682927, "openid": "o"})).unwrap();
        assert_eq!(a.code, "682927");
        let b: SetPdfResponse = serde_json::from_value(json!({"s_media_id": "3015806758683707"})).unwrap();
        assert_eq!(b.s_media_id, "3015806758683707");
    }

    #[test]
    fn reimburse_status_rules() {
        assert_eq!(serde_json::to_value(ReimburseStatus::Lock).unwrap(), json!("INVOICE_REIMBURSE_LOCK"));
        assert_eq!(ReimburseStatus::parse("INVOICE_REIMBURSE_CANCEL"), Some(ReimburseStatus::Cancel));
        assert!(ReimburseStatus::Init.can_change_to(ReimburseStatus::Closure));
        assert!(!ReimburseStatus::Closure.can_change_to(ReimburseStatus::Init));
        assert!(!ReimburseStatus::Cancel.can_change_to(ReimburseStatus::Init));
        assert!(!ReimburseStatus::Cancel.can_change_to(ReimburseStatus::Closure));
        assert!(ReimburseStatus::Cancel.can_change_to(ReimburseStatus::Cancel));
        assert_eq!(ReimburseStatus::sources(ReimburseStatus::Closure), [ReimburseStatus::Init, ReimburseStatus::Lock]);
    }
}
