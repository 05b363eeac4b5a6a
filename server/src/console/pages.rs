//! The console's handlers: one per page or action, thin. Each checks the
//! permission with the same policy function the gRPC API uses, calls the
//! same domain service, and renders a view. A domain error becomes the
//! API's field violation next to the field it names, or a page that says
//! what went wrong; a failed change is recorded in the audit trail as the
//! API records it.

use std::time::{Duration, Instant};

use http::StatusCode;
use maud::Markup;
use pullpass::scope::Action;

use super::form::Form;
use super::identity_pages;
use super::route::{Route, to};
use super::views::{
    self, AuditQuery, ChainCheck, Chrome, CredentialForm, Errors, ImportRow, TestOutcome, TokenForm, WorkspaceForm,
};
use super::{Console, Reply};
use crate::access::policy::{Permission, authorize};
use crate::access::sessions::Session;
use crate::access::tokens::NewToken;
use crate::audit::Actor;
use crate::credentials::spec::CredentialInput;
use crate::domain::credential::ProviderSettings;
use crate::domain::{CredentialId, CredentialName, Provider, Role, Timestamp, WorkspaceId};
use crate::error::Error;
use crate::secret::SecretBytes;

/// Most rows a list page shows.
pub(super) const PAGE_SIZE: i32 = 100;
/// Most credentials the credentials page lists.
const MAX_LISTED: usize = 10_000;

/// What a signed-in request carries into a handler.
#[derive(Debug)]
pub struct Call<'a> {
    /// The session.
    pub session: &'a Session,
    /// Who acts, for the audit trail.
    pub actor: Actor,
    /// The form of a POST.
    pub form: Option<Form>,
    /// The query string (GET filters, page tokens).
    pub query: String,
}

impl Call<'_> {
    pub(super) fn allowed(&self, permission: Permission<'_>) -> Result<(), Error> {
        authorize(&self.session.principal, permission)
    }

    pub(super) fn chrome(&self, console: &Console, workspace: Option<&WorkspaceId>) -> Chrome {
        let principal = &self.session.principal;
        let workspace = workspace.cloned().or_else(|| principal.workspace.clone());
        let _ = console;
        Chrome {
            principal: principal.resource_name.to_string(),
            role: principal.role.wire_name(),
            root: principal.role == Role::Root,
            tokens: workspace.as_ref().is_some_and(|w| self.allowed(Permission::ReadTokens(w)).is_ok()),
            bindings: workspace.as_ref().is_some_and(|w| self.allowed(Permission::ManageIdentityBindings(w)).is_ok()),
            workspace,
            csrf: self.session.csrf.clone(),
        }
    }

    fn form(&self) -> &Form {
        static EMPTY: std::sync::LazyLock<Form> = std::sync::LazyLock::new(Form::default);
        self.form.as_ref().unwrap_or(&EMPTY)
    }
}

/// Runs the handler of `route` for a signed-in session.
pub async fn handle(console: &Console, route: Route, call: Call<'_>) -> Reply {
    let outcome = match route {
        Route::Home => Ok(home(&call)),
        Route::Workspaces => workspaces(console, &call).await,
        Route::Credentials(w) if call.form.is_some() => add_credential(console, &call, w).await,
        Route::Credentials(w) => credentials(console, &call, w).await,
        Route::Add(w) => add_form(console, &call, w),
        Route::Credential(name) => credential(console, &call, name, false).await,
        Route::Test(name) => credential(console, &call, name, true).await,
        Route::Delete(name) => delete(console, &call, name).await,
        Route::Import(w) => import(console, &call, w).await,
        Route::Tokens(w) => tokens(console, &call, w).await,
        Route::Revoke(w, token) => revoke(console, &call, w, token).await,
        Route::Audit(w) => audit(console, &call, w).await,
        Route::IdentityProviders => identity_pages::providers(console, &call).await,
        Route::IdentityProvider(id) => identity_pages::provider(console, &call, id).await,
        Route::DeleteIdentityProvider(id) => identity_pages::delete_provider(console, &call, id).await,
        Route::IdentityBindings(w) => identity_pages::bindings(console, &call, w).await,
        Route::IdentityBinding(name) => identity_pages::binding(console, &call, name).await,
        Route::DeleteIdentityBinding(name) => identity_pages::delete_binding(console, &call, name).await,
        Route::TestIdentityToken(w) => identity_pages::test_token(console, &call, w).await,
        Route::Login | Route::Logout | Route::Asset(_) => Ok(Reply::Redirect("/console/".into())),
    };
    outcome.unwrap_or_else(|error| problem(console, &call, &error))
}

/// A page for an error no form field explains.
fn problem(console: &Console, call: &Call<'_>, error: &Error) -> Reply {
    let (status, title) = match error {
        Error::NotFound { .. } | Error::NoMatch { .. } => (StatusCode::NOT_FOUND, "Not found"),
        Error::PermissionDenied { .. } => (StatusCode::FORBIDDEN, "Not allowed"),
        Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "Not valid"),
        Error::AlreadyExists { .. } | Error::FailedPrecondition { .. } => (StatusCode::CONFLICT, "Not possible"),
        Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Not signed in"),
        Error::ResourceExhausted { .. } => (StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
        Error::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
    };
    Reply::Page(status, views::problem(Some(&call.chrome(console, None)), title, &error.message()))
}

fn home(call: &Call<'_>) -> Reply {
    let principal = &call.session.principal;
    match &principal.workspace {
        Some(w) => Reply::Redirect(to::credentials(w)),
        None => Reply::Redirect(to::workspaces()),
    }
}

/// The API's violations as form errors: `fields` maps an API field path to
/// the form field that shows it; anything else is about the whole form.
pub(super) fn form_errors(error: &Error, fields: &[(&str, &str)]) -> Errors {
    let items = match error {
        Error::InvalidArgument(violations) => violations
            .iter()
            .map(|v| {
                let field = fields
                    .iter()
                    .find(|(path, _)| {
                        v.field == *path || v.field.strip_prefix(path).is_some_and(|rest| rest.starts_with(['.', '[']))
                    })
                    .map_or("", |(_, field)| field);
                (field.to_owned(), v.description.clone())
            })
            .collect(),
        other => vec![(String::new(), other.message())],
    };
    Errors { items }
}

/// Records a failed change, as the API does (a workspace token's in its
/// own workspace's trail).
pub(super) async fn audit_failure(console: &Console, call: &Call<'_>, action: &str, resource: &str, error: &Error) {
    console.inner.auditor.record_failure(&call.actor, action, resource, error.grpc_code()).await;
}

// --- workspaces (ROOT) ---

async fn workspaces(console: &Console, call: &Call<'_>) -> Result<Reply, Error> {
    call.allowed(Permission::ManageWorkspaces)?;
    let services = &console.inner;
    let mut form = WorkspaceForm::default();
    let mut errors = Errors::default();
    if let Some(submitted) = &call.form {
        form = WorkspaceForm {
            id: submitted.text("workspace_id"),
            kind: submitted.text("kind"),
            display_name: submitted.text("display_name"),
        };
        let kind = match form.kind.as_str() {
            "PERSONAL" => 2,
            "ORGANIZATION" => 1,
            _ => 0,
        };
        match services.workspaces.create(&call.actor, &form.id, kind, form.display_name.clone()).await {
            Ok(created) => return Ok(Reply::Redirect(to::credentials(&created.id))),
            Err(error) => {
                audit_failure(console, call, "CreateWorkspace", &format!("workspaces/{}", form.id), &error).await;
                errors = form_errors(
                    &error,
                    &[
                        ("workspace_id", "workspace_id"),
                        ("workspace.kind", "kind"),
                        ("workspace.display_name", "display_name"),
                    ],
                );
                if let Error::AlreadyExists { .. } = error {
                    errors.items = vec![("workspace_id".into(), error.message())];
                }
            }
        }
    }
    let list = services.workspaces.list(PAGE_SIZE, "").await?;
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok(Reply::Page(status, views::workspaces(&call.chrome(console, None), &list.items, &form, &errors)))
}

// --- credentials ---

/// Where each API field of a credential shows on the form.
const CREDENTIAL_FIELDS: [(&str, &str); 20] = [
    ("credential_id", "name"),
    ("credential.provider", "provider"),
    ("credential.username", "username"),
    ("credential.secret", "password"),
    ("credential.registry_server", "registry_server"),
    ("credential.allowed_projects", "projects"),
    ("credential.allow_passthrough", "passthrough"),
    ("credential.description", "description"),
    ("credential.token_realm_allowlist", "token_realms"),
    ("credential.expire_time", "expires"),
    ("repository", "test_repository"),
    ("credential.aws_role.role_arn", "role_arn"),
    ("credential.aws_role.external_id", "external_id"),
    ("credential.aws_role.web_identity", "web_identity"),
    ("credential.aws_role", "role_arn"),
    ("credential.azure.tenant_id", "tenant_id"),
    ("credential.azure.client_id", "client_id"),
    ("credential.azure", "tenant_id"),
    ("credential.google_federation", "google_audience"),
    ("credential.quay_robot", "quay_robot"),
];

async fn credentials(console: &Console, call: &Call<'_>, workspace: WorkspaceId) -> Result<Reply, Error> {
    call.allowed(Permission::ReadCredentials(&workspace))?;
    let can_manage = call.allowed(Permission::ManageCredentials(&workspace)).is_ok();
    // Every credential (health is judged over all of them, not a page),
    // up to a bound no workspace should reach.
    let mut page = console.inner.credentials.list(workspace.clone(), 1000, "", "").await?;
    let mut token = std::mem::take(&mut page.next_page_token);
    while !token.is_empty() && page.items.len() < MAX_LISTED {
        let next = console.inner.credentials.list(workspace.clone(), 1000, &token, "").await?;
        page.items.extend(next.items);
        token = next.next_page_token;
    }
    let attention_only = form_urlencoded::parse(call.query.as_bytes()).any(|(k, v)| k == "attention" && v == "1");
    let now = Timestamp::now();
    let leases_per_hour =
        console.inner.auditor.leases_per_hour(&workspace, now.saturating_minus(Duration::from_secs(24 * 3600))).await?;
    let chrome = call.chrome(console, Some(&workspace));
    let view = views::CredentialsView { can_manage, attention_only, leases_per_hour: &leases_per_hour, now };
    Ok(Reply::Page(StatusCode::OK, views::credentials(&chrome, &workspace, &page.items, view)))
}

fn add_form(console: &Console, call: &Call<'_>, workspace: WorkspaceId) -> Result<Reply, Error> {
    call.allowed(Permission::ManageCredentials(&workspace))?;
    let form = CredentialForm { provider: Provider::DockerHub.wire_name().into(), ..Default::default() };
    let chrome = call.chrome(console, Some(&workspace));
    Ok(Reply::Page(StatusCode::OK, views::add(&chrome, &workspace, &form, &Errors::default())))
}

/// The credential form as submitted (never the secret).
fn submitted(form: &Form) -> CredentialForm {
    CredentialForm {
        name: form.text("name"),
        provider: form.text("provider"),
        username: form.text("username"),
        registry_server: form.text("registry_server"),
        restrict: form.checked("restrict"),
        projects: form.text("projects"),
        passthrough: form.checked("passthrough"),
        description: form.text("description"),
        test_repository: form.text("test_repository"),
        token_realms: form.text("token_realms"),
        expires: form.text("expires"),
        role_arn: form.text("role_arn"),
        external_id: form.text("external_id"),
        web_identity: form.checked("web_identity"),
        tenant_id: form.text("tenant_id"),
        client_id: form.text("client_id"),
        google_audience: form.text("google_audience"),
        service_account: form.text("service_account"),
        quay_robot: form.text("quay_robot"),
    }
}

/// The provider settings a form names: those of its provider, when any of
/// their fields is filled in (ACR's are required, so always read).
fn settings_of(form: &Form, provider: Option<Provider>) -> ProviderSettings {
    use crate::domain::credential::{AwsRole, AzureIdentity, GoogleFederation, QuayRobotFederation};
    let filled = |names: &[&str]| names.iter().any(|n| !form.text(n).is_empty());
    match provider {
        Some(Provider::Ecr) if filled(&["role_arn", "external_id"]) || form.checked("web_identity") => {
            ProviderSettings::AwsRole(AwsRole {
                role_arn: form.text("role_arn"),
                external_id: form.text("external_id"),
                web_identity: form.checked("web_identity"),
            })
        }
        Some(Provider::Acr) => ProviderSettings::Azure(AzureIdentity {
            tenant_id: form.text("tenant_id"),
            client_id: form.text("client_id"),
        }),
        Some(Provider::Google) if filled(&["google_audience", "service_account"]) => {
            ProviderSettings::GoogleFederation(GoogleFederation {
                audience: form.text("google_audience"),
                service_account: form.text("service_account"),
            })
        }
        Some(Provider::Quay) if filled(&["quay_robot"]) => {
            ProviderSettings::QuayRobot(QuayRobotFederation { robot: form.text("quay_robot") })
        }
        _ => ProviderSettings::None,
    }
}

/// The domain input of a submitted credential form: the secret is the
/// uploaded Google key when there is one, else the Password field.
fn credential_input(form: &Form, provider: Option<Provider>) -> Result<CredentialInput, Error> {
    let restrict = form.checked("restrict");
    let projects = if restrict { form.list("projects") } else { Vec::new() };
    if restrict && projects.is_empty() {
        return Err(Error::invalid(
            "credential.allowed_projects",
            "name at least one project, or untick Restrict to projects to serve every project",
        ));
    }
    let expire_time = expiry_of(&form.text("expires"))?;
    let secret = match form.file("google_key") {
        Some(key) => Some(SecretBytes::new(key.to_vec())),
        None => form.secret("password").map(|password| SecretBytes::from_string(password.to_string())),
    };
    Ok(CredentialInput {
        provider: provider.map_or(0, Provider::code),
        registry_server: form.text("registry_server"),
        username: form.text("username"),
        secret,
        allowed_projects: projects,
        allow_passthrough: form.checked("passthrough"),
        description: form.text("description"),
        token_realm_allowlist: form.list("token_realms"),
        ca_bundle_pem: String::new(),
        settings: settings_of(form, provider),
        expire_time,
        secret_stored: false,
    })
}

/// The form's expiry date (`YYYY-MM-DD`, as a date input sends it): the
/// secret expires at the start of that day, UTC. Empty: no expiry.
fn expiry_of(text: &str) -> Result<Option<Timestamp>, Error> {
    if text.is_empty() {
        return Ok(None);
    }
    let well_formed = text.len() == 10 && text.bytes().enumerate().all(|(i, b)| matches!(i, 4 | 7) == (b == b'-'));
    well_formed
        .then(|| Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z")))
        .flatten()
        .map(Some)
        .ok_or_else(|| Error::invalid("credential.expire_time", "give the date the secret expires, as YYYY-MM-DD"))
}

async fn add_credential(console: &Console, call: &Call<'_>, workspace: WorkspaceId) -> Result<Reply, Error> {
    call.allowed(Permission::ManageCredentials(&workspace))?;
    let form = call.form();
    let shown = submitted(form);
    let resource = format!("{}/credentials/{}", workspace.name(), shown.name);
    let created = async {
        let provider = Provider::from_wire_name(&shown.provider);
        let id = CredentialId::parse(&shown.name).map_err(|e| Error::invalid("credential_id", e));
        let input = credential_input(form, provider);
        // Every bad field at once, as the API reports them.
        match (id, input) {
            (Ok(id), Ok(input)) => console.inner.credentials.create(&call.actor, workspace.clone(), id, input).await,
            (id, input) => {
                let mut violations = Vec::new();
                for error in [id.err(), input.err()].into_iter().flatten() {
                    if let Error::InvalidArgument(v) = error {
                        violations.extend(v);
                    }
                }
                if let Ok(input) = credential_input(form, provider)
                    && let Err(Error::InvalidArgument(v)) = crate::credentials::spec::validate(input, "credential")
                {
                    violations.extend(v);
                }
                Err(Error::InvalidArgument(violations))
            }
        }
    }
    .await;
    match created {
        Ok(saved) => Ok(Reply::Redirect(to::credential(&saved.credential.name))),
        Err(error) => {
            audit_failure(console, call, "CreateCredential", &resource, &error).await;
            let mut errors = form_errors(&error, &CREDENTIAL_FIELDS);
            if let Error::AlreadyExists { .. } = error {
                errors.items = vec![("name".into(), error.message())];
            }
            let chrome = call.chrome(console, Some(&workspace));
            Ok(Reply::Page(StatusCode::UNPROCESSABLE_ENTITY, views::add(&chrome, &workspace, &shown, &errors)))
        }
    }
}

/// The edit page: GET shows it; POST saves, or (from the Test button) tests
/// the stored secret and shows the form as it was filled in.
async fn credential(console: &Console, call: &Call<'_>, name: CredentialName, test: bool) -> Result<Reply, Error> {
    call.allowed(Permission::ManageCredentials(&name.workspace))?;
    let services = &console.inner;
    let chrome = call.chrome(console, Some(&name.workspace));
    let current = services.credentials.get(name.clone()).await?;
    let Some(form) = &call.form else {
        let shown =
            CredentialForm { test_repository: default_test_repository(&current), ..CredentialForm::of(&current) };
        return Ok(Reply::Page(
            StatusCode::OK,
            views::edit(&chrome, &current, &shown, &Errors::default(), None, false),
        ));
    };
    let shown = CredentialForm { name: name.credential.to_string(), ..submitted(form) };
    if test {
        let repository = shown.test_repository.clone();
        if repository.is_empty() {
            let errors = Errors {
                items: vec![(
                    "test_repository".into(),
                    "is required: the repository to ask a token for, such as team/app".into(),
                )],
            };
            return Ok(Reply::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::edit(&chrome, &current, &shown, &errors, None, false),
            ));
        }
        let deadline = Instant::now() + services.upstream_timeout.min(Duration::from_secs(30));
        let report = services.broker.test(&call.actor, name.clone(), &repository, &[Action::Pull], deadline).await;
        // A learned expiry was stored: show the credential as it is now.
        let current = match &report {
            Ok(report) if report.learned_expiry.is_some() => services.credentials.get(name.clone()).await?,
            _ => current,
        };
        return Ok(match report {
            Ok(report) => {
                let outcome = match report.outcome {
                    Ok(lease) => TestOutcome::Granted {
                        requested: report.requested.to_string(),
                        granted: lease.granted.map(|g| g.to_string()).unwrap_or_default(),
                        kind: match lease.grant {
                            crate::domain::Grant::Bearer { .. } => "BEARER",
                            crate::domain::Grant::Basic { .. } => "BASIC",
                        },
                        expires: lease.expire_time,
                        secret_expires: report.learned_expiry,
                    },
                    Err(error) => TestOutcome::Refused { reason: test_reason(&error), message: error.message() },
                };
                Reply::Page(
                    StatusCode::OK,
                    views::edit(&chrome, &current, &shown, &Errors::default(), Some(&outcome), false),
                )
            }
            Err(error) => {
                let errors = form_errors(&error, &CREDENTIAL_FIELDS);
                Reply::Page(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    views::edit(&chrome, &current, &shown, &errors, None, false),
                )
            }
        });
    }
    let mut input = match credential_input(form, Some(current.provider)) {
        Ok(input) => input,
        Err(error) => {
            let errors = form_errors(&error, &CREDENTIAL_FIELDS);
            return Ok(Reply::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::edit(&chrome, &current, &shown, &errors, None, false),
            ));
        }
    };
    // Leaving the password blank keeps the stored secret; a Google user
    // name comes from its key.
    let mut mask =
        vec!["registry_server", "allowed_projects", "allow_passthrough", "description", "token_realm_allowlist"];
    // The form shows the expiry's date only: saving an unchanged date keeps
    // the stored time (a learned 09:00 UTC stays 09:00).
    if form.text("expires") != CredentialForm::of(&current).expires {
        mask.push("expire_time");
    }
    if current.provider != Provider::Google {
        mask.push("username");
    }
    // The settings of the provider's keyless group, as the form shows them.
    mask.extend(match current.provider {
        Provider::Ecr => Some("aws_role"),
        Provider::Acr => Some("azure"),
        Provider::Google => Some("google_federation"),
        Provider::Quay => Some("quay_robot"),
        _ => None,
    });
    if input.secret.is_some() {
        mask.push("secret");
    } else if current.provider == Provider::Google {
        input.username = current.username.clone();
    }
    let mask = mask.into_iter().map(str::to_owned).collect();
    match services.credentials.update(&call.actor, name.clone(), input, Some(mask)).await {
        Ok(saved) => {
            let shown =
                CredentialForm { test_repository: shown.test_repository, ..CredentialForm::of(&saved.credential) };
            Ok(Reply::Page(
                StatusCode::OK,
                views::edit(&chrome, &saved.credential, &shown, &Errors::default(), None, true),
            ))
        }
        Err(error) => {
            audit_failure(console, call, "UpdateCredential", &name.to_string(), &error).await;
            let errors = form_errors(&error, &CREDENTIAL_FIELDS);
            Ok(Reply::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::edit(&chrome, &current, &shown, &errors, None, false),
            ))
        }
    }
}

/// A repository to suggest for Test: the credential's namespace, or
/// Docker Hub's `library/alpine`.
fn default_test_repository(credential: &crate::domain::Credential) -> String {
    match credential.registry.namespace() {
        Some(namespace) => format!("{namespace}/"),
        None if credential.provider == Provider::DockerHub => "library/alpine".into(),
        None => String::new(),
    }
}

/// The typed reason of a failed test.
fn test_reason(error: &Error) -> &'static str {
    use pullpass::reason;
    match error {
        Error::PermissionDenied { reason: r, .. } | Error::FailedPrecondition { reason: r, .. }
            if *r == reason::REALM_NOT_ALLOWED =>
        {
            "realm not allowed"
        }
        Error::PermissionDenied { .. } => "rejected",
        Error::Unavailable { .. } => "unreachable",
        Error::ResourceExhausted { .. } => "rate limited",
        Error::FailedPrecondition { .. } => "not usable",
        Error::InvalidArgument(_) => "invalid",
        _ => "error",
    }
}

async fn delete(console: &Console, call: &Call<'_>, name: CredentialName) -> Result<Reply, Error> {
    call.allowed(Permission::ManageCredentials(&name.workspace))?;
    let chrome = call.chrome(console, Some(&name.workspace));
    if call.form.is_none() {
        console.inner.credentials.get(name.clone()).await?;
        return Ok(Reply::Page(StatusCode::OK, views::confirm_delete(&chrome, &name)));
    }
    match console.inner.credentials.delete(&call.actor, name.clone()).await {
        Ok(()) => Ok(Reply::Redirect(to::credentials(&name.workspace))),
        Err(error) => {
            audit_failure(console, call, "DeleteCredential", &name.to_string(), &error).await;
            Err(error)
        }
    }
}

async fn import(console: &Console, call: &Call<'_>, workspace: WorkspaceId) -> Result<Reply, Error> {
    call.allowed(Permission::ManageCredentials(&workspace))?;
    let chrome = call.chrome(console, Some(&workspace));
    let Some(form) = &call.form else {
        return Ok(Reply::Page(
            StatusCode::OK,
            views::import(&chrome, &workspace, "imported-", &Errors::default(), &[]),
        ));
    };
    let prefix = form.text("name_prefix");
    let Some(file) = form.file("config_json") else {
        let errors = Errors { items: vec![("config_json".into(), "choose the config.json file to import".into())] };
        return Ok(Reply::Page(
            StatusCode::UNPROCESSABLE_ENTITY,
            views::import(&chrome, &workspace, &prefix, &errors, &[]),
        ));
    };
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(file).into_owned());
    let resource = workspace.name();
    match console.inner.credentials.import_docker_config(&call.actor, workspace.clone(), &text, &prefix, false).await {
        Ok(results) => {
            let rows: Vec<ImportRow> = results
                .into_iter()
                .map(|r| ImportRow {
                    config_key: r.config_key,
                    outcome: r
                        .outcome
                        .map(|saved| saved.credential.name.credential.to_string())
                        .map_err(|e| e.message()),
                })
                .collect();
            Ok(Reply::Page(StatusCode::OK, views::import(&chrome, &workspace, &prefix, &Errors::default(), &rows)))
        }
        Err(error) => {
            audit_failure(console, call, "ImportDockerConfig", &resource, &error).await;
            let errors = form_errors(&error, &[("config_json", "config_json"), ("name_prefix", "name_prefix")]);
            Ok(Reply::Page(StatusCode::UNPROCESSABLE_ENTITY, views::import(&chrome, &workspace, &prefix, &errors, &[])))
        }
    }
}

// --- access tokens ---

/// The roles this person may mint in `workspace`.
fn mintable(call: &Call<'_>, workspace: &WorkspaceId) -> Vec<&'static str> {
    [Role::Launcher, Role::Viewer, Role::Admin]
        .into_iter()
        .filter(|role| call.allowed(Permission::ManageTokens(workspace, *role)).is_ok())
        .map(Role::wire_name)
        .collect()
}

async fn tokens(console: &Console, call: &Call<'_>, workspace: WorkspaceId) -> Result<Reply, Error> {
    call.allowed(Permission::ReadTokens(&workspace))?;
    let roles = mintable(call, &workspace);
    let chrome = call.chrome(console, Some(&workspace));
    let mut form = TokenForm { role: "LAUNCHER".into(), ..Default::default() };
    let mut errors = Errors::default();
    let mut minted = None;
    if let Some(submitted) = &call.form {
        form = TokenForm {
            role: submitted.text("role"),
            projects: submitted.text("projects"),
            description: submitted.text("description"),
            expires_days: submitted.text("expires_days"),
        };
        let role = Role::from_wire_name(&form.role);
        let created = async {
            let role = role.ok_or_else(|| Error::invalid("access_token.role", "must be ADMIN, LAUNCHER or VIEWER"))?;
            call.allowed(Permission::ManageTokens(&workspace, role))?;
            let expire_time = match form.expires_days.as_str() {
                "" => None,
                days => match days.parse::<u64>() {
                    Ok(days) if (1..=3650).contains(&days) => {
                        Some(Timestamp::now().plus(Duration::from_secs(days * 86_400)))
                    }
                    _ => {
                        return Err(Error::invalid(
                            "expires_days",
                            "a number of days from 1 to 3650, or empty for never",
                        ));
                    }
                },
            };
            let new = NewToken {
                role: role.code(),
                projects: submitted.list("projects"),
                expire_time,
                description: form.description.clone(),
            };
            console.inner.tokens.create(&call.actor, workspace.clone(), new).await
        }
        .await;
        match created {
            Ok((record, token)) => minted = Some((record.resource_name(), token)),
            Err(error) => {
                let resource = format!("{}/accessTokens", workspace.name());
                audit_failure(console, call, "CreateAccessToken", &resource, &error).await;
                if let Error::PermissionDenied { .. } | Error::NotFound { .. } = error {
                    return Err(error);
                }
                errors = form_errors(
                    &error,
                    &[
                        ("access_token.role", "role"),
                        ("access_token.projects", "projects"),
                        ("access_token.description", "description"),
                        ("expires_days", "expires_days"),
                    ],
                );
            }
        }
    }
    let page = console.inner.tokens.list(workspace.clone(), PAGE_SIZE, "").await?;
    let shown = minted.as_ref().map(|(name, token)| (name.as_str(), token.expose()));
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok(Reply::Page(status, views::tokens(&chrome, &workspace, &page.items, &roles, &form, &errors, shown)))
}

async fn revoke(
    console: &Console,
    call: &Call<'_>,
    workspace: WorkspaceId,
    token: crate::domain::AccessTokenId,
) -> Result<Reply, Error> {
    call.allowed(Permission::ReadTokens(&workspace))?;
    let existing = console.inner.tokens.get(workspace.clone(), token.clone()).await?;
    call.allowed(Permission::ManageTokens(&workspace, existing.role))?;
    match console.inner.tokens.revoke(&call.actor, workspace.clone(), token).await {
        Ok(_) => Ok(Reply::Redirect(to::tokens(&workspace))),
        Err(error) => {
            audit_failure(console, call, "RevokeAccessToken", &existing.resource_name(), &error).await;
            Err(error)
        }
    }
}

// --- audit trail ---

async fn audit(console: &Console, call: &Call<'_>, workspace: WorkspaceId) -> Result<Reply, Error> {
    call.allowed(Permission::ReadAudit(Some(&workspace)))?;
    let chrome = call.chrome(console, Some(&workspace));
    let params: Vec<(String, String)> =
        form_urlencoded::parse(call.query.as_bytes()).map(|(k, v)| (k.into_owned(), v.trim().to_owned())).collect();
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let query = AuditQuery {
        action: get("action"),
        resource: get("resource"),
        principal: get("principal"),
        since: get("since"),
    };
    let filter = audit_filter(&query);
    let page_token = get("page");
    let page = match console.inner.auditor.list(Some(workspace.clone()), PAGE_SIZE, &page_token, &filter).await {
        Ok(page) => page,
        Err(error @ Error::InvalidArgument(_)) => {
            let errors = form_errors(&error, &[("filter", "")]);
            return Ok(Reply::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::audit(&chrome, &workspace, &query, &errors, &[], None, None),
            ));
        }
        Err(other) => return Err(other),
    };
    let next = (!page.next_page_token.is_empty()).then(|| {
        let mut link = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("action", &query.action),
            ("resource", &query.resource),
            ("principal", &query.principal),
            ("since", &query.since),
        ] {
            if !value.is_empty() {
                link.append_pair(name, value);
            }
        }
        link.append_pair("page", &page.next_page_token);
        format!("{}?{}", to::audit(&workspace), link.finish())
    });
    // The whole chain: ROOT's alone, and rationed (see chain_check).
    let (status, check) = if get("check") == "1" {
        match console.chain_checks.start(call.session) {
            Ok(_running) => {
                let verification = console.inner.auditor.verify().await?;
                let check = match verification.broken {
                    None => ChainCheck::Intact { checked: verification.checked },
                    Some(broken) => ChainCheck::Broken(broken.to_string()),
                };
                (StatusCode::OK, Some(check))
            }
            Err(refusal) => (refusal.status(), Some(ChainCheck::Refused(refusal.to_string()))),
        }
    } else {
        (StatusCode::OK, None)
    };
    Ok(Reply::Page(
        status,
        views::audit(&chrome, &workspace, &query, &Errors::default(), &page.items, next, check.as_ref()),
    ))
}

/// The audit trail's filter for what the form holds: a term per field
/// filled in, its value quoted (`filter::quoted`), so that any text, a
/// trailing `\`, a `"` or an ` AND ` included, is matched literally as
/// that one field's value.
fn audit_filter(query: &AuditQuery) -> String {
    let mut terms = Vec::new();
    for (field, value, op) in [
        ("action", &query.action, "="),
        ("resource", &query.resource, "="),
        ("principal", &query.principal, "="),
        ("event_time", &query.since, ">="),
    ] {
        if !value.is_empty() {
            terms.push(format!("{field} {op} {}", crate::filter::quoted(value)));
        }
    }
    terms.join(" AND ")
}

/// Markup for a signed-out visitor's sign-in page, whose form carries
/// `csrf`.
pub fn login_page(errors: &Errors, csrf: &str) -> Markup {
    views::login(errors, csrf)
}

#[cfg(test)]
mod audit_filter_tests {
    use super::*;
    use crate::filter::{Op, terms};

    #[test]
    fn each_audit_field_is_one_term_matched_literally_whatever_it_holds() {
        let query = AuditQuery {
            action: "Create\\".into(),
            resource: "workspaces/acme/credentials/x\" AND principal = \"rootTokens/r".into(),
            principal: "a AND b".into(),
            since: "2026-01-01T00:00:00Z".into(),
        };
        let filter = audit_filter(&query);
        let parsed = terms(&filter).unwrap_or_else(|e| panic!("{filter}: {e:?}"));
        let read: Vec<(&str, Op, &str)> = parsed.iter().map(|t| (t.field.as_str(), t.op, t.value.as_str())).collect();
        assert_eq!(
            read,
            [
                ("action", Op::Equals, query.action.as_str()),
                ("resource", Op::Equals, query.resource.as_str()),
                ("principal", Op::Equals, query.principal.as_str()),
                ("event_time", Op::AtLeast, query.since.as_str()),
            ]
        );
        let only = AuditQuery { resource: "x\\".into(), ..AuditQuery::default() };
        assert_eq!(audit_filter(&only), r#"resource = "x\\""#);
        assert_eq!(audit_filter(&AuditQuery::default()), "");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_expiry_date_is_the_start_of_that_day_utc_and_anything_else_is_a_field_error() {
        use super::expiry_of;
        assert_eq!(expiry_of("").unwrap(), None);
        assert_eq!(expiry_of("2027-01-31").unwrap().unwrap().to_rfc3339(), "2027-01-31T00:00:00Z");
        for bad in ["31/01/2027", "2027-1-31", "2027-13-01", "tomorrow", "2027-01-31T00:00:00Z"] {
            match expiry_of(bad) {
                Err(crate::error::Error::InvalidArgument(v)) => {
                    assert_eq!(v[0].field, "credential.expire_time", "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
