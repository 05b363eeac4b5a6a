//! Maintenance commands of `pullpassd`: master keys, key rotation, backups
//! and root tokens. Each prints its result on standard output.

use std::path::Path;
use std::sync::Arc;

use crate::access;
use crate::config::{KeySource, Settings};
use crate::credentials::unreadable;
use crate::seal::keyring::{append_key, create_key_file};
use crate::seal::{Sealer, SecretContext};
use crate::startup::{self, StartupError};
use crate::store::credentials::RowCursor;
use crate::store::{self, Store};

/// `keys generate`: a new key file with one key.
pub fn keys_generate(path: &Path) -> Result<(), StartupError> {
    let id = create_key_file(path)?;
    println!("created master key file {} (mode 0600) with active key `{id}`", path.display());
    println!("back it up apart from the database: without it, stored secrets cannot be opened");
    Ok(())
}

/// `keys add`: appends a key that becomes the active one.
pub fn keys_add(settings: &Settings) -> Result<String, StartupError> {
    let KeySource::File(path) = &settings.keys else {
        return Err(StartupError(
            "`keys add` needs a key file (--key-file); with PULLPASS_MASTER_KEY, append a new `<id>:<key>` entry yourself".into(),
        ));
    };
    let id = append_key(path)?;
    println!("added master key `{id}` to {}; it is now the active key", path.display());
    Ok(id)
}

/// Options of `keys rotate`.
#[derive(Debug, Clone, Copy)]
pub struct RotateOptions {
    /// Data keys rewrapped per transaction.
    pub batch_size: usize,
    /// Testing hook: abort the process after this many committed batches.
    pub abort_after_batches: Option<usize>,
}

/// `keys rotate`: rewraps every data key under the active master key, one
/// transaction per batch. Safe to interrupt and run again: it continues
/// with what is not yet under the active key.
pub async fn keys_rotate(settings: &Settings, options: RotateOptions) -> Result<(), StartupError> {
    let keyring = startup::load_keys(settings)?;
    let opened = startup::open_database(settings, keyring).await?;
    let active = opened.sealer.active_key_id().to_owned();
    let store = opened.store.clone();
    let count_active = active.clone();
    let pending = store
        .read(move |conn| Ok(store::credentials::count_not_under_key(conn, &count_active)?))
        .await
        .map_err(|e| StartupError(e.to_string()))?;
    println!("rotating {pending} data key(s) to master key `{active}` in batches of {}", options.batch_size);
    let mut done = 0u64;
    let mut batches = 0usize;
    let mut cursor: RowCursor = None;
    let mut unreadable_names: Vec<String> = Vec::new();
    loop {
        let sealer = Arc::clone(&opened.sealer);
        let batch_active = active.clone();
        let size = options.batch_size;
        let batch_cursor = cursor.clone();
        let batch = store
            .write(move |conn| rewrap_batch(conn, &sealer, &batch_active, &batch_cursor, size))
            .await
            .map_err(|e| StartupError(format!("rotation stopped after {done} data key(s): {e}")))?;
        let Some(next) = batch.cursor else { break };
        cursor = Some(next);
        done += batch.rewrapped;
        batches += 1;
        for (name, error) in batch.unreadable {
            eprintln!("pullpassd: skipped {name}: {error}");
            unreadable_names.push(name);
        }
        println!("rotated {done}/{pending}");
        if options.abort_after_batches == Some(batches) {
            eprintln!("fault hook: aborting after {batches} batch(es)");
            std::process::abort();
        }
    }
    let retired: Vec<String> = opened.sealer.keyring().ids().filter(|id| *id != active).map(str::to_owned).collect();
    store.close().await;
    if !unreadable_names.is_empty() {
        return Err(StartupError(format!(
            "{} secret(s) could not be opened and stay under their old key: {}; replace them with UpdateCredential, then run `keys rotate` again",
            unreadable_names.len(),
            unreadable_names.join(", ")
        )));
    }
    println!("done: every data key is wrapped under `{active}`");
    if !retired.is_empty() {
        println!(
            "keys no longer used by this database: {} (remove them from the key file once no backup you keep needs them)",
            retired.join(", ")
        );
    }
    Ok(())
}

/// What one rotation batch did.
struct RotationBatch {
    /// Last row visited; `None` when there was nothing left.
    cursor: RowCursor,
    rewrapped: u64,
    /// Credentials whose secret did not open, with why.
    unreadable: Vec<(String, String)>,
}

fn rewrap_batch(
    conn: &rusqlite::Connection,
    sealer: &Sealer,
    active: &str,
    cursor: &RowCursor,
    size: usize,
) -> Result<RotationBatch, crate::error::Error> {
    let rows = store::credentials::walk(conn, Some(active), cursor, size)?;
    let mut batch = RotationBatch { cursor: None, rewrapped: 0, unreadable: Vec::new() };
    for row in &rows {
        let c = &row.credential;
        let context = SecretContext { name: &c.name, uid: &c.uid, version: c.secret_version };
        match sealer.rewrap(context, &row.sealed) {
            Ok(rewrapped) => {
                if store::credentials::set_wrapped_key(conn, c, &rewrapped)? {
                    batch.rewrapped += 1;
                }
            }
            Err(error) => batch.unreadable.push((c.name.to_string(), unreadable(&c.name, &error).message())),
        }
        batch.cursor = Some((c.name.workspace.to_string(), c.name.credential.to_string()));
    }
    Ok(batch)
}

/// `keys verify`: opens every stored secret and reports those that do not
/// open (moved or altered ciphertext, missing key). Reads only.
pub async fn keys_verify(settings: &Settings) -> Result<(), StartupError> {
    let keyring = startup::load_keys(settings)?;
    let opened = startup::open_database(settings, keyring).await?;
    let mut cursor: RowCursor = None;
    let (mut good, mut bad) = (0u64, Vec::new());
    loop {
        let sealer = Arc::clone(&opened.sealer);
        let page_cursor = cursor.clone();
        let (next, ok, failed) = opened
            .store
            .read(move |conn| {
                let rows = store::credentials::walk(conn, None, &page_cursor, 500)?;
                let mut ok = 0u64;
                let mut failed = Vec::new();
                for row in &rows {
                    let c = &row.credential;
                    let context = SecretContext { name: &c.name, uid: &c.uid, version: c.secret_version };
                    match sealer.open(context, &row.sealed) {
                        Ok(_) => ok += 1,
                        Err(error) => failed.push(unreadable(&c.name, &error).message()),
                    }
                }
                let next = rows
                    .last()
                    .map(|r| (r.credential.name.workspace.to_string(), r.credential.name.credential.to_string()));
                Ok((next, ok, failed))
            })
            .await
            .map_err(|e| StartupError(e.to_string()))?;
        good += ok;
        bad.extend(failed);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    opened.store.close().await;
    for line in &bad {
        println!("UNREADABLE: {line}");
    }
    println!("{good} secret(s) open, {} do not", bad.len());
    if bad.is_empty() { Ok(()) } else { Err(StartupError(format!("{} stored secret(s) cannot be opened", bad.len()))) }
}

/// `keys list`: the loaded keys and how many data keys each wraps.
pub async fn keys_list(settings: &Settings) -> Result<(), StartupError> {
    let keyring = startup::load_keys(settings)?;
    let facts = store::inspect(&settings.database_path())?.unwrap_or_default();
    let active = keyring.active().id().to_owned();
    let counts: Vec<(String, u64)> = if facts.schema_version > 0 {
        let conn =
            rusqlite::Connection::open_with_flags(settings.database_path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| StartupError(e.to_string()))?;
        let mut statement = conn
            .prepare("SELECT secret_kek_id, count(*) FROM credentials GROUP BY 1")
            .map_err(|e| StartupError(e.to_string()))?;
        statement
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .and_then(|rows| rows.collect())
            .map_err(|e| StartupError(e.to_string()))?
    } else {
        Vec::new()
    };
    println!("{:<32} {:>8} {:>12}", "KEY ID", "ACTIVE", "DATA KEYS");
    for id in keyring.ids() {
        let used = counts.iter().find(|(k, _)| k == id).map_or(0, |(_, n)| *n);
        println!("{id:<32} {:>8} {used:>12}", if id == active { "yes" } else { "" });
    }
    for (id, n) in counts.iter().filter(|(k, _)| keyring.get(k).is_none()) {
        println!("{id:<32} {:>8} {n:>12}  <- NOT LOADED: these secrets cannot be opened", "");
    }
    Ok(())
}

/// `backup --to FILE`: an online, consistent copy of the database.
pub fn backup(settings: &Settings, destination: &Path, overwrite: bool) -> Result<(), StartupError> {
    let source = settings.database_path();
    if !source.exists() {
        return Err(StartupError(format!("no database at {}", source.display())));
    }
    if destination.exists() && !overwrite {
        return Err(StartupError(format!("{} exists; pass --force to overwrite it", destination.display())));
    }
    if overwrite {
        let _ = std::fs::remove_file(destination);
    }
    Store::backup_to(&source, destination)?;
    let bytes = std::fs::metadata(destination).map(|m| m.len()).unwrap_or_default();
    println!(
        "backed up {} to {} ({bytes} bytes); the master key is not in it: keep the key file backed up separately",
        source.display(),
        destination.display()
    );
    Ok(())
}

/// `tokens create-root`: a root token for production set-ups.
pub async fn tokens_create_root(settings: &Settings, description: &str) -> Result<(), StartupError> {
    startup::ensure_data_dir(&settings.data_dir)?;
    let store = Store::open(&settings.database_path())?;
    let actor = crate::audit::Actor::command("tokens create-root");
    let (record, token) = access::create_root_token(&store, &Default::default(), &actor, description)
        .await
        .map_err(|e| StartupError(format!("cannot create the root token: {e}")))?;
    store.close().await;
    println!("root token {} (shown once, store it now):", record.resource_name());
    println!("PULLPASS_TOKEN={}", token.expose());
    Ok(())
}

/// Opens the database for audit commands (no master key needed: the audit
/// trail holds no secrets).
fn open_for_audit(settings: &Settings) -> Result<Store, StartupError> {
    let path = settings.database_path();
    if !path.exists() {
        return Err(StartupError(format!("no database at {}", path.display())));
    }
    Ok(Store::open(&path)?)
}

/// `audit verify`.
pub async fn audit_verify(settings: &Settings) -> Result<(), StartupError> {
    let store = open_for_audit(settings)?;
    let result = crate::audit::verify(&store).await.map_err(|e| StartupError(e.to_string()));
    store.close().await;
    let verification = result?;
    match verification.broken {
        None => {
            let head = verification
                .head
                .map(|(seq, hash)| format!("event {seq}, hash {}", crate::audit::chain::hex(&hash)))
                .unwrap_or_else(|| "empty".into());
            println!("audit chain intact: {} event(s) checked; head: {head}", verification.checked);
            Ok(())
        }
        Some(broken) => {
            println!("audit chain BROKEN after {} good event(s): {broken}", verification.checked);
            Err(StartupError(format!("the audit chain is broken: {broken}")))
        }
    }
}

/// `audit head`.
pub async fn audit_head(settings: &Settings) -> Result<(), StartupError> {
    let store = open_for_audit(settings)?;
    let head = crate::audit::head(&store).await.map_err(|e| StartupError(e.to_string()));
    store.close().await;
    let head = head?;
    let json = match head {
        Some((seq, hash)) => serde_json::json!({"seq": seq, "hash": crate::audit::chain::hex(&hash)}),
        None => serde_json::json!({"seq": 0, "hash": crate::audit::chain::hex(&crate::audit::chain::GENESIS)}),
    };
    println!("{json}");
    Ok(())
}

/// `audit prune`.
pub async fn audit_prune(settings: &Settings, retention: std::time::Duration) -> Result<(), StartupError> {
    let store = open_for_audit(settings)?;
    let deleted = crate::audit::prune(&store, retention).await;
    store.close().await;
    let deleted = deleted.map_err(|e| StartupError(e.to_string()))?;
    println!("deleted {deleted} audit event(s) older than {} s", retention.as_secs());
    Ok(())
}
