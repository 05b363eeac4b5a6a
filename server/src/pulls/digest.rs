//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`): the names the
//! gateway verifies what it serves against. Other algorithms cannot be
//! verified, so they are refused rather than passed on unchecked.

use std::fmt;

use ring::digest::{Context, SHA256, SHA512};

/// A digest the gateway can verify.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (algorithm, hex) = text.split_once(':').ok_or_else(|| format!("`{}` is not algorithm:hex", short(text)))?;
        let (algorithm, length) = match algorithm {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            other => return Err(format!("digest algorithm `{}` is not supported (sha256, sha512)", short(other))),
        };
        if hex.len() != length || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("`{}` is not {length} lowercase hex digits", short(hex)));
        }
        Ok(Self { algorithm, hex: hex.to_owned() })
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Self { algorithm: Algorithm::Sha256, hex: hex(ring::digest::digest(&SHA256, bytes).as_ref()) }
    }

    /// The digest of `bytes` with this digest's algorithm.
    pub fn same_algorithm_of(&self, bytes: &[u8]) -> Self {
        let mut hasher = self.hasher();
        hasher.update(bytes);
        self.finish(hasher)
    }

    /// A hasher for this digest's algorithm.
    pub fn hasher(&self) -> Context {
        Context::new(match self.algorithm {
            Algorithm::Sha256 => &SHA256,
            Algorithm::Sha512 => &SHA512,
        })
    }

    /// The digest a finished hasher (from [`Digest::hasher`]) computed.
    pub fn finish(&self, hasher: Context) -> Self {
        Self { algorithm: self.algorithm, hex: hex(hasher.finish().as_ref()) }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        };
        write!(f, "{algorithm}:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short(text: &str) -> String {
    crate::domain::ids::shorten(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_print_and_verify() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::parse(empty).unwrap().to_string(), empty);
        assert_eq!(Digest::sha256_of(b""), Digest::parse(empty).unwrap());
        let sha512 = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap();
        assert_eq!(sha512.same_algorithm_of(b"").to_string().len(), "sha512:".len() + 128);
        for bad in [
            "sha256",
            "sha256:abc",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("md5:{}", "0".repeat(32)),
            &format!("sha256:{}g", "0".repeat(63)),
            &format!("sha512:{}", "0".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
