//! The vocabulary of the server: typed ids, resource names, credentials,
//! workspaces, access tokens and workload identities, each parsed once at the edge.
//!
//! This module is data and validation only. It knows nothing of SQL, gRPC or
//! key material, so every other module can depend on it.

pub mod audit;
pub mod credential;
pub mod identity;
pub mod ids;
pub mod lease;
pub mod session;
pub mod time;
pub mod token;
pub mod workspace;

pub use credential::{Credential, CredentialUid, Provider, SealedSecret};
pub use identity::{
    IdentityBinding, IdentityBindingId, IdentityBindingName, IdentityProvider, IdentityProviderId, KeySource,
};
pub use ids::{AccessTokenId, CredentialId, CredentialName, ProjectName, WorkspaceId};
pub use lease::{Accept, Grant, IssuedText, Lease, LeaseSecret};
pub use time::Timestamp;
pub use token::{AccessTokenRecord, Role};
pub use workspace::{Workspace, WorkspaceKind};
