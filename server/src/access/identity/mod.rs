//! Workload identity: callers that present a signed JWT from an issuer
//! pullpass trusts (a Kubernetes service-account token, a GitHub Actions or
//! GitLab CI job token) instead of a `pp_…` token of their own.
//!
//! Two inputs, both plain data mapped from the stored resources:
//! * [`ProviderConfig`]: whose signatures are trusted (issuer, one
//!   [`KeySource`], audiences, algorithms, lifetime cap, clock skew);
//! * [`BindingRule`]: which claims earn which role and projects in a
//!   workspace.
//!
//! [`Identities::verify`] turns a token into a [`Verified`] identity or a
//! typed [`Refusal`] naming the check that failed; [`resolve`] turns a
//! verified identity and a workspace's bindings into a [`Grant`];
//! [`explain`] says, binding by binding, why a token matches or not.
//!
//! Verification, in order: the token's `iss` picks the provider (exact
//! string); the header rules ([`jose`]); the key by `kid` ([`keys`]); the
//! signature; then the claims: `exp`, `nbf` and `iat` must be numbers,
//! `exp` in the future and `nbf` in the past within the clock skew, `iat`
//! present and `exp - iat` at most the lifetime cap, and `aud` (a string or
//! an array) must hold one of the provider's audiences.
//!
//! Verified results are cached by the SHA-256 of the token until its `exp`
//! ([`MAX_VERIFIED`] at most), and reused only while the key that signed it
//! is in a key set younger than the refresh interval; [`Identities::clear`]
//! drops them all when providers or bindings change. A token is therefore
//! not single-use: it may be presented again until it expires, which
//! `max_token_lifetime` bounds.
//!
//! # Crates
//! JOSE parsing and the registered-claim checks are `jsonwebtoken` 12 with
//! `default-features = false`; the signatures are checked by our own
//! verify-only ring provider ([`jose`]). Why:
//! * `jsonwebtoken` is the maintained mainstream crate; 12.0 rejects unknown
//!   `crit` headers, fixes `sub`/`iss`/`aud` type confusion, and (since 10.3)
//!   refuses a malformed `exp`/`nbf` instead of skipping it (CVE-2026-25537
//!   hit 9.3.1, its last release on ring).
//! * Its `CryptoProvider` is public, so the cryptography stays ring, which
//!   the project uses for everything else; its own backends would add either
//!   the RustCrypto `rsa` crate (RUSTSEC-2023-0071, Marvin) or aws-lc-rs (a
//!   C and CMake build).
//! * The alternatives fit worse: `jwt-simple` builds on BoringSSL,
//!   `josekit` on OpenSSL, `openidconnect` brings RustCrypto and an OAuth
//!   client, and `biscuit` (ring) leaves `iss`/`aud` to the caller and has
//!   no EdDSA.
//!
//! ring cannot verify P-521, so ES512 is not offered.

pub mod callers;
pub mod claims;
pub mod jose;
pub mod keys;
#[cfg(test)]
mod test_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode};
use serde_json::{Map, Value};

pub use claims::{BindingExplanation, ClaimExplanation, explain, validate_binding};
pub use jose::SigningAlgorithm;
pub use keys::KeyPolicy;

use crate::domain::{ProjectName, Role};
use crate::error::{Error, Violations};
use crate::upstream::http::Http;
use keys::KeyCache;

/// A provider's lifetime cap when it sets none: one hour.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The highest lifetime cap a provider may set: a day.
pub const MAX_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A provider's clock skew when it sets none.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The highest clock skew a provider may set.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Most audiences per provider.
pub const MAX_AUDIENCES: usize = 16;
/// Longest issuer or audience, in bytes.
pub const MAX_ISSUER_LEN: usize = 512;
/// Most verified tokens remembered.
pub const MAX_VERIFIED: usize = 10_000;

/// Where a provider's signing keys come from (the domain's type).
pub use crate::domain::KeySource;

/// An identity provider: whose signatures are trusted, and on what terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Its id (the last part of `identityProviders/{identity_provider}`);
    /// bindings name it.
    pub id: String,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Where its keys come from.
    pub key_source: KeySource,
    /// PEM certificates to trust for the key source, besides the public
    /// roots; empty for none.
    pub ca_certificates_pem: String,
    /// A token's `aud` must hold one of these.
    pub audiences: Vec<String>,
    /// Algorithms its tokens may use ([`SigningAlgorithm::DEFAULT`] when
    /// the resource says nothing).
    pub allowed_algorithms: Vec<SigningAlgorithm>,
    /// `exp - iat` above this is refused ([`DEFAULT_MAX_TOKEN_LIFETIME`],
    /// at most [`MAX_MAX_TOKEN_LIFETIME`]).
    pub max_token_lifetime: Duration,
    /// Leeway for `exp` and `nbf` ([`DEFAULT_CLOCK_SKEW`], at most
    /// [`MAX_CLOCK_SKEW`]).
    pub clock_skew: Duration,
}

impl ProviderConfig {
    /// A provider with the default algorithms, lifetime cap and skew.
    pub fn new(id: &str, issuer: &str, key_source: KeySource, audiences: &[&str]) -> Self {
        Self {
            id: id.to_owned(),
            issuer: issuer.to_owned(),
            key_source,
            ca_certificates_pem: String::new(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            allowed_algorithms: SigningAlgorithm::DEFAULT.to_vec(),
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }

    /// Checks a provider before it is stored. Fields are named as in
    /// `identity_provider`.
    pub fn validate(&self) -> Result<(), Error> {
        let mut violations = Violations::default();
        let text_ok = |s: &str| !s.is_empty() && s.len() <= MAX_ISSUER_LEN && !s.chars().any(char::is_control);
        if !text_ok(&self.issuer) {
            violations.add(
                "identity_provider.issuer",
                format!("an issuer is 1-{MAX_ISSUER_LEN} bytes, no control characters"),
            );
        }
        match &self.key_source {
            KeySource::Discovery => {
                if let Err(why) = keys::check_url(&keys::discovery_url(&self.issuer)) {
                    violations.add("identity_provider.issuer", format!("discovery needs an issuer URL: {why}"));
                }
            }
            KeySource::JwksUri(url) => {
                if let Err(why) = keys::check_url(url) {
                    violations.add("identity_provider.jwks_uri", why);
                }
            }
            KeySource::Jwks(json) => match keys::KeySet::parse(json.as_bytes()) {
                Ok(set) if !set.is_empty() => {}
                Ok(_) => violations.add("identity_provider.jwks", "the key set holds no usable signing key"),
                Err(why) => violations.add("identity_provider.jwks", why),
            },
        }
        if !self.ca_certificates_pem.is_empty() {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs: Result<Vec<_>, _> =
                CertificateDer::pem_slice_iter(self.ca_certificates_pem.as_bytes()).collect();
            match certs {
                Ok(certs) if !certs.is_empty() => {}
                _ => violations.add("identity_provider.ca_certificates", "not PEM certificates"),
            }
        }
        if self.audiences.is_empty() || self.audiences.len() > MAX_AUDIENCES {
            violations.add("identity_provider.audiences", format!("name 1-{MAX_AUDIENCES} audiences"));
        } else if !self.audiences.iter().all(|a| text_ok(a)) {
            violations.add(
                "identity_provider.audiences",
                format!("an audience is 1-{MAX_ISSUER_LEN} bytes, no control characters"),
            );
        }
        if self.allowed_algorithms.is_empty() {
            violations.add("identity_provider.allowed_algorithms", "allow at least one algorithm");
        }
        if self.max_token_lifetime.is_zero() || self.max_token_lifetime > MAX_MAX_TOKEN_LIFETIME {
            violations.add("identity_provider.max_token_lifetime", "between 1 s and 24 h");
        }
        if self.clock_skew > MAX_CLOCK_SKEW {
            violations.add("identity_provider.clock_skew", "at most 60 s");
        }
        violations.finish()
    }
}

/// A binding: tokens of `provider` whose claims all match earn `role` and
/// `allowed_projects` in the workspace the binding belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRule {
    /// Its name (what grants and explanations show).
    pub name: String,
    /// The id of the provider whose tokens it binds.
    pub provider: String,
    /// Claim (name or JSON pointer) and pattern, all of which must match.
    pub bound_claims: Vec<(String, String)>,
    /// LAUNCHER or VIEWER.
    pub role: Role,
    /// The projects it grants; empty for all.
    pub allowed_projects: Vec<ProjectName>,
}

/// Why a token was refused: which check failed. It never holds the token
/// or a claim value, only the names of claims and header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a signed JWT: not three base64url parts of JSON, too long, no
    /// `alg`, a `kid` that is not a short string.
    Malformed,
    /// No provider has the token's `iss`.
    IssuerUnknown,
    /// `alg` is `none`, HS*, or not on the provider's list.
    AlgorithmNotAllowed,
    /// The header has a parameter that is never accepted.
    ForbiddenHeader(&'static str),
    /// The provider's key set has no key with the token's `kid`.
    KeyUnknown,
    /// The key with that `kid` is not of the algorithm's type.
    KeyTypeMismatch,
    /// The signature does not verify.
    Signature,
    /// `aud` holds none of the provider's audiences.
    Audience,
    /// A required claim is missing.
    ClaimMissing(&'static str),
    /// A claim has the wrong type (`exp` as a string).
    ClaimFormat(&'static str),
    /// `exp` is past, beyond the clock skew.
    Expired,
    /// `nbf` or `iat` is ahead, beyond the clock skew.
    NotYetValid,
    /// `exp - iat` is above the provider's cap.
    LifetimeOverCap,
    /// The provider's keys could not be fetched, and the last good set is
    /// too old (or there never was one).
    KeySourceUnreachable,
}

impl Refusal {
    /// A stable short name for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::IssuerUnknown => "issuer_unknown",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::ForbiddenHeader(_) => "forbidden_header",
            Self::KeyUnknown => "key_unknown",
            Self::KeyTypeMismatch => "key_type_mismatch",
            Self::Signature => "signature",
            Self::Audience => "audience",
            Self::ClaimMissing(_) => "claim_missing",
            Self::ClaimFormat(_) => "claim_format",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::LifetimeOverCap => "lifetime_over_cap",
            Self::KeySourceUnreachable => "key_source_unreachable",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed => f.write_str("the identity token is not a well-formed signed JWT"),
            Self::IssuerUnknown => f.write_str("the identity token's issuer is not a known identity provider"),
            Self::AlgorithmNotAllowed => f.write_str("the identity token's algorithm is not allowed for its issuer"),
            Self::ForbiddenHeader(name) => {
                write!(f, "the identity token's header has `{name}`, which is never accepted")
            }
            Self::KeyUnknown => f.write_str("the identity token's signing key is not in its issuer's key set"),
            Self::KeyTypeMismatch => f.write_str("the identity token's signing key does not fit its algorithm"),
            Self::Signature => f.write_str("the identity token's signature does not verify"),
            Self::Audience => f.write_str("the identity token's audience is not one its issuer is trusted for"),
            Self::ClaimMissing(name) => write!(f, "the identity token has no `{name}` claim"),
            Self::ClaimFormat(name) => write!(f, "the identity token's `{name}` claim has the wrong type"),
            Self::Expired => f.write_str("the identity token has expired"),
            Self::NotYetValid => f.write_str("the identity token is not yet valid (its nbf is in the future)"),
            Self::LifetimeOverCap => f.write_str("the identity token's lifetime (exp - iat) is above its issuer's cap"),
            Self::KeySourceUnreachable => {
                f.write_str("the identity token's issuer's keys cannot be fetched (key source unreachable)")
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// A token that passed verification: who it stands for. `Debug` shows the
/// provider and the names of the claims, never their values.
#[derive(Clone, PartialEq)]
pub struct Verified {
    /// The id of the provider that verified it.
    pub provider: String,
    /// Its `iss`.
    pub issuer: String,
    /// Its `sub`, if any.
    pub subject: Option<String>,
    /// The `kid` of the key that signed it.
    pub kid: Option<String>,
    /// Its `exp`, in seconds since the epoch.
    pub expires_at: u64,
    /// All its claims.
    pub claims: Map<String, Value>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("provider", &self.provider)
            .field("expires_at", &self.expires_at)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Verified {
    /// A string claim by name or JSON pointer.
    pub fn claim_text(&self, claim: &str) -> Option<&str> {
        claims::ClaimPath::parse(claim).ok()?.lookup(&self.claims)?.as_str()
    }

    /// For a Kubernetes service-account token, its namespace.
    pub fn kubernetes_namespace(&self) -> Option<&str> {
        self.claim_text("/kubernetes.io/namespace")
    }

    /// For a Kubernetes service-account token, its service account's name.
    pub fn kubernetes_service_account(&self) -> Option<&str> {
        self.claim_text("/kubernetes.io/serviceaccount/name")
    }

    #[cfg(test)]
    pub(crate) fn for_tests(provider: &str, claims: Map<String, Value>) -> Self {
        Self {
            provider: provider.to_owned(),
            issuer: String::new(),
            subject: None,
            kid: None,
            expires_at: u64::MAX,
            claims,
        }
    }
}

/// What a verified identity gets in one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// LAUNCHER if every matching binding says so, else VIEWER.
    pub role: Role,
    /// The union of the matching bindings' projects; empty for all.
    pub projects: Vec<ProjectName>,
    /// The names of the matching bindings (for audit).
    pub bindings: Vec<String>,
}

/// What `verified` gets from a workspace's `bindings`: the bindings of its
/// provider whose claims all match decide. `None` if none does.
///
/// Several matching bindings give the union of their projects (a binding
/// with no projects means all of them, and then so does the grant) and
/// their role if they agree. If they disagree, the grant is VIEWER: the
/// role that issues no registry auth, so adding a binding never widens
/// what a caller's credentials can pull. A binding with any other role
/// matches nothing.
pub fn resolve(verified: &Verified, bindings: &[BindingRule]) -> Option<Grant> {
    let matching: Vec<&BindingRule> = bindings
        .iter()
        .filter(|b| b.provider == verified.provider && matches!(b.role, Role::Launcher | Role::Viewer))
        .filter(|b| claims::binding_matches(b, &verified.claims))
        .collect();
    let first = matching.first()?;
    let role = if matching.iter().all(|b| b.role == first.role) { first.role } else { Role::Viewer };
    let projects = if matching.iter().any(|b| b.allowed_projects.is_empty()) {
        Vec::new()
    } else {
        let mut all: Vec<ProjectName> = matching.iter().flat_map(|b| b.allowed_projects.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    };
    Some(Grant { role, projects, bindings: matching.iter().map(|b| b.name.clone()).collect() })
}

/// A provider with its key cache.
#[derive(Debug)]
struct Provider {
    config: ProviderConfig,
    keys: KeyCache,
}

/// Verified tokens by the SHA-256 of the token, and the generation they
/// belong to: [`Identities::clear`] starts a new one, so a verification
/// that began before a change cannot remember its result after it.
#[derive(Debug, Default)]
struct Memory {
    generation: u64,
    verified: HashMap<[u8; 32], Arc<Verified>>,
}

/// The verification service: the providers, their key caches, and the
/// verified tokens.
pub struct Identities {
    http: Http,
    policy: KeyPolicy,
    /// Providers by issuer.
    providers: RwLock<Arc<HashMap<String, Arc<Provider>>>>,
    memory: Mutex<Memory>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("providers", &self.providers().len())
            .field("remembered", &self.memory().verified.len())
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// A service with no providers (every token is refused until
    /// [`Identities::set_providers`]), installing the ring provider into
    /// `jsonwebtoken`.
    pub fn new() -> Result<Self, String> {
        Self::with_policy(KeyPolicy::default())
    }

    /// The same with another key-cache policy.
    pub fn with_policy(policy: KeyPolicy) -> Result<Self, String> {
        jose::install()?;
        Ok(Self { http: Http::new()?, policy, providers: RwLock::default(), memory: Mutex::default() })
    }

    /// Replaces the providers. Providers whose configuration did not change
    /// keep their cached keys; every verified token is forgotten.
    ///
    /// A token picks its provider by its `iss`, so issuers must be unique
    /// (the store refuses a second provider for an issuer); of two, the
    /// first is kept and the second ignored, with a warning.
    pub fn set_providers(&self, configs: Vec<ProviderConfig>) {
        let current = self.providers();
        let mut next: HashMap<String, Arc<Provider>> = HashMap::with_capacity(configs.len());
        for config in configs {
            if let Some(kept) = next.get(&config.issuer) {
                tracing::warn!(identity_provider = %config.id, kept = %kept.config.id, "two identity providers have one issuer; ignoring the second");
                continue;
            }
            let provider = match current.get(&config.issuer) {
                Some(kept) if kept.config == config => kept.clone(),
                _ => Arc::new(Provider { keys: KeyCache::new(&config, self.policy), config }),
            };
            next.insert(provider.config.issuer.clone(), provider);
        }
        *self.providers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.clear();
    }

    /// Is the key `kid` of `issuer`'s provider still in a fresh key set?
    /// A principal remembered outside this verifier is used only while it
    /// is: a key removed from the set ends the tokens it signed.
    pub fn still_vouched_for(&self, issuer: &str, kid: Option<&str>) -> bool {
        self.providers().get(issuer).is_some_and(|provider| provider.keys.vouches_for(kid, Instant::now()))
    }

    /// Forgets every verified token (providers or bindings changed).
    pub fn clear(&self) {
        let mut memory = self.memory();
        memory.generation += 1;
        memory.verified.clear();
    }

    fn providers(&self) -> Arc<HashMap<String, Arc<Provider>>> {
        self.providers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies a token (see the module documentation for the checks).
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, Refusal> {
        self.verify_at(token, Instant::now(), unix_now()).await
    }

    /// [`Identities::verify`] at a given moment of the key cache's clock
    /// (`now`) and of the wall clock (`unix`, seconds).
    async fn verify_at(&self, token: &str, now: Instant, unix: u64) -> Result<Arc<Verified>, Refusal> {
        let parts = jose::split(token)?;
        let hash = crate::access::token::hash_token(token);
        // The generation before the providers: a change between the two
        // makes this result one that is not remembered.
        let generation = self.memory().generation;
        let providers = self.providers();
        if let Some(verified) = self.recall(&hash, &providers, now, unix) {
            return Ok(verified);
        }
        let payload = jose::decode_object(parts.payload)?;
        let issuer = match payload.get("iss") {
            Some(Value::String(issuer)) => issuer,
            Some(_) => return Err(Refusal::ClaimFormat("iss")),
            None => return Err(Refusal::ClaimMissing("iss")),
        };
        let provider = providers.get(issuer).ok_or(Refusal::IssuerUnknown)?;
        let config = &provider.config;
        let header = jose::check_header(parts.header, &config.allowed_algorithms)?;
        let key = provider.keys.key(&self.http, header.kid.as_deref(), header.alg, now).await?;
        jose::check_key_matches(&key, header.alg)?;

        let mut validation = Validation::new(header.alg.jose());
        validation.leeway = config.clock_skew.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&config.audiences);
        validation.set_issuer(&[&config.issuer]);
        // `exp` is required by `check_times`, after the signature: required
        // here, a string `exp` would read as missing rather than mistyped.
        validation.set_required_spec_claims(&["iss", "aud"]);
        let claims = decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match refusal_of(e.kind()) {
                // `jsonwebtoken` calls a required claim of the wrong type missing.
                Refusal::ClaimMissing(name) if payload.contains_key(name) => Refusal::ClaimFormat(name),
                other => other,
            })?
            .claims;

        let expires_at = check_times(&claims, config, unix)?;
        let subject = match claims.get("sub") {
            None => None,
            Some(Value::String(sub)) => Some(sub.clone()),
            Some(_) => return Err(Refusal::ClaimFormat("sub")),
        };
        let verified = Arc::new(Verified {
            provider: config.id.clone(),
            issuer: config.issuer.clone(),
            subject,
            kid: header.kid,
            expires_at,
            claims,
        });
        self.remember(hash, verified.clone(), unix, generation);
        Ok(verified)
    }

    /// A remembered result for `hash`, if it has not expired and the key
    /// that signed it is still in a fresh key set of its provider.
    fn recall(
        &self,
        hash: &[u8; 32],
        providers: &HashMap<String, Arc<Provider>>,
        now: Instant,
        unix: u64,
    ) -> Option<Arc<Verified>> {
        let verified = self.memory().verified.get(hash)?.clone();
        let provider = providers.get(&verified.issuer)?;
        let usable = unix < verified.expires_at && provider.keys.vouches_for(verified.kid.as_deref(), now);
        if !usable {
            self.memory().verified.remove(hash);
        }
        usable.then_some(verified)
    }

    fn remember(&self, hash: [u8; 32], verified: Arc<Verified>, unix: u64, generation: u64) {
        let mut memory = self.memory();
        if memory.generation != generation {
            return;
        }
        let remembered = &mut memory.verified;
        if remembered.len() >= MAX_VERIFIED && !remembered.contains_key(&hash) {
            remembered.retain(|_, v| unix < v.expires_at);
            if remembered.len() >= MAX_VERIFIED {
                remembered.clear();
            }
        }
        remembered.insert(hash, verified);
    }
}

/// Seconds since the epoch, by the wall clock.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `jsonwebtoken` error as the check that failed.
fn refusal_of(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => Refusal::Signature,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidAudience => Refusal::Audience,
        ErrorKind::InvalidIssuer => Refusal::IssuerUnknown,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            Refusal::AlgorithmNotAllowed
        }
        ErrorKind::MissingRequiredClaim(name) => Refusal::ClaimMissing(registered_name(name)),
        ErrorKind::InvalidClaimFormat(name) => Refusal::ClaimFormat(registered_name(name)),
        _ => Refusal::Malformed,
    }
}

/// A registered claim's name as a static string (never echoing input).
fn registered_name(name: &str) -> &'static str {
    ["exp", "nbf", "iat", "iss", "aud", "sub"].into_iter().find(|known| *known == name).unwrap_or("registered")
}

/// The checks `jsonwebtoken` leaves to us: `exp`, `nbf` and `iat` are
/// numbers (`iat` required), `iat` is not ahead beyond the skew, and
/// `exp - iat` is within the cap. Returns `exp`.
fn check_times(claims: &Map<String, Value>, config: &ProviderConfig, unix: u64) -> Result<u64, Refusal> {
    let number = |name: &'static str| match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_f64().filter(|v| v.is_finite() && *v >= 0.0).map(Some).ok_or(Refusal::ClaimFormat(name))
        }
        Some(_) => Err(Refusal::ClaimFormat(name)),
    };
    let exp = number("exp")?.ok_or(Refusal::ClaimMissing("exp"))?;
    number("nbf")?;
    let iat = number("iat")?.ok_or(Refusal::ClaimMissing("iat"))?;
    if iat > (unix + config.clock_skew.as_secs()) as f64 {
        return Err(Refusal::NotYetValid);
    }
    if exp - iat > config.max_token_lifetime.as_secs_f64() {
        return Err(Refusal::LifetimeOverCap);
    }
    Ok(exp as u64)
}

#[cfg(test)]
mod tests;
