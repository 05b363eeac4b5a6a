//! The gRPC edge: thin tonic handlers that parse requests into domain types,
//! check the caller's permission, call a domain service, and map the result
//! back. No SQL, no key material and no business rules live here.
//!
//! * [`metrics_layer`]: gRPC metrics (outermost layer).
//! * [`trace_layer`]: a trace span per RPC (when traces are exported).
//! * [`rpc_layer`]: authentication, request ids and the per-RPC log line.
//! * `call_end`: when a call ends and with which status (for both layers).
//! * [`status`]: domain errors → gRPC statuses (the only place that knows
//!   gRPC codes).
//! * [`convert`]: domain ⇄ proto field mapping.
//! * one module per service.

mod access_service;
mod audit_service;
mod call_end;
pub mod convert;
mod credential_service;
pub mod metrics_layer;
mod registry_auth_service;
pub mod rpc_layer;
pub mod status;
pub mod trace_layer;

use std::sync::Arc;

use pullpass::v1::access_service_server::AccessServiceServer;
use pullpass::v1::audit_service_server::AuditServiceServer;
use pullpass::v1::credential_service_server::CredentialServiceServer;
use pullpass::v1::registry_auth_service_server::RegistryAuthServiceServer;
use tonic::{Request, Status};

use crate::access::Principal;
use crate::access::policy::{Permission, authorize};
use crate::access::tokens::AccessTokens;
use crate::audit::{Actor, Auditor, Origin};
use crate::broker::Broker;
use crate::credentials::Credentials;
use crate::error::Error;
use crate::workspaces::Workspaces;

/// The domain services the handlers call.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Credential management.
    pub credentials: Credentials,
    /// Workspace management.
    pub workspaces: Workspaces,
    /// Identity providers and bindings.
    pub identities: crate::identities::Identities,
    /// Access-token management.
    pub tokens: AccessTokens,
    /// The audit trail.
    pub auditor: Auditor,
    /// Lease issuance.
    pub broker: Broker,
    /// Pulls through the gateway (when it is served): mints gateway
    /// passwords for `via_gateway`.
    pub pulls: Option<crate::pulls::Pulls>,
    /// Console sign-ins (`CreateConsoleLink`).
    pub sessions: crate::access::sessions::ConsoleSessions,
    /// Upstream time budget when the caller sets no deadline.
    pub upstream_timeout: std::time::Duration,
}

/// The four pullpass.v1 services, ready to add to a tonic router.
#[derive(Debug)]
pub struct PullpassServices {
    /// `pullpass.v1.CredentialService`.
    pub credentials: CredentialServiceServer<credential_service::CredentialApi>,
    /// `pullpass.v1.AccessService`.
    pub access: AccessServiceServer<access_service::AccessApi>,
    /// `pullpass.v1.RegistryAuthService`.
    pub registry_auth: RegistryAuthServiceServer<registry_auth_service::RegistryAuthApi>,
    /// `pullpass.v1.AuditService`.
    pub audit: AuditServiceServer<audit_service::AuditApi>,
}

/// Builds the services over `state`, refusing requests larger than
/// `max_request_bytes`.
pub fn services(state: ApiState, max_request_bytes: usize) -> PullpassServices {
    let state = Arc::new(state);
    PullpassServices {
        credentials: CredentialServiceServer::new(credential_service::CredentialApi(Arc::clone(&state)))
            .max_decoding_message_size(max_request_bytes),
        access: AccessServiceServer::new(access_service::AccessApi(Arc::clone(&state)))
            .max_decoding_message_size(max_request_bytes),
        registry_auth: RegistryAuthServiceServer::new(registry_auth_service::RegistryAuthApi(Arc::clone(&state)))
            .max_decoding_message_size(max_request_bytes),
        audit: AuditServiceServer::new(audit_service::AuditApi(state)).max_decoding_message_size(max_request_bytes),
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        status::to_status(&error)
    }
}

/// The authenticated caller (put there by [`rpc_layer`]).
fn caller<T>(request: &Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` metadata"))
}

/// The caller and its audit identity.
fn who<T>(request: &Request<T>) -> Result<(Arc<Principal>, Actor), Status> {
    let principal = caller(request)?;
    let context = request.extensions().get::<rpc_layer::CallContext>();
    let actor = Actor {
        principal: Arc::clone(&principal.resource_name),
        request_id: context.map_or_else(|| Arc::from(""), |c| Arc::clone(&c.request_id)),
        origin: context.and_then(|c| c.client).map_or(Origin::Unknown, Origin::Peer),
    };
    Ok((principal, actor))
}

impl ApiState {
    /// Records a failed mutation in the audit trail (successes are recorded
    /// by the domain services inside their transactions); a workspace
    /// token's in its own workspace's trail, whichever workspace `resource`
    /// names (see [`crate::audit::Auditor::record_failure`]).
    async fn audited<T>(
        &self,
        actor: &Actor,
        action: &str,
        resource: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        if let Err(status) = &result {
            self.auditor.record_failure(actor, action, resource, status.code() as i32).await;
        }
        result
    }
}

/// Checks that `principal` has `permission`.
fn allow(principal: &Principal, permission: Permission<'_>) -> Result<(), Status> {
    authorize(principal, permission).map_err(Status::from)
}

/// Attaches a request field to a parse error.
fn field<T>(name: &str, parsed: Result<T, String>) -> Result<T, Status> {
    parsed.map_err(|description| Error::invalid(name, description).into())
}

/// When upstream work must stop: a little before the caller's
/// `grpc-timeout` (so the answer still reaches it), at most `budget`.
fn deadline<T>(request: &Request<T>, budget: std::time::Duration) -> std::time::Instant {
    deadline_of(request.metadata().as_ref(), budget)
}

/// [`deadline`] from a call's HTTP headers.
pub(crate) fn deadline_of(headers: &http::HeaderMap, budget: std::time::Duration) -> std::time::Instant {
    let given = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|timeout| timeout.saturating_sub((timeout / 10).min(std::time::Duration::from_millis(250))))
        .unwrap_or(budget);
    std::time::Instant::now() + given.min(budget)
}

/// `grpc-timeout` values: digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// INVALID_ARGUMENT for a required message field left unset.
fn required(name: &str) -> Status {
    Error::invalid(name, "is required").into()
}
