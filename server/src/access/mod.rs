//! Who is calling: access-token strings, their hashes, and the principal a
//! valid bearer token stands for.
//!
//! * [`token`]: minting `pp_…` token strings and hashing them.
//! * [`authn`]: turning an `authorization` header into a [`Principal`].
//! * [`identity`]: verifying workload-identity JWTs (Kubernetes, GitHub
//!   Actions, GitLab CI) and matching them to a workspace's bindings.
//! * [`policy`]: what each role may do.
//! * [`rate_limit`]: calls per second per token (or per client address).
//! * [`sessions`]: console sign-ins; [`unknown`]: the secrets the database
//!   did not know, refused from memory.
//! * [`gateway_password`]: the stateless, short-lived passwords of the pull
//!   gateway.
//! * [`root_tokens`]: minting, listing and revoking root tokens.
//!
//! Token strings exist only in the response that created them; the store
//! and every cache hold SHA-256 hashes.

pub mod authn;
pub mod gateway_password;
pub mod identity;
pub mod policy;
pub mod rate_limit;
pub mod root_tokens;
pub mod sessions;
pub mod token;
pub mod tokens;
pub mod unknown;

use crate::domain::{AccessTokenId, AccessTokenRecord, ProjectName, Role, Timestamp, WorkspaceId};
pub use authn::Authenticator;
pub use token::TokenString;

/// The caller of an RPC, as established by its bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id.
    pub token_id: AccessTokenId,
    /// The token's resource name (what logs and audit events show).
    pub resource_name: std::sync::Arc<str>,
    /// What it may do.
    pub role: Role,
    /// Its workspace; `None` for ROOT.
    pub workspace: Option<WorkspaceId>,
    /// Projects a LAUNCHER is limited to (empty = all).
    pub projects: Vec<ProjectName>,
    /// When the token expires, if it does.
    pub expire_time: Option<Timestamp>,
    /// For a caller that presented a workload-identity JWT instead of an
    /// access token: what each workspace's identity bindings grant it.
    /// [`policy`] decides from these for such a caller (the fields above
    /// then describe it for logs: its one workspace, if it has just one).
    pub identity: Option<std::sync::Arc<IdentityCaller>>,
}

/// A verified workload identity as a caller: its provider, subject, and what
/// the bindings of each workspace grant it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityCaller {
    /// The provider that issued its token.
    pub provider: crate::domain::IdentityProviderId,
    /// Grants by workspace (only workspaces with a matching binding).
    pub grants: std::collections::BTreeMap<WorkspaceId, WorkspaceGrant>,
}

/// What one workspace's matching bindings grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceGrant {
    /// LAUNCHER or VIEWER.
    pub role: Role,
    /// Projects (empty: all).
    pub projects: Vec<ProjectName>,
    /// The bindings that matched: their resource names and update times
    /// (a gateway password stands on exactly these).
    pub bindings: Vec<(String, Timestamp)>,
}

impl Principal {
    /// The principal a token record stands for.
    pub fn of(record: &AccessTokenRecord) -> Self {
        Self {
            token_id: record.id.clone(),
            resource_name: record.resource_name().into(),
            role: record.role,
            workspace: record.workspace.clone(),
            projects: record.projects.clone(),
            expire_time: record.expire_time,
            identity: None,
        }
    }
}

pub use root_tokens::{create_root_token, has_root_token};
