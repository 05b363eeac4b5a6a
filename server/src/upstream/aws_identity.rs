//! pullpass's own AWS identity: the standard credential chain the AWS SDKs
//! use, in their order, for ECR credentials that assume a role without
//! storing a key:
//! 1. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!    `AWS_SESSION_TOKEN`;
//! 2. a web identity token file (IRSA, EKS Pod Identity's predecessor):
//!    `AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`
//!    (`AssumeRoleWithWebIdentity`);
//! 3. the ECS container endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
//!    (on 169.254.170.2) or `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`;
//! 4. EC2 instance metadata (IMDSv2: a session token first), at
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT` or 169.254.169.254, unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! The metadata addresses are reached *only* here, with a client of this
//! module's own: the registry client (`upstream::http`) refuses them, so no
//! registry realm can point pullpass at them. The environment is read once,
//! at start-up ([`AwsEnvironment::from_env`]); credentials are kept until
//! five minutes before they expire.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Client;

use super::sts::{self, AwsCredentials, Proof, RoleRequest};
use super::{Failure, Upstream};
use crate::domain::Timestamp;
use crate::secret::SecretBytes;

/// The ECS container credentials host.
const ECS_HOST: &str = "http://169.254.170.2";
/// The EC2 instance metadata endpoint.
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Credentials are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The AWS settings of the environment pullpass runs in (read once).
#[derive(Clone, Default)]
pub struct AwsEnvironment {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<SecretBytes>,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<SecretBytes>,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`.
    pub web_identity_token_file: Option<String>,
    /// `AWS_ROLE_ARN`.
    pub role_arn: Option<String>,
    /// `AWS_ROLE_SESSION_NAME`.
    pub role_session_name: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
    pub container_relative_uri: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub container_full_uri: Option<String>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    pub container_token: Option<SecretBytes>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    pub container_token_file: Option<String>,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub imds_endpoint: Option<String>,
    /// `AWS_EC2_METADATA_DISABLED=true`.
    pub imds_disabled: bool,
    /// `AWS_REGION` or `AWS_DEFAULT_REGION` (for the web identity file's STS).
    pub region: Option<String>,
}

impl std::fmt::Debug for AwsEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEnvironment")
            .field("access_key_id", &self.access_key_id)
            .field("web_identity_token_file", &self.web_identity_token_file)
            .field("role_arn", &self.role_arn)
            .field("container_full_uri", &self.container_full_uri.is_some())
            .field("imds_disabled", &self.imds_disabled)
            .finish_non_exhaustive()
    }
}

impl AwsEnvironment {
    /// Reads the variables.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let secret = |name: &str| var(name).map(SecretBytes::from_string);
        Self {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: secret("AWS_SECRET_ACCESS_KEY"),
            session_token: secret("AWS_SESSION_TOKEN"),
            web_identity_token_file: var("AWS_WEB_IDENTITY_TOKEN_FILE"),
            role_arn: var("AWS_ROLE_ARN"),
            role_session_name: var("AWS_ROLE_SESSION_NAME"),
            container_relative_uri: var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            container_full_uri: var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            container_token: secret("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            container_token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            imds_endpoint: var("AWS_EC2_METADATA_SERVICE_ENDPOINT"),
            imds_disabled: var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
        }
    }
}

/// The chain, with the credentials it last found.
pub struct AwsIdentity {
    environment: AwsEnvironment,
    metadata: Client,
    cached: Mutex<Option<AwsCredentials>>,
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AwsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsIdentity").field("environment", &self.environment).finish_non_exhaustive()
    }
}

impl AwsIdentity {
    /// The chain over `environment`.
    pub fn new(environment: AwsEnvironment) -> Result<Self, String> {
        let metadata = super::http::metadata_client()?;
        Ok(Self { environment, metadata, cached: Mutex::new(None), fetching: tokio::sync::Mutex::new(()) })
    }

    /// pullpass's own credentials, from the first link of the chain that
    /// has them.
    pub async fn credentials(
        &self,
        upstream: &Upstream,
        region: &str,
        deadline: Instant,
    ) -> Result<AwsCredentials, Failure> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _one = self.fetching.lock().await;
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let found = self.find(upstream, region, deadline).await?;
        if found.expiration.is_some() {
            *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(found.clone());
        }
        Ok(found)
    }

    fn fresh(&self) -> Option<AwsCredentials> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .as_ref()
            .filter(|c| c.expiration.is_some_and(|e| e.saturating_since(Timestamp::now()) > RENEW_BEFORE))
            .cloned()
    }

    async fn find(&self, upstream: &Upstream, region: &str, deadline: Instant) -> Result<AwsCredentials, Failure> {
        let env = &self.environment;
        if let (Some(id), Some(secret)) = (&env.access_key_id, &env.secret_access_key) {
            return Ok(AwsCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: env.session_token.clone(),
                expiration: None,
            });
        }
        if let (Some(file), Some(role_arn)) = (&env.web_identity_token_file, &env.role_arn) {
            let token = tokio::fs::read(file).await.map_err(|e| {
                Failure::Misconfigured(format!(
                    "pullpass's own AWS identity: cannot read AWS_WEB_IDENTITY_TOKEN_FILE: {e}"
                ))
            })?;
            let token = SecretBytes::new(token.trim_ascii().to_vec());
            let session = env.role_session_name.clone().unwrap_or_else(|| "pullpass".to_owned());
            // The web identity role is pullpass's own: no session policy
            // narrows it (the registry role assumed next is narrowed). Its
            // region and partition are the environment's (AWS_REGION).
            let region = env.region.as_deref().unwrap_or(region);
            let request = RoleRequest {
                role_arn,
                session_name: &session,
                policy: None,
                duration: Duration::from_secs(3600),
                external_id: "",
                region,
                china: region.starts_with("cn-"),
            };
            return sts::assume_role(upstream, &request, Proof::WebIdentity(&token), deadline).await;
        }
        let container = match (&env.container_relative_uri, &env.container_full_uri) {
            (Some(relative), _) => Some(format!("{ECS_HOST}{relative}")),
            (None, Some(full)) => Some(full.clone()),
            (None, None) => None,
        };
        if let Some(url) = container {
            let token = match (&env.container_token_file, &env.container_token) {
                (Some(file), _) => Some(SecretBytes::new(
                    tokio::fs::read(file)
                        .await
                        .map_err(|e| {
                            Failure::Misconfigured(format!(
                                "pullpass's own AWS identity: cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: {e}"
                            ))
                        })?
                        .trim_ascii()
                        .to_vec(),
                )),
                (None, token) => token.clone(),
            };
            let reply = self
                .get(
                    upstream,
                    &url,
                    token.as_ref().and_then(|t| t.expose_str()).map(|t| ("authorization", t)),
                    deadline,
                )
                .await?;
            return parse_json_credentials(&reply, "the ECS container credentials endpoint");
        }
        if env.imds_disabled {
            return Err(Failure::Misconfigured(
                "pullpass has no AWS identity of its own: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or run on ECS or EC2 (instance metadata is disabled)".into(),
            ));
        }
        self.instance_metadata(upstream, deadline).await
    }

    async fn instance_metadata(&self, upstream: &Upstream, deadline: Instant) -> Result<AwsCredentials, Failure> {
        let base = self.environment.imds_endpoint.clone().unwrap_or_else(|| IMDS_ENDPOINT.to_owned());
        let base = base.trim_end_matches('/');
        let no_identity = |why: String| {
            Failure::Misconfigured(format!(
                "pullpass has no AWS identity of its own (no AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE or ECS endpoint, and EC2 instance metadata: {why})"
            ))
        };
        let url = format!("{base}/latest/api/token");
        let token = upstream
            .http()
            .send(
                crate::metrics::UpstreamKind::AwsMetadata,
                || self.metadata.put(&url).header("x-aws-ec2-metadata-token-ttl-seconds", "300"),
                deadline,
            )
            .await
            .map_err(|e| no_identity(e.to_string()))?;
        if !token.status.is_success() {
            return Err(no_identity(format!("the session token request answered {}", token.status)));
        }
        let session = SecretBytes::new(token.body);
        let session = session.expose_str().unwrap_or_default();
        let header = Some(("x-aws-ec2-metadata-token", session));
        let roles =
            self.get(upstream, &format!("{base}/latest/meta-data/iam/security-credentials/"), header, deadline).await?;
        let role = std::str::from_utf8(&roles)
            .ok()
            .and_then(|text| text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned))
            .ok_or_else(|| no_identity("the instance has no IAM role".into()))?;
        if !role.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)) {
            return Err(Failure::Protocol("instance metadata named a role outside IAM's alphabet".into()));
        }
        let reply = self
            .get(upstream, &format!("{base}/latest/meta-data/iam/security-credentials/{role}"), header, deadline)
            .await?;
        parse_json_credentials(&reply, "EC2 instance metadata")
    }

    async fn get(
        &self,
        upstream: &Upstream,
        url: &str,
        header: Option<(&str, &str)>,
        deadline: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let reply = upstream
            .http()
            .send(
                crate::metrics::UpstreamKind::AwsMetadata,
                || {
                    let request = self.metadata.get(url);
                    match header {
                        Some((name, value)) => request.header(name, value),
                        None => request,
                    }
                },
                deadline,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(Failure::Rejected(format!("pullpass's own AWS identity: metadata answered {}", reply.status)));
        }
        Ok(reply.body)
    }
}

/// The JSON both metadata services answer.
fn parse_json_credentials(body: &[u8], source: &str) -> Result<AwsCredentials, Failure> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: String,
        secret_access_key: String,
        #[serde(alias = "Token")]
        session_token: Option<String>,
        expiration: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| Failure::Protocol(format!("{source} answered credentials that are not the expected JSON")))?;
    let secret_access_key = SecretBytes::from_string(answer.secret_access_key);
    Ok(AwsCredentials {
        access_key_id: answer.access_key_id,
        secret_access_key,
        session_token: answer.session_token.map(SecretBytes::from_string),
        expiration: answer.expiration.as_deref().and_then(Timestamp::parse_rfc3339),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_metadata_answers_parse_and_debug_hides_the_secrets() {
        let ecs = br#"{"AccessKeyId":"ASIAECS","SecretAccessKey":"s3cret-ecs","Token":"tok-ecs","Expiration":"2026-12-07T23:00:00Z","RoleArn":"arn:aws:iam::1:role/x"}"#;
        let parsed = parse_json_credentials(ecs, "ecs").unwrap();
        assert_eq!(parsed.access_key_id, "ASIAECS");
        assert_eq!(parsed.token(), Some("tok-ecs"));
        assert!(parsed.expiration.is_some());
        let debug = format!("{parsed:?}");
        assert!(!debug.contains("s3cret-ecs") && !debug.contains("tok-ecs"), "{debug}");
        let imds = br#"{"Code":"Success","AccessKeyId":"ASIAIMDS","SecretAccessKey":"x","Token":"t","Expiration":"2026-12-07T23:00:00Z"}"#;
        assert_eq!(parse_json_credentials(imds, "imds").unwrap().access_key_id, "ASIAIMDS");
        assert!(parse_json_credentials(b"{}", "imds").is_err());
    }
}
