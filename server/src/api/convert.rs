//! Domain ⇄ proto conversions for the handlers. Pure field mapping: the
//! rules live in the domain modules.

use pullpass::v1;

use crate::credentials::{CredentialInput, Saved};
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
        secret_set: true,
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
