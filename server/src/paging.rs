//! AIP-158 pagination: page sizes and opaque, tamper-proof page tokens.
//!
//! A page token carries the cursor (the last id returned) and a MAC binding
//! it to the query it came from (the collection, the parent and the
//! canonical filter). A token from another workspace or filter, or an edited
//! one, is refused with INVALID_ARGUMENT. Listings are keyset-paginated
//! (`id > cursor`), so rows inserted meanwhile never shift a page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::error::Error;

/// Page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size; larger requests are reduced to it.
pub const MAX_PAGE_SIZE: usize = 1000;

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;

/// The page size to use for a request's `page_size`.
pub fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid("page_size", format!("must not be negative, got {n}"))),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// Mints and checks page tokens.
pub struct PageTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens")
    }
}

impl PageTokens {
    /// Uses `key` (derived from the master key) for the MACs.
    pub fn new(key: hmac::Key) -> Self {
        Self { key }
    }

    /// A token resuming `query` after `cursor`.
    pub fn encode(&self, query: &str, cursor: &str) -> String {
        let tag = hmac::sign(&self.key, &signed_bytes(query, cursor));
        let mut raw = Vec::with_capacity(1 + MAC_LEN + cursor.len());
        raw.push(VERSION);
        raw.extend_from_slice(&tag.as_ref()[..MAC_LEN]);
        raw.extend_from_slice(cursor.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The cursor of `token` for `query`; `None` for an empty token (first
    /// page).
    pub fn decode(&self, query: &str, token: &str) -> Result<Option<String>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            Error::invalid(
                "page_token",
                "is not a page token of a previous call with the same parent and filter (or it has expired)",
            )
        };
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if raw.len() < 1 + MAC_LEN || raw[0] != VERSION {
            return Err(invalid());
        }
        let cursor = std::str::from_utf8(&raw[1 + MAC_LEN..]).map_err(|_| invalid())?;
        let expected = hmac::sign(&self.key, &signed_bytes(query, cursor));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected.as_ref()[..MAC_LEN], &raw[1..1 + MAC_LEN])) {
            return Err(invalid());
        }
        Ok(Some(cursor.to_owned()))
    }
}

fn signed_bytes(query: &str, cursor: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(query.len() + cursor.len() + 9);
    bytes.extend_from_slice(&(query.len() as u64).to_be_bytes());
    bytes.extend_from_slice(query.as_bytes());
    bytes.extend_from_slice(cursor.as_bytes());
    bytes
}

/// One page of a keyset-paginated listing: the items and the next token.
#[derive(Debug)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Token for the next page; empty on the last page.
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// Builds a page from up to `size + 1` fetched items: the extra one only
    /// signals that another page exists.
    pub fn from_fetched(
        mut fetched: Vec<T>,
        size: usize,
        tokens: &PageTokens,
        query: &str,
        cursor_of: impl Fn(&T) -> String,
    ) -> Self {
        let next_page_token = if fetched.len() > size {
            fetched.truncate(size);
            fetched.last().map(|last| tokens.encode(query, &cursor_of(last))).unwrap_or_default()
        } else {
            String::new()
        };
        Self { items: fetched, next_page_token }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(seed: u8) -> PageTokens {
        PageTokens::new(hmac::Key::new(hmac::HMAC_SHA256, &[seed; 32]))
    }

    #[test]
    fn a_token_resumes_only_its_own_query() {
        let t = tokens(1);
        let token = t.encode("credentials|workspaces/a|", "ghcr");
        assert_eq!(t.decode("credentials|workspaces/a|", &token).unwrap().as_deref(), Some("ghcr"));
        assert!(t.decode("credentials|workspaces/b|", &token).is_err(), "foreign workspace");
        assert!(t.decode("credentials|workspaces/a|provider=GHCR", &token).is_err(), "other filter");
        assert!(tokens(2).decode("credentials|workspaces/a|", &token).is_err(), "other key");
    }

    #[test]
    fn forged_tokens_are_invalid_argument_on_page_token() {
        let t = tokens(1);
        let mut raw = URL_SAFE_NO_PAD.decode(t.encode("q", "abc")).unwrap();
        *raw.last_mut().unwrap() = b'z';
        for forged in [URL_SAFE_NO_PAD.encode(&raw), "not base64!".into(), "AA".into()] {
            match t.decode("q", &forged) {
                Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "page_token"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(t.decode("q", "").unwrap(), None);
    }

    #[test]
    fn page_sizes_default_clamp_and_reject_negatives() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }
}
