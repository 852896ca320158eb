//! Safe-mode message encryption: AES-256-CBC with the key from the 43-character
//! EncodingAESKey, IV = key[..16], plaintext = 16 random bytes ‖ u32 BE length ‖ message ‖
//! appid, padded with PKCS#7 to a multiple of 32 bytes (not the AES block size).

use std::fmt;

use aes::Aes256;
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};

/// WeChat pads to 32-byte multiples; pads of 1..=32 are all valid.
const PAD_BLOCK: usize = 32;
const RANDOM_LEN: usize = 16;
const AES_BLOCK: usize = 16;

/// Decodes EncodingAESKeys: most real keys have non-zero trailing bits in their last
/// character, which a strict decoder rejects.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Lenient on padding only: `Encrypt` values arrive with their `=`.
const ENCRYPT_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The 32-byte AES key of an account. Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("EncodingAESKey must be 43 characters, got {0}")]
    Length(usize),
    #[error("EncodingAESKey is not base64")]
    NotBase64,
}

impl AesKey {
    /// `base64_decode(EncodingAESKey + "=")`, with trailing bits allowed: 43 chars in, 32
    /// bytes out.
    pub fn from_encoding_aes_key(encoding_aes_key: &str) -> Result<Self, KeyError> {
        let chars = encoding_aes_key.chars().count();
        if chars != 43 {
            return Err(KeyError::Length(chars));
        }
        let bytes = KEY_ENGINE.decode(encoding_aes_key).map_err(|_| KeyError::NotBase64)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::NotBase64)?;
        Ok(Self(key))
    }

    /// The canonical 43-character EncodingAESKey of this key (trailing bits zero).
    pub fn to_encoding_aes_key(&self) -> String {
        STANDARD.encode(self.0).trim_end_matches('=').to_owned()
    }

    fn iv(&self) -> [u8; 16] {
        self.0[..16].try_into().expect("key is 32 bytes")
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("Encrypt is not base64")]
    NotBase64,
    #[error("ciphertext length {0} is not a positive multiple of 16")]
    CiphertextLength(usize),
    #[error("bad PKCS#7 padding")]
    Padding,
    #[error("message length field out of bounds")]
    MessageLength,
    #[error("trailing appid is not UTF-8")]
    AppidEncoding,
}

/// A decrypted push: the message and the appid it was encrypted for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decrypted {
    pub random: [u8; RANDOM_LEN],
    pub message: Vec<u8>,
    pub appid: String,
}

/// 16 random ASCII letters and digits, as WeChat's SDKs use for the prefix.
pub fn random_prefix() -> [u8; RANDOM_LEN] {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::array::from_fn(|_| ALPHABET[rand::random_range(0..ALPHABET.len())])
}

/// Encrypts `message` for `appid`; returns the base64 `Encrypt` value.
pub fn encrypt(key: &AesKey, random: [u8; RANDOM_LEN], message: &[u8], appid: &str) -> String {
    let content_len = RANDOM_LEN + 4 + message.len() + appid.len();
    let pad = PAD_BLOCK - content_len % PAD_BLOCK;
    let mut buffer = Vec::with_capacity(content_len + pad);
    buffer.extend_from_slice(&random);
    buffer.extend_from_slice(&(message.len() as u32).to_be_bytes());
    buffer.extend_from_slice(message);
    buffer.extend_from_slice(appid.as_bytes());
    buffer.resize(content_len + pad, pad as u8);

    let mut cipher = cbc::Encryptor::<Aes256>::new(&key.0.into(), &key.iv().into());
    for block in buffer.chunks_exact_mut(AES_BLOCK) {
        cipher.encrypt_block(block.try_into().expect("16-byte chunk"));
    }
    STANDARD.encode(buffer)
}

/// Decrypts an `Encrypt` value. The caller compares the appid with its own.
pub fn decrypt(key: &AesKey, encrypt: &str) -> Result<Decrypted, CryptoError> {
    let mut buffer = ENCRYPT_ENGINE.decode(encrypt.trim()).map_err(|_| CryptoError::NotBase64)?;
    if buffer.is_empty() || buffer.len() % AES_BLOCK != 0 {
        return Err(CryptoError::CiphertextLength(buffer.len()));
    }
    let mut cipher = cbc::Decryptor::<Aes256>::new(&key.0.into(), &key.iv().into());
    for block in buffer.chunks_exact_mut(AES_BLOCK) {
        cipher.decrypt_block(block.try_into().expect("16-byte chunk"));
    }

    let pad = *buffer.last().expect("non-empty") as usize;
    if !(1..=PAD_BLOCK).contains(&pad)
        || pad > buffer.len()
        || buffer[buffer.len() - pad..].iter().any(|&b| b as usize != pad)
    {
        return Err(CryptoError::Padding);
    }
    let content = &buffer[..buffer.len() - pad];
    if content.len() < RANDOM_LEN + 4 {
        return Err(CryptoError::MessageLength);
    }
    let length = u32::from_be_bytes(content[RANDOM_LEN..RANDOM_LEN + 4].try_into().expect("4 bytes")) as usize;
    let message_start = RANDOM_LEN + 4;
    let message_end =
        message_start.checked_add(length).filter(|&end| end <= content.len()).ok_or(CryptoError::MessageLength)?;
    let appid = std::str::from_utf8(&content[message_end..]).map_err(|_| CryptoError::AppidEncoding)?;
    Ok(Decrypted {
        random: content[..RANDOM_LEN].try_into().expect("16 bytes"),
        message: content[message_start..message_end].to_vec(),
        appid: appid.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_43_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const APPID: &str = "wxba5fad812f8e6fb9";
    const VECTOR_ENCRYPT: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
    const VECTOR_MESSAGE: &str = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;

    fn key() -> AesKey {
        AesKey::from_encoding_aes_key(KEY_43_A).unwrap()
    }

    #[test]
    fn decrypts_the_official_safe_mode_vector() {
        let decrypted = decrypt(&key(), VECTOR_ENCRYPT).unwrap();
        assert_eq!(&decrypted.random, b"a8eedb185eb2fecf");
        assert_eq!(decrypted.message.len(), 167);
        assert_eq!(decrypted.message, VECTOR_MESSAGE.as_bytes());
        assert_eq!(decrypted.appid, APPID);
    }

    #[test]
    fn re_encrypts_the_official_vector_byte_for_byte() {
        // The vector's padding is 19 bytes: legal only under the 32-byte rule.
        assert_eq!(encrypt(&key(), *b"a8eedb185eb2fecf", VECTOR_MESSAGE.as_bytes(), APPID), VECTOR_ENCRYPT);
    }

    #[test]
    fn encrypts_the_official_reply_vector() {
        let encrypt = encrypt(&key(), *b"707722b803182950", br#"{"demo_resp":"good luck"}"#, APPID);
        assert_eq!(encrypt, "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==");
        assert_eq!(
            super::super::signature::msg_signature("AAAAA", "1713424427", "415670741", &encrypt),
            "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"
        );
    }

    #[test]
    fn keys_with_nonzero_trailing_bits_decode() {
        // The last character of a 43-char key carries 2 bits beyond the 256 used.
        for last in ['B', 'C', 'D', 'z', '/', '+'] {
            let encoding = format!("{}{last}", &KEY_43_A[..42]);
            let key = AesKey::from_encoding_aes_key(&encoding).unwrap_or_else(|e| panic!("{encoding}: {e}"));
            let base = AesKey::from_encoding_aes_key(&format!("{}A", &KEY_43_A[..42])).unwrap();
            // Trailing bits are dropped: 'A'..='D' all give the same key.
            if ['B', 'C', 'D'].contains(&last) {
                assert_eq!(key, base);
            }
            let sealed = encrypt(&key, random_prefix(), b"<xml/>", APPID);
            assert_eq!(decrypt(&key, &sealed).unwrap().message, b"<xml/>");
        }
        // Keys generated at random: about 3 in 4 have non-zero trailing bits.
        for _ in 0..64 {
            let bytes: [u8; 32] = rand::random();
            let mut encoding = STANDARD.encode(bytes).trim_end_matches('=').to_owned();
            let last = encoding.pop().unwrap();
            let index = base64::alphabet::STANDARD.as_str().find(last).unwrap();
            encoding.push(base64::alphabet::STANDARD.as_str().as_bytes()[index | 0b11] as char);
            assert_eq!(AesKey::from_encoding_aes_key(&encoding).unwrap().0, bytes);
        }
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(AesKey::from_encoding_aes_key("short"), Err(KeyError::Length(5)));
        assert_eq!(AesKey::from_encoding_aes_key(&"!".repeat(43)), Err(KeyError::NotBase64));
        assert_eq!(format!("{:?}", key()), "AesKey(<redacted>)");
    }

    #[test]
    fn every_padding_length_round_trips() {
        let key = key();
        // Content = 16 + 4 + message + 18 (appid); message lengths 0..32 cover pads 1..=32.
        let mut seen = std::collections::BTreeSet::new();
        for len in 0..PAD_BLOCK {
            let message = vec![b'x'; len];
            let sealed = encrypt(&key, random_prefix(), &message, APPID);
            let raw = STANDARD.decode(&sealed).unwrap();
            assert_eq!(raw.len() % PAD_BLOCK, 0);
            seen.insert(PAD_BLOCK - (16 + 4 + len + APPID.len()) % PAD_BLOCK);
            let opened = decrypt(&key, &sealed).unwrap();
            assert_eq!(opened.message, message);
            assert_eq!(opened.appid, APPID);
        }
        assert_eq!(seen, (1..=PAD_BLOCK).collect());
    }

    #[test]
    fn rejects_tampered_and_truncated_ciphertexts() {
        let key = key();
        assert_eq!(decrypt(&key, "not base64!"), Err(CryptoError::NotBase64));
        assert_eq!(decrypt(&key, &STANDARD.encode([0u8; 15])), Err(CryptoError::CiphertextLength(15)));
        assert_eq!(decrypt(&key, ""), Err(CryptoError::CiphertextLength(0)));
        let raw = STANDARD.decode(VECTOR_ENCRYPT).unwrap();
        assert!(decrypt(&key, &STANDARD.encode(&raw[..raw.len() - 16])).is_err());
        let other = AesKey::from_encoding_aes_key(&"B".repeat(43)).unwrap();
        let wrong = decrypt(&other, VECTOR_ENCRYPT);
        assert!(wrong.is_err() || wrong.unwrap().appid != APPID);
    }
}
