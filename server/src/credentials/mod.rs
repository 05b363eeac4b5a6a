//! Credential management: create, read, list, update, delete and import,
//! with every rule applied before anything is sealed or stored.
//!
//! * [`spec`]: per-field and per-provider rules.
//! * [`filter`]: the `ListCredentials` filter grammar.
//! * [`docker_config`]: reading a docker `config.json`.
//!
//! Secrets arrive as [`SecretBytes`], are sealed at once, and are stored
//! only sealed. Nothing here returns a secret; [`Credentials::open_secret`]
//! is for the broker alone.

pub mod docker_config;
pub mod filter;
pub mod health;
pub mod spec;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

use crate::audit::Actor;
use crate::changes::{Change, ChangeFeed};
use crate::domain::credential::{ProviderSettings, StoredCredential};
use crate::domain::{Credential, CredentialId, CredentialName, CredentialUid, Timestamp, WorkspaceId};
use crate::error::Error;
use crate::paging::{Page, PageTokens, page_size};
use crate::seal::{SealError, Sealer, SecretContext};
use crate::secret::SecretBytes;
use crate::store::{Replaced, Store};
pub use spec::{CredentialInput, CredentialSpec};

/// A credential as saved, with the rewrites made to the input.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The stored metadata.
    pub credential: Credential,
    /// Human-readable notes on how the input was normalized.
    pub normalizations: Vec<String>,
}

/// The outcome of one docker-config entry.
#[derive(Debug)]
pub struct ImportResult {
    /// The entry's key as written.
    pub config_key: String,
    /// What was created, or why not.
    pub outcome: Result<Saved, Error>,
}

/// Tries of an update that raced other changes of the same credential.
const UPDATE_ATTEMPTS: usize = 5;

/// Fields `UpdateCredential` may change.
pub const UPDATABLE_FIELDS: &[&str] = &[
    "registry_server",
    "username",
    "secret",
    "allowed_projects",
    "allow_passthrough",
    "description",
    "token_realm_allowlist",
    "ca_bundle_pem",
    "expire_time",
    "aws_role",
    "azure",
    "google_federation",
    "quay_robot",
];

/// The fields of the `provider_settings` oneof.
const SETTINGS_FIELDS: [&str; 4] = ["aws_role", "azure", "google_federation", "quay_robot"];

/// The credential service.
#[derive(Clone)]
pub struct Credentials {
    store: Store,
    sealer: Arc<Sealer>,
    pages: Arc<PageTokens>,
    changes: ChangeFeed,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The service over `store`, sealing with `sealer`, announcing changes
    /// on `changes`.
    pub fn new(store: Store, sealer: Arc<Sealer>, pages: Arc<PageTokens>, changes: ChangeFeed) -> Self {
        Self { store, sealer, pages, changes }
    }

    fn changed(&self, name: &CredentialName) {
        self.changes.publish(Change::Credential(name));
    }

    /// Validates, seals and stores a new credential.
    pub async fn create(
        &self,
        actor: &Actor,
        workspace: WorkspaceId,
        id: CredentialId,
        input: CredentialInput,
    ) -> Result<Saved, Error> {
        let spec = spec::validate(input, "credential")?;
        let name = CredentialName { workspace, credential: id };
        let stored = self.seal_new(name, &spec)?;
        let credential = stored.credential.clone();
        let event =
            actor.event("CreateCredential", credential.name.workspace.as_str(), &credential.name.to_string(), 0);
        let workspace = credential.name.workspace.clone();
        self.store.insert_credentials(&workspace, &[(stored, event)], false).await?;
        self.changed(&credential.name);
        Ok(Saved { credential, normalizations: spec.normalizations })
    }

    /// The sealer (the broker seals leases it shares with other replicas).
    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// The store (for the broker's index).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One credential with its sealed secret (for the broker).
    pub async fn get_stored(&self, name: CredentialName) -> Result<StoredCredential, Error> {
        match self.store.credential(&name).await? {
            Some(stored) => Ok(stored),
            None => Err(self.not_found(&name).await),
        }
    }

    /// One credential's metadata.
    pub async fn get(&self, name: CredentialName) -> Result<Credential, Error> {
        self.get_stored(name).await.map(|stored| stored.credential)
    }

    /// NOT_FOUND naming the workspace when it is the workspace that is
    /// missing.
    async fn not_found(&self, name: &CredentialName) -> Error {
        match self.store.workspace(&name.workspace).await {
            Ok(None) => Error::not_found(name.workspace.name()),
            _ => Error::not_found(name.to_string()),
        }
    }

    /// A page of a workspace's credentials.
    pub async fn list(
        &self,
        workspace: WorkspaceId,
        requested_page_size: i32,
        page_token: &str,
        filter: &str,
    ) -> Result<Page<Credential>, Error> {
        let size = page_size(requested_page_size)?;
        let filter = filter::parse(filter)?;
        let query = format!("credentials|{}|{}", workspace.name(), filter::canonical(&filter));
        let after = self.pages.decode(&query, page_token)?;
        let fetched = self
            .store
            .credentials(&workspace, &filter, after.as_deref(), size + 1)
            .await?
            .ok_or_else(|| Error::not_found(workspace.name()))?;
        Ok(Page::from_fetched(fetched, size, &self.pages, &query, |c| c.name.credential.to_string()))
    }

    /// Applies the fields named in `mask` (or, without a mask, every field
    /// given a non-default value). Replacing the secret bumps its version.
    pub async fn update(
        &self,
        actor: &Actor,
        name: CredentialName,
        input: CredentialInput,
        mask: Option<Vec<String>>,
    ) -> Result<Saved, Error> {
        let fields = update_fields(&input, mask)?;
        // Read, merge, validate and seal outside the store; the store
        // replaces the row only if nobody changed it meanwhile (else: again).
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get_stored(name.clone()).await?;
            if current.credential.provider == crate::domain::Provider::Google
                && fields.contains("username")
                && !fields.contains("secret")
            {
                return Err(Error::invalid(
                    "update_mask",
                    "the user name of a GOOGLE credential comes from its key's `client_email`; replace the secret instead",
                ));
            }
            let merged = merge(&current.credential, input.clone(), &fields);
            let replaces_secret = merged.secret.is_some();
            let spec = spec::validate(merged, "credential")?;
            // Strictly later than the last change even if the clock stepped
            // back: the broker's lease cache keys on it.
            let now = Timestamp::now().max(current.credential.update_time.plus(Duration::from_micros(1)));
            let mut credential = apply(&current.credential, &spec, now);
            let sealed = if replaces_secret && spec.secret.is_some() {
                credential.secret_version = current.credential.secret_version + 1;
                seal(&self.sealer, &credential, spec.secret.as_ref())?
            } else {
                current.sealed.clone()
            };
            let replacement = StoredCredential { credential, sealed };
            let event = actor.event("UpdateCredential", name.workspace.as_str(), &name.to_string(), 0);
            match self.store.replace_credential(&current.credential, &replacement, &[event]).await? {
                Replaced::Done => {
                    self.changed(&name);
                    return Ok(Saved { credential: replacement.credential, normalizations: spec.normalizations });
                }
                Replaced::Stale => continue,
                Replaced::Missing => return Err(self.not_found(&name).await),
            }
        }
        Err(Error::Unavailable {
            reason: "CONCURRENT_UPDATES",
            message: format!("{name} kept changing while this update was applied; retry"),
            retry_after: None,
        })
    }

    /// Stores `expiry`, which the registry's owner reported for the secret
    /// `tested` holds, as the credential's `expire_time`: only while it is
    /// still that credential with that secret (same uid and secret
    /// version), checked again by the store's compare-and-set, so a secret
    /// replaced meanwhile never gets the old one's expiry. Audited as
    /// `UpdateCredential` by `actor`. False when it changed or went away.
    pub async fn record_learned_expiry(
        &self,
        actor: &Actor,
        tested: &Credential,
        expiry: Timestamp,
    ) -> Result<bool, Error> {
        let name = &tested.name;
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(current) = self.store.credential(name).await? else { return Ok(false) };
            let same =
                current.credential.uid == tested.uid && current.credential.secret_version == tested.secret_version;
            if !same {
                return Ok(false);
            }
            if current.credential.expire_time == Some(expiry) {
                return Ok(true);
            }
            let now = Timestamp::now().max(current.credential.update_time.plus(Duration::from_micros(1)));
            let credential = Credential { expire_time: Some(expiry), update_time: now, ..current.credential.clone() };
            let replacement = StoredCredential { credential, sealed: current.sealed.clone() };
            let event = actor.event("UpdateCredential", name.workspace.as_str(), &name.to_string(), 0);
            match self.store.replace_credential(&current.credential, &replacement, &[event]).await? {
                Replaced::Done => {
                    self.changed(name);
                    return Ok(true);
                }
                Replaced::Stale => continue,
                Replaced::Missing => return Ok(false),
            }
        }
        Err(Error::Unavailable {
            reason: "CONCURRENT_UPDATES",
            message: format!("{name} kept changing while its expiry was recorded; retry"),
            retry_after: None,
        })
    }

    /// Deletes a credential and its sealed secret.
    pub async fn delete(&self, actor: &Actor, name: CredentialName) -> Result<(), Error> {
        let event = actor.event("DeleteCredential", name.workspace.as_str(), &name.to_string(), 0);
        if !self.store.delete_credential(&name, &[event]).await? {
            return Err(self.not_found(&name).await);
        }
        self.changed(&name);
        Ok(())
    }

    /// Creates one credential per usable entry of a docker `config.json`, in
    /// one transaction; reports every entry.
    pub async fn import_docker_config(
        &self,
        actor: &Actor,
        workspace: WorkspaceId,
        config_json: &str,
        name_prefix: &str,
        validate_only: bool,
    ) -> Result<Vec<ImportResult>, Error> {
        check_name_prefix(name_prefix)?;
        let mut results = Vec::new();
        let mut to_store = Vec::new();
        let mut seen_ids = HashSet::new();
        for entry in docker_config::read(config_json)? {
            let outcome = entry.outcome.and_then(|(server, input)| {
                let id = CredentialId::parse(&docker_config::credential_id_for(name_prefix, &server))
                    .map_err(|e| Error::invalid("name_prefix", e))?;
                if !seen_ids.insert(id.clone()) {
                    return Err(Error::already_exists(format!(
                        "{}/credentials/{id} (another entry of this document has the same registry)",
                        workspace.name()
                    )));
                }
                let spec = spec::validate(input, "config_json")?;
                let name = CredentialName { workspace: workspace.clone(), credential: id };
                let stored = self.seal_new(name, &spec)?;
                Ok((stored, spec.normalizations))
            });
            match outcome {
                Ok((stored, normalizations)) => {
                    results.push(ImportResult {
                        config_key: entry.config_key,
                        outcome: Ok(Saved { credential: stored.credential.clone(), normalizations }),
                    });
                    to_store.push((results.len() - 1, stored));
                }
                Err(error) => results.push(ImportResult { config_key: entry.config_key, outcome: Err(error) }),
            }
        }
        let taken: Vec<bool> = if validate_only {
            if self.store.workspace(&workspace).await?.is_none() {
                return Err(Error::not_found(workspace.name()));
            }
            let mut taken = Vec::with_capacity(to_store.len());
            for (_, stored) in &to_store {
                taken.push(self.store.credential(&stored.credential.name).await?.is_some());
            }
            taken
        } else {
            let rows: Vec<(StoredCredential, crate::domain::audit::AuditEvent)> = to_store
                .iter()
                .map(|(_, stored)| {
                    let name = stored.credential.name.to_string();
                    (stored.clone(), actor.event("ImportDockerConfig", workspace.as_str(), &name, 0))
                })
                .collect();
            self.store
                .insert_credentials(&workspace, &rows, true)
                .await?
                .into_iter()
                .map(|inserted| !inserted)
                .collect()
        };
        for ((index, stored), taken) in to_store.iter().zip(taken) {
            if taken {
                results[*index].outcome = Err(Error::already_exists(stored.credential.name.to_string()));
            }
        }
        if !validate_only {
            for saved in results.iter().filter_map(|r| r.outcome.as_ref().ok()) {
                self.changed(&saved.credential.name);
            }
        }
        Ok(results)
    }

    /// Opens the sealed secret of a stored credential. For the broker only.
    pub fn open_secret(&self, stored: &StoredCredential) -> Result<SecretBytes, Error> {
        let c = &stored.credential;
        self.sealer
            .open(SecretContext { name: &c.name, uid: &c.uid, version: c.secret_version }, &stored.sealed)
            .map_err(|e| unreadable(&c.name, &e))
    }

    fn seal_new(&self, name: CredentialName, spec: &CredentialSpec) -> Result<StoredCredential, Error> {
        let now = Timestamp::now();
        let mut uid = [0u8; 16];
        SystemRandom::new().fill(&mut uid).map_err(|_| Error::internal("the system random generator failed"))?;
        let template = Credential {
            name,
            uid: CredentialUid(uid),
            provider: spec.provider,
            registry: spec.registry.clone(),
            username: String::new(),
            secret_version: u64::from(spec.secret.is_some()),
            settings: ProviderSettings::None,
            allowed_projects: Vec::new(),
            allow_passthrough: false,
            token_realm_allowlist: Vec::new(),
            ca_bundle_pem: String::new(),
            description: String::new(),
            create_time: now,
            update_time: now,
            last_used_time: None,
            expire_time: None,
            last_failure: None,
        };
        let credential = apply(&template, spec, now);
        // A keyless credential stores a sealed empty secret under version
        // 0, so every row has the same shape for key rotation.
        let empty = SecretBytes::new(Vec::new());
        let sealed = seal(&self.sealer, &credential, Some(spec.secret.as_ref().unwrap_or(&empty)))?;
        Ok(StoredCredential { credential, sealed })
    }
}

fn seal(
    sealer: &Sealer,
    credential: &Credential,
    secret: Option<&SecretBytes>,
) -> Result<crate::domain::SealedSecret, Error> {
    let secret = secret.ok_or_else(|| Error::invalid("credential.secret", "is required"))?;
    let context = SecretContext { name: &credential.name, uid: &credential.uid, version: credential.secret_version };
    sealer.seal(context, secret).map_err(|e| Error::internal(format!("sealing failed: {e}")))
}

/// A sealed secret that does not open: INTERNAL naming the credential.
pub fn unreadable(name: &CredentialName, error: &SealError) -> Error {
    Error::FailedPrecondition {
        reason: pullpass::reason::SEALED_SECRET_UNREADABLE,
        message: format!("the stored secret of {name} cannot be opened: it {error}; replace it with UpdateCredential"),
    }
}

/// Copies `spec` onto `base`, keeping identity and creation time.
fn apply(base: &Credential, spec: &CredentialSpec, now: Timestamp) -> Credential {
    Credential {
        name: base.name.clone(),
        uid: base.uid,
        provider: spec.provider,
        registry: spec.registry.clone(),
        username: spec.username.clone(),
        secret_version: base.secret_version,
        settings: spec.settings.clone(),
        allowed_projects: spec.allowed_projects.clone(),
        allow_passthrough: spec.allow_passthrough,
        token_realm_allowlist: spec.token_realm_allowlist.clone(),
        ca_bundle_pem: spec.ca_bundle_pem.clone(),
        description: spec.description.clone(),
        create_time: base.create_time,
        update_time: now,
        last_used_time: base.last_used_time,
        expire_time: spec.expire_time,
        last_failure: base.last_failure,
    }
}

/// The set of fields an update changes: the mask's, or (without one) every
/// field the input sets to a non-default value. An empty secret in the input
/// counts as not given.
fn update_fields(input: &CredentialInput, mask: Option<Vec<String>>) -> Result<HashSet<&'static str>, Error> {
    let Some(paths) = mask.filter(|paths| !paths.is_empty()) else {
        let mut implied = HashSet::new();
        let given = [
            ("registry_server", !input.registry_server.is_empty()),
            ("username", !input.username.is_empty()),
            ("secret", input.secret.as_ref().is_some_and(|s| !s.is_empty())),
            ("allowed_projects", !input.allowed_projects.is_empty()),
            ("allow_passthrough", input.allow_passthrough),
            ("description", !input.description.is_empty()),
            ("token_realm_allowlist", !input.token_realm_allowlist.is_empty()),
            ("ca_bundle_pem", !input.ca_bundle_pem.is_empty()),
            ("expire_time", input.expire_time.is_some()),
            ("aws_role", matches!(input.settings, ProviderSettings::AwsRole(_))),
            ("azure", matches!(input.settings, ProviderSettings::Azure(_))),
            ("google_federation", matches!(input.settings, ProviderSettings::GoogleFederation(_))),
            ("quay_robot", matches!(input.settings, ProviderSettings::QuayRobot(_))),
        ];
        implied.extend(given.into_iter().filter(|(_, set)| *set).map(|(field, _)| field));
        if implied.is_empty() {
            return Err(Error::invalid("update_mask", "nothing to update: set fields or name them in update_mask"));
        }
        return Ok(implied);
    };
    let mut fields = HashSet::new();
    for path in &paths {
        let path = path.strip_prefix("credential.").unwrap_or(path);
        if path == "*" {
            fields.extend(
                UPDATABLE_FIELDS
                    .iter()
                    .copied()
                    .filter(|f| *f != "secret" || input.secret.as_ref().is_some_and(|s| !s.is_empty())),
            );
        } else if let Some(field) = UPDATABLE_FIELDS.iter().find(|f| **f == path) {
            fields.insert(*field);
        } else if path == "provider" || path == "name" {
            return Err(Error::invalid(
                "update_mask",
                format!("`{path}` cannot be changed; create a new credential instead"),
            ));
        } else {
            return Err(Error::invalid(
                "update_mask",
                format!(
                    "unknown or read-only field `{}`; updatable: {}",
                    crate::domain::ids::shorten(path),
                    UPDATABLE_FIELDS.join(", ")
                ),
            ));
        }
    }
    Ok(fields)
}

/// The input the merged credential would have: masked fields from the
/// request, the rest from the current credential. The secret is present only
/// when it is being replaced.
fn merge(current: &Credential, mut input: CredentialInput, fields: &HashSet<&'static str>) -> CredentialInput {
    let keep = |field: &str| !fields.contains(field);
    if keep("registry_server") {
        input.registry_server = current.registry.to_string();
    }
    if keep("username") {
        // A GOOGLE user name comes from the key: derive it again from a new one.
        let rederive = current.provider == crate::domain::Provider::Google && !keep("secret");
        input.username = if rederive { String::new() } else { current.username.clone() };
    }
    if keep("secret") {
        input.secret = None;
    } else if input.secret.is_none() {
        input.secret = Some(SecretBytes::new(Vec::new()));
    }
    if keep("allowed_projects") {
        input.allowed_projects = current.allowed_projects.iter().map(ToString::to_string).collect();
    }
    if keep("allow_passthrough") {
        input.allow_passthrough = current.allow_passthrough;
    }
    if keep("description") {
        input.description = current.description.clone();
    }
    if keep("token_realm_allowlist") {
        input.token_realm_allowlist = current.token_realm_allowlist.iter().map(ToString::to_string).collect();
    }
    if keep("ca_bundle_pem") {
        input.ca_bundle_pem = current.ca_bundle_pem.clone();
    }
    if keep("expire_time") {
        input.expire_time = current.expire_time;
    }
    // The oneof is one value: naming any of its fields replaces it with
    // what the request set (nothing clears it).
    if SETTINGS_FIELDS.iter().all(|f| keep(f)) {
        input.settings = current.settings.clone();
    }
    input.secret_stored = current.secret_set();
    input.provider = current.provider.code();
    input
}

/// Checks an import's `name_prefix`.
fn check_name_prefix(prefix: &str) -> Result<(), Error> {
    let ok = prefix.len() <= 32 && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(Error::invalid("name_prefix", "use at most 32 letters, digits, `-` and `_`")) }
}
