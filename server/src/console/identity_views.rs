//! The console's workload-identity pages as HTML: identity providers
//! (ROOT), a workspace's identity bindings (ADMIN), and "Test a token",
//! which shows TestIdentityToken's explanation binding by binding.
//!
//! Kept apart from [`super::views`] (credentials, tokens, audit) because
//! these forms are long and their own concern; they use the same helpers,
//! so every control is labelled and every field error sits next to its
//! field in the API's words. The token under test is never put back into
//! a page: its textarea is always empty.

use maud::{Markup, html};

use super::route::to;
use super::views::{Chrome, Errors, checkbox, csrf, field, general_errors, join_ids, page, text_field, time};
use crate::access::identity::SigningAlgorithm;
use crate::access::identity::callers::Explanation;
use crate::domain::{
    IdentityBinding, IdentityBindingName, IdentityProvider, IdentityProviderId, KeySource, ProjectName, WorkspaceId,
};

/// What the provider form holds (as typed, or as stored).
#[derive(Debug, Clone, Default)]
pub struct ProviderForm {
    /// The provider id (create only).
    pub id: String,
    /// The exact `iss`.
    pub issuer: String,
    /// `discovery`, `jwks_uri` or `jwks`.
    pub key_source: String,
    /// The JWKS URL.
    pub jwks_uri: String,
    /// The inline key set.
    pub jwks: String,
    /// CA certificates (PEM).
    pub ca_certificates: String,
    /// Audiences, one per line.
    pub audiences: String,
    /// Ticked algorithms (JOSE names).
    pub algorithms: Vec<String>,
    /// Lifetime cap in seconds ("" for the default).
    pub max_token_lifetime: String,
    /// Clock skew in seconds ("" for the default).
    pub clock_skew: String,
    /// Free text.
    pub description: String,
}

impl ProviderForm {
    /// An empty form with the defaults ticked: discovery, RS256 and ES256.
    pub fn fresh() -> Self {
        Self {
            key_source: "discovery".into(),
            algorithms: SigningAlgorithm::DEFAULT.iter().map(|a| a.name().to_owned()).collect(),
            max_token_lifetime: crate::access::identity::DEFAULT_MAX_TOKEN_LIFETIME.as_secs().to_string(),
            clock_skew: crate::access::identity::DEFAULT_CLOCK_SKEW.as_secs().to_string(),
            ..Self::default()
        }
    }

    /// The form of a stored provider.
    pub fn of(p: &IdentityProvider) -> Self {
        let (key_source, jwks_uri, jwks) = match &p.key_source {
            KeySource::Discovery => ("discovery", String::new(), String::new()),
            KeySource::JwksUri(uri) => ("jwks_uri", uri.clone(), String::new()),
            KeySource::Jwks(jwks) => ("jwks", String::new(), jwks.clone()),
        };
        Self {
            id: p.id.to_string(),
            issuer: p.issuer.clone(),
            key_source: key_source.into(),
            jwks_uri,
            jwks,
            ca_certificates: p.ca_certificates.clone(),
            audiences: p.audiences.join("\n"),
            algorithms: p.allowed_algorithms.clone(),
            max_token_lifetime: p.max_token_lifetime.as_secs().to_string(),
            clock_skew: p.clock_skew.as_secs().to_string(),
            description: p.description.clone(),
        }
    }
}

/// What the binding form holds (as typed, or as stored).
#[derive(Debug, Clone, Default)]
pub struct BindingForm {
    /// The binding id (create only).
    pub id: String,
    /// `identityProviders/{id}`.
    pub identity_provider: String,
    /// `claim = pattern`, one per line.
    pub bound_claims: String,
    /// LAUNCHER or VIEWER.
    pub role: String,
    /// Projects, comma-separated.
    pub allowed_projects: String,
    /// Free text.
    pub description: String,
}

impl BindingForm {
    /// The form of a stored binding.
    pub fn of(b: &IdentityBinding) -> Self {
        Self {
            id: b.name.binding.to_string(),
            identity_provider: b.provider.name(),
            bound_claims: b.bound_claims.iter().map(|(c, p)| format!("{c} = {p}")).collect::<Vec<_>>().join("\n"),
            role: b.role.wire_name().into(),
            allowed_projects: b.allowed_projects.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
            description: b.description.clone(),
        }
    }
}

const ISSUER_HINT: &str = "The exact `iss` of its tokens, such as https://token.actions.githubusercontent.com or a cluster's service-account issuer.";
const AUDIENCES_HINT: &str =
    "One per line; a token's `aud` (a string or a list) must hold one of them, such as pullpass.";
const CLAIMS_HINT: &str = "One per line: `claim = pattern`; every line must match. A claim is a top-level name (sub, repository_owner_id) or a JSON pointer to a nested one (/kubernetes.io/namespace). A pattern is exact, or a glob whose * never crosses : or / (system:serviceaccount:ci:*). Bind at least one claim other than aud, iss, exp, nbf and iat, and prefer ids that never change (repository_owner_id, /kubernetes.io/serviceaccount/uid) to names that can be reused.";

/// A labelled textarea with its hint and error.
fn textarea_field(name: &str, label: &str, value: &str, errors: &Errors, hint: Option<&str>, rows: u8) -> Markup {
    field(name, label, errors, hint, |described| {
        html! { textarea id=(name) name=(name) rows=(rows) spellcheck="false" aria-describedby=[described] aria-invalid=[errors.of(name).map(|_| "true")] { (value) } }
    })
}

/// A labelled whole number of seconds.
fn seconds_field(name: &str, label: &str, value: &str, errors: &Errors, hint: &str) -> Markup {
    field(name, label, errors, Some(hint), |described| {
        html! { input type="text" inputmode="numeric" id=(name) name=(name) value=(value) aria-describedby=[described] aria-invalid=[errors.of(name).map(|_| "true")]; }
    })
}

/// A group of controls under a legend, described by its hint and error.
fn group(name: &str, legend: &str, errors: &Errors, hint: &str, controls: Markup) -> Markup {
    let hint_id = format!("{name}-hint");
    let error_id = errors.of(name).map(|_| format!("{name}-error"));
    let described = join_ids(&[Some(hint_id.as_str()), error_id.as_deref()]);
    html! {
        fieldset.field aria-describedby=[described] {
            legend { (legend) }
            (controls)
            p.hint id=(hint_id) { (hint) }
            @if let (Some(message), Some(id)) = (errors.of(name), &error_id) { p.field-error id=(id) { (message) } }
        }
    }
}

fn provider_fields(form: &ProviderForm, errors: &Errors) -> Markup {
    let sources = [
        ("discovery", "OIDC discovery at the issuer (/.well-known/openid-configuration)"),
        ("jwks_uri", "A JWKS URL"),
        ("jwks", "An inline key set (JWKS)"),
    ];
    html! {
        (text_field("issuer", "Issuer", &form.issuer, errors, Some(ISSUER_HINT)))
        (group("key_source", "Key source", errors, "Where the signing keys come from. Keys a token names itself (jku, x5u, jwk) are never fetched.", html! {
            @for (value, label) in sources {
                @let id = format!("key_source-{value}");
                div.check {
                    input type="radio" id=(id) name="key_source" value=(value) checked[form.key_source == value];
                    label for=(id) { (label) }
                }
            }
        }))
        (text_field("jwks_uri", "JWKS URL", &form.jwks_uri, errors, Some("With “A JWKS URL”: https://…, fetched with the outbound client's limits.")))
        (textarea_field("jwks", "Key set (JWKS)", &form.jwks, errors, Some("With “An inline key set”: the JSON key set, such as the output of `kubectl get --raw /openid/v1/jwks` for a cluster whose keys are not served publicly."), 6))
        (textarea_field("ca_certificates", "CA certificates", &form.ca_certificates, errors, Some("PEM certificates to trust for the discovery document and the JWKS URL, besides the public roots. Empty: the public roots only."), 4))
        (textarea_field("audiences", "Audiences", &form.audiences, errors, Some(AUDIENCES_HINT), 3))
        (group("allowed_algorithms", "Allowed algorithms", errors, "A token signed otherwise is refused; none and HS* never are allowed. None ticked: RS256 and ES256.", html! {
            @for algorithm in SigningAlgorithm::ALL {
                @let name = algorithm.name();
                @let id = format!("alg-{name}");
                div.check {
                    input type="checkbox" id=(id) name="allowed_algorithms" value=(name) checked[form.algorithms.iter().any(|a| a == name)];
                    label for=(id) { (name) }
                }
            }
        }))
        (seconds_field("max_token_lifetime", "Longest token lifetime (seconds)", &form.max_token_lifetime, errors, "A token whose exp - iat is longer is refused. Empty: 3600 (1 h); at most 86400 (24 h)."))
        (seconds_field("clock_skew", "Clock skew (seconds)", &form.clock_skew, errors, "Leeway on exp and nbf. Empty: 30; at most 60."))
        (text_field("description", "Description", &form.description, errors, None))
    }
}

fn key_source_text(p: &IdentityProvider) -> Markup {
    match &p.key_source {
        KeySource::Discovery => html! { "OIDC discovery" },
        KeySource::JwksUri(uri) => html! { "JWKS URL " code { (uri) } },
        KeySource::Jwks(_) => html! { "inline key set" },
    }
}

/// The identity providers, with the form that adds one (ROOT).
pub fn identity_providers(chrome: &Chrome, list: &[IdentityProvider], form: &ProviderForm, errors: &Errors) -> Markup {
    page(
        "Identity providers",
        Some(chrome),
        html! {
            p { "Issuers whose signed tokens (a pod's service-account token, a CI job's ID token) pullpass accepts in place of an access token. What a token earns in a workspace is decided by that workspace's identity bindings." }
            table {
                caption { "Identity providers, by id" }
                thead {
                    tr {
                        th scope="col" { "Provider" } th scope="col" { "Issuer" } th scope="col" { "Key source" }
                        th scope="col" { "Audiences" } th scope="col" { "Algorithms" } th scope="col" { "Updated" }
                    }
                }
                tbody {
                    @for p in list {
                        tr {
                            td { a href=(to::identity_provider(&p.id)) { (p.id) } }
                            td { code { (p.issuer) } }
                            td { (key_source_text(p)) }
                            td { (p.audiences.join(", ")) }
                            td { (p.allowed_algorithms.join(", ")) }
                            td { (time(Some(p.update_time))) }
                        }
                    }
                    @if list.is_empty() { tr { td colspan="6" { "No identity provider yet." } } }
                }
            }
            h2 { "Add an identity provider" }
            (general_errors(errors))
            form.card method="post" action=(to::identity_providers()) {
                (csrf(&chrome.csrf))
                (text_field("identity_provider_id", "Provider id", &form.id, errors, Some("Letters, digits, `-` and `_`, at most 64, such as github-actions or cluster-a: how bindings name it.")))
                (provider_fields(form, errors))
                button type="submit" { "Add identity provider" }
            }
        },
    )
}

/// One provider: its facts, the bindings that name it, and the edit form.
pub fn identity_provider(
    chrome: &Chrome,
    provider: &IdentityProvider,
    bindings: &[IdentityBindingName],
    form: &ProviderForm,
    errors: &Errors,
    saved: bool,
) -> Markup {
    page(
        &format!("Identity provider {}", provider.id),
        Some(chrome),
        html! {
            @if saved { p.notice role="status" { "Saved. Every replica uses the new settings within a second." } }
            dl.facts {
                dt { "Issuer" } dd { code { (provider.issuer) } }
                dt { "Key source" } dd { (key_source_text(provider)) }
                dt { "Audiences" } dd { (provider.audiences.join(", ")) }
                dt { "Algorithms" } dd { (provider.allowed_algorithms.join(", ")) }
                dt { "Longest token lifetime" } dd { (provider.max_token_lifetime.as_secs()) " s" }
                dt { "Clock skew" } dd { (provider.clock_skew.as_secs()) " s" }
                dt { "Bindings naming it" } dd id="provider-bindings" { (binding_links(bindings)) }
                dt { "Created" } dd { (time(Some(provider.create_time))) }
                dt { "Updated" } dd { (time(Some(provider.update_time))) }
            }
            h2 { "Edit" }
            (general_errors(errors))
            form.card method="post" action=(to::identity_provider(&provider.id)) {
                (csrf(&chrome.csrf))
                (provider_fields(form, errors))
                div.buttons {
                    button type="submit" { "Save" }
                    a.button.danger href=(to::delete_identity_provider(&provider.id)) { "Delete" }
                }
            }
        },
    )
}

fn binding_links(bindings: &[IdentityBindingName]) -> Markup {
    html! {
        @if bindings.is_empty() { span.none { "none" } }
        @for (at, name) in bindings.iter().enumerate() {
            @if at > 0 { ", " }
            a href=(to::identity_binding(name)) { (name) }
        }
    }
}

/// The provider delete confirmation, with the explicit choice to delete
/// the bindings that name it too.
pub fn confirm_delete_provider(
    chrome: &Chrome,
    id: &IdentityProviderId,
    bindings: &[IdentityBindingName],
    errors: &Errors,
) -> Markup {
    page(
        "Delete identity provider?",
        Some(chrome),
        html! {
            (general_errors(errors))
            p { "Delete identity provider " strong { (id) } "? Tokens of its issuer stop being accepted on every replica within a second. This cannot be undone." }
            p { "Bindings naming it: " (binding_links(bindings)) }
            form method="post" action=(to::delete_identity_provider(id)) {
                (csrf(&chrome.csrf))
                (checkbox("force", "Also delete the bindings that name it", false, errors, Some("Without it, a provider that bindings name is not deleted: delete or keep them first.")))
                div.buttons {
                    button.danger type="submit" { "Delete" }
                    a.button.secondary href=(to::identity_provider(id)) { "Cancel" }
                }
            }
        },
    )
}

fn binding_fields(form: &BindingForm, errors: &Errors) -> Markup {
    html! {
        (textarea_field("bound_claims", "Bound claims", &form.bound_claims, errors, Some(CLAIMS_HINT), 4))
        div.field {
            label for="role" { "Role" }
            select id="role" name="role" aria-describedby=[errors.of("role").map(|_| "role-error")] {
                @for role in ["LAUNCHER", "VIEWER"] { option value=(role) selected[form.role == role] { (role) } }
            }
            @if let Some(message) = errors.of("role") { p.field-error id="role-error" { (message) } }
        }
        (text_field("allowed_projects", "Projects", &form.allowed_projects, errors, Some("LAUNCHER: the projects it may issue auth for, comma-separated; empty means all.")))
        (text_field("description", "Description", &form.description, errors, None))
    }
}

fn claims_text(b: &IdentityBinding) -> Markup {
    html! {
        @for (at, (claim, pattern)) in b.bound_claims.iter().enumerate() {
            @if at > 0 { br; }
            code { (claim) " = " (pattern) }
        }
    }
}

fn projects_text(projects: &[ProjectName]) -> Markup {
    html! {
        @if projects.is_empty() { span.none { "all" } }
        @else { (projects.iter().map(ProjectName::as_str).collect::<Vec<_>>().join(", ")) }
    }
}

/// A workspace's identity bindings, with the form that adds one (ADMIN).
pub fn identity_bindings(
    chrome: &Chrome,
    workspace: &WorkspaceId,
    list: &[IdentityBinding],
    providers: &[IdentityProvider],
    form: &BindingForm,
    errors: &Errors,
) -> Markup {
    page(
        &format!("Identity bindings of {workspace}"),
        Some(chrome),
        html! {
            p { "A workload that presents a token of an identity provider, instead of an access token, gets the role and projects of the bindings whose claims all match it. Several matching bindings give the union of their projects." }
            p.actions { a.button.secondary href=(to::test_identity_token(workspace)) { "Test a token" } }
            table {
                caption { "Identity bindings of " (workspace) }
                thead {
                    tr {
                        th scope="col" { "Binding" } th scope="col" { "Provider" } th scope="col" { "Bound claims" }
                        th scope="col" { "Role" } th scope="col" { "Projects" } th scope="col" { "Description" } th scope="col" { "Updated" }
                    }
                }
                tbody {
                    @for b in list {
                        tr {
                            td { a href=(to::identity_binding(&b.name)) { (b.name.binding) } }
                            td { (b.provider) }
                            td { (claims_text(b)) }
                            td { (b.role.wire_name()) }
                            td { (projects_text(&b.allowed_projects)) }
                            td { (b.description) }
                            td { (time(Some(b.update_time))) }
                        }
                    }
                    @if list.is_empty() { tr { td colspan="7" { "No identity binding yet." } } }
                }
            }
            h2 { "Add a binding" }
            (general_errors(errors))
            @if providers.is_empty() {
                p { "There is no identity provider to bind yet: ROOT adds them." }
            } @else {
                form.card method="post" action=(to::identity_bindings(workspace)) {
                    (csrf(&chrome.csrf))
                    (text_field("identity_binding_id", "Binding id", &form.id, errors, Some("Letters, digits, `-` and `_`, at most 64, such as ci-main.")))
                    div.field {
                        label for="identity_provider" { "Identity provider" }
                        select id="identity_provider" name="identity_provider" aria-describedby=[errors.of("identity_provider").map(|_| "identity_provider-error")] {
                            @for p in providers {
                                @let name = p.id.name();
                                option value=(name) selected[form.identity_provider == name] { (p.id) " (" (p.issuer) ")" }
                            }
                        }
                        @if let Some(message) = errors.of("identity_provider") { p.field-error id="identity_provider-error" { (message) } }
                    }
                    (binding_fields(form, errors))
                    button type="submit" { "Add binding" }
                }
            }
        },
    )
}

/// One binding: its facts and the edit form.
pub fn identity_binding(
    chrome: &Chrome,
    binding: &IdentityBinding,
    provider: Option<&IdentityProvider>,
    form: &BindingForm,
    errors: &Errors,
    saved: bool,
) -> Markup {
    let name = &binding.name;
    page(
        &format!("Identity binding {}", name.binding),
        Some(chrome),
        html! {
            @if saved { p.notice role="status" { "Saved. Every replica uses it within a second." } }
            dl.facts {
                dt { "Identity provider" }
                dd {
                    (binding.provider)
                    @if let Some(p) = provider { " (" code { (p.issuer) } "; audiences " (p.audiences.join(", ")) ")" }
                }
                dt { "Role" } dd { (binding.role.wire_name()) }
                dt { "Projects" } dd { (projects_text(&binding.allowed_projects)) }
                dt { "Created" } dd { (time(Some(binding.create_time))) }
                dt { "Updated" } dd { (time(Some(binding.update_time))) }
            }
            h2 { "Edit" }
            (general_errors(errors))
            form.card method="post" action=(to::identity_binding(name)) {
                (csrf(&chrome.csrf))
                p { "Its identity provider cannot change: delete the binding and add another." }
                (binding_fields(form, errors))
                div.buttons {
                    button type="submit" { "Save" }
                    a.button.secondary href=(to::test_identity_token(&name.workspace)) { "Test a token" }
                    a.button.danger href=(to::delete_identity_binding(name)) { "Delete" }
                }
            }
        },
    )
}

/// The binding delete confirmation.
pub fn confirm_delete_binding(chrome: &Chrome, name: &IdentityBindingName) -> Markup {
    page(
        "Delete identity binding?",
        Some(chrome),
        html! {
            p { "Delete binding " strong { (name.binding) } " of " (name.workspace) "? Workloads it matched are refused on every replica within a second. This cannot be undone." }
            form method="post" action=(to::delete_identity_binding(name)) {
                (csrf(&chrome.csrf))
                div.buttons {
                    button.danger type="submit" { "Delete" }
                    a.button.secondary href=(to::identity_binding(name)) { "Cancel" }
                }
            }
        },
    )
}

/// "Test a token": the form (whose textarea is always empty) and, after a
/// POST, the explanation.
pub fn test_identity_token(
    chrome: &Chrome,
    workspace: &WorkspaceId,
    errors: &Errors,
    explanation: Option<&Explanation>,
) -> Markup {
    page(
        &format!("Test a token against {workspace}"),
        Some(chrome),
        html! {
            @if let Some(e) = explanation { (explained(workspace, e)) }
            (general_errors(errors))
            form.card method="post" action=(to::test_identity_token(workspace)) {
                (csrf(&chrome.csrf))
                (field("token", "Token (JWT)", errors, Some("A workload's token, such as a pod's service-account token or a CI job's ID token. It is verified and explained, never stored, logged or shown back; only the claims some binding names are shown."), |described| html! {
                    textarea id="token" name="token" rows="6" autocomplete="off" spellcheck="false" aria-describedby=[described] aria-invalid=[errors.of("token").map(|_| "true")] {}
                }))
                button type="submit" { "Test token" }
            }
        },
    )
}

fn explained(workspace: &WorkspaceId, e: &Explanation) -> Markup {
    html! {
        section id="identity-test" aria-labelledby="identity-test-title" {
            h2 id="identity-test-title" { "Result" }
            @match &e.refusal {
                Some(refusal) => div.error role="alert" {
                    p { strong { "The token was refused: " } (refusal) }
                    @if let Some(p) = &e.provider { p { "Its issuer is identity provider " (p) "." } }
                },
                None => div.notice role="status" {
                    @if let Some(p) = &e.provider { p { "Verified by identity provider " strong { (p) } "." } }
                    @match e.role {
                        Some(role) => p id="identity-test-grant" { "In " (workspace) " it gets " strong { (role.wire_name()) } " for " @if e.projects.is_empty() { "all projects" } @else { "projects " (e.projects.join(", ")) } "." },
                        None => p id="identity-test-grant" { "No binding of " (workspace) " matches it: it gets nothing here." },
                    }
                },
            }
            @if e.refusal.is_none() && e.bindings.is_empty() {
                p { (workspace) " has no binding for this provider." }
            }
            @for b in &e.bindings {
                table.explanation {
                    caption {
                        "Binding "
                        @match IdentityBindingName::parse(&b.binding) {
                            Ok(name) => a href=(to::identity_binding(&name)) { (name.binding) },
                            Err(_) => (b.binding),
                        }
                        ": " @if b.matched { strong { "matches" } } @else { strong { "does not match" } }
                    }
                    thead { tr { th scope="col" { "Claim" } th scope="col" { "Pattern" } th scope="col" { "Token's value" } th scope="col" { "Result" } } }
                    tbody {
                        @for c in &b.claims {
                            tr {
                                td { code { (c.claim) } }
                                td { code { (c.pattern) } }
                                td {
                                    @match &c.value {
                                        Some(value) => code { (value) },
                                        None if b.provider_matches => span.none { "absent" },
                                        None => span.none { "not shown (another provider's binding)" },
                                    }
                                }
                                @if c.matched { td.ok { "match" } } @else { td.failed { "no match" } }
                            }
                        }
                    }
                }
            }
        }
    }
}
