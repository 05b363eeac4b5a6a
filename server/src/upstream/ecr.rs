//! Amazon ECR: `GetAuthorizationToken`, signed with SigV4, returns a
//! password for user `AWS` (12 hours, or the signing session's remaining
//! life). It is already short-lived, so it is handed out as a BASIC lease
//! (not passthrough).
//!
//! Signed with a stored access key, the token reaches every repository the
//! key can read, so the lease has no granted scope. With a role
//! ([`by_role`]), pullpass first assumes it through STS with an inline
//! session policy that allows image reads on the requested repository's ARN
//! only: the session's permissions are the intersection of the role's and
//! the policy's, so the token pulls that repository and nothing else, and
//! the lease says so.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{StatusCode, Url};

use super::sigv4::{self, SignedRequest};
use super::sts::{self, AwsCredentials, Proof, RoleRequest};
use super::{Exchange, Failure, Upstream, failure_of, retry_after};
use crate::domain::credential::AwsRole;
use crate::domain::{Accept, Grant, Lease, LeaseSecret, Timestamp};
use crate::providers::ecr::ecr_region;
use crate::secret::SecretBytes;

const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The API endpoint for a region.
fn endpoint(upstream: &Upstream, region: &str, registry_host: &str) -> String {
    match &upstream.config().ecr_endpoint {
        Some(template) => template.replace("{region}", region),
        None if registry_host.ends_with(".amazonaws.com.cn") => format!("https://api.ecr.{region}.amazonaws.com.cn/"),
        None => format!("https://api.ecr.{region}.amazonaws.com/"),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    authorization_data: Vec<AuthorizationData>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorizationData {
    authorization_token: String,
    expires_at: Option<f64>,
}

#[derive(serde::Deserialize)]
struct AwsError {
    #[serde(rename = "__type")]
    kind: Option<String>,
}

/// The shortest session STS grants, and what pullpass asks for: the lease
/// needs no more (the cache fetches a new one when it runs low).
pub const SESSION: std::time::Duration = std::time::Duration::from_secs(900);

/// Runs `GetAuthorizationToken` with the credential's access key.
pub async fn authorization_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    secret: &SecretBytes,
) -> Result<Lease, Failure> {
    let credential = exchange.credential;
    let key = AwsCredentials {
        access_key_id: credential.username.clone(),
        secret_access_key: secret.clone(),
        session_token: None,
        expiration: None,
    };
    get_authorization_token(upstream, exchange, &key).await
}

/// Assumes the credential's role narrowed to the requested repository, then
/// runs `GetAuthorizationToken` as that session. The role is assumed with
/// pullpass's issuer token (`web_identity`), the credential's access key,
/// or pullpass's own AWS identity, in that order of preference.
pub async fn by_role(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    role: &AwsRole,
    secret: &SecretBytes,
) -> Result<Lease, Failure> {
    refuse_bearer_only(exchange)?;
    let credential = exchange.credential;
    let host = credential.registry.host().as_str();
    let region = ecr_region(host).ok_or_else(|| Failure::Misconfigured(format!("`{host}` is not an ECR registry")))?;
    let pull = pullpass::scope::Scope::new(exchange.scope.repository(), ["pull".to_owned()]);
    let granted = exchange.scope.intersect(&pull);
    if granted.is_empty() {
        return Err(Failure::NoAccess);
    }
    let policy = session_policy(&role.role_arn, host, region, exchange.scope.repository());
    let session_name = sts::session_name(credential.name.workspace.as_str(), credential.name.credential.as_str());
    let china = host.ends_with(".amazonaws.com.cn");
    let own_identity = !role.web_identity && !credential.secret_set();
    // With pullpass's own identity, a tenant must not be able to assume a
    // role set up for another: the operator lists the roles it may assume,
    // and the external id is pullpass's, naming the workspace (the
    // confused-deputy guard a role's trust policy checks).
    let own_external_id = format!("pullpass:{}", credential.name.workspace.as_str());
    let external_id = if own_identity {
        allow_own_identity_role(upstream, &role.role_arn)?;
        if !role.external_id.is_empty() && role.external_id != own_external_id {
            return Err(Failure::Misconfigured(format!(
                "with pullpass's own AWS identity the external id is set by pullpass: `{own_external_id}` (leave external_id empty)"
            )));
        }
        own_external_id.as_str()
    } else {
        role.external_id.as_str()
    };
    let request = RoleRequest {
        role_arn: &role.role_arn,
        session_name: &session_name,
        policy: Some(&policy),
        duration: SESSION,
        external_id,
        region,
        china,
    };
    let session = if role.web_identity {
        let token = upstream.federation_token(credential, AWS_AUDIENCE).await?;
        sts::assume_role(upstream, &request, Proof::WebIdentity(&token), exchange.deadline).await
    } else if credential.secret_set() {
        let key = AwsCredentials {
            access_key_id: credential.username.clone(),
            secret_access_key: secret.clone(),
            session_token: None,
            expiration: None,
        };
        sts::assume_role(upstream, &request, Proof::Signed(&key), exchange.deadline).await
    } else {
        let own = upstream.aws_identity().credentials(upstream, region, exchange.deadline).await?;
        sts::assume_role(upstream, &request, Proof::Signed(&own), exchange.deadline).await
    }
    .map_err(|failure| match failure {
        Failure::Rejected(why) => Failure::Rejected(format!("the role was not assumed: {why}")),
        other => other,
    })?;
    let mut lease = get_authorization_token(upstream, exchange, &session).await?;
    if let Some(end) = session.expiration {
        lease.expire_time = lease.expire_time.min(end);
    }
    lease.granted = Some(granted);
    Ok(lease)
}

/// Is `role_arn` one the operator lets pullpass's own identity assume
/// (`--aws-own-identity-role`, `*` at the end matching any rest)?
fn allow_own_identity_role(upstream: &Upstream, role_arn: &str) -> Result<(), Failure> {
    let allowed = &upstream.config().aws.own_identity_roles;
    let matches = allowed.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => role_arn.starts_with(prefix),
        None => role_arn == pattern,
    });
    if matches {
        return Ok(());
    }
    Err(Failure::Misconfigured(format!(
        "pullpass's own AWS identity assumes only roles the operator allows (--aws-own-identity-role), and `{role_arn}` is not one; use web_identity, or an access key"
    )))
}

/// The `aud` of the token pullpass presents to STS (what an IAM OIDC
/// provider's client id list names by default).
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";

/// The inline session policy: image reads on one repository, and the
/// token call (which has no resource).
pub fn session_policy(role_arn: &str, host: &str, region: &str, repository: &str) -> String {
    let partition = role_arn.split(':').nth(1).filter(|p| p.starts_with("aws")).unwrap_or("aws");
    let account = host.split('.').next().unwrap_or_default();
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": format!("arn:{partition}:ecr:{region}:{account}:repository/{repository}"),
            },
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        ],
    });
    policy.to_string()
}

fn refuse_bearer_only(exchange: Exchange<'_>) -> Result<(), Failure> {
    if exchange.accept == Accept::BearerOnly {
        return Err(Failure::FormUnavailable(
            "ECR issues a username and password, and the caller accepts only bearer tokens".into(),
        ));
    }
    Ok(())
}

/// `GetAuthorizationToken`, signed with `key` (and its session token).
async fn get_authorization_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    key: &AwsCredentials,
) -> Result<Lease, Failure> {
    refuse_bearer_only(exchange)?;
    let credential = exchange.credential;
    let host = credential.registry.host().as_str();
    let region = ecr_region(host).ok_or_else(|| Failure::Misconfigured(format!("`{host}` is not an ECR registry")))?;
    let url = Url::parse(&endpoint(upstream, region, host))
        .map_err(|_| Failure::Misconfigured("the ECR endpoint is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let api_host = sts::authority(&url);
    let amz_date = sigv4::amz_date(Timestamp::now());
    let body = b"{}";
    let mut signed_headers = vec![("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)];
    if let Some(token) = key.token() {
        signed_headers.push(("x-amz-security-token", token));
    }
    let authorization = zeroize::Zeroizing::new(sigv4::authorization(
        &SignedRequest { method: "POST", path: url.path(), host: &api_host, headers: &signed_headers, body },
        key.key()?,
        region,
        "ecr",
        &amz_date,
    ));
    // The ECR API is a cloud endpoint: public roots only.
    let client = upstream.http().client_for("").map_err(Failure::Misconfigured)?;
    let reply = upstream
        .http()
        .send(
            crate::metrics::UpstreamKind::Ecr,
            || {
                let request = client
                    .post(url.clone())
                    .header("content-type", CONTENT_TYPE)
                    .header("x-amz-target", TARGET)
                    .header("x-amz-date", &amz_date)
                    .header("authorization", authorization.as_str())
                    .body(body.as_slice());
                match key.token() {
                    Some(token) => request.header("x-amz-security-token", token),
                    None => request,
                }
            },
            exchange.deadline,
        )
        .await?;
    if reply.status == StatusCode::TOO_MANY_REQUESTS || reply.status.is_server_error() {
        return Err(failure_of(&reply, "the ECR API"));
    }
    if !reply.status.is_success() {
        let kind = serde_json::from_slice::<AwsError>(&reply.body).ok().and_then(|e| e.kind).unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or_default().to_owned();
        return Err(match kind.as_str() {
            "ThrottlingException" => Failure::RateLimited(retry_after(&reply)),
            _ if reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::FORBIDDEN => {
                Failure::Rejected(format!("the ECR API answered {} {kind}", reply.status))
            }
            _ => Failure::Protocol(format!("the ECR API answered {} {kind}", reply.status)),
        });
    }
    let parsed: Response = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::Protocol("the ECR API's answer is not the expected JSON".into()))?;
    let data = parsed
        .authorization_data
        .into_iter()
        .next()
        .ok_or_else(|| Failure::Protocol("the ECR API returned no authorization data".into()))?;
    let decoded = zeroize::Zeroizing::new(
        STANDARD
            .decode(data.authorization_token.trim())
            .map_err(|_| Failure::Protocol("the ECR authorization token is not base64".into()))?,
    );
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| Failure::Protocol("the ECR authorization token is not text".into()))?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| Failure::Protocol("the ECR authorization token is not user:password".into()))?;
    let now = Timestamp::now();
    let expire_time = data
        .expires_at
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Timestamp::from_micros((s * 1_000_000.0) as i64))
        .unwrap_or(now.plus(std::time::Duration::from_secs(12 * 3600)));
    Ok(Lease {
        grant: Grant::Basic { username: username.to_owned(), password: LeaseSecret::new(password.to_owned()) },
        registry: exchange.endpoint.to_owned(),
        requested: exchange.scope.clone(),
        granted: None,
        issue_time: now,
        expire_time,
        credential: credential.name.clone(),
    })
}
