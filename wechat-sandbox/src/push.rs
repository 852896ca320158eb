//! Event pushes to callback URLs, sealed per the recipient's mode and format and delivered
//! like WeChat: a timeout per attempt (5 s) and 3 attempts. Only `success` or an empty body
//! acknowledges a push; any other answer is abnormal data, which WeChat does not retry and
//! for which it shows the payer "该公众号暂时无法提供服务，请稍后再试".

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wechat::callback::{CallbackKeys, PushMessage, SealedPush, seal_push};

use crate::Sandbox;
use crate::bills::StatusChange;
use crate::config::AccountConfig;
use crate::invoice::{Answer, Answered};
use crate::world::{DIGITS, PayerMessage, random_string};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushRecord {
    pub id: u64,
    pub event: String,
    /// The account receiving the push.
    pub recipient: String,
    pub url: String,
    pub order_id: Option<String>,
    pub code: Option<String>,
    /// The exact request, for replays.
    pub query: String,
    pub body: String,
    #[serde(default)]
    pub content_type: String,
    pub replay_of: Option<u64>,
    pub attempts: Vec<PushAttempt>,
    /// Acknowledged (`success` or an empty body).
    pub delivered: bool,
    /// Answered with something else: not retried, and the payer was told the account cannot
    /// serve them.
    pub abnormal: bool,
    pub finished: bool,
    /// The payer the push is about (its FromUserName).
    #[serde(default)]
    pub openid: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushAttempt {
    /// `http_200` (acknowledged: `success` or an empty body), `abnormal_answer` (HTTP 200 with
    /// another body), `http_500`, `timeout`, `error: ...`.
    pub outcome: String,
    pub response_body: String,
    /// Milliseconds from sending to the answer, to the microsecond.
    pub elapsed_ms: f64,
}

/// What WeChat shows the payer when an account's callback answered abnormally or not at all.
pub const SERVICE_UNAVAILABLE: &str = "该公众号暂时无法提供服务，请稍后再试";

/// The outcomes of an HTTP 200 answer: a proper acknowledgement, or abnormal data.
const ACKNOWLEDGED: &str = "http_200";
const ABNORMAL: &str = "abnormal_answer";

/// A proper acknowledgement: `success`, or an empty body.
fn is_acknowledgement(body: &str) -> bool {
    body.is_empty() || body == "success"
}

/// The callback URL and the sealed push for the recipient's mode and format.
fn seal_for(
    recipient: Option<&AccountConfig>,
    fields: Vec<(&str, String)>,
    now: i64,
) -> Result<(String, SealedPush), String> {
    let recipient = recipient.ok_or("no account receives these pushes")?;
    let url = recipient.callback_url.clone().ok_or("the account has no callback URL")?;
    let token = recipient.callback_token.clone().ok_or("the account has no callback token")?;
    let keys =
        CallbackKeys::new(&recipient.appid, token, recipient.encoding_aes_key.as_ref(), None, recipient.push_mode)
            .map_err(|e| e.to_string())?;
    let message = PushMessage::new(recipient.push_format, fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    Ok((url, seal_push(&keys, recipient.push_format, &message, now, &random_string(DIGITS, 10))))
}

impl Sandbox {
    /// Pushes `user_authorize_invoice` for an answered order to the unit's Service Account.
    pub(crate) fn push_answer(&self, answered: &Answered) -> u64 {
        let (succ, fail) = match answered.answer {
            Answer::Authorize => (answered.link.order_id.as_str(), ""),
            Answer::Decline => ("", answered.link.order_id.as_str()),
        };
        let recipient = self.world().push_recipient(&answered.link.appid).cloned();
        let fields = vec![
            ("ToUserName", recipient.as_ref().map(AccountConfig::original_id).unwrap_or_default()),
            ("FromUserName", answered.openid.clone()),
            ("CreateTime", answered.at.to_string()),
            ("MsgType", "event".to_owned()),
            ("Event", "user_authorize_invoice".to_owned()),
            ("SuccOrderId", succ.to_owned()),
            ("FailOrderId", fail.to_owned()),
            ("AuthorizeAppId", answered.link.appid.clone()),
            ("Source", answered.link.source.clone()),
            ("SPAppId", answered.link.s_pappid.clone()),
        ];
        self.push(recipient.as_ref(), &answered.link.appid, fields, Some(answered.link.order_id.clone()), None)
    }

    /// Pushes `update_invoice_status` to the bill's issuer.
    pub(crate) fn push_status(&self, change: &StatusChange) -> u64 {
        let recipient = self.world().account(&change.issuer).cloned();
        let fields = vec![
            ("ToUserName", recipient.as_ref().map(AccountConfig::original_id).unwrap_or_default()),
            ("FromUserName", change.openid.clone()),
            ("CreateTime", self.now().to_string()),
            ("MsgType", "event".to_owned()),
            ("Event", "update_invoice_status".to_owned()),
            ("Status", change.status.as_str().to_owned()),
            ("CardId", change.card_id.clone()),
            ("Code", change.code.clone()),
        ];
        self.push(recipient.as_ref(), &change.issuer, fields, None, Some(change.code.clone()))
    }

    /// Seals and sends a push. When the account cannot receive pushes (no callback URL or
    /// token) WeChat simply delivers nothing: the push is recorded as finished, undelivered,
    /// with the reason.
    fn push(
        &self,
        recipient: Option<&AccountConfig>,
        appid: &str,
        fields: Vec<(&str, String)>,
        order_id: Option<String>,
        code: Option<String>,
    ) -> u64 {
        let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let (event, openid) = (field("Event"), field("FromUserName"));
        let mut record = PushRecord {
            id: 0,
            event,
            recipient: recipient.map_or(appid, |r| r.appid.as_str()).to_owned(),
            url: String::new(),
            order_id,
            code,
            query: String::new(),
            body: String::new(),
            content_type: String::new(),
            replay_of: None,
            attempts: Vec::new(),
            delivered: false,
            abnormal: false,
            finished: false,
            openid,
            created_at: self.now(),
        };
        match seal_for(recipient, fields, self.now()) {
            Ok((url, sealed)) => {
                record.url = url;
                record.query = sealed.query_string();
                record.body = sealed.body;
                record.content_type = sealed.content_type.to_owned();
                self.send(record, self.config().push_attempts)
            }
            Err(reason) => {
                let outcome = format!("undeliverable: {reason}");
                record.attempts.push(PushAttempt { outcome, response_body: String::new(), elapsed_ms: 0.0 });
                record.finished = true;
                self.record(record)
            }
        }
    }

    /// Sends a recorded push again, byte for byte, once (a replay by an attacker or a
    /// confused network).
    pub(crate) fn replay(&self, id: u64) -> Option<u64> {
        let original = self.world().push(id).cloned()?;
        let record = PushRecord {
            replay_of: Some(id),
            attempts: Vec::new(),
            delivered: false,
            abnormal: false,
            finished: false,
            created_at: self.now(),
            ..original
        };
        Some(self.send(record, 1))
    }

    /// Stores a push record under the next id.
    fn record(&self, mut record: PushRecord) -> u64 {
        let mut world = self.world();
        record.id = world.pushes.len() as u64 + 1;
        world.pushes.push(record);
        world.pushes.len() as u64
    }

    fn send(&self, mut record: PushRecord, attempts: u32) -> u64 {
        let id = self.record(record.clone());
        record.id = id;
        let sandbox = self.clone();
        tokio::spawn(async move { sandbox.deliver(record, attempts).await });
        id
    }

    /// Delivers the push: up to `attempts` tries until acknowledged, and (when the sandbox is
    /// set to) several acknowledged copies, as WeChat's retries sometimes arrive anyway.
    async fn deliver(&self, record: PushRecord, attempts: u32) {
        let target = format!("{}{}{}", record.url, if record.url.contains('?') { "&" } else { "?" }, record.query);
        let copies = self.world().push_copies.max(1);
        let (mut acknowledged, mut failures) = (0, 0);
        for attempt in 1.. {
            let started = Instant::now();
            let result = self
                .inner
                .http
                .post(&target)
                .header(http::header::CONTENT_TYPE, &record.content_type)
                .body(record.body.clone())
                .send()
                .await;
            let (outcome, response_body) = match result {
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let outcome = match (status == reqwest::StatusCode::OK, is_acknowledgement(&body)) {
                        (true, false) => ABNORMAL.to_owned(),
                        _ => format!("http_{}", status.as_u16()),
                    };
                    (outcome, body)
                }
                Err(e) if e.is_timeout() => ("timeout".to_owned(), String::new()),
                Err(e) => (format!("error: {}", e.without_url()), String::new()),
            };
            tracing::info!(push = record.id, event = %record.event, recipient = %record.recipient, attempt, %outcome, "push delivery attempt");
            let elapsed_ms = (started.elapsed().as_micros() as f64) / 1000.0;
            let (delivered, abnormal) = (outcome == ACKNOWLEDGED, outcome == ABNORMAL);
            if delivered {
                acknowledged += 1
            } else if !abnormal {
                failures += 1
            }
            // Abnormal data is not retried (WeChat documents retries only when no answer comes).
            let finished = abnormal || acknowledged >= copies || failures >= attempts;
            let attempt = PushAttempt { outcome, response_body, elapsed_ms };
            self.update_push(record.id, attempt, delivered, abnormal, finished);
            if abnormal || (finished && acknowledged == 0) {
                self.tell_payer_the_account_cannot_serve(&record);
            }
            if finished {
                break;
            }
            if !delivered {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.inner.push_done.notify_waiters();
    }

    fn update_push(&self, id: u64, attempt: PushAttempt, delivered: bool, abnormal: bool, finished: bool) {
        let mut world = self.world();
        if let Some(push) = world.push_mut(id) {
            push.attempts.push(attempt);
            push.delivered |= delivered;
            push.abnormal |= abnormal;
            push.finished = finished;
        }
    }

    /// What WeChat shows the payer when the account answered abnormally or not at all.
    fn tell_payer_the_account_cannot_serve(&self, record: &PushRecord) {
        // Only the payer's own action (authorizing) shows them an answer; a replay is no action.
        if record.event != "user_authorize_invoice" || record.openid.is_empty() || record.replay_of.is_some() {
            return;
        }
        let now = self.now();
        let mut world = self.world();
        let from = world.account(&record.recipient).map_or_else(|| record.recipient.clone(), |a| a.name.clone());
        world.messages.push(PayerMessage {
            openid: record.openid.clone(),
            at: now,
            kind: "service_unavailable".to_owned(),
            from,
            text: SERVICE_UNAVAILABLE.to_owned(),
            link: None,
        });
    }

    /// Waits until push `id` finished (delivered or out of attempts), at most `limit`.
    pub(crate) async fn wait_for_push(&self, id: u64, limit: Duration) -> Option<PushRecord> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.inner.push_done.notified();
            let push = self.world().push(id).cloned()?;
            if push.finished {
                return Some(push);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Some(push);
            }
        }
    }
}
