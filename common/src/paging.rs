//! Paging of the list calls: a page is fetched with one row more than asked, which only tells
//! whether another page follows; page tokens are an opaque encoding of where a page ended
//! (newest first, then by unit and order).

use std::future::Future;

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

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Another page follows this one.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// The token of the next page (made by `token_of` from this page's last item), or empty
    /// when this page is the last.
    pub fn next_page_token(&self, token_of: impl Fn(&T) -> String) -> String {
        match self.items.last() {
            Some(last) if self.has_more => token_of(last),
            _ => String::new(),
        }
    }
}

/// Fetches a page of at most `limit` items: `fetch` is asked for `limit + 1`.
pub async fn fetch_page<T, E, Fut>(limit: i64, fetch: impl FnOnce(i64) -> Fut) -> Result<Page<T>, E>
where
    Fut: Future<Output = Result<Vec<T>, E>>,
{
    let mut items = fetch(limit + 1).await?;
    let has_more = items.len() as i64 > limit;
    items.truncate(limit.max(0) as usize);
    Ok(Page { items, has_more })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_fetch_one_row_more_than_they_show() {
        let rows = |n: i64| async move { Ok::<_, ()>((0..n.min(5)).collect::<Vec<i64>>()) };
        let first = fetch_page(3, rows).await.unwrap();
        assert_eq!(first, Page { items: vec![0, 1, 2], has_more: true });
        assert_eq!(first.next_page_token(|n| n.to_string()), "2");
        let all = fetch_page(5, rows).await.unwrap();
        assert_eq!(all, Page { items: vec![0, 1, 2, 3, 4], has_more: false });
        assert_eq!(all.next_page_token(|n| n.to_string()), "");
    }

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
