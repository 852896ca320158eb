//! `Encrypt` values whose plaintext layout (16 random bytes, u32 length, message, appid,
//! padding) is fuzzed: the input is encrypted as-is, so decryption reaches the length, padding
//! and appid checks with every shape. Whatever decrypts must encrypt back to itself.
#![no_main]

use aes::Aes256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use wechat::callback::AesKey;
use wechat::callback::crypto::{decrypt, encrypt};
use libfuzzer_sys::fuzz_target;

const AES_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fuzz_target!(|data: &[u8]| {
    let key = AesKey::from_encoding_aes_key(AES_KEY).expect("valid key");
    // The all-'A' key decodes to 32 zero bytes; the IV is its first 16.
    let mut buffer = data.to_vec();
    buffer.resize(data.len().div_ceil(16) * 16, 0);
    let mut cipher = cbc::Encryptor::<Aes256>::new(&[0u8; 32].into(), &[0u8; 16].into());
    for block in buffer.chunks_exact_mut(16) {
        cipher.encrypt_block(block.try_into().expect("16 bytes"));
    }
    let Ok(decrypted) = decrypt(&key, &STANDARD.encode(&buffer)) else { return };
    let again = decrypt(&key, &encrypt(&key, decrypted.random, &decrypted.message, &decrypted.appid))
        .expect("what decrypts re-encrypts");
    assert_eq!(again, decrypted);
});
