//! `pullpass.v1.AccessService` handlers: workspaces and access tokens.

use std::sync::Arc;

use pullpass::v1::access_service_server::AccessService;
use pullpass::v1::{
    AccessToken, CreateAccessTokenRequest, CreateConsoleLinkRequest, CreateConsoleLinkResponse, CreateWorkspaceRequest,
    DeleteWorkspaceRequest, GetAccessTokenRequest, GetWorkspaceRequest, ListAccessTokensRequest,
    ListAccessTokensResponse, ListWorkspacesRequest, ListWorkspacesResponse, RevokeAccessTokenRequest, Workspace,
};
use tonic::{Request, Response, Status};

use super::{ApiState, allow, caller, convert, field, required, who};
use crate::access::policy::Permission;
use crate::access::tokens::{AccessTokens, NewToken};
use crate::domain::ids::{AccessTokenName, ROOT_TOKENS};
use crate::domain::{AccessTokenId, Role, WorkspaceId};

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
}
