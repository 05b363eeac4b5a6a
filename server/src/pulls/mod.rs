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
use crate::singleflight::Flights;
use crate::upstream::content::{ContentRequest, Opened};
use address::Addressing;
use blob::BlobStream;
use digest::Digest;
use manifests::{DigestKey, Manifest, ManifestCache, ManifestHead, Origin, TagKey};

/// The username of gateway leases.
pub const GATEWAY_USERNAME: &str = crate::access::gateway_password::USERNAME;
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
    /// The registry cannot satisfy the range asked; its `Content-Range`
    /// (`bytes */SIZE`).
    RangeNotSatisfiable(String),
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
            Self::Invalid { .. } | Self::RangeNotSatisfiable(_) => 3,
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
            | Self::RangeNotSatisfiable(m)
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
        principal: Arc<Principal>,
    },
    /// An access token used as the password.
    Token {
        /// The token.
        principal: Arc<Principal>,
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
            Self::Token { principal, .. } => principal.resource_name.to_string(),
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
// One per request, moved once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    flights: Flights<FlightKey, Result<ManifestAnswer, PullError>>,
    auditor: Auditor,
}

/// What a manifest fetch in flight is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FlightKey {
    TagHead(TagKey),
    TagGet(TagKey),
    Digest(DigestKey),
}

/// A manifest answer: its head (for a HEAD by tag the registry answered
/// with one), or the manifest itself.
#[derive(Debug, Clone)]
pub enum ManifestAnswer {
    /// Digest, type and length only.
    Head(ManifestHead),
    /// The bytes too.
    Full(Arc<Manifest>),
}

impl ManifestAnswer {
    /// Digest, type and length.
    pub fn head(&self) -> ManifestHead {
        match self {
            Self::Head(head) => head.clone(),
            Self::Full(manifest) => manifest.head(),
        }
    }

    /// The bytes, when fetched.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Head(_) => None,
            Self::Full(manifest) => Some(&manifest.bytes),
        }
    }
}

/// Most media types kept from an `Accept` header.
const MAX_ACCEPTED_TYPES: usize = 16;

/// An `Accept` header as a bounded, canonical set: the media types
/// (parameters such as `q` dropped), lowercase, sorted, at most 16, joined
/// by `, `. It keys the tag cache and is what the registry is sent.
pub fn normalized_accept(accept: Option<&str>) -> String {
    let valid = |t: &str| {
        let mut parts = t.splitn(2, '/');
        let (kind, subtype) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let token = |s: &str| {
            (1..=127).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-*".contains(&b))
        };
        token(kind) && token(subtype)
    };
    let types: std::collections::BTreeSet<String> = accept
        .unwrap_or_default()
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .filter(|t| valid(t))
        .collect();
    types.into_iter().take(MAX_ACCEPTED_TYPES).collect::<Vec<_>>().join(", ")
}

fn accept_header(accept: &str) -> Vec<(HeaderName, HeaderValue)> {
    match HeaderValue::from_str(accept) {
        Ok(value) if !accept.is_empty() => vec![(http::header::ACCEPT, value)],
        _ => Vec::new(),
    }
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
        let flights = Flights::default();
        Self { inner: Arc::new(Inner { broker, authn, passwords, settings, manifests, flights, auditor }) }
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
        self.password_fits(principal, request, &mapped)?;
        // The images the gateway can name go to the broker, which answers
        // one outcome per image, in order; `asked[i]` is where the broker's
        // i-th outcome belongs.
        let asked: Vec<usize> = (0..mapped.len()).filter(|i| mapped[*i].is_ok()).collect();
        let upstream_request = LeaseRequest {
            images: mapped.iter().filter_map(|m| m.as_ref().ok().map(|(upstream, _)| upstream.clone())).collect(),
            actions: vec![Action::Pull],
            accept: Accept::Gateway,
            min_ttl: request.min_ttl.min(GATEWAY_UPSTREAM_MIN_TTL),
            ..request.clone()
        };
        let issued = if asked.is_empty() { Vec::new() } else { self.inner.broker.issue(&upstream_request).await? };
        let mut outcomes: Vec<Result<(Issued, String), Error>> = mapped
            .iter()
            .map(|m| Err(m.as_ref().err().cloned().unwrap_or_else(|| Error::internal("an image without an outcome"))))
            .collect();
        for (position, outcome) in asked.into_iter().zip(issued) {
            let gateway_image = mapped[position].as_ref().ok().and_then(|(_, g)| g.clone());
            outcomes[position] = outcome.and_then(|issued| match gateway_image {
                Some(gateway_image) => Ok((issued, gateway_image)),
                None => Err(Error::internal("a lease for an image the gateway cannot name")),
            });
        }
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
        let least = if min_ttl_given { request.min_ttl.max(Duration::from_secs(1)) } else { Duration::from_secs(1) };
        if expires < now.plus(least) {
            return Err(Error::FailedPrecondition {
                reason: "ACCESS_TOKEN_EXPIRES_SOON",
                message: format!(
                    "{} expires at {}: a gateway password never outlives the token that asks for it, and this one would live less than {} s",
                    principal.resource_name,
                    principal.expire_time.map(Timestamp::to_rfc3339).unwrap_or_default(),
                    least.as_secs()
                ),
            });
        }
        let grant = GatewayGrant {
            token: principal.token_id.clone(),
            workspace: request.workspace.clone(),
            project: request.project.clone(),
            repositories,
            expires,
            identity: identity_ref(principal, &request.workspace),
        };
        let password = Arc::new(self.inner.passwords.mint(&grant).map_err(Error::internal)?);
        let registry = addressing.public_host.to_string();
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map(|(upstream, gateway_image)| GatewayLease {
                    image: (*upstream.image).clone(),
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

    /// Refuses (INVALID_ARGUMENT, before any upstream exchange) a request
    /// whose password, were every image to succeed, would be longer than a
    /// runtime can send within the gateway's header limit.
    fn password_fits(
        &self,
        principal: &Principal,
        request: &LeaseRequest,
        mapped: &[Result<(String, Option<String>), Error>],
    ) -> Result<(), Error> {
        let passwords = &self.inner.passwords;
        let mut grant = GatewayGrant {
            token: principal.token_id.clone(),
            workspace: request.workspace.clone(),
            project: request.project.clone(),
            repositories: Vec::new(),
            expires: Timestamp::now(),
            identity: identity_ref(principal, &request.workspace),
        };
        // How many of the images, in order, still fit.
        let mut fitting_images = 0;
        for (upstream, _) in mapped.iter().filter_map(|m| m.as_ref().ok()) {
            if let Ok(image) = ImageRef::parse(upstream) {
                let repository = (image.registry().clone(), image.repository().to_owned());
                if !grant.repositories.contains(&repository) {
                    grant.repositories.push(repository);
                }
            }
            if passwords.len_of(&grant) <= passwords.max_len() {
                fitting_images += 1;
            }
        }
        let len = passwords.len_of(&grant);
        if len <= passwords.max_len() {
            return Ok(());
        }
        Err(Error::invalid(
            "images",
            format!(
                "the gateway password for these {} repositories would be {len} bytes, more than the {} bytes a runtime can send within the gateway's header limit (--max-header-bytes); ask for at most {fitting_images} of these images per request",
                grant.repositories.len(),
                passwords.max_len()
            ),
        ))
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
            let principal = match &grant.identity {
                Some(identity) => {
                    self.inner
                        .authn
                        .principal_for_identity_password(&grant.token, &grant.workspace, identity, grant.expires)
                        .await?
                }
                None => self.inner.authn.principal_by_id(&grant.token).await?,
            };
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

    /// A manifest, or only its head for a HEAD: from the cache, or fetched
    /// (once for concurrent callers) and verified. A HEAD by tag asks the
    /// registry for a HEAD too, which registries do not count as a pull.
    /// Every manifest request is audited. The flag is true when served
    /// from the cache.
    pub async fn manifest(
        &self,
        pull: &Pull,
        reference: &ManifestRef,
        accept: Option<&str>,
        head: bool,
        deadline: Instant,
    ) -> Result<(ManifestAnswer, bool), PullError> {
        let outcome = self.resolve_manifest(pull, reference, &normalized_accept(accept), head, deadline).await;
        self.audit_manifest(pull, reference, outcome.as_ref().err());
        outcome
    }

    async fn resolve_manifest(
        &self,
        pull: &Pull,
        reference: &ManifestRef,
        accept: &str,
        head: bool,
        deadline: Instant,
    ) -> Result<(ManifestAnswer, bool), PullError> {
        let tag = match reference {
            ManifestRef::Digest(digest) => {
                let (manifest, cached) = self.by_digest(pull, digest, accept, deadline).await?;
                return Ok((ManifestAnswer::Full(manifest), cached));
            }
            ManifestRef::Tag(tag) => tag,
        };
        let key = TagKey { origin: pull.origin(), tag: tag.clone(), accept: accept.to_owned() };
        if let Some(known) = self.inner.manifests.tag(&key) {
            if head {
                return Ok((ManifestAnswer::Head(known), true));
            }
            let (manifest, cached) = self.by_digest(pull, &known.digest, accept, deadline).await?;
            return Ok((ManifestAnswer::Full(manifest), cached));
        }
        let flights = &self.inner.flights;
        // Inside each flight the tag is looked up again: a caller that
        // missed above may start a flight just after the last one landed,
        // when the tag is already known.
        let answer = if head {
            let run = || async {
                match self.inner.manifests.tag(&key) {
                    Some(known) => Ok(ManifestAnswer::Head(known)),
                    None => self.head_tag(pull, &key, deadline).await,
                }
            };
            flights.run(FlightKey::TagHead(key.clone()), run).await?
        } else {
            let run = || async {
                match self.inner.manifests.tag(&key) {
                    Some(known) => {
                        Ok(ManifestAnswer::Full(self.by_digest(pull, &known.digest, accept, deadline).await?.0))
                    }
                    None => self.get_tag(pull, &key, deadline).await,
                }
            };
            flights.run(FlightKey::TagGet(key.clone()), run).await?
        };
        Ok((answer, false))
    }

    /// A manifest by digest: kept, or fetched once for concurrent callers.
    async fn by_digest(
        &self,
        pull: &Pull,
        digest: &Digest,
        accept: &str,
        deadline: Instant,
    ) -> Result<(Arc<Manifest>, bool), PullError> {
        let key = DigestKey { origin: pull.origin(), digest: digest.clone() };
        if let Some(manifest) = self.inner.manifests.manifest(&key) {
            return Ok((manifest, true));
        }
        let fetched = self
            .inner
            .flights
            .run(FlightKey::Digest(key.clone()), || async {
                // A caller that missed above may start a flight just after
                // the last one landed: by then the manifest is kept.
                if let Some(manifest) = self.inner.manifests.manifest(&key) {
                    return Ok(ManifestAnswer::Full(manifest));
                }
                let manifest =
                    Arc::new(self.fetch_manifest(pull, &ManifestRef::Digest(digest.clone()), accept, deadline).await?);
                self.inner.manifests.remember_manifest(key.clone(), Arc::clone(&manifest));
                Ok(ManifestAnswer::Full(manifest))
            })
            .await?;
        match fetched {
            ManifestAnswer::Full(manifest) => Ok((manifest, false)),
            ManifestAnswer::Head(_) => Err(PullError::Internal("a digest fetch answered without bytes".into())),
        }
    }

    /// GET by tag: the manifest, kept under its digest, and the tag.
    async fn get_tag(&self, pull: &Pull, key: &TagKey, deadline: Instant) -> Result<ManifestAnswer, PullError> {
        let reference = ManifestRef::Tag(key.tag.clone());
        let manifest = Arc::new(self.fetch_manifest(pull, &reference, &key.accept, deadline).await?);
        let digest_key = DigestKey { origin: key.origin.clone(), digest: manifest.digest.clone() };
        self.inner.manifests.remember_manifest(digest_key, Arc::clone(&manifest));
        self.inner.manifests.remember_tag(key.clone(), manifest.head());
        Ok(ManifestAnswer::Full(manifest))
    }

    /// HEAD by tag: what the registry's HEAD says, when it says it all
    /// (digest, type, length); otherwise a GET.
    async fn head_tag(&self, pull: &Pull, key: &TagKey, deadline: Instant) -> Result<ManifestAnswer, PullError> {
        let path = format!("/v2/{}/manifests/{}", pull.image.repository(), key.tag);
        let opened = self.open(pull, &path, None, true, accept_header(&key.accept), deadline).await?;
        if !opened.status.is_success() {
            return Err(self.refusal(pull, opened, "manifest", &key.tag, deadline).await);
        }
        let digest = opened.header("docker-content-digest").and_then(|d| Digest::parse(d).ok());
        let length = opened.header("content-length").and_then(|l| l.parse().ok()).filter(|l| *l <= MAX_MANIFEST_BYTES);
        match (digest, length, opened.header("content-type")) {
            (Some(digest), Some(length), Some(media_type)) => {
                let head = ManifestHead { digest, media_type: media_type.to_owned(), length };
                self.inner.manifests.remember_tag(key.clone(), head.clone());
                Ok(ManifestAnswer::Head(head))
            }
            _ => self.get_tag(pull, key, deadline).await,
        }
    }

    fn audit_manifest(&self, pull: &Pull, reference: &ManifestRef, error: Option<&PullError>) {
        let credential = &pull.credential.credential.name;
        let code = error.map_or(0, PullError::audit_code);
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
        accept: &str,
        deadline: Instant,
    ) -> Result<Manifest, PullError> {
        let path = format!("/v2/{}/manifests/{reference}", pull.image.repository());
        let opened = self.open(pull, &path, None, false, accept_header(accept), deadline).await?;
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
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            // Resolved against the registry's URL: a relative location would
            // otherwise point the client at the gateway.
            let location = opened
                .header("location")
                .filter(|l| !l.is_empty())
                .and_then(|l| opened.url.join(l).ok())
                .filter(|l| matches!(l.scheme(), "http" | "https"))
                .ok_or_else(|| PullError::BadUpstream("the registry redirected a blob to no usable location".into()))?;
            return Ok(Blob::Redirect { status, location: location.to_string() });
        }
        if !opened.status.is_success() {
            return Err(self.refusal(pull, opened, "blob", &digest.to_string(), deadline).await);
        }
        // The whole blob is checked against its digest, however it came: a
        // 200, or a 206 whose range covers all of it.
        let whole = match (status, range) {
            (200, _) => true,
            (206, Some(_)) => match content_range(opened.header("content-range")) {
                Some((first, last, Some(size))) => first == 0 && last + 1 == size,
                Some((_, _, None)) => false,
                None => return Err(PullError::BadUpstream("the registry's 206 has no valid Content-Range".into())),
            },
            _ => {
                return Err(PullError::BadUpstream(format!(
                    "registry {} answered a blob request with {status}",
                    pull.image.endpoint()
                )));
            }
        };
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
            let verify = whole.then(|| digest.clone());
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
            if opened.status == http::StatusCode::UNAUTHORIZED && attempt == 1 && self.inner.broker.forget(&auth).await
            {
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
        let opened_content_range = opened.header("content-range").map(str::to_owned);
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
            416 => PullError::RangeNotSatisfiable(opened_content_range.unwrap_or_else(|| "bytes */*".to_owned())),
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

fn mismatch(what: &'static str, wanted: &Digest, actual: &Digest, image: &ImageRef) -> PullError {
    crate::metrics::gateway_digest_mismatch(what);
    PullError::BadUpstream(format!(
        "registry {} sent a {what} of {} whose digest is {actual}, not {wanted}; nothing of it is served or kept",
        image.endpoint(),
        image.name()
    ))
}

/// `bytes FIRST-LAST/SIZE` (SIZE may be `*`).
fn content_range(value: Option<&str>) -> Option<(u64, u64, Option<u64>)> {
    let (range, size) = value?.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let size = match size.trim() {
        "*" => None,
        size => Some(size.parse().ok()?),
    };
    (first <= last).then_some((first, last, size))
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

/// For a workload identity, the bindings its gateway password stands on in
/// `workspace`.
fn identity_ref(
    principal: &Principal,
    workspace: &WorkspaceId,
) -> Option<crate::access::gateway_password::IdentityRef> {
    let identity = principal.identity.as_ref()?;
    let grant = identity.grants.get(workspace)?;
    Some(crate::access::gateway_password::IdentityRef {
        provider: identity.provider.as_str().to_owned(),
        bindings: grant.bindings.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_become_a_bounded_canonical_set() {
        let containerd = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";
        let reordered = "*/*;q=0.8, application/vnd.oci.image.index.v1+json, APPLICATION/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json , application/vnd.docker.distribution.manifest.v2+json";
        assert_eq!(normalized_accept(Some(containerd)), normalized_accept(Some(reordered)));
        assert!(normalized_accept(Some(containerd)).starts_with("*/*, application/vnd.docker"));
        assert_eq!(normalized_accept(None), "");
        assert_eq!(normalized_accept(Some("garbage, a/b c, /x, y/")), "");
        let many: Vec<String> = (0..1000).map(|i| format!("application/x-{i}")).collect();
        let bounded = normalized_accept(Some(&many.join(",")));
        assert_eq!(bounded.split(", ").count(), MAX_ACCEPTED_TYPES);
        let long = format!("application/{}", "x".repeat(10_000));
        assert_eq!(normalized_accept(Some(&long)), "");
    }

    #[test]
    fn content_ranges_are_read_strictly() {
        assert_eq!(content_range(Some("bytes 0-99/100")), Some((0, 99, Some(100))));
        assert_eq!(content_range(Some("bytes 5-9/*")), Some((5, 9, None)));
        for bad in ["bytes 9-5/10", "0-9/10", "bytes a-b/c", "bytes 0-9", ""] {
            assert_eq!(content_range(Some(bad)), None, "{bad}");
        }
    }
}
