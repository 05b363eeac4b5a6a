//! `pullpass.v1.AccessService` handlers: workspaces and access tokens.

use std::sync::Arc;

use pullpass::v1::access_service_server::AccessService;
use pullpass::v1::{
    AccessToken, CreateAccessTokenRequest, CreateWorkspaceRequest, DeleteWorkspaceRequest, GetAccessTokenRequest,
    GetWorkspaceRequest, ListAccessTokensRequest, ListAccessTokensResponse, ListWorkspacesRequest,
    ListWorkspacesResponse, RevokeAccessTokenRequest, Workspace,
};
use tonic::{Request, Response, Status};

use super::{ApiState, allow, caller, convert, field, required};
use crate::access::policy::Permission;
use crate::domain::{Role, WorkspaceId};
use crate::error::Error;

/// Handler state.
#[derive(Debug)]
pub struct AccessApi(pub(super) Arc<ApiState>);

fn tokens_unimplemented(rpc: &str) -> Status {
    Error::Unimplemented(format!(
        "{rpc} is not available yet: workspace access tokens (roles ADMIN, LAUNCHER, VIEWER) come with the access-control work; use the root token meanwhile"
    ))
    .into()
}

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn create_workspace(&self, request: Request<CreateWorkspaceRequest>) -> Result<Response<Workspace>, Status> {
        let principal = caller(&request)?;
        allow(&principal, Permission::ManageWorkspaces)?;
        let request = request.into_inner();
        let workspace = request.workspace.ok_or_else(|| required("workspace"))?;
        let created = self.0.workspaces.create(&request.workspace_id, workspace.kind, workspace.display_name).await?;
        Ok(Response::new(convert::workspace(&created)))
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
            let own = match principal.workspace {
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
        let principal = caller(&request)?;
        allow(&principal, Permission::ManageWorkspaces)?;
        let request = request.into_inner();
        let id = field("name", WorkspaceId::from_name(&request.name))?;
        self.0.workspaces.delete(id, request.force).await?;
        Ok(Response::new(()))
    }

    async fn create_access_token(
        &self,
        request: Request<CreateAccessTokenRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        caller(&request)?;
        Err(tokens_unimplemented("CreateAccessToken"))
    }

    async fn get_access_token(&self, request: Request<GetAccessTokenRequest>) -> Result<Response<AccessToken>, Status> {
        caller(&request)?;
        Err(tokens_unimplemented("GetAccessToken"))
    }

    async fn list_access_tokens(
        &self,
        request: Request<ListAccessTokensRequest>,
    ) -> Result<Response<ListAccessTokensResponse>, Status> {
        caller(&request)?;
        Err(tokens_unimplemented("ListAccessTokens"))
    }

    async fn revoke_access_token(
        &self,
        request: Request<RevokeAccessTokenRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        caller(&request)?;
        Err(tokens_unimplemented("RevokeAccessToken"))
    }
}
