//! Workspaces: the tenants that own credentials, tokens and audit events.

use super::{Timestamp, WorkspaceId};

/// Who owns a workspace. Numbers are the `pullpass.v1.WorkspaceKind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceKind {
    /// An organization.
    Organization = 1,
    /// One person.
    Personal = 2,
}

impl WorkspaceKind {
    /// From the wire / database number.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::Organization),
            2 => Some(Self::Personal),
            _ => None,
        }
    }

    /// The wire / database number.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Its id (`workspaces/{id}`).
    pub id: WorkspaceId,
    /// Organization or personal.
    pub kind: WorkspaceKind,
    /// Human-readable name.
    pub display_name: String,
    /// Creation time.
    pub create_time: Timestamp,
}

/// Longest display name accepted, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;
