//! Maintenance commands of `pullpassd`: master keys, key rotation, backups
//! and root tokens. Each prints its result on standard output.

use std::path::Path;

use crate::access;
use crate::backup_file::{self, Protected, Staged};
use crate::config::{KeySource, Settings};
use crate::credentials::unreadable;
use crate::domain::{AccessTokenId, Timestamp};
use crate::seal::keyring::{append_key, create_key_file};
use crate::seal::{Sealer, SecretContext};
use crate::startup::{self, StartupError};
use crate::store::{self, Rewrap, RowCursor, Store};

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
    let pending = store.count_not_under_key(&active).await.map_err(|e| StartupError(e.to_string()))?;
    println!("rotating {pending} data key(s) to master key `{active}` in batches of {}", options.batch_size);
    let mut done = 0u64;
    let mut batches = 0usize;
    let mut cursor: RowCursor = None;
    let mut unreadable_names: Vec<String> = Vec::new();
    loop {
        let batch = rewrap_batch(&store, &opened.sealer, &active, &cursor, options.batch_size)
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
    let resealed = crate::issuer::reseal(&store, &opened.sealer)
        .await
        .map_err(|e| StartupError(format!("resealing the issuer's signing keys: {e}")))?;
    if resealed > 0 {
        println!("resealed {resealed} issuer signing key(s) under `{active}`");
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

/// `keys rotate-signing`: a new issuer signing key, published now and
/// signing after `activate_in`.
pub async fn keys_rotate_signing(settings: &Settings, activate_in: std::time::Duration) -> Result<(), StartupError> {
    if activate_in < std::time::Duration::from_secs(90) {
        eprintln!(
            "pullpassd: warning: the new key signs in {} s; other replicas read the key set every 30 s and clouds cache it for about a minute, so tokens signed before they see it may be refused (the default, 120 s, avoids this)",
            activate_in.as_secs()
        );
    }
    let keyring = startup::load_keys(settings)?;
    let opened = startup::open_database(settings, keyring).await?;
    let rotated = crate::issuer::rotate(&opened.store, &opened.sealer, activate_in).await;
    opened.store.close().await;
    let rotation = rotated.map_err(|e| StartupError(format!("rotating the issuer's signing key: {e}")))?;
    println!(
        "new signing key {} is published now and signs from {}; {} key(s) published (a replaced key stays published until its tokens have expired)",
        rotation.kid,
        rotation.activate_time.to_rfc3339(),
        rotation.published
    );
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

/// Rewraps the next batch of data keys not under `active` (the store keeps
/// only those whose row did not change meanwhile; the rest come again).
async fn rewrap_batch(
    store: &Store,
    sealer: &Sealer,
    active: &str,
    cursor: &RowCursor,
    size: usize,
) -> Result<RotationBatch, crate::error::Error> {
    let rows = store.credentials_page(Some(active), cursor, size).await?;
    let mut batch = RotationBatch { cursor: None, rewrapped: 0, unreadable: Vec::new() };
    let mut rewraps = Vec::with_capacity(rows.len());
    for row in &rows {
        let c = &row.credential;
        let context = SecretContext { name: &c.name, uid: &c.uid, version: c.secret_version };
        match sealer.rewrap(context, &row.sealed) {
            Ok(sealed) => rewraps.push(Rewrap { credential: c.clone(), sealed }),
            Err(error) => batch.unreadable.push((c.name.to_string(), unreadable(&c.name, &error).message())),
        }
        batch.cursor = Some((c.name.workspace.to_string(), c.name.credential.to_string()));
    }
    batch.rewrapped = store.rewrap(&rewraps).await? as u64;
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
        let rows = opened.store.credentials_page(None, &cursor, 500).await.map_err(|e| StartupError(e.to_string()))?;
        for row in &rows {
            let c = &row.credential;
            let context = SecretContext { name: &c.name, uid: &c.uid, version: c.secret_version };
            match opened.sealer.open(context, &row.sealed) {
                Ok(_) => good += 1,
                Err(error) => bad.push(unreadable(&c.name, &error).message()),
            }
        }
        let next =
            rows.last().map(|r| (r.credential.name.workspace.to_string(), r.credential.name.credential.to_string()));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // The issuer's signing keys are sealed with the master keys too.
    let signing = opened.store.signing_keys().await.map_err(|e| StartupError(e.to_string()))?;
    let (mut signing_good, mut signing_bad) = (0u64, Vec::new());
    if let Some(text) = signing {
        for key in crate::issuer::keys::parse(&text).map_err(|e| StartupError(e.to_string()))? {
            match key.open(&opened.sealer) {
                Ok(_) => signing_good += 1,
                Err(error) => signing_bad.push(error.message()),
            }
        }
    }
    opened.store.close().await;
    for line in bad.iter().chain(&signing_bad) {
        println!("UNREADABLE: {line}");
    }
    println!("{good} secret(s) open, {} do not", bad.len());
    if signing_good + signing_bad.len() as u64 > 0 {
        println!("{signing_good} issuer signing key(s) open, {} do not", signing_bad.len());
    }
    bad.extend(signing_bad);
    if bad.is_empty() { Ok(()) } else { Err(StartupError(format!("{} stored secret(s) cannot be opened", bad.len()))) }
}

/// `keys list`: the loaded keys and how many data keys each wraps.
pub async fn keys_list(settings: &Settings) -> Result<(), StartupError> {
    let keyring = startup::load_keys(settings)?;
    let facts = store::inspect(&settings.database).await?.unwrap_or_default();
    let active = keyring.active().id().to_owned();
    let counts = facts.key_usage;
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

/// `backup --to FILE`: an online, consistent copy of the database, as an
/// SQLite file (for PostgreSQL: a snapshot copied with `store copy`).
///
/// The copy is written beside FILE and renamed over it once complete and
/// synced, so a failed backup leaves FILE as it was; FILE is refused when
/// it is (or leads to) one of the server's own files or its data directory.
pub async fn backup(settings: &Settings, destination: &Path, overwrite: bool) -> Result<(), StartupError> {
    backup_file::refuse_protected(destination, &protected_files(settings))?;
    if destination.symlink_metadata().is_ok() && !overwrite {
        return Err(StartupError(format!("{} exists; pass --force to overwrite it", destination.display())));
    }
    let source = match &settings.database {
        store::Location::Sqlite(path) => path.clone(),
        store::Location::Postgres(_) => {
            let staged = Staged::create(destination)?;
            let to = store::Location::Sqlite(staged.path().to_owned());
            let report = store::copy::copy(&settings.database, &to, 1000, |_, _, _| {}).await?;
            store::sqlite::SqliteStore::make_standalone(staged.path())?;
            staged.commit()?;
            let rows: u64 = report.copied.iter().map(|(_, n)| n).sum();
            println!(
                "backed up {} to {} ({rows} rows, one snapshot); the master key is not in it: keep the key file backed up separately",
                settings.database.describe(),
                destination.display()
            );
            println!(
                "restore into an empty database with: pullpassd store copy --from sqlite:{} --to postgres://…",
                destination.display()
            );
            return Ok(());
        }
    };
    if !source.exists() {
        return Err(StartupError(format!("no database at {}", source.display())));
    }
    let staged = Staged::create(destination)?;
    store::sqlite::SqliteStore::backup_to(&source, staged.path())?;
    staged.commit()?;
    let bytes = std::fs::metadata(destination).map(|m| m.len()).unwrap_or_default();
    println!(
        "backed up {} to {} ({bytes} bytes); the master key is not in it: keep the key file backed up separately",
        source.display(),
        destination.display()
    );
    Ok(())
}

/// What a backup must never overwrite: the data directory, the database
/// files in it (and the configured SQLite database, wherever it is), and
/// the master key file.
fn protected_files(settings: &Settings) -> Vec<Protected> {
    let mut protected = vec![Protected::new(&settings.data_dir, "the data directory")];
    if let store::Location::Sqlite(path) = &settings.database {
        protected.extend(Protected::database(path, "the live database"));
    }
    protected.extend(Protected::database(&settings.database_path(), "the data directory's database"));
    if let KeySource::File(path) = &settings.keys {
        protected.push(Protected::new(path, "the master key file"));
    }
    protected.push(Protected::new(settings.data_dir.join(crate::config::DEV_KEY_FILE), "the master key file"));
    protected
}

/// Parses `sqlite:PATH` or `postgres://…` (the password, when not in the
/// URL, from --database-password-file or PGPASSFILE).
fn location(text: &str, settings_password_file: Option<&Path>) -> Result<store::Location, StartupError> {
    if let Some(path) = text.strip_prefix("sqlite:") {
        if path.is_empty() {
            return Err(StartupError("`sqlite:` needs a path, as in sqlite:/var/lib/pullpass/pullpass.db".into()));
        }
        return Ok(store::Location::Sqlite(path.into()));
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return store::postgres::PgConfig::parse(text, settings_password_file)
            .map(|config| store::Location::Postgres(Box::new(config)))
            .map_err(StartupError);
    }
    Err(StartupError(format!(
        "`{}` is not a database: use sqlite:PATH or postgres://USER@HOST/DB",
        crate::domain::ids::shorten(text)
    )))
}

/// `store copy --from A --to B`: moves an installation (see
/// [`store::copy`]), printing progress per table.
pub async fn store_copy(
    settings: &Settings,
    from: &str,
    to: &str,
    batch: usize,
    abort_after_batches: Option<usize>,
) -> Result<(), StartupError> {
    let from = location(from, settings.database_password_file.as_deref())?;
    let to = location(to, settings.database_password_file.as_deref())?;
    println!("copying {} to {} ({batch} rows per transaction)", from.describe(), to.describe());
    let started = std::time::Instant::now();
    let mut last_print = std::time::Instant::now();
    let mut batches = 0;
    let report = store::copy::copy(&from, &to, batch, |table, done, total| {
        batches += 1;
        if abort_after_batches == Some(batches) {
            eprintln!("fault hook: aborting after {batches} batch(es)");
            std::process::abort();
        }
        if done == total || last_print.elapsed() > std::time::Duration::from_secs(2) {
            println!("{table}: {done}/{total}");
            last_print = std::time::Instant::now();
        }
    })
    .await
    .map_err(|e| StartupError(format!("store copy stopped (run the same command again to resume): {e}")))?;
    let rows: u64 = report.copied.iter().map(|(_, n)| n).sum();
    let elapsed = started.elapsed().as_secs_f64();
    if report.resumed {
        println!("resumed an interrupted copy");
    }
    for (table, n) in &report.copied {
        println!("  {table}: {n} row(s) copied");
    }
    println!(
        "done: {rows} row(s) in {elapsed:.1} s; run `pullpassd audit verify` and `pullpassd keys verify` against the destination"
    );
    Ok(())
}

/// `tokens create-root`: a root token for production set-ups, expiring
/// after `ttl` when given.
pub async fn tokens_create_root(
    settings: &Settings,
    description: &str,
    ttl: Option<std::time::Duration>,
) -> Result<(), StartupError> {
    if let store::Location::Sqlite(_) = &settings.database {
        startup::ensure_data_dir(&settings.data_dir)?;
    }
    let store = store::open(&settings.database, Default::default()).await?;
    let actor = crate::audit::Actor::command("tokens create-root");
    let expire_time = ttl.map(|ttl| Timestamp::now().plus(ttl));
    let minted = access::root_tokens::mint(&store, &actor, description, expire_time).await;
    store.close().await;
    let (record, token) = minted.map_err(|e| StartupError(format!("cannot create the root token: {e}")))?;
    match record.expire_time {
        Some(expiry) => println!(
            "root token {} (shown once, store it now; it expires at {}):",
            record.resource_name(),
            expiry.to_rfc3339()
        ),
        None => println!("root token {} (shown once, store it now):", record.resource_name()),
    }
    println!("PULLPASS_TOKEN={}", token.expose());
    Ok(())
}

/// `tokens revoke-root NAME`: revokes a root token (the last usable one
/// too: this is how an operator shuts out a leaked token when it is the
/// only one), audited so running servers and replicas drop it.
pub async fn tokens_revoke_root(settings: &Settings, name: &str) -> Result<(), StartupError> {
    let id = if name.contains('/') { AccessTokenId::from_root_name(name) } else { AccessTokenId::parse(name) }
        .map_err(|e| StartupError(format!("{e} (see `pullpassd tokens list-root`)")))?;
    let store = open_existing(settings).await?;
    let actor = crate::audit::Actor::command("tokens revoke-root");
    let revoked = access::root_tokens::revoke(&store, &actor, &id, false).await;
    let left = store.root_tokens().await;
    store.close().await;
    let resource = format!("rootTokens/{id}");
    let record = match revoked {
        Ok((record, true)) => record,
        Ok((record, false)) => {
            let when = record.revoke_time.map(|t| t.to_rfc3339()).unwrap_or_default();
            return Err(StartupError(format!("{resource} was already revoked (at {when})")));
        }
        Err(crate::error::Error::NotFound { .. }) => {
            return Err(StartupError(format!("there is no root token {resource} (see `pullpassd tokens list-root`)")));
        }
        Err(e) => return Err(StartupError(format!("cannot revoke {resource}: {e}"))),
    };
    println!("revoked {}; servers refuse it within a second", record.resource_name());
    let now = Timestamp::now();
    let usable = left.map(|all| all.iter().filter(|r| access::root_tokens::usable(r, now)).count()).unwrap_or(1);
    if usable == 0 {
        println!(
            "no usable root token is left: mint one with `pullpassd tokens create-root` (it prints the token once)"
        );
    }
    Ok(())
}

/// `tokens list-root`: every root token, never its hash.
pub async fn tokens_list_root(settings: &Settings) -> Result<(), StartupError> {
    let store = open_existing(settings).await?;
    let listed = store.root_tokens().await;
    store.close().await;
    let roots = listed.map_err(|e| StartupError(format!("cannot list root tokens: {e}")))?;
    let time = |t: Option<Timestamp>| t.map_or_else(|| "-".to_owned(), Timestamp::to_rfc3339);
    println!("{:<34} {:<30} {:<30} {:<30} DESCRIPTION", "NAME", "CREATED", "EXPIRES", "REVOKED");
    for r in &roots {
        println!(
            "{:<34} {:<30} {:<30} {:<30} {}",
            r.resource_name(),
            r.create_time.to_rfc3339(),
            time(r.expire_time),
            time(r.revoke_time),
            crate::domain::ids::shorten(&r.description)
        );
    }
    if roots.is_empty() {
        println!("(no root tokens: mint one with `pullpassd tokens create-root`)");
    }
    Ok(())
}

/// Opens an existing database for the commands that need no master key
/// (the audit trail and root tokens hold no secrets: token hashes only).
async fn open_existing(settings: &Settings) -> Result<Store, StartupError> {
    if store::inspect(&settings.database).await?.is_none() {
        return Err(StartupError(format!("no database at {}", settings.database.describe())));
    }
    Ok(store::open(&settings.database, Default::default()).await?)
}

/// `audit verify`.
pub async fn audit_verify(settings: &Settings) -> Result<(), StartupError> {
    let store = open_existing(settings).await?;
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
    let store = open_existing(settings).await?;
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
    let store = open_existing(settings).await?;
    let pruned = crate::audit::prune(&store, retention).await;
    store.close().await;
    let pruned = pruned.map_err(|e| StartupError(e.to_string()))?;
    println!("deleted {} audit event(s) older than {} s", pruned.deleted, retention.as_secs());
    if pruned.kept_older > 0 {
        println!(
            "kept {} older event(s) that come after a newer one in the chain (event times are not in sequence order); a later prune deletes them",
            pruned.kept_older
        );
    }
    Ok(())
}
