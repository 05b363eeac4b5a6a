//! `pullpass.v1.AccessService` handlers: workspaces, access tokens, and
//! workload identity (identity providers and bindings).

use std::sync::Arc;

use pullpass::v1::access_service_server::AccessService;
use pullpass::v1::{
    AccessToken, CreateAccessTokenRequest, CreateConsoleLinkRequest, CreateConsoleLinkResponse,
    CreateIdentityBindingRequest, CreateIdentityProviderRequest, CreateWorkspaceRequest, DeleteIdentityBindingRequest,
    DeleteIdentityProviderRequest, DeleteWorkspaceRequest, GetAccessTokenRequest, GetIdentityBindingRequest,
    GetIdentityProviderRequest, GetWorkspaceRequest, IdentityBinding, IdentityProvider, ListAccessTokensRequest,
    ListAccessTokensResponse, ListIdentityBindingsRequest, ListIdentityBindingsResponse, ListIdentityProvidersRequest,
    ListIdentityProvidersResponse, ListWorkspacesRequest, ListWorkspacesResponse, RevokeAccessTokenRequest,
    TestIdentityTokenRequest, TestIdentityTokenResponse, UpdateIdentityBindingRequest, UpdateIdentityProviderRequest,
    Workspace,
};
use tonic::{Request, Response, Status};

use super::{ApiState, allow, caller, convert, field, required, who};
use crate::access::policy::Permission;
use crate::access::tokens::{AccessTokens, NewToken};
use crate::domain::ids::{AccessTokenName, ROOT_TOKENS};
use crate::domain::{AccessTokenId, IdentityBindingName, IdentityProviderId, Role, WorkspaceId};

/// Handler state.
#[derive(Debug)]
pub struct AccessApi(pub(super) Arc<ApiState>);

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn create_workspace(&self, request: Request<CreateWorkspaceRequest>) -> Result<Response<Workspace>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let resource = format!("workspaces/{}", request.workspace_id);
        let result = async {
            allow(&principal, Permission::ManageWorkspaces)?;
            let workspace = request.workspace.ok_or_else(|| required("workspace"))?;
            let created =
                self.0.workspaces.create(&actor, &request.workspace_id, workspace.kind, workspace.display_name).await?;
            Ok(Response::new(convert::workspace(&created)))
        }
        .await;
        self.0.audited(&actor, "CreateWorkspace", &resource, result).await
    }

    async fn get_workspace(&self, request: Request<GetWorkspaceRequest>) -> Result<Response<Workspace>, Status> {
        let principal = caller(&request)?;
        let id = field("name", WorkspaceId::from_name(&request.get_ref().name))?;
        allow(&principal, Permission::ReadWorkspace(&id))?;
        Ok(Response::new(convert::workspace(&self.0.workspaces.get(id).await?)))
    }

    async fn list_workspaces(
        &self,
        request: Request<ListWorkspacesRequest>,
    ) -> Result<Response<ListWorkspacesResponse>, Status> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        if principal.role != Role::Root {
            // A workspace token sees its own workspace only.
            let own = match principal.workspace.clone() {
                Some(id) => vec![convert::workspace(&self.0.workspaces.get(id).await?)],
                None => vec![],
            };
            return Ok(Response::new(ListWorkspacesResponse { workspaces: own, next_page_token: String::new() }));
        }
        let page = self.0.workspaces.list(request.page_size, &request.page_token).await?;
        Ok(Response::new(ListWorkspacesResponse {
            workspaces: page.items.iter().map(convert::workspace).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete_workspace(&self, request: Request<DeleteWorkspaceRequest>) -> Result<Response<()>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let result = async {
            let id = field("name", WorkspaceId::from_name(&request.name))?;
            allow(&principal, Permission::ManageWorkspaces)?;
            self.0.workspaces.delete(&actor, id, request.force).await?;
            Ok(Response::new(()))
        }
        .await;
        if result.is_ok() {
            self.0.tokens.forget_cached();
        }
        self.0.audited(&actor, "DeleteWorkspace", &request.name, result).await
    }

    async fn create_access_token(
        &self,
        request: Request<CreateAccessTokenRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let result = async {
            let workspace = field("parent", WorkspaceId::from_name(&request.parent))?;
            let token = request.access_token.ok_or_else(|| required("access_token"))?;
            let new = NewToken {
                role: token.role,
                projects: token.projects,
                expire_time: token.expire_time.as_ref().map(convert::from_timestamp),
                description: token.description,
            };
            // Workspace visibility first, then the fields, then the role.
            allow(&principal, Permission::ReadWorkspace(&workspace))?;
            let (role, _) = AccessTokens::validate(&new)?;
            allow(&principal, Permission::ManageTokens(&workspace, role))?;
            let (record, secret) = self.0.tokens.create(&actor, workspace, new).await?;
            Ok(Response::new(AccessToken { token: secret.expose().to_owned(), ..convert::access_token(&record) }))
        }
        .await;
        let resource = format!("{}/accessTokens", request.parent);
        self.0.audited(&actor, "CreateAccessToken", &resource, result).await
    }

    async fn get_access_token(&self, request: Request<GetAccessTokenRequest>) -> Result<Response<AccessToken>, Status> {
        let principal = caller(&request)?;
        let name = field("name", AccessTokenName::parse(&request.get_ref().name))?;
        allow(&principal, Permission::ReadTokens(&name.workspace))?;
        let record = self.0.tokens.get(name.workspace, name.token).await?;
        Ok(Response::new(convert::access_token(&record)))
    }

    async fn list_access_tokens(
        &self,
        request: Request<ListAccessTokensRequest>,
    ) -> Result<Response<ListAccessTokensResponse>, Status> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        let workspace = field("parent", WorkspaceId::from_name(&request.parent))?;
        allow(&principal, Permission::ReadTokens(&workspace))?;
        let page = self.0.tokens.list(workspace, request.page_size, &request.page_token).await?;
        Ok(Response::new(ListAccessTokensResponse {
            access_tokens: page.items.iter().map(convert::access_token).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_access_token(
        &self,
        request: Request<RevokeAccessTokenRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        let (principal, actor) = who(&request)?;
        let resource = request.get_ref().name.clone();
        let result = async {
            if resource.starts_with(ROOT_TOKENS) {
                let id = field("name", AccessTokenId::from_root_name(&resource))?;
                allow(&principal, Permission::ManageRootTokens)?;
                let record = self.0.tokens.revoke_root(&actor, id).await?;
                return Ok(Response::new(convert::access_token(&record)));
            }
            let name = field("name", AccessTokenName::parse(&resource))?;
            allow(&principal, Permission::ReadTokens(&name.workspace))?;
            let existing = self.0.tokens.get(name.workspace.clone(), name.token.clone()).await?;
            allow(&principal, Permission::ManageTokens(&name.workspace, existing.role))?;
            let record = self.0.tokens.revoke(&actor, name.workspace, name.token).await?;
            Ok(Response::new(convert::access_token(&record)))
        }
        .await;
        self.0.audited(&actor, "RevokeAccessToken", &resource, result).await
    }

    async fn create_console_link(
        &self,
        request: Request<CreateConsoleLinkRequest>,
    ) -> Result<Response<CreateConsoleLinkResponse>, Status> {
        let (principal, _) = who(&request)?;
        let link = self.0.sessions.create_login_link(&principal).await?;
        Ok(Response::new(CreateConsoleLinkResponse {
            url: link.url.expose().to_owned(),
            expire_time: Some(convert::timestamp(link.expire_time)),
        }))
    }

    async fn create_identity_provider(
        &self,
        request: Request<CreateIdentityProviderRequest>,
    ) -> Result<Response<IdentityProvider>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let resource = format!("identityProviders/{}", request.identity_provider_id);
        let result = async {
            allow(&principal, Permission::ManageIdentityProviders)?;
            let provider = request.identity_provider.ok_or_else(|| required("identity_provider"))?;
            let created = self
                .0
                .identities
                .create_provider(&actor, &request.identity_provider_id, convert::provider_input(provider))
                .await?;
            Ok(Response::new(convert::identity_provider(&created)))
        }
        .await;
        self.0.audited(&actor, "CreateIdentityProvider", &resource, result).await
    }

    async fn get_identity_provider(
        &self,
        request: Request<GetIdentityProviderRequest>,
    ) -> Result<Response<IdentityProvider>, Status> {
        let principal = caller(&request)?;
        allow(&principal, Permission::ReadIdentityProviders)?;
        let id = field("name", IdentityProviderId::from_name(&request.get_ref().name))?;
        Ok(Response::new(convert::identity_provider(&self.0.identities.get_provider(&id).await?)))
    }

    async fn list_identity_providers(
        &self,
        request: Request<ListIdentityProvidersRequest>,
    ) -> Result<Response<ListIdentityProvidersResponse>, Status> {
        let principal = caller(&request)?;
        allow(&principal, Permission::ReadIdentityProviders)?;
        let request = request.into_inner();
        let page = self.0.identities.list_providers(request.page_size, &request.page_token).await?;
        Ok(Response::new(ListIdentityProvidersResponse {
            identity_providers: page.items.iter().map(convert::identity_provider).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_identity_provider(
        &self,
        request: Request<UpdateIdentityProviderRequest>,
    ) -> Result<Response<IdentityProvider>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let resource = request.identity_provider.as_ref().map(|p| p.name.clone()).unwrap_or_default();
        let result = async {
            allow(&principal, Permission::ManageIdentityProviders)?;
            let provider = request.identity_provider.ok_or_else(|| required("identity_provider"))?;
            let id = field("identity_provider.name", IdentityProviderId::from_name(&provider.name))?;
            let mask = request.update_mask.map(|mask| mask.paths);
            let updated =
                self.0.identities.update_provider(&actor, id, convert::provider_input(provider), mask).await?;
            Ok(Response::new(convert::identity_provider(&updated)))
        }
        .await;
        self.0.audited(&actor, "UpdateIdentityProvider", &resource, result).await
    }

    async fn delete_identity_provider(
        &self,
        request: Request<DeleteIdentityProviderRequest>,
    ) -> Result<Response<()>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let result = async {
            allow(&principal, Permission::ManageIdentityProviders)?;
            let id = field("name", IdentityProviderId::from_name(&request.name))?;
            self.0.identities.delete_provider(&actor, id, request.force).await?;
            Ok(Response::new(()))
        }
        .await;
        self.0.audited(&actor, "DeleteIdentityProvider", &request.name, result).await
    }

    async fn create_identity_binding(
        &self,
        request: Request<CreateIdentityBindingRequest>,
    ) -> Result<Response<IdentityBinding>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let resource = format!("{}/identityBindings/{}", request.parent, request.identity_binding_id);
        let result = async {
            let workspace = field("parent", WorkspaceId::from_name(&request.parent))?;
            allow(&principal, Permission::ManageIdentityBindings(&workspace))?;
            let binding = request.identity_binding.ok_or_else(|| required("identity_binding"))?;
            let created = self
                .0
                .identities
                .create_binding(&actor, workspace, &request.identity_binding_id, convert::binding_input(binding))
                .await?;
            Ok(Response::new(convert::identity_binding(&created)))
        }
        .await;
        self.0.audited(&actor, "CreateIdentityBinding", &resource, result).await
    }

    async fn get_identity_binding(
        &self,
        request: Request<GetIdentityBindingRequest>,
    ) -> Result<Response<IdentityBinding>, Status> {
        let principal = caller(&request)?;
        let name = field("name", IdentityBindingName::parse(&request.get_ref().name))?;
        allow(&principal, Permission::ManageIdentityBindings(&name.workspace))?;
        Ok(Response::new(convert::identity_binding(&self.0.identities.get_binding(&name).await?)))
    }

    async fn list_identity_bindings(
        &self,
        request: Request<ListIdentityBindingsRequest>,
    ) -> Result<Response<ListIdentityBindingsResponse>, Status> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        let workspace = field("parent", WorkspaceId::from_name(&request.parent))?;
        allow(&principal, Permission::ManageIdentityBindings(&workspace))?;
        let page = self.0.identities.list_bindings(&workspace, request.page_size, &request.page_token).await?;
        Ok(Response::new(ListIdentityBindingsResponse {
            identity_bindings: page.items.iter().map(convert::identity_binding).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_identity_binding(
        &self,
        request: Request<UpdateIdentityBindingRequest>,
    ) -> Result<Response<IdentityBinding>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let resource = request.identity_binding.as_ref().map(|b| b.name.clone()).unwrap_or_default();
        let result = async {
            let binding = request.identity_binding.ok_or_else(|| required("identity_binding"))?;
            let name = field("identity_binding.name", IdentityBindingName::parse(&binding.name))?;
            allow(&principal, Permission::ManageIdentityBindings(&name.workspace))?;
            let mask = request.update_mask.map(|mask| mask.paths);
            let updated = self.0.identities.update_binding(&actor, name, convert::binding_input(binding), mask).await?;
            Ok(Response::new(convert::identity_binding(&updated)))
        }
        .await;
        self.0.audited(&actor, "UpdateIdentityBinding", &resource, result).await
    }

    async fn delete_identity_binding(
        &self,
        request: Request<DeleteIdentityBindingRequest>,
    ) -> Result<Response<()>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let result = async {
            let name = field("name", IdentityBindingName::parse(&request.name))?;
            allow(&principal, Permission::ManageIdentityBindings(&name.workspace))?;
            self.0.identities.delete_binding(&actor, name).await?;
            Ok(Response::new(()))
        }
        .await;
        self.0.audited(&actor, "DeleteIdentityBinding", &request.name, result).await
    }

    async fn test_identity_token(
        &self,
        request: Request<TestIdentityTokenRequest>,
    ) -> Result<Response<TestIdentityTokenResponse>, Status> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        let workspace = field("parent", WorkspaceId::from_name(&request.parent))?;
        allow(&principal, Permission::ManageIdentityBindings(&workspace))?;
        let explained = self.0.identities.explain(&workspace, &request.token).await?;
        Ok(Response::new(convert::identity_explanation(explained)))
    }
}
