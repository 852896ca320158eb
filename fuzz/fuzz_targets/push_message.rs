//! Push bodies through `open_push`, as the callback endpoint sees them, with valid signatures
//! so that the fuzzed bytes reach the parsers: the first byte picks the plaintext path
//! (compatible mode, `signature` only) or the encrypted path (the envelope's `Encrypt` signed
//! with `msg_signature`, then decrypted). Whatever opens must survive event extraction and
//! serialize back to the same fields.
#![no_main]

use wechat::Secret;
use wechat::callback::signature::{msg_signature, signature};
use wechat::callback::{CallbackKeys, CallbackQuery, PushFormat, PushMessage, PushMode, open_push};
use libfuzzer_sys::fuzz_target;

const APPID: &str = "wxba5fad812f8e6fb9";
const TOKEN: &str = "AAAAA";
const AES_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const TIMESTAMP: &str = "1714112445";
const NONCE: &str = "415670741";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let keys = CallbackKeys::new(APPID, Secret::new(TOKEN), Some(&Secret::new(AES_KEY)), None, PushMode::Compatible)
        .expect("valid keys");
    let plain_signature = signature(TOKEN, TIMESTAMP, NONCE);
    let query = if selector % 2 == 0 {
        format!("signature={plain_signature}&timestamp={TIMESTAMP}&nonce={NONCE}")
    } else {
        let Some(encrypt) = PushMessage::parse(body).ok().and_then(|m| m.get("Encrypt").map(str::to_owned)) else {
            return;
        };
        let msg_signature = msg_signature(TOKEN, TIMESTAMP, NONCE, &encrypt);
        format!(
            "signature={plain_signature}&timestamp={TIMESTAMP}&nonce={NONCE}&encrypt_type=aes&msg_signature={msg_signature}"
        )
    };
    let Ok(opened) = open_push(&keys, &CallbackQuery::parse(&query), body) else { return };
    let message = opened.message;
    let _ = message.authorize_event();
    let _ = message.status_event();

    // What the sandbox sends is what the receiver reads.
    let again = PushMessage::parse(message.to_body().as_bytes()).expect("a serialized message parses");
    assert_eq!(again.format, message.format);
    for (name, value) in message.fields() {
        let read = again.get(name).expect("every field survives");
        if message.format == PushFormat::Xml || name != "CreateTime" {
            assert_eq!(read, value, "field {name}");
        }
    }
    assert_eq!(again.fields().len(), message.fields().len());
});
