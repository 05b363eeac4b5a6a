//! Identity providers and identity bindings: the service that checks,
//! stores and audits them (the gRPC and console front ends call it, as
//! `workspaces.rs` is called for workspaces).
//!
//! A provider (ROOT) says whose signatures pullpass trusts: the issuer, one
//! key source, the audiences, the algorithms, the lifetime cap and the clock
//! skew. A binding (a workspace's ADMIN) says which claims earn which role
//! and projects in that workspace. Every rule of the API is checked here and
//! reported field by field; what is stored is valid. Changes are published
//! on the change feed, so the verifier's caches on this and (through the
//! database) every other replica drop what they derived within a second.
//! Verifying tokens is `access::identity`'s job, not this module's.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::Actor;
use crate::changes::{Change, ChangeFeed};
use crate::domain::{
    IdentityBinding, IdentityBindingId, IdentityBindingName, IdentityProvider, IdentityProviderId, KeySource,
    ProjectName, Role, Timestamp, WorkspaceId,
};
use crate::error::{Error, Violations};
use crate::paging::{Page, PageTokens, page_size};
use crate::store::{ProviderDeletion, Replaced, Store};

/// Algorithms a provider may allow (JOSE names). Never `none` nor HS*.
pub const ALLOWED_ALGORITHMS: &[&str] =
    &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
/// Algorithms allowed when a provider names none.
pub const DEFAULT_ALGORITHMS: &[&str] = &["RS256", "ES256"];
/// Default and largest `max_token_lifetime`.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const MAX_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default and largest `clock_skew`.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Claims that say nothing about who the caller is: a binding must bind at
/// least one other.
pub const NON_IDENTIFYING_CLAIMS: &[&str] = &["aud", "iss", "exp", "nbf", "iat"];

const MAX_DESCRIPTION_CHARS: usize = 500;
const MAX_ISSUER_BYTES: usize = 1024;
const MAX_AUDIENCES: usize = 16;
const MAX_AUDIENCE_BYTES: usize = 256;
const MAX_JWKS_BYTES: usize = 64 * 1024;
const MAX_CA_BYTES: usize = 256 * 1024;
const MAX_BOUND_CLAIMS: usize = 32;
const MAX_CLAIM_BYTES: usize = 256;
const MAX_PATTERN_BYTES: usize = 512;

/// A provider as asked for (before checks).
#[derive(Debug, Clone, Default)]
pub struct ProviderInput {
    /// The exact `iss`.
    pub issuer: String,
    /// A JWKS URL, or empty.
    pub jwks_uri: String,
    /// An inline JWKS, or empty.
    pub jwks: String,
    /// CA certificates (PEM), or empty.
    pub ca_certificates: String,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Algorithms (empty: the defaults).
    pub allowed_algorithms: Vec<String>,
    /// Lifetime cap (`None`: the default).
    pub max_token_lifetime: Option<Duration>,
    /// Clock skew (`None`: the default).
    pub clock_skew: Option<Duration>,
    /// Free text.
    pub description: String,
}

/// A binding as asked for (before checks).
#[derive(Debug, Clone, Default)]
pub struct BindingInput {
    /// `identityProviders/{id}`.
    pub identity_provider: String,
    /// Claim to pattern.
    pub bound_claims: Vec<(String, String)>,
    /// The role's wire number.
    pub role: i32,
    /// Project names.
    pub allowed_projects: Vec<String>,
    /// Free text.
    pub description: String,
}

/// Fields an update may name, for providers and for bindings.
pub const PROVIDER_FIELDS: &[&str] = &[
    "issuer",
    "jwks_uri",
    "jwks",
    "ca_certificates",
    "audiences",
    "allowed_algorithms",
    "max_token_lifetime",
    "clock_skew",
    "description",
];
/// See [`PROVIDER_FIELDS`].
pub const BINDING_FIELDS: &[&str] = &["bound_claims", "role", "allowed_projects", "description"];

/// The identity service.
#[derive(Clone)]
pub struct Identities {
    store: Store,
    pages: Arc<PageTokens>,
    changes: ChangeFeed,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").finish_non_exhaustive()
    }
}

impl Identities {
    /// The service over `store`, announcing changes on `changes`.
    pub fn new(store: Store, pages: Arc<PageTokens>, changes: ChangeFeed) -> Self {
        Self { store, pages, changes }
    }

    /// Every provider (for the verifier).
    pub async fn all_providers(&self) -> Result<Vec<IdentityProvider>, Error> {
        self.store.identity_providers().await
    }

    /// Every binding of every workspace (for the verifier).
    pub async fn all_bindings(&self) -> Result<Vec<IdentityBinding>, Error> {
        self.store.identity_bindings(None).await
    }

    /// Creates a provider.
    pub async fn create_provider(
        &self,
        actor: &Actor,
        id: &str,
        input: ProviderInput,
    ) -> Result<IdentityProvider, Error> {
        let mut violations = Violations::default();
        let id = violations.check("identity_provider_id", IdentityProviderId::parse(id));
        let checked = check_provider(&mut violations, input);
        violations.finish()?;
        let (Some(id), Some(checked)) = (id, checked) else { return Err(Error::internal("validated fields missing")) };
        let now = Timestamp::now();
        let provider = checked.into_provider(id, now, now);
        let event = actor.event("CreateIdentityProvider", "", &provider.id.name(), 0);
        self.store.insert_identity_provider(&provider, &[event]).await?;
        self.changes.publish(Change::Identity);
        Ok(provider)
    }

    /// One provider.
    pub async fn get_provider(&self, id: &IdentityProviderId) -> Result<IdentityProvider, Error> {
        self.store
            .identity_providers()
            .await?
            .into_iter()
            .find(|p| &p.id == id)
            .ok_or_else(|| Error::not_found(id.name()))
    }

    /// A page of providers, ordered by id.
    pub async fn list_providers(
        &self,
        requested_page_size: i32,
        page_token: &str,
    ) -> Result<Page<IdentityProvider>, Error> {
        let size = page_size(requested_page_size)?;
        let query = "identityProviders|";
        let after = self.pages.decode(query, page_token)?.unwrap_or_default();
        let fetched: Vec<IdentityProvider> = self
            .store
            .identity_providers()
            .await?
            .into_iter()
            .filter(|p| p.id.as_str() > after.as_str())
            .take(size + 1)
            .collect();
        Ok(Page::from_fetched(fetched, size, &self.pages, query, |p| p.id.as_str().to_owned()))
    }

    /// Changes the `fields` of a provider (`None`: every field given).
    pub async fn update_provider(
        &self,
        actor: &Actor,
        id: IdentityProviderId,
        input: ProviderInput,
        fields: Option<Vec<String>>,
    ) -> Result<IdentityProvider, Error> {
        let fields = fields_to_change(fields, PROVIDER_FIELDS, "update_mask")?;
        for _ in 0..3 {
            let current = self.get_provider(&id).await?;
            let mut merged = ProviderInput {
                issuer: current.issuer.clone(),
                jwks_uri: match &current.key_source {
                    KeySource::JwksUri(uri) => uri.clone(),
                    _ => String::new(),
                },
                jwks: match &current.key_source {
                    KeySource::Jwks(jwks) => jwks.clone(),
                    _ => String::new(),
                },
                ca_certificates: current.ca_certificates.clone(),
                audiences: current.audiences.clone(),
                allowed_algorithms: current.allowed_algorithms.clone(),
                max_token_lifetime: Some(current.max_token_lifetime),
                clock_skew: Some(current.clock_skew),
                description: current.description.clone(),
            };
            let given = |field: &str| fields.as_ref().is_none_or(|f| f.iter().any(|n| n == field));
            if given("issuer") {
                merged.issuer = input.issuer.clone();
            }
            if given("jwks_uri") {
                merged.jwks_uri = input.jwks_uri.clone();
            }
            if given("jwks") {
                merged.jwks = input.jwks.clone();
            }
            if given("ca_certificates") {
                merged.ca_certificates = input.ca_certificates.clone();
            }
            if given("audiences") {
                merged.audiences = input.audiences.clone();
            }
            if given("allowed_algorithms") {
                merged.allowed_algorithms = input.allowed_algorithms.clone();
            }
            if given("max_token_lifetime") {
                merged.max_token_lifetime = input.max_token_lifetime;
            }
            if given("clock_skew") {
                merged.clock_skew = input.clock_skew;
            }
            if given("description") {
                merged.description = input.description.clone();
            }
            let mut violations = Violations::default();
            let checked = check_provider(&mut violations, merged);
            violations.finish()?;
            let Some(checked) = checked else { return Err(Error::internal("validated fields missing")) };
            let updated = checked.into_provider(id.clone(), current.create_time, later_than(current.update_time));
            let event = actor.event("UpdateIdentityProvider", "", &id.name(), 0);
            match self.store.replace_identity_provider(current.update_time, &updated, &[event]).await? {
                Replaced::Done => {
                    self.changes.publish(Change::Identity);
                    return Ok(updated);
                }
                Replaced::Missing => return Err(Error::not_found(id.name())),
                Replaced::Stale => continue,
            }
        }
        Err(concurrent(&id.name()))
    }

    /// Deletes a provider; with `force`, the bindings that name it too.
    pub async fn delete_provider(&self, actor: &Actor, id: IdentityProviderId, force: bool) -> Result<(), Error> {
        let event = actor.event("DeleteIdentityProvider", "", &id.name(), 0);
        match self.store.delete_identity_provider(&id, force, &[event]).await? {
            ProviderDeletion::Deleted { .. } => {
                self.changes.publish(Change::Identity);
                Ok(())
            }
            ProviderDeletion::Missing => Err(Error::not_found(id.name())),
            ProviderDeletion::InUse { bindings } => Err(Error::FailedPrecondition {
                reason: pullpass::reason::IDENTITY_PROVIDER_IN_USE,
                message: format!(
                    "{} is named by {bindings} identity binding(s); delete them first or set `force` (which deletes them too)",
                    id.name()
                ),
            }),
        }
    }

    /// Creates a binding.
    pub async fn create_binding(
        &self,
        actor: &Actor,
        workspace: WorkspaceId,
        id: &str,
        input: BindingInput,
    ) -> Result<IdentityBinding, Error> {
        let mut violations = Violations::default();
        let id = violations.check("identity_binding_id", IdentityBindingId::parse(id));
        let provider = violations
            .check("identity_binding.identity_provider", IdentityProviderId::from_name(&input.identity_provider));
        let checked = check_binding(&mut violations, &input);
        violations.finish()?;
        let (Some(id), Some(provider), Some(checked)) = (id, provider, checked) else {
            return Err(Error::internal("validated fields missing"));
        };
        let now = Timestamp::now();
        let binding = IdentityBinding {
            name: IdentityBindingName { workspace, binding: id },
            provider,
            bound_claims: checked.bound_claims,
            role: checked.role,
            allowed_projects: checked.allowed_projects,
            description: checked.description,
            create_time: now,
            update_time: now,
        };
        let workspace = binding.name.workspace.as_str();
        let event = actor.event("CreateIdentityBinding", workspace, &binding.name.to_string(), 0);
        self.store.insert_identity_binding(&binding, &[event]).await?;
        self.changes.publish(Change::Identity);
        Ok(binding)
    }

    /// One binding.
    pub async fn get_binding(&self, name: &IdentityBindingName) -> Result<IdentityBinding, Error> {
        self.store
            .identity_bindings(Some(&name.workspace))
            .await?
            .into_iter()
            .find(|b| &b.name == name)
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    /// The bindings of a workspace, all of them (few), ordered by id.
    pub async fn bindings_of(&self, workspace: &WorkspaceId) -> Result<Vec<IdentityBinding>, Error> {
        self.store.identity_bindings(Some(workspace)).await
    }

    /// A page of a workspace's bindings, ordered by id.
    pub async fn list_bindings(
        &self,
        workspace: &WorkspaceId,
        requested_page_size: i32,
        page_token: &str,
    ) -> Result<Page<IdentityBinding>, Error> {
        let size = page_size(requested_page_size)?;
        let query = format!("identityBindings|{workspace}");
        let after = self.pages.decode(&query, page_token)?.unwrap_or_default();
        let fetched: Vec<IdentityBinding> = self
            .bindings_of(workspace)
            .await?
            .into_iter()
            .filter(|b| b.name.binding.as_str() > after.as_str())
            .take(size + 1)
            .collect();
        Ok(Page::from_fetched(fetched, size, &self.pages, &query, |b| b.name.binding.as_str().to_owned()))
    }

    /// Changes the `fields` of a binding (`None`: every field given).
    pub async fn update_binding(
        &self,
        actor: &Actor,
        name: IdentityBindingName,
        input: BindingInput,
        fields: Option<Vec<String>>,
    ) -> Result<IdentityBinding, Error> {
        let fields = fields_to_change(fields, BINDING_FIELDS, "update_mask")?;
        for _ in 0..3 {
            let current = self.get_binding(&name).await?;
            if fields.is_none()
                && !input.identity_provider.is_empty()
                && input.identity_provider != current.provider.name()
            {
                return Err(Error::invalid(
                    "identity_binding.identity_provider",
                    "cannot change: delete the binding and create another",
                ));
            }
            let given = |field: &str| fields.as_ref().is_none_or(|f| f.iter().any(|n| n == field));
            let merged = BindingInput {
                identity_provider: current.provider.name(),
                bound_claims: if given("bound_claims") {
                    input.bound_claims.clone()
                } else {
                    current.bound_claims.clone()
                },
                role: if given("role") { input.role } else { current.role.code() },
                allowed_projects: if given("allowed_projects") {
                    input.allowed_projects.clone()
                } else {
                    current.allowed_projects.iter().map(ToString::to_string).collect()
                },
                description: if given("description") { input.description.clone() } else { current.description.clone() },
            };
            let mut violations = Violations::default();
            let checked = check_binding(&mut violations, &merged);
            violations.finish()?;
            let Some(checked) = checked else { return Err(Error::internal("validated fields missing")) };
            let updated = IdentityBinding {
                bound_claims: checked.bound_claims,
                role: checked.role,
                allowed_projects: checked.allowed_projects,
                description: checked.description,
                update_time: later_than(current.update_time),
                ..current.clone()
            };
            let event = actor.event("UpdateIdentityBinding", name.workspace.as_str(), &name.to_string(), 0);
            match self.store.replace_identity_binding(current.update_time, &updated, &[event]).await? {
                Replaced::Done => {
                    self.changes.publish(Change::Identity);
                    return Ok(updated);
                }
                Replaced::Missing => return Err(Error::not_found(name.to_string())),
                Replaced::Stale => continue,
            }
        }
        Err(concurrent(&name.to_string()))
    }

    /// Deletes a binding.
    pub async fn delete_binding(&self, actor: &Actor, name: IdentityBindingName) -> Result<(), Error> {
        let event = actor.event("DeleteIdentityBinding", name.workspace.as_str(), &name.to_string(), 0);
        if !self.store.delete_identity_binding(&name, &[event]).await? {
            return Err(Error::not_found(name.to_string()));
        }
        self.changes.publish(Change::Identity);
        Ok(())
    }
}

/// A provider's fields, checked.
struct CheckedProvider {
    issuer: String,
    key_source: KeySource,
    ca_certificates: String,
    audiences: Vec<String>,
    allowed_algorithms: Vec<String>,
    max_token_lifetime: Duration,
    clock_skew: Duration,
    description: String,
}

impl CheckedProvider {
    fn into_provider(self, id: IdentityProviderId, create_time: Timestamp, update_time: Timestamp) -> IdentityProvider {
        IdentityProvider {
            id,
            issuer: self.issuer,
            key_source: self.key_source,
            ca_certificates: self.ca_certificates,
            audiences: self.audiences,
            allowed_algorithms: self.allowed_algorithms,
            max_token_lifetime: self.max_token_lifetime,
            clock_skew: self.clock_skew,
            description: self.description,
            create_time,
            update_time,
        }
    }
}

/// Is `url` an https URL, or http on a loopback address (tests, `--dev`)?
fn secure_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "is not a URL".to_owned())?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback { Ok(()) } else { Err("must be https (http only on a loopback address)".into()) }
        }
        _ => Err("must be an https URL".into()),
    }
}

fn check_text(violations: &mut Violations, field: &str, text: &str, max_chars: usize) {
    if text.chars().count() > max_chars {
        violations.add(field, format!("is longer than {max_chars} characters"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        violations.add(field, "must not contain control characters");
    }
}

fn check_provider(violations: &mut Violations, input: ProviderInput) -> Option<CheckedProvider> {
    let before = violations.len();
    let f = |name: &str| format!("identity_provider.{name}");
    let issuer = input.issuer.trim().to_owned();
    if issuer.is_empty() {
        violations.add(f("issuer"), "is required: the exact `iss` of the provider's tokens");
    } else if issuer.len() > MAX_ISSUER_BYTES || issuer.chars().any(|c| c.is_control() || c.is_whitespace()) {
        violations
            .add(f("issuer"), format!("must be at most {MAX_ISSUER_BYTES} bytes without spaces or control characters"));
    }
    let key_source = match (input.jwks_uri.trim(), input.jwks.trim()) {
        ("", "") => {
            // Discovery: the issuer is where the keys are found.
            if !issuer.is_empty()
                && let Err(why) = secure_url(&issuer)
            {
                violations.add(
                    f("issuer"),
                    format!("{why}: OIDC discovery needs an https issuer URL (or set `jwks_uri` or `jwks`)"),
                );
            }
            KeySource::Discovery
        }
        (uri, "") => {
            if let Err(why) = secure_url(uri) {
                violations.add(f("jwks_uri"), why);
            }
            KeySource::JwksUri(uri.to_owned())
        }
        ("", jwks) => {
            if jwks.len() > MAX_JWKS_BYTES {
                violations.add(f("jwks"), format!("is larger than {MAX_JWKS_BYTES} bytes"));
            } else {
                match serde_json::from_str::<serde_json::Value>(jwks) {
                    Ok(set) if set.get("keys").and_then(|k| k.as_array()).is_some_and(|k| !k.is_empty()) => {}
                    _ => violations.add(f("jwks"), "is not a JSON Web Key Set: expected {\"keys\": [ … ]} with a key"),
                }
            }
            KeySource::Jwks(jwks.to_owned())
        }
        _ => {
            violations.add(f("jwks"), "set at most one of `jwks_uri` and `jwks` (neither: OIDC discovery)");
            KeySource::Discovery
        }
    };
    if input.ca_certificates.len() > MAX_CA_BYTES {
        violations.add(f("ca_certificates"), format!("is larger than {MAX_CA_BYTES} bytes"));
    } else if !input.ca_certificates.trim().is_empty() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let certificates: Result<Vec<_>, _> =
            CertificateDer::pem_slice_iter(input.ca_certificates.as_bytes()).collect();
        if !certificates.is_ok_and(|c| !c.is_empty()) {
            violations.add(f("ca_certificates"), "is not PEM certificates");
        }
    }
    let audiences: Vec<String> = input.audiences.iter().map(|a| a.trim().to_owned()).collect();
    if audiences.is_empty() {
        violations.add(
            f("audiences"),
            "name at least one: the audience pullpass answers to (one meant for pullpass alone, such as `pullpass`)",
        );
    }
    if audiences.len() > MAX_AUDIENCES {
        violations.add(f("audiences"), format!("at most {MAX_AUDIENCES}"));
    }
    for (at, audience) in audiences.iter().enumerate() {
        if audience.is_empty() || audience.len() > MAX_AUDIENCE_BYTES || audience.chars().any(char::is_control) {
            violations
                .add(format!("identity_provider.audiences[{at}]"), format!("must be 1-{MAX_AUDIENCE_BYTES} bytes"));
        }
    }
    let mut allowed_algorithms: Vec<String> = Vec::new();
    for (at, algorithm) in input.allowed_algorithms.iter().enumerate() {
        match ALLOWED_ALGORITHMS.iter().find(|a| a.eq_ignore_ascii_case(algorithm.trim())) {
            Some(known) if !allowed_algorithms.iter().any(|a| a == known) => {
                allowed_algorithms.push((*known).to_owned())
            }
            Some(_) => {}
            None => violations.add(
                format!("identity_provider.allowed_algorithms[{at}]"),
                format!(
                    "`{}` is not allowed: use {} (never `none` nor HS*)",
                    crate::domain::ids::shorten(algorithm),
                    ALLOWED_ALGORITHMS.join(", ")
                ),
            ),
        }
    }
    if allowed_algorithms.is_empty() {
        allowed_algorithms = DEFAULT_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect();
    }
    let max_token_lifetime = input.max_token_lifetime.unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME);
    if max_token_lifetime.is_zero() || max_token_lifetime > MAX_MAX_TOKEN_LIFETIME {
        violations.add(f("max_token_lifetime"), "must be more than 0 and at most 24 hours");
    }
    let clock_skew = input.clock_skew.unwrap_or(DEFAULT_CLOCK_SKEW);
    if clock_skew > MAX_CLOCK_SKEW {
        violations.add(f("clock_skew"), "must be at most 60 seconds");
    }
    check_text(violations, &f("description"), &input.description, MAX_DESCRIPTION_CHARS);
    (violations.len() == before).then(|| CheckedProvider {
        issuer,
        key_source,
        ca_certificates: input.ca_certificates,
        audiences,
        allowed_algorithms,
        max_token_lifetime,
        clock_skew,
        description: input.description,
    })
}

/// A binding's fields, checked.
struct CheckedBinding {
    bound_claims: Vec<(String, String)>,
    role: Role,
    allowed_projects: Vec<ProjectName>,
    description: String,
}

fn check_binding(violations: &mut Violations, input: &BindingInput) -> Option<CheckedBinding> {
    let before = violations.len();
    let mut bound_claims: Vec<(String, String)> = Vec::new();
    if input.bound_claims.len() > MAX_BOUND_CLAIMS {
        violations.add("identity_binding.bound_claims", format!("at most {MAX_BOUND_CLAIMS} claims"));
    }
    for (claim, pattern) in &input.bound_claims {
        let field = format!("identity_binding.bound_claims[{}]", crate::domain::ids::shorten(claim));
        if let Err(why) = check_claim_name(claim) {
            violations.add(field.clone(), why);
        } else if claim.len() > MAX_CLAIM_BYTES {
            violations.add(field.clone(), format!("claim names are at most {MAX_CLAIM_BYTES} bytes"));
        }
        if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES || pattern.chars().any(char::is_control) {
            violations
                .add(field, format!("the pattern must be 1-{MAX_PATTERN_BYTES} bytes without control characters"));
        }
        bound_claims.push((claim.clone(), pattern.clone()));
    }
    bound_claims.sort();
    let identifying = bound_claims
        .iter()
        .filter(|(claim, _)| !NON_IDENTIFYING_CLAIMS.contains(&claim.trim_start_matches('/')))
        .count();
    if identifying == 0 {
        violations.add(
            "identity_binding.bound_claims",
            "bind at least one claim other than aud, iss, exp, nbf and iat (such as `sub`, `repository_owner_id` or \
             `/kubernetes.io/namespace`): an issuer shared by everyone must not grant this workspace to everyone",
        );
    }
    let role = match Role::from_code(input.role) {
        Some(role @ (Role::Launcher | Role::Viewer)) => Some(role),
        Some(Role::Admin | Role::Root) => {
            violations.add(
                "identity_binding.role",
                "an identity binding grants LAUNCHER or VIEWER; ADMIN is for access tokens minted by a person",
            );
            None
        }
        None => {
            violations.add("identity_binding.role", "is required: LAUNCHER or VIEWER");
            None
        }
    };
    let mut allowed_projects = Vec::new();
    for (at, project) in input.allowed_projects.iter().enumerate() {
        if let Some(project) =
            violations.check(&format!("identity_binding.allowed_projects[{at}]"), ProjectName::parse(project))
        {
            allowed_projects.push(project);
        }
    }
    check_text(violations, "identity_binding.description", &input.description, MAX_DESCRIPTION_CHARS);
    let role = role?;
    (violations.len() == before).then(|| CheckedBinding {
        bound_claims,
        role,
        allowed_projects,
        description: input.description.clone(),
    })
}

/// A claim is named by its top-level name (`sub`) or by a JSON pointer
/// (`/kubernetes.io/namespace`, RFC 6901: `~0` is `~`, `~1` is `/`).
fn check_claim_name(claim: &str) -> Result<(), String> {
    if claim.is_empty() || claim.chars().any(char::is_control) {
        return Err("a claim is a top-level name (`sub`) or a JSON pointer (`/kubernetes.io/namespace`)".into());
    }
    if let Some(pointer) = claim.strip_prefix('/') {
        let escapes_ok = pointer.split('~').skip(1).all(|rest| rest.starts_with('0') || rest.starts_with('1'));
        if pointer.is_empty() || !escapes_ok {
            return Err("is not a JSON pointer: `/` then names separated by `/` (`~0` for `~`, `~1` for `/`)".into());
        }
    }
    Ok(())
}

/// The fields an update mask names, checked against `known`; `None` for
/// every field given (no mask), and all of them for `*`.
fn fields_to_change(fields: Option<Vec<String>>, known: &[&str], field: &str) -> Result<Option<Vec<String>>, Error> {
    let Some(fields) = fields else { return Ok(None) };
    if fields.iter().any(|f| f == "*") {
        return Ok(Some(known.iter().map(|k| (*k).to_owned()).collect()));
    }
    for name in &fields {
        if !known.contains(&name.as_str()) {
            return Err(Error::invalid(
                field,
                format!("`{}` cannot be updated: use {}", crate::domain::ids::shorten(name), known.join(", ")),
            ));
        }
    }
    Ok(Some(fields))
}

/// An update time after `before` (so a replace-if-unchanged can tell).
fn later_than(before: Timestamp) -> Timestamp {
    let now = Timestamp::now();
    if now > before { now } else { Timestamp::from_micros(before.as_micros() + 1) }
}

fn concurrent(name: &str) -> Error {
    Error::Unavailable {
        reason: "CONCURRENT_UPDATES",
        message: format!("{name} kept changing while this update was applied; retry"),
        retry_after: None,
    }
}
