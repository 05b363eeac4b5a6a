//! `pullpass.v1.AuditService` handlers.

use std::sync::Arc;

use pullpass::v1::audit_service_server::AuditService;
use pullpass::v1::{AuditEvent, ListAuditEventsRequest, ListAuditEventsResponse};
use tonic::{Request, Response, Status};

use super::{ApiState, allow, caller, convert, field};
use crate::access::policy::Permission;
use crate::audit::chain;
use crate::domain::WorkspaceId;
use crate::domain::audit::AuditRecord;

/// Handler state.
#[derive(Debug)]
pub struct AuditApi(pub(super) Arc<ApiState>);

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        let workspace = match request.parent.as_str() {
            "workspaces/-" => None,
            parent => Some(field("parent", WorkspaceId::from_name(parent))?),
        };
        allow(&principal, Permission::ReadAudit(workspace.as_ref()))?;
        let page = self.0.auditor.list(workspace, request.page_size, &request.page_token, &request.filter).await?;
        Ok(Response::new(ListAuditEventsResponse {
            audit_events: page.items.iter().map(event).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

fn event(record: &AuditRecord) -> AuditEvent {
    let e = &record.event;
    let workspace = if e.workspace.is_empty() { "-" } else { e.workspace.as_str() };
    AuditEvent {
        name: format!("workspaces/{workspace}/auditEvents/{}", record.seq),
        event_time: Some(convert::timestamp(e.event_time)),
        principal: e.principal.clone(),
        action: e.action.clone(),
        resource: e.resource.clone(),
        status_code: e.status_code,
        client_address: e.client_address.clone(),
        request_id: e.request_ids().next().unwrap_or_default().to_owned(),
        request_ids: e.request_ids().map(str::to_owned).collect(),
        call_count: i32::try_from(e.count).unwrap_or(i32::MAX),
        image: e.image.clone(),
        granted_scope: e.granted_scope.clone(),
        chain_hash: chain::hex(&record.hash),
    }
}
