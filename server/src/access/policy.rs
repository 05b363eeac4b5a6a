//! Authorization: what each role may do, decided in one table-like function.
//!
//! A principal of workspace A asking about workspace B gets NOT_FOUND, never
//! PERMISSION_DENIED, so tokens cannot probe which workspaces exist.

use super::Principal;
use crate::domain::{ProjectName, Role, WorkspaceId};
use crate::error::Error;

/// Something a call needs to be allowed.
#[derive(Debug, Clone, Copy)]
pub enum Permission<'a> {
    /// Create, list or delete workspaces (ROOT).
    ManageWorkspaces,
    /// Revoke root tokens (ROOT).
    ManageRootTokens,
    /// Read one workspace.
    ReadWorkspace(&'a WorkspaceId),
    /// Create, update, delete, test or import credentials (ADMIN).
    ManageCredentials(&'a WorkspaceId),
    /// Read credential metadata (ADMIN, VIEWER).
    ReadCredentials(&'a WorkspaceId),
    /// Issue registry auth for a project (ADMIN, LAUNCHER within its projects).
    IssueRegistryAuth(&'a WorkspaceId, Option<&'a ProjectName>),
    /// Mint or revoke tokens of a role (ADMIN for LAUNCHER/VIEWER, ROOT for
    /// ADMIN).
    ManageTokens(&'a WorkspaceId, Role),
    /// Read token metadata (ADMIN).
    ReadTokens(&'a WorkspaceId),
    /// Read audit events of a workspace (ADMIN, VIEWER), or of all (ROOT).
    ReadAudit(Option<&'a WorkspaceId>),
    /// Sign in to the web console (ROOT, ADMIN, VIEWER: a LAUNCHER may only
    /// issue registry auth, which the console does not offer).
    UseConsole,
    /// Create, change or delete identity providers (ROOT).
    ManageIdentityProviders,
    /// Read identity providers (ROOT, and ADMIN: bindings name them).
    ReadIdentityProviders,
    /// Create, read, change, delete or test identity bindings of a
    /// workspace (ADMIN).
    ManageIdentityBindings(&'a WorkspaceId),
}

impl Permission<'_> {
    fn describe(&self) -> String {
        match self {
            Self::ManageWorkspaces => "managing workspaces needs a ROOT token".into(),
            Self::ManageRootTokens => "revoking root tokens needs a ROOT token".into(),
            Self::ReadWorkspace(_) => "reading this workspace needs a token of it".into(),
            Self::ManageCredentials(_) => "managing credentials needs an ADMIN token".into(),
            Self::ReadCredentials(_) => "reading credentials needs an ADMIN or VIEWER token".into(),
            Self::IssueRegistryAuth(_, Some(project)) => {
                format!("issuing registry auth for project `{project}` needs a LAUNCHER token allowed that project, or an ADMIN token")
            }
            Self::IssueRegistryAuth(_, None) => {
                "issuing registry auth without a project needs a LAUNCHER token not limited to projects, or an ADMIN token".into()
            }
            Self::ManageTokens(_, Role::Admin) => "minting or revoking ADMIN tokens needs a ROOT token".into(),
            Self::ManageTokens(..) => "managing access tokens needs an ADMIN token".into(),
            Self::ReadTokens(_) => "reading access tokens needs an ADMIN token".into(),
            Self::ReadAudit(Some(_)) => "reading audit events needs an ADMIN or VIEWER token".into(),
            Self::ReadAudit(None) => "reading the audit events of every workspace needs a ROOT token".into(),
            Self::UseConsole => {
                "the web console is for ADMIN and VIEWER tokens (and ROOT); a LAUNCHER token only issues registry auth"
                    .into()
            }
            Self::ManageIdentityProviders => "managing identity providers needs a ROOT token".into(),
            Self::ReadIdentityProviders => "reading identity providers needs an ADMIN or ROOT token".into(),
            Self::ManageIdentityBindings(_) => "managing identity bindings needs an ADMIN token".into(),
        }
    }

    fn workspace(&self) -> Option<&WorkspaceId> {
        match *self {
            Self::ManageWorkspaces
            | Self::ManageRootTokens
            | Self::ReadAudit(None)
            | Self::UseConsole
            | Self::ManageIdentityProviders
            | Self::ReadIdentityProviders => None,
            Self::ReadWorkspace(w)
            | Self::ManageCredentials(w)
            | Self::ReadCredentials(w)
            | Self::IssueRegistryAuth(w, _)
            | Self::ManageTokens(w, _)
            | Self::ReadTokens(w)
            | Self::ReadAudit(Some(w))
            | Self::ManageIdentityBindings(w) => Some(w),
        }
    }
}

/// Allows or refuses `permission` for `principal`.
pub fn authorize(principal: &Principal, permission: Permission<'_>) -> Result<(), Error> {
    if principal.role == Role::Root && principal.identity.is_none() {
        return Ok(());
    }
    let target = permission.workspace();
    // The role and projects that decide: the token's own, or, for a workload
    // identity, what the named workspace's bindings grant it.
    let (role, projects) = match (&principal.identity, target) {
        (Some(identity), Some(target)) => match identity.grants.get(target) {
            Some(grant) => (grant.role, grant.projects.as_slice()),
            None => {
                return Err(Error::PermissionDenied {
                    reason: pullpass::reason::IDENTITY_NOT_BOUND,
                    message: format!(
                        "no identity binding of {} matches this token (TestIdentityToken explains why)",
                        target.name()
                    ),
                });
            }
        },
        (Some(_), None) => (Role::Viewer, &[][..]),
        (None, Some(target)) if principal.workspace.as_ref() != Some(target) => {
            // Do not reveal whether another workspace exists.
            return Err(Error::not_found(target.name()));
        }
        (None, _) => (principal.role, principal.projects.as_slice()),
    };
    let allowed = match (role, permission) {
        (_, Permission::ReadWorkspace(_)) => true,
        (Role::Admin, Permission::ManageCredentials(_) | Permission::ReadCredentials(_)) => true,
        (Role::Viewer, Permission::ReadCredentials(_)) => true,
        (Role::Admin, Permission::IssueRegistryAuth(..)) => true,
        (Role::Launcher, Permission::IssueRegistryAuth(_, project)) => {
            projects.is_empty() || project.is_some_and(|p| projects.contains(p))
        }
        // A workload identity signs in to no console and reads no
        // provider: it only issues registry auth, or reads as a VIEWER.
        (_, Permission::UseConsole | Permission::ReadIdentityProviders) if principal.identity.is_some() => false,
        (Role::Admin, Permission::ManageTokens(_, role)) => role != Role::Admin && role != Role::Root,
        (Role::Admin, Permission::ReadTokens(_)) => true,
        (Role::Admin | Role::Viewer, Permission::ReadAudit(Some(_))) => true,
        (Role::Admin | Role::Viewer, Permission::UseConsole) => true,
        (Role::Admin, Permission::ReadIdentityProviders | Permission::ManageIdentityBindings(_)) => true,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::PermissionDenied {
            reason: pullpass::reason::ROLE_DENIED,
            // A workload identity's name carries its `sub`, a claim value.
            message: match principal.identity {
                Some(_) => format!("this workload identity has role {}: {}", role.wire_name(), permission.describe()),
                None => format!("{} has role {}: {}", principal.resource_name, role.wire_name(), permission.describe()),
            },
        })
    }
}
