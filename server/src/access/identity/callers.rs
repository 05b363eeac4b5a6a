//! Workload identities as callers: a JWT presented where an access token
//! would be becomes the same [`Principal`] a `pp_` token does, with the
//! grants the bindings of each workspace give it (see `policy`).
//!
//! The providers and bindings are read from the store on first use and
//! again after any change to them (`Change::Identity`, from this replica or,
//! through the change feed, another); a load that raced a change is used
//! once but not kept. A verified token's principal is remembered by the
//! token's SHA-256 until its `exp` or the next change, so a cached lease
//! with a JWT caller costs what one with an access token does: a hash and a
//! map lookup. A token is not single-use: kubelet caches one answer per
//! service account, and launchers reuse a job token for many calls; the
//! bound on replay is the provider's `max_token_lifetime` and its audience.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{BindingRule, Identities, ProviderConfig, Refusal, SigningAlgorithm, Verified, explain, resolve};
use crate::access::{IdentityCaller, Principal, WorkspaceGrant};
use crate::domain::{
    AccessTokenId, IdentityBinding, IdentityProvider, IdentityProviderId, Role, Timestamp, WorkspaceId,
};
use crate::error::Error;
use crate::store::Store;

/// Principals of verified tokens remembered at most (then forgotten all at
/// once).
const MAX_PRINCIPALS: usize = 10_000;
/// Reads of the providers and bindings a call makes while changes keep
/// landing, before it gives up.
const LOAD_ATTEMPTS: usize = 5;

/// The providers and bindings as last read.
#[derive(Debug, Default)]
struct Loaded {
    providers: Vec<IdentityProvider>,
    /// Bindings by provider id.
    bindings: HashMap<String, Vec<(WorkspaceId, BindingRule, IdentityBinding)>>,
}

/// A verified token's principal, and what it was verified as (for its
/// `exp`, and the key that signed it, which must still be published).
type Remembered = (Arc<Principal>, Arc<Verified>);

/// Turns identity JWTs into principals.
pub struct IdentityCallers {
    store: Store,
    verifier: Identities,
    loaded: RwLock<Option<Arc<Loaded>>>,
    principals: RwLock<HashMap<[u8; 32], Remembered>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for IdentityCallers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCallers").finish_non_exhaustive()
    }
}

/// Does `presented` look like a JWT (three base64url parts), rather than an
/// access token?
/// Only the dots are looked for (a `pp_` token has none): this runs on
/// every call, and whatever else is wrong with a JWT, verification says.
pub fn looks_like_jwt(presented: &str) -> bool {
    let mut parts = presented.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(header), Some(payload), Some(_), None) if !header.is_empty() && !payload.is_empty()
    )
}

impl IdentityCallers {
    /// Callers over `store`'s providers and bindings.
    pub fn new(store: Store) -> Result<Self, String> {
        Ok(Self {
            store,
            verifier: Identities::new()?,
            loaded: RwLock::default(),
            principals: RwLock::default(),
            generation: AtomicU64::new(0),
        })
    }

    /// Providers or bindings changed: everything derived from them goes.
    pub fn changed(&self) {
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        *loaded = None;
        self.principals.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.verifier.clear();
    }

    /// The principal of a presented JWT; UNAUTHENTICATED naming the check
    /// that failed (never the token).
    pub async fn principal(&self, token: &str) -> Result<Arc<Principal>, Error> {
        let hash = crate::access::token::hash_token(token);
        if let Some(principal) = self.remembered_by(&hash) {
            return Ok(principal);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let loaded = self.loaded().await?;
        let verified = self.verifier.verify(token).await.map_err(|refusal| {
            let provider = issuer_of(token).and_then(|issuer| loaded.providers.iter().find(|p| p.issuer == issuer));
            crate::metrics::identity_verification(provider.map_or("", |p| p.id.as_str()), refusal.label());
            refused(refusal)
        })?;
        crate::metrics::identity_verification(&verified.provider, "verified");
        let principal = Arc::new(principal_of(&verified, &loaded));
        let mut principals = self.principals.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) == generation {
            if principals.len() >= MAX_PRINCIPALS {
                principals.clear();
            }
            principals.insert(hash, (Arc::clone(&principal), Arc::clone(&verified)));
        }
        Ok(principal)
    }

    /// The principal of a token verified before and not expired, without
    /// waiting for anything: the hot path, which needs no deadline.
    pub fn remembered(&self, token: &str) -> Option<Arc<Principal>> {
        self.remembered_by(&crate::access::token::hash_token(token))
    }

    fn remembered_by(&self, hash: &[u8; 32]) -> Option<Arc<Principal>> {
        let now = Timestamp::now().as_micros() / 1_000_000;
        let principals = self.principals.read().unwrap_or_else(|p| p.into_inner());
        let (principal, verified) = principals.get(hash)?;
        let usable = (verified.expires_at as i64) > now
            && self.verifier.still_vouched_for(&verified.issuer, verified.kid.as_deref());
        usable.then(|| Arc::clone(principal))
    }

    /// The principal behind a gateway password a workload identity was
    /// given: the grant of the bindings it names in `workspace`, if every
    /// one of them is still there, unchanged (else it ends, as a revoked
    /// token's password does).
    pub async fn principal_for_password(
        &self,
        token_id: &AccessTokenId,
        workspace: &WorkspaceId,
        named: &crate::access::gateway_password::IdentityRef,
        expires: Timestamp,
    ) -> Result<Arc<Principal>, Error> {
        let loaded = self.loaded().await?;
        let current = loaded.bindings.get(&named.provider).map(Vec::as_slice).unwrap_or_default();
        let mut rules = Vec::new();
        for (name, updated) in &named.bindings {
            let found = current
                .iter()
                .find(|(w, rule, binding)| w == workspace && &rule.name == name && binding.update_time == *updated);
            match found {
                Some((_, rule, _)) => rules.push(rule.clone()),
                None => {
                    return Err(Error::Unauthenticated(
                        "an identity binding this gateway password stands on changed or was deleted: ask for another"
                            .into(),
                    ));
                }
            }
        }
        let role = if rules.iter().all(|r| r.role == Role::Launcher) { Role::Launcher } else { Role::Viewer };
        let projects = if rules.iter().any(|r| r.allowed_projects.is_empty()) {
            Vec::new()
        } else {
            let mut all: Vec<_> = rules.iter().flat_map(|r| r.allowed_projects.iter().cloned()).collect();
            all.sort();
            all.dedup();
            all
        };
        let provider = IdentityProviderId::parse(&named.provider)
            .map_err(|_| Error::Unauthenticated("unknown identity provider".into()))?;
        let grant = WorkspaceGrant { role, projects: projects.clone(), bindings: named.bindings.clone() };
        let names: Vec<&str> = named.bindings.iter().map(|(n, _)| n.as_str()).collect();
        Ok(Arc::new(Principal {
            token_id: token_id.clone(),
            resource_name: format!("{}/gatewayPasswords via {}", provider.name(), names.join(",")).into(),
            role,
            workspace: Some(workspace.clone()),
            projects,
            expire_time: Some(expires),
            identity: Some(Arc::new(IdentityCaller { provider, grants: [(workspace.clone(), grant)].into() })),
        }))
    }

    /// Verifies `token` and explains, binding by binding of `workspace`,
    /// which bound claims match (TestIdentityToken).
    pub async fn explain(&self, workspace: &WorkspaceId, token: &str) -> Result<Explanation, Error> {
        let loaded = self.loaded().await?;
        let verified = match self.verifier.verify(token).await {
            Ok(verified) => verified,
            Err(refusal) => {
                let provider = issuer_of(token)
                    .and_then(|issuer| loaded.providers.iter().find(|p| p.issuer == issuer))
                    .map(|p| p.id.clone());
                return Ok(Explanation { provider, refusal: Some(refusal.to_string()), ..Explanation::default() });
            }
        };
        let rules: Vec<BindingRule> = loaded
            .bindings
            .get(&verified.provider)
            .into_iter()
            .flatten()
            .filter(|(w, _, _)| w == workspace)
            .map(|(_, rule, _)| rule.clone())
            .collect();
        let grant = resolve(&verified, &rules);
        Ok(Explanation {
            provider: IdentityProviderId::parse(&verified.provider).ok(),
            refusal: None,
            role: grant.as_ref().map(|g| g.role),
            projects: grant.map(|g| g.projects.iter().map(ToString::to_string).collect()).unwrap_or_default(),
            bindings: explain(&rules, &verified),
        })
    }

    /// The providers and bindings, read from the store unless held. A read
    /// that raced a change is read again (it may predate the change), and
    /// only a read no change overlapped is handed to the verifier: an
    /// older read installed after a newer one would keep a provider's old
    /// keys or audiences in force until the next change.
    async fn loaded(&self) -> Result<Arc<Loaded>, Error> {
        for _ in 0..LOAD_ATTEMPTS {
            if let Some(loaded) = self.loaded.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
                return Ok(Arc::clone(loaded));
            }
            let generation = self.generation.load(Ordering::SeqCst);
            let providers = self.store.identity_providers().await?;
            let bindings = self.store.identity_bindings(None).await?;
            let mut by_provider: HashMap<String, Vec<(WorkspaceId, BindingRule, IdentityBinding)>> = HashMap::new();
            for binding in bindings {
                let rule = rule_of(&binding);
                by_provider.entry(binding.provider.as_str().to_owned()).or_default().push((
                    binding.name.workspace.clone(),
                    rule,
                    binding,
                ));
            }
            let loaded = Arc::new(Loaded { providers, bindings: by_provider });
            let mut slot = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            if self.generation.load(Ordering::SeqCst) == generation {
                self.verifier.set_providers(loaded.providers.iter().map(config_of).collect());
                *slot = Some(Arc::clone(&loaded));
                return Ok(loaded);
            }
        }
        Err(Error::Unavailable {
            reason: pullpass::reason::REPLICA_STALE,
            message: "identity providers or bindings kept changing while they were read; retry shortly".into(),
            retry_after: Some(std::time::Duration::from_secs(1)),
        })
    }
}

/// What TestIdentityToken answers.
#[derive(Debug, Default)]
pub struct Explanation {
    /// The provider of the token's issuer, if trusted.
    pub provider: Option<IdentityProviderId>,
    /// Which check failed, if one did.
    pub refusal: Option<String>,
    /// The role the workspace's bindings grant, if any does.
    pub role: Option<Role>,
    /// And the projects (empty: all).
    pub projects: Vec<String>,
    /// Every binding of the workspace for the provider, checked.
    pub bindings: Vec<super::BindingExplanation>,
}

/// The `iss` of an unverified token (to name its provider in an
/// explanation; nothing is trusted from it).
fn issuer_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

fn refused(refusal: Refusal) -> Error {
    Error::Unauthenticated(format!("workload identity token refused: {refusal}"))
}

/// The verifier's view of a stored provider.
pub fn config_of(provider: &IdentityProvider) -> ProviderConfig {
    ProviderConfig {
        id: provider.id.as_str().to_owned(),
        issuer: provider.issuer.clone(),
        key_source: provider.key_source.clone(),
        ca_certificates_pem: provider.ca_certificates.clone(),
        audiences: provider.audiences.clone(),
        allowed_algorithms: provider
            .allowed_algorithms
            .iter()
            .filter_map(|a| SigningAlgorithm::parse(a).ok())
            .collect(),
        max_token_lifetime: provider.max_token_lifetime,
        clock_skew: provider.clock_skew,
    }
}

/// The verifier's view of a stored binding.
pub fn rule_of(binding: &IdentityBinding) -> BindingRule {
    BindingRule {
        name: binding.name.to_string(),
        provider: binding.provider.as_str().to_owned(),
        bound_claims: binding.bound_claims.clone(),
        role: binding.role,
        allowed_projects: binding.allowed_projects.clone(),
    }
}

/// The principal a verified token stands for.
fn principal_of(verified: &Verified, loaded: &Loaded) -> Principal {
    let mut by_workspace: BTreeMap<WorkspaceId, Vec<BindingRule>> = BTreeMap::new();
    for (workspace, rule, _) in loaded.bindings.get(&verified.provider).into_iter().flatten() {
        by_workspace.entry(workspace.clone()).or_default().push(rule.clone());
    }
    let updated: HashMap<&str, Timestamp> = loaded
        .bindings
        .get(&verified.provider)
        .into_iter()
        .flatten()
        .map(|(_, rule, binding)| (rule.name.as_str(), binding.update_time))
        .collect();
    let grants: BTreeMap<WorkspaceId, WorkspaceGrant> = by_workspace
        .into_iter()
        .filter_map(|(workspace, rules)| {
            resolve(verified, &rules).map(|g| {
                let bindings = g
                    .bindings
                    .into_iter()
                    .map(|name| {
                        let time = updated.get(name.as_str()).copied().unwrap_or_default();
                        (name, time)
                    })
                    .collect();
                (workspace, WorkspaceGrant { role: g.role, projects: g.projects, bindings })
            })
        })
        .collect();
    let provider = IdentityProviderId::parse(&verified.provider).unwrap_or_else(|_| unknown_provider());
    let subject = verified.subject.as_deref().unwrap_or("");
    let subject: String = crate::domain::ids::shorten(subject)
        .trim_matches('`')
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let only = (grants.len() == 1).then(|| grants.iter().next()).flatten();
    let mut resource_name = format!("{}/subjects/{subject}", provider.name());
    if let Some((_, grant)) = only {
        // Bindings of one workspace only: no other tenant's names in it.
        let names: Vec<&str> = grant.bindings.iter().map(|(name, _)| name.as_str()).collect();
        resource_name.push_str(&format!(" via {}", names.join(",")));
    }
    let role = if grants.values().any(|g| g.role == Role::Launcher) { Role::Launcher } else { Role::Viewer };
    Principal {
        token_id: synthetic_id(&verified.provider, subject.as_str()),
        resource_name: resource_name.into(),
        role,
        workspace: only.map(|(w, _)| w.clone()),
        projects: only.map(|(_, g)| g.projects.clone()).unwrap_or_default(),
        expire_time: Some(Timestamp::from_micros(verified.expires_at as i64 * 1_000_000)),
        identity: Some(Arc::new(IdentityCaller { provider, grants })),
    }
}

fn unknown_provider() -> IdentityProviderId {
    // A verified token's provider id came from a stored, parsed id, so this
    // is never needed; "unknown" is a valid id.
    IdentityProviderId::parse("unknown").unwrap_or_else(|_| unreachable!("`unknown` is a valid provider id"))
}

/// A stable id for an identity (provider and subject), for what keys on a
/// token id: the per-caller rate limit.
fn synthetic_id(provider: &str, subject: &str) -> AccessTokenId {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{provider}\n{subject}").as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    AccessTokenId::parse(&format!("wi{hex}")).unwrap_or_else(|_| unreachable!("hex is a valid token id"))
}
