//! An account's callback settings: token, EncodingAESKey (and the previous one during
//! rotation) and push mode.

use std::fmt;

use serde::Deserialize;

use super::crypto::{AesKey, KeyError};
use crate::secret::Secret;

/// How WeChat delivers pushes to an account (its "message encryption mode" setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushMode {
    /// 明文模式: plaintext body, `signature` only.
    Plain,
    /// 兼容模式: plaintext elements and `Encrypt`, `msg_signature`.
    Compatible,
    /// 安全模式: only `Encrypt`, `msg_signature`.
    #[default]
    Safe,
}

/// What a receiver (or the sandbox as sender) needs to verify and open an account's pushes.
#[derive(Clone)]
pub struct CallbackKeys {
    /// The account's appid: the trailing appid of every encrypted message must equal it.
    pub appid: String,
    pub token: Secret,
    pub aes_key: Option<AesKey>,
    /// The key before the last rotation, tried when the current one fails.
    pub previous_aes_key: Option<AesKey>,
    pub mode: PushMode,
}

impl CallbackKeys {
    /// Builds keys from configuration strings; the AES key is required unless the mode is
    /// plain.
    pub fn new(
        appid: impl Into<String>,
        token: Secret,
        encoding_aes_key: Option<&Secret>,
        previous_encoding_aes_key: Option<&Secret>,
        mode: PushMode,
    ) -> Result<Self, KeysError> {
        let parse = |key: Option<&Secret>| -> Result<Option<AesKey>, KeysError> {
            key.filter(|k| !k.is_empty())
                .map(|k| AesKey::from_encoding_aes_key(k.expose()).map_err(KeysError::AesKey))
                .transpose()
        };
        let aes_key = parse(encoding_aes_key)?;
        if aes_key.is_none() && mode != PushMode::Plain {
            return Err(KeysError::MissingAesKey);
        }
        if token.is_empty() {
            return Err(KeysError::MissingToken);
        }
        Ok(Self { appid: appid.into(), token, aes_key, previous_aes_key: parse(previous_encoding_aes_key)?, mode })
    }
}

impl fmt::Debug for CallbackKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackKeys")
            .field("appid", &self.appid)
            .field("token", &self.token)
            .field("aes_key", &self.aes_key.as_ref().map(|_| "<redacted>"))
            .field("previous_aes_key", &self.previous_aes_key.as_ref().map(|_| "<redacted>"))
            .field("mode", &self.mode)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("callback token is empty")]
    MissingToken,
    #[error("push mode compatible or safe needs an EncodingAESKey")]
    MissingAesKey,
    #[error(transparent)]
    AesKey(KeyError),
}
