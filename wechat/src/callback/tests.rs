//! Receiver and sender together, against the official vectors (../shared/test-vectors).

use super::*;
use crate::secret::Secret;

const TOKEN: &str = "AAAAA";
const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const APPID: &str = "wxba5fad812f8e6fb9";
const VECTOR_ENCRYPT: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";

fn keys(mode: PushMode) -> CallbackKeys {
    CallbackKeys::new(APPID, Secret::new(TOKEN), Some(&Secret::new(KEY)), None, mode).unwrap()
}

fn authorize_message() -> PushMessage {
    PushMessage::new(
        PushFormat::Xml,
        [
            ("ToUserName", "gh_fc0a06a20993"),
            ("FromUserName", "oZI8Fj040-be6rlDohc6gkoPOQTQ"),
            ("CreateTime", "1475134700"),
            ("MsgType", "event"),
            ("Event", "user_authorize_invoice"),
            ("SuccOrderId", "1202933957956"),
            ("FailOrderId", ""),
            ("AuthorizeAppId", APPID),
            ("Source", "web"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    )
}

#[test]
fn url_verification_vector_answers_echostr() {
    let query = CallbackQuery::parse(
        "signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249",
    );
    assert_eq!(verify_url(&keys(PushMode::Safe), &query).unwrap(), "4375120948345356249");
    let forged = CallbackQuery::parse(
        "signature=0464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=1",
    );
    assert_eq!(verify_url(&keys(PushMode::Safe), &forged), Err(CallbackError::BadSignature));
    let no_echo = CallbackQuery::parse(
        "signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492",
    );
    assert_eq!(verify_url(&keys(PushMode::Safe), &no_echo), Err(CallbackError::MissingParameter("echostr")));
}

#[test]
fn plaintext_post_vector_is_accepted_in_plain_mode() {
    let query = CallbackQuery::parse(
        "signature=899cf89e464efb63f54ddac96b0a0a235f53aa78&timestamp=1714037059&nonce=486452656&openid=o1",
    );
    let body = authorize_message().to_xml();
    let opened = open_push(&keys(PushMode::Plain), &query, body.as_bytes()).unwrap();
    assert!(!opened.encrypted);
    assert_eq!(opened.message.authorize_event().unwrap().order_id, "1202933957956");
    // The same push to an account in safe mode is refused.
    assert_eq!(open_push(&keys(PushMode::Safe), &query, body.as_bytes()), Err(CallbackError::NotEncrypted));
    let tampered =
        CallbackQuery::parse("signature=899cf89e464efb63f54ddac96b0a0a235f53aa78&timestamp=1714037060&nonce=486452656");
    assert_eq!(open_push(&keys(PushMode::Plain), &tampered, body.as_bytes()), Err(CallbackError::BadSignature));
}

#[test]
fn safe_mode_vector_opens_to_the_documented_message() {
    let query = CallbackQuery::parse(
        "signature=6c5c811b55cc85e0e1b54100749188c20beb3f5d&timestamp=1714112445&nonce=415670741&openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes&msg_signature=046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[{VECTOR_ENCRYPT}]]></Encrypt></xml>"
    );
    let opened = open_push(&keys(PushMode::Safe), &query, body.as_bytes()).unwrap();
    assert!(opened.encrypted && !opened.used_previous_key);
    assert_eq!(opened.message.format, PushFormat::Json);
    assert_eq!(opened.message.get("Event"), Some("debug_demo"));
    assert_eq!(opened.message.get("debug_str"), Some("hello world"));
    assert_eq!(opened.plaintext.len(), 167);

    // Verifying the encrypted body with `signature` alone is the classic bug: refused.
    let without_msg_signature = CallbackQuery { msg_signature: None, ..query.clone() };
    assert_eq!(
        open_push(&keys(PushMode::Safe), &without_msg_signature, body.as_bytes()),
        Err(CallbackError::MissingParameter("msg_signature"))
    );
    let wrong =
        CallbackQuery { msg_signature: Some("6c5c811b55cc85e0e1b54100749188c20beb3f5d".into()), ..query.clone() };
    assert_eq!(open_push(&keys(PushMode::Safe), &wrong, body.as_bytes()), Err(CallbackError::BadMsgSignature));

    // A receiver with another appid refuses the message even though the key matches.
    let mut other = keys(PushMode::Safe);
    other.appid = "wx0000000000000000".into();
    assert_eq!(open_push(&other, &query, body.as_bytes()), Err(CallbackError::AppidMismatch));
}

#[test]
fn encrypted_reply_vector() {
    let keys = keys(PushMode::Safe);
    let reply = encrypted_reply(
        &keys,
        keys.aes_key.as_ref().unwrap(),
        *b"707722b803182950",
        r#"{"demo_resp":"good luck"}"#,
        "1713424427",
        "415670741",
    );
    assert!(reply.contains("<Encrypt><![CDATA[ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==]]></Encrypt>"));
    assert!(reply.contains("<MsgSignature><![CDATA[1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1]]></MsgSignature>"));
}

#[test]
fn every_mode_and_format_round_trips() {
    for mode in [PushMode::Plain, PushMode::Compatible, PushMode::Safe] {
        for format in [PushFormat::Xml, PushFormat::Json] {
            let keys = keys(mode);
            let sealed = seal_push(&keys, format, &authorize_message(), 1_714_112_445, "415670741");
            let query = CallbackQuery::parse(&sealed.query_string());
            let opened =
                open_push(&keys, &query, sealed.body.as_bytes()).unwrap_or_else(|e| panic!("{mode:?}/{format:?}: {e}"));
            assert_eq!(opened.encrypted, mode != PushMode::Plain);
            assert_eq!(opened.message.format, format);
            assert_eq!(opened.message.fields(), authorize_message().fields());
            if mode == PushMode::Safe {
                assert!(!sealed.body.contains("SuccOrderId"), "safe mode hides the content");
            }
        }
    }
}

#[test]
fn compatible_mode_trusts_only_the_encrypted_part() {
    let keys = keys(PushMode::Compatible);
    let sealed = seal_push(&keys, PushFormat::Xml, &authorize_message(), 1_714_112_445, "1");
    let forged_body = sealed.body.replace("<SuccOrderId><![CDATA[1202933957956]]>", "<SuccOrderId><![CDATA[999]]>");
    assert_ne!(forged_body, sealed.body);
    let opened = open_push(&keys, &CallbackQuery::parse(&sealed.query_string()), forged_body.as_bytes()).unwrap();
    assert_eq!(opened.message.authorize_event().unwrap().order_id, "1202933957956");
}

#[test]
fn previous_key_is_tried_during_rotation() {
    let old = keys(PushMode::Safe);
    let sealed = seal_push(&old, PushFormat::Xml, &authorize_message(), 1, "2");
    let query = CallbackQuery::parse(&sealed.query_string());
    let new_key = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let rotated = CallbackKeys::new(
        APPID,
        Secret::new(TOKEN),
        Some(&Secret::new(new_key)),
        Some(&Secret::new(KEY)),
        PushMode::Safe,
    )
    .unwrap();
    let opened = open_push(&rotated, &query, sealed.body.as_bytes()).unwrap();
    assert!(opened.used_previous_key);
    let without_previous =
        CallbackKeys::new(APPID, Secret::new(TOKEN), Some(&Secret::new(new_key)), None, PushMode::Safe).unwrap();
    assert!(open_push(&without_previous, &query, sealed.body.as_bytes()).is_err());
}

#[test]
fn malformed_requests_are_refused() {
    let keys = keys(PushMode::Safe);
    let sealed = seal_push(&keys, PushFormat::Xml, &authorize_message(), 1, "2");
    let query = CallbackQuery::parse(&sealed.query_string());
    let truncated = &sealed.body[..sealed.body.len() / 2];
    assert!(open_push(&keys, &query, truncated.as_bytes()).is_err());
    let oversized = vec![b'<'; MAX_PUSH_BYTES + 1];
    assert_eq!(open_push(&keys, &query, &oversized).unwrap_err().reason(), "too_large");
    let no_encrypt = "<xml><ToUserName>x</ToUserName></xml>";
    assert_eq!(open_push(&keys, &query, no_encrypt.as_bytes()), Err(CallbackError::MissingEncrypt));
    let other_type = CallbackQuery { encrypt_type: Some("rsa".into()), ..query.clone() };
    assert_eq!(open_push(&keys, &other_type, sealed.body.as_bytes()), Err(CallbackError::UnsupportedEncryptType));
    let plain_keys = CallbackKeys::new(APPID, Secret::new(TOKEN), None, None, PushMode::Plain).unwrap();
    assert_eq!(open_push(&plain_keys, &query, sealed.body.as_bytes()), Err(CallbackError::NoAesKey));
}

#[test]
fn keys_validate_and_never_print_secrets() {
    assert_eq!(
        CallbackKeys::new(APPID, Secret::new(TOKEN), None, None, PushMode::Safe).unwrap_err(),
        KeysError::MissingAesKey
    );
    assert_eq!(
        CallbackKeys::new(APPID, Secret::new(""), None, None, PushMode::Plain).unwrap_err(),
        KeysError::MissingToken
    );
    let printed = format!("{:?}", keys(PushMode::Safe));
    assert!(!printed.contains(TOKEN) && !printed.contains(KEY), "{printed}");
}

#[test]
fn query_parsing_keeps_first_value_and_decodes() {
    let query = CallbackQuery::parse("nonce=1&nonce=2&timestamp=%31%32&signature=&x=y");
    assert_eq!(query.nonce.as_deref(), Some("1"));
    assert_eq!(query.timestamp.as_deref(), Some("12"));
    assert_eq!(query.signature.as_deref(), Some(""));
}
