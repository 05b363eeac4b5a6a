//! Plaintext secrets in memory: zeroized on drop, never printed.
//!
//! A [`SecretBytes`] is the only type that holds a plaintext registry secret.
//! Its `Debug` shows the length only, and it is not `Display`, `Clone` or
//! `Serialize`, so it cannot end up in a log line by accident.

use std::fmt;

use zeroize::Zeroizing;

/// A plaintext secret, wiped from memory when dropped.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes` (no copy is left behind by this call).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Takes ownership of a `String`'s buffer without copying it.
    pub fn from_string(text: String) -> Self {
        Self::new(text.into_bytes())
    }

    /// The secret's bytes, for the shortest use possible.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_the_length() {
        let secret = SecretBytes::from_string("canary-pw-91b2".to_owned());
        let shown = format!("{secret:?}");
        assert!(!shown.contains("canary"));
        assert!(shown.contains("14 bytes"));
    }
}
