//! The issuing side: bill templates, PDF media, insertion into card packages and status.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use wechat::image::{LogoError, LogoImage};
use wechat::rulebook;
use wechat::types::ReimburseStatus;

use crate::fields;
use crate::world::{
    ALNUM, CardBill, DIGITS, HEX, Image, Media, OrderState, PayerMessage, Template, World, WxError, WxResult,
    json_object, random_string,
};

/// WeChat keeps an uploaded PDF for 3 days.
const MEDIA_LIFETIME_SECS: i64 = 3 * 86_400;
const PDF_URL_LIFETIME_SECS: i64 = 7_200;
/// billing_no and billing_code longer than this give 72043.
const BILLING_FIELD_MAX: usize = 20;

/// A status change to push to the bill's issuer.
#[derive(Clone, Debug)]
pub struct StatusChange {
    pub issuer: String,
    pub openid: String,
    pub card_id: String,
    pub code: String,
    pub status: ReimburseStatus,
}

impl World {
    /// `POST cgi-bin/media/uploadimg`: a JPG or PNG of at most 1 MB, kept and served at the
    /// URL answered (on the sandbox's own host: it stands in for WeChat's image host).
    pub fn upload_image(&mut self, image: Option<Bytes>, public_url: &str) -> WxResult {
        let image = image.ok_or_else(|| WxError::field_empty("media"))?;
        let logo = LogoImage::new(image).map_err(|error| match error {
            LogoError::TooLarge(_) => WxError::from(&rulebook::INVALID_IMAGE_SIZE),
            LogoError::Empty | LogoError::NotJpgOrPng => WxError::from(&rulebook::INVALID_FILE_TYPE),
        })?;
        let id = random_string(ALNUM, 64);
        let url = format!("{public_url}/mmbiz/{id}/0");
        let image = Image { bytes: logo.bytes().clone() };
        self.images.insert(id, image);
        // No errcode on success: only the URL, as WeChat answers.
        Ok(json_object(json!({ "url": url })))
    }

    /// The uploaded image a URL of this sandbox's points at.
    pub fn image_at(&self, url: &str, public_url: &str) -> Option<&Image> {
        let id = url.strip_prefix(public_url)?.strip_prefix("/mmbiz/")?.strip_suffix("/0")?;
        self.images.get(id)
    }

    /// `POST nontax/createbillcard`: a new template on every call (WeChat does not dedupe).
    /// Accepts the fields wrapped in `invoice_info` (the doc's example) or bare (its table).
    /// The logo must be an image uploaded through uploadimg (the guide's requirement): any other
    /// URL is refused as an invalid `logo_url` (WeChat documents no errcode of its own for it).
    pub fn create_bill_card(
        &mut self,
        caller: &str,
        body: &Map<String, Value>,
        public_url: &str,
        now: i64,
    ) -> WxResult {
        let info = fields::nested(body, "invoice_info")?.unwrap_or(body);
        let payee = fields::string(info, "payee")?;
        let base_info = fields::nested(info, "base_info")?.ok_or_else(|| WxError::field_empty("logo_url"))?;
        let logo_url = fields::string(base_info, "logo_url")?;
        if self.image_at(&logo_url, public_url).is_none() {
            return Err(WxError::field_invalid("logo_url"));
        }
        let card_id = format!("p{}", random_string(ALNUM, 27));
        self.templates.insert(
            card_id.clone(),
            Template { card_id: card_id.clone(), owner: caller.to_owned(), payee, logo_url, created_at: now },
        );
        Ok(json_object(json!({"errcode": 0, "errmsg": "ok", "card_id": card_id})))
    }

    /// `POST card/invoice/platform/setpdf`: stores a real PDF within the size limit for 3 days.
    pub fn set_pdf(&mut self, caller: &str, pdf: Option<Bytes>, max_bytes: usize, now: i64) -> WxResult {
        let pdf = pdf.ok_or_else(|| WxError::field_empty("pdf"))?;
        match wechat::pdf::validate(&pdf, max_bytes) {
            Ok(()) => {}
            Err(wechat::pdf::PdfError::TooLarge { .. }) => {
                return Err(WxError::from(&rulebook::INVALID_MEDIA_SIZE));
            }
            Err(_) => return Err(WxError::from(&rulebook::PDF_ERROR)),
        }
        let s_media_id = format!("{}{}", rand::random_range(1..10), random_string(DIGITS, 15));
        let sha256 = hex::encode(Sha256::digest(&pdf));
        self.media.insert(
            s_media_id.clone(),
            Media { owner: caller.to_owned(), pdf, sha256, expires_at: now + MEDIA_LIFETIME_SECS },
        );
        Ok(json_object(json!({"errcode": 0, "errmsg": "ok", "s_media_id": s_media_id})))
    }

    /// `POST card/invoice/platform/getpdf`; `action` comes from the body or the query.
    pub fn get_pdf(
        &mut self,
        caller: &str,
        body: &Map<String, Value>,
        query_action: Option<&str>,
        public_url: &str,
        now: i64,
    ) -> WxResult {
        let action = match fields::optional_string(body, "action")? {
            Some(action) => action,
            None => query_action.map(str::to_owned).ok_or_else(|| WxError::field_empty("action"))?,
        };
        if action != "get_url" {
            return Err(WxError::field_invalid("action"));
        }
        let s_media_id = media_id(body)?;
        let media = self.media.get(&s_media_id).filter(|m| m.owner == caller && m.expires_at > now);
        if media.is_none() {
            return Err(WxError::from(&rulebook::INVALID_MEDIA_ID));
        }
        let token = random_string(HEX, 32);
        self.pdf_links.insert(token.clone(), (s_media_id, now + PDF_URL_LIFETIME_SECS));
        Ok(json_object(json!({
            "errcode": 0, "errmsg": "ok",
            "pdf_url": format!("{public_url}/sandbox/pdf/{token}"),
            "pdf_url_expire_time": PDF_URL_LIFETIME_SECS,
        })))
    }

    /// The owner and PDF behind a getpdf link, while the link and the media are valid.
    pub fn pdf_by_link(&self, token: &str, now: i64) -> Option<(String, Bytes)> {
        let (s_media_id, _) = self.pdf_links.get(token).filter(|(_, until)| *until > now)?;
        self.media.get(s_media_id).filter(|m| m.expires_at > now).map(|m| (m.owner.clone(), m.pdf.clone()))
    }

    /// `POST nontax/insertbill`, with the documented checks in WeChat's order of concern.
    pub fn insert_bill(&mut self, caller: &str, body: &Map<String, Value>, now: i64) -> WxResult {
        let order_id = fields::string(body, "order_id")?;
        let card_id = fields::string(body, "card_id")?;
        let appid = fields::string(body, "appid")?;
        let card_ext = fields::nested(body, "card_ext")?.ok_or_else(|| WxError::field_empty("card_ext"))?;
        let user_card = fields::nested(card_ext, "user_card")?.ok_or_else(|| WxError::field_empty("user_card"))?;
        let data = fields::nested(user_card, "invoice_user_data")?.unwrap_or(user_card);
        let fee = fields::integer(data, "fee", false)?;
        let title = fields::string(data, "title")?;
        let billing_time = fields::integer(data, "billing_time", true)?;
        let billing_no = fields::string(data, "billing_no")?;
        let billing_code = fields::string(data, "billing_code")?;
        let s_pdf_media_id = match data.get("s_pdf_media_id") {
            Some(Value::Number(n)) => n.to_string(),
            _ => fields::string(data, "s_pdf_media_id")?,
        };
        if fee <= 0 {
            return Err(WxError::field_invalid("fee"));
        }
        if billing_no.chars().count() > BILLING_FIELD_MAX || billing_code.chars().count() > BILLING_FIELD_MAX {
            return Err(WxError::from(&rulebook::BILLING_NUMBER_SIZE));
        }
        let s_pappid = self
            .sp_apps
            .get(caller)
            .map(|app| app.s_pappid.clone())
            .ok_or_else(|| WxError::from(&rulebook::UNAUTHORIZED_CREATE_INVOICE))?;
        if self.templates.get(&card_id).is_none_or(|t| t.owner != caller) {
            return Err(WxError::from(&rulebook::INVALID_CARD_ID));
        }
        let openid = match self.orders.get(&(s_pappid, appid.clone(), order_id.clone())) {
            Some(OrderState::Authorized { openid, .. }) => openid.clone(),
            Some(OrderState::Rejected { .. }) => return Err(WxError::from(&rulebook::ORDER_REJECTED)),
            Some(OrderState::Declined { .. }) | None => return Err(WxError::from(&rulebook::ORDER_NEVER_AUTHORIZED)),
        };
        // The same billing numbers again: "repeated", as WeChat documents. Nothing else refuses a
        // second insert of an order (WeChat documents no such check).
        if self.bills.number_used(caller, &billing_no, &billing_code) {
            return Err(WxError::from(&rulebook::BILLING_NUMBERS_REPEATED));
        }
        let media = self
            .media
            .get(&s_pdf_media_id)
            .filter(|m| m.owner == caller && m.expires_at > now)
            .ok_or_else(|| WxError::from(&rulebook::PDF_ERROR))?;
        let code = format!("{}{}", rand::random_range(1..10), random_string(DIGITS, 11));
        self.bills.push(CardBill {
            code: code.clone(),
            card_id,
            issuer: caller.to_owned(),
            appid,
            order_id,
            openid: openid.clone(),
            fee,
            title,
            billing_time,
            billing_no,
            billing_code,
            pdf: media.pdf.clone(),
            pdf_sha256: media.sha256.clone(),
            status: ReimburseStatus::Init,
            inserted_at: now,
        });
        self.notify_payer_of_bill(&code);
        Ok(json_object(json!({"errcode": 0, "errmsg": "ok", "code": code, "openid": openid})))
    }

    /// After an insert WeChat sends the payer a notification leading to the bill in the card
    /// package. Its wording is the sandbox's own (WeChat does not publish it): who issued the
    /// bill, the amount and the bill's numbers.
    fn notify_payer_of_bill(&mut self, code: &str) {
        let Some(bill) = self.bills.by_code_mut(code).map(|b| b.clone()) else { return };
        let payee = self.templates.get(&bill.card_id).map(|t| t.payee.clone()).unwrap_or_default();
        let from = self.account(&bill.issuer).map_or_else(|| bill.issuer.clone(), |a| a.name.clone());
        self.messages.push(PayerMessage {
            openid: bill.openid.clone(),
            at: bill.inserted_at,
            kind: "bill_inserted".to_owned(),
            from,
            text: format!(
                "您收到一张财政电子票据：{payee}，金额 ¥{}，票据代码 {}，票据号码 {}。已存入微信卡包，点击查看。",
                crate::pages::yuan(bill.fee),
                bill.billing_no,
                bill.billing_code
            ),
            link: Some(format!("/sandbox/users/{}#card-{code}", bill.openid)),
        });
    }

    /// `POST card/invoice/platform/updatestatus` by the issuer.
    pub fn update_status(&mut self, caller: &str, body: &Map<String, Value>) -> WxResult {
        let card_id = fields::string(body, "card_id")?;
        let code = fields::string(body, "code")?;
        let status = fields::string(body, "reimburse_status")?;
        let status = ReimburseStatus::parse(&status).ok_or_else(|| WxError::field_invalid("reimburse_status"))?;
        let bill = self
            .bills
            .by_code_mut(&code)
            .filter(|b| b.card_id == card_id && b.issuer == caller)
            .ok_or_else(|| WxError::from(&rulebook::ORDER_NEVER_AUTHORIZED))?;
        if !bill.status.can_change_to(status) {
            return Err(WxError::from(&rulebook::INVALID_CARD_STATUS));
        }
        bill.status = status;
        Ok(json_object(json!({"errcode": 0, "errmsg": "ok"})))
    }

    /// A reimbursing party changes a bill's status (control API); the issuer gets an
    /// `update_invoice_status` push.
    pub fn reimburser_sets_status(&mut self, code: &str, status: ReimburseStatus) -> Result<StatusChange, String> {
        let bill = self.bill_by_code(code).ok_or_else(|| format!("no bill with code {code}"))?;
        if !bill.status.can_change_to(status) {
            return Err(format!("{} is final", bill.status.as_str()));
        }
        bill.status = status;
        Ok(StatusChange {
            issuer: bill.issuer.clone(),
            openid: bill.openid.clone(),
            card_id: bill.card_id.clone(),
            code: bill.code.clone(),
            status,
        })
    }

    /// A user's card package, newest first: every bill but those written off by a reimburser
    /// (CLOSURE), which leave it. A reversed bill (CANCEL, 冲红) stays, shown as written off,
    /// as the guide describes a reversal in WeChat.
    pub fn card_package(&self, openid: &str) -> Vec<&CardBill> {
        let mut bills: Vec<&CardBill> =
            self.bills.iter().filter(|b| b.openid == openid && b.status != ReimburseStatus::Closure).collect();
        bills.sort_by_key(|b| std::cmp::Reverse(b.inserted_at));
        bills
    }
}

fn media_id(body: &Map<String, Value>) -> Result<String, WxError> {
    match body.get("s_media_id") {
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => fields::string(body, "s_media_id"),
    }
}
