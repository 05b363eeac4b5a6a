//! Rows as both backends store them: plain columns (text, integers, bytes),
//! and the one place that turns them into domain types and back, checking
//! every value (a row edited by hand is reported, never trusted).

use pullpass::registry::{RegistryHost, RegistryServer};

use super::{StoreError, decode_list, encode_list};
use crate::domain::audit::{AuditEvent, AuditRecord};
use crate::domain::credential::{CredentialFailure, FailureReason, ProviderSettings, RealmOrigin, StoredCredential};
use crate::domain::{
    AccessTokenId, AccessTokenRecord, Credential, CredentialId, CredentialName, CredentialUid, IdentityBinding,
    IdentityBindingId, IdentityBindingName, IdentityProvider, IdentityProviderId, KeySource, ProjectName, Provider,
    Role, SealedSecret, Timestamp, Workspace, WorkspaceId, WorkspaceKind,
};

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// A `credentials` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    pub workspace_id: String,
    pub credential_id: String,
    pub uid: Vec<u8>,
    pub provider: i32,
    pub registry_host: String,
    pub registry_namespace: String,
    pub username: String,
    pub secret_version: i64,
    pub allowed_projects: String,
    pub allow_passthrough: bool,
    pub token_realm_allowlist: String,
    pub ca_bundle_pem: String,
    pub description: String,
    pub create_time: i64,
    pub update_time: i64,
    pub last_used_time: Option<i64>,
    /// `ProviderSettings` as JSON; empty for none.
    pub provider_settings: String,
    pub expire_time: Option<i64>,
    pub last_failure_time: Option<i64>,
    /// A `FailureReason` name; empty without a failure.
    pub last_failure_reason: String,
    pub failing_since: Option<i64>,
    pub secret_kek_id: String,
    pub secret_wrapped_dek: Vec<u8>,
    pub secret_ciphertext: Vec<u8>,
}

impl CredentialRow {
    /// The row of a stored credential.
    pub fn of(stored: &StoredCredential) -> Self {
        let c = &stored.credential;
        Self {
            workspace_id: c.name.workspace.as_str().to_owned(),
            credential_id: c.name.credential.as_str().to_owned(),
            uid: c.uid.0.to_vec(),
            provider: c.provider.code(),
            registry_host: c.registry.host().as_str().to_owned(),
            registry_namespace: c.registry.namespace().unwrap_or("").to_owned(),
            username: c.username.clone(),
            secret_version: c.secret_version as i64,
            allowed_projects: encode_list(&c.allowed_projects.iter().map(ProjectName::as_str).collect::<Vec<_>>()),
            allow_passthrough: c.allow_passthrough,
            token_realm_allowlist: encode_list(
                &c.token_realm_allowlist.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ),
            ca_bundle_pem: c.ca_bundle_pem.clone(),
            description: c.description.clone(),
            create_time: c.create_time.as_micros(),
            update_time: c.update_time.as_micros(),
            last_used_time: c.last_used_time.map(Timestamp::as_micros),
            provider_settings: match &c.settings {
                ProviderSettings::None => String::new(),
                settings => serde_json::to_string(settings).unwrap_or_default(),
            },
            expire_time: c.expire_time.map(Timestamp::as_micros),
            last_failure_time: c.last_failure.map(|f| f.time.as_micros()),
            last_failure_reason: c.last_failure.map(|f| f.reason.name().to_owned()).unwrap_or_default(),
            failing_since: c.last_failure.map(|f| f.since.as_micros()),
            secret_kek_id: stored.sealed.kek_id.clone(),
            secret_wrapped_dek: stored.sealed.wrapped_dek.clone(),
            secret_ciphertext: stored.sealed.ciphertext.clone(),
        }
    }

    /// The metadata, checked.
    pub fn credential(&self) -> Result<Credential, StoreError> {
        let host = RegistryHost::parse(&self.registry_host).map_err(|e| corrupt(format!("registry host {e}")))?;
        let namespace = (!self.registry_namespace.is_empty()).then(|| self.registry_namespace.clone());
        let registry = RegistryServer::new(host, namespace).map_err(|e| corrupt(format!("registry namespace {e}")))?;
        Ok(Credential {
            name: CredentialName {
                workspace: WorkspaceId::parse(&self.workspace_id).map_err(corrupt)?,
                credential: CredentialId::parse(&self.credential_id).map_err(corrupt)?,
            },
            uid: CredentialUid(self.uid.clone().try_into().map_err(|_| corrupt("credential uid length"))?),
            provider: Provider::from_code(self.provider)
                .ok_or_else(|| corrupt(format!("provider {}", self.provider)))?,
            registry,
            username: self.username.clone(),
            secret_version: u64::try_from(self.secret_version).map_err(|_| corrupt("secret version"))?,
            allowed_projects: decode_list(&self.allowed_projects)?
                .iter()
                .map(|p| ProjectName::parse(p).map_err(corrupt))
                .collect::<Result<_, _>>()?,
            allow_passthrough: self.allow_passthrough,
            token_realm_allowlist: decode_list(&self.token_realm_allowlist)?
                .iter()
                .map(|r| RealmOrigin::parse(r).map_err(corrupt))
                .collect::<Result<_, _>>()?,
            ca_bundle_pem: self.ca_bundle_pem.clone(),
            description: self.description.clone(),
            create_time: Timestamp::from_micros(self.create_time),
            update_time: Timestamp::from_micros(self.update_time),
            last_used_time: self.last_used_time.map(Timestamp::from_micros),
            settings: if self.provider_settings.is_empty() {
                ProviderSettings::None
            } else {
                serde_json::from_str(&self.provider_settings).map_err(|_| corrupt("provider settings"))?
            },
            expire_time: self.expire_time.map(Timestamp::from_micros),
            last_failure: match self.last_failure_time {
                None => None,
                Some(time) => Some(CredentialFailure {
                    time: Timestamp::from_micros(time),
                    reason: FailureReason::from_name(&self.last_failure_reason)
                        .ok_or_else(|| corrupt("last failure reason"))?,
                    since: Timestamp::from_micros(self.failing_since.unwrap_or(time)),
                }),
            },
        })
    }

    /// The credential and its sealed secret, checked.
    pub fn stored(&self) -> Result<StoredCredential, StoreError> {
        Ok(StoredCredential {
            credential: self.credential()?,
            sealed: SealedSecret {
                kek_id: self.secret_kek_id.clone(),
                wrapped_dek: self.secret_wrapped_dek.clone(),
                ciphertext: self.secret_ciphertext.clone(),
            },
        })
    }
}

/// A `workspaces` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRow {
    pub id: String,
    pub kind: i32,
    pub display_name: String,
    pub create_time: i64,
}

impl WorkspaceRow {
    /// The row of a workspace.
    pub fn of(workspace: &Workspace) -> Self {
        Self {
            id: workspace.id.as_str().to_owned(),
            kind: workspace.kind.code(),
            display_name: workspace.display_name.clone(),
            create_time: workspace.create_time.as_micros(),
        }
    }

    /// The workspace, checked.
    pub fn workspace(&self) -> Result<Workspace, StoreError> {
        Ok(Workspace {
            id: WorkspaceId::parse(&self.id).map_err(corrupt)?,
            kind: WorkspaceKind::from_code(self.kind)
                .ok_or_else(|| corrupt(format!("workspace kind {}", self.kind)))?,
            display_name: self.display_name.clone(),
            create_time: Timestamp::from_micros(self.create_time),
        })
    }
}

/// An `access_tokens` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub workspace_id: Option<String>,
    pub role: i32,
    pub projects: String,
    pub token_hash: Vec<u8>,
    pub description: String,
    pub create_time: i64,
    pub expire_time: Option<i64>,
    pub revoke_time: Option<i64>,
    pub last_used_time: Option<i64>,
}

impl TokenRow {
    /// The row of a token record.
    pub fn of(record: &AccessTokenRecord) -> Self {
        Self {
            id: record.id.as_str().to_owned(),
            workspace_id: record.workspace.as_ref().map(|w| w.as_str().to_owned()),
            role: record.role.code(),
            projects: encode_list(&record.projects.iter().map(ProjectName::as_str).collect::<Vec<_>>()),
            token_hash: record.token_hash.to_vec(),
            description: record.description.clone(),
            create_time: record.create_time.as_micros(),
            expire_time: record.expire_time.map(Timestamp::as_micros),
            revoke_time: record.revoke_time.map(Timestamp::as_micros),
            last_used_time: record.last_used_time.map(Timestamp::as_micros),
        }
    }

    /// The record, checked.
    pub fn record(&self) -> Result<AccessTokenRecord, StoreError> {
        Ok(AccessTokenRecord {
            id: AccessTokenId::parse(&self.id).map_err(corrupt)?,
            workspace: self.workspace_id.as_deref().map(WorkspaceId::parse).transpose().map_err(corrupt)?,
            role: Role::from_code(self.role).ok_or_else(|| corrupt(format!("role {}", self.role)))?,
            projects: decode_list(&self.projects)?
                .iter()
                .map(|p| ProjectName::parse(p).map_err(corrupt))
                .collect::<Result<_, _>>()?,
            token_hash: self.token_hash.clone().try_into().map_err(|_| corrupt("token hash length"))?,
            description: self.description.clone(),
            create_time: Timestamp::from_micros(self.create_time),
            expire_time: self.expire_time.map(Timestamp::from_micros),
            revoke_time: self.revoke_time.map(Timestamp::from_micros),
            last_used_time: self.last_used_time.map(Timestamp::from_micros),
        })
    }
}

/// An `audit_events` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub event_time: i64,
    pub workspace_id: String,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub status_code: i32,
    pub client_address: String,
    pub request_id: String,
    pub image: String,
    pub granted_scope: String,
    pub count: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl AuditRow {
    /// The row of an event at `seq` with its links.
    pub fn of(seq: i64, event: &AuditEvent, prev_hash: &[u8; 32], hash: &[u8; 32]) -> Self {
        Self {
            seq,
            event_time: event.event_time.as_micros(),
            workspace_id: event.workspace.clone(),
            principal: event.principal.clone(),
            action: event.action.clone(),
            resource: event.resource.clone(),
            status_code: event.status_code,
            client_address: event.client_address.clone(),
            request_id: event.request_id.clone(),
            image: event.image.clone(),
            granted_scope: event.granted_scope.clone(),
            count: i64::from(event.count),
            prev_hash: prev_hash.to_vec(),
            hash: hash.to_vec(),
        }
    }

    /// The record, checked.
    pub fn record(&self) -> Result<AuditRecord, StoreError> {
        let hash = |bytes: &[u8]| -> Result<[u8; 32], StoreError> {
            bytes.try_into().map_err(|_| corrupt("audit hash length"))
        };
        Ok(AuditRecord {
            seq: self.seq,
            event: AuditEvent {
                event_time: Timestamp::from_micros(self.event_time),
                workspace: self.workspace_id.clone(),
                principal: self.principal.clone(),
                action: self.action.clone(),
                resource: self.resource.clone(),
                status_code: self.status_code,
                client_address: self.client_address.clone(),
                request_id: self.request_id.clone(),
                image: self.image.clone(),
                granted_scope: self.granted_scope.clone(),
                count: u32::try_from(self.count)
                    .ok()
                    .filter(|count| *count > 0)
                    .ok_or_else(|| corrupt("audit event count"))?,
            },
            prev_hash: hash(&self.prev_hash)?,
            hash: hash(&self.hash)?,
        })
    }
}

/// A `console_sessions` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id_hash: Vec<u8>,
    pub kind: i32,
    pub token_id: String,
    pub create_time: i64,
    pub expire_time: i64,
    pub last_seen: i64,
}

impl SessionRow {
    /// The row of a session.
    pub fn of(session: &crate::domain::session::ConsoleSession) -> Self {
        Self {
            id_hash: session.id_hash.to_vec(),
            kind: session.kind.code(),
            token_id: session.token_id.as_str().to_owned(),
            create_time: session.create_time.as_micros(),
            expire_time: session.expire_time.as_micros(),
            last_seen: session.last_seen.as_micros(),
        }
    }

    /// The session, checked.
    pub fn session(&self) -> Result<crate::domain::session::ConsoleSession, StoreError> {
        use crate::domain::session::{ConsoleSession, SessionKind};
        Ok(ConsoleSession {
            id_hash: self.id_hash.clone().try_into().map_err(|_| corrupt("console session hash length"))?,
            kind: SessionKind::from_code(self.kind)
                .ok_or_else(|| corrupt(format!("console session kind {}", self.kind)))?,
            token_id: AccessTokenId::parse(&self.token_id).map_err(corrupt)?,
            create_time: Timestamp::from_micros(self.create_time),
            expire_time: Timestamp::from_micros(self.expire_time),
            last_seen: Timestamp::from_micros(self.last_seen),
        })
    }
}

/// An `identity_providers` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProviderRow {
    pub id: String,
    pub issuer: String,
    pub jwks_uri: String,
    pub jwks: String,
    pub ca_certificates: String,
    pub audiences: String,
    pub allowed_algorithms: String,
    pub max_token_lifetime_s: i64,
    pub clock_skew_s: i64,
    pub description: String,
    pub create_time: i64,
    pub update_time: i64,
}

impl IdentityProviderRow {
    /// The row of a provider.
    pub fn of(provider: &IdentityProvider) -> Self {
        let (jwks_uri, jwks) = match &provider.key_source {
            KeySource::Discovery => (String::new(), String::new()),
            KeySource::JwksUri(uri) => (uri.clone(), String::new()),
            KeySource::Jwks(jwks) => (String::new(), jwks.clone()),
        };
        Self {
            id: provider.id.as_str().to_owned(),
            issuer: provider.issuer.clone(),
            jwks_uri,
            jwks,
            ca_certificates: provider.ca_certificates.clone(),
            audiences: encode_list(&provider.audiences),
            allowed_algorithms: encode_list(&provider.allowed_algorithms),
            max_token_lifetime_s: provider.max_token_lifetime.as_secs() as i64,
            clock_skew_s: provider.clock_skew.as_secs() as i64,
            description: provider.description.clone(),
            create_time: provider.create_time.as_micros(),
            update_time: provider.update_time.as_micros(),
        }
    }

    /// The provider, checked.
    pub fn provider(&self) -> Result<IdentityProvider, StoreError> {
        let key_source = match (self.jwks_uri.is_empty(), self.jwks.is_empty()) {
            (true, true) => KeySource::Discovery,
            (false, true) => KeySource::JwksUri(self.jwks_uri.clone()),
            (true, false) => KeySource::Jwks(self.jwks.clone()),
            (false, false) => return Err(corrupt(format!("identity provider {}: two key sources", self.id))),
        };
        let seconds = |n: i64, what: &str| {
            u64::try_from(n).map(std::time::Duration::from_secs).map_err(|_| corrupt(format!("{what} {n}")))
        };
        Ok(IdentityProvider {
            id: IdentityProviderId::parse(&self.id).map_err(corrupt)?,
            issuer: self.issuer.clone(),
            key_source,
            ca_certificates: self.ca_certificates.clone(),
            audiences: decode_list(&self.audiences)?,
            allowed_algorithms: decode_list(&self.allowed_algorithms)?,
            max_token_lifetime: seconds(self.max_token_lifetime_s, "max token lifetime")?,
            clock_skew: seconds(self.clock_skew_s, "clock skew")?,
            description: self.description.clone(),
            create_time: Timestamp::from_micros(self.create_time),
            update_time: Timestamp::from_micros(self.update_time),
        })
    }
}

/// An `identity_bindings` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBindingRow {
    pub workspace_id: String,
    pub id: String,
    pub provider_id: String,
    pub bound_claims: String,
    pub role: i32,
    pub allowed_projects: String,
    pub description: String,
    pub create_time: i64,
    pub update_time: i64,
}

impl IdentityBindingRow {
    /// The row of a binding.
    pub fn of(binding: &IdentityBinding) -> Self {
        let claims: serde_json::Map<String, serde_json::Value> =
            binding.bound_claims.iter().map(|(c, p)| (c.clone(), serde_json::Value::String(p.clone()))).collect();
        Self {
            workspace_id: binding.name.workspace.as_str().to_owned(),
            id: binding.name.binding.as_str().to_owned(),
            provider_id: binding.provider.as_str().to_owned(),
            bound_claims: serde_json::Value::Object(claims).to_string(),
            role: binding.role.code(),
            allowed_projects: encode_list(
                &binding.allowed_projects.iter().map(ProjectName::as_str).collect::<Vec<_>>(),
            ),
            description: binding.description.clone(),
            create_time: binding.create_time.as_micros(),
            update_time: binding.update_time.as_micros(),
        }
    }

    /// The binding, checked.
    pub fn binding(&self) -> Result<IdentityBinding, StoreError> {
        let claims: std::collections::BTreeMap<String, String> = serde_json::from_str(&self.bound_claims)
            .map_err(|e| corrupt(format!("identity binding {}: bound claims: {e}", self.id)))?;
        Ok(IdentityBinding {
            name: IdentityBindingName {
                workspace: WorkspaceId::parse(&self.workspace_id).map_err(corrupt)?,
                binding: IdentityBindingId::parse(&self.id).map_err(corrupt)?,
            },
            provider: IdentityProviderId::parse(&self.provider_id).map_err(corrupt)?,
            bound_claims: claims.into_iter().collect(),
            role: Role::from_code(self.role).ok_or_else(|| corrupt(format!("role {}", self.role)))?,
            allowed_projects: decode_list(&self.allowed_projects)?
                .iter()
                .map(|p| ProjectName::parse(p).map_err(corrupt))
                .collect::<Result<_, _>>()?,
            description: self.description.clone(),
            create_time: Timestamp::from_micros(self.create_time),
            update_time: Timestamp::from_micros(self.update_time),
        })
    }
}
