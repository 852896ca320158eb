//! The authorization side: s_pappid (seturl), authorization links, the payer's answer,
//! getauthdata and rejectinsert.

use base64::Engine;
use serde_json::{Map, Value, json};
use wechat::rulebook;

use crate::fields;
use crate::world::{AuthLink, HEX, OrderState, SpApp, World, WxError, WxResult, json_object, random_string};

/// What the payer answered on the authorization page (or through the control API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Authorize,
    Decline,
}

/// An order answered by the payer, for the push to the unit.
#[derive(Clone, Debug)]
pub struct Answered {
    pub link: AuthLink,
    pub openid: String,
    pub answer: Answer,
    pub at: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("no such authorization link")]
    UnknownLink,
    #[error("the authorization link has expired")]
    Expired,
    #[error("the unit rejected this order")]
    Rejected,
    #[error("the payer already answered this order")]
    AlreadyAnswered,
    #[error("openid must be 1..=64 characters of letters, digits, - and _")]
    BadOpenid,
}

impl World {
    /// `POST card/invoice/seturl`: mints the caller's s_pappid once (base64 of `appid_` and
    /// 32 random bytes) and returns it inside invoice_url ever after.
    pub fn set_url(&mut self, caller: &str) -> WxResult {
        let app = self.sp_apps.entry(caller.to_owned()).or_insert_with(|| {
            let mut raw = format!("{caller}_").into_bytes();
            raw.extend_from_slice(&rand::random::<[u8; 32]>());
            let s_pappid = base64::engine::general_purpose::STANDARD.encode(raw);
            let encoded = percent_encoding::utf8_percent_encode(&s_pappid, percent_encoding::NON_ALPHANUMERIC);
            SpApp {
                invoice_url: format!("https://mp.weixin.qq.com/bizmall/authinvoice?action=list&s_pappid={encoded}"),
                s_pappid,
            }
        });
        Ok(json_object(json!({"errcode": 0, "errmsg": "ok", "invoice_url": app.invoice_url})))
    }

    /// `POST nontax/getbillauthurl`.
    pub fn bill_auth_url(
        &mut self,
        caller: &str,
        body: &Map<String, Value>,
        public_url: &str,
        lifetime: i64,
        now: i64,
    ) -> WxResult {
        let s_pappid = fields::string(body, "s_pappid")?;
        let order_id = fields::string(body, "order_id")?;
        let money = fields::integer(body, "money", false)?;
        let timestamp = fields::integer(body, "timestamp", false)?;
        let source = fields::string(body, "source")?;
        let redirect_url = fields::optional_string(body, "redirect_url")?;
        let ticket = fields::string(body, "ticket")?;
        if self.bureau_of(&s_pappid).is_none() {
            return Err(WxError::field_invalid("s_pappid"));
        }
        if money <= 0 {
            return Err(WxError::field_invalid("money"));
        }
        // Unix seconds have 10 digits; milliseconds are a classic client bug.
        if !(1_000_000_000..10_000_000_000).contains(&timestamp) {
            return Err(WxError::field_invalid("timestamp"));
        }
        if !matches!(source.as_str(), "web" | "app") {
            return Err(WxError::field_invalid("source"));
        }
        if self.current_ticket(caller, now) != Some(ticket.as_str()) {
            return Err(WxError::field_invalid("ticket"));
        }
        let key = (s_pappid.clone(), caller.to_owned(), order_id.clone());
        if matches!(self.orders.get(&key), Some(OrderState::Rejected { .. })) {
            return Err(WxError::from(&rulebook::ORDER_REJECTED));
        }
        let id = random_string(HEX, 32);
        let link = AuthLink {
            id: id.clone(),
            s_pappid,
            appid: caller.to_owned(),
            order_id,
            money,
            source,
            redirect_url,
            created_at: now,
            expires_at: now + lifetime,
        };
        self.links.insert(id.clone(), link);
        let auth_url = format!("{public_url}/sandbox/auth/{id}");
        Ok(json_object(json!({"errcode": 0, "errmsg": "ok", "auth_url": auth_url, "expire_time": lifetime})))
    }

    /// The newest link of an order.
    pub fn latest_link(&self, s_pappid: &str, appid: &str, order_id: &str) -> Option<&AuthLink> {
        self.links
            .values()
            .filter(|l| l.s_pappid == s_pappid && l.appid == appid && l.order_id == order_id)
            .max_by_key(|l| l.created_at)
    }

    /// The payer answers through a link.
    pub fn answer(&mut self, link_id: &str, openid: &str, answer: Answer, now: i64) -> Result<Answered, AnswerError> {
        if openid.is_empty()
            || openid.len() > 64
            || !openid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AnswerError::BadOpenid);
        }
        let link = self.links.get(link_id).cloned().ok_or(AnswerError::UnknownLink)?;
        if link.expires_at <= now {
            return Err(AnswerError::Expired);
        }
        let key = (link.s_pappid.clone(), link.appid.clone(), link.order_id.clone());
        match self.orders.get(&key) {
            Some(OrderState::Rejected { .. }) => return Err(AnswerError::Rejected),
            Some(_) => return Err(AnswerError::AlreadyAnswered),
            None => {}
        }
        let state = match answer {
            Answer::Authorize => OrderState::Authorized { openid: openid.to_owned(), at: now },
            Answer::Decline => OrderState::Declined { openid: openid.to_owned(), at: now },
        };
        self.orders.insert(key, state);
        Ok(Answered { link, openid: openid.to_owned(), answer, at: now })
    }

    /// `POST card/invoice/getauthdata`. `auth success` when authorized; the sandbox answers
    /// `auth fail` for a declined order and "invoice order never auth" for one never answered
    /// (WeChat documents neither case).
    pub fn auth_data(&self, caller: &str, body: &Map<String, Value>) -> WxResult {
        let s_pappid = fields::string(body, "s_pappid")?;
        let order_id = fields::string(body, "order_id")?;
        match self.orders.get(&(s_pappid, caller.to_owned(), order_id)) {
            Some(OrderState::Authorized { at, .. }) => Ok(json_object(
                json!({"errcode": 0, "errmsg": "ok", "invoice_status": "auth success", "auth_time": at}),
            )),
            Some(OrderState::Declined { at, .. }) => {
                Ok(json_object(json!({"errcode": 0, "errmsg": "ok", "invoice_status": "auth fail", "auth_time": at})))
            }
            Some(OrderState::Rejected { .. }) => Err(WxError::from(&rulebook::ORDER_REJECTED)),
            None => Err(WxError::from(&rulebook::ORDER_NEVER_AUTHORIZED)),
        }
    }

    /// `POST card/invoice/rejectinsert`: the order can never be billed afterwards.
    pub fn reject_insert(&mut self, caller: &str, body: &Map<String, Value>, now: i64) -> WxResult {
        let s_pappid = fields::string(body, "s_pappid")?;
        let order_id = fields::string(body, "order_id")?;
        let reason = fields::string(body, "reason")?;
        let url = fields::optional_string(body, "url")?;
        if self.bureau_of(&s_pappid).is_none() {
            return Err(WxError::field_invalid("s_pappid"));
        }
        if self.bills.is_billed(caller, &order_id) {
            return Err(WxError::detailed(&rulebook::INVALID_CARD_STATUS, "the order is already billed"));
        }
        self.orders.insert((s_pappid, caller.to_owned(), order_id), OrderState::Rejected { reason, url, at: now });
        Ok(json_object(json!({"errcode": 0, "errmsg": "ok"})))
    }
}
