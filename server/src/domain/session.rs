//! Console sign-ins as the store keeps them: a session behind a browser's
//! cookie, or a one-time login link not yet used. Only the SHA-256 of the
//! secret (the cookie's value, the link's code) is kept, never the secret.

use super::{AccessTokenId, Timestamp};

/// What a stored sign-in is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A signed-in browser.
    Session,
    /// A one-time login link (`pullpass console-link`), until it is used.
    LoginLink,
}

impl SessionKind {
    /// The stored code.
    pub fn code(self) -> i32 {
        match self {
            Self::Session => 1,
            Self::LoginLink => 2,
        }
    }

    /// The kind of a stored code.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::Session),
            2 => Some(Self::LoginLink),
            _ => None,
        }
    }
}

/// A console session or login link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// SHA-256 of the secret.
    pub id_hash: [u8; 32],
    /// Session or login link.
    pub kind: SessionKind,
    /// The access token it acts as.
    pub token_id: AccessTokenId,
    /// When it was made.
    pub create_time: Timestamp,
    /// When it ends, however active it is.
    pub expire_time: Timestamp,
    /// Its last recorded activity (written at most once a minute).
    pub last_seen: Timestamp,
}
