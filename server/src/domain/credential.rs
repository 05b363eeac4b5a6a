//! A stored registry credential: its metadata, and its secret as sealed bytes.
//!
//! The plaintext secret never appears in these types; it exists only briefly
//! as a [`crate::secret::SecretBytes`] inside `credentials` and `seal`.

use std::fmt;

use pullpass::registry::{RegistryHost, RegistryServer};

use super::{CredentialName, ProjectName, Timestamp};

/// The kind of registry, deciding how the secret becomes short-lived auth.
/// The numbers are the `pullpass.v1.Provider` values and are what the
/// database stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Docker Hub.
    DockerHub = 1,
    /// GitHub Container Registry.
    Ghcr = 2,
    /// GitLab (gitlab.com or self-hosted).
    Gitlab = 3,
    /// Google Artifact Registry / Container Registry (service-account key).
    Google = 4,
    /// Amazon ECR (access key id + secret access key).
    Ecr = 5,
    /// Quay (quay.io or self-hosted).
    Quay = 6,
    /// Any distribution-protocol registry.
    Generic = 7,
    /// Azure Container Registry through Entra ID.
    Acr = 8,
}

impl Provider {
    /// Every provider, in wire order.
    pub const ALL: [Provider; 8] = [
        Provider::DockerHub,
        Provider::Ghcr,
        Provider::Gitlab,
        Provider::Google,
        Provider::Ecr,
        Provider::Quay,
        Provider::Generic,
        Provider::Acr,
    ];

    /// From the wire / database number.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as i32 == code)
    }

    /// The wire / database number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The enum value name used on the wire and in filters (`GHCR`).
    pub fn wire_name(self) -> &'static str {
        match self {
            Provider::DockerHub => "DOCKER_HUB",
            Provider::Ghcr => "GHCR",
            Provider::Gitlab => "GITLAB",
            Provider::Google => "GOOGLE",
            Provider::Ecr => "ECR",
            Provider::Quay => "QUAY",
            Provider::Generic => "GENERIC",
            Provider::Acr => "ACR",
        }
    }

    /// Parses a wire name (`GHCR`), case-insensitively.
    pub fn from_wire_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.wire_name().eq_ignore_ascii_case(name))
    }
}

/// How a provider is reached where it takes more than a username and a
/// secret (the proto's `provider_settings` oneof). Checked by
/// `credentials::spec` against the provider; stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderSettings {
    /// A username and a secret are all it takes.
    #[default]
    None,
    /// ECR: a role to assume.
    AwsRole(AwsRole),
    /// ACR: an Entra app registration.
    Azure(AzureIdentity),
    /// GOOGLE: workload identity federation.
    GoogleFederation(GoogleFederation),
    /// QUAY: robot federation.
    QuayRobot(QuayRobotFederation),
}

/// An IAM role pullpass assumes for ECR.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AwsRole {
    /// `arn:<partition>:iam::<account>:role/<path/name>`.
    pub role_arn: String,
    /// Asked for by the role's trust policy, or empty.
    #[serde(default)]
    pub external_id: String,
    /// AssumeRoleWithWebIdentity with pullpass's own issuer token.
    #[serde(default)]
    pub web_identity: bool,
}

/// An Entra app registration for ACR.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AzureIdentity {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
}

/// Google workload identity federation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GoogleFederation {
    /// `//iam.googleapis.com/projects/…/providers/…`.
    pub audience: String,
    /// A service account to impersonate, or empty.
    #[serde(default)]
    pub service_account: String,
}

/// Quay robot federation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuayRobotFederation {
    /// `<organization>+<robot>`.
    pub robot: String,
}

impl ProviderSettings {
    /// The wire name of the oneof field that is set, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ProviderSettings::None => None,
            ProviderSettings::AwsRole(_) => Some("aws_role"),
            ProviderSettings::Azure(_) => Some("azure"),
            ProviderSettings::GoogleFederation(_) => Some("google_federation"),
            ProviderSettings::QuayRobot(_) => Some("quay_robot"),
        }
    }

    /// Does a credential with these settings work without a stored secret
    /// (pullpass's issuer or its own cloud identity stands in for it)?
    pub fn keyless_allowed(&self) -> bool {
        !matches!(self, ProviderSettings::None)
    }

    /// Does the flow use a token from pullpass's own issuer?
    pub fn uses_issuer(&self, secret_set: bool) -> bool {
        match self {
            ProviderSettings::None => false,
            ProviderSettings::AwsRole(role) => role.web_identity,
            ProviderSettings::Azure(_) => !secret_set,
            ProviderSettings::GoogleFederation(_) | ProviderSettings::QuayRobot(_) => true,
        }
    }
}

/// A random id that identifies one credential for its whole life. Unlike the
/// name, it is never reused: a credential deleted and created again under
/// the same name gets a new uid, so cached tokens and sealed blobs of the old
/// one can never serve the new one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialUid(pub [u8; 16]);

impl fmt::Display for CredentialUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CredentialUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialUid({self})")
    }
}

/// An origin a credential's secret may be sent to as a token realm:
/// `https://host[:port]` (or `http://` for registries on the server's
/// insecure list).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RealmOrigin {
    /// `https` or `http`.
    pub secure: bool,
    /// Host and optional port.
    pub host: RegistryHost,
}

impl RealmOrigin {
    /// Parses `https://host[:port]` with an optional trailing `/`.
    pub fn parse(input: &str) -> Result<Self, String> {
        let (secure, rest) = if let Some(rest) = input.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = input.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("is not an origin: expected `https://host[:port]`".to_owned());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        // The input is not echoed: a pasted `user:password@host` would leak.
        let host = RegistryHost::parse(authority).map_err(|e| format!("origin {e}"))?;
        Ok(Self { secure, host: without_default_port(host, secure) })
    }
}

/// `host:443` for https and `host:80` for http are plain `host`, as URL
/// parsers (and so realm URLs) write them.
pub fn without_default_port(host: RegistryHost, secure: bool) -> RegistryHost {
    let default = if secure { 443 } else { 80 };
    if host.port() == Some(default) { RegistryHost::parse(host.hostname()).unwrap_or(host) } else { host }
}

impl fmt::Display for RealmOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host)
    }
}

impl fmt::Debug for RealmOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RealmOrigin({self})")
    }
}

/// The metadata of a credential: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `workspaces/{w}/credentials/{c}`.
    pub name: CredentialName,
    /// Never-reused identity; see [`CredentialUid`].
    pub uid: CredentialUid,
    /// How the secret is exchanged.
    pub provider: Provider,
    /// The registry (and namespace) served.
    pub registry: RegistryServer,
    /// User name presented to the registry.
    pub username: String,
    /// 0 while no secret is stored (a keyless credential); 1 once one is,
    /// +1 per secret rotation.
    pub secret_version: u64,
    /// How the provider is reached beyond username and secret.
    pub settings: ProviderSettings,
    /// Projects served; empty = all.
    pub allowed_projects: Vec<ProjectName>,
    /// May the raw secret be handed out to basic-only registries?
    pub allow_passthrough: bool,
    /// Extra realm origins the secret may be sent to.
    pub token_realm_allowlist: Vec<RealmOrigin>,
    /// PEM CA bundle for a private registry, or empty.
    pub ca_bundle_pem: String,
    /// Free text.
    pub description: String,
    /// Creation time.
    pub create_time: Timestamp,
    /// Last change.
    pub update_time: Timestamp,
    /// When it last served a lease (recorded at most once a minute), if
    /// ever. Not a change: it moves neither `update_time` nor any cache.
    pub last_used_time: Option<Timestamp>,
    /// When the upstream secret itself expires (a PAT's expiry, chosen when
    /// it was made), if known. Health only: pullpass still uses the secret
    /// after it, and the registry answers.
    pub expire_time: Option<Timestamp>,
    /// The last upstream refusal (recorded off the lease path, at most once
    /// a minute), if any. Not a change, like `last_used_time`.
    pub last_failure: Option<CredentialFailure>,
}

/// An upstream refusal of a credential, as its health records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialFailure {
    /// When it happened.
    pub time: Timestamp,
    /// Why, typed.
    pub reason: FailureReason,
    /// The first refusal since the credential last worked (served a lease):
    /// how long it has been failing.
    pub since: Timestamp,
}

/// Why an upstream exchange failed, typed: the `reason` label of
/// `pullpass_upstream_refusals_total` and the `last_failure.reason` of a
/// credential. The numbers are the `pullpass.v1.CredentialFailure.Reason`
/// values; the names are what the database and metrics carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The realm or API refused the secret (401/403 or equivalent).
    Rejected = 1,
    /// The registry accepted the secret but granted nothing on the repository.
    NoAccess = 2,
    /// The registry answered 429.
    RateLimited = 3,
    /// The registry could not be reached, failed (5xx), or answered outside
    /// the protocol.
    Unavailable = 4,
    /// The registry did not answer before the caller's deadline.
    Timeout = 5,
    /// pullpass would not send the secret where the registry pointed (a realm
    /// outside the allow-list, a redirect).
    RealmRefused = 6,
    /// The credential or this server is misconfigured for the registry.
    Misconfigured = 7,
}

impl FailureReason {
    /// Every reason, in wire order.
    pub const ALL: [FailureReason; 7] = [
        FailureReason::Rejected,
        FailureReason::NoAccess,
        FailureReason::RateLimited,
        FailureReason::Unavailable,
        FailureReason::Timeout,
        FailureReason::RealmRefused,
        FailureReason::Misconfigured,
    ];

    /// The label and database name (`rate_limited`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::NoAccess => "no_access",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::RealmRefused => "realm_refused",
            Self::Misconfigured => "misconfigured",
        }
    }

    /// From [`FailureReason::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The wire number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Does a failure for this reason say something about the credential,
    /// so that it becomes its `last_failure`? The registry refused the
    /// secret, rate-limited its account, or pointed where it may not go,
    /// or the credential cannot be used as configured. Not when a caller
    /// asked for a repository the credential does not reach (`NoAccess`),
    /// gave up early (`Timeout`), or the registry was down (`Unavailable`):
    /// those are counted in the metrics only, so no caller can mark a
    /// credential failing and an outage is not a pile of failing credentials.
    pub fn marks_credential(self) -> bool {
        matches!(self, Self::Rejected | Self::RateLimited | Self::RealmRefused | Self::Misconfigured)
    }

    /// What a person reads in the console ("rejected the secret").
    pub fn describe(self) -> &'static str {
        match self {
            Self::Rejected => "the registry rejected the secret",
            Self::NoAccess => "the registry granted no access to the repository",
            Self::RateLimited => "the registry is rate limiting",
            Self::Unavailable => "the registry was unavailable",
            Self::Timeout => "the registry did not answer in time",
            Self::RealmRefused => "the registry pointed to a realm pullpass will not send the secret to",
            Self::Misconfigured => "the credential is misconfigured for the registry",
        }
    }
}

impl Credential {
    /// Is a secret stored?
    pub fn secret_set(&self) -> bool {
        self.secret_version > 0
    }

    /// Has an upstream refusal come after its last successful use?
    pub fn failing(&self) -> bool {
        self.last_failure.is_some_and(|f| self.last_used_time.is_none_or(|used| f.time > used))
    }

    /// May this credential serve `project` (None = a caller without project)?
    pub fn allows_project(&self, project: Option<&ProjectName>) -> bool {
        self.allowed_projects.is_empty() || project.is_some_and(|p| self.allowed_projects.contains(p))
    }
}

/// A secret sealed by `seal`: a data key wrapped by a master key, and the
/// secret encrypted under the data key. Opaque bytes to everyone but `seal`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Id of the master key (KEK) that wrapped the data key.
    pub kek_id: String,
    /// The data key, encrypted under the KEK.
    pub wrapped_dek: Vec<u8>,
    /// The secret, encrypted under the data key.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("kek_id", &self.kek_id)
            .field("wrapped_dek_len", &self.wrapped_dek.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A credential as stored: metadata plus sealed secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The metadata.
    pub credential: Credential,
    /// The sealed secret of `credential.secret_version`.
    pub sealed: SealedSecret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_codes_and_names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(Provider::from_code(p.code()), Some(p));
            assert_eq!(Provider::from_wire_name(p.wire_name()), Some(p));
        }
        assert_eq!(Provider::from_code(0), None);
        assert_eq!(Provider::from_wire_name("ghcr"), Some(Provider::Ghcr));
    }

    #[test]
    fn realm_origins_accept_only_scheme_and_authority() {
        assert_eq!(RealmOrigin::parse("https://auth.example.com/").unwrap().to_string(), "https://auth.example.com");
        assert!(!RealmOrigin::parse("http://127.0.0.1:8080").unwrap().secure);
        for bad in ["auth.example.com", "https://auth.example.com/token", "https://u@h", "ftp://h"] {
            assert!(RealmOrigin::parse(bad).is_err(), "{bad}");
        }
    }
}
