//! Sealing a push the way WeChat sends it, for the sandbox (and tests): query parameters and
//! body for the account's push mode and format.

use super::crypto;
use super::keys::{CallbackKeys, PushMode};
use super::message::{PushFormat, PushMessage};
use super::signature::{msg_signature, signature};

/// A push ready to POST: `?query` and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPush {
    pub query: Vec<(String, String)>,
    pub body: String,
    pub content_type: &'static str,
}

impl SealedPush {
    /// The query string, percent-encoded.
    pub fn query_string(&self) -> String {
        self.query
            .iter()
            .map(|(k, v)| {
                format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC))
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Seals `message` for the account `keys` in `format`, as WeChat would at `timestamp` with
/// `nonce`. The openid query parameter is the message's FromUserName.
pub fn seal_push(
    keys: &CallbackKeys,
    format: PushFormat,
    message: &PushMessage,
    timestamp: i64,
    nonce: &str,
) -> SealedPush {
    let timestamp = timestamp.to_string();
    let mut query = vec![
        ("signature".to_owned(), signature(keys.token.expose(), &timestamp, nonce)),
        ("timestamp".to_owned(), timestamp.clone()),
        ("nonce".to_owned(), nonce.to_owned()),
    ];
    if let Some(openid) = message.get("FromUserName") {
        query.push(("openid".to_owned(), openid.to_owned()));
    }
    let plaintext = PushMessage::new(format, message.fields().to_vec());
    let content_type = match format {
        PushFormat::Xml => "text/xml; charset=utf-8",
        PushFormat::Json => "application/json; charset=utf-8",
    };
    let key = match (keys.mode, &keys.aes_key) {
        (PushMode::Plain, _) | (_, None) => {
            return SealedPush { query, body: plaintext.to_body(), content_type };
        }
        (_, Some(key)) => key,
    };
    let encrypt = crypto::encrypt(key, crypto::random_prefix(), plaintext.to_body().as_bytes(), &keys.appid);
    query.push(("encrypt_type".to_owned(), "aes".to_owned()));
    query.push(("msg_signature".to_owned(), msg_signature(keys.token.expose(), &timestamp, nonce, &encrypt)));
    let mut fields = match keys.mode {
        PushMode::Compatible => message.fields().to_vec(),
        _ => vec![("ToUserName".to_owned(), message.get("ToUserName").unwrap_or_default().to_owned())],
    };
    fields.push(("Encrypt".to_owned(), encrypt));
    SealedPush { query, body: PushMessage::new(format, fields).to_body(), content_type }
}

/// An encrypted reply body (`<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`).
pub fn encrypted_reply(
    keys: &CallbackKeys,
    key: &crypto::AesKey,
    random: [u8; 16],
    reply: &str,
    timestamp: &str,
    nonce: &str,
) -> String {
    let encrypt = crypto::encrypt(key, random, reply.as_bytes(), &keys.appid);
    let signature = msg_signature(keys.token.expose(), timestamp, nonce, &encrypt);
    format!(
        "<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt><MsgSignature><![CDATA[{signature}]]></MsgSignature><TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
    )
}
