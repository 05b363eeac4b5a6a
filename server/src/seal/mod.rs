//! The crypto boundary: master keys (KEKs) and envelope encryption of
//! registry secrets. The only module that sees both key material and
//! plaintext secrets.
//!
//! * [`keyring`]: loading, generating and appending master keys (key file or
//!   environment), with permission checks.
//! * [`envelope`]: sealing a secret under a fresh data key, wrapping that key
//!   under the active master key, opening and rewrapping, key-check values.
//!
//! It knows nothing of SQL or gRPC: callers hand it a [`SecretContext`] and get
//! back a [`crate::domain::SealedSecret`] of opaque bytes.

pub mod envelope;
pub mod keyring;

pub use envelope::{KeyCheck, SealError, Sealer, SecretContext};
pub use keyring::{KeyError, Keyring};
