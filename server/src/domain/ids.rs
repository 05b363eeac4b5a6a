//! Typed ids and resource names. Each `parse` checks the grammar once; code
//! that holds a `WorkspaceId` never re-validates it.
//!
//! Parse errors are a plain description; the API edge attaches the request
//! field they came from.

use std::fmt;

/// Id of a workspace: 1-63 lowercase letters, digits and `-`, starting with a
/// letter and not ending with `-` (AIP-122).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceId(String);

/// Id of a credential within its workspace: 1-64 letters, digits, `-`, `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId(String);

/// A project of a workspace: 1-64 letters, digits, `-`, `_`, `.`, starting
/// with a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(String);

/// Id of an access token, chosen by the server: 1-64 lowercase letters and
/// digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessTokenId(String);

/// `workspaces/{workspace}/credentials/{credential}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CredentialName {
    /// The workspace that owns the credential.
    pub workspace: WorkspaceId,
    /// The credential's id in it.
    pub credential: CredentialId,
}

/// `workspaces/{workspace}/accessTokens/{access_token}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AccessTokenName {
    /// The workspace that owns the token.
    pub workspace: WorkspaceId,
    /// The token's id in it.
    pub token: AccessTokenId,
}

macro_rules! string_id {
    ($ty:ident) => {
        impl $ty {
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.0)
            }
        }
    };
}
string_id!(WorkspaceId);
string_id!(CredentialId);
string_id!(ProjectName);
string_id!(AccessTokenId);

const WORKSPACES: &str = "workspaces/";

impl WorkspaceId {
    /// Parses a bare workspace id such as `acme`.
    pub fn parse(id: &str) -> Result<Self, String> {
        let bytes = id.as_bytes();
        let ok = (1..=63).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && !id.ends_with('-');
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(format!(
                "`{}` is not a workspace id: use 1-63 lowercase letters, digits and `-`, starting with a letter and not ending with `-`",
                shorten(id)
            ))
        }
    }

    /// Parses a resource name `workspaces/{workspace}`.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name.strip_prefix(WORKSPACES) {
            Some(id) if !id.contains('/') => Self::parse(id),
            _ => Err(format!("`{}` is not a workspace name: expected `workspaces/{{workspace}}`", shorten(name))),
        }
    }

    /// The resource name, `workspaces/{id}`.
    pub fn name(&self) -> String {
        format!("{WORKSPACES}{}", self.0)
    }
}

impl CredentialId {
    /// Parses a credential id such as `ghcr-acme`.
    pub fn parse(id: &str) -> Result<Self, String> {
        let ok =
            (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(format!("`{}` is not a credential id: use 1-64 letters, digits, `-` and `_`", shorten(id)))
        }
    }
}

impl ProjectName {
    /// Parses a project name such as `rnaseq`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "`{}` is not a project name: use 1-64 letters, digits, `-`, `_` and `.`, starting with a letter or digit",
                shorten(name)
            ))
        }
    }
}

impl AccessTokenId {
    /// Parses a token id as found in a resource name.
    pub fn parse(id: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok { Ok(Self(id.to_owned())) } else { Err(format!("`{}` is not an access token id", shorten(id))) }
    }

    /// Parses a root token's name, `rootTokens/{id}`.
    pub fn from_root_name(name: &str) -> Result<Self, String> {
        match name.strip_prefix(ROOT_TOKENS) {
            Some(id) => Self::parse(id),
            None => Err(format!("`{}` is not a root token name: expected `rootTokens/{{id}}`", shorten(name))),
        }
    }

    /// The token id in any token's resource name:
    /// `workspaces/{w}/accessTokens/{id}` or `rootTokens/{id}`.
    pub fn from_resource_name(name: &str) -> Option<Self> {
        if name.starts_with(ROOT_TOKENS) {
            return Self::from_root_name(name).ok();
        }
        AccessTokenName::parse(name).ok().map(|n| n.token)
    }
}

/// The collection of root tokens: `rootTokens/{id}`.
pub const ROOT_TOKENS: &str = "rootTokens/";

impl CredentialName {
    /// Parses `workspaces/{workspace}/credentials/{credential}`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["workspaces", workspace, "credentials", credential] => {
                Ok(Self { workspace: WorkspaceId::parse(workspace)?, credential: CredentialId::parse(credential)? })
            }
            _ => Err(format!(
                "`{}` is not a credential name: expected `workspaces/{{workspace}}/credentials/{{credential}}`",
                shorten(name)
            )),
        }
    }
}

impl fmt::Display for CredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{WORKSPACES}{}/credentials/{}", self.workspace, self.credential)
    }
}

impl fmt::Debug for CredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialName({self})")
    }
}

impl AccessTokenName {
    /// Parses `workspaces/{workspace}/accessTokens/{access_token}`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["workspaces", workspace, "accessTokens", token] => {
                Ok(Self { workspace: WorkspaceId::parse(workspace)?, token: AccessTokenId::parse(token)? })
            }
            _ => Err(format!(
                "`{}` is not an access token name: expected `workspaces/{{workspace}}/accessTokens/{{access_token}}`",
                shorten(name)
            )),
        }
    }
}

impl fmt::Display for AccessTokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{WORKSPACES}{}/accessTokens/{}", self.workspace, self.token)
    }
}

impl fmt::Debug for AccessTokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessTokenName({self})")
    }
}

/// Quotes at most 80 characters of user input in an error message.
pub fn shorten(input: &str) -> String {
    const MAX: usize = 80;
    let printable: String = input.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if printable.chars().count() <= MAX {
        printable
    } else {
        let head: String = printable.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_come_out_of_workspace_and_root_token_names() {
        let id = |name| AccessTokenId::from_resource_name(name).map(|id| id.to_string());
        assert_eq!(id("workspaces/acme/accessTokens/abc1").as_deref(), Some("abc1"));
        assert_eq!(id("rootTokens/r00t").as_deref(), Some("r00t"));
        for bad in ["rootTokens/", "rootTokens/a/b", "rootTokens/UP", "workspaces/acme/credentials/x", "abc1", ""] {
            assert_eq!(id(bad), None, "{bad}");
        }
        assert!(
            AccessTokenId::from_root_name("workspaces/acme/accessTokens/abc1").unwrap_err().contains("rootTokens/{id}")
        );
    }

    #[test]
    fn workspace_ids_follow_aip_122() {
        for ok in ["a", "acme", "acme-2", "a1"] {
            assert!(WorkspaceId::parse(ok).is_ok(), "{ok}");
        }
        let too_long = "a".repeat(64);
        for bad in ["", "1acme", "Acme", "acme-", "ac_me", "ac/me", too_long.as_str()] {
            assert!(WorkspaceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credential_ids_allow_letters_digits_dash_underscore_up_to_64() {
        assert!(CredentialId::parse("GHCR_acme-1").is_ok());
        assert!(CredentialId::parse(&"x".repeat(64)).is_ok());
        for bad in ["", "a b", "a.b", "a/b", "é"] {
            assert!(CredentialId::parse(bad).is_err(), "{bad}");
        }
        assert!(CredentialId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn resource_names_parse_only_their_own_pattern() {
        let name = CredentialName::parse("workspaces/acme/credentials/ghcr").unwrap();
        assert_eq!(name.to_string(), "workspaces/acme/credentials/ghcr");
        for bad in [
            "workspaces/acme",
            "workspaces/acme/credentials/",
            "projects/acme/credentials/x",
            "workspaces/acme/credentials/x/y",
        ] {
            assert!(CredentialName::parse(bad).is_err(), "{bad}");
        }
        assert!(WorkspaceId::from_name("workspaces/acme/x").is_err());
        assert_eq!(WorkspaceId::from_name("workspaces/acme").unwrap().name(), "workspaces/acme");
    }

    #[test]
    fn error_messages_quote_control_characters_safely_and_briefly() {
        let message = WorkspaceId::parse(&format!("a\n{}", "b".repeat(200))).unwrap_err();
        assert!(!message.contains('\n'));
        assert!(message.len() < 300);
    }
}
