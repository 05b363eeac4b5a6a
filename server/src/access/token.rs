//! Access-token strings: `pp_` followed by 256 random bits in base62 (43
//! characters, so a double-click selects the whole token), and their SHA-256
//! hashes, which are all pullpass keeps.

use std::fmt;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::domain::AccessTokenId;
use crate::error::Error;

/// The prefix of every pullpass token (lets secret scanners find leaks).
pub const TOKEN_PREFIX: &str = "pp_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Base62 digits of 32 bytes.
const TOKEN_DIGITS: usize = 43;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A bearer token string. Not `Display`; `Debug` is redacted; zeroized on drop.
pub struct TokenString(Zeroizing<String>);

impl TokenString {
    /// A new random token.
    pub fn generate() -> Result<Self, Error> {
        random_secret(TOKEN_PREFIX).map(Self)
    }

    /// The token, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the token string.
    pub fn hash(&self) -> [u8; 32] {
        hash_token(&self.0)
    }
}

impl fmt::Debug for TokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenString(<redacted>)")
    }
}

/// SHA-256 of a presented token string.
pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Is `token` shaped like a pullpass token (prefix, length, alphabet)?
pub fn is_well_formed(token: &str) -> bool {
    is_shaped(token, TOKEN_PREFIX)
}

/// `prefix` followed by 256 fresh random bits in base62: the shape of every
/// pullpass secret handed to a person (access tokens, console sessions,
/// login codes).
pub(crate) fn random_secret(prefix: &str) -> Result<Zeroizing<String>, Error> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    SystemRandom::new().fill(bytes.as_mut()).map_err(|_| Error::internal("the system random generator failed"))?;
    Ok(Zeroizing::new(format!("{prefix}{}", base62(bytes.as_ref()))))
}

/// Is `secret` `prefix` followed by 43 base62 digits?
pub(crate) fn is_shaped(secret: &str, prefix: &str) -> bool {
    secret
        .strip_prefix(prefix)
        .is_some_and(|digits| digits.len() == TOKEN_DIGITS && digits.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A new random token id: 16 lowercase base32-ish characters.
pub fn new_token_id() -> Result<AccessTokenId, Error> {
    let mut bytes = [0u8; 10];
    SystemRandom::new().fill(&mut bytes).map_err(|_| Error::internal("the system random generator failed"))?;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut id = String::with_capacity(16);
    let mut buffer: u64 = 0;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            id.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    AccessTokenId::parse(&id).map_err(Error::internal)
}

/// Big-endian base62 of `bytes`, left-padded with `0` to [`TOKEN_DIGITS`].
fn base62(bytes: &[u8]) -> String {
    let mut number: Zeroizing<Vec<u8>> = Zeroizing::new(bytes.to_vec());
    let mut digits = Zeroizing::new(Vec::with_capacity(TOKEN_DIGITS));
    while number.iter().any(|&b| b != 0) {
        let mut remainder: u32 = 0;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        digits.push(BASE62[remainder as usize]);
    }
    while digits.len() < TOKEN_DIGITS {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| d as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_base62_of_256_bits_and_unique() {
        let a = TokenString::generate().unwrap();
        let b = TokenString::generate().unwrap();
        assert!(is_well_formed(a.expose()), "{}", a.expose());
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(format!("{a:?}"), "TokenString(<redacted>)");
    }

    #[test]
    fn base62_of_extremes_has_fixed_width() {
        assert_eq!(base62(&[0u8; 32]), "0".repeat(43));
        let max = base62(&[0xff; 32]);
        assert_eq!(max.len(), 43);
    }

    #[test]
    fn malformed_tokens_are_recognised() {
        for bad in [
            "",
            "pp_",
            "pp_short",
            "xx_0000000000000000000000000000000000000000000",
            &format!("pp_{}!", "a".repeat(42)),
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
        assert!(new_token_id().unwrap().as_str().len() == 16);
    }
}
