//! Access tokens as stored: a role, a scope, and the hash of the token
//! string (never the string itself).

use super::{AccessTokenId, ProjectName, Timestamp, WorkspaceId};

/// What a token may do. Numbers are the `pullpass.v1.Role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Manages credentials and tokens of its workspace.
    Admin = 1,
    /// Issues registry auth only.
    Launcher = 2,
    /// Reads metadata and audit events.
    Viewer = 3,
    /// Manages workspaces; not bound to one.
    Root = 4,
}

impl Role {
    /// From the wire / database number.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::Admin),
            2 => Some(Self::Launcher),
            3 => Some(Self::Viewer),
            4 => Some(Self::Root),
            _ => None,
        }
    }

    /// The wire / database number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// A role by its wire name (`ADMIN`), case-insensitively.
    pub fn from_wire_name(name: &str) -> Option<Self> {
        [Self::Admin, Self::Launcher, Self::Viewer, Self::Root]
            .into_iter()
            .find(|r| r.wire_name().eq_ignore_ascii_case(name))
    }

    /// The wire name (`ADMIN`).
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Admin => "ADMIN",
            Self::Launcher => "LAUNCHER",
            Self::Viewer => "VIEWER",
            Self::Root => "ROOT",
        }
    }
}

/// An access token row. `workspace` is `None` for root tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenRecord {
    /// Server-chosen id.
    pub id: AccessTokenId,
    /// Owning workspace; `None` for ROOT.
    pub workspace: Option<WorkspaceId>,
    /// What it may do.
    pub role: Role,
    /// Projects a LAUNCHER is limited to (empty = all).
    pub projects: Vec<ProjectName>,
    /// SHA-256 of the token string.
    pub token_hash: [u8; 32],
    /// Free text.
    pub description: String,
    /// Creation time.
    pub create_time: Timestamp,
    /// Expiry, if any.
    pub expire_time: Option<Timestamp>,
    /// Revocation time, if revoked.
    pub revoke_time: Option<Timestamp>,
    /// Last use, minute resolution.
    pub last_used_time: Option<Timestamp>,
}

impl AccessTokenRecord {
    /// The resource name: `workspaces/{w}/accessTokens/{id}`, or
    /// `rootTokens/{id}` for root tokens.
    pub fn resource_name(&self) -> String {
        match &self.workspace {
            Some(ws) => format!("workspaces/{ws}/accessTokens/{}", self.id),
            None => format!("rootTokens/{}", self.id),
        }
    }
}
