//! The sandbox's in-memory world: accounts, tokens, orders, templates, media, card packages,
//! statistics, faults and pushes. One mutex guards it; no lock is held across an await.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use serde_json::{Map, Value};
use wechat::rulebook::{self, Rule};

use crate::config::AccountConfig;
use crate::faults::FaultRule;
use crate::push::PushRecord;
use crate::stats::CallStats;

/// A WeChat error answer: HTTP 200 with `errcode` and `errmsg` (a ` rid: ...` is appended on
/// the wire). Raised by name from the rulebook, as WeChat words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WxError {
    pub errcode: i64,
    pub errmsg: String,
}

impl From<&Rule> for WxError {
    fn from(rule: &Rule) -> Self {
        Self { errcode: rule.errcode, errmsg: rule.errmsg.to_owned() }
    }
}

impl WxError {
    /// The rule's error with a detail after its errmsg (`invalid params, order_id is empty`).
    pub fn detailed(rule: &Rule, detail: &str) -> Self {
        Self { errcode: rule.errcode, errmsg: rule.errmsg_with(detail) }
    }

    /// An injected errcode: the rulebook's errmsg unless the fault gives one.
    pub fn injected(errcode: i64, errmsg: Option<String>) -> Self {
        let errmsg = errmsg.or_else(|| rulebook::by_errcode(errcode).map(|rule| rule.errmsg.to_owned()));
        Self { errcode, errmsg: errmsg.unwrap_or_else(|| "injected fault".to_owned()) }
    }

    /// 72031 naming the field, as WeChat does.
    pub fn field_empty(field: &str) -> Self {
        Self::detailed(&rulebook::INVALID_PARAMS, &format!("{field} is empty"))
    }

    pub fn field_invalid(field: &str) -> Self {
        Self::detailed(&rulebook::INVALID_PARAMS, &format!("{field} is invalid"))
    }

    pub fn data_format() -> Self {
        Self::from(&rulebook::DATA_FORMAT)
    }
}

pub type WxResult = Result<Map<String, Value>, WxError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenKind {
    /// From cgi-bin/token.
    Basic,
    /// From cgi-bin/stable_token.
    Stable,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct IssuedToken {
    pub appid: String,
    pub kind: TokenKind,
    pub expires_at: i64,
    /// Set when a newer token replaced this one: valid until then (the 5-minute overlap, or
    /// at once for forced or sandbox-invalidated tokens).
    pub replaced_until: Option<i64>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Ticket {
    pub value: String,
    pub expires_at: i64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SpApp {
    pub s_pappid: String,
    pub invoice_url: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AuthLink {
    pub id: String,
    pub s_pappid: String,
    /// The account that requested the link; the payer authorizes under it.
    pub appid: String,
    pub order_id: String,
    pub money: i64,
    pub source: String,
    pub redirect_url: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What happened to an order (per s_pappid, authorizing appid and order_id).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OrderState {
    Authorized { openid: String, at: i64 },
    Declined { openid: String, at: i64 },
    Rejected { reason: String, url: Option<String>, at: i64 },
}

pub type OrderKey = (String, String, String);

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Template {
    pub card_id: String,
    pub owner: String,
    pub payee: String,
    pub logo_url: String,
    pub created_at: i64,
}

/// An image uploaded through uploadimg, served at the URL the upload answered.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Image {
    #[serde(with = "crate::persist::base64_bytes")]
    pub bytes: Bytes,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Media {
    pub owner: String,
    #[serde(with = "crate::persist::base64_bytes")]
    pub pdf: Bytes,
    pub sha256: String,
    pub expires_at: i64,
}

/// The bills of every card package, indexed for insertbill's and updatestatus's lookups
/// (a benchmark inserts tens of thousands).
#[derive(Default)]
pub struct CardBills {
    all: Vec<CardBill>,
    /// (appid, order_id) → position.
    by_order: HashMap<(String, String), usize>,
    /// (issuer, billing_no, billing_code) of every bill.
    numbers: HashSet<(String, String, String)>,
    /// code → position.
    by_code: HashMap<String, usize>,
}

impl CardBills {
    /// Every bill, in insertion order.
    pub fn all(&self) -> &[CardBill] {
        &self.all
    }

    pub fn push(&mut self, bill: CardBill) {
        let at = self.all.len();
        self.by_order.insert((bill.appid.clone(), bill.order_id.clone()), at);
        self.numbers.insert((bill.issuer.clone(), bill.billing_no.clone(), bill.billing_code.clone()));
        self.by_code.insert(bill.code.clone(), at);
        self.all.push(bill);
    }

    pub fn is_billed(&self, appid: &str, order_id: &str) -> bool {
        self.by_order.contains_key(&(appid.to_owned(), order_id.to_owned()))
    }

    pub fn number_used(&self, issuer: &str, billing_no: &str, billing_code: &str) -> bool {
        self.numbers.contains(&(issuer.to_owned(), billing_no.to_owned(), billing_code.to_owned()))
    }

    pub fn by_code_mut(&mut self, code: &str) -> Option<&mut CardBill> {
        self.by_code.get(code).map(|&at| &mut self.all[at])
    }

    pub fn iter(&self) -> impl Iterator<Item = &CardBill> {
        self.all.iter()
    }
}

/// A bill in a user's card package.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CardBill {
    pub code: String,
    pub card_id: String,
    pub issuer: String,
    pub appid: String,
    pub order_id: String,
    pub openid: String,
    pub fee: i64,
    pub title: String,
    pub billing_time: i64,
    pub billing_no: String,
    pub billing_code: String,
    #[serde(with = "crate::persist::base64_bytes")]
    pub pdf: Bytes,
    pub pdf_sha256: String,
    pub status: wechat::types::ReimburseStatus,
    pub inserted_at: i64,
}

#[derive(Default)]
pub struct World {
    pub accounts: BTreeMap<String, AccountConfig>,
    pub tokens: HashMap<String, IssuedToken>,
    pub stable_tokens: HashMap<String, String>,
    pub tickets: HashMap<String, Ticket>,
    /// Calls per (appid, endpoint name, sandbox day).
    pub daily_calls: HashMap<(String, &'static str, i64), u64>,
    /// Times of force_refresh stable_token calls per appid.
    pub forced_refreshes: HashMap<String, Vec<i64>>,
    pub sp_apps: HashMap<String, SpApp>,
    pub links: HashMap<String, AuthLink>,
    pub orders: HashMap<OrderKey, OrderState>,
    pub templates: HashMap<String, Template>,
    pub media: HashMap<String, Media>,
    /// uploadimg's images by id (the URL is `{public_url}/mmbiz/{id}/0`).
    pub images: HashMap<String, Image>,
    /// Download tokens of getpdf's pdf_url: token → (s_media_id, expires_at).
    pub pdf_links: HashMap<String, (String, i64)>,
    pub bills: CardBills,
    pub stats: BTreeMap<(String, String), CallStats>,
    pub faults: Vec<FaultRule>,
    pub pushes: Vec<PushRecord>,
    /// What WeChat showed each payer: bill notifications, service notices.
    pub messages: Vec<PayerMessage>,
    /// How many acknowledged copies of each push to deliver (WeChat's duplicates); 0 means 1.
    pub push_copies: u32,
}

impl World {
    /// Push `id`; ids are positions plus one.
    pub fn push(&self, id: u64) -> Option<&PushRecord> {
        self.pushes.get(usize::try_from(id).ok()?.checked_sub(1)?)
    }

    pub fn push_mut(&mut self, id: u64) -> Option<&mut PushRecord> {
        self.pushes.get_mut(usize::try_from(id).ok()?.checked_sub(1)?)
    }

    /// Forgets everything but the accounts.
    pub fn reset(&mut self) {
        let accounts = std::mem::take(&mut self.accounts);
        *self = World { accounts, ..World::default() };
    }

    pub fn account(&self, appid: &str) -> Option<&AccountConfig> {
        self.accounts.get(appid)
    }

    /// The bureau (seturl caller) owning an s_pappid.
    pub fn bureau_of(&self, s_pappid: &str) -> Option<&str> {
        self.sp_apps.iter().find(|(_, app)| app.s_pappid == s_pappid).map(|(appid, _)| appid.as_str())
    }

    /// The account that receives pushes for orders authorized under `appid`: the account
    /// itself, or for an App its Service Account.
    pub fn push_recipient(&self, appid: &str) -> Option<&AccountConfig> {
        let account = self.accounts.get(appid)?;
        match &account.service_account {
            Some(service) => self.accounts.get(service),
            None => Some(account),
        }
    }

    pub fn bill_by_code(&mut self, code: &str) -> Option<&mut CardBill> {
        self.bills.by_code_mut(code)
    }
}

/// A message WeChat shows a payer (in the sandbox: on the card package page and under
/// `/sandbox/users/{openid}/messages`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PayerMessage {
    pub openid: String,
    pub at: i64,
    /// `bill_inserted` (the notification after insertbill) or `service_unavailable`.
    pub kind: String,
    /// The account or service the message comes from.
    pub from: String,
    pub text: String,
    /// Where the message leads.
    pub link: Option<String>,
}

impl World {
    /// A payer's messages, newest first.
    pub fn messages_of(&self, openid: &str) -> Vec<&PayerMessage> {
        let mut messages: Vec<&PayerMessage> = self.messages.iter().filter(|m| m.openid == openid).collect();
        messages.reverse();
        messages
    }
}

/// The map inside a `json!({...})` literal.
pub fn json_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! object literal"),
    }
}

/// `len` random characters from `alphabet`.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| alphabet[rand::random_range(0..alphabet.len())] as char).collect()
}

pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const DIGITS: &[u8] = b"0123456789";
pub const HEX: &[u8] = b"0123456789abcdef";
