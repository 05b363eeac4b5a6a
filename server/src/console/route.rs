//! The console's URL space, parsed once at the edge into typed routes: ids
//! are parsed with the domain's own parsers, so a handler never sees a path
//! that names something impossible (anything else is 404).
//!
//! ```text
//! /console/                                     home: where a session lands
//! /console/login, /console/logout               sign in (token or login link), sign out
//! /console/assets/{file}                        the stylesheet and the script
//! /console/workspaces                           ROOT: list, create
//! /console/workspaces/{w}/credentials           list; POST adds
//! /console/workspaces/{w}/add                   the Add form
//! /console/workspaces/{w}/credentials/{c}       edit; POST saves
//! /console/workspaces/{w}/credentials/{c}/test  POST: TestCredential
//! /console/workspaces/{w}/credentials/{c}/delete  confirm; POST deletes
//! /console/workspaces/{w}/import                docker config.json upload
//! /console/workspaces/{w}/tokens                list; POST creates
//! /console/workspaces/{w}/tokens/{t}/revoke     POST revokes
//! /console/workspaces/{w}/audit                 the audit trail, filtered
//! /console/workspaces/{w}/identityBindings      ADMIN: list; POST creates
//! /console/workspaces/{w}/identityBindings/{b}  view and edit; POST saves
//! /console/workspaces/{w}/identityBindings/{b}/delete  confirm; POST deletes
//! /console/workspaces/{w}/test-identity-token   the form; POST explains a JWT
//! /console/identityProviders                    ROOT: list; POST creates
//! /console/identityProviders/{p}                view and edit; POST saves
//! /console/identityProviders/{p}/delete         confirm; POST deletes
//! ```

use http::Method;

use crate::domain::{
    AccessTokenId, CredentialId, CredentialName, IdentityBindingId, IdentityBindingName, IdentityProviderId,
    WorkspaceId,
};

/// Where every console URL starts.
pub const PREFIX: &str = "/console";

/// A console page or action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/console/`.
    Home,
    /// The sign-in page.
    Login,
    /// Sign out.
    Logout,
    /// A static file.
    Asset(&'static str),
    /// The workspace list.
    Workspaces,
    /// A workspace's credentials.
    Credentials(WorkspaceId),
    /// The Add form.
    Add(WorkspaceId),
    /// One credential's edit form.
    Credential(CredentialName),
    /// Test a credential.
    Test(CredentialName),
    /// Delete a credential.
    Delete(CredentialName),
    /// Import a docker config.json.
    Import(WorkspaceId),
    /// A workspace's access tokens.
    Tokens(WorkspaceId),
    /// Revoke a token.
    Revoke(WorkspaceId, AccessTokenId),
    /// A workspace's audit trail.
    Audit(WorkspaceId),
    /// A workspace's identity bindings.
    IdentityBindings(WorkspaceId),
    /// One identity binding's page.
    IdentityBinding(IdentityBindingName),
    /// Delete an identity binding.
    DeleteIdentityBinding(IdentityBindingName),
    /// Test a workload-identity token against a workspace's bindings.
    TestIdentityToken(WorkspaceId),
    /// The identity providers.
    IdentityProviders,
    /// One identity provider's page.
    IdentityProvider(IdentityProviderId),
    /// Delete an identity provider.
    DeleteIdentityProvider(IdentityProviderId),
}

/// The files under `/console/assets/`.
pub const ASSETS: [&str; 2] = ["console.css", "console.js"];

impl Route {
    /// The route of a path, if it is one (the method is checked by
    /// [`Route::allows`]).
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix(PREFIX)?;
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if rest.contains("//") {
            return None;
        }
        Some(match segments.as_slice() {
            [] => Self::Home,
            ["login"] => Self::Login,
            ["logout"] => Self::Logout,
            ["assets", file] => Self::Asset(ASSETS.iter().find(|a| *a == file)?),
            ["workspaces"] => Self::Workspaces,
            ["workspaces", w, "credentials"] => Self::Credentials(workspace(w)?),
            ["workspaces", w, "add"] => Self::Add(workspace(w)?),
            ["workspaces", w, "credentials", c] => Self::Credential(credential(w, c)?),
            ["workspaces", w, "credentials", c, "test"] => Self::Test(credential(w, c)?),
            ["workspaces", w, "credentials", c, "delete"] => Self::Delete(credential(w, c)?),
            ["workspaces", w, "import"] => Self::Import(workspace(w)?),
            ["workspaces", w, "tokens"] => Self::Tokens(workspace(w)?),
            ["workspaces", w, "tokens", t, "revoke"] => Self::Revoke(workspace(w)?, AccessTokenId::parse(t).ok()?),
            ["workspaces", w, "audit"] => Self::Audit(workspace(w)?),
            ["workspaces", w, "identityBindings"] => Self::IdentityBindings(workspace(w)?),
            ["workspaces", w, "identityBindings", b] => Self::IdentityBinding(binding(w, b)?),
            ["workspaces", w, "identityBindings", b, "delete"] => Self::DeleteIdentityBinding(binding(w, b)?),
            ["workspaces", w, "test-identity-token"] => Self::TestIdentityToken(workspace(w)?),
            ["identityProviders"] => Self::IdentityProviders,
            ["identityProviders", p] => Self::IdentityProvider(IdentityProviderId::parse(p).ok()?),
            ["identityProviders", p, "delete"] => Self::DeleteIdentityProvider(IdentityProviderId::parse(p).ok()?),
            _ => return None,
        })
    }

    /// Does this route answer `method`? (GET pages, POST actions; HEAD as GET.)
    pub fn allows(&self, method: &Method) -> bool {
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        match self {
            Self::Home | Self::Asset(_) | Self::Add(_) | Self::Audit(_) => get,
            Self::Logout | Self::Test(_) | Self::Revoke(..) => post,
            Self::Login
            | Self::Workspaces
            | Self::Credentials(_)
            | Self::Credential(_)
            | Self::Delete(_)
            | Self::Import(_)
            | Self::Tokens(_)
            | Self::IdentityBindings(_)
            | Self::IdentityBinding(_)
            | Self::DeleteIdentityBinding(_)
            | Self::TestIdentityToken(_)
            | Self::IdentityProviders
            | Self::IdentityProvider(_)
            | Self::DeleteIdentityProvider(_) => get || post,
        }
    }
}

fn workspace(text: &str) -> Option<WorkspaceId> {
    WorkspaceId::parse(text).ok()
}

fn credential(workspace_text: &str, text: &str) -> Option<CredentialName> {
    Some(CredentialName { workspace: workspace(workspace_text)?, credential: CredentialId::parse(text).ok()? })
}

fn binding(workspace_text: &str, text: &str) -> Option<IdentityBindingName> {
    Some(IdentityBindingName { workspace: workspace(workspace_text)?, binding: IdentityBindingId::parse(text).ok()? })
}

/// Paths of pages, for links and redirects.
pub mod to {
    use crate::domain::{CredentialName, IdentityBindingName, IdentityProviderId, WorkspaceId};

    /// The sign-in page.
    pub fn login() -> String {
        format!("{}/login", super::PREFIX)
    }
    /// The workspace list.
    pub fn workspaces() -> String {
        format!("{}/workspaces", super::PREFIX)
    }
    /// A workspace's credentials.
    pub fn credentials(w: &WorkspaceId) -> String {
        format!("{}/workspaces/{w}/credentials", super::PREFIX)
    }
    /// The Add form.
    pub fn add(w: &WorkspaceId) -> String {
        format!("{}/workspaces/{w}/add", super::PREFIX)
    }
    /// A credential's edit form.
    pub fn credential(name: &CredentialName) -> String {
        format!("{}/workspaces/{}/credentials/{}", super::PREFIX, name.workspace, name.credential)
    }
    /// A credential's test action.
    pub fn test(name: &CredentialName) -> String {
        format!("{}/test", credential(name))
    }
    /// A credential's delete confirmation.
    pub fn delete(name: &CredentialName) -> String {
        format!("{}/delete", credential(name))
    }
    /// The import form.
    pub fn import(w: &WorkspaceId) -> String {
        format!("{}/workspaces/{w}/import", super::PREFIX)
    }
    /// A workspace's tokens.
    pub fn tokens(w: &WorkspaceId) -> String {
        format!("{}/workspaces/{w}/tokens", super::PREFIX)
    }
    /// A token's revoke action.
    pub fn revoke(w: &WorkspaceId, token: &crate::domain::AccessTokenId) -> String {
        format!("{}/workspaces/{w}/tokens/{token}/revoke", super::PREFIX)
    }
    /// A workspace's audit trail.
    pub fn audit(w: &WorkspaceId) -> String {
        format!("{}/workspaces/{w}/audit", super::PREFIX)
    }
    /// A workspace's identity bindings.
    pub fn identity_bindings(w: &WorkspaceId) -> String {
        format!("{}/workspaces/{w}/identityBindings", super::PREFIX)
    }
    /// An identity binding's page.
    pub fn identity_binding(name: &IdentityBindingName) -> String {
        format!("{}/workspaces/{}/identityBindings/{}", super::PREFIX, name.workspace, name.binding)
    }
    /// An identity binding's delete confirmation.
    pub fn delete_identity_binding(name: &IdentityBindingName) -> String {
        format!("{}/delete", identity_binding(name))
    }
    /// The "Test a token" form of a workspace.
    pub fn test_identity_token(w: &WorkspaceId) -> String {
        format!("{}/workspaces/{w}/test-identity-token", super::PREFIX)
    }
    /// The identity providers.
    pub fn identity_providers() -> String {
        format!("{}/identityProviders", super::PREFIX)
    }
    /// An identity provider's page.
    pub fn identity_provider(id: &IdentityProviderId) -> String {
        format!("{}/identityProviders/{id}", super::PREFIX)
    }
    /// An identity provider's delete confirmation.
    pub fn delete_identity_provider(id: &IdentityProviderId) -> String {
        format!("{}/delete", identity_provider(id))
    }
    /// A static file.
    pub fn asset(file: &str) -> String {
        format!("{}/assets/{file}", super::PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_typed_routes_and_nothing_else_does() {
        assert_eq!(Route::parse("/console"), Some(Route::Home));
        assert_eq!(Route::parse("/console/"), Some(Route::Home));
        assert_eq!(Route::parse("/console/assets/console.css"), Some(Route::Asset("console.css")));
        let name = CredentialName::parse("workspaces/acme/credentials/ghcr").unwrap();
        assert_eq!(Route::parse("/console/workspaces/acme/credentials/ghcr"), Some(Route::Credential(name.clone())));
        assert_eq!(Route::parse("/console/workspaces/acme/credentials/ghcr/test"), Some(Route::Test(name)));
        let binding = IdentityBindingName::parse("workspaces/acme/identityBindings/ci").unwrap();
        assert_eq!(
            Route::parse("/console/workspaces/acme/identityBindings/ci/delete"),
            Some(Route::DeleteIdentityBinding(binding.clone()))
        );
        assert_eq!(to::identity_binding(&binding), "/console/workspaces/acme/identityBindings/ci");
        let provider = IdentityProviderId::parse("k8s").unwrap();
        assert_eq!(Route::parse(&to::identity_provider(&provider)), Some(Route::IdentityProvider(provider)));
        assert_eq!(
            Route::parse("/console/workspaces/acme/test-identity-token"),
            Some(Route::TestIdentityToken(WorkspaceId::parse("acme").unwrap()))
        );
        for bad in [
            "/consoles",
            "/console/assets/../x",
            "/console/assets/secret.txt",
            "/console/workspaces/ACME!/credentials",
            "/console/workspaces/acme/credentials/a%2Fb",
            "/console/workspaces/acme/credentials/..",
            "/console/workspaces//credentials",
            "/console/workspaces/acme/nothing",
            "/console/identityProviders/sp%20ace",
            "/console/identityProviders/k8s/bindings",
            "/console/workspaces/acme/identityBindings/a.b",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_answer_get_and_actions_answer_post() {
        assert!(Route::Home.allows(&Method::GET) && !Route::Home.allows(&Method::POST));
        assert!(Route::Logout.allows(&Method::POST) && !Route::Logout.allows(&Method::GET));
        assert!(Route::Login.allows(&Method::GET) && Route::Login.allows(&Method::POST));
        assert!(!Route::Login.allows(&Method::PUT));
    }
}
