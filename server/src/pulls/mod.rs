//! Pulling through pullpass: the domain side of the pull gateway.
//!
//! Runtimes that take only a username and password cannot use a bearer
//! token, so pullpass serves the registry's content itself. This module
//! decides who may pull what and fetches it; `gateway/` is its HTTP front
//! end and `api/` its gRPC one (for minting gateway passwords). It knows no
//! HTTP server, no gRPC, and no SQL.
//!
//! * [`address`]: how images are named on the gateway (`GW/ghcr.io/…`).
//! * [`digest`]: the digests content is verified against.
//! * [`manifests`]: the manifest cache (by digest; tags briefly).
//! * [`blob`]: a blob streamed from the registry while it is hashed.
//!
//! Every request goes: authenticate the caller (a gateway password, or an
//! access token) → authorize the repository exactly as `IssueRegistryAuth`
//! would (grant, role, project, credential restrictions) → only then look
//! in a cache → only then dial the registry, with the broker's cached and
//! coalesced lease, refreshed once if the registry refuses it.

pub mod address;
pub mod blob;
pub mod digest;
pub mod manifests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pullpass::reference::ImageRef;
use pullpass::registry::RegistryHost;
use pullpass::scope::Action;

use crate::access::gateway_password::{GatewayGrant, GatewayPassword, GatewayPasswords};
use crate::access::policy::{Permission, authorize};
use crate::access::{Authenticator, Principal};
use crate::audit::{Actor, Auditor};
use crate::broker::{Broker, Issued, LeaseRequest, MAX_IMAGES, UpstreamAuth};
use crate::domain::credential::StoredCredential;
use crate::domain::{Accept, ProjectName, Timestamp, WorkspaceId};
use crate::error::Error;
use crate::upstream::content::{ContentRequest, Opened};
use address::Addressing;
use blob::BlobStream;
use digest::Digest;
use manifests::{Key, Manifest, ManifestCache, Origin};

/// The username of gateway leases.
pub const GATEWAY_USERNAME: &str = "pullpass";
/// Largest manifest read from a registry.
pub const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
/// Largest tag list read from a registry.
const MAX_TAGS_BYTES: usize = 8 * 1024 * 1024;
/// Longest a registry may stall in the middle of a blob.
const BLOB_IDLE: Duration = Duration::from_secs(60);
/// Least life of the registry token checked when a gateway lease is issued
/// (the gateway renews it on its own when it runs out).
const GATEWAY_UPSTREAM_MIN_TTL: Duration = Duration::from_secs(30);
/// Largest error body read to learn a registry's error code.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Settings of the gateway's domain side.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// The gateway's public name and aliases.
    pub addressing: Addressing,
    /// Longest life of a gateway password.
    pub password_ttl: Duration,
    /// How long a tag's manifest answer is reused.
    pub tag_ttl: Duration,
}

/// Why a pull fails. The front end turns each into its protocol's error
/// (the distribution error codes); messages never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// No valid credentials.
    Unauthenticated(String),
    /// Valid credentials, but not for this.
    Denied(String),
    /// The repository is not known upstream.
    NameUnknown(String),
    /// The manifest is not known upstream.
    ManifestUnknown(String),
    /// The blob is not known upstream.
    BlobUnknown(String),
    /// A malformed name, tag or digest; `code` is the distribution code.
    Invalid {
        /// `NAME_INVALID`, `TAG_INVALID`, `DIGEST_INVALID`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The registry (or pullpass on its behalf) asks to wait.
    RateLimited {
        /// Who is limiting.
        message: String,
        /// How long.
        retry_after: Duration,
    },
    /// The registry cannot be reached or failed.
    Unavailable(String),
    /// The registry answered something wrong (bytes that do not match their
    /// digest, an oversized manifest, a redirect where none may be).
    BadUpstream(String),
    /// A bug or a broken installation.
    Internal(String),
}

impl PullError {
    /// The gRPC code this outcome is recorded with in the audit trail.
    pub fn audit_code(&self) -> i32 {
        match self {
            Self::Invalid { .. } => 3,
            Self::NameUnknown(_) | Self::ManifestUnknown(_) | Self::BlobUnknown(_) => 5,
            Self::Denied(_) => 7,
            Self::RateLimited { .. } => 8,
            Self::Internal(_) => 13,
            Self::Unavailable(_) | Self::BadUpstream(_) => 14,
            Self::Unauthenticated(_) => 16,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthenticated(m)
            | Self::Denied(m)
            | Self::NameUnknown(m)
            | Self::ManifestUnknown(m)
            | Self::BlobUnknown(m)
            | Self::Unavailable(m)
            | Self::BadUpstream(m)
            | Self::Internal(m) => m,
            Self::Invalid { message, .. } | Self::RateLimited { message, .. } => message,
        }
    }
}

impl From<Error> for PullError {
    fn from(error: Error) -> Self {
        let message = error.message();
        match error {
            Error::Unauthenticated(_) => Self::Unauthenticated(message),
            Error::PermissionDenied { .. }
            | Error::NotFound { .. }
            | Error::NoMatch { .. }
            | Error::FailedPrecondition { .. } => Self::Denied(message),
            Error::InvalidArgument(_) => Self::Invalid { code: "NAME_INVALID", message },
            Error::Unavailable { .. } => Self::Unavailable(message),
            Error::ResourceExhausted { retry_after, .. } => Self::RateLimited { message, retry_after },
            _ => Self::Internal(message),
        }
    }
}

/// Who is pulling, as established by the password they presented.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A gateway password, and the access token that asked for it.
    Password {
        /// What the password allows.
        grant: GatewayGrant,
        /// The token that asked for it (checked now: not revoked, not expired).
        principal: Principal,
    },
    /// An access token used as the password.
    Token {
        /// The token.
        principal: Principal,
        /// The project named by the username, if any.
        project: Option<ProjectName>,
    },
}

impl Caller {
    /// The token behind the call.
    pub fn principal(&self) -> &Principal {
        match self {
            Self::Password { principal, .. } | Self::Token { principal, .. } => principal,
        }
    }

    /// Who the audit trail and logs name: the token, never a secret.
    pub fn name(&self) -> String {
        match self {
            Self::Password { principal, .. } => format!("{} (gateway password)", principal.resource_name),
            Self::Token { principal, .. } => principal.resource_name.clone(),
        }
    }
}

/// An authorized pull of one repository.
#[derive(Debug, Clone)]
pub struct Pull {
    /// The repository (normalized; its tag does not matter).
    pub image: ImageRef,
    /// The credential that serves it.
    pub credential: Arc<StoredCredential>,
    /// Who pulls (for the audit trail).
    pub actor: Actor,
}

impl Pull {
    /// What an upstream failure of this pull stands for (naming the
    /// credential and registry).
    fn upstream_error(&self, failure: crate::upstream::Failure) -> PullError {
        PullError::from(failure.into_error(&self.credential.credential.name, self.image.endpoint()))
    }

    fn origin(&self) -> Origin {
        Origin {
            credential: self.credential.credential.uid,
            secret_version: self.credential.credential.secret_version,
            endpoint: self.image.endpoint().to_owned(),
            repository: self.image.repository().to_owned(),
        }
    }
}

/// What a manifest request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    /// A tag.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl std::fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tag(tag) => f.write_str(tag),
            Self::Digest(digest) => write!(f, "{digest}"),
        }
    }
}

/// A blob answer.
#[derive(Debug)]
pub enum Blob {
    /// The registry redirects (to a CDN): hand the location to the client,
    /// which fetches it without credentials.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// Where.
        location: String,
    },
    /// The registry serves the blob itself.
    Content {
        /// 200, or 206 for a range.
        status: u16,
        /// The registry's content headers (length, type, digest, range).
        headers: HeaderMap,
        /// The body; `None` for HEAD.
        body: Option<BlobStream>,
    },
}

/// A tag list.
#[derive(Debug)]
pub struct Tags {
    /// The registry's JSON, unchanged.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: String,
    /// The registry's `Link` header (the next page), if any.
    pub link: Option<String>,
}

/// What `IssueRegistryAuth` with `via_gateway` answers for one image.
#[derive(Debug, Clone)]
pub struct GatewayLease {
    /// The upstream image, normalized.
    pub image: ImageRef,
    /// The reference to pull from the gateway.
    pub gateway_image: String,
    /// The gateway's public host.
    pub registry: String,
    /// The password (username [`GATEWAY_USERNAME`]); one per request.
    pub password: Arc<GatewayPassword>,
    /// When it was issued.
    pub issue_time: Timestamp,
    /// When it expires.
    pub expire_time: Timestamp,
    /// The upstream lease behind it (its scope and credential; its secret
    /// never leaves the server).
    pub upstream: Issued,
}

/// The pull service.
#[derive(Debug, Clone)]
pub struct Pulls {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: Broker,
    authn: Authenticator,
    passwords: GatewayPasswords,
    settings: PullSettings,
    manifests: ManifestCache,
    auditor: Auditor,
}

impl Pulls {
    /// The service over `broker`, checking callers with `authn` and
    /// `passwords`, recording pulls with `auditor`.
    pub fn new(
        broker: Broker,
        authn: Authenticator,
        passwords: GatewayPasswords,
        settings: PullSettings,
        auditor: Auditor,
    ) -> Self {
        let manifests = ManifestCache::new(settings.tag_ttl);
        Self { inner: Arc::new(Inner { broker, authn, passwords, settings, manifests, auditor }) }
    }

    /// The gateway's addressing.
    pub fn addressing(&self) -> &Addressing {
        &self.inner.settings.addressing
    }

    /// Gateway leases for `request`'s images, asked by `principal` (who was
    /// allowed `IssueRegistryAuth` for its workspace and project). Each image
    /// is handled by the broker as a lease would be (credential choice, an
    /// upstream exchange that checks the credential and warms the cache, an
    /// audit event); the images that succeed share one gateway password.
    /// A `min_ttl` the caller gave applies to the password (the gateway
    /// renews the registry's tokens itself).
    pub async fn issue(
        &self,
        principal: &Principal,
        request: &LeaseRequest,
        min_ttl_given: bool,
    ) -> Result<Vec<Result<GatewayLease, Error>>, Error> {
        let ttl = self.inner.settings.password_ttl;
        if min_ttl_given && request.min_ttl > ttl {
            return Err(Error::invalid(
                "min_ttl",
                format!("gateway passwords live at most {} s on this server (--gateway-password-ttl)", ttl.as_secs()),
            ));
        }
        if request.images.is_empty() {
            return Err(Error::invalid("images", "name at least one image"));
        }
        if request.images.len() > MAX_IMAGES {
            return Err(Error::invalid("images", format!("at most {MAX_IMAGES} images per request")));
        }
        if request.actions.iter().any(|a| *a != Action::Pull) {
            return Err(Error::invalid("actions", "the pull gateway is read-only: via_gateway takes PULL only"));
        }
        let addressing = self.addressing();
        // Each image's upstream reference and its name on the gateway, known
        // before any exchange: an image the gateway cannot name costs the
        // registry nothing. A reference that does not parse goes to the
        // broker as it is, which reports it.
        let mapped: Vec<Result<(String, Option<String>), Error>> = request
            .images
            .iter()
            .enumerate()
            .map(|(position, text)| {
                let field = || format!("images[{position}]");
                let upstream = match ImageRef::parse(text).ok().and_then(|i| addressing.upstream_image(&i)) {
                    None => text.clone(),
                    Some(Ok(upstream)) => upstream,
                    Some(Err(why)) => return Err(Error::invalid(field(), why)),
                };
                let gateway_image =
                    match ImageRef::parse(&upstream) {
                        Ok(image) => Some(addressing.gateway_image(&image).map_err(|message| {
                            Error::FailedPrecondition { reason: "GATEWAY_ALIAS_NEEDED", message }
                        })?),
                        Err(_) => None,
                    };
                Ok((upstream, gateway_image))
            })
            .collect();
        let upstream_request = LeaseRequest {
            images: mapped.iter().filter_map(|m| m.as_ref().ok().map(|(upstream, _)| upstream.clone())).collect(),
            actions: vec![Action::Pull],
            accept: Accept::Gateway,
            min_ttl: request.min_ttl.min(GATEWAY_UPSTREAM_MIN_TTL),
            ..request.clone()
        };
        let mut issued = if upstream_request.images.is_empty() {
            Vec::new()
        } else {
            self.inner.broker.issue(&upstream_request).await?
        }
        .into_iter();
        let outcomes: Vec<Result<(Issued, String), Error>> = mapped
            .into_iter()
            .map(|mapping| {
                let (_, gateway_image) = mapping?;
                let issued = issued.next().unwrap_or_else(|| Err(Error::internal("missing lease")))?;
                let gateway_image = gateway_image.ok_or_else(|| Error::internal("a lease for an unparsed image"))?;
                Ok((issued, gateway_image))
            })
            .collect();
        let repositories: Vec<(RegistryHost, String)> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .map(|(issued, _)| (issued.image.registry().clone(), issued.image.repository().to_owned()))
            .fold(Vec::new(), |mut all, repository| {
                if !all.contains(&repository) {
                    all.push(repository);
                }
                all
            });
        if repositories.is_empty() {
            // Every image failed: there is nothing to mint a password for.
            return Ok(outcomes
                .into_iter()
                .map(|outcome| Err(outcome.err().unwrap_or_else(|| Error::internal("an image without a lease"))))
                .collect());
        }
        let now = Timestamp::now();
        let mut expires = now.plus(self.inner.settings.password_ttl);
        if let Some(token_expiry) = principal.expire_time {
            expires = expires.min(token_expiry);
        }
        let expires = Timestamp::from_micros(expires.as_seconds() * 1_000_000);
        let grant = GatewayGrant {
            token: principal.token_id.clone(),
            workspace: request.workspace.clone(),
            project: request.project.clone(),
            repositories,
            expires,
        };
        let password = Arc::new(self.inner.passwords.mint(&grant).map_err(Error::internal)?);
        let registry = addressing.public_host.to_string();
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map(|(upstream, gateway_image)| GatewayLease {
                    image: upstream.image.clone(),
                    gateway_image,
                    registry: registry.clone(),
                    password: Arc::clone(&password),
                    issue_time: now,
                    expire_time: expires,
                    upstream,
                })
            })
            .collect())
    }

    /// The caller behind a username and password: a gateway password
    /// (checked by its MAC, then its token's revocation and expiry, in
    /// memory), or an access token (whose username may name the project).
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<Caller, PullError> {
        if password.starts_with(crate::access::gateway_password::PREFIX) {
            let grant = self
                .inner
                .passwords
                .verify(password, Timestamp::now())
                .map_err(|e| PullError::Unauthenticated(e.to_string()))?;
            let principal = self.inner.authn.principal_by_id(&grant.token).await?;
            return Ok(Caller::Password { grant, principal });
        }
        let principal = self.inner.authn.authenticate_token(password).await?;
        let project = match username {
            "" | GATEWAY_USERNAME => None,
            name => ProjectName::parse(name).ok(),
        };
        Ok(Caller::Token { principal, project })
    }

    /// Authorizes `caller` to pull `repository` of `registry`, exactly as
    /// `IssueRegistryAuth` would: the password's grant, the token's role and
    /// projects, and a credential of the workspace that serves the
    /// repository for the project. Nothing is dialled and no cache is read
    /// before this passes. A refusal is audited.
    pub async fn authorize(
        &self,
        caller: &Caller,
        registry: &RegistryHost,
        repository: &str,
        actor: Actor,
    ) -> Result<Pull, PullError> {
        let checked = self.check(caller, registry, repository).await;
        match checked {
            Ok((image, credential)) => Ok(Pull { image, credential, actor }),
            Err(error) => {
                let workspace = match caller {
                    Caller::Password { grant, .. } => Some(&grant.workspace),
                    Caller::Token { principal, .. } => principal.workspace.as_ref(),
                };
                let workspace_name = workspace.map(WorkspaceId::name).unwrap_or_default();
                let mut event = actor.event(
                    "GatewayPull",
                    workspace.map_or("", WorkspaceId::as_str),
                    &workspace_name,
                    error.audit_code(),
                );
                event.image = crate::domain::ids::shorten(&format!("{registry}/{repository}"));
                self.inner.auditor.record_lease(event);
                Err(error)
            }
        }
    }

    async fn check(
        &self,
        caller: &Caller,
        registry: &RegistryHost,
        repository: &str,
    ) -> Result<(ImageRef, Arc<StoredCredential>), PullError> {
        let image = ImageRef::parse(&format!("{registry}/{repository}")).map_err(|e| PullError::Invalid {
            code: "NAME_INVALID",
            message: format!("`{}` {e}", crate::domain::ids::shorten(&format!("{registry}/{repository}"))),
        })?;
        let (workspace, project) = match caller {
            Caller::Password { grant, .. } => {
                if !grant.allows(image.registry(), image.repository()) {
                    return Err(PullError::Denied(format!(
                        "this gateway password was issued for other repositories than {}; ask pullpass for one that covers it",
                        image.name()
                    )));
                }
                (grant.workspace.clone(), grant.project.clone())
            }
            Caller::Token { principal, project } => {
                let workspace = principal.workspace.clone().ok_or_else(|| {
                    PullError::Denied(
                        "a ROOT token belongs to no workspace: pull with a LAUNCHER or ADMIN token, or a gateway password"
                            .into(),
                    )
                })?;
                (workspace, project.clone())
            }
        };
        authorize(caller.principal(), Permission::IssueRegistryAuth(&workspace, project.as_ref()))?;
        let credential = self.inner.broker.choose_credential(&workspace, project.as_ref(), &image).await?;
        Ok((image, credential))
    }

    /// A manifest: from the cache, or fetched (once for concurrent callers)
    /// and verified. Every manifest request is audited.
    pub async fn manifest(
        &self,
        pull: &Pull,
        reference: &ManifestRef,
        accept: Option<&str>,
        deadline: Instant,
    ) -> Result<(Arc<Manifest>, bool), PullError> {
        let key = match reference {
            ManifestRef::Tag(tag) => Key::Tag(pull.origin(), tag.clone(), accept.unwrap_or_default().to_owned()),
            ManifestRef::Digest(digest) => Key::Digest(pull.origin(), digest.clone()),
        };
        let outcome =
            self.inner.manifests.get_or_fetch(key, || self.fetch_manifest(pull, reference, accept, deadline)).await;
        self.audit_manifest(pull, reference, &outcome);
        outcome
    }

    fn audit_manifest(&self, pull: &Pull, reference: &ManifestRef, outcome: &Result<(Arc<Manifest>, bool), PullError>) {
        let credential = &pull.credential.credential.name;
        let code = outcome.as_ref().err().map_or(0, PullError::audit_code);
        let mut event = pull.actor.event("GatewayPull", credential.workspace.as_str(), &credential.to_string(), code);
        let separator = if matches!(reference, ManifestRef::Digest(_)) { '@' } else { ':' };
        event.image = crate::domain::ids::shorten(&format!("{}{separator}{reference}", pull.image.name()));
        event.granted_scope = format!("repository:{}:pull", pull.image.repository());
        self.inner.auditor.record_lease(event);
    }

    async fn fetch_manifest(
        &self,
        pull: &Pull,
        reference: &ManifestRef,
        accept: Option<&str>,
        deadline: Instant,
    ) -> Result<Manifest, PullError> {
        let path = format!("/v2/{}/manifests/{reference}", pull.image.repository());
        let mut headers = Vec::new();
        if let Some(accept) = accept.and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.push((http::header::ACCEPT, accept));
        }
        let opened = self.open(pull, &path, None, false, headers, deadline).await?;
        if !opened.status.is_success() {
            return Err(self.refusal(pull, opened, "manifest", &reference.to_string(), deadline).await);
        }
        let media_type = opened.header("content-type").unwrap_or("application/octet-stream").to_owned();
        let claimed = opened.header("docker-content-digest").map(Digest::parse);
        let bytes = opened.read(MAX_MANIFEST_BYTES, deadline).await.map_err(|f| pull.upstream_error(f))?;
        let digest = match (reference, claimed) {
            (ManifestRef::Digest(wanted), _) => {
                let actual = wanted.same_algorithm_of(&bytes);
                if &actual != wanted {
                    return Err(mismatch("manifest", wanted, &actual, &pull.image));
                }
                actual
            }
            (ManifestRef::Tag(_), Some(Ok(claimed))) => {
                let actual = claimed.same_algorithm_of(&bytes);
                if actual != claimed {
                    return Err(mismatch("manifest", &claimed, &actual, &pull.image));
                }
                actual
            }
            (ManifestRef::Tag(_), _) => Digest::sha256_of(&bytes),
        };
        Ok(Manifest { bytes: Bytes::from(bytes), media_type, digest })
    }

    /// A blob: a redirect to follow, or the registry's content streamed and
    /// verified against `digest` (for a whole-blob GET).
    pub async fn blob(
        &self,
        pull: &Pull,
        digest: &Digest,
        range: Option<&str>,
        head: bool,
        deadline: Instant,
    ) -> Result<Blob, PullError> {
        let path = format!("/v2/{}/blobs/{digest}", pull.image.repository());
        let mut headers = Vec::new();
        if let Some(range) = range.and_then(|r| HeaderValue::from_str(r).ok()) {
            headers.push((http::header::RANGE, range));
        }
        let opened = self.open(pull, &path, None, head, headers, deadline).await?;
        let status = opened.status.as_u16();
        if opened.status.is_redirection() {
            let location = opened
                .header("location")
                .filter(|l| !l.is_empty())
                .ok_or_else(|| PullError::BadUpstream("the registry redirected a blob to nowhere".into()))?;
            return Ok(Blob::Redirect { status, location: location.to_owned() });
        }
        if !opened.status.is_success() {
            return Err(self.refusal(pull, opened, "blob", &digest.to_string(), deadline).await);
        }
        if let Some(claimed) = opened.header("docker-content-digest")
            && claimed != digest.to_string()
        {
            return Err(PullError::BadUpstream(format!(
                "registry {} answered blob {digest} with content it names {}",
                pull.image.endpoint(),
                crate::domain::ids::shorten(claimed)
            )));
        }
        let headers = content_headers(&opened.headers);
        let body = (!head).then(|| {
            let verify = (status == 200).then(|| digest.clone());
            BlobStream::new(opened, verify, BLOB_IDLE, pull.image.name())
        });
        Ok(Blob::Content { status, headers, body })
    }

    /// The registry's tag list (`query`: its `n` and `last`).
    pub async fn tags(&self, pull: &Pull, query: Option<&str>, deadline: Instant) -> Result<Tags, PullError> {
        let path = format!("/v2/{}/tags/list", pull.image.repository());
        let opened = self.open(pull, &path, query, false, Vec::new(), deadline).await?;
        if !opened.status.is_success() {
            return Err(self.refusal(pull, opened, "tag list", "", deadline).await);
        }
        let content_type = opened.header("content-type").unwrap_or("application/json").to_owned();
        let link = opened.header("link").map(str::to_owned);
        let body = opened.read(MAX_TAGS_BYTES, deadline).await.map_err(|f| pull.upstream_error(f))?;
        Ok(Tags { body: Bytes::from(body), content_type, link })
    }

    /// Sends one registry request with the broker's lease; a 401 with a
    /// cached lease drops it and tries once more with a fresh one.
    async fn open(
        &self,
        pull: &Pull,
        path: &str,
        query: Option<&str>,
        head: bool,
        headers: Vec<(HeaderName, HeaderValue)>,
        deadline: Instant,
    ) -> Result<Opened, PullError> {
        let credential = &pull.credential.credential;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let auth: UpstreamAuth = self.inner.broker.upstream_auth(&pull.credential, &pull.image, deadline).await?;
            let request = ContentRequest {
                credential,
                endpoint: pull.image.endpoint(),
                path,
                query,
                head,
                headers: headers.clone(),
                lease: &auth.lease,
                deadline,
            };
            let opened =
                self.inner.broker.upstream().open_content(&request).await.map_err(|f| pull.upstream_error(f))?;
            if opened.status == http::StatusCode::UNAUTHORIZED && attempt == 1 {
                self.inner.broker.forget(&auth);
                continue;
            }
            return Ok(opened);
        }
    }

    /// The error an unsuccessful registry answer stands for.
    async fn refusal(&self, pull: &Pull, opened: Opened, what: &str, reference: &str, deadline: Instant) -> PullError {
        let registry = pull.image.endpoint().to_owned();
        let credential = pull.credential.credential.name.to_string();
        let status = opened.status;
        let retry_after = crate::upstream::retry_after_in(&opened.headers);
        let code = if status == http::StatusCode::NOT_FOUND {
            let body = opened.read(MAX_ERROR_BYTES, deadline).await.unwrap_or_default();
            first_error_code(&body)
        } else {
            None
        };
        let subject = if reference.is_empty() {
            format!("{what} of {}", pull.image.name())
        } else {
            format!("{what} {reference} of {}", pull.image.name())
        };
        match status.as_u16() {
            401 | 403 => PullError::Denied(format!(
                "registry {registry} refused credential {credential} for {} ({status})",
                pull.image.name()
            )),
            404 if code.as_deref() == Some("NAME_UNKNOWN") => {
                PullError::NameUnknown(format!("registry {registry} has no repository {}", pull.image.repository()))
            }
            404 if what == "blob" => PullError::BlobUnknown(format!("registry {registry} has no {subject}")),
            404 if what == "manifest" => PullError::ManifestUnknown(format!("registry {registry} has no {subject}")),
            404 => PullError::NameUnknown(format!("registry {registry} has no {subject}")),
            429 => PullError::RateLimited {
                message: format!("registry {registry} is rate limiting (retry in {} s)", retry_after.as_secs().max(1)),
                retry_after,
            },
            300..=399 => PullError::BadUpstream(format!(
                "registry {registry} redirected the request for the {subject}; pullpass does not follow it"
            )),
            500..=599 => PullError::Unavailable(format!("registry {registry} answered {status} for the {subject}")),
            _ => PullError::BadUpstream(format!("registry {registry} answered {status} for the {subject}")),
        }
    }
}

fn mismatch(what: &str, wanted: &Digest, actual: &Digest, image: &ImageRef) -> PullError {
    PullError::BadUpstream(format!(
        "registry {} sent a {what} of {} whose digest is {actual}, not {wanted}; nothing of it is served or kept",
        image.endpoint(),
        image.name()
    ))
}

/// The headers of a registry's blob answer that describe the content.
fn content_headers(from: &HeaderMap) -> HeaderMap {
    const KEPT: [&str; 6] =
        ["content-length", "content-type", "docker-content-digest", "content-range", "accept-ranges", "etag"];
    let mut headers = HeaderMap::new();
    for name in KEPT {
        if let Some(value) = from.get(name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    headers
}

/// The `code` of the first error of a distribution error body.
fn first_error_code(body: &[u8]) -> Option<String> {
    let parsed: serde_json::Value = serde_json::from_slice(body).ok()?;
    parsed.get("errors")?.get(0)?.get("code")?.as_str().map(str::to_owned)
}
