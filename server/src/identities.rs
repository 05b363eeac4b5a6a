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

use crate::access::identity::callers::{Explanation, IdentityCallers};
use crate::access::identity::{self, BindingRule, ProviderConfig, SigningAlgorithm};
use crate::audit::Actor;
use crate::changes::{Change, ChangeFeed};
use crate::domain::{
    IdentityBinding, IdentityBindingId, IdentityBindingName, IdentityProvider, IdentityProviderId, KeySource,
    ProjectName, Role, Timestamp, WorkspaceId,
};
use crate::error::{Error, Violations};
use crate::paging::{Page, PageTokens, page_size};
use crate::store::{ProviderDeletion, Replaced, Store};

/// Longest description.
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Largest inline key set or CA bundle.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

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
    callers: Arc<IdentityCallers>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").finish_non_exhaustive()
    }
}

impl Identities {
    /// The service over `store`, announcing changes on `changes`;
    /// `callers` verifies tokens for [`Identities::explain`].
    pub fn new(store: Store, pages: Arc<PageTokens>, changes: ChangeFeed, callers: Arc<IdentityCallers>) -> Self {
        Self { store, pages, changes, callers }
    }

    /// Verifies `token` and explains, binding by binding of `workspace`,
    /// which of its claims match. The token is never echoed or kept.
    pub async fn explain(&self, workspace: &WorkspaceId, token: &str) -> Result<Explanation, Error> {
        if token.trim().is_empty() {
            return Err(Error::invalid("token", "is required: the JWT to test"));
        }
        if !crate::access::identity::callers::looks_like_jwt(token.trim()) {
            return Err(Error::invalid("token", "is not a JWT (three base64url parts separated by dots)"));
        }
        self.callers.explain(workspace, token.trim()).await
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

fn check_text(violations: &mut Violations, field: &str, text: &str, max_chars: usize) {
    if text.chars().count() > max_chars {
        violations.add(field, format!("is longer than {max_chars} characters"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        violations.add(field, "must not contain control characters");
    }
}

/// Checks a provider's fields (the verifier's own rules, from
/// `access::identity`, and this API's), all at once.
fn check_provider(violations: &mut Violations, input: ProviderInput) -> Option<CheckedProvider> {
    let before = violations.len();
    let key_source = match (input.jwks_uri.trim(), input.jwks.trim()) {
        ("", "") => KeySource::Discovery,
        (uri, "") => KeySource::JwksUri(uri.to_owned()),
        ("", jwks) => KeySource::Jwks(jwks.to_owned()),
        _ => {
            violations
                .add("identity_provider.jwks", "set at most one of `jwks_uri` and `jwks` (neither: OIDC discovery)");
            KeySource::Discovery
        }
    };
    for (field, document) in [("jwks", &input.jwks), ("ca_certificates", &input.ca_certificates)] {
        if document.len() > MAX_DOCUMENT_BYTES {
            violations.add(format!("identity_provider.{field}"), format!("is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
    }
    let mut algorithms: Vec<SigningAlgorithm> = Vec::new();
    for (at, name) in input.allowed_algorithms.iter().enumerate() {
        match SigningAlgorithm::parse(name.trim()) {
            Ok(algorithm) if !algorithms.contains(&algorithm) => algorithms.push(algorithm),
            Ok(_) => {}
            Err(why) => violations.add(format!("identity_provider.allowed_algorithms[{at}]"), why),
        }
    }
    if algorithms.is_empty() {
        algorithms = SigningAlgorithm::DEFAULT.to_vec();
    }
    let config = ProviderConfig {
        id: String::new(),
        issuer: input.issuer.trim().to_owned(),
        key_source,
        ca_certificates_pem: input.ca_certificates.clone(),
        audiences: input.audiences.iter().map(|a| a.trim().to_owned()).collect(),
        allowed_algorithms: algorithms,
        max_token_lifetime: input.max_token_lifetime.unwrap_or(identity::DEFAULT_MAX_TOKEN_LIFETIME),
        clock_skew: input.clock_skew.unwrap_or(identity::DEFAULT_CLOCK_SKEW),
    };
    if violations.len() == before {
        violations.absorb("identity_provider", config.validate());
    }
    check_text(violations, "identity_provider.description", &input.description, MAX_DESCRIPTION_CHARS);
    (violations.len() == before).then(|| CheckedProvider {
        issuer: config.issuer,
        key_source: config.key_source,
        ca_certificates: config.ca_certificates_pem,
        audiences: config.audiences,
        allowed_algorithms: config.allowed_algorithms.iter().map(|a| a.name().to_owned()).collect(),
        max_token_lifetime: config.max_token_lifetime,
        clock_skew: config.clock_skew,
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

/// Checks a binding's fields (the verifier's claim rules, from
/// `access::identity`, and this API's), all at once.
fn check_binding(violations: &mut Violations, input: &BindingInput) -> Option<CheckedBinding> {
    let before = violations.len();
    let mut bound_claims = input.bound_claims.clone();
    bound_claims.sort();
    let role = Role::from_code(input.role);
    if role.is_none() {
        violations.add("identity_binding.role", "is required: LAUNCHER or VIEWER");
    }
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
    let rule = BindingRule {
        name: String::new(),
        provider: String::new(),
        bound_claims: bound_claims.clone(),
        role,
        allowed_projects: allowed_projects.clone(),
    };
    violations.absorb("identity_binding", identity::validate_binding(&rule));
    (violations.len() == before).then(|| CheckedBinding {
        bound_claims,
        role,
        allowed_projects,
        description: input.description.clone(),
    })
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
