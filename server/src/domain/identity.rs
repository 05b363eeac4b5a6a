//! Workload identity: the issuers whose signed JWTs pullpass accepts in
//! place of an access token (identity providers, managed by ROOT), and what
//! their tokens earn in a workspace (identity bindings, managed by the
//! workspace's ADMIN). Parsed and checked once at the edge
//! (`identities.rs`); inner code holds them as they are.

use std::fmt;
use std::time::Duration;

use super::ids::shorten;
use super::{ProjectName, Role, Timestamp, WorkspaceId};

/// Id of an identity provider: 1-64 letters, digits, `-`, `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityProviderId(String);

/// Id of an identity binding within its workspace: 1-64 letters, digits,
/// `-`, `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityBindingId(String);

/// The collection of identity providers.
pub const IDENTITY_PROVIDERS: &str = "identityProviders/";

fn plain_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl IdentityProviderId {
    /// Parses a bare provider id such as `github`.
    pub fn parse(id: &str) -> Result<Self, String> {
        if plain_id(id) {
            Ok(Self(id.to_owned()))
        } else {
            Err(format!("`{}` is not an identity provider id: use 1-64 letters, digits, `-` and `_`", shorten(id)))
        }
    }

    /// Parses `identityProviders/{identity_provider}`.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name.strip_prefix(IDENTITY_PROVIDERS) {
            Some(id) => Self::parse(id),
            None => Err(format!(
                "`{}` is not an identity provider name: expected `identityProviders/{{identity_provider}}`",
                shorten(name)
            )),
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `identityProviders/{id}`.
    pub fn name(&self) -> String {
        format!("{IDENTITY_PROVIDERS}{}", self.0)
    }
}

impl IdentityBindingId {
    /// Parses a bare binding id such as `ci-main`.
    pub fn parse(id: &str) -> Result<Self, String> {
        if plain_id(id) {
            Ok(Self(id.to_owned()))
        } else {
            Err(format!("`{}` is not an identity binding id: use 1-64 letters, digits, `-` and `_`", shorten(id)))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdentityProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdentityProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityProviderId({})", self.0)
    }
}

impl fmt::Display for IdentityBindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdentityBindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityBindingId({})", self.0)
    }
}

/// `workspaces/{workspace}/identityBindings/{identity_binding}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdentityBindingName {
    /// The workspace the binding grants a role in.
    pub workspace: WorkspaceId,
    /// The binding's id in it.
    pub binding: IdentityBindingId,
}

impl IdentityBindingName {
    /// Parses `workspaces/{workspace}/identityBindings/{identity_binding}`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["workspaces", workspace, "identityBindings", binding] => {
                Ok(Self { workspace: WorkspaceId::parse(workspace)?, binding: IdentityBindingId::parse(binding)? })
            }
            _ => Err(format!(
                "`{}` is not an identity binding name: expected `workspaces/{{workspace}}/identityBindings/{{identity_binding}}`",
                shorten(name)
            )),
        }
    }
}

impl fmt::Display for IdentityBindingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workspaces/{}/identityBindings/{}", self.workspace, self.binding)
    }
}

impl fmt::Debug for IdentityBindingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityBindingName({self})")
    }
}

/// Where an identity provider's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// OIDC discovery at `{issuer}/.well-known/openid-configuration`.
    Discovery,
    /// A JSON Web Key Set URL.
    JwksUri(String),
    /// A JSON Web Key Set, inline.
    Jwks(String),
}

/// A trusted issuer of workload-identity JWTs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProvider {
    /// Its id.
    pub id: IdentityProviderId,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Where its keys are.
    pub key_source: KeySource,
    /// CA certificates (PEM) for the key source, besides the Mozilla roots.
    pub ca_certificates: String,
    /// Audiences pullpass answers to (at least one).
    pub audiences: Vec<String>,
    /// Signature algorithms accepted (JOSE names).
    pub allowed_algorithms: Vec<String>,
    /// Longest `exp - iat` accepted.
    pub max_token_lifetime: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub clock_skew: Duration,
    /// Free text.
    pub description: String,
    /// When it was created.
    pub create_time: Timestamp,
    /// When it last changed.
    pub update_time: Timestamp,
}

/// What the tokens of one provider earn in one workspace when every bound
/// claim matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBinding {
    /// Its name (workspace and id).
    pub name: IdentityBindingName,
    /// The provider whose tokens it matches.
    pub provider: IdentityProviderId,
    /// Claim (top-level name or JSON pointer) to pattern, ordered by claim.
    pub bound_claims: Vec<(String, String)>,
    /// LAUNCHER or VIEWER.
    pub role: Role,
    /// Projects a LAUNCHER may issue auth for (empty: all).
    pub allowed_projects: Vec<ProjectName>,
    /// Free text.
    pub description: String,
    /// When it was created.
    pub create_time: Timestamp,
    /// When it last changed.
    pub update_time: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_what_they_print() {
        let name = IdentityBindingName::parse("workspaces/acme/identityBindings/ci-main").unwrap();
        assert_eq!(name.to_string(), "workspaces/acme/identityBindings/ci-main");
        let provider = IdentityProviderId::from_name("identityProviders/github_actions").unwrap();
        assert_eq!(provider.name(), "identityProviders/github_actions");
        for bad in ["identityProviders/", "identityProviders/a/b", "providers/x", "identityProviders/sp ace"] {
            assert!(IdentityProviderId::from_name(bad).is_err(), "{bad}");
        }
        for bad in ["workspaces/acme/identityBindings/", "workspaces/Acme/identityBindings/x", "workspaces/acme/x/y"] {
            assert!(IdentityBindingName::parse(bad).is_err(), "{bad}");
        }
    }
}
