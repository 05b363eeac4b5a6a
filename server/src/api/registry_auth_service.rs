//! `pullpass.v1.RegistryAuthService` handlers.

use std::sync::Arc;

use pullpass::v1::registry_auth_service_server::RegistryAuthService;
use pullpass::v1::{IssueRegistryAuthRequest, IssueRegistryAuthResponse};
use tonic::{Request, Response, Status};

use super::{ApiState, caller};
use crate::error::Error;

/// Handler state.
#[derive(Debug)]
pub struct RegistryAuthApi(pub(super) Arc<ApiState>);

#[tonic::async_trait]
impl RegistryAuthService for RegistryAuthApi {
    async fn issue_registry_auth(
        &self,
        request: Request<IssueRegistryAuthRequest>,
    ) -> Result<Response<IssueRegistryAuthResponse>, Status> {
        caller(&request)?;
        let _ = &self.0;
        Err(Error::Unimplemented(
            "IssueRegistryAuth needs the token broker (registry challenge and token exchange), which this server does not have yet".into(),
        )
        .into())
    }
}
