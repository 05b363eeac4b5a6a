//! The rules a credential must satisfy, per field and per provider.
//!
//! [`CredentialInput`] is what a request says (plain strings); [`validate`]
//! turns it into a [`CredentialSpec`] of typed values or reports every
//! violation at once, naming each field (`credential.registry_server`).

use pullpass::registry::{DOCKER_HUB_HOST, RegistryServer};

use crate::domain::credential::{ProviderSettings, RealmOrigin};
use crate::domain::{ProjectName, Provider, Timestamp};
use crate::error::{Error, Violations};
use crate::providers::ecr::ecr_region;
use crate::providers::google_key::GoogleServiceAccountKey;
use crate::secret::SecretBytes;

/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Longest user name, in bytes.
pub const MAX_USERNAME_LEN: usize = 256;
/// Largest secret, in bytes (service-account keys are about 2.3 KiB).
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// Most entries in `allowed_projects`.
pub const MAX_PROJECTS: usize = 200;
/// Most entries in `token_realm_allowlist`.
pub const MAX_REALMS: usize = 20;
/// `expire_time` bounds (2000-01-01, 9999-12-31T23:59:59Z), in microseconds:
/// a typo such as year 20260 or 1970 is refused rather than stored.
const EARLIEST_EXPIRY: i64 = 946_684_800_000_000;
const LATEST_EXPIRY: i64 = 253_402_300_799_000_000;
/// Largest CA bundle, in bytes.
pub const MAX_CA_BUNDLE_LEN: usize = 256 * 1024;

/// A credential as a request describes it.
#[derive(Debug, Default, Clone)]
pub struct CredentialInput {
    /// `pullpass.v1.Provider` number (0 = unset).
    pub provider: i32,
    /// As typed by the user.
    pub registry_server: String,
    /// As typed.
    pub username: String,
    /// Empty when not given.
    pub secret: Option<SecretBytes>,
    /// As typed.
    pub allowed_projects: Vec<String>,
    /// As given.
    pub allow_passthrough: bool,
    /// As typed.
    pub description: String,
    /// As typed.
    pub token_realm_allowlist: Vec<String>,
    /// As given.
    pub ca_bundle_pem: String,
    /// The provider settings (the proto's oneof), as given.
    pub settings: ProviderSettings,
    /// When the upstream secret expires, if given.
    pub expire_time: Option<Timestamp>,
    /// An update that keeps the secret: does the credential have one?
    pub secret_stored: bool,
}

/// A credential that passed every rule.
#[derive(Debug)]
pub struct CredentialSpec {
    /// The provider.
    pub provider: Provider,
    /// The normalized registry.
    pub registry: RegistryServer,
    /// The user name (derived for GOOGLE).
    pub username: String,
    /// The secret, when the input had one.
    pub secret: Option<SecretBytes>,
    /// Sorted, without duplicates.
    pub allowed_projects: Vec<ProjectName>,
    /// As given.
    pub allow_passthrough: bool,
    /// As given.
    pub description: String,
    /// Parsed origins, without duplicates.
    pub token_realm_allowlist: Vec<RealmOrigin>,
    /// As given.
    pub ca_bundle_pem: String,
    /// Checked against the provider.
    pub settings: ProviderSettings,
    /// When the upstream secret expires, if known.
    pub expire_time: Option<Timestamp>,
    /// Rewrites made to the input, for the response.
    pub normalizations: Vec<String>,
}

/// Checks `input`; `field` prefixes violation paths (`credential`). When the
/// secret is absent (an update that keeps it), secret rules are skipped and
/// `username` must already be right.
pub fn validate(input: CredentialInput, field: &str) -> Result<CredentialSpec, Error> {
    let path = |name: &str| format!("{field}.{name}");
    let mut violations = Violations::default();

    let provider = Provider::from_code(input.provider);
    if provider.is_none() {
        violations
            .add(path("provider"), "is required: one of DOCKER_HUB, GHCR, GITLAB, GOOGLE, ECR, QUAY, GENERIC, ACR");
    }

    let mut normalizations = Vec::new();
    let registry = if input.registry_server.is_empty() {
        match provider.and_then(default_registry) {
            Some(default) => {
                normalizations.push(format!("registry_server: defaulted to `{default}`"));
                RegistryServer::parse(default).ok().map(|parsed| parsed.server)
            }
            None => {
                violations.add(path("registry_server"), "is required: host[:port][/namespace]");
                None
            }
        }
    } else {
        match RegistryServer::parse(&input.registry_server) {
            Ok(parsed) => {
                normalizations.extend(parsed.normalizations.into_iter().map(|n| format!("registry_server: {n}")));
                Some(parsed.server)
            }
            Err(e) => {
                // The input is not echoed: a pasted `user:password@host` would leak.
                violations.add(path("registry_server"), e.to_string());
                None
            }
        }
    };
    if let (Some(p), Some(r)) = (provider, &registry)
        && let Err(problem) = check_registry_for_provider(p, r)
    {
        violations.add(path("registry_server"), problem);
    }

    if let Some(provider) = provider {
        check_settings(provider, &input.settings, &mut violations, field);
    }
    // A keyless credential (its settings let pullpass's issuer or own cloud
    // identity stand in for a secret) is created with no secret at all.
    let mut secret = input.secret;
    if secret.as_ref().is_some_and(|s| s.is_empty()) && !input.secret_stored && input.settings.keyless_allowed() {
        secret = None;
    }
    if let Some(secret) = &secret {
        if secret.is_empty() {
            violations.add(path("secret"), "is required (a secret cannot be emptied)");
        } else if secret.len() > MAX_SECRET_LEN {
            violations.add(path("secret"), format!("is longer than {MAX_SECRET_LEN} bytes"));
        }
    } else if !input.secret_stored && !input.settings.keyless_allowed() {
        violations.add(path("secret"), "is required: this credential has no settings that work without a secret");
    }
    let has_secret = secret.is_some() || input.secret_stored;
    if let ProviderSettings::AwsRole(role) = &input.settings
        && role.web_identity
        && has_secret
    {
        violations.add(
            path("aws_role.web_identity"),
            "presents pullpass's own issuer token, so the credential stores no secret: leave the secret empty (or create a new credential without one)",
        );
    }

    let mut username = input.username;
    match (provider, &input.settings) {
        (Some(Provider::Ecr), ProviderSettings::AwsRole(role)) if !has_secret || role.web_identity => {
            if !username.is_empty() {
                violations.add(path("username"), "must be empty for an ECR role without an access key");
            }
        }
        (Some(Provider::Google), ProviderSettings::GoogleFederation(federation)) => {
            if !username.is_empty() && username != federation.service_account {
                violations
                    .add(path("username"), "for GOOGLE federation must be empty (it is the service account, if any)");
            }
            username = federation.service_account.clone();
        }
        (Some(Provider::Quay), ProviderSettings::QuayRobot(robot)) => {
            if !username.is_empty() && username != robot.robot {
                violations.add(path("username"), "for QUAY robot federation must be empty or the robot's name");
            }
            username = robot.robot.clone();
        }
        (Some(Provider::Acr), ProviderSettings::Azure(azure)) => {
            if !username.is_empty() && username != azure.client_id {
                violations.add(path("username"), "for ACR must be empty or the client id (it is derived from azure)");
            }
            username = azure.client_id.clone();
        }
        (Some(Provider::Acr), _) => {}
        (Some(Provider::Google), _) => match &secret {
            Some(secret) if !secret.is_empty() => match GoogleServiceAccountKey::parse(secret) {
                Ok(key) => {
                    if username.is_empty() || username == "_json_key" {
                        username = key.client_email;
                    } else if username != key.client_email {
                        violations.add(
                            path("username"),
                            "for GOOGLE must be empty or the key's `client_email` (it is derived from the key)",
                        );
                    }
                }
                Err(problem) => violations.add(path("secret"), problem),
            },
            _ => {}
        },
        (Some(Provider::Ecr), _) => {
            if let Err(problem) = check_aws_access_key_id(&username) {
                violations.add(path("username"), problem);
            }
        }
        _ => {
            if username.is_empty() {
                violations.add(path("username"), "is required");
            }
        }
    }
    if username.len() > MAX_USERNAME_LEN {
        violations.add(path("username"), format!("is longer than {MAX_USERNAME_LEN} bytes"));
    } else if username.contains(':') || username.chars().any(char::is_control) {
        violations.add(path("username"), "must not contain `:` or control characters (HTTP Basic forbids them)");
    }

    let mut allowed_projects = Vec::new();
    if input.allowed_projects.len() > MAX_PROJECTS {
        violations.add(path("allowed_projects"), format!("has more than {MAX_PROJECTS} entries"));
    }
    for project in &input.allowed_projects {
        if let Some(p) = violations.check(&path("allowed_projects"), ProjectName::parse(project)) {
            allowed_projects.push(p);
        }
    }
    allowed_projects.sort();
    allowed_projects.dedup();

    let mut token_realm_allowlist: Vec<RealmOrigin> = Vec::new();
    if input.token_realm_allowlist.len() > MAX_REALMS {
        violations.add(path("token_realm_allowlist"), format!("has more than {MAX_REALMS} entries"));
    }
    for (index, realm) in input.token_realm_allowlist.iter().enumerate() {
        let parsed = RealmOrigin::parse(realm).map_err(|problem| format!("entry {}: {problem}", index + 1));
        if let Some(origin) = violations.check(&path("token_realm_allowlist"), parsed)
            && !token_realm_allowlist.contains(&origin)
        {
            token_realm_allowlist.push(origin);
        }
    }

    if input.description.chars().count() > MAX_DESCRIPTION_CHARS {
        violations.add(path("description"), format!("is longer than {MAX_DESCRIPTION_CHARS} characters"));
    }
    if let Err(problem) = check_ca_bundle(&input.ca_bundle_pem) {
        violations.add(path("ca_bundle_pem"), problem);
    }
    if let Some(expiry) = input.expire_time
        && !(EARLIEST_EXPIRY..=LATEST_EXPIRY).contains(&expiry.as_micros())
    {
        violations.add(path("expire_time"), "must be between 2000-01-01 and 9999-12-31 (UTC)");
    }

    violations.finish()?;
    match (provider, registry) {
        (Some(provider), Some(registry)) => Ok(CredentialSpec {
            provider,
            registry,
            username,
            secret,
            allowed_projects,
            allow_passthrough: input.allow_passthrough,
            description: input.description,
            token_realm_allowlist,
            ca_bundle_pem: input.ca_bundle_pem,
            settings: input.settings,
            expire_time: input.expire_time,
            normalizations,
        }),
        _ => Err(Error::invalid(path("registry_server"), "is required")),
    }
}

/// The registry a provider serves when none is given.
pub fn default_registry(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::DockerHub => Some(DOCKER_HUB_HOST),
        Provider::Ghcr => Some("ghcr.io"),
        Provider::Quay => Some("quay.io"),
        Provider::Gitlab => Some("registry.gitlab.com"),
        Provider::Google | Provider::Ecr | Provider::Generic | Provider::Acr => None,
    }
}

/// Which provider each setting is for, and each setting's own rules.
fn check_settings(provider: Provider, settings: &ProviderSettings, violations: &mut Violations, field: &str) {
    let path = |name: &str| format!("{field}.{name}");
    let fits = match settings {
        ProviderSettings::None => provider != Provider::Acr,
        ProviderSettings::AwsRole(_) => provider == Provider::Ecr,
        ProviderSettings::Azure(_) => provider == Provider::Acr,
        ProviderSettings::GoogleFederation(_) => provider == Provider::Google,
        ProviderSettings::QuayRobot(_) => provider == Provider::Quay,
    };
    if !fits {
        match settings.field() {
            Some(name) => violations.add(path(name), format!("does not apply to {} credentials", provider.wire_name())),
            None => {
                violations.add(path("azure"), "is required for ACR: the tenant and client id of the app registration")
            }
        }
        return;
    }
    match settings {
        ProviderSettings::None => {}
        ProviderSettings::AwsRole(role) => {
            if let Err(problem) = check_role_arn(&role.role_arn) {
                violations.add(path("aws_role.role_arn"), problem);
            }
            let external_ok = role.external_id.is_empty()
                || ((2..=1224).contains(&role.external_id.len())
                    && role.external_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/-_".contains(&b)));
            if !external_ok {
                violations.add(
                    path("aws_role.external_id"),
                    "must be 2-1224 letters, digits and `+=,.@:/-_` (AWS's rule), or empty",
                );
            }
        }
        ProviderSettings::Azure(azure) => {
            // A GUID or a DNS name: labels of letters, digits and `-`, so the
            // tenant can never step out of the authority's path (`..`).
            let tenant_ok = azure.tenant_id.len() <= 253
                && !azure.tenant_id.is_empty()
                && azure.tenant_id.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                });
            if !tenant_ok {
                violations.add(path("azure.tenant_id"), "must be the directory (tenant) id: a GUID or a domain name");
            }
            if !is_guid(&azure.client_id) {
                violations.add(path("azure.client_id"), "must be the application (client) id, a GUID");
            }
        }
        ProviderSettings::GoogleFederation(federation) => {
            let audience = &federation.audience;
            let ok = audience.len() <= 512
                && audience.starts_with("//iam.googleapis.com/projects/")
                && audience.contains("/workloadIdentityPools/")
                && audience.contains("/providers/")
                && audience.bytes().all(|b| b.is_ascii_alphanumeric() || b"/.-_".contains(&b));
            if !ok {
                violations.add(
                    path("google_federation.audience"),
                    "must be the workload identity pool provider: //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER",
                );
            }
            let account = &federation.service_account;
            let account_ok = account.is_empty()
                || (account.len() <= 256
                    && account.split_once('@').is_some_and(|(user, domain)| {
                        !user.is_empty() && domain.contains('.') && !domain.starts_with('.')
                    })
                    && account.bytes().all(|b| b.is_ascii_alphanumeric() || b"@.-_".contains(&b)));
            if !account_ok {
                violations.add(
                    path("google_federation.service_account"),
                    "must be a service account's email (NAME@PROJECT.iam.gserviceaccount.com), or empty",
                );
            }
        }
        ProviderSettings::QuayRobot(robot) => {
            let ok = robot.robot.len() <= 256
                && robot.robot.split_once('+').is_some_and(|(org, name)| {
                    !org.is_empty()
                        && !name.is_empty()
                        && org.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                });
            if !ok {
                violations
                    .add(path("quay_robot.robot"), "must be ORGANIZATION+ROBOT, in lower case (as Quay names it)");
            }
        }
    }
}

/// `arn:<partition>:iam::<12 digits>:role/<path/name>`.
fn check_role_arn(arn: &str) -> Result<(), String> {
    let problem = || "must be an IAM role ARN: arn:aws:iam::123456789012:role/NAME".to_owned();
    let rest = arn.strip_prefix("arn:").ok_or_else(problem)?;
    let (partition, rest) = rest.split_once(':').ok_or_else(problem)?;
    if !partition.starts_with("aws") || !partition.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(problem());
    }
    let rest = rest.strip_prefix("iam::").ok_or_else(problem)?;
    let (account, resource) = rest.split_once(':').ok_or_else(problem)?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(problem());
    }
    let name = resource.strip_prefix("role/").ok_or_else(problem)?;
    let ok = !name.is_empty()
        && name.len() <= 512
        && !name.ends_with('/')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b));
    if ok { Ok(()) } else { Err(problem()) }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hexadecimal.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_registry_for_provider(provider: Provider, registry: &RegistryServer) -> Result<(), String> {
    let host = registry.host().as_str();
    match provider {
        Provider::DockerHub if !registry.host().is_docker_hub() => {
            Err(format!("DOCKER_HUB credentials serve `docker.io`, not `{host}`; use GENERIC for other registries"))
        }
        Provider::Ghcr if host != "ghcr.io" => {
            Err(format!("GHCR credentials serve `ghcr.io`, not `{host}`; use GENERIC for other registries"))
        }
        Provider::Ecr => ecr_region(registry.host().as_str()).map(|_| ()).ok_or_else(|| {
            format!("`{host}` is not an ECR registry; expected `<account>.dkr.ecr.<region>.amazonaws.com`")
        }),
        _ => Ok(()),
    }
}

fn check_aws_access_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is required for ECR: the AWS access key id (AKIA...)".into());
    }
    if id.starts_with("ASIA") {
        return Err(
            "is a temporary (ASIA...) access key id, which needs a session token pullpass does not store; use an IAM user's access key (AKIA...)"
                .into(),
        );
    }
    let ok = (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok { Ok(()) } else { Err("is not an AWS access key id (16-128 uppercase letters and digits, AKIA...)".into()) }
}

fn check_ca_bundle(pem: &str) -> Result<(), String> {
    if pem.is_empty() {
        return Ok(());
    }
    if pem.len() > MAX_CA_BUNDLE_LEN {
        return Err(format!("is longer than {MAX_CA_BUNDLE_LEN} bytes"));
    }
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let mut rest = pem;
    let mut count = 0;
    while let Some(start) = rest.find(begin) {
        let after = &rest[start + begin.len()..];
        let stop = after.find(end).ok_or("has a certificate without `-----END CERTIFICATE-----`")?;
        let body: String = after[..stop].chars().filter(|c| !c.is_whitespace()).collect();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| format!("certificate {} is not valid base64", count + 1))?;
        count += 1;
        rest = &after[stop + end.len()..];
    }
    if count == 0 { Err("holds no `-----BEGIN CERTIFICATE-----` block".into()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::google_key::tests::key_json;

    fn input(provider: Provider, registry: &str, username: &str, secret: &str) -> CredentialInput {
        CredentialInput {
            provider: provider.code(),
            registry_server: registry.into(),
            username: username.into(),
            secret: Some(SecretBytes::from_string(secret.into())),
            ..Default::default()
        }
    }

    fn fields(error: Error) -> Vec<String> {
        match error {
            Error::InvalidArgument(v) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn public_providers_default_their_registry_and_say_so() {
        let spec = validate(input(Provider::Ghcr, "", "octo", "ghp_x"), "credential").unwrap();
        assert_eq!(spec.registry.to_string(), "ghcr.io");
        assert_eq!(spec.normalizations.len(), 1);
        let spec = validate(input(Provider::DockerHub, "https://index.docker.io/v1/", "u", "p"), "credential").unwrap();
        assert_eq!(spec.registry.to_string(), "docker.io");
        assert!(spec.normalizations.iter().all(|n| n.starts_with("registry_server:")));
    }

    #[test]
    fn generic_without_registry_or_username_names_both_fields() {
        let got = fields(validate(input(Provider::Generic, "", "", "s"), "credential").unwrap_err());
        assert_eq!(got, vec!["credential.registry_server", "credential.username"]);
    }

    #[test]
    fn malformed_registry_names_registry_server() {
        for bad in ["ghcr .io", "u:p@ghcr.io", "ghcr.io/?q", "ghcr.io#f", "ghcr.io:99999", "a..b"] {
            let got = fields(validate(input(Provider::Generic, bad, "u", "s"), "credential").unwrap_err());
            assert_eq!(got, vec!["credential.registry_server"], "{bad}");
        }
    }

    #[test]
    fn provider_host_mismatch_is_rejected() {
        assert!(validate(input(Provider::Ghcr, "quay.io", "u", "s"), "credential").is_err());
        assert!(validate(input(Provider::DockerHub, "registry-1.docker.io", "u", "s"), "credential").is_ok());
    }

    #[test]
    fn google_secret_must_be_a_service_account_key_and_sets_the_username() {
        let spec =
            validate(input(Provider::Google, "europe-docker.pkg.dev/p", "", &key_json("ci@p.iam")), "credential")
                .unwrap();
        assert_eq!(spec.username, "ci@p.iam");
        let got = fields(validate(input(Provider::Google, "gcr.io", "", "{}"), "credential").unwrap_err());
        assert_eq!(got, vec!["credential.secret"]);
        let got = fields(
            validate(input(Provider::Google, "gcr.io", "other@x", &key_json("ci@p.iam")), "credential").unwrap_err(),
        );
        assert_eq!(got, vec!["credential.username"]);
    }

    #[test]
    fn ecr_needs_an_ecr_host_and_an_access_key_id() {
        let host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        assert!(validate(input(Provider::Ecr, host, "AKIAIOSFODNN7EXAMPLE", "wJalr"), "credential").is_ok());
        let got = fields(validate(input(Provider::Ecr, "ecr.example.com", "akia", "s"), "credential").unwrap_err());
        assert_eq!(got, vec!["credential.registry_server", "credential.username"]);
        let got = fields(validate(input(Provider::Ecr, host, "ASIAIOSFODNN7EXAMPLE", "s"), "credential").unwrap_err());
        assert_eq!(got, vec!["credential.username"]);
    }

    #[test]
    fn empty_secret_projects_realms_and_ca_are_checked() {
        let mut bad = input(Provider::Generic, "r.example.com", "u", "");
        bad.allowed_projects = vec!["ok".into(), "not ok".into()];
        bad.token_realm_allowlist = vec!["auth.example.com".into()];
        bad.ca_bundle_pem = "garbage".into();
        bad.description = "x".repeat(501);
        let got = fields(validate(bad, "credential").unwrap_err());
        assert_eq!(
            got,
            vec![
                "credential.secret",
                "credential.allowed_projects",
                "credential.token_realm_allowlist",
                "credential.description",
                "credential.ca_bundle_pem"
            ]
        );
    }

    #[test]
    fn keyless_settings_need_no_secret_and_fit_one_provider_each() {
        use crate::domain::credential::{AwsRole, AzureIdentity, QuayRobotFederation};
        let host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        let role = |web_identity| {
            ProviderSettings::AwsRole(AwsRole {
                role_arn: "arn:aws:iam::123456789012:role/pullpass/ecr-pull".into(),
                external_id: String::new(),
                web_identity,
            })
        };
        let keyless = CredentialInput { settings: role(true), ..input(Provider::Ecr, host, "", "") };
        let spec = validate(keyless, "credential").unwrap();
        assert!(spec.secret.is_none());
        // An access key that assumes the role keeps its rules.
        let with_key =
            CredentialInput { settings: role(false), ..input(Provider::Ecr, host, "AKIAIOSFODNN7EXAMPLE", "wJalr") };
        assert!(validate(with_key, "credential").unwrap().secret.is_some());
        let both = CredentialInput { settings: role(true), ..input(Provider::Ecr, host, "AKIAIOSFODNN7EXAMPLE", "s") };
        assert_eq!(
            fields(validate(both, "credential").unwrap_err()),
            vec!["credential.aws_role.web_identity", "credential.username"]
        );
        let bad_arn = CredentialInput {
            settings: ProviderSettings::AwsRole(AwsRole {
                role_arn: "arn:aws:iam::123:user/x".into(),
                external_id: "a b".into(),
                web_identity: true,
            }),
            ..input(Provider::Ecr, host, "", "")
        };
        assert_eq!(
            fields(validate(bad_arn, "credential").unwrap_err()),
            vec!["credential.aws_role.role_arn", "credential.aws_role.external_id"]
        );
        // Settings of another provider, and ACR without its app registration.
        let misplaced = CredentialInput {
            settings: ProviderSettings::QuayRobot(QuayRobotFederation { robot: "acme+ci".into() }),
            ..input(Provider::Ghcr, "", "u", "s")
        };
        assert_eq!(fields(validate(misplaced, "credential").unwrap_err()), vec!["credential.quay_robot"]);
        let bare_acr = input(Provider::Acr, "acme.azurecr.io", "", "s");
        assert_eq!(fields(validate(bare_acr, "credential").unwrap_err()), vec!["credential.azure"]);
        let acr = CredentialInput {
            settings: ProviderSettings::Azure(AzureIdentity {
                tenant_id: "contoso.onmicrosoft.com".into(),
                client_id: "00000000-0000-0000-0000-00000000000a".into(),
            }),
            ..input(Provider::Acr, "acme.azurecr.io", "", "")
        };
        let spec = validate(acr, "credential").unwrap();
        assert_eq!(spec.username, "00000000-0000-0000-0000-00000000000a");
        assert!(spec.secret.is_none());
        // Without keyless settings the secret stays required.
        assert_eq!(
            fields(validate(input(Provider::Quay, "", "u", ""), "credential").unwrap_err()),
            vec!["credential.secret"]
        );
    }

    #[test]
    fn usernames_with_colons_are_rejected() {
        let got = fields(validate(input(Provider::Generic, "r.io", "a:b", "s"), "credential").unwrap_err());
        assert_eq!(got, vec!["credential.username"]);
    }
}
