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
        }
    }
}

pub use root_tokens::{create_root_token, has_root_token};
