//! The console's workload-identity handlers: identity providers (ROOT), a
//! workspace's identity bindings (its ADMIN, or ROOT) and "Test a token".
//!
//! Built as the credential and token pages are ([`super::pages`]): each
//! handler checks the permission with `access::policy`, turns the form into
//! the same input the gRPC handlers give `identities::Identities`, shows a
//! domain error's field violations next to their fields in the API's words,
//! and records a failed change in the audit trail as the API does. "Test a
//! token" takes the JWT only from a POSTed form (never a URL), hands it to
//! `Identities::explain`, and answers with the explanation: the token is
//! never written back into the page, logged, or stored.

use std::time::Duration;

use http::StatusCode;

use super::Console;
use super::Reply;
use super::form::Form;
use super::identity_views::{self as views, BindingForm, ProviderForm};
use super::pages::{Call, PAGE_SIZE, audit_failure, form_errors};
use super::route::to;
use super::views::Errors;
use crate::access::policy::Permission;
use crate::domain::ids::shorten;
use crate::domain::{IdentityBindingName, IdentityProvider, IdentityProviderId, Role, WorkspaceId};
use crate::error::{Error, Violations};
use crate::identities::{BindingInput, ProviderInput};

/// API field paths of a provider → the form fields that show them.
const PROVIDER_FIELDS: [(&str, &str); 10] = [
    ("identity_provider_id", "identity_provider_id"),
    ("identity_provider.issuer", "issuer"),
    ("identity_provider.jwks_uri", "jwks_uri"),
    ("identity_provider.jwks", "jwks"),
    ("identity_provider.ca_certificates", "ca_certificates"),
    ("identity_provider.audiences", "audiences"),
    ("identity_provider.allowed_algorithms", "allowed_algorithms"),
    ("identity_provider.max_token_lifetime", "max_token_lifetime"),
    ("identity_provider.clock_skew", "clock_skew"),
    ("identity_provider.description", "description"),
];

/// API field paths of a binding → the form fields that show them.
const BINDING_FIELDS: [(&str, &str); 6] = [
    ("identity_binding_id", "identity_binding_id"),
    ("identity_binding.identity_provider", "identity_provider"),
    ("identity_binding.bound_claims", "bound_claims"),
    ("identity_binding.role", "role"),
    ("identity_binding.allowed_projects", "allowed_projects"),
    ("identity_binding.description", "description"),
];

/// Checks `permission`; a refused change (a POST) is audited as the API
/// audits it.
async fn permitted(
    console: &Console,
    call: &Call<'_>,
    permission: Permission<'_>,
    action: &str,
    resource: &str,
) -> Result<(), Error> {
    if let Err(error) = call.allowed(permission) {
        if call.form.is_some() {
            audit_failure(console, call, action, resource, &error).await;
        }
        return Err(error);
    }
    Ok(())
}

fn unprocessable_unless(errors: &Errors) -> StatusCode {
    if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY }
}

// --- identity providers (ROOT) ---

/// The provider form as submitted.
fn submitted_provider(form: &Form) -> ProviderForm {
    ProviderForm {
        id: form.text("identity_provider_id"),
        issuer: form.text("issuer"),
        key_source: form.text("key_source"),
        jwks_uri: form.text("jwks_uri"),
        jwks: form.text("jwks"),
        ca_certificates: form.text("ca_certificates"),
        audiences: form.text("audiences"),
        algorithms: form.all("allowed_algorithms"),
        max_token_lifetime: form.text("max_token_lifetime"),
        clock_skew: form.text("clock_skew"),
        description: form.text("description"),
    }
}

/// A whole number of seconds, or `None` for the default when empty.
fn seconds(violations: &mut Violations, field: &str, text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    match text.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => {
            violations.add(field, format!("`{}` is not a whole number of seconds", shorten(text)));
            None
        }
    }
}

/// The service's input for a submitted provider form: the chosen key
/// source decides which of the URL and the key set is sent. The console's
/// own checks (numbers, the chosen source filled in) come with the API's
/// field names, so they show next to the same fields.
fn provider_input(form: &ProviderForm, new_id: Option<&str>) -> Result<ProviderInput, Error> {
    let mut violations = Violations::default();
    if let Some(id) = new_id {
        violations.check("identity_provider_id", IdentityProviderId::parse(id));
    }
    let (jwks_uri, jwks) = match form.key_source.as_str() {
        "jwks_uri" => {
            if form.jwks_uri.is_empty() {
                violations.add("identity_provider.jwks_uri", "fill in the JWKS URL, or choose another key source");
            }
            (form.jwks_uri.clone(), String::new())
        }
        "jwks" => {
            if form.jwks.is_empty() {
                violations.add("identity_provider.jwks", "paste the key set (JSON), or choose another key source");
            }
            (String::new(), form.jwks.clone())
        }
        _ => (String::new(), String::new()),
    };
    let max_token_lifetime = seconds(&mut violations, "identity_provider.max_token_lifetime", &form.max_token_lifetime);
    let clock_skew = seconds(&mut violations, "identity_provider.clock_skew", &form.clock_skew);
    violations.finish()?;
    Ok(ProviderInput {
        issuer: form.issuer.clone(),
        jwks_uri,
        jwks,
        ca_certificates: form.ca_certificates.clone(),
        audiences: form.audiences.lines().map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect(),
        allowed_algorithms: form.algorithms.clone(),
        max_token_lifetime,
        clock_skew,
        description: form.description.clone(),
    })
}

fn provider_errors(error: &Error) -> Errors {
    match error {
        Error::AlreadyExists { .. } => Errors { items: vec![("identity_provider_id".into(), error.message())] },
        other => form_errors(other, &PROVIDER_FIELDS),
    }
}

/// The names of the bindings (of every workspace) that name `id`.
async fn bindings_naming(console: &Console, id: &IdentityProviderId) -> Result<Vec<IdentityBindingName>, Error> {
    Ok(console
        .inner
        .identities
        .all_bindings()
        .await?
        .into_iter()
        .filter(|b| &b.provider == id)
        .map(|b| b.name)
        .collect())
}

/// The list, and adding a provider.
pub(super) async fn providers(console: &Console, call: &Call<'_>) -> Result<Reply, Error> {
    let submitted = call.form.as_ref().map(submitted_provider);
    let resource = format!("identityProviders/{}", submitted.as_ref().map(|f| f.id.as_str()).unwrap_or_default());
    permitted(console, call, Permission::ManageIdentityProviders, "CreateIdentityProvider", &resource).await?;
    let identities = &console.inner.identities;
    let mut form = ProviderForm::fresh();
    let mut errors = Errors::default();
    if let Some(submitted) = submitted {
        let created = match provider_input(&submitted, Some(&submitted.id)) {
            Ok(input) => identities.create_provider(&call.actor, &submitted.id, input).await,
            Err(error) => Err(error),
        };
        match created {
            Ok(provider) => return Ok(Reply::Redirect(to::identity_provider(&provider.id))),
            Err(error) => {
                audit_failure(console, call, "CreateIdentityProvider", &resource, &error).await;
                errors = provider_errors(&error);
                form = submitted;
            }
        }
    }
    let list = identities.list_providers(PAGE_SIZE, "").await?;
    let chrome = call.chrome(console, None);
    Ok(Reply::Page(unprocessable_unless(&errors), views::identity_providers(&chrome, &list.items, &form, &errors)))
}

/// A provider's page; a POST saves the edit form.
pub(super) async fn provider(console: &Console, call: &Call<'_>, id: IdentityProviderId) -> Result<Reply, Error> {
    permitted(console, call, Permission::ManageIdentityProviders, "UpdateIdentityProvider", &id.name()).await?;
    let identities = &console.inner.identities;
    let current = identities.get_provider(&id).await?;
    let chrome = call.chrome(console, None);
    let Some(form) = &call.form else {
        let bindings = bindings_naming(console, &id).await?;
        let shown = ProviderForm::of(&current);
        return Ok(Reply::Page(
            StatusCode::OK,
            views::identity_provider(&chrome, &current, &bindings, &shown, &Errors::default(), false),
        ));
    };
    let shown = ProviderForm { id: id.to_string(), ..submitted_provider(form) };
    let updated = match provider_input(&shown, None) {
        Ok(input) => identities.update_provider(&call.actor, id.clone(), input, None).await,
        Err(error) => Err(error),
    };
    let bindings = bindings_naming(console, &id).await?;
    match updated {
        Ok(saved) => Ok(Reply::Page(
            StatusCode::OK,
            views::identity_provider(&chrome, &saved, &bindings, &ProviderForm::of(&saved), &Errors::default(), true),
        )),
        Err(error) => {
            audit_failure(console, call, "UpdateIdentityProvider", &id.name(), &error).await;
            if let Error::NotFound { .. } = error {
                return Err(error);
            }
            let errors = provider_errors(&error);
            Ok(Reply::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::identity_provider(&chrome, &current, &bindings, &shown, &errors, false),
            ))
        }
    }
}

/// The delete confirmation; a POST deletes (with `force`, the bindings
/// that name it too).
pub(super) async fn delete_provider(
    console: &Console,
    call: &Call<'_>,
    id: IdentityProviderId,
) -> Result<Reply, Error> {
    permitted(console, call, Permission::ManageIdentityProviders, "DeleteIdentityProvider", &id.name()).await?;
    let identities = &console.inner.identities;
    let chrome = call.chrome(console, None);
    let Some(form) = &call.form else {
        identities.get_provider(&id).await?;
        let bindings = bindings_naming(console, &id).await?;
        return Ok(Reply::Page(
            StatusCode::OK,
            views::confirm_delete_provider(&chrome, &id, &bindings, &Errors::default()),
        ));
    };
    match identities.delete_provider(&call.actor, id.clone(), form.checked("force")).await {
        Ok(()) => Ok(Reply::Redirect(to::identity_providers())),
        Err(error) => {
            audit_failure(console, call, "DeleteIdentityProvider", &id.name(), &error).await;
            let Error::FailedPrecondition { .. } = error else { return Err(error) };
            // Still named by bindings: say so on the confirmation, with them.
            let bindings = bindings_naming(console, &id).await?;
            let errors = Errors { items: vec![(String::new(), error.message())] };
            Ok(Reply::Page(StatusCode::CONFLICT, views::confirm_delete_provider(&chrome, &id, &bindings, &errors)))
        }
    }
}

// --- identity bindings (ADMIN) ---

/// The binding form as submitted.
fn submitted_binding(form: &Form) -> BindingForm {
    BindingForm {
        id: form.text("identity_binding_id"),
        identity_provider: form.text("identity_provider"),
        bound_claims: form.text("bound_claims"),
        role: form.text("role"),
        allowed_projects: form.text("allowed_projects"),
        description: form.text("description"),
    }
}

/// `claim = pattern`, one per line (split at the first `=`: claims hold
/// none, patterns may).
fn bound_claims(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut claims = Vec::new();
    for (at, line) in text.lines().map(str::trim).enumerate() {
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((claim, pattern)) if !claim.trim().is_empty() && !pattern.trim().is_empty() => {
                claims.push((claim.trim().to_owned(), pattern.trim().to_owned()));
            }
            _ => return Err(format!("line {}: `{}` is not `claim = pattern`", at + 1, shorten(line))),
        }
    }
    Ok(claims)
}

/// The service's input for a submitted binding form.
fn binding_input(form: &BindingForm, new_id: Option<&str>) -> Result<BindingInput, Error> {
    let mut violations = Violations::default();
    if let Some(id) = new_id {
        violations.check("identity_binding_id", crate::domain::IdentityBindingId::parse(id));
    }
    let claims = violations.check("identity_binding.bound_claims", bound_claims(&form.bound_claims));
    violations.finish()?;
    Ok(BindingInput {
        identity_provider: form.identity_provider.clone(),
        bound_claims: claims.unwrap_or_default(),
        role: Role::from_wire_name(&form.role).map_or(0, Role::code),
        allowed_projects: form
            .allowed_projects
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        description: form.description.clone(),
    })
}

fn binding_errors(error: &Error) -> Errors {
    match error {
        Error::AlreadyExists { .. } => Errors { items: vec![("identity_binding_id".into(), error.message())] },
        Error::NotFound { resource } if resource.starts_with(crate::domain::identity::IDENTITY_PROVIDERS) => {
            Errors { items: vec![("identity_provider".into(), error.message())] }
        }
        other => form_errors(other, &BINDING_FIELDS),
    }
}

/// The providers a binding may name (every one: ADMIN may read them).
async fn providers_to_bind(console: &Console, call: &Call<'_>) -> Result<Vec<IdentityProvider>, Error> {
    if call.allowed(Permission::ReadIdentityProviders).is_err() {
        return Ok(Vec::new());
    }
    console.inner.identities.all_providers().await
}

/// A workspace's bindings, and adding one.
pub(super) async fn bindings(console: &Console, call: &Call<'_>, workspace: WorkspaceId) -> Result<Reply, Error> {
    let submitted = call.form.as_ref().map(submitted_binding);
    let resource = format!(
        "{}/identityBindings/{}",
        workspace.name(),
        submitted.as_ref().map(|f| f.id.as_str()).unwrap_or_default()
    );
    permitted(console, call, Permission::ManageIdentityBindings(&workspace), "CreateIdentityBinding", &resource)
        .await?;
    let identities = &console.inner.identities;
    console.inner.workspaces.get(workspace.clone()).await?;
    let mut form = BindingForm { role: "LAUNCHER".into(), ..BindingForm::default() };
    let mut errors = Errors::default();
    if let Some(submitted) = submitted {
        let created = match binding_input(&submitted, Some(&submitted.id)) {
            Ok(input) => identities.create_binding(&call.actor, workspace.clone(), &submitted.id, input).await,
            Err(error) => Err(error),
        };
        match created {
            Ok(binding) => return Ok(Reply::Redirect(to::identity_binding(&binding.name))),
            Err(error) => {
                audit_failure(console, call, "CreateIdentityBinding", &resource, &error).await;
                if let Error::PermissionDenied { .. } = error {
                    return Err(error);
                }
                if let Error::NotFound { resource } = &error
                    && !resource.starts_with(crate::domain::identity::IDENTITY_PROVIDERS)
                {
                    return Err(error);
                }
                errors = binding_errors(&error);
                form = submitted;
            }
        }
    }
    let list = identities.bindings_of(&workspace).await?;
    let providers = providers_to_bind(console, call).await?;
    let chrome = call.chrome(console, Some(&workspace));
    Ok(Reply::Page(
        unprocessable_unless(&errors),
        views::identity_bindings(&chrome, &workspace, &list, &providers, &form, &errors),
    ))
}

/// A binding's page; a POST saves the edit form.
pub(super) async fn binding(console: &Console, call: &Call<'_>, name: IdentityBindingName) -> Result<Reply, Error> {
    let resource = name.to_string();
    permitted(console, call, Permission::ManageIdentityBindings(&name.workspace), "UpdateIdentityBinding", &resource)
        .await?;
    let identities = &console.inner.identities;
    let current = identities.get_binding(&name).await?;
    let provider = if call.allowed(Permission::ReadIdentityProviders).is_ok() {
        identities.get_provider(&current.provider).await.ok()
    } else {
        None
    };
    let chrome = call.chrome(console, Some(&name.workspace));
    let Some(form) = &call.form else {
        let shown = BindingForm::of(&current);
        return Ok(Reply::Page(
            StatusCode::OK,
            views::identity_binding(&chrome, &current, provider.as_ref(), &shown, &Errors::default(), false),
        ));
    };
    let shown = BindingForm {
        id: name.binding.to_string(),
        identity_provider: current.provider.name(),
        ..submitted_binding(form)
    };
    // The provider cannot change: the service is told none.
    let updated = match binding_input(&BindingForm { identity_provider: String::new(), ..shown.clone() }, None) {
        Ok(input) => identities.update_binding(&call.actor, name.clone(), input, None).await,
        Err(error) => Err(error),
    };
    match updated {
        Ok(saved) => Ok(Reply::Page(
            StatusCode::OK,
            views::identity_binding(
                &chrome,
                &saved,
                provider.as_ref(),
                &BindingForm::of(&saved),
                &Errors::default(),
                true,
            ),
        )),
        Err(error) => {
            audit_failure(console, call, "UpdateIdentityBinding", &resource, &error).await;
            if let Error::NotFound { .. } = error {
                return Err(error);
            }
            let errors = binding_errors(&error);
            Ok(Reply::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::identity_binding(&chrome, &current, provider.as_ref(), &shown, &errors, false),
            ))
        }
    }
}

/// The delete confirmation; a POST deletes.
pub(super) async fn delete_binding(
    console: &Console,
    call: &Call<'_>,
    name: IdentityBindingName,
) -> Result<Reply, Error> {
    let resource = name.to_string();
    permitted(console, call, Permission::ManageIdentityBindings(&name.workspace), "DeleteIdentityBinding", &resource)
        .await?;
    let identities = &console.inner.identities;
    if call.form.is_none() {
        identities.get_binding(&name).await?;
        let chrome = call.chrome(console, Some(&name.workspace));
        return Ok(Reply::Page(StatusCode::OK, views::confirm_delete_binding(&chrome, &name)));
    }
    match identities.delete_binding(&call.actor, name.clone()).await {
        Ok(()) => Ok(Reply::Redirect(to::identity_bindings(&name.workspace))),
        Err(error) => {
            audit_failure(console, call, "DeleteIdentityBinding", &resource, &error).await;
            Err(error)
        }
    }
}

// --- Test a token ---

/// The "Test a token" form; a POST explains the token it carries, binding
/// by binding (TestIdentityToken: the workspace's ADMIN, or ROOT).
pub(super) async fn test_token(console: &Console, call: &Call<'_>, workspace: WorkspaceId) -> Result<Reply, Error> {
    call.allowed(Permission::ManageIdentityBindings(&workspace))?;
    console.inner.workspaces.get(workspace.clone()).await?;
    let chrome = call.chrome(console, Some(&workspace));
    let Some(form) = &call.form else {
        return Ok(Reply::Page(
            StatusCode::OK,
            views::test_identity_token(&chrome, &workspace, &Errors::default(), None),
        ));
    };
    let token = form.secret("token").unwrap_or_default();
    match console.inner.identities.explain(&workspace, &token).await {
        Ok(explanation) => Ok(Reply::Page(
            StatusCode::OK,
            views::test_identity_token(&chrome, &workspace, &Errors::default(), Some(&explanation)),
        )),
        Err(error @ Error::InvalidArgument(_)) => {
            let errors = form_errors(&error, &[("token", "token")]);
            Ok(Reply::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::test_identity_token(&chrome, &workspace, &errors, None),
            ))
        }
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_claims_are_read_one_per_line_split_at_the_first_equals_sign() {
        let text = "sub = system:serviceaccount:ci:*\r\n\r\n /kubernetes.io/namespace=ci \nref = refs/heads/a=b\n";
        assert_eq!(
            bound_claims(text).unwrap(),
            [
                ("sub".to_owned(), "system:serviceaccount:ci:*".to_owned()),
                ("/kubernetes.io/namespace".to_owned(), "ci".to_owned()),
                ("ref".to_owned(), "refs/heads/a=b".to_owned()),
            ]
        );
        assert_eq!(bound_claims("").unwrap(), []);
        let refused = bound_claims("sub = x\nnamespace ci").unwrap_err();
        assert!(refused.starts_with("line 2:") && refused.contains("claim = pattern"), "{refused}");
        assert!(bound_claims("= x").is_err() && bound_claims("sub =").is_err());
    }

    #[test]
    fn a_chosen_key_source_must_be_filled_in_and_numbers_are_whole_seconds() {
        let form = ProviderForm {
            key_source: "jwks_uri".into(),
            jwks: "{\"keys\":[]}".into(),
            max_token_lifetime: "1h".into(),
            clock_skew: String::new(),
            ..ProviderForm::default()
        };
        let Err(Error::InvalidArgument(violations)) = provider_input(&form, Some("bad id")) else { panic!("refused") };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["identity_provider_id", "identity_provider.jwks_uri", "identity_provider.max_token_lifetime"]
        );
        let discovery = ProviderForm {
            key_source: "discovery".into(),
            jwks_uri: "https://ignored.example/jwks".into(),
            audiences: "a, b\r\n\r\nc".into(),
            ..ProviderForm::default()
        };
        let input = provider_input(&discovery, None).unwrap();
        assert_eq!((input.jwks_uri.as_str(), input.jwks.as_str()), ("", ""), "the chosen source decides");
        assert_eq!(input.audiences, ["a, b", "c"]);
        assert_eq!((input.max_token_lifetime, input.clock_skew), (None, None), "empty: the defaults");
    }
}
