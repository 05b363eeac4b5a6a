//! Leases: short-lived registry auth as issued to a caller.
//!
//! A lease's token or password is a secret: it lives in a [`LeaseSecret`]
//! (zeroized on drop, redacted in `Debug`) and leaves the server only in the
//! one response it was issued for.

use std::fmt;

use pullpass::reference::ImageRef;
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

/// A lease's facts as the response and the audit event print them, worked
/// out once per lease and image.
#[derive(Debug)]
pub struct IssuedText {
    /// The workspace of the credential.
    pub workspace: String,
    /// The normalized image (`docker.io/library/ubuntu:latest`).
    pub image: String,
    /// The credential's resource name.
    pub credential: String,
    /// The scope asked for.
    pub requested: String,
    /// The scope the registry granted ("" when it does not say).
    pub granted: String,
    /// The registry granted less than asked.
    pub narrower: bool,
}

impl IssuedText {
    /// The facts of `lease` issued for `image`.
    pub fn of(image: &ImageRef, lease: &Lease) -> Self {
        let granted = lease.granted.as_ref().map(ToString::to_string).unwrap_or_default();
        Self {
            workspace: lease.credential.workspace.to_string(),
            image: image.to_string(),
            credential: lease.credential.to_string(),
            requested: lease.requested.to_string(),
            narrower: lease.granted.as_ref().is_some_and(|g| *g != lease.requested),
            granted,
        }
    }
}
