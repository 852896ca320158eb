//! Push bodies: a flat `<xml>` element or JSON object of named values, in either format.
//! XML with a DTD, processing instructions or nested elements is refused, so no entity is ever
//! expanded; only the five predefined entities and character references are decoded.

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::Value;

/// The largest push body accepted, before and after decryption.
pub const MAX_PUSH_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushFormat {
    Xml,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("push body larger than {MAX_PUSH_BYTES} bytes")]
    TooLarge,
    #[error("push body is empty")]
    Empty,
    #[error("push body is not well-formed XML: {0}")]
    Xml(String),
    #[error("push body declares a DTD or processing instruction")]
    Dtd,
    #[error("push body is not a JSON object: {0}")]
    Json(String),
    #[error("push body repeats element {0}")]
    Duplicate(String),
    #[error("push body lacks {0}")]
    Missing(&'static str),
    #[error("push element {0} is invalid")]
    Invalid(&'static str),
    #[error("push element {0} is not a plausible time (before 2000 or more than a day ahead)")]
    ImplausibleTime(&'static str),
}

/// A push's named values in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushMessage {
    pub format: PushFormat,
    fields: Vec<(String, String)>,
}

impl PushMessage {
    pub fn new(format: PushFormat, fields: Vec<(String, String)>) -> Self {
        Self { format, fields }
    }

    /// Parses XML (`<xml>...</xml>`) or a JSON object, whichever the body is.
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        if body.len() > MAX_PUSH_BYTES {
            return Err(MessageError::TooLarge);
        }
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => Err(MessageError::Empty),
            Some(b'{') => parse_json(body),
            Some(_) => parse_xml(body),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A value that must be present and non-empty.
    pub fn require(&self, name: &'static str) -> Result<&str, MessageError> {
        self.get(name).filter(|v| !v.is_empty()).ok_or(MessageError::Missing(name))
    }

    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// Serializes in this message's format.
    pub fn to_body(&self) -> String {
        match self.format {
            PushFormat::Xml => self.to_xml(),
            PushFormat::Json => self.to_json(),
        }
    }

    /// `<xml>` with every value in CDATA, except `CreateTime` which WeChat sends bare.
    pub fn to_xml(&self) -> String {
        let mut xml = String::from("<xml>");
        for (name, value) in &self.fields {
            if name == "CreateTime" && value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
                xml.push_str(&format!("<{name}>{value}</{name}>"));
            } else {
                xml.push_str(&format!("<{name}>{}</{name}>", cdata(value)));
            }
        }
        xml.push_str("</xml>");
        xml
    }

    /// A JSON object; `CreateTime` as a number like WeChat's JSON pushes.
    pub fn to_json(&self) -> String {
        let mut object = serde_json::Map::new();
        for (name, value) in &self.fields {
            let json = match (name.as_str(), value.parse::<i64>()) {
                ("CreateTime", Ok(number)) => Value::from(number),
                _ => Value::from(value.as_str()),
            };
            object.insert(name.clone(), json);
        }
        Value::Object(object).to_string()
    }
}

/// Wraps text in CDATA, splitting any `]]>` it contains.
fn cdata(value: &str) -> String {
    format!("<![CDATA[{}]]>", value.replace("]]>", "]]]]><![CDATA[>"))
}

fn parse_json(body: &[u8]) -> Result<PushMessage, MessageError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| MessageError::Json(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(MessageError::Json("not an object".to_owned()));
    };
    let fields = object
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (name, text)
        })
        .collect();
    Ok(PushMessage { format: PushFormat::Json, fields })
}

fn parse_xml(body: &[u8]) -> Result<PushMessage, MessageError> {
    let text = std::str::from_utf8(body).map_err(|_| MessageError::Xml("not UTF-8".to_owned()))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let xml_error = |e: &dyn std::fmt::Display| MessageError::Xml(e.to_string());

    let mut fields: Vec<(String, String)> = Vec::new();
    // Depth 0: before <xml>; 1: inside it; 2: inside a field.
    let mut depth = 0;
    let mut root_done = false;
    let mut current: Option<(String, String)> = None;
    loop {
        let event = reader.read_event().map_err(|e| xml_error(&e))?;
        match event {
            Event::DocType(_) | Event::PI(_) => return Err(MessageError::Dtd),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Start(start) => {
                let name = element_name(start.name().as_ref())?;
                match depth {
                    0 if !root_done && name == "xml" => depth = 1,
                    0 => return Err(MessageError::Xml(format!("unexpected root <{name}>"))),
                    1 => {
                        current = Some((name, String::new()));
                        depth = 2;
                    }
                    _ => return Err(MessageError::Xml("nested elements are not allowed".to_owned())),
                }
            }
            Event::Empty(start) => {
                let name = element_name(start.name().as_ref())?;
                match depth {
                    0 if !root_done && name == "xml" => root_done = true,
                    1 => push_field(&mut fields, name, String::new())?,
                    _ => return Err(MessageError::Xml(format!("unexpected <{name}/>"))),
                }
            }
            Event::End(_) => match depth {
                2 => {
                    let (name, value) = current.take().expect("inside a field");
                    push_field(&mut fields, name, value)?;
                    depth = 1;
                }
                1 => {
                    depth = 0;
                    root_done = true;
                }
                _ => return Err(MessageError::Xml("unbalanced end tag".to_owned())),
            },
            Event::Text(text) => {
                let decoded = text.xml10_content();
                match (&mut current, depth) {
                    (Some((_, value)), 2) => value.push_str(&decoded),
                    _ if decoded.trim().is_empty() => {}
                    _ => return Err(MessageError::Xml("text outside an element".to_owned())),
                }
            }
            Event::GeneralRef(reference) => {
                let resolved =
                    resolve_reference(&reference).ok_or_else(|| MessageError::Xml("undefined entity".to_owned()))?;
                match (&mut current, depth) {
                    (Some((_, value)), 2) => value.push(resolved),
                    _ => return Err(MessageError::Xml("text outside an element".to_owned())),
                }
            }
            Event::CData(data) => match (&mut current, depth) {
                (Some((_, value)), 2) => {
                    value.push_str(&data.xml10_content());
                }
                _ => return Err(MessageError::Xml("CDATA outside an element".to_owned())),
            },
            Event::Eof => break,
        }
    }
    if !root_done || depth != 0 {
        return Err(MessageError::Xml("missing or unclosed <xml> root".to_owned()));
    }
    Ok(PushMessage { format: PushFormat::Xml, fields })
}

/// An element name as WeChat uses them: ASCII letters, digits, `_`, `-` and `.`, starting
/// with a letter or `_`. quick-xml reads anything up to whitespace or `>` as a name.
fn element_name(name: &str) -> Result<String, MessageError> {
    let valid = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid { Ok(name.to_owned()) } else { Err(MessageError::Xml(format!("invalid element name {name:?}"))) }
}

/// The five predefined entities and numeric character references; nothing else.
fn resolve_reference(reference: &quick_xml::events::BytesRef<'_>) -> Option<char> {
    if let Ok(Some(ch)) = reference.resolve_char_ref() {
        return Some(ch);
    }
    match reference.as_ref() {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

fn push_field(fields: &mut Vec<(String, String)>, name: String, value: String) -> Result<(), MessageError> {
    if fields.iter().any(|(existing, _)| *existing == name) {
        return Err(MessageError::Duplicate(name));
    }
    fields.push((name, value));
    Ok(())
}

/// The `user_authorize_invoice` event, sent to the collection unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeEvent {
    /// The payer (FromUserName).
    pub openid: String,
    /// The receiving account's original id (ToUserName).
    pub to_user_name: String,
    pub create_time: i64,
    pub order_id: String,
    /// True for SuccOrderId, false for FailOrderId.
    pub authorized: bool,
    /// `AuthorizeAppId`, or `AppId` as some SDK samples send it.
    pub authorize_appid: Option<String>,
    pub source: Option<String>,
    /// `SPAppId`, present in some real pushes.
    pub s_pappid: Option<String>,
}

/// The `update_invoice_status` event, sent to the issuer (the bureau).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub openid: String,
    pub to_user_name: String,
    pub create_time: i64,
    /// An `INVOICE_REIMBURSE_*` value.
    pub status: String,
    pub card_id: String,
    pub code: String,
}

pub const EVENT_USER_AUTHORIZE_INVOICE: &str = "user_authorize_invoice";
pub const EVENT_UPDATE_INVOICE_STATUS: &str = "update_invoice_status";

impl PushMessage {
    /// CreateTime, if it is a plausible time (see [`crate::clock`]): an absurd one is refused.
    fn create_time(&self) -> Result<i64, MessageError> {
        let time: i64 = self.require("CreateTime")?.trim().parse().map_err(|_| MessageError::Invalid("CreateTime"))?;
        if !crate::clock::is_plausible(time, crate::clock::unix_now()) {
            return Err(MessageError::ImplausibleTime("CreateTime"));
        }
        Ok(time)
    }

    fn non_empty(&self, name: &str) -> Option<String> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    /// Reads a `user_authorize_invoice` event: exactly one of SuccOrderId / FailOrderId.
    pub fn authorize_event(&self) -> Result<AuthorizeEvent, MessageError> {
        if self.event() != Some(EVENT_USER_AUTHORIZE_INVOICE) {
            return Err(MessageError::Invalid("Event"));
        }
        let (order_id, authorized) = match (self.non_empty("SuccOrderId"), self.non_empty("FailOrderId")) {
            (Some(order), None) => (order, true),
            (None, Some(order)) => (order, false),
            (None, None) => return Err(MessageError::Missing("SuccOrderId")),
            (Some(_), Some(_)) => return Err(MessageError::Invalid("SuccOrderId")),
        };
        Ok(AuthorizeEvent {
            openid: self.require("FromUserName")?.to_owned(),
            to_user_name: self.get("ToUserName").unwrap_or_default().to_owned(),
            create_time: self.create_time()?,
            order_id,
            authorized,
            authorize_appid: self.non_empty("AuthorizeAppId").or_else(|| self.non_empty("AppId")),
            source: self.non_empty("Source"),
            s_pappid: self.non_empty("SPAppId"),
        })
    }

    /// Reads an `update_invoice_status` event.
    pub fn status_event(&self) -> Result<StatusEvent, MessageError> {
        if self.event() != Some(EVENT_UPDATE_INVOICE_STATUS) {
            return Err(MessageError::Invalid("Event"));
        }
        Ok(StatusEvent {
            openid: self.get("FromUserName").unwrap_or_default().to_owned(),
            to_user_name: self.get("ToUserName").unwrap_or_default().to_owned(),
            create_time: self.create_time()?,
            status: self.require("Status")?.to_owned(),
            card_id: self.require("CardId")?.to_owned(),
            code: self.require("Code")?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_EXAMPLE: &str = r#"<xml>
  <ToUserName><![CDATA[gh_fc0a06a20993]]></ToUserName>
  <FromUserName><![CDATA[oZI8Fj040-be6rlDohc6gkoPOQTQ]]></FromUserName>
  <CreateTime>1475134700</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[user_authorize_invoice]]></Event>
  <SuccOrderId><![CDATA[1202933957956]]></SuccOrderId>
  <FailOrderId><![CDATA[]]></FailOrderId>
  <AuthorizeAppId><![CDATA[wxf83dd777cffa4eab]]></AuthorizeAppId>
  <Source><![CDATA[web]]></Source>
</xml>"#;

    #[test]
    fn parses_the_documented_authorize_push() {
        let message = PushMessage::parse(DOC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(message.format, PushFormat::Xml);
        let event = message.authorize_event().unwrap();
        assert_eq!(
            event,
            AuthorizeEvent {
                openid: "oZI8Fj040-be6rlDohc6gkoPOQTQ".into(),
                to_user_name: "gh_fc0a06a20993".into(),
                create_time: 1475134700,
                order_id: "1202933957956".into(),
                authorized: true,
                authorize_appid: Some("wxf83dd777cffa4eab".into()),
                source: Some("web".into()),
                s_pappid: None,
            }
        );
    }

    #[test]
    fn accepts_appid_spelling_and_fail_order() {
        let xml = DOC_EXAMPLE
            .replace("<SuccOrderId><![CDATA[1202933957956]]></SuccOrderId>", "<SuccOrderId></SuccOrderId>")
            .replace("<FailOrderId><![CDATA[]]></FailOrderId>", "<FailOrderId>77</FailOrderId>")
            .replace("AuthorizeAppId", "AppId");
        let event = PushMessage::parse(xml.as_bytes()).unwrap().authorize_event().unwrap();
        assert_eq!((event.order_id.as_str(), event.authorized), ("77", false));
        assert_eq!(event.authorize_appid.as_deref(), Some("wxf83dd777cffa4eab"));
    }

    #[test]
    fn json_and_xml_round_trip() {
        let message = PushMessage::parse(DOC_EXAMPLE.as_bytes()).unwrap();
        let json = PushMessage::parse(message.to_json().as_bytes()).unwrap();
        assert_eq!(json.format, PushFormat::Json);
        assert_eq!(json.fields(), message.fields());
        assert!(message.to_json().contains("\"CreateTime\":1475134700"));
        let xml = PushMessage::parse(message.to_xml().as_bytes()).unwrap();
        assert_eq!(xml, message);
        let tricky = PushMessage::new(PushFormat::Xml, vec![("A".into(), "x]]>y<&".into())]);
        assert_eq!(PushMessage::parse(tricky.to_xml().as_bytes()).unwrap(), tricky);
    }

    #[test]
    fn refuses_dtds_entities_and_odd_shapes() {
        let billion_laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><xml><A>&lol2;</A></xml>"#;
        assert_eq!(PushMessage::parse(billion_laughs.as_bytes()), Err(MessageError::Dtd));
        let external = r#"<!DOCTYPE xml SYSTEM "file:///etc/passwd"><xml><A>1</A></xml>"#;
        assert_eq!(PushMessage::parse(external.as_bytes()), Err(MessageError::Dtd));
        assert!(matches!(PushMessage::parse(b"<xml><A>&custom;</A></xml>"), Err(MessageError::Xml(_))));
        assert_eq!(PushMessage::parse(b"<xml><A>&lt;&#x4E2D;</A></xml>").unwrap().get("A"), Some("<中"));
        assert!(matches!(PushMessage::parse(b"<xml><A><B>1</B></A></xml>"), Err(MessageError::Xml(_))));
        assert!(matches!(PushMessage::parse(b"<xml><A>1</A>"), Err(MessageError::Xml(_))));
        assert!(matches!(PushMessage::parse(b"<xml><A>1</B></xml>"), Err(MessageError::Xml(_))));
        assert!(matches!(PushMessage::parse(b"<root><A>1</A></root>"), Err(MessageError::Xml(_))));
        assert!(matches!(PushMessage::parse(b"<xml><A>1</A></xml><xml/>"), Err(MessageError::Xml(_))));
        assert_eq!(PushMessage::parse(b"<xml><A>1</A><A>2</A></xml>"), Err(MessageError::Duplicate("A".into())));
        assert_eq!(PushMessage::parse(b"  "), Err(MessageError::Empty));
        assert!(matches!(PushMessage::parse(b"[1]"), Err(MessageError::Xml(_))));
        // Found by fuzzing (push_message): quick-xml reads `B;&amp;<` as a name, which no
        // serializer can write back.
        assert!(matches!(PushMessage::parse(b"<xml><B;&amp;<//></xml>"), Err(MessageError::Xml(_))));
        assert!(matches!(PushMessage::parse(b"<xml><1A>1</1A></xml>"), Err(MessageError::Xml(_))));
        assert!(matches!(PushMessage::parse(b"{\"a\":"), Err(MessageError::Json(_))));
        assert_eq!(PushMessage::parse(&vec![b' '; MAX_PUSH_BYTES + 1]), Err(MessageError::TooLarge));
    }

    #[test]
    fn authorize_event_needs_exactly_one_order() {
        let both = DOC_EXAMPLE.replace("<FailOrderId><![CDATA[]]></FailOrderId>", "<FailOrderId>9</FailOrderId>");
        assert_eq!(
            PushMessage::parse(both.as_bytes()).unwrap().authorize_event(),
            Err(MessageError::Invalid("SuccOrderId"))
        );
        let neither = DOC_EXAMPLE.replace("1202933957956", "");
        assert_eq!(
            PushMessage::parse(neither.as_bytes()).unwrap().authorize_event(),
            Err(MessageError::Missing("SuccOrderId"))
        );
        let not_a_time = DOC_EXAMPLE.replace("1475134700", "soon");
        assert_eq!(
            PushMessage::parse(not_a_time.as_bytes()).unwrap().authorize_event(),
            Err(MessageError::Invalid("CreateTime"))
        );
        for time in ["9223372036854775807", "253402300800", "0", "946684799"] {
            let bad_time = DOC_EXAMPLE.replace("1475134700", time);
            assert_eq!(
                PushMessage::parse(bad_time.as_bytes()).unwrap().authorize_event(),
                Err(MessageError::ImplausibleTime("CreateTime")),
                "{time}"
            );
        }
    }

    #[test]
    fn parses_status_events() {
        let xml = "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1475134700</CreateTime><MsgType>event</MsgType><Event>update_invoice_status</Event><Status>INVOICE_REIMBURSE_LOCK</Status><CardId>pc</CardId><Code>123</Code></xml>";
        let event = PushMessage::parse(xml.as_bytes()).unwrap().status_event().unwrap();
        assert_eq!(
            (event.status.as_str(), event.card_id.as_str(), event.code.as_str()),
            ("INVOICE_REIMBURSE_LOCK", "pc", "123")
        );
    }
}
