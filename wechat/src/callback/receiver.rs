//! Verifying and opening what WeChat sends to a callback URL: the URL-verification GET and
//! event POSTs in plaintext, compatible and safe modes.

use super::crypto::{self, CryptoError};
use super::keys::{CallbackKeys, PushMode};
use super::message::{MAX_PUSH_BYTES, MessageError, PushMessage};
use super::signature::{msg_signature, signature, signatures_match};

/// The query parameters of a callback request, percent-decoded, as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackQuery {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub echostr: Option<String>,
    pub openid: Option<String>,
    pub encrypt_type: Option<String>,
    pub msg_signature: Option<String>,
}

impl CallbackQuery {
    /// Parses a raw query string. Values are used exactly as received (after
    /// percent-decoding), never reformatted: signatures cover the raw text.
    pub fn parse(raw_query: &str) -> Self {
        let mut query = Self::default();
        for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
            let slot = match key {
                "signature" => &mut query.signature,
                "timestamp" => &mut query.timestamp,
                "nonce" => &mut query.nonce,
                "echostr" => &mut query.echostr,
                "openid" => &mut query.openid,
                "encrypt_type" => &mut query.encrypt_type,
                "msg_signature" => &mut query.msg_signature,
                _ => continue,
            };
            // The first occurrence wins; a repeated parameter cannot override it.
            slot.get_or_insert(value);
        }
        query
    }

    fn required(&self, value: &Option<String>, name: &'static str) -> Result<String, CallbackError> {
        value.clone().filter(|v| !v.is_empty()).ok_or(CallbackError::MissingParameter(name))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("query parameter {0} is missing")]
    MissingParameter(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("msg_signature does not match")]
    BadMsgSignature,
    #[error("the account is in safe mode but the push is not encrypted")]
    NotEncrypted,
    #[error("the push is encrypted but no EncodingAESKey is configured")]
    NoAesKey,
    #[error("unsupported encrypt_type")]
    UnsupportedEncryptType,
    #[error("body has no Encrypt element")]
    MissingEncrypt,
    #[error("cannot decrypt: {0}")]
    Decrypt(CryptoError),
    #[error("the push was encrypted for another appid")]
    AppidMismatch,
    #[error(transparent)]
    Message(#[from] MessageError),
}

impl CallbackError {
    /// The HTTP status to refuse the request with: 403 for what fails verification, 413 for an
    /// oversized body, 400 for the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            CallbackError::BadSignature
            | CallbackError::BadMsgSignature
            | CallbackError::AppidMismatch
            | CallbackError::Decrypt(_) => 403,
            CallbackError::Message(MessageError::TooLarge) => 413,
            _ => 400,
        }
    }

    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            CallbackError::MissingParameter(_) => "missing_parameter",
            CallbackError::BadSignature => "bad_signature",
            CallbackError::BadMsgSignature => "bad_msg_signature",
            CallbackError::NotEncrypted => "not_encrypted",
            CallbackError::NoAesKey => "no_aes_key",
            CallbackError::UnsupportedEncryptType => "unsupported_encrypt_type",
            CallbackError::MissingEncrypt => "missing_encrypt",
            CallbackError::Decrypt(_) => "decrypt_failed",
            CallbackError::AppidMismatch => "appid_mismatch",
            CallbackError::Message(MessageError::TooLarge) => "too_large",
            CallbackError::Message(MessageError::ImplausibleTime(_)) => "implausible_time",
            CallbackError::Message(_) => "malformed_body",
        }
    }
}

/// URL verification (GET): checks `signature` and returns the `echostr` to answer with.
pub fn verify_url(keys: &CallbackKeys, query: &CallbackQuery) -> Result<String, CallbackError> {
    check_signature(keys, query)?;
    query.required(&query.echostr, "echostr")
}

fn check_signature(keys: &CallbackKeys, query: &CallbackQuery) -> Result<(), CallbackError> {
    let presented = query.required(&query.signature, "signature")?;
    let timestamp = query.required(&query.timestamp, "timestamp")?;
    let nonce = query.required(&query.nonce, "nonce")?;
    let computed = signature(keys.token.expose(), &timestamp, &nonce);
    if signatures_match(&computed, &presented) { Ok(()) } else { Err(CallbackError::BadSignature) }
}

/// A verified push, decrypted when it came encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedPush {
    pub message: PushMessage,
    /// The verified plaintext body (the decrypted message, or the plaintext body itself).
    pub plaintext: Vec<u8>,
    pub encrypted: bool,
    /// Decrypted with the previous EncodingAESKey: the rotation is not complete at WeChat.
    pub used_previous_key: bool,
}

/// Verifies and opens an event POST. Encrypted pushes are checked with `msg_signature` (and
/// `signature` too), decrypted with the current or previous key, and their trailing appid
/// compared with the account's. Nothing in a compatible-mode body outside `Encrypt` is trusted.
pub fn open_push(keys: &CallbackKeys, query: &CallbackQuery, body: &[u8]) -> Result<OpenedPush, CallbackError> {
    if body.len() > MAX_PUSH_BYTES {
        return Err(MessageError::TooLarge.into());
    }
    match query.encrypt_type.as_deref() {
        None | Some("") | Some("raw") => {
            if keys.mode == PushMode::Safe {
                return Err(CallbackError::NotEncrypted);
            }
            check_signature(keys, query)?;
            let message = PushMessage::parse(body)?;
            Ok(OpenedPush { message, plaintext: body.to_vec(), encrypted: false, used_previous_key: false })
        }
        Some("aes") => open_encrypted(keys, query, body),
        Some(_) => Err(CallbackError::UnsupportedEncryptType),
    }
}

fn open_encrypted(keys: &CallbackKeys, query: &CallbackQuery, body: &[u8]) -> Result<OpenedPush, CallbackError> {
    let Some(current) = &keys.aes_key else {
        return Err(CallbackError::NoAesKey);
    };
    let envelope = PushMessage::parse(body)?;
    let encrypt = envelope.get("Encrypt").filter(|e| !e.is_empty()).ok_or(CallbackError::MissingEncrypt)?;
    let presented = query.required(&query.msg_signature, "msg_signature")?;
    let timestamp = query.required(&query.timestamp, "timestamp")?;
    let nonce = query.required(&query.nonce, "nonce")?;
    let computed = msg_signature(keys.token.expose(), &timestamp, &nonce, encrypt);
    if !signatures_match(&computed, &presented) {
        return Err(CallbackError::BadMsgSignature);
    }
    if query.signature.is_some() {
        check_signature(keys, query)?;
    }

    let opened = open_with(current, encrypt, &keys.appid);
    let (decrypted, used_previous_key) = match (opened, &keys.previous_aes_key) {
        (Ok(decrypted), _) => (decrypted, false),
        (Err(error), Some(previous)) => match open_with(previous, encrypt, &keys.appid) {
            Ok(decrypted) => (decrypted, true),
            Err(_) => return Err(error),
        },
        (Err(error), None) => return Err(error),
    };
    if decrypted.len() > MAX_PUSH_BYTES {
        return Err(MessageError::TooLarge.into());
    }
    let message = PushMessage::parse(&decrypted)?;
    Ok(OpenedPush { message, plaintext: decrypted, encrypted: true, used_previous_key })
}

fn open_with(key: &crypto::AesKey, encrypt: &str, appid: &str) -> Result<Vec<u8>, CallbackError> {
    let decrypted = crypto::decrypt(key, encrypt).map_err(CallbackError::Decrypt)?;
    if !subtle_eq(&decrypted.appid, appid) {
        return Err(CallbackError::AppidMismatch);
    }
    Ok(decrypted.message)
}

fn subtle_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
