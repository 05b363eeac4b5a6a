//! Talking to registries: turning a stored secret into short-lived auth.
//!
//! One entry point, [`Upstream::exchange`], and one flow per provider kind:
//! * [`token_flow`]: the distribution token flow (Docker Hub, GHCR, GitLab,
//!   Quay, generic registries), and passthrough for Basic-only registries;
//! * [`google`]: service-account JWT → OAuth access token → registry token;
//! * [`ecr`]: SigV4-signed `GetAuthorizationToken` ([`sigv4`]), with an
//!   access key or a role assumed through [`sts`] and narrowed to one
//!   repository (as pullpass's issuer, with a key, or as pullpass's own AWS
//!   identity: [`aws_identity`]).
//!
//! Flows that federate ask [`FederationTokens`] (pullpass's OIDC issuer,
//! `crate::issuer`) for a JWT naming the credential; it goes only to the
//! cloud endpoint that exchanges it.
//!
//! [`content`] reads manifests, blobs and tag lists with an issued lease,
//! for the pull gateway.
//!
//! Every URL a secret goes to passes the [`realm`] policy first; [`http`]
//! never follows redirects. Failures come back as [`Failure`], which names
//! what went wrong upstream but never a secret.
//!
//! This module knows nothing of gRPC, SQL or the lease cache.

pub mod acr;
pub mod aws_identity;
pub mod budget;
pub mod challenge;
pub mod content;
pub mod ecr;
pub mod expiry;
pub mod google;
pub mod http;
pub mod quay;
pub mod realm;
pub mod sessions;
pub mod sigv4;
pub mod sts;
pub mod token_flow;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pullpass::reason;
use pullpass::scope::Scope;

use crate::domain::credential::{FailureReason, ProviderSettings};
use crate::domain::{Accept, Credential, CredentialName, CredentialUid, Lease, Provider};
use crate::error::Error;
use crate::secret::SecretBytes;
use http::{Http, HttpFailure};
use realm::{RealmPolicy, Refusal};

/// Server-wide settings of the upstream flows.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Hosts reachable over plain http, and the rest of the realm policy.
    pub realm: RealmPolicy,
    /// Google token URIs a service-account key may name.
    pub google_token_uris: Vec<String>,
    /// ECR API endpoint override (`{region}` is replaced); default
    /// `https://api.ecr.{region}.amazonaws.com`.
    pub ecr_endpoint: Option<String>,
    /// Lifetime announced for passthrough leases.
    pub passthrough_ttl: Duration,
    /// AWS endpoints and pullpass's own AWS identity.
    pub aws: AwsConfig,
    /// Entra and Google endpoints (operator configuration, never caller
    /// input).
    pub clouds: CloudEndpoints,
}

/// Entra ID's default authority host.
pub const DEFAULT_ENTRA_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// Google STS's token endpoint.
pub const DEFAULT_GOOGLE_STS: &str = "https://sts.googleapis.com/v1/token";
/// Google IAM Credentials' base URL.
pub const DEFAULT_GOOGLE_IAM_CREDENTIALS: &str = "https://iamcredentials.googleapis.com";

/// Where the Entra and Google token services are (flags, for sovereign
/// clouds and tests).
#[derive(Debug, Clone)]
pub struct CloudEndpoints {
    /// `https://login.microsoftonline.com`, without a trailing slash.
    pub entra_authority_host: String,
    /// `https://sts.googleapis.com/v1/token`.
    pub google_sts: String,
    /// `https://iamcredentials.googleapis.com`, without a trailing slash.
    pub google_iam_credentials: String,
    /// GitHub's REST API, asked when a GHCR (ghcr.io) token expires; None
    /// for `https://api.github.com`.
    pub github_api: Option<String>,
    /// GitLab instances asked when a GITLAB token expires (each
    /// credential's token only to the one its registry is on; see
    /// `upstream::expiry`).
    pub gitlab_apis: Vec<String>,
}

impl Default for CloudEndpoints {
    fn default() -> Self {
        Self {
            entra_authority_host: DEFAULT_ENTRA_AUTHORITY_HOST.into(),
            google_sts: DEFAULT_GOOGLE_STS.into(),
            google_iam_credentials: DEFAULT_GOOGLE_IAM_CREDENTIALS.into(),
            github_api: None,
            gitlab_apis: vec![expiry::GITLAB_API.to_owned()],
        }
    }
}

/// AWS settings: the operator's endpoints (the AWS SDKs' standard
/// `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL`) and the environment
/// pullpass's own identity comes from.
#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    /// STS endpoint override; default `https://sts.{region}.amazonaws.com/`.
    pub sts_endpoint: Option<String>,
    /// Where pullpass's own AWS credentials come from.
    pub environment: aws_identity::AwsEnvironment,
    /// Role ARNs (a trailing `*` matches any rest) credentials may assume
    /// with pullpass's own identity; none by default.
    pub own_identity_roles: Vec<String>,
}

/// Tokens from pullpass's own OIDC issuer, for the flows that federate.
#[async_trait::async_trait]
pub trait FederationTokens: Send + Sync + std::fmt::Debug {
    /// A short-lived JWT with `sub` = the credential's name, its uid in
    /// `pullpass_credential_uid`, and `aud` = `audience`.
    async fn token(&self, credential: &Credential, audience: &str) -> Result<SecretBytes, Error>;
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            realm: RealmPolicy::default(),
            google_token_uris: vec![google::DEFAULT_TOKEN_URI.to_owned()],
            ecr_endpoint: None,
            passthrough_ttl: Duration::from_secs(300),
            aws: AwsConfig::default(),
            clouds: CloudEndpoints::default(),
        }
    }
}

/// What an exchange is for.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The credential (metadata).
    pub credential: &'a Credential,
    /// The registry API host to present auth to (`registry-1.docker.io`).
    pub endpoint: &'a str,
    /// The scope asked for.
    pub scope: &'a Scope,
    /// The forms the caller can use.
    pub accept: Accept,
    /// When the caller stops waiting.
    pub deadline: Instant,
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The registry, realm or API could not be reached or failed.
    Unavailable(String),
    /// The realm or API refused the secret (401/403 or equivalent).
    Rejected(String),
    /// The registry accepted the secret but granted nothing on the repository.
    NoAccess,
    /// 429: not before `retry_after`.
    RateLimited(Duration),
    /// The realm policy refused to send the secret.
    Refused(Refusal),
    /// The realm answered with a redirect, which is not followed.
    Redirected(String),
    /// `GET /v2/` answered 200: the registry needs no auth.
    NoAuthNeeded,
    /// Basic-only registry (or a basic-only caller) without passthrough.
    PassthroughNotAllowed(String),
    /// The caller accepts only a form this registry cannot give.
    FormUnavailable(String),
    /// An answer that does not follow the protocol.
    Protocol(String),
    /// A configuration problem on this server or credential.
    Misconfigured(String),
    /// The deadline passed.
    Deadline,
}

impl Failure {
    /// The typed reason a credential's health records, or None for a
    /// failure that says nothing about the credential (the caller asked for
    /// a form or a passthrough it cannot have, or the registry needs no
    /// auth).
    pub fn reason(&self) -> Option<FailureReason> {
        Some(match self {
            Failure::Unavailable(_) | Failure::Protocol(_) => FailureReason::Unavailable,
            Failure::Rejected(_) => FailureReason::Rejected,
            Failure::NoAccess => FailureReason::NoAccess,
            Failure::RateLimited(_) => FailureReason::RateLimited,
            Failure::Refused(_) | Failure::Redirected(_) => FailureReason::RealmRefused,
            Failure::Misconfigured(_) => FailureReason::Misconfigured,
            Failure::Deadline => FailureReason::Timeout,
            Failure::NoAuthNeeded | Failure::PassthroughNotAllowed(_) | Failure::FormUnavailable(_) => return None,
        })
    }

    /// The domain error, naming the credential and registry.
    pub fn into_error(self, credential: &CredentialName, registry: &str) -> Error {
        match self {
            Failure::Unavailable(what) => Error::Unavailable {
                reason: reason::UPSTREAM_UNAVAILABLE,
                message: format!("registry {registry} is unavailable: {what}"),
                retry_after: None,
            },
            Failure::Rejected(what) => Error::PermissionDenied {
                reason: reason::UPSTREAM_REJECTED_CREDENTIAL,
                message: format!("registry {registry} rejected credential {credential}: {what}"),
            },
            Failure::NoAccess => Error::PermissionDenied {
                reason: reason::UPSTREAM_REJECTED_CREDENTIAL,
                message: format!(
                    "registry {registry} granted credential {credential} no access to the requested repository"
                ),
            },
            Failure::RateLimited(retry_after) => Error::ResourceExhausted {
                reason: reason::UPSTREAM_RATE_LIMITED,
                message: format!("registry {registry} is rate limiting (retry in {} s)", retry_after.as_secs().max(1)),
                retry_after,
            },
            Failure::Refused(refusal) => Error::FailedPrecondition {
                reason: reason::REALM_NOT_ALLOWED,
                message: format!("not sending credential {credential} for registry {registry}: {refusal}"),
            },
            Failure::Redirected(origin) => Error::FailedPrecondition {
                reason: reason::REALM_NOT_ALLOWED,
                message: format!(
                    "the token realm of registry {registry} redirected to {origin}; pullpass never follows redirects with credentials (allow the final realm instead)"
                ),
            },
            Failure::NoAuthNeeded => Error::FailedPrecondition {
                reason: "UPSTREAM_NEEDS_NO_AUTH",
                message: format!(
                    "registry {registry} requires no authentication (GET /v2/ answered 200): pull without credentials"
                ),
            },
            Failure::PassthroughNotAllowed(why) => Error::FailedPrecondition {
                reason: reason::PASSTHROUGH_NOT_ALLOWED,
                message: format!(
                    "{why}; handing out the stored secret of {credential} is not allowed. To allow it, set allow_passthrough on the credential (UpdateCredential with update_mask allow_passthrough)"
                ),
            },
            Failure::FormUnavailable(why) => {
                Error::FailedPrecondition { reason: "AUTH_FORM_UNAVAILABLE", message: why }
            }
            Failure::Protocol(what) => Error::Unavailable {
                reason: reason::UPSTREAM_UNAVAILABLE,
                message: format!("registry {registry} answered outside the protocol: {what}"),
                retry_after: None,
            },
            Failure::Misconfigured(what) => Error::FailedPrecondition {
                reason: "CREDENTIAL_MISCONFIGURED",
                message: format!("credential {credential}: {what}"),
            },
            Failure::Deadline => Error::Unavailable {
                reason: reason::UPSTREAM_UNAVAILABLE,
                message: format!("registry {registry} did not answer before the deadline"),
                retry_after: None,
            },
        }
    }
}

impl From<HttpFailure> for Failure {
    fn from(failure: HttpFailure) -> Self {
        match failure {
            HttpFailure::Deadline => Failure::Deadline,
            HttpFailure::Transport(what) | HttpFailure::Shed(what) | HttpFailure::Certificate(what) => {
                Failure::Unavailable(what)
            }
            HttpFailure::TooLarge(limit) => Failure::Protocol(format!("the response is larger than {limit} bytes")),
        }
    }
}

/// The upstream side of the broker.
#[derive(Debug)]
pub struct Upstream {
    config: UpstreamConfig,
    http: Http,
    challenges: Mutex<HashMap<String, (token_flow::AuthScheme, Instant)>>,
    /// `Retry-After` deadlines by (credential, registry endpoint): one
    /// tenant's rate limit does not block the others.
    not_before: Mutex<HashMap<(CredentialUid, String), Instant>>,
    google_tokens: google::AccessTokenCache,
    aws_identity: aws_identity::AwsIdentity,
    federation: Option<std::sync::Arc<dyn FederationTokens>>,
    sessions: sessions::Sessions,
}

/// How long a registry's `/v2/` challenge is remembered.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);

impl Upstream {
    /// Upstream access with `config`.
    pub fn new(config: UpstreamConfig) -> Result<Self, String> {
        Ok(Self {
            http: Http::new()?,
            challenges: Mutex::default(),
            not_before: Mutex::default(),
            google_tokens: google::AccessTokenCache::default(),
            aws_identity: aws_identity::AwsIdentity::new(config.aws.environment.clone())?,
            config,
            federation: None,
            sessions: sessions::Sessions::default(),
        })
    }

    /// The federating flows' intermediate tokens.
    pub fn sessions(&self) -> &sessions::Sessions {
        &self.sessions
    }

    /// Federating flows get their tokens from `issuer`.
    pub fn with_federation(mut self, issuer: Option<std::sync::Arc<dyn FederationTokens>>) -> Self {
        self.federation = issuer;
        self
    }

    /// pullpass's own AWS identity.
    pub fn aws_identity(&self) -> &aws_identity::AwsIdentity {
        &self.aws_identity
    }

    /// A token from pullpass's issuer for `credential`, or why there is none.
    pub async fn federation_token(&self, credential: &Credential, audience: &str) -> Result<SecretBytes, Failure> {
        let issuer = self.federation.as_ref().ok_or_else(|| {
            Failure::Misconfigured(
                "federates with pullpass's own OIDC issuer, and this server has none: start it with --issuer-url"
                    .into(),
            )
        })?;
        issuer.token(credential, audience).await.map_err(|e| Failure::Misconfigured(format!("the issuer: {e}")))
    }

    /// The settings.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Exchanges `secret` for short-lived auth, by the credential's provider.
    pub async fn exchange(&self, exchange: Exchange<'_>, secret: &SecretBytes) -> Result<Lease, Failure> {
        tracing::Instrument::instrument(
            self.exchange_now(exchange, secret),
            crate::telemetry::child("upstream.exchange"),
        )
        .await
    }

    async fn exchange_now(&self, exchange: Exchange<'_>, secret: &SecretBytes) -> Result<Lease, Failure> {
        let limit_key = (exchange.credential.uid, exchange.endpoint.to_owned());
        if let Err(held) = self.check_rate_limit(&limit_key) {
            crate::metrics::upstream_held_back();
            return Err(held);
        }
        let result = match exchange.credential.provider {
            Provider::Ecr => match &exchange.credential.settings {
                ProviderSettings::AwsRole(role) => ecr::by_role(self, exchange, role, secret).await,
                _ => ecr::authorization_token(self, exchange, secret).await,
            },
            Provider::Acr => match &exchange.credential.settings {
                ProviderSettings::Azure(azure) => acr::exchange(self, exchange, azure, secret).await,
                _ => Err(Failure::Misconfigured("an ACR credential needs its app registration (azure)".into())),
            },
            Provider::Google => match &exchange.credential.settings {
                ProviderSettings::GoogleFederation(federation) => google::federated(self, exchange, federation).await,
                _ => google::exchange(self, exchange, secret).await,
            },
            Provider::DockerHub | Provider::Ghcr | Provider::Gitlab | Provider::Quay | Provider::Generic => {
                match &exchange.credential.settings {
                    ProviderSettings::QuayRobot(federation) => quay::federated(self, exchange, federation).await,
                    _ => {
                        let password = secret
                            .expose_str()
                            .ok_or_else(|| Failure::Misconfigured("the stored secret is not UTF-8".into()))?;
                        token_flow::issue(self, exchange, &exchange.credential.username, password).await
                    }
                }
            }
        };
        if let Err(Failure::RateLimited(retry_after)) = &result {
            crate::metrics::upstream_rate_limited(match exchange.credential.provider {
                Provider::Ecr => crate::metrics::UpstreamKind::Ecr,
                Provider::Google => crate::metrics::UpstreamKind::Google,
                _ => crate::metrics::UpstreamKind::Token,
            });
            let mut map = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if map.len() > 10_000 {
                map.retain(|_, until| *until > now);
            }
            map.insert(limit_key, now + *retry_after);
        }
        result
    }

    /// Refuses at once while a registry's `Retry-After` has not passed.
    fn check_rate_limit(&self, key: &(CredentialUid, String)) -> Result<(), Failure> {
        let mut map = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(until) if *until > Instant::now() => Err(Failure::RateLimited(*until - Instant::now())),
            Some(_) => {
                map.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn http(&self) -> &Http {
        &self.http
    }

    fn cached_challenge(&self, base: &str) -> Option<token_flow::AuthScheme> {
        let map = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        map.get(base).filter(|(_, at)| at.elapsed() < CHALLENGE_TTL).map(|(scheme, _)| scheme.clone())
    }

    fn remember_challenge(&self, base: &str, scheme: token_flow::AuthScheme) {
        let mut map = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(base.to_owned(), (scheme, Instant::now()));
    }

    fn forget_challenge(&self, base: &str) {
        self.challenges.lock().unwrap_or_else(|p| p.into_inner()).remove(base);
    }
}

/// One POST to a token endpoint of the federating flows.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    /// What it is, for metrics and spans.
    pub kind: crate::metrics::UpstreamKind,
    /// Where it goes.
    pub url: &'a reqwest::Url,
    /// `application/x-www-form-urlencoded` or `application/json`.
    pub content_type: &'static str,
    /// The body.
    pub body: &'a str,
    /// An `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The roots trusted: a credential's CA bundle for its own registry;
    /// empty (the public roots only) for cloud endpoints.
    pub roots: &'a str,
}

/// Sends `request` before `deadline` (see [`http::Http::send`]).
pub async fn post(upstream: &Upstream, request: Post<'_>, deadline: Instant) -> Result<http::Reply, Failure> {
    let client = upstream.http().client_for(request.roots).map_err(Failure::Misconfigured)?;
    let build = || {
        let sent =
            client.post(request.url.clone()).header("content-type", request.content_type).body(request.body.to_owned());
        match request.authorization {
            Some(value) => sent.header("authorization", value),
            None => sent,
        }
    };
    Ok(upstream.http().send(request.kind, build, deadline).await?)
}

/// What an unsuccessful answer of one step of a federating flow stands
/// for: 400/401/403 refused what was presented (`refused` names the step,
/// as `TestCredential` reports it); 429 and 5xx keep their usual meaning.
pub fn refused(reply: &http::Reply, refused: &str, party: &str) -> Failure {
    use reqwest::StatusCode;
    match reply.status {
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Failure::Rejected(format!("{refused} ({})", reply.status))
        }
        _ => failure_of(reply, party),
    }
}

/// The failure an unsuccessful answer from `party` stands for: 401/403
/// rejected the secret, 429 asks to slow down, 5xx is unavailable, anything
/// else is outside the protocol.
pub fn failure_of(reply: &http::Reply, party: &str) -> Failure {
    use reqwest::StatusCode;
    match reply.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Failure::Rejected(format!("{party} answered {}", reply.status))
        }
        StatusCode::TOO_MANY_REQUESTS => Failure::RateLimited(retry_after(reply)),
        status if status.is_server_error() => Failure::Unavailable(format!("{party} answered {status}")),
        status => Failure::Protocol(format!("{party} answered {status}")),
    }
}

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After`: seconds or an HTTP date, at most a day; 60 s when absent
/// or unreadable.
pub fn retry_after(reply: &http::Reply) -> Duration {
    retry_after_in(&reply.headers)
}

/// `Retry-After` of a header map (see [`retry_after`]).
pub fn retry_after_in(headers: &reqwest::header::HeaderMap) -> Duration {
    let Some(value) = headers.get("retry-after").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned()) else {
        return Duration::from_secs(60);
    };
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        match httpdate::parse_http_date(&value) {
            Ok(at) => at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::from_secs(1)),
            Err(_) => Duration::from_secs(60),
        }
    };
    wait.min(MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::*;

    fn too_many(retry: Option<&str>) -> http::Reply {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        }
        http::Reply { status: StatusCode::TOO_MANY_REQUESTS, headers, body: Vec::new() }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped_at_a_day() {
        assert_eq!(retry_after(&too_many(Some("17"))), Duration::from_secs(17));
        assert_eq!(retry_after(&too_many(None)), Duration::from_secs(60));
        assert_eq!(retry_after(&too_many(Some("soon"))), Duration::from_secs(60));
        assert_eq!(retry_after(&too_many(Some("99999999"))), MAX_RETRY_AFTER);
        assert_eq!(retry_after(&too_many(Some("Fri, 31 Dec 9999 23:59:59 GMT"))), MAX_RETRY_AFTER);
        assert_eq!(retry_after(&too_many(Some("Wed, 21 Oct 2015 07:28:00 GMT"))), Duration::from_secs(1));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let wait = retry_after(&too_many(Some(&soon)));
        assert!(wait > Duration::from_secs(110) && wait <= Duration::from_secs(120), "{wait:?}");
    }
}
