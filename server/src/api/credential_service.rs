//! `pullpass.v1.CredentialService` handlers.

use std::sync::Arc;

use pullpass::v1::credential_service_server::CredentialService;
use pullpass::v1::{
    AuthKind, CreateCredentialRequest, Credential, DeleteCredentialRequest, GetCredentialRequest,
    ImportDockerConfigRequest, ImportDockerConfigResponse, ImportDockerConfigResult, ListCredentialsRequest,
    ListCredentialsResponse, TestCredentialRequest, TestCredentialResponse, UpdateCredentialRequest,
};
use tonic::{Request, Response, Status};

use super::status::{ok_rpc_status, to_rpc_status};
use super::{ApiState, allow, caller, convert, deadline, field, required, who};
use crate::access::policy::Permission;
use crate::domain::{CredentialId, CredentialName, Grant, WorkspaceId};

/// Handler state.
#[derive(Debug)]
pub struct CredentialApi(pub(super) Arc<ApiState>);

#[tonic::async_trait]
impl CredentialService for CredentialApi {
    async fn create_credential(
        &self,
        request: Request<CreateCredentialRequest>,
    ) -> Result<Response<Credential>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let resource = format!("{}/credentials/{}", request.parent, request.credential_id);
        let result = async {
            let workspace = field("parent", WorkspaceId::from_name(&request.parent))?;
            allow(&principal, Permission::ManageCredentials(&workspace))?;
            let id = field("credential_id", CredentialId::parse(&request.credential_id))?;
            let credential = request.credential.ok_or_else(|| required("credential"))?;
            let saved = self.0.credentials.create(&actor, workspace, id, convert::credential_input(credential)).await?;
            Ok(Response::new(convert::saved_credential(saved)))
        }
        .await;
        self.0.audited(&actor, "CreateCredential", &resource, result).await
    }

    async fn get_credential(&self, request: Request<GetCredentialRequest>) -> Result<Response<Credential>, Status> {
        let principal = caller(&request)?;
        let name = field("name", CredentialName::parse(&request.get_ref().name))?;
        allow(&principal, Permission::ReadCredentials(&name.workspace))?;
        let credential = self.0.credentials.get(name).await?;
        Ok(Response::new(convert::credential(&credential)))
    }

    async fn list_credentials(
        &self,
        request: Request<ListCredentialsRequest>,
    ) -> Result<Response<ListCredentialsResponse>, Status> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        let workspace = field("parent", WorkspaceId::from_name(&request.parent))?;
        allow(&principal, Permission::ReadCredentials(&workspace))?;
        let page = self.0.credentials.list(workspace, request.page_size, &request.page_token, &request.filter).await?;
        Ok(Response::new(ListCredentialsResponse {
            credentials: page.items.iter().map(convert::credential).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_credential(
        &self,
        request: Request<UpdateCredentialRequest>,
    ) -> Result<Response<Credential>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let resource = request.credential.as_ref().map(|c| c.name.clone()).unwrap_or_default();
        let result = async {
            let credential = request.credential.ok_or_else(|| required("credential"))?;
            let name = field("credential.name", CredentialName::parse(&credential.name))?;
            allow(&principal, Permission::ManageCredentials(&name.workspace))?;
            let mask = request.update_mask.map(|mask| mask.paths);
            let saved = self.0.credentials.update(&actor, name, convert::credential_input(credential), mask).await?;
            Ok(Response::new(convert::saved_credential(saved)))
        }
        .await;
        self.0.audited(&actor, "UpdateCredential", &resource, result).await
    }

    async fn delete_credential(&self, request: Request<DeleteCredentialRequest>) -> Result<Response<()>, Status> {
        let (principal, actor) = who(&request)?;
        let resource = request.get_ref().name.clone();
        let result = async {
            let name = field("name", CredentialName::parse(&resource))?;
            allow(&principal, Permission::ManageCredentials(&name.workspace))?;
            self.0.credentials.delete(&actor, name).await?;
            Ok(Response::new(()))
        }
        .await;
        self.0.audited(&actor, "DeleteCredential", &resource, result).await
    }

    async fn test_credential(
        &self,
        request: Request<TestCredentialRequest>,
    ) -> Result<Response<TestCredentialResponse>, Status> {
        let (principal, actor) = who(&request)?;
        let deadline = deadline(&request, self.0.upstream_timeout);
        let request = request.into_inner();
        let resource = request.name.clone();
        let result = async {
            let name = field("name", CredentialName::parse(&request.name))?;
            allow(&principal, Permission::ManageCredentials(&name.workspace))?;
            if request.repository.is_empty() {
                return Err(required("repository"));
            }
            let actions = super::registry_auth_service::actions(&request.actions)?;
            let report = self.0.broker.test(&actor, name, &request.repository, &actions, deadline).await?;
            let mut response = TestCredentialResponse {
                requested_scope: report.requested.to_string(),
                registry: report.registry,
                secret_expire_time: report.learned_expiry.map(convert::timestamp),
                ..Default::default()
            };
            match report.outcome {
                Ok(lease) => {
                    response.success = true;
                    response.status = Some(ok_rpc_status());
                    response.kind = match lease.grant {
                        Grant::Bearer { .. } => AuthKind::Bearer as i32,
                        Grant::Basic { .. } => AuthKind::Basic as i32,
                    };
                    response.granted_scope = lease.granted.map(|g| g.to_string()).unwrap_or_default();
                    response.expire_time = Some(convert::timestamp(lease.expire_time));
                }
                Err(error) => response.status = Some(to_rpc_status(&error)),
            }
            Ok(Response::new(response))
        }
        .await;
        self.0.audited(&actor, "TestCredential", &resource, result).await
    }

    async fn import_docker_config(
        &self,
        request: Request<ImportDockerConfigRequest>,
    ) -> Result<Response<ImportDockerConfigResponse>, Status> {
        let (principal, actor) = who(&request)?;
        let request = request.into_inner();
        let parent = request.parent.clone();
        let result = async {
            let workspace = field("parent", WorkspaceId::from_name(&request.parent))?;
            allow(&principal, Permission::ManageCredentials(&workspace))?;
            let results = self
                .0
                .credentials
                .import_docker_config(
                    &actor,
                    workspace,
                    &request.config_json,
                    &request.name_prefix,
                    request.validate_only,
                )
                .await?;
            let created_count = results.iter().filter(|r| r.outcome.is_ok()).count() as i32;
            let results = results
                .into_iter()
                .map(|result| match result.outcome {
                    Ok(saved) => ImportDockerConfigResult {
                        config_key: result.config_key,
                        credential: Some(convert::saved_credential(saved)),
                        status: Some(ok_rpc_status()),
                    },
                    Err(error) => ImportDockerConfigResult {
                        config_key: result.config_key,
                        credential: None,
                        status: Some(to_rpc_status(&error)),
                    },
                })
                .collect();
            Ok(Response::new(ImportDockerConfigResponse { results, created_count }))
        }
        .await;
        self.0.audited(&actor, "ImportDockerConfig", &parent, result).await
    }
}
