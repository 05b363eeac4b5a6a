//! Start-up: loading master keys, checking them against the database before
//! anything is written, opening (and migrating) the database.
//!
//! Order matters: [`crate::store::inspect`] reads the database read-only,
//! the keys are checked against its key-check values, and only then is the
//! database opened for writing and migrated. A wrong key file therefore
//! leaves the database byte-for-byte untouched.

use std::fmt;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::config::{KeySource, MASTER_KEY_ENV, Settings};
use crate::seal::keyring::create_key_file;
use crate::seal::{KeyCheck, KeyError, Keyring, Sealer};
use crate::store::{self, DatabaseFacts, Store, StoreError};

/// Why the server (or a maintenance command) cannot start.
#[derive(Debug)]
pub struct StartupError(pub String);

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

impl From<KeyError> for StartupError {
    fn from(e: KeyError) -> Self {
        Self(e.to_string())
    }
}

impl From<StoreError> for StartupError {
    fn from(e: StoreError) -> Self {
        Self(e.to_string())
    }
}

/// Creates the data directory (mode 0700) if it does not exist.
pub fn ensure_data_dir(dir: &Path) -> Result<(), StartupError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StartupError(format!("cannot create data directory {}: {e}", dir.display())))
}

/// Loads the master keys; in dev mode, creates the key file if it is absent.
pub fn load_keys(settings: &Settings) -> Result<Keyring, StartupError> {
    match &settings.keys {
        KeySource::Environment => {
            let text = zeroize::Zeroizing::new(std::env::var(MASTER_KEY_ENV).unwrap_or_default());
            Ok(Keyring::parse(&text, MASTER_KEY_ENV)?)
        }
        KeySource::File(path) => {
            if settings.dev && !path.exists() {
                ensure_data_dir(path.parent().unwrap_or(Path::new(".")))?;
                let id = create_key_file(path)?;
                tracing::info!(key_file = %path.display(), key_id = %id, "created a master key file (dev mode)");
            }
            Ok(Keyring::load_file(path)?)
        }
        KeySource::None => Err(StartupError(format!(
            "no master key configured. Create one with `pullpassd keys generate --key-file /etc/pullpass/master.key` \
             and pass `--key-file /etc/pullpass/master.key` (or PULLPASS_KEY_FILE), or put the key text in {MASTER_KEY_ENV}. \
             For a local trial, `pullpassd --dev` creates everything itself."
        ))),
    }
}

/// Compares the loaded keys with what the database knows. Reads only.
pub fn verify_keys(facts: &DatabaseFacts, sealer: &Sealer) -> Result<(), StartupError> {
    let origin = sealer.keyring().origin();
    for (kek_id, value) in &facts.key_checks {
        match sealer.verify_key_check(kek_id, value) {
            KeyCheck::Matches => {}
            KeyCheck::Mismatch => {
                return Err(StartupError(format!(
                    "{origin} holds a key `{kek_id}` that is not the key this database was sealed with (wrong key file?); refusing to start, nothing was written"
                )));
            }
            KeyCheck::NotLoaded => {
                let needed = facts.key_ids_in_use.iter().any(|id| id == kek_id)
                    || facts.active_key_id.as_deref() == Some(kek_id.as_str());
                if needed {
                    return Err(StartupError(format!(
                        "the database needs master key `{kek_id}`, which {origin} does not hold (wrong key file?); refusing to start, nothing was written"
                    )));
                }
            }
        }
    }
    for kek_id in &facts.key_ids_in_use {
        if sealer.keyring().get(kek_id).is_none() {
            return Err(StartupError(format!(
                "secrets in the database are sealed under master key `{kek_id}`, which {origin} does not hold; refusing to start"
            )));
        }
    }
    Ok(())
}

/// The opened database and the sealer that matches it.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The store.
    pub store: Store,
    /// The sealer over the verified keys.
    pub sealer: Arc<Sealer>,
}

/// Inspects, verifies, opens and migrates the database, then records
/// key-check values for loaded keys the database did not know yet.
pub async fn open_database(settings: &Settings, keyring: Keyring) -> Result<Opened, StartupError> {
    if let store::Location::Sqlite(_) = &settings.database {
        ensure_data_dir(&settings.data_dir)?;
    }
    let sealer = Sealer::new(keyring);
    let facts = store::inspect(&settings.database).await?.unwrap_or_default();
    verify_keys(&facts, &sealer)?;
    let fault = store::AuditFault::new(settings.fault_audit_fail.clone());
    let store = store::open(&settings.database, fault).await?;
    tracing::info!(database = %settings.database.describe(), "database open");
    if let store::Location::Sqlite(path) = &settings.database {
        restrict_permissions(path);
    }
    let known: Vec<String> = facts.key_checks.iter().map(|(id, _)| id.clone()).collect();
    let mut new_checks = Vec::new();
    for id in sealer.keyring().ids() {
        if !known.iter().any(|k| k == id) {
            let value = sealer.key_check_value(id).map_err(|e| StartupError(e.to_string()))?;
            new_checks.push((id.to_owned(), value));
        }
    }
    let active = sealer.active_key_id().to_owned();
    if !new_checks.is_empty() || facts.active_key_id.as_deref() != Some(active.as_str()) {
        store
            .record_keys(&new_checks, &active)
            .await
            .map_err(|e| StartupError(format!("cannot record master key checks: {e}")))?;
    }
    Ok(Opened { store, sealer: Arc::new(sealer) })
}

/// Makes the database file private to its owner (best effort).
fn restrict_permissions(path: &Path) {
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict database permissions to 0600");
    }
}
