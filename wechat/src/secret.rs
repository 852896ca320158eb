//! A wrapper for values that must never reach a log line, an error message or Debug output:
//! appsecrets, callback tokens, EncodingAESKeys, access tokens, tickets, client keys.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A secret string. `Debug` prints `<redacted>`; there is no `Display`. Read the value with
/// [`Secret::expose`] only where it leaves the process (an HTTP request, a gRPC response).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Constant-time equality, so comparing a presented secret leaks nothing through timing.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("appsecret-1234");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "appsecret-1234");
    }

    #[test]
    fn serializes_transparently_for_the_wire() {
        let secret = Secret::new("t0k");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"t0k\"");
        let back: Secret = serde_json::from_str("\"t0k\"").unwrap();
        assert_eq!(back, secret);
        assert_ne!(back, Secret::new("t0K"));
    }
}
