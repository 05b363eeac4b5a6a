//! Lease issuance: "give me auth for (workspace, project, image, actions)".
//!
//! For each image: parse the reference, choose the credential ([`choose`])
//! from the in-memory [`index`], serve a cached lease with enough life left
//! or run one upstream exchange per key ([`cache`]), opening the sealed
//! secret only for that exchange. A request shape seen before skips the
//! parsing and choosing ([`recent`]).
//!
//! Nothing here depends on gRPC types: the gRPC handlers call
//! [`Broker::issue`], and the pull gateway (through `pulls`) calls it too,
//! and [`Broker::upstream_auth`] for the auth it presents to registries.

pub mod cache;
pub mod choose;
pub mod index;
pub mod recent;
pub mod refresh;
pub mod shared;
pub mod usage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use pullpass::reference::ImageRef;
use pullpass::scope::{Action, Scope};

use crate::audit::{Actor, Auditor};
use crate::changes::{Change, ChangeFeed};
use crate::credentials::Credentials;
use crate::domain::credential::StoredCredential;
use crate::domain::{Accept, CredentialName, IssuedText, Lease, ProjectName, WorkspaceId};
use crate::error::Error;
use crate::upstream::{Exchange, Failure, Upstream};
use cache::{CacheKey, LeaseCache};
use index::CredentialIndex;
use recent::{Recent, Shape};
use refresh::Refreshes;
use shared::SharedLeases;

/// Most images in one request.
pub const MAX_IMAGES: usize = 100;

/// A request for leases.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The workspace whose credentials serve.
    pub workspace: WorkspaceId,
    /// The caller's project, if any.
    pub project: Option<ProjectName>,
    /// Image references as given.
    pub images: Vec<String>,
    /// Actions (PULL when empty).
    pub actions: Vec<Action>,
    /// Least remaining life.
    pub min_ttl: Duration,
    /// Forms the caller can use.
    pub accept: Accept,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Who asks (for the audit trail).
    pub actor: Actor,
}

/// A lease issued for one image.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The normalized image.
    pub image: Arc<ImageRef>,
    /// The lease.
    pub lease: Arc<Lease>,
    /// True when served without waiting for the registry.
    pub cached: bool,
    /// The image and the lease's facts as text.
    pub text: Arc<IssuedText>,
}

/// Auth for the pull gateway to present to a registry, in form
/// [`Accept::Gateway`]. It must never reach a caller.
#[derive(Debug, Clone)]
pub struct UpstreamAuth {
    /// The lease (a bearer token, or a username and password).
    pub lease: Arc<Lease>,
    /// True when served from the cache.
    pub cached: bool,
    key: CacheKey,
    /// Its shared row's sealed bytes, if it has one.
    sealed: Option<Arc<[u8]>>,
}

/// Least life an upstream lease for the gateway must have left: enough to
/// start the registry request it is for.
const GATEWAY_MIN_TTL: Duration = Duration::from_secs(10);

/// What `TestCredential` found out.
#[derive(Debug)]
pub struct TestReport {
    /// The scope asked for.
    pub requested: Scope,
    /// The lease (its secret is never shown) or why there is none.
    pub outcome: Result<Lease, Error>,
    /// The registry host tried.
    pub registry: String,
    /// The secret's own expiry, where the registry's owner reported it
    /// (now stored on the credential).
    pub learned_expiry: Option<crate::domain::Timestamp>,
}

/// The shape of a request for `image` (see [`recent`]).
fn shape<'a>(request: &'a LeaseRequest, image: &'a str) -> Shape<'a> {
    Shape {
        workspace: &request.workspace,
        project: request.project.as_ref(),
        image,
        actions: &request.actions,
        accept: request.accept,
    }
}

/// What a lease must be: for which actions, in which form, with how much
/// life left, by when.
struct Wanted<'a> {
    actions: &'a [Action],
    accept: Accept,
    min_ttl: Duration,
    deadline: Instant,
}

/// The broker.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    credentials: Credentials,
    index: CredentialIndex,
    cache: LeaseCache,
    upstream: Upstream,
    auditor: Auditor,
    shared: Option<SharedLeases>,
    recent: Recent,
    usage: usage::Usage,
    changes: ChangeFeed,
    refreshes: Refreshes,
}

impl Broker {
    /// A broker over `credentials`, exchanging through `upstream`, caching at
    /// most `cache_capacity` leases, following `changes`. On a shared
    /// database it shares leases with the other replicas ([`shared`]).
    pub fn new(
        credentials: Credentials,
        upstream: Upstream,
        cache_capacity: usize,
        changes: &ChangeFeed,
        auditor: Auditor,
    ) -> Self {
        let index = CredentialIndex::new(credentials.store().clone());
        let shared = SharedLeases::new(credentials.store(), Arc::clone(credentials.sealer()));
        let cache = LeaseCache::new(cache_capacity);
        let recent = Recent::new(cache_capacity);
        let usage = usage::Usage::new(credentials.store().clone());
        let inner = Arc::new(Inner {
            credentials,
            index,
            cache,
            upstream,
            auditor,
            shared,
            recent,
            usage,
            changes: changes.clone(),
            refreshes: Refreshes::default(),
        });
        let weak = Arc::downgrade(&inner);
        changes.subscribe(move |change| {
            let Some(inner) = weak.upgrade() else { return };
            match change {
                Change::Credential(name) => {
                    inner.index.changed(name);
                    inner.cache.evict_credential(name);
                    inner.recent.forget_all();
                }
                Change::Workspace(workspace) => {
                    inner.index.invalidate(workspace);
                    inner.cache.evict_workspace(workspace);
                    inner.recent.forget_all();
                }
                Change::Everything => {
                    inner.index.invalidate_all();
                    inner.cache.clear();
                    inner.recent.forget_all();
                }
                Change::LeaseStored => {
                    if let Some(shared) = &inner.shared {
                        shared.wake();
                    }
                }
                Change::Identity => {}
                Change::LeaseDropsMissed => {
                    inner.cache.clear();
                    inner.recent.forget_all();
                }
                Change::LeaseDropped(text) => {
                    if let Some(key) = inner.shared.as_ref().and_then(|shared| shared.dropped_elsewhere(text)) {
                        inner.cache.forget_key(&key);
                        inner.recent.forget_lease(|resolved| key.names(&resolved.stored.credential, &resolved.lease));
                    }
                }
                Change::Token(_) => {}
            }
        });
        Self { inner }
    }

    /// Issues a lease per image; each image has its own outcome, and its own
    /// audit event (queued, see `audit`).
    pub async fn issue(&self, request: &LeaseRequest) -> Result<Vec<Result<Issued, Error>>, Error> {
        if request.images.is_empty() {
            return Err(Error::invalid("images", "name at least one image"));
        }
        if request.images.len() > MAX_IMAGES {
            return Err(Error::invalid("images", format!("at most {MAX_IMAGES} images per request")));
        }
        // Nothing remembered is served unless it is known to be current.
        if !self.inner.changes.is_fresh() {
            self.inner.changes.fresh(request.deadline).await?;
        }
        if let [text] = request.images.as_slice()
            && let Some(issued) = self.recently_issued(request, text)
        {
            return Ok(vec![Ok(issued)]);
        }
        // Boxed: the resolving path's future is kilobytes (upstream
        // exchanges), and the cached path above should not carry it.
        Box::pin(self.resolve_and_issue(request)).await
    }

    /// [`Broker::issue`] past the recent-lease memo: chooses each image's
    /// credential and leases it (from the cache or upstream).
    async fn resolve_and_issue(&self, request: &LeaseRequest) -> Result<Vec<Result<Issued, Error>>, Error> {
        // The memo's ticket first: a change published while the candidates
        // load must keep what is worked out from them out of the memo.
        let ticket = self.inner.recent.ticket();
        let candidates = self.inner.index.credentials(&request.workspace).await?;
        let one = |position: usize| {
            let candidates = Arc::clone(&candidates);
            let text = request.images[position].as_str();
            async move {
                let (chosen, outcome) = match self.choose(request, &candidates, position, text) {
                    Ok((image, stored)) => {
                        let name = stored.credential.name.clone();
                        let outcome = self.lease(request, image, Arc::clone(&stored)).await;
                        if let Ok(issued) = &outcome {
                            let slot = self.inner.usage.slot(&stored);
                            self.inner.usage.used(&slot, &stored);
                            let resolved = recent::Resolved {
                                image: Arc::clone(&issued.image),
                                stored,
                                lease: Arc::clone(&issued.lease),
                                text: Arc::clone(&issued.text),
                                usage: slot,
                            };
                            self.inner.recent.remember(&shape(request, text), ticket, resolved);
                        }
                        (Some(name), outcome)
                    }
                    Err(error) => (None, Err(error)),
                };
                self.audit_lease(request, text, chosen.as_ref(), &outcome);
                outcome
            }
        };
        if request.images.len() == 1 {
            return Ok(vec![one(0).await]);
        }
        Ok(join_all((0..request.images.len()).map(one)).await)
    }

    /// The lease a call of the same shape got, while it has the life asked
    /// for and nothing changed since ([`recent`]): counted and audited as the
    /// cache hit it is.
    fn recently_issued(&self, request: &LeaseRequest, text: &str) -> Option<Issued> {
        let memo = self.inner.recent.get(&shape(request, text), request.min_ttl)?;
        let found = &memo.resolved;
        let issued = Issued {
            image: Arc::clone(&found.image),
            lease: Arc::clone(&found.lease),
            cached: true,
            text: Arc::clone(&found.text),
        };
        let outcome = Ok(issued);
        self.inner.usage.used(&found.usage, &found.stored);
        crate::metrics::lease_issued(
            matches!(found.lease.grant, crate::domain::Grant::Bearer { .. }),
            cache::CacheOutcome::Hit,
        );
        self.audit_lease(request, text, Some(&found.stored.credential.name), &outcome);
        outcome.ok()
    }

    /// Queues the audit event of one image: the credential that served (or
    /// failed), the image, the granted scope, the outcome.
    fn audit_lease(
        &self,
        request: &LeaseRequest,
        image: &str,
        credential: Option<&CredentialName>,
        outcome: &Result<Issued, Error>,
    ) {
        match outcome {
            Ok(issued) => self.inner.auditor.record_issued(request.actor.issued(&issued.text)),
            Err(error) => {
                let resource = credential.map_or_else(|| request.workspace.name(), ToString::to_string);
                let workspace = request.workspace.as_str();
                let mut event = request.actor.event("IssueRegistryAuth", workspace, &resource, error.grpc_code());
                event.image = crate::domain::ids::shorten(image);
                self.inner.auditor.record_lease(event);
            }
        }
    }

    /// Parses the image and picks its credential.
    fn choose(
        &self,
        request: &LeaseRequest,
        candidates: &[Arc<StoredCredential>],
        position: usize,
        text: &str,
    ) -> Result<(ImageRef, Arc<StoredCredential>), Error> {
        let image = ImageRef::parse(text).map_err(|e| {
            Error::invalid(format!("images[{position}]"), format!("`{}` {e}", crate::domain::ids::shorten(text)))
        })?;
        let stored = choose::choose(candidates, &request.workspace, &image, request.project.as_ref())?;
        Ok((image, Arc::clone(stored)))
    }

    /// The credential that serves `image` for a caller of `workspace` and
    /// `project`, chosen as for [`Broker::issue`] (registry, namespace,
    /// project restriction): the pull gateway's authorization step.
    pub async fn choose_credential(
        &self,
        workspace: &WorkspaceId,
        project: Option<&ProjectName>,
        image: &ImageRef,
    ) -> Result<Arc<StoredCredential>, Error> {
        self.inner.changes.fresh(Instant::now() + crate::changes::CONFIRM_WAIT).await?;
        let candidates = self.inner.index.credentials(workspace).await?;
        Ok(Arc::clone(choose::choose(&candidates, workspace, image, project)?))
    }

    /// Auth for the pull gateway to present to the registry of `image` with
    /// `credential` (from [`Broker::choose_credential`]): cached and
    /// coalesced like any lease. Not audited here: the gateway audits its
    /// pulls.
    pub async fn upstream_auth(
        &self,
        credential: &Arc<StoredCredential>,
        image: &ImageRef,
        deadline: Instant,
    ) -> Result<UpstreamAuth, Error> {
        let wanted = Wanted { actions: &[Action::Pull], accept: Accept::Gateway, min_ttl: GATEWAY_MIN_TTL, deadline };
        let (key, cache::Cached { lease, sealed }, outcome) = self.cached_lease(&wanted, image, credential).await?;
        self.inner.usage.used(&self.inner.usage.slot(credential), credential);
        Ok(UpstreamAuth { lease, cached: outcome.cached(), key, sealed })
    }

    /// After the registry refused `auth`'s lease before its time (it
    /// rotated its keys, say): drops the lease here, and from the table the
    /// replicas share (unless another replica already replaced it), and
    /// the memo entries holding it, so the next call fetches a fresh one.
    /// False when this credential's refreshes are over their rate: then
    /// the refusal stands (a caller probing repositories its credential
    /// cannot read costs the registry a few exchanges, not one per probe).
    pub async fn forget(&self, auth: &UpstreamAuth) -> bool {
        if !self.inner.refreshes.allow(&auth.key.uid) {
            return false;
        }
        self.inner.cache.forget(&auth.key, &auth.lease);
        self.inner.recent.forget_lease(|resolved| Arc::ptr_eq(&resolved.lease, &auth.lease));
        if let (Some(shared), Some(sealed)) = (&self.inner.shared, &auth.sealed) {
            shared.refused(&auth.key, sealed).await;
        }
        true
    }

    /// The upstream side (for the pull gateway's registry requests).
    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// A lease from the cache, or from one upstream exchange per key.
    async fn lease(
        &self,
        request: &LeaseRequest,
        image: ImageRef,
        stored: Arc<StoredCredential>,
    ) -> Result<Issued, Error> {
        let wanted = Wanted {
            actions: &request.actions,
            accept: request.accept,
            min_ttl: request.min_ttl,
            deadline: request.deadline,
        };
        let (_, cache::Cached { lease, .. }, outcome) = self.cached_lease(&wanted, &image, &stored).await?;
        crate::metrics::lease_issued(matches!(lease.grant, crate::domain::Grant::Bearer { .. }), outcome);
        let text = Arc::new(IssuedText::of(&image, &lease));
        Ok(Issued { image: Arc::new(image), lease, cached: outcome.cached(), text })
    }

    async fn cached_lease(
        &self,
        wanted: &Wanted<'_>,
        image: &ImageRef,
        stored: &Arc<StoredCredential>,
    ) -> Result<(CacheKey, cache::Cached, cache::CacheOutcome), Error> {
        let scope = Scope::request(image.repository(), wanted.actions);
        let key = CacheKey {
            uid: stored.credential.uid,
            updated: stored.credential.update_time,
            secret_version: stored.credential.secret_version,
            scope: scope.to_string(),
            accept: wanted.accept,
        };
        let (lease, outcome) = self
            .inner
            .cache
            .get_or_fetch(key.clone(), wanted.min_ttl, || async {
                let exchange = || self.exchange(wanted, image, stored, &scope, &key);
                match &self.inner.shared {
                    Some(shared) => shared.get_or_fetch(&key, wanted.min_ttl, wanted.deadline, exchange).await,
                    None => exchange().await.map(cache::Fetched::here),
                }
            })
            .await?;
        Ok((key, lease, outcome))
    }

    /// One upstream exchange for a cache miss (unless another replica saw
    /// the registry ask to wait); a `Retry-After` is shared with them.
    async fn exchange(
        &self,
        wanted: &Wanted<'_>,
        image: &ImageRef,
        stored: &Arc<StoredCredential>,
        scope: &Scope,
        key: &CacheKey,
    ) -> Result<Lease, Error> {
        if let Some(shared) = &self.inner.shared {
            shared.check_block(key, image.endpoint(), image.endpoint()).await?;
        }
        let secret = self.inner.credentials.open_secret(stored)?;
        let exchange = Exchange {
            credential: &stored.credential,
            endpoint: image.endpoint(),
            scope,
            accept: wanted.accept,
            deadline: wanted.deadline,
        };
        let result = self.inner.upstream.exchange(exchange, &secret).await;
        if let (Err(Failure::RateLimited(retry_after)), Some(shared)) = (&result, &self.inner.shared) {
            shared.block(key, image.endpoint(), *retry_after).await;
        }
        if let Some(reason) = result.as_ref().err().and_then(Failure::reason) {
            self.inner.usage.failed(&stored.credential, reason);
        }
        result.map_err(|failure| failure.into_error(&stored.credential.name, image.endpoint()))
    }

    /// Runs a fresh exchange for `repository` with a credential, bypassing
    /// the cache, to report whether it works.
    pub async fn test(
        &self,
        actor: &Actor,
        name: CredentialName,
        repository: &str,
        actions: &[Action],
        deadline: Instant,
    ) -> Result<TestReport, Error> {
        let stored = self.inner.credentials.get_stored(name).await?;
        let host = stored.credential.registry.host().clone();
        let image = ImageRef::parse(&format!("{host}/{repository}"))
            .map_err(|e| Error::invalid("repository", format!("`{}` {e}", crate::domain::ids::shorten(repository))))?;
        if !stored.credential.registry.serves(image.registry(), image.repository()) {
            return Err(Error::invalid(
                "repository",
                format!(
                    "`{}` is outside the credential's namespace {}",
                    image.repository(),
                    stored.credential.registry
                ),
            ));
        }
        let requested = Scope::request(image.repository(), actions);
        let secret = self.inner.credentials.open_secret(&stored)?;
        let exchange = Exchange {
            credential: &stored.credential,
            endpoint: image.endpoint(),
            scope: &requested,
            accept: Accept::Any,
            deadline,
        };
        let outcome = self.inner.upstream.exchange(exchange, &secret).await;
        // A test that passes is a use (the credential works); one the
        // registry refuses is a failure, as a lease's would be.
        let mut learned_expiry = None;
        match &outcome {
            Ok(_) => {
                self.inner.usage.used(&self.inner.usage.slot(&stored), &stored);
                learned_expiry = self.learn_expiry(actor, &stored, &secret, deadline).await;
            }
            Err(failure) => {
                if let Some(reason) = failure.reason() {
                    self.inner.usage.failed(&stored.credential, reason);
                }
            }
        }
        let outcome = outcome.map_err(|failure| failure.into_error(&stored.credential.name, image.endpoint()));
        let code = outcome.as_ref().err().map_or(0, Error::grpc_code);
        let mut event = actor.event(
            "TestCredential",
            stored.credential.name.workspace.as_str(),
            &stored.credential.name.to_string(),
            code,
        );
        event.granted_scope =
            outcome.as_ref().ok().and_then(|l| l.granted.as_ref()).map(ToString::to_string).unwrap_or_default();
        self.inner.auditor.record_lease(event);
        Ok(TestReport { requested, outcome, registry: image.endpoint().to_owned(), learned_expiry })
    }

    /// After a passing test: the token's own expiry, where the registry's
    /// owner reports it (GitHub, GitLab); stored on the credential, as an
    /// audited update by the tester, when it differs from what it holds.
    async fn learn_expiry(
        &self,
        actor: &Actor,
        stored: &StoredCredential,
        secret: &crate::secret::SecretBytes,
        deadline: Instant,
    ) -> Option<crate::domain::Timestamp> {
        let learned =
            crate::upstream::expiry::learn(&self.inner.upstream, &stored.credential, secret, deadline).await?;
        if stored.credential.expire_time != Some(learned)
            && let Err(e) = self.inner.credentials.record_learned_expiry(actor, &stored.credential, learned).await
        {
            tracing::warn!(error = %e, "could not store the expiry the registry reported");
        }
        Some(learned)
    }
}
