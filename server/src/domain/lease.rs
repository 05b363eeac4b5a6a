//! Leases: short-lived registry auth as issued to a caller.
//!
//! A lease's token or password is a secret: it lives in a [`LeaseSecret`]
//! (zeroized on drop, redacted in `Debug`) and leaves the server only in the
//! one response it was issued for.

use std::fmt;

use pullpass::scope::Scope;
use zeroize::Zeroizing;

use super::{CredentialName, Timestamp};

/// An issued token or password.
#[derive(Clone)]
pub struct LeaseSecret(Zeroizing<String>);

impl LeaseSecret {
    /// Wraps a secret string.
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The secret, for the response it was issued for.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LeaseSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseSecret(<redacted>)")
    }
}

/// The form of the auth.
#[derive(Debug, Clone)]
pub enum Grant {
    /// A bearer token for `Authorization: Bearer`.
    Bearer {
        /// The token.
        token: LeaseSecret,
    },
    /// A username and password.
    Basic {
        /// The user name.
        username: String,
        /// The password (short-lived, or the stored secret for passthrough).
        password: LeaseSecret,
    },
}

/// The form a caller can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accept {
    /// Bearer preferred, basic where the registry offers nothing else.
    Any,
    /// Only a username and password (kubelet, credential helpers).
    BasicOnly,
    /// Only a bearer token.
    BearerOnly,
    /// The pull gateway, presenting the auth to the registry itself: any
    /// form, and for registries that take only HTTP Basic, the stored
    /// username and secret without passthrough. A lease of this form never
    /// leaves the server (the gateway's callers get gateway passwords).
    Gateway,
}

/// Short-lived auth for one repository.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The token or username/password.
    pub grant: Grant,
    /// The host to present it to (`registry-1.docker.io`).
    pub registry: String,
    /// What was asked for.
    pub requested: Scope,
    /// What the registry granted, when it says (a JWT `access` claim);
    /// `None` when the token does not tell (opaque tokens, ECR, Google basic).
    pub granted: Option<Scope>,
    /// When the registry issued it.
    pub issue_time: Timestamp,
    /// When it stops working.
    pub expire_time: Timestamp,
    /// The credential that served it.
    pub credential: CredentialName,
}
