//! Page tokens of the list calls: an opaque encoding of where the last page ended (newest
//! first, then by unit and order).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::status::Violations;

/// Position after the last item of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Unix milliseconds.
    pub created_at: i64,
    pub unit_appid: String,
    pub order_id: String,
}

impl Cursor {
    /// Before the newest item: the first page.
    pub fn first() -> Self {
        Self { created_at: i64::MAX, unit_appid: String::new(), order_id: String::new() }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}\n{}\n{}", self.created_at, self.unit_appid, self.order_id))
    }

    pub fn decode(token: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let mut parts = raw.splitn(3, '\n');
        Some(Self {
            created_at: parts.next()?.parse().ok()?,
            unit_appid: parts.next()?.to_owned(),
            order_id: parts.next()?.to_owned(),
        })
    }

    /// The cursor of a request's `page_token`: None for the first page; a violation when the
    /// token is not one this service issued.
    pub fn from_page_token(token: &str, method: &str, violations: &mut Violations) -> Option<Self> {
        if token.is_empty() {
            return None;
        }
        let cursor = Self::decode(token);
        if cursor.is_none() {
            violations.add("page_token", format!("is not a token from a previous {method} response"));
        }
        cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let cursor =
            Cursor { created_at: 1_700_000_000_123, unit_appid: "wxc0000000000000c1".into(), order_id: "o-1".into() };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("not a token"), None);
        let mut violations = Violations::default();
        assert_eq!(Cursor::from_page_token("", "ListBills", &mut violations), None);
        assert!(violations.is_empty());
        assert_eq!(Cursor::from_page_token("@@", "ListBills", &mut violations), None);
        assert_eq!(violations.fields().collect::<Vec<_>>(), ["page_token"]);
    }
}
