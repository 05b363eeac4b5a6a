//! Domain ⇄ proto conversions for the handlers. Pure field mapping: the
//! rules live in the domain modules.

use pullpass::v1;

use crate::credentials::{CredentialInput, Saved};
use crate::domain::credential::{AwsRole, AzureIdentity, GoogleFederation, ProviderSettings, QuayRobotFederation};
use crate::domain::{Credential, Timestamp, Workspace};
use crate::secret::SecretBytes;

/// A protobuf timestamp.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.seconds_and_nanos();
    prost_types::Timestamp { seconds, nanos }
}

/// The proto form of a credential (never with a secret).
pub fn credential(c: &Credential) -> v1::Credential {
    v1::Credential {
        name: c.name.to_string(),
        provider: c.provider.code(),
        registry_server: c.registry.to_string(),
        username: c.username.clone(),
        secret: String::new(),
        secret_set: c.secret_set(),
        secret_version: c.secret_version as i64,
        allowed_projects: c.allowed_projects.iter().map(ToString::to_string).collect(),
        allow_passthrough: c.allow_passthrough,
        description: c.description.clone(),
        create_time: Some(timestamp(c.create_time)),
        update_time: Some(timestamp(c.update_time)),
        last_used_time: c.last_used_time.map(timestamp),
        token_realm_allowlist: c.token_realm_allowlist.iter().map(ToString::to_string).collect(),
        ca_bundle_pem: c.ca_bundle_pem.clone(),
        normalizations: Vec::new(),
        provider_settings: provider_settings(&c.settings),
        expire_time: c.expire_time.map(timestamp),
        last_failure: c.last_failure.map(|f| v1::CredentialFailure {
            time: Some(timestamp(f.time)),
            reason: f.reason.code(),
            failing_since: Some(timestamp(f.since)),
        }),
    }
}

/// The proto oneof of provider settings.
fn provider_settings(settings: &ProviderSettings) -> Option<v1::credential::ProviderSettings> {
    use v1::credential::ProviderSettings as P;
    Some(match settings {
        ProviderSettings::None => return None,
        ProviderSettings::AwsRole(r) => P::AwsRole(v1::AwsRole {
            role_arn: r.role_arn.clone(),
            external_id: r.external_id.clone(),
            web_identity: r.web_identity,
        }),
        ProviderSettings::Azure(a) => {
            P::Azure(v1::AzureIdentity { tenant_id: a.tenant_id.clone(), client_id: a.client_id.clone() })
        }
        ProviderSettings::GoogleFederation(g) => P::GoogleFederation(v1::GoogleFederation {
            audience: g.audience.clone(),
            service_account: g.service_account.clone(),
        }),
        ProviderSettings::QuayRobot(q) => P::QuayRobot(v1::QuayRobotFederation { robot: q.robot.clone() }),
    })
}

/// The domain form of the proto oneof (rules are checked by the credential
/// service).
fn settings_input(settings: Option<v1::credential::ProviderSettings>) -> ProviderSettings {
    use v1::credential::ProviderSettings as P;
    match settings {
        None => ProviderSettings::None,
        Some(P::AwsRole(r)) => ProviderSettings::AwsRole(AwsRole {
            role_arn: r.role_arn,
            external_id: r.external_id,
            web_identity: r.web_identity,
        }),
        Some(P::Azure(a)) => ProviderSettings::Azure(AzureIdentity { tenant_id: a.tenant_id, client_id: a.client_id }),
        Some(P::GoogleFederation(g)) => ProviderSettings::GoogleFederation(GoogleFederation {
            audience: g.audience,
            service_account: g.service_account,
        }),
        Some(P::QuayRobot(q)) => ProviderSettings::QuayRobot(QuayRobotFederation { robot: q.robot }),
    }
}

/// The proto form of a saved credential, with the normalization notes.
pub fn saved_credential(saved: Saved) -> v1::Credential {
    v1::Credential { normalizations: saved.normalizations, ..credential(&saved.credential) }
}

/// The domain input of a proto credential. The secret's buffer is moved, not
/// copied, into a zeroizing [`SecretBytes`].
pub fn credential_input(c: v1::Credential) -> CredentialInput {
    CredentialInput {
        provider: c.provider,
        registry_server: c.registry_server,
        username: c.username,
        secret: Some(SecretBytes::from_string(c.secret)),
        allowed_projects: c.allowed_projects,
        allow_passthrough: c.allow_passthrough,
        description: c.description,
        token_realm_allowlist: c.token_realm_allowlist,
        ca_bundle_pem: c.ca_bundle_pem,
        settings: settings_input(c.provider_settings),
        expire_time: c.expire_time.as_ref().map(from_timestamp),
        secret_stored: false,
    }
}

/// The proto form of a workspace.
pub fn workspace(w: &Workspace) -> v1::Workspace {
    v1::Workspace {
        name: w.id.name(),
        kind: w.kind.code(),
        display_name: w.display_name.clone(),
        create_time: Some(timestamp(w.create_time)),
    }
}

/// A domain timestamp from protobuf.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_seconds_and_nanos(t.seconds, t.nanos)
}

/// The proto form of an access token (never with the token string).
pub fn access_token(r: &crate::domain::AccessTokenRecord) -> v1::AccessToken {
    v1::AccessToken {
        name: r.resource_name(),
        role: r.role.code(),
        projects: r.projects.iter().map(ToString::to_string).collect(),
        expire_time: r.expire_time.map(timestamp),
        description: r.description.clone(),
        create_time: Some(timestamp(r.create_time)),
        last_used_time: r.last_used_time.map(timestamp),
        revoke_time: r.revoke_time.map(timestamp),
        token: String::new(),
    }
}

/// A duration from protobuf (`None` for a negative or unset one, which the
/// service then refuses or defaults).
pub fn from_duration(d: &prost_types::Duration) -> Option<std::time::Duration> {
    (d.seconds >= 0 && d.nanos >= 0).then(|| std::time::Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A protobuf duration.
pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// An identity provider as asked for.
pub fn provider_input(p: v1::IdentityProvider) -> crate::identities::ProviderInput {
    crate::identities::ProviderInput {
        issuer: p.issuer,
        jwks_uri: p.jwks_uri,
        jwks: p.jwks,
        ca_certificates: p.ca_certificates,
        audiences: p.audiences,
        allowed_algorithms: p.allowed_algorithms,
        // A negative duration is refused rather than defaulted.
        max_token_lifetime: p.max_token_lifetime.map(|d| from_duration(&d).unwrap_or(std::time::Duration::MAX)),
        clock_skew: p.clock_skew.map(|d| from_duration(&d).unwrap_or(std::time::Duration::MAX)),
        description: p.description,
    }
}

/// The proto form of an identity provider.
pub fn identity_provider(p: &crate::domain::IdentityProvider) -> v1::IdentityProvider {
    let (jwks_uri, jwks) = match &p.key_source {
        crate::domain::KeySource::Discovery => (String::new(), String::new()),
        crate::domain::KeySource::JwksUri(uri) => (uri.clone(), String::new()),
        crate::domain::KeySource::Jwks(jwks) => (String::new(), jwks.clone()),
    };
    v1::IdentityProvider {
        name: p.id.name(),
        issuer: p.issuer.clone(),
        jwks_uri,
        jwks,
        ca_certificates: p.ca_certificates.clone(),
        audiences: p.audiences.clone(),
        allowed_algorithms: p.allowed_algorithms.clone(),
        max_token_lifetime: Some(duration(p.max_token_lifetime)),
        clock_skew: Some(duration(p.clock_skew)),
        description: p.description.clone(),
        create_time: Some(timestamp(p.create_time)),
        update_time: Some(timestamp(p.update_time)),
    }
}

/// An identity binding as asked for.
pub fn binding_input(b: v1::IdentityBinding) -> crate::identities::BindingInput {
    crate::identities::BindingInput {
        identity_provider: b.identity_provider,
        bound_claims: b.bound_claims.into_iter().collect(),
        role: b.role,
        allowed_projects: b.allowed_projects,
        description: b.description,
    }
}

/// The proto form of an identity binding.
pub fn identity_binding(b: &crate::domain::IdentityBinding) -> v1::IdentityBinding {
    v1::IdentityBinding {
        name: b.name.to_string(),
        identity_provider: b.provider.name(),
        bound_claims: b.bound_claims.iter().cloned().collect(),
        role: b.role.code(),
        allowed_projects: b.allowed_projects.iter().map(ToString::to_string).collect(),
        description: b.description.clone(),
        create_time: Some(timestamp(b.create_time)),
        update_time: Some(timestamp(b.update_time)),
    }
}

/// The proto form of TestIdentityToken's answer.
pub fn identity_explanation(e: crate::access::identity::callers::Explanation) -> v1::TestIdentityTokenResponse {
    v1::TestIdentityTokenResponse {
        identity_provider: e.provider.map(|p| p.name()).unwrap_or_default(),
        refusal: e.refusal.unwrap_or_default(),
        role: e.role.map_or(0, crate::domain::Role::code),
        allowed_projects: e.projects,
        bindings: e
            .bindings
            .into_iter()
            .map(|b| v1::BindingExplanation {
                identity_binding: b.binding,
                matched: b.matched,
                claims: b
                    .claims
                    .into_iter()
                    .map(|c| v1::ClaimCheck {
                        claim: c.claim,
                        pattern: c.pattern,
                        value: c.value.unwrap_or_default(),
                        matched: c.matched,
                    })
                    .collect(),
            })
            .collect(),
    }
}
