//! `pullpass.v1.RegistryAuthService` handlers.

use std::sync::Arc;
use std::time::Duration;

use pullpass::scope::Action;
use pullpass::v1::registry_auth_service_server::RegistryAuthService;
use pullpass::v1::{AuthKind, IssueRegistryAuthRequest, IssueRegistryAuthResponse, RegistryAuth};
use tonic::{Request, Response, Status};

use super::status::to_rpc_status;
use super::{ApiState, allow, convert, deadline, field, who};
use crate::access::policy::Permission;
use crate::broker::{Issued, LeaseRequest};
use crate::domain::{Accept, Grant, ProjectName, WorkspaceId};
use crate::error::Error;
use crate::pulls::{GATEWAY_USERNAME, GatewayLease};

/// Handler state.
#[derive(Debug)]
pub struct RegistryAuthApi(pub(super) Arc<ApiState>);

/// `min_ttl` when the request gives none.
const DEFAULT_MIN_TTL: Duration = Duration::from_secs(30);
/// Largest `min_ttl` accepted.
const MAX_MIN_TTL: Duration = Duration::from_secs(24 * 3600);

#[tonic::async_trait]
impl RegistryAuthService for RegistryAuthApi {
    async fn issue_registry_auth(
        &self,
        request: Request<IssueRegistryAuthRequest>,
    ) -> Result<Response<IssueRegistryAuthResponse>, Status> {
        let (principal, actor) = who(&request)?;
        let deadline = deadline(&request, self.0.upstream_timeout);
        let mut request = request.into_inner();
        // Lent to the lease request and handed back with the outcomes.
        let images = std::mem::take(&mut request.images);
        let checked = async {
            let workspace = field("workspace", WorkspaceId::from_name(&request.workspace))?;
            let project = match request.project.as_str() {
                "" => None,
                project => Some(field("project", ProjectName::parse(project))?),
            };
            allow(&principal, Permission::IssueRegistryAuth(&workspace, project.as_ref()))?;
            let lease_request = LeaseRequest {
                workspace,
                project,
                images,
                actions: actions(&request.actions)?,
                min_ttl: min_ttl(request.min_ttl)?,
                accept: accept(&request.accept)?,
                deadline,
                actor: actor.clone(),
            };
            if !request.via_gateway {
                let issued = self.0.broker.issue(&lease_request).await?;
                let auths = issued.into_iter().map(|outcome| outcome.map(registry_auth)).collect::<Vec<_>>();
                return Ok((lease_request.images, auths));
            }
            let pulls = self.0.pulls.as_ref().ok_or_else(|| Error::FailedPrecondition {
                reason: "GATEWAY_DISABLED",
                message: "this pullpassd serves no pull gateway; start it with --gateway-listen ADDR".into(),
            })?;
            if lease_request.accept == Accept::BearerOnly {
                return Err(Error::invalid(
                    "accept",
                    "via_gateway answers with a username and password (BASIC); leave accept empty or include BASIC",
                )
                .into());
            }
            // Boxed, as the lease path's future should not carry this one's size.
            let leases = Box::pin(pulls.issue(&principal, &lease_request, request.min_ttl.is_some())).await?;
            Ok((lease_request.images, leases.into_iter().map(|outcome| outcome.map(gateway_auth)).collect()))
        }
        .await;
        let (images, outcomes) = self.0.audited(&actor, "IssueRegistryAuth", &request.workspace, checked).await?;
        let auths = images
            .into_iter()
            .zip(outcomes)
            .map(|(image, outcome)| match outcome {
                Ok(auth) => RegistryAuth { image, ..auth },
                Err(error) => RegistryAuth {
                    normalized_image: pullpass::reference::ImageRef::parse(&image)
                        .map(|i| i.to_string())
                        .unwrap_or_default(),
                    image,
                    status: Some(to_rpc_status(&error)),
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(IssueRegistryAuthResponse { auths }))
    }
}

/// Request actions; PULL when empty.
pub(super) fn actions(values: &[i32]) -> Result<Vec<Action>, Status> {
    values
        .iter()
        .map(|value| match pullpass::v1::Action::try_from(*value) {
            Ok(pullpass::v1::Action::Pull | pullpass::v1::Action::Unspecified) => Ok(Action::Pull),
            Ok(pullpass::v1::Action::Push) => Ok(Action::Push),
            Err(_) => Err(Error::invalid("actions", format!("unknown action {value}; use PULL or PUSH")).into()),
        })
        .collect()
}

fn min_ttl(value: Option<prost_types::Duration>) -> Result<Duration, Status> {
    let Some(value) = value else { return Ok(DEFAULT_MIN_TTL) };
    if value.seconds < 0 || value.nanos < 0 {
        return Err(Error::invalid("min_ttl", "must not be negative").into());
    }
    let duration = Duration::new(value.seconds as u64, value.nanos as u32);
    if duration > MAX_MIN_TTL {
        return Err(Error::invalid("min_ttl", "must be at most 24 hours").into());
    }
    Ok(duration)
}

fn accept(values: &[i32]) -> Result<Accept, Status> {
    let mut bearer = false;
    let mut basic = false;
    for value in values {
        match AuthKind::try_from(*value) {
            Ok(AuthKind::Bearer) => bearer = true,
            Ok(AuthKind::Basic) => basic = true,
            _ => return Err(Error::invalid("accept", format!("unknown auth kind {value}; use BEARER or BASIC")).into()),
        }
    }
    Ok(match (bearer, basic) {
        (true, false) => Accept::BearerOnly,
        (false, true) => Accept::BasicOnly,
        _ => Accept::Any,
    })
}

/// A gateway lease: username `pullpass`, the gateway password, the
/// gateway's host and the image to pull from it. The upstream lease behind
/// it stays here.
fn gateway_auth(lease: GatewayLease) -> RegistryAuth {
    let upstream = &lease.upstream.lease;
    RegistryAuth {
        normalized_image: lease.image.to_string(),
        status: Some(tonic_types::Status::default()),
        kind: AuthKind::Basic as i32,
        username: GATEWAY_USERNAME.to_owned(),
        password: lease.password.expose().to_owned(),
        expire_time: Some(convert::timestamp(lease.expire_time)),
        issue_time: Some(convert::timestamp(lease.issue_time)),
        registry: lease.registry,
        granted_scope: upstream.granted.as_ref().map(ToString::to_string).unwrap_or_default(),
        requested_scope: upstream.requested.to_string(),
        credential: upstream.credential.to_string(),
        cached: lease.upstream.cached,
        gateway_image: lease.gateway_image,
        ..Default::default()
    }
}

/// A lease as the registry issued it (the image is filled in by the caller).
fn registry_auth(issued: Issued) -> RegistryAuth {
    let (lease, text) = (&issued.lease, &issued.text);
    let status = tonic_types::Status {
        code: 0,
        message: if text.narrower {
            format!("the registry granted less than asked: {} of {}", text.granted, text.requested)
        } else {
            String::new()
        },
        details: vec![],
    };
    let mut auth = RegistryAuth {
        normalized_image: text.image.clone(),
        status: Some(status),
        expire_time: Some(convert::timestamp(lease.expire_time)),
        issue_time: Some(convert::timestamp(lease.issue_time)),
        registry: lease.registry.clone(),
        granted_scope: text.granted.clone(),
        requested_scope: text.requested.clone(),
        credential: text.credential.clone(),
        cached: issued.cached,
        ..Default::default()
    };
    match &lease.grant {
        Grant::Bearer { token } => {
            auth.kind = AuthKind::Bearer as i32;
            auth.token = token.expose().to_owned();
        }
        Grant::Basic { username, password } => {
            auth.kind = AuthKind::Basic as i32;
            auth.username = username.clone();
            auth.password = password.expose().to_owned();
        }
    }
    auth
}
