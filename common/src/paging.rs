//! Paging of the list calls: a page is fetched with one row more than asked, which only tells
//! whether another page follows; page tokens encode where a page ended (newest first, then by
//! unit and order) and which list it belongs to: the method and a digest of its filters. A
//! token is strictly parsed: text this service did not issue, another method's token, or one
//! sent with other filters than the page it came from is INVALID_ARGUMENT `INVALID_PAGE_TOKEN`.

use std::future::Future;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::status::ApiError;

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

    /// The token of the page after this position, in the list `method` with `filters`.
    pub fn token(&self, method: &str, filters: &[&str]) -> String {
        encode_token(method, filters, &[&self.created_at.to_string(), &self.unit_appid, &self.order_id])
    }

    /// The position of a request's `page_token` (None for the first page).
    pub fn from_token(token: &str, method: &str, filters: &[&str]) -> Result<Option<Self>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let [created_at, unit_appid, order_id] = decode_token(token, method, filters)?;
        let created_at = created_at.parse().ok().filter(|ms| (0..i64::MAX).contains(ms));
        match created_at {
            Some(created_at) if !unit_appid.is_empty() && !order_id.is_empty() => {
                Ok(Some(Self { created_at, unit_appid, order_id }))
            }
            _ => Err(invalid_token(method)),
        }
    }
}

/// A page token: base64url of the list's scope digest and the position, one per line.
pub fn encode_token(method: &str, filters: &[&str], position: &[&str]) -> String {
    let mut text = scope(method, filters);
    for part in position {
        text.push('\n');
        text.push_str(part);
    }
    URL_SAFE_NO_PAD.encode(text)
}

/// The position of a token issued by [`encode_token`] for the same method and filters.
pub fn decode_token<const N: usize>(token: &str, method: &str, filters: &[&str]) -> Result<[String; N], ApiError> {
    let text = URL_SAFE_NO_PAD.decode(token).ok().and_then(|raw| String::from_utf8(raw).ok());
    let mut lines = text.as_deref().unwrap_or_default().split('\n');
    if lines.next() != Some(scope(method, filters).as_str()) {
        return Err(invalid_token(method));
    }
    let parts: Vec<String> = lines.map(str::to_owned).collect();
    parts.try_into().map_err(|_| invalid_token(method))
}

/// The method and a digest of its filters (the filters themselves stay out of the token).
fn scope(method: &str, filters: &[&str]) -> String {
    let digest = Sha256::digest(filters.join("\0").as_bytes());
    format!("{method}:{}", hex::encode(&digest[..8]))
}

fn invalid_token(method: &str) -> ApiError {
    ApiError::invalid_field(
        "INVALID_PAGE_TOKEN",
        "page_token",
        format!("is not a token from a previous {method} response with the same filters"),
    )
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
    fn tokens_continue_only_their_own_list() {
        let cursor =
            Cursor { created_at: 1_700_000_000_123, unit_appid: "wxc0000000000000c1".into(), order_id: "o-1".into() };
        let filters = ["wxc0000000000000c1", "inserted"];
        let token = cursor.token("ListBills", &filters);
        assert_eq!(Cursor::from_token(&token, "ListBills", &filters).unwrap(), Some(cursor.clone()));
        assert_eq!(Cursor::from_token("", "ListBills", &filters).unwrap(), None);
        let other_filters = ["wxc0000000000000c1", "failed"];
        let forged = URL_SAFE_NO_PAD.encode("ListBills:0000000000000000\n1\nwx\no");
        let bad_time = encode_token("ListBills", &filters, &["soon", "wx", "o"]);
        let short = encode_token("ListBills", &filters, &["1", "wx"]);
        for (token, method, filters) in [
            ("not a token", "ListBills", &filters),
            ("@@", "ListBills", &filters),
            (token.as_str(), "ListBills", &other_filters),
            (token.as_str(), "ListAuthorizations", &filters),
            (forged.as_str(), "ListBills", &filters),
            (bad_time.as_str(), "ListBills", &filters),
            (short.as_str(), "ListBills", &filters),
        ] {
            let error = Cursor::from_token(token, method, filters).unwrap_err();
            assert_eq!((error.code, error.reason), (tonic::Code::InvalidArgument, "INVALID_PAGE_TOKEN"), "{token}");
            assert_eq!(error.violations[0].field, "page_token");
        }
    }
}
