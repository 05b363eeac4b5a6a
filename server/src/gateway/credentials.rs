//! The `Authorization` header a runtime sends: HTTP Basic, a username and
//! a password (a gateway password or an access token).
//!
//! Empty credentials (`Basic Og==`, which skopeo sends to mirrors) count as
//! none. The password is held in a zeroizing buffer and never logged.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use zeroize::Zeroizing;

/// Longest `Authorization` value considered (gateway passwords are a few
/// hundred bytes; a hundred repositories make a few kilobytes).
const MAX_HEADER_LEN: usize = 48 * 1024;

/// A username and password from `Authorization: Basic …`.
pub struct BasicCredentials {
    /// The username.
    pub username: String,
    /// The password.
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// The credentials of an `Authorization` value, or `None` when there are
/// none (absent, another scheme, malformed, or both parts empty).
pub fn basic(header: Option<&[u8]>) -> Option<BasicCredentials> {
    let header = std::str::from_utf8(header?).ok()?.trim();
    if header.len() > MAX_HEADER_LEN {
        return None;
    }
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = encoded.trim();
    let decoded = Zeroizing::new(STANDARD.decode(encoded).or_else(|_| STANDARD_NO_PAD.decode(encoded)).ok()?);
    let text = std::str::from_utf8(&decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    if username.is_empty() && password.is_empty() {
        return None;
    }
    Some(BasicCredentials { username: username.to_owned(), password: Zeroizing::new(password.to_owned()) })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn basic_credentials_are_read_and_empty_ones_are_none() {
        let header = format!("Basic {}", STANDARD.encode("pullpass:ppg_x:y"));
        let found = basic(Some(header.as_bytes())).unwrap();
        assert_eq!((found.username.as_str(), found.password.as_str()), ("pullpass", "ppg_x:y"));
        assert!(!format!("{found:?}").contains("ppg_x"));
        let lower = format!("basic {}", STANDARD_NO_PAD.encode("u:p"));
        assert_eq!(basic(Some(lower.as_bytes())).unwrap().password.as_str(), "p");
        for none in
            ["", "Basic", "Basic Og==", "Bearer pp_x", "Basic !!!", &format!("Basic {}", STANDARD.encode("nocolon"))]
        {
            assert!(basic(Some(none.as_bytes())).is_none(), "{none}");
        }
        assert!(basic(None).is_none());
        assert!(basic(Some(&[0xff, 0xfe])).is_none());
    }

    proptest! {
        #[test]
        fn any_header_is_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200), text in "\\PC{0,80}") {
            let _ = basic(Some(&bytes));
            let _ = basic(Some(format!("Basic {}", STANDARD.encode(text.as_bytes())).as_bytes()));
        }
    }
}
