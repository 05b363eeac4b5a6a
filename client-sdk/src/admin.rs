//! Thin typed wrappers for managing workspaces, credentials, access tokens
//! and reading the audit trail. Reads are retried on UNAVAILABLE (on another
//! replica when there are several); writes only when no server took them in
//! (the connection failed, or the server said it committed nothing), since
//! they are not all idempotent.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let settings = pullpass_server::config::Settings::dev(dir.path().join("data"))?;
//! # let server = pullpass_server::server::Embedded::start(settings).await?;
//! # let (endpoint, root_token) = (server.endpoint(), server.root_token.clone().unwrap());
//! use pullpass_client::Client;
//! use pullpass_client::v1::{Credential, Provider, WorkspaceKind};
//!
//! let client = Client::builder(endpoint).token(root_token).connect().await?;
//! client.create_workspace("acme", WorkspaceKind::Organization, "Acme").await?;
//! let stored = client
//!     .create_credential("acme", "ghcr", Credential {
//!         provider: Provider::Ghcr as i32,
//!         username: "octocat".into(),
//!         secret: "ghp_example".into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! assert_eq!(stored.registry_server, "ghcr.io"); // defaulted, and said so in `normalizations`
//! assert!(stored.secret.is_empty() && stored.secret_set); // the secret never comes back
//! assert_eq!(client.list_credentials("acme", "provider = GHCR").await?.len(), 1);
//! # server.shutdown().await?;
//! # Ok(()) }
//! ```

use pullpass::v1::{
    AccessToken, AuditEvent, CreateAccessTokenRequest, CreateCredentialRequest, CreateWorkspaceRequest, Credential,
    DeleteCredentialRequest, DeleteWorkspaceRequest, GetCredentialRequest, ImportDockerConfigRequest,
    ImportDockerConfigResponse, ListAccessTokensRequest, ListAuditEventsRequest, ListCredentialsRequest,
    ListWorkspacesRequest, RevokeAccessTokenRequest, Role, TestCredentialRequest, TestCredentialResponse,
    UpdateCredentialRequest, Workspace, WorkspaceKind,
};

use crate::client::Client;
use crate::error::Error;

/// `workspaces/{id}` from `id` or a full name.
pub fn workspace_name(workspace: &str) -> String {
    if workspace.starts_with("workspaces/") { workspace.to_owned() } else { format!("workspaces/{workspace}") }
}

/// `workspaces/{w}/credentials/{c}` from a workspace and an id (or a full name).
pub fn credential_name(workspace: &str, credential: &str) -> String {
    if credential.starts_with("workspaces/") {
        credential.to_owned()
    } else {
        format!("{}/credentials/{credential}", workspace_name(workspace))
    }
}

impl Client {
    /// Creates a workspace (ROOT).
    pub async fn create_workspace(
        &self,
        id: &str,
        kind: WorkspaceKind,
        display_name: &str,
    ) -> Result<Workspace, Error> {
        let request = CreateWorkspaceRequest {
            workspace_id: id.into(),
            workspace: Some(Workspace { kind: kind as i32, display_name: display_name.into(), ..Default::default() }),
        };
        Ok(self.retrying_write(|| async { self.access().create_workspace(request.clone()).await }).await?.into_inner())
    }

    /// Every workspace the caller may see.
    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>, Error> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListWorkspacesRequest { page_size: 1000, page_token: page_token.clone() };
            let page =
                self.retrying(|| async { self.access().list_workspaces(request.clone()).await }).await?.into_inner();
            all.extend(page.workspaces);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Deletes a workspace; with `force`, everything in it too.
    pub async fn delete_workspace(&self, workspace: &str, force: bool) -> Result<(), Error> {
        let request = DeleteWorkspaceRequest { name: workspace_name(workspace), force };
        self.retrying_write(|| async { self.access().delete_workspace(request.clone()).await }).await?;
        Ok(())
    }

    /// Stores a credential (its secret is sealed by the server).
    pub async fn create_credential(
        &self,
        workspace: &str,
        id: &str,
        credential: Credential,
    ) -> Result<Credential, Error> {
        let request = CreateCredentialRequest {
            parent: workspace_name(workspace),
            credential_id: id.into(),
            credential: Some(credential),
        };
        Ok(self
            .retrying_write(|| async { self.credentials().create_credential(request.clone()).await })
            .await?
            .into_inner())
    }

    /// One credential's metadata.
    pub async fn get_credential(&self, workspace: &str, credential: &str) -> Result<Credential, Error> {
        let request = GetCredentialRequest { name: credential_name(workspace, credential) };
        Ok(self.retrying(|| async { self.credentials().get_credential(request.clone()).await }).await?.into_inner())
    }

    /// Every credential of a workspace matching `filter` (may be empty).
    pub async fn list_credentials(&self, workspace: &str, filter: &str) -> Result<Vec<Credential>, Error> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListCredentialsRequest {
                parent: workspace_name(workspace),
                page_size: 1000,
                page_token: page_token.clone(),
                filter: filter.into(),
            };
            let page = self
                .retrying(|| async { self.credentials().list_credentials(request.clone()).await })
                .await?
                .into_inner();
            all.extend(page.credentials);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Changes the `paths` of a credential (its `name` says which).
    pub async fn update_credential(&self, credential: Credential, paths: &[&str]) -> Result<Credential, Error> {
        let request = UpdateCredentialRequest {
            credential: Some(credential),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
        };
        Ok(self
            .retrying_write(|| async { self.credentials().update_credential(request.clone()).await })
            .await?
            .into_inner())
    }

    /// Deletes a credential.
    pub async fn delete_credential(&self, workspace: &str, credential: &str) -> Result<(), Error> {
        let request = DeleteCredentialRequest { name: credential_name(workspace, credential) };
        self.retrying_write(|| async { self.credentials().delete_credential(request.clone()).await }).await?;
        Ok(())
    }

    /// Runs a credential's token flow for `repository` (no token returned).
    pub async fn test_credential(
        &self,
        workspace: &str,
        credential: &str,
        repository: &str,
        push: bool,
    ) -> Result<TestCredentialResponse, Error> {
        let request = TestCredentialRequest {
            name: credential_name(workspace, credential),
            repository: repository.into(),
            actions: vec![if push { pullpass::v1::Action::Push as i32 } else { pullpass::v1::Action::Pull as i32 }],
        };
        Ok(self.retrying(|| async { self.credentials().test_credential(request.clone()).await }).await?.into_inner())
    }

    /// Imports the registries of a docker `config.json`.
    pub async fn import_docker_config(
        &self,
        workspace: &str,
        config_json: String,
        name_prefix: &str,
        validate_only: bool,
    ) -> Result<ImportDockerConfigResponse, Error> {
        let request = ImportDockerConfigRequest {
            parent: workspace_name(workspace),
            config_json,
            name_prefix: name_prefix.into(),
            validate_only,
        };
        Ok(self
            .retrying_write(|| async { self.credentials().import_docker_config(request.clone()).await })
            .await?
            .into_inner())
    }

    /// Mints an access token; its `token` field is the string, shown once.
    pub async fn create_access_token(
        &self,
        workspace: &str,
        role: Role,
        projects: &[String],
        expire_time: Option<prost_types::Timestamp>,
        description: &str,
    ) -> Result<AccessToken, Error> {
        let request = CreateAccessTokenRequest {
            parent: workspace_name(workspace),
            access_token: Some(AccessToken {
                role: role as i32,
                projects: projects.to_vec(),
                expire_time,
                description: description.into(),
                ..Default::default()
            }),
        };
        Ok(self
            .retrying_write(|| async { self.access().create_access_token(request.clone()).await })
            .await?
            .into_inner())
    }

    /// Every access token of a workspace (without token strings).
    pub async fn list_access_tokens(&self, workspace: &str) -> Result<Vec<AccessToken>, Error> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListAccessTokensRequest {
                parent: workspace_name(workspace),
                page_size: 1000,
                page_token: page_token.clone(),
            };
            let page =
                self.retrying(|| async { self.access().list_access_tokens(request.clone()).await }).await?.into_inner();
            all.extend(page.access_tokens);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Revokes an access token (by name).
    pub async fn revoke_access_token(&self, name: &str) -> Result<AccessToken, Error> {
        let request = RevokeAccessTokenRequest { name: name.into() };
        Ok(self
            .retrying_write(|| async { self.access().revoke_access_token(request.clone()).await })
            .await?
            .into_inner())
    }

    /// A one-time link that signs this client's token in to the web console
    /// (valid five minutes, for one sign-in). The URL is a secret until used.
    pub async fn create_console_link(&self) -> Result<pullpass::v1::CreateConsoleLinkResponse, Error> {
        let request = pullpass::v1::CreateConsoleLinkRequest {};
        Ok(self.access().create_console_link(request).await?.into_inner())
    }

    /// Audit events of a workspace (or `-` for all, ROOT only), oldest first,
    /// at most `limit`.
    pub async fn list_audit_events(
        &self,
        workspace: &str,
        filter: &str,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, Error> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        while all.len() < limit {
            let request = ListAuditEventsRequest {
                parent: workspace_name(workspace),
                page_size: (limit - all.len()).min(1000) as i32,
                page_token: page_token.clone(),
                filter: filter.into(),
            };
            let page =
                self.retrying(|| async { self.audit().list_audit_events(request.clone()).await }).await?.into_inner();
            all.extend(page.audit_events);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        Ok(all)
    }
}
