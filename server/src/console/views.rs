//! The console's pages as HTML (maud templates, escaped by construction).
//!
//! Every control has a visible `<label>`; a field's error sits next to it,
//! tied by `aria-describedby`, with the same text as the API's field
//! violation. Secret inputs are `type=password` and `autocomplete=off`, and
//! are never prefilled. No inline script or style: the page loads
//! `console.css` and `console.js` (a few lines of progressive enhancement:
//! registry defaults per provider, the copy button, the login-link code).
//!
//! Views take plain data: they know no gRPC, no store, no session secret.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::route::to;
use crate::credentials::health;
use crate::domain::audit::AuditRecord;
use crate::domain::credential::ProviderSettings;
use crate::domain::{AccessTokenRecord, Credential, Provider, Timestamp, Workspace, WorkspaceId};

/// What every page of a signed-in person shows in its header.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The signed-in token's name (`workspaces/acme/accessTokens/x`).
    pub principal: String,
    /// Its role (`ADMIN`).
    pub role: &'static str,
    /// The workspace the pages are about, if any.
    pub workspace: Option<WorkspaceId>,
    /// May this person list workspaces (ROOT)?
    pub root: bool,
    /// May this person see the workspace's access tokens (ADMIN, ROOT)?
    pub tokens: bool,
    /// May this person manage the workspace's identity bindings (ADMIN,
    /// ROOT)?
    pub bindings: bool,
    /// The session's CSRF token, for every form.
    pub csrf: String,
}

/// Field errors of a form, by form field name.
#[derive(Debug, Clone, Default)]
pub struct Errors {
    /// `(form field, message)`; a form field of "" is about the whole form.
    pub items: Vec<(String, String)>,
}

impl Errors {
    /// The message for `field`, if any.
    pub fn of(&self, field: &str) -> Option<&str> {
        self.items.iter().find(|(f, _)| f == field).map(|(_, m)| m.as_str())
    }

    /// Messages about no field in particular.
    pub fn general(&self) -> impl Iterator<Item = &str> {
        self.items.iter().filter(|(f, _)| f.is_empty()).map(|(_, m)| m.as_str())
    }

    /// Is there none?
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A page: the document around `content`.
pub(super) fn page(title: &str, chrome: Option<&Chrome>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pullpass" }
                link rel="stylesheet" href=(to::asset("console.css"));
                script src=(to::asset("console.js")) defer {}
            }
            body {
                header.top {
                    a.brand href="/console/" { "pullpass" }
                    @if let Some(chrome) = chrome {
                        nav aria-label="Main" {
                            ul {
                                @if chrome.root {
                                    li { a href=(to::workspaces()) { "Workspaces" } }
                                    li { a href=(to::identity_providers()) { "Identity providers" } }
                                }
                                @if let Some(w) = &chrome.workspace {
                                    li { a href=(to::credentials(w)) { "Credentials" } }
                                    @if chrome.tokens { li { a href=(to::tokens(w)) { "Access tokens" } } }
                                    @if chrome.bindings { li { a href=(to::identity_bindings(w)) { "Identity bindings" } } }
                                    li { a href=(to::audit(w)) { "Audit trail" } }
                                }
                            }
                        }
                        div.who {
                            span { "Signed in as " (chrome.principal) " (" (chrome.role) ")" }
                            form method="post" action="/console/logout" {
                                (csrf(&chrome.csrf))
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (content) }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub(super) fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// Form-level errors, announced.
pub(super) fn general_errors(errors: &Errors) -> Markup {
    let general: Vec<&str> = errors.general().collect();
    html! {
        @if !general.is_empty() {
            div.error role="alert" { @for message in general { p { (message) } } }
        }
    }
}

/// A labelled text input with its error and an optional hint.
pub(super) fn text_field(name: &str, label: &str, value: &str, errors: &Errors, hint: Option<&str>) -> Markup {
    field(name, label, errors, hint, |described| {
        html! { input type="text" id=(name) name=(name) value=(value) aria-describedby=[described] aria-invalid=[errors.of(name).map(|_| "true")]; }
    })
}

/// A labelled secret input: never prefilled.
fn secret_field(name: &str, label: &str, errors: &Errors, hint: Option<&str>) -> Markup {
    field(name, label, errors, hint, |described| {
        html! { input type="password" id=(name) name=(name) autocomplete="off" aria-describedby=[described] aria-invalid=[errors.of(name).map(|_| "true")]; }
    })
}

/// A labelled checkbox.
pub(super) fn checkbox(name: &str, label: &str, checked: bool, errors: &Errors, hint: Option<&str>) -> Markup {
    let hint_id = hint.map(|_| format!("{name}-hint"));
    let error_id = errors.of(name).map(|_| format!("{name}-error"));
    let described = join_ids(&[hint_id.as_deref(), error_id.as_deref()]);
    html! {
        div.field.check {
            input type="checkbox" id=(name) name=(name) value="on" checked[checked] aria-describedby=[described];
            label for=(name) { (label) }
            @if let (Some(hint), Some(id)) = (hint, &hint_id) { p.hint id=(id) { (hint) } }
            @if let (Some(message), Some(id)) = (errors.of(name), &error_id) { p.field-error id=(id) { (message) } }
        }
    }
}

/// A labelled control (made by `input`, given the ids that describe it)
/// with its hint and error.
pub(super) fn field(
    name: &str,
    label: &str,
    errors: &Errors,
    hint: Option<&str>,
    input: impl FnOnce(Option<String>) -> Markup,
) -> Markup {
    let hint_id = hint.map(|_| format!("{name}-hint"));
    let error_id = errors.of(name).map(|_| format!("{name}-error"));
    let described = join_ids(&[hint_id.as_deref(), error_id.as_deref()]);
    html! {
        div.field {
            label for=(name) { (label) }
            (input(described))
            @if let (Some(hint), Some(id)) = (hint, &hint_id) { p.hint id=(id) { (hint) } }
            @if let (Some(message), Some(id)) = (errors.of(name), &error_id) { p.field-error id=(id) { (message) } }
        }
    }
}

pub(super) fn join_ids(ids: &[Option<&str>]) -> Option<String> {
    let present: Vec<&str> = ids.iter().flatten().copied().collect();
    (!present.is_empty()).then(|| present.join(" "))
}

pub(super) fn time(t: Option<Timestamp>) -> Markup {
    match t {
        Some(t) => {
            let text = t.to_rfc3339();
            html! { time datetime=(text) { (text.replace('T', " ")) } }
        }
        None => html! { span.none { "never" } },
    }
}

/// The sign-in page.
pub fn login(errors: &Errors, csrf_token: &str) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            (general_errors(errors))
            form.card method="post" action="/console/login" id="login-form" {
                (csrf(csrf_token))
                (secret_field("token", "Access token", errors, Some("Paste an ADMIN or VIEWER access token (pp_…) of your workspace, or ROOT's. A login link from `pullpass console-link` signs you in by itself.")))
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The workspace list, with the create form (ROOT).
pub fn workspaces(chrome: &Chrome, list: &[Workspace], form: &WorkspaceForm, errors: &Errors) -> Markup {
    page(
        "Workspaces",
        Some(chrome),
        html! {
            table {
                caption { "Every workspace, by id" }
                thead { tr { th scope="col" { "Workspace" } th scope="col" { "Kind" } th scope="col" { "Display name" } th scope="col" { "Created" } } }
                tbody {
                    @for w in list {
                        tr {
                            td { a href=(to::credentials(&w.id)) { (w.id) } }
                            td { (kind_name(w.kind)) }
                            td { (w.display_name) }
                            td { (time(Some(w.create_time))) }
                        }
                    }
                    @if list.is_empty() { tr { td colspan="4" { "No workspace yet." } } }
                }
            }
            h2 { "Create a workspace" }
            (general_errors(errors))
            form.card method="post" action=(to::workspaces()) {
                (csrf(&chrome.csrf))
                (text_field("workspace_id", "Workspace id", &form.id, errors, Some("Lowercase letters, digits and dashes, such as `acme` or `jdoe`.")))
                div.field {
                    label for="kind" { "Kind" }
                    select id="kind" name="kind" {
                        option value="ORGANIZATION" selected[form.kind != "PERSONAL"] { "Organization" }
                        option value="PERSONAL" selected[form.kind == "PERSONAL"] { "Personal" }
                    }
                }
                (text_field("display_name", "Display name", &form.display_name, errors, None))
                button type="submit" { "Create workspace" }
            }
        },
    )
}

/// What the workspace form was filled with.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceForm {
    /// Workspace id.
    pub id: String,
    /// ORGANIZATION or PERSONAL.
    pub kind: String,
    /// Display name.
    pub display_name: String,
}

fn kind_name(kind: crate::domain::WorkspaceKind) -> &'static str {
    match kind {
        crate::domain::WorkspaceKind::Organization => "Organization",
        crate::domain::WorkspaceKind::Personal => "Personal",
    }
}

/// A provider as the Provider select shows it.
pub fn provider_label(provider: Provider) -> &'static str {
    match provider {
        Provider::DockerHub => "Docker Hub",
        Provider::Ghcr => "GitHub Container Registry (GHCR)",
        Provider::Gitlab => "GitLab",
        Provider::Google => "Google Artifact Registry",
        Provider::Ecr => "Amazon ECR",
        Provider::Quay => "Quay",
        Provider::Generic => "Other registry",
        Provider::Acr => "Azure Container Registry (ACR)",
    }
}

/// What the credentials page shows besides the list.
#[derive(Debug, Clone, Copy)]
pub struct CredentialsView<'a> {
    /// May the caller add and edit credentials?
    pub can_manage: bool,
    /// Only those that need attention (`?attention=1`)?
    pub attention_only: bool,
    /// Successful leases and gateway pulls per hour over the last day.
    pub leases_per_hour: &'a [(Timestamp, u64)],
    /// Now, for the badges and the chart.
    pub now: Timestamp,
}

/// A workspace's credentials, with their health and the last day's leases.
pub fn credentials(chrome: &Chrome, workspace: &WorkspaceId, all: &[Credential], view: CredentialsView<'_>) -> Markup {
    let needing: Vec<&Credential> = all.iter().filter(|c| health::needs_attention(c, view.now)).collect();
    let list: Vec<&Credential> = if view.attention_only { needing.clone() } else { all.iter().collect() };
    page(
        &format!("Credentials of {workspace}"),
        Some(chrome),
        html! {
            @if view.can_manage {
                p.actions {
                    a.button href=(to::add(workspace)) { "Add credential" }
                    " "
                    a.button.secondary href=(to::import(workspace)) { "Import docker config.json" }
                }
            }
            (lease_chart(view.leases_per_hour, view.now))
            nav.filters aria-label="Filter credentials" {
                a href=(to::credentials(workspace)) aria-current=[(!view.attention_only).then_some("page")] { "All (" (all.len()) ")" }
                " · "
                a href=(format!("{}?attention=1", to::credentials(workspace))) aria-current=[view.attention_only.then_some("page")] {
                    "Needs attention (" (needing.len()) ")"
                }
            }
            table {
                caption { "Registry credentials of " (workspace) @if view.attention_only { " that need attention" } }
                thead {
                    tr {
                        th scope="col" { "Name" } th scope="col" { "Provider" } th scope="col" { "Registry server" }
                        th scope="col" { "User name" } th scope="col" { "Projects" } th scope="col" { "Secret version" }
                        th scope="col" { "Health" }
                        th scope="col" { "Last used" } th scope="col" { "Created" } th scope="col" { "Updated" }
                    }
                }
                tbody {
                    @for c in &list {
                        @let can_manage = view.can_manage;
                        tr {
                            td {
                                @if can_manage { a href=(to::credential(&c.name)) { (c.name.credential) } }
                                @else { (c.name.credential) }
                            }
                            td { (c.provider.wire_name()) }
                            td { (c.registry) }
                            td { (c.username) }
                            td {
                                @if c.allowed_projects.is_empty() { span.none { "all" } }
                                @else { (c.allowed_projects.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")) }
                            }
                            td.number {
                                @if c.secret_set() { (c.secret_version) }
                                @else { span.badge.keyless title="No secret is stored: pullpass signs in with its own identity" { "keyless" } }
                            }
                            td { (health_badges(c, view.now)) }
                            td { (time(c.last_used_time)) }
                            td { (time(Some(c.create_time))) }
                            td { (time(Some(c.update_time))) }
                        }
                    }
                    @if list.is_empty() {
                        tr { td colspan="10" {
                            @if view.attention_only { "No credential needs attention." } @else { "No credential yet." }
                        } }
                    }
                }
            }
        },
    )
}

/// The "expires in N days" and "failing since" badges of a credential
/// (nothing when it is healthy).
fn health_badges(c: &Credential, now: Timestamp) -> Markup {
    html! {
        @if let Some(days) = health::expires_in_days(c, now) {
            @let expiry = c.expire_time.map(Timestamp::to_rfc3339).unwrap_or_default();
            @if days < 0 {
                span.badge.expired title={ "The secret expired at " (expiry) } { "expired" }
            } @else if days == 0 {
                span.badge.expiring title={ "The secret expires at " (expiry) } { "expires today" }
            } @else {
                span.badge.expiring title={ "The secret expires at " (expiry) } {
                    "expires in " (days) @if days == 1 { " day" } @else { " days" }
                }
            }
            " "
        }
        @if let Some(failure) = c.last_failure.filter(|_| c.failing()) {
            @let since = failure.since.to_rfc3339();
            span.badge.failing title={ (failure.reason.describe()) " (last at " (failure.time.to_rfc3339()) ")" } {
                "failing since " time datetime=(since) { (since.replace('T', " ")) }
            }
        }
    }
}

/// Successful leases per hour over the last 24 hours, as an inline SVG bar
/// chart drawn here (no script): one bar per hour, the current hour last,
/// each with its count as a tooltip, and the total as the accessible name.
fn lease_chart(per_hour: &[(Timestamp, u64)], now: Timestamp) -> Markup {
    const HOUR: i64 = 3_600_000_000;
    const BAR: u64 = 20;
    const HEIGHT: u64 = 80;
    let current = now.as_micros().div_euclid(HOUR);
    let counts: Vec<(i64, u64)> = (0..24)
        .map(|back| {
            let hour = current - 23 + back;
            let n = per_hour.iter().filter(|(t, _)| t.as_micros().div_euclid(HOUR) == hour).map(|(_, n)| n).sum();
            (hour, n)
        })
        .collect();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let peak = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let width = BAR * 24;
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="leases-title"
                width=(width) height=(HEIGHT + 16) viewBox={ "0 0 " (width) " " (HEIGHT + 16) } {
                title id="leases-title" { (total) " leases in the last 24 hours, at most " (peak) " in an hour" }
                @for (i, (hour, n)) in counts.iter().enumerate() {
                    @let h = if *n == 0 { 1 } else { (n * HEIGHT).div_ceil(peak).max(2) };
                    @let start = Timestamp::from_micros(hour * HOUR).to_rfc3339();
                    rect.bar x=(i as u64 * BAR + 2) y=(HEIGHT - h) width=(BAR - 4) height=(h) {
                        title { (start.get(11..16).unwrap_or("")) " UTC: " (n) @if *n == 1 { " lease" } @else { " leases" } }
                    }
                }
                text x="0" y=(HEIGHT + 14) { "24 h ago" }
                text x=(width) y=(HEIGHT + 14) text-anchor="end" { "now" }
            }
            figcaption { "Leases per hour, last 24 hours (" (total) " in all; most in one hour: " (peak) ")" }
        }
    }
}

/// What the credential form was filled with (never the secret).
#[derive(Debug, Clone, Default)]
pub struct CredentialForm {
    /// Name (the credential id).
    pub name: String,
    /// Provider wire name.
    pub provider: String,
    /// User name.
    pub username: String,
    /// Registry server as typed.
    pub registry_server: String,
    /// Restrict to projects.
    pub restrict: bool,
    /// Projects, comma-separated.
    pub projects: String,
    /// Allow passthrough.
    pub passthrough: bool,
    /// Description.
    pub description: String,
    /// Repository the Test button asks a token for.
    pub test_repository: String,
    /// Extra token-realm origins, comma-separated (edit form).
    pub token_realms: String,
    /// When the upstream secret expires, `YYYY-MM-DD` (empty: never/unknown).
    pub expires: String,
    /// ECR: the role to assume.
    pub role_arn: String,
    /// ECR: its external id.
    pub external_id: String,
    /// ECR: assume it with pullpass's own issuer token.
    pub web_identity: bool,
    /// ACR: the tenant.
    pub tenant_id: String,
    /// ACR: the app's client id.
    pub client_id: String,
    /// Google: the workload identity pool provider.
    pub google_audience: String,
    /// Google: the service account to impersonate.
    pub service_account: String,
    /// Quay: the federated robot.
    pub quay_robot: String,
}

impl CredentialForm {
    /// The form of a stored credential.
    pub fn of(c: &Credential) -> Self {
        Self {
            name: c.name.credential.to_string(),
            provider: c.provider.wire_name().into(),
            username: c.username.clone(),
            registry_server: c.registry.to_string(),
            restrict: !c.allowed_projects.is_empty(),
            projects: c.allowed_projects.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
            passthrough: c.allow_passthrough,
            description: c.description.clone(),
            test_repository: String::new(),
            token_realms: c.token_realm_allowlist.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            expires: c.expire_time.map(|t| t.to_rfc3339().chars().take(10).collect()).unwrap_or_default(),
            ..Self::default()
        }
        .with_settings(&c.settings)
    }

    fn with_settings(mut self, settings: &ProviderSettings) -> Self {
        match settings {
            ProviderSettings::None => {}
            ProviderSettings::AwsRole(role) => {
                self.role_arn = role.role_arn.clone();
                self.external_id = role.external_id.clone();
                self.web_identity = role.web_identity;
            }
            ProviderSettings::Azure(azure) => {
                self.tenant_id = azure.tenant_id.clone();
                self.client_id = azure.client_id.clone();
            }
            ProviderSettings::GoogleFederation(google) => {
                self.google_audience = google.audience.clone();
                self.service_account = google.service_account.clone();
            }
            ProviderSettings::QuayRobot(quay) => self.quay_robot = quay.robot.clone(),
        }
        self
    }
}

/// The fields of the keyless settings, one group per provider. Filled in,
/// they let pullpass reach the cloud with its own identity or issuer and no
/// stored secret (leave the password empty).
fn keyless_fields(form: &CredentialForm, errors: &Errors) -> Markup {
    html! {
        fieldset.keyless {
            legend { "Without a stored secret (cloud registries)" }
            p.hint { "Fill in the group of your provider and leave Password empty: pullpass then signs in with its own identity. See docs/cloud-federation.md for each cloud's trust set-up." }
            fieldset {
                legend { "Amazon ECR: a role to assume" }
                (text_field("role_arn", "Role ARN", &form.role_arn, errors, Some("arn:aws:iam::ACCOUNT:role/NAME. Each lease is narrowed to the one repository pulled.")))
                (text_field("external_id", "External id", &form.external_id, errors, Some("Only if the role's trust policy asks for one.")))
                (checkbox("web_identity", "Assume it with pullpass's own OIDC token (no AWS key anywhere)", form.web_identity, errors, Some("Otherwise pullpass signs with the access key above, or with its own AWS identity when none is given.")))
            }
            fieldset {
                legend { "Azure Container Registry: the app registration" }
                (text_field("tenant_id", "Tenant id", &form.tenant_id, errors, Some("The directory (tenant) id, or its domain.")))
                (text_field("client_id", "Client id", &form.client_id, errors, Some("The application (client) id. Put its client secret in Password, or leave Password empty for a federated credential trusting pullpass.")))
            }
            fieldset {
                legend { "Google: workload identity federation" }
                (text_field("google_audience", "Workload identity provider", &form.google_audience, errors, Some("//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER")))
                (text_field("service_account", "Service account", &form.service_account, errors, Some("Optional: the service account to impersonate (NAME@PROJECT.iam.gserviceaccount.com).")))
            }
            fieldset {
                legend { "Quay: robot federation" }
                (text_field("quay_robot", "Robot", &form.quay_robot, errors, Some("ORGANIZATION+ROBOT, federated with pullpass's issuer.")))
            }
        }
    }
}

const REGISTRY_HINT: &str = "host[:port] with an optional namespace path, such as ghcr.io or registry.example.com/team. A protocol such as https:// is removed. Self-hosted GitLab: your GitLab registry's domain.";
const PASSWORD_HINT: &str = "The personal access token or password. ECR: the secret access key (the access key id goes in User name). Google: upload the JSON key below instead.";

/// The Add form.
pub fn add(chrome: &Chrome, workspace: &WorkspaceId, form: &CredentialForm, errors: &Errors) -> Markup {
    page(
        "Add credential",
        Some(chrome),
        html! {
            (general_errors(errors))
            form.card method="post" action=(to::credentials(workspace)) enctype="multipart/form-data" {
                (csrf(&chrome.csrf))
                (text_field("name", "Name", &form.name, errors, Some("Letters, digits, `-` and `_`, at most 64: how launchers and the audit trail name it.")))
                div.field {
                    label for="provider" { "Provider" }
                    select id="provider" name="provider" aria-describedby=[errors.of("provider").map(|_| "provider-error")] {
                        @for p in Provider::ALL {
                            option value=(p.wire_name()) selected[form.provider == p.wire_name()] data-registry=[crate::credentials::spec::default_registry(p).filter(|_| matches!(p, Provider::DockerHub | Provider::Ghcr | Provider::Quay))] { (provider_label(p)) }
                        }
                    }
                    @if let Some(message) = errors.of("provider") { p.field-error id="provider-error" { (message) } }
                }
                (text_field("username", "User name", &form.username, errors, Some("Your registry user name. ECR: the access key id (AKIA…). Google: taken from the key.")))
                (secret_field("password", "Password", errors, Some(PASSWORD_HINT)))
                (text_field("registry_server", "Registry server", &form.registry_server, errors, Some(REGISTRY_HINT)))
                (google_key_field(errors))
                (keyless_fields(form, errors))
                (restrictions(form, errors))
                button type="submit" { "Add credential" }
            }
        },
    )
}

fn google_key_field(errors: &Errors) -> Markup {
    html! {
        div.field.provider-google {
            label for="google_key" { "JSON key file" }
            input type="file" id="google_key" name="google_key" accept="application/json,.json" aria-describedby="google_key-hint";
            p.hint id="google_key-hint" { "Google only: the service account's JSON key. It is sealed at once and never shown again." }
            @if let Some(message) = errors.of("google_key") { p.field-error id="google_key-error" { (message) } }
        }
    }
}

fn restrictions(form: &CredentialForm, errors: &Errors) -> Markup {
    html! {
        (checkbox("restrict", "Restrict to projects", form.restrict, errors, Some("Organization workspaces: serve only the projects listed below.")))
        (text_field("projects", "Projects", &form.projects, errors, Some("Comma-separated project names, such as rnaseq, imaging.")))
        (checkbox("passthrough", "Allow passthrough", form.passthrough, errors, Some("Hand out the stored user name and password where a registry offers no token exchange (Basic-only registries).")))
        (field("expires", "Secret expires on", errors, Some("Optional: the date the token or password itself expires (a personal access token's expiry), so the list and alerts warn before it. Leave empty if it never expires."), |described| {
            html! { input type="date" id="expires" name="expires" value=(form.expires) aria-describedby=[described] aria-invalid=[errors.of("expires").map(|_| "true")]; }
        }))
        (text_field("description", "Description", &form.description, errors, None))
    }
}

/// What a Test found.
#[derive(Debug, Clone)]
pub enum TestOutcome {
    /// The registry issued auth.
    Granted {
        /// The scope asked for.
        requested: String,
        /// The scope granted ("" when the registry does not say).
        granted: String,
        /// BEARER or BASIC.
        kind: &'static str,
        /// When it would have expired.
        expires: Timestamp,
        /// When the secret itself expires, where its registry's owner said
        /// so during the test.
        secret_expires: Option<Timestamp>,
    },
    /// It did not, for a typed reason.
    Refused {
        /// `rejected`, `unreachable`, `realm not allowed`, `rate limited`, …
        reason: &'static str,
        /// The message (names the credential and registry, never a secret).
        message: String,
    },
}

/// A credential's edit form, with the Test and Delete buttons.
pub fn edit(
    chrome: &Chrome,
    credential: &Credential,
    form: &CredentialForm,
    errors: &Errors,
    test: Option<&TestOutcome>,
    saved: bool,
) -> Markup {
    let name = &credential.name;
    page(
        &format!("Credential {}", name.credential),
        Some(chrome),
        html! {
            @if saved { p.notice role="status" { "Saved. Secret version " (credential.secret_version) "." } }
            @if let Some(outcome) = test { (test_result(outcome)) }
            dl.facts {
                dt { "Provider" } dd { (provider_label(credential.provider)) }
                dt { "Secret version" } dd id="secret-version" {
                    @if credential.secret_set() { (credential.secret_version) }
                    @else { span.badge.keyless { "keyless" } " (no secret stored)" }
                }
                dt { "Last used" } dd { (time(credential.last_used_time)) }
                dt { "Secret expires" } dd id="expires-fact" {
                    @match credential.expire_time {
                        Some(t) => { (time(Some(t))) " " (health_badges(&Credential { last_failure: None, ..credential.clone() }, Timestamp::now())) }
                        None => span.none { "not known" },
                    }
                }
                dt { "Last failure" } dd id="last-failure" {
                    @match credential.last_failure {
                        Some(f) => {
                            (time(Some(f.time))) ": " (f.reason.describe())
                            @if credential.failing() { " " span.badge.failing { "failing since " (f.since.to_rfc3339().replace('T', " ")) } }
                        }
                        None => span.none { "none" },
                    }
                }
                dt { "Updated" } dd { (time(Some(credential.update_time))) }
            }
            (general_errors(errors))
            form.card method="post" action=(to::credential(name)) enctype="multipart/form-data" {
                (csrf(&chrome.csrf))
                input type="hidden" name="provider" value=(credential.provider.wire_name());
                (text_field("username", "User name", &form.username, errors, None))
                (secret_field("password", "Password", errors, Some("Leave blank to keep the stored secret. Fill it in to rotate it: the secret version goes up.")))
                (text_field("registry_server", "Registry server", &form.registry_server, errors, Some(REGISTRY_HINT)))
                @if credential.provider == Provider::Google { (google_key_field(errors)) }
                @if matches!(credential.provider, Provider::Ecr | Provider::Acr | Provider::Google | Provider::Quay) {
                    (keyless_fields(form, errors))
                }
                (restrictions(form, errors))
                (text_field("token_realms", "Token realms", &form.token_realms, errors, Some("Other origins (https://host[:port]) the secret may be sent to for a token, beyond the registry itself and its provider's known realm: a self-hosted registry whose token service runs elsewhere. Comma-separated.")))
                (text_field("test_repository", "Repository to test", &form.test_repository, errors, Some("For Test: a repository under this credential's registry, such as team/app.")))
                div.buttons {
                    button type="submit" { "Save" }
                    button.secondary type="submit" formaction=(to::test(name)) { "Test" }
                    a.button.danger href=(to::delete(name)) { "Delete" }
                }
            }
        },
    )
}

fn test_result(outcome: &TestOutcome) -> Markup {
    match outcome {
        TestOutcome::Granted { requested, granted, kind, expires, secret_expires } => html! {
            div.notice role="status" id="test-result" {
                p { strong { "Test passed." } " The registry issued " (kind) " auth." }
                p { "Granted scope: " code id="granted-scope" { @if granted.is_empty() { "(not stated by the registry)" } @else { (granted) } } }
                p { "Requested: " code { (requested) } "; it would expire at " (time(Some(*expires))) "." }
                @if let Some(at) = secret_expires {
                    p id="secret-expiry" { "The registry's owner reports that this token itself expires at " (time(Some(*at))) "; that is now the credential's expiry." }
                }
            }
        },
        TestOutcome::Refused { reason, message } => html! {
            div.error role="alert" id="test-result" {
                p { strong { "Test failed: " (reason) "." } }
                p { (message) }
            }
        },
    }
}

/// The delete confirmation.
pub fn confirm_delete(chrome: &Chrome, name: &crate::domain::CredentialName) -> Markup {
    page(
        "Delete credential?",
        Some(chrome),
        html! {
            p { "Delete " strong { (name.credential) } " of " (name.workspace) "? Launchers using it lose access to its registry at once, and its sealed secret is erased. This cannot be undone." }
            form method="post" action=(to::delete(name)) {
                (csrf(&chrome.csrf))
                div.buttons {
                    button.danger type="submit" { "Delete" }
                    a.button.secondary href=(to::credential(name)) { "Cancel" }
                }
            }
        },
    )
}

/// One entry's outcome of an import.
#[derive(Debug, Clone)]
pub struct ImportRow {
    /// The `auths` key.
    pub config_key: String,
    /// The created credential's id, or why not.
    pub outcome: Result<String, String>,
}

/// The import form, and the results of the last import.
pub fn import(
    chrome: &Chrome,
    workspace: &WorkspaceId,
    prefix: &str,
    errors: &Errors,
    results: &[ImportRow],
) -> Markup {
    page(
        "Import docker config.json",
        Some(chrome),
        html! {
            @if !results.is_empty() {
                table id="import-results" {
                    caption { "What the import did, per entry" }
                    thead { tr { th scope="col" { "Registry entry" } th scope="col" { "Result" } } }
                    tbody {
                        @for row in results {
                            tr {
                                td { code { (row.config_key) } }
                                @match &row.outcome {
                                    Ok(id) => td.ok { "Created " (id) },
                                    Err(message) => td.failed { "Not imported: " (message) },
                                }
                            }
                        }
                    }
                }
            }
            (general_errors(errors))
            form.card method="post" action=(to::import(workspace)) enctype="multipart/form-data" {
                (csrf(&chrome.csrf))
                div.field {
                    label for="config_json" { "Docker config.json" }
                    input type="file" id="config_json" name="config_json" accept="application/json,.json" aria-describedby="config_json-hint";
                    p.hint id="config_json-hint" { "Each entry of `auths` with a user name and password becomes a credential. The file is read once; its passwords are sealed and never shown." }
                    @if let Some(message) = errors.of("config_json") { p.field-error id="config_json-error" { (message) } }
                }
                (text_field("name_prefix", "Name prefix", prefix, errors, Some("Each credential is named this prefix followed by its registry.")))
                button type="submit" { "Import" }
            }
        },
    )
}

/// What the token form was filled with.
#[derive(Debug, Clone, Default)]
pub struct TokenForm {
    /// LAUNCHER, VIEWER or ADMIN.
    pub role: String,
    /// Projects, comma-separated (LAUNCHER).
    pub projects: String,
    /// Description.
    pub description: String,
    /// Days until it expires ("" for never).
    pub expires_days: String,
}

/// A workspace's access tokens; `minted` is a token just created, shown once.
pub fn tokens(
    chrome: &Chrome,
    workspace: &WorkspaceId,
    list: &[AccessTokenRecord],
    roles: &[&str],
    form: &TokenForm,
    errors: &Errors,
    minted: Option<(&str, &str)>,
) -> Markup {
    page(
        &format!("Access tokens of {workspace}"),
        Some(chrome),
        html! {
            @if let Some((name, token)) = minted {
                div.notice role="status" {
                    p { strong { "Created " (name) "." } " Copy the token now: it is shown this once and cannot be shown again." }
                    div.copy {
                        label for="new-token" { "New token" }
                        input type="text" id="new-token" readonly value=(token) autocomplete="off";
                        button type="button" data-copy="new-token" { "Copy" }
                    }
                }
            }
            table {
                caption { "Access tokens of " (workspace) }
                thead {
                    tr {
                        th scope="col" { "Token" } th scope="col" { "Role" } th scope="col" { "Projects" } th scope="col" { "Description" }
                        th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "State" }
                    }
                }
                tbody {
                    @for t in list {
                        tr {
                            td { (t.id) }
                            td { (t.role.wire_name()) }
                            td { @if t.projects.is_empty() { span.none { "all" } } @else { (t.projects.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")) } }
                            td { (t.description) }
                            td { (time(Some(t.create_time))) }
                            td { (time(t.last_used_time)) }
                            td { @match t.expire_time { Some(e) => (time(Some(e))), None => span.none { "never" } } }
                            td {
                                @if let Some(revoked) = t.revoke_time { "revoked " (time(Some(revoked))) }
                                @else if roles.contains(&t.role.wire_name()) {
                                    form method="post" action=(to::revoke(workspace, &t.id)) {
                                        (csrf(&chrome.csrf))
                                        button.danger type="submit" { "Revoke" }
                                    }
                                } @else { "active" }
                            }
                        }
                    }
                    @if list.is_empty() { tr { td colspan="8" { "No access token yet." } } }
                }
            }
            h2 { "Create a token" }
            (general_errors(errors))
            form.card method="post" action=(to::tokens(workspace)) {
                (csrf(&chrome.csrf))
                div.field {
                    label for="role" { "Role" }
                    select id="role" name="role" {
                        @for role in roles { option value=(role) selected[form.role == *role] { (role) } }
                    }
                    @if let Some(message) = errors.of("role") { p.field-error id="role-error" { (message) } }
                }
                (text_field("projects", "Projects", &form.projects, errors, Some("LAUNCHER only: the projects it may issue auth for, comma-separated; empty means all.")))
                (text_field("description", "Description", &form.description, errors, None))
                (text_field("expires_days", "Expires in (days)", &form.expires_days, errors, Some("Empty: the token does not expire.")))
                button type="submit" { "Create token" }
            }
        },
    )
}

/// What the audit filter holds.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Exact action.
    pub action: String,
    /// Exact resource.
    pub resource: String,
    /// Exact principal.
    pub principal: String,
    /// Events at or after (RFC 3339).
    pub since: String,
}

/// The result of the chain check.
#[derive(Debug, Clone)]
pub enum ChainCheck {
    /// Every event links to the one before.
    Intact {
        /// Events checked.
        checked: u64,
    },
    /// The first broken link.
    Broken(String),
    /// Not run, and why (not ROOT, or not now).
    Refused(String),
}

/// A workspace's audit trail.
pub fn audit(
    chrome: &Chrome,
    workspace: &WorkspaceId,
    query: &AuditQuery,
    errors: &Errors,
    events: &[AuditRecord],
    next: Option<String>,
    check: Option<&ChainCheck>,
) -> Markup {
    page(
        &format!("Audit trail of {workspace}"),
        Some(chrome),
        html! {
            @match check {
                Some(ChainCheck::Intact { checked }) => p.notice role="status" id="chain-check" { "Chain check: intact. " (checked) " events of every workspace checked; every one links to the one before." },
                Some(ChainCheck::Broken(why)) => div.error role="alert" id="chain-check" { p { "Chain check: broken. " (why) } },
                Some(ChainCheck::Refused(why)) => div.error role="alert" id="chain-check" { p { "Chain check: not run. " (why) } },
                None => {},
            }
            (general_errors(errors))
            form.card.inline method="get" action=(to::audit(workspace)) {
                (text_field("action", "Action", &query.action, errors, None))
                (text_field("resource", "Resource", &query.resource, errors, None))
                (text_field("principal", "Principal", &query.principal, errors, None))
                (text_field("since", "Since", &query.since, errors, Some("RFC 3339, such as 2026-12-01T00:00:00Z")))
                div.buttons {
                    button type="submit" { "Filter" }
                    @if chrome.root {
                        button.secondary type="submit" name="check" value="1" { "Check chain" }
                    }
                }
            }
            table {
                caption { "Events, oldest first" }
                thead {
                    tr {
                        th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Principal" } th scope="col" { "Action" }
                        th scope="col" { "Resource" } th scope="col" { "Outcome" } th scope="col" { "Image" } th scope="col" { "Calls" }
                        th scope="col" { "Client" } th scope="col" { "Request id" }
                    }
                }
                tbody {
                    @for r in events {
                        @let e = &r.event;
                        tr {
                            td.number { (r.seq) }
                            td { (time(Some(e.event_time))) }
                            td { (e.principal) }
                            td { (e.action) }
                            td { (e.resource) }
                            td { (outcome_name(e.status_code)) }
                            td { (e.image) @if !e.granted_scope.is_empty() { br; small { (e.granted_scope) } } }
                            td.number { (e.count) }
                            td { (e.client_address) }
                            td { @let ids: Vec<&str> = e.request_ids().collect();
                                 (ids.first().copied().unwrap_or(""))
                                 @if ids.len() > 1 { " and " (ids.len() - 1) " more" } }
                        }
                    }
                    @if events.is_empty() { tr { td colspan="10" { "No event matches." } } }
                }
            }
            @if let Some(next) = next { p { a href=(next) { "Next page" } } }
        },
    )
}

/// A status code as the audit page shows it.
pub fn outcome_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        3 => "invalid argument",
        5 => "not found",
        6 => "already exists",
        7 => "permission denied",
        8 => "rate limited",
        9 => "failed precondition",
        13 => "internal error",
        14 => "unavailable",
        16 => "unauthenticated",
        _ => "error",
    }
}

/// An error page (404, 403, 400).
pub fn problem(chrome: Option<&Chrome>, title: &str, message: &str) -> Markup {
    page(
        title,
        chrome,
        html! {
            div.error role="alert" { p { (message) } }
            p { a href="/console/" { "Back to the console" } }
        },
    )
}

/// A bare redirect body (the `Location` header does the work).
pub fn moved(to: &str) -> Markup {
    html! { (PreEscaped("<!DOCTYPE html>")) p { a href=(to) { "Continue" } } }
}
