//! The SQLite backend (the default): schema migrations, one
//! group-committing writer thread, a small pool of reader connections, and
//! typed queries per table.
//!
//! * Every write runs on the writer thread inside a transaction and is on
//!   disk (WAL, `synchronous=FULL`, both checked at open) before its caller
//!   hears back. Concurrent writes share one commit (group commit); each runs
//!   in its own savepoint, so one failing write does not undo another.
//! * [`inspect`] reads a database file without writing a byte, so start-up
//!   checks (schema version, master keys) happen before anything is changed.
//! * [`changes`] follows the token revocations other processes (offline
//!   commands) commit to the same file.

pub mod audit;
pub mod changes;
pub mod credentials;
pub mod identities;
pub mod meta;
pub(crate) mod migrations;
pub mod sessions;
pub mod tokens;
pub mod workspaces;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

pub use migrations::SCHEMA_VERSION;
use writer::Writer;

use super::{
    AuditFault, AuditFilter, Backend, ChainLink, CredentialFailureRecord, CredentialFilter, CredentialHealth,
    CredentialUse, DatabaseFacts, ProviderDeletion, Pruned, Replaced, Rewrap, RootRevocation, RowCursor, StoreError,
    WorkspaceDeletion,
};
use crate::domain::audit::{AuditEvent, AuditRecord};
use crate::domain::credential::StoredCredential;
use crate::domain::session::{ConsoleSession, SessionKind};
use crate::domain::{
    AccessTokenId, AccessTokenRecord, Credential, CredentialName, IdentityBinding, IdentityBindingName,
    IdentityProvider, IdentityProviderId, Timestamp, Workspace, WorkspaceId,
};
use crate::error::Error;

/// Number of reader connections.
const READERS: usize = 4;

/// Reads the facts of an existing database read-only. `None` if the file does
/// not exist. Refuses a database newer than this binary.
pub fn inspect(path: &Path) -> Result<Option<DatabaseFacts>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let sidecars = [sidecar(path, "-wal"), sidecar(path, "-shm")];
    let existed = sidecars.iter().map(|p| p.exists()).collect::<Vec<_>>();
    let facts = read_facts(path);
    // Reading a WAL database creates empty -wal/-shm files; remove the ones
    // this call created so a refused start-up leaves the directory as it was.
    let wal_is_empty = std::fs::metadata(&sidecars[0]).map(|m| m.len() == 0).unwrap_or(true);
    if !existed[0] && !existed[1] && wal_is_empty {
        for file in &sidecars {
            let _ = std::fs::remove_file(file);
        }
    }
    facts
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn read_facts(path: &Path) -> Result<Option<DatabaseFacts>, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    let schema_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if schema_version > SCHEMA_VERSION {
        return Err(StoreError::TooNew { found: schema_version, supported: SCHEMA_VERSION });
    }
    if schema_version == 0 {
        return Ok(Some(DatabaseFacts::default()));
    }
    Ok(Some(DatabaseFacts {
        schema_version,
        key_checks: meta::key_checks(&conn)?,
        active_key_id: meta::get(&conn, super::ACTIVE_KEY_ID)?,
        ..DatabaseFacts::with_key_usage(credentials::key_usage(&conn)?)
    }))
}

/// The SQLite backend; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
    fault: AuditFault,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, and checks that
    /// WAL and `synchronous=FULL` are in effect.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, AuditFault::default())
    }

    /// Like [`SqliteStore::open`], with the audit fault hook.
    pub fn open_with(path: &Path, fault: AuditFault) -> Result<Self, StoreError> {
        let mut writer_conn = open_connection(path)?;
        migrations::refuse_newer(&writer_conn)?;
        enable_durability(&writer_conn)?;
        migrations::migrate(&mut writer_conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = open_connection(path)?;
            conn.pragma_update(None, "query_only", true)?;
            readers.push(conn);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Writer::start(writer_conn)?,
                readers: Mutex::new(readers),
                reader_permits: Semaphore::new(READERS),
                fault,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `job` in the next group commit and returns once it is durable.
    /// If `job` fails, its changes are rolled back and its error returned.
    pub async fn write<T, F>(&self, job: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.writer.submit(job).await
    }

    /// Runs `job` on a reader connection (a consistent snapshot of committed
    /// data) on the blocking thread pool.
    pub async fn read<T, F>(&self, job: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self.inner.reader_permits.acquire().await.map_err(|_| Error::from(StoreError::Closed))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let conn = inner.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(conn) = conn else { return Err(StoreError::Closed.into()) };
            let result = job(&conn);
            inner.readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|e| Error::internal(format!("database reader task failed: {e}")))?
    }

    /// Writes a consistent copy of the live database into `destination` (an
    /// empty file the caller made, and renames into place once this
    /// returns) using SQLite's online backup API (other connections keep
    /// working). The copy is one self-contained file.
    pub fn backup_to(source: &Path, destination: &Path) -> Result<(), StoreError> {
        let from =
            Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        from.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut to = Connection::open(destination)?;
        {
            let backup = rusqlite::backup::Backup::new(&from, &mut to)?;
            backup.run_to_completion(256, std::time::Duration::from_millis(5), None)?;
        }
        to.pragma_update(None, "journal_mode", "DELETE")?;
        Ok(())
    }

    /// Makes the database at `path` one self-contained file: its WAL
    /// checkpointed and removed, rollback-journal mode (so the file alone,
    /// renamed or copied, holds everything).
    pub fn make_standalone(path: &Path) -> Result<(), StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(StoreError::NotDurable(format!("could not leave WAL mode (journal_mode is `{mode}`)")));
        }
        Ok(())
    }
}

/// Opens a connection with the pragmas every connection needs.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Switches the database to WAL and verifies WAL + `synchronous=FULL`.
fn enable_durability(conn: &Connection) -> Result<(), StoreError> {
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotDurable(format!(
            "journal_mode is `{mode}`, not `wal` (is the data directory on a file system without shared memory?)"
        )));
    }
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if synchronous != 2 {
        return Err(StoreError::NotDurable(format!("synchronous is {synchronous}, not 2 (FULL)")));
    }
    Ok(())
}

impl SqliteStore {
    /// The events' chain, appended after the head, in the caller's
    /// transaction (the fault hook checked first).
    fn append(&self, conn: &Connection, events: &[AuditEvent]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        self.inner.fault.check(events)?;
        let head = match audit::head(conn)? {
            Some(head) => Some(head),
            None => checkpoint(conn)?,
        };
        for ((seq, prev, hash), event) in super::chain_links(head, events).iter().zip(events) {
            audit::insert(conn, *seq, event, prev, hash).map_err(|e| {
                tracing::error!(error = %e, "audit append failed");
                super::audit_unavailable()
            })?;
        }
        Ok(())
    }

    /// Runs `job` with this store's appender in the next group commit.
    async fn write_with<T, F>(&self, job: F) -> Result<T, Error>
    where
        F: FnOnce(&SqliteStore, &Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        self.write(move |conn| job(&this, conn)).await
    }
}

fn checkpoint(conn: &Connection) -> Result<Option<ChainLink>, StoreError> {
    meta::get(conn, super::CHECKPOINT_KEY)?.map(|text| super::parse_checkpoint(&text)).transpose()
}

fn conflict_is(error: StoreError, taken: Error) -> Error {
    match error {
        StoreError::Conflict => taken,
        other => other.into(),
    }
}

#[async_trait]
impl Backend for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }

    async fn create_workspace(&self, workspace: &Workspace, events: &[AuditEvent]) -> Result<(), Error> {
        let (workspace, events) = (workspace.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            workspaces::insert(conn, &workspace)
                .map_err(|e| conflict_is(e, Error::already_exists(workspace.id.name())))?;
            this.append(conn, &events)
        })
        .await
    }

    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, Error> {
        let id = id.clone();
        self.read(move |conn| Ok(workspaces::get(conn, &id)?)).await
    }

    async fn workspaces(&self, after: Option<&str>, limit: usize) -> Result<Vec<Workspace>, Error> {
        let after = after.map(str::to_owned);
        self.read(move |conn| Ok(workspaces::list(conn, after.as_deref(), limit)?)).await
    }

    async fn delete_workspace(
        &self,
        id: &WorkspaceId,
        force: bool,
        events: &[AuditEvent],
    ) -> Result<WorkspaceDeletion, Error> {
        let (id, events) = (id.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if !workspaces::exists(conn, &id)? {
                return Ok(WorkspaceDeletion::Missing);
            }
            let (credentials, tokens) = workspaces::count_children(conn, &id)?;
            if !force && credentials + tokens > 0 {
                return Ok(WorkspaceDeletion::NotEmpty { credentials, tokens });
            }
            workspaces::delete(conn, &id)?;
            this.append(conn, &events)?;
            Ok(WorkspaceDeletion::Deleted)
        })
        .await
    }

    async fn insert_credentials(
        &self,
        workspace: &WorkspaceId,
        rows: &[(StoredCredential, AuditEvent)],
        skip_taken: bool,
    ) -> Result<Vec<bool>, Error> {
        let (workspace, rows) = (workspace.clone(), rows.to_vec());
        self.write_with(move |this, conn| {
            if !workspaces::exists(conn, &workspace)? {
                return Err(Error::not_found(workspace.name()));
            }
            let mut inserted = Vec::with_capacity(rows.len());
            for (stored, event) in &rows {
                match credentials::insert(conn, stored) {
                    Ok(()) => {
                        this.append(conn, std::slice::from_ref(event))?;
                        inserted.push(true);
                    }
                    Err(StoreError::Conflict) if skip_taken => inserted.push(false),
                    Err(e) => return Err(conflict_is(e, Error::already_exists(stored.credential.name.to_string()))),
                }
            }
            Ok(inserted)
        })
        .await
    }

    async fn credential(&self, name: &CredentialName) -> Result<Option<StoredCredential>, Error> {
        let name = name.clone();
        self.read(move |conn| Ok(credentials::get(conn, &name)?)).await
    }

    async fn credentials(
        &self,
        workspace: &WorkspaceId,
        filter: &CredentialFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Credential>>, Error> {
        let (workspace, filter, after) = (workspace.clone(), filter.clone(), after.map(str::to_owned));
        self.read(move |conn| {
            if !workspaces::exists(conn, &workspace)? {
                return Ok(None);
            }
            Ok(Some(credentials::list(conn, &workspace, &filter, after.as_deref(), limit)?))
        })
        .await
    }

    async fn workspace_credentials(&self, workspace: &WorkspaceId) -> Result<Option<Vec<StoredCredential>>, Error> {
        let workspace = workspace.clone();
        self.read(move |conn| {
            if !workspaces::exists(conn, &workspace)? {
                return Ok(None);
            }
            Ok(Some(credentials::in_workspace(conn, &workspace)?))
        })
        .await
    }

    async fn replace_credential(
        &self,
        read: &Credential,
        replacement: &StoredCredential,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error> {
        let (read, replacement, events) = (read.clone(), replacement.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            let Some(current) = credentials::get(conn, &read.name)? else { return Ok(Replaced::Missing) };
            if current.credential.uid != read.uid {
                return Ok(Replaced::Missing);
            }
            if current.credential.update_time != read.update_time {
                return Ok(Replaced::Stale);
            }
            if !credentials::replace(conn, &replacement)? {
                return Ok(Replaced::Missing);
            }
            this.append(conn, &events)?;
            Ok(Replaced::Done)
        })
        .await
    }

    async fn delete_credential(&self, name: &CredentialName, events: &[AuditEvent]) -> Result<bool, Error> {
        let (name, events) = (name.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if !credentials::delete(conn, &name)? {
                return Ok(false);
            }
            this.append(conn, &events)?;
            Ok(true)
        })
        .await
    }

    async fn insert_identity_provider(&self, provider: &IdentityProvider, events: &[AuditEvent]) -> Result<(), Error> {
        let (provider, events) = (provider.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if identities::provider_exists(conn, &provider.id)? {
                return Err(Error::already_exists(provider.id.name()));
            }
            identities::insert_provider(conn, &provider)
                .map_err(|e| conflict_is(e, super::issuer_taken(&provider.issuer)))?;
            this.append(conn, &events)
        })
        .await
    }

    async fn replace_identity_provider(
        &self,
        read_update_time: Timestamp,
        provider: &IdentityProvider,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error> {
        let (provider, events) = (provider.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if !identities::provider_exists(conn, &provider.id)? {
                return Ok(Replaced::Missing);
            }
            let replaced = identities::replace_provider(conn, read_update_time, &provider)
                .map_err(|e| conflict_is(e, super::issuer_taken(&provider.issuer)))?;
            if !replaced {
                return Ok(Replaced::Stale);
            }
            this.append(conn, &events)?;
            Ok(Replaced::Done)
        })
        .await
    }

    async fn identity_providers(&self) -> Result<Vec<IdentityProvider>, Error> {
        self.read(|conn| Ok(identities::providers(conn)?)).await
    }

    async fn delete_identity_provider(
        &self,
        id: &IdentityProviderId,
        force: bool,
        events: &[AuditEvent],
    ) -> Result<ProviderDeletion, Error> {
        let (id, events) = (id.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if !identities::provider_exists(conn, &id)? {
                return Ok(ProviderDeletion::Missing);
            }
            let bindings = identities::bindings_of_provider(conn, &id)?;
            if bindings > 0 && !force {
                return Ok(ProviderDeletion::InUse { bindings });
            }
            let bindings = identities::delete_provider(conn, &id)?;
            this.append(conn, &events)?;
            Ok(ProviderDeletion::Deleted { bindings })
        })
        .await
    }

    async fn insert_identity_binding(&self, binding: &IdentityBinding, events: &[AuditEvent]) -> Result<(), Error> {
        let (binding, events) = (binding.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if !workspaces::exists(conn, &binding.name.workspace)? {
                return Err(Error::not_found(binding.name.workspace.name()));
            }
            if !identities::provider_exists(conn, &binding.provider)? {
                return Err(Error::not_found(binding.provider.name()));
            }
            if identities::binding_exists(conn, &binding.name)? {
                return Err(Error::already_exists(binding.name.to_string()));
            }
            identities::insert_binding(conn, &binding)?;
            this.append(conn, &events)
        })
        .await
    }

    async fn replace_identity_binding(
        &self,
        read_update_time: Timestamp,
        binding: &IdentityBinding,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error> {
        let (binding, events) = (binding.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if !identities::binding_exists(conn, &binding.name)? {
                return Ok(Replaced::Missing);
            }
            if !identities::replace_binding(conn, read_update_time, &binding)? {
                return Ok(Replaced::Stale);
            }
            this.append(conn, &events)?;
            Ok(Replaced::Done)
        })
        .await
    }

    async fn identity_bindings(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<IdentityBinding>, Error> {
        let workspace = workspace.cloned();
        self.read(move |conn| Ok(identities::bindings(conn, workspace.as_ref())?)).await
    }

    async fn delete_identity_binding(&self, name: &IdentityBindingName, events: &[AuditEvent]) -> Result<bool, Error> {
        let (name, events) = (name.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if !identities::delete_binding(conn, &name)? {
                return Ok(false);
            }
            this.append(conn, &events)?;
            Ok(true)
        })
        .await
    }

    async fn credentials_page(
        &self,
        not_under_key: Option<&str>,
        cursor: &RowCursor,
        limit: usize,
    ) -> Result<Vec<StoredCredential>, Error> {
        let (key, cursor) = (not_under_key.map(str::to_owned), cursor.clone());
        self.read(move |conn| Ok(credentials::walk(conn, key.as_deref(), &cursor, limit)?)).await
    }

    async fn rewrap(&self, rows: &[Rewrap]) -> Result<usize, Error> {
        let rows = rows.to_vec();
        self.write(move |conn| {
            let mut stored = 0;
            for row in &rows {
                if credentials::set_wrapped_key(conn, &row.credential, &row.sealed)? {
                    stored += 1;
                }
            }
            Ok(stored)
        })
        .await
    }

    async fn count_not_under_key(&self, kek_id: &str) -> Result<u64, Error> {
        let kek_id = kek_id.to_owned();
        self.read(move |conn| Ok(credentials::count_not_under_key(conn, &kek_id)?)).await
    }

    async fn insert_token(&self, record: &AccessTokenRecord, events: &[AuditEvent]) -> Result<(), Error> {
        let (record, events) = (record.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if let Some(workspace) = &record.workspace
                && !workspaces::exists(conn, workspace)?
            {
                return Err(Error::not_found(workspace.name()));
            }
            tokens::insert(conn, &record).map_err(|e| conflict_is(e, Error::internal("token id collision; retry")))?;
            this.append(conn, &events)
        })
        .await
    }

    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<AccessTokenRecord>, Error> {
        let hash = *hash;
        self.read(move |conn| Ok(tokens::find_by_hash(conn, &hash)?)).await
    }

    async fn token_by_id(&self, id: &AccessTokenId) -> Result<Option<AccessTokenRecord>, Error> {
        let id = id.clone();
        self.read(move |conn| Ok(tokens::find_by_id(conn, &id)?)).await
    }

    async fn token(&self, workspace: &WorkspaceId, id: &AccessTokenId) -> Result<Option<AccessTokenRecord>, Error> {
        let (workspace, id) = (workspace.clone(), id.clone());
        self.read(move |conn| Ok(tokens::get(conn, &workspace, &id)?)).await
    }

    async fn tokens(
        &self,
        workspace: &WorkspaceId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<AccessTokenRecord>>, Error> {
        let (workspace, after) = (workspace.clone(), after.map(str::to_owned));
        self.read(move |conn| {
            if !workspaces::exists(conn, &workspace)? {
                return Ok(None);
            }
            Ok(Some(tokens::list(conn, &workspace, after.as_deref(), limit)?))
        })
        .await
    }

    async fn revoke_token(
        &self,
        workspace: &WorkspaceId,
        id: &AccessTokenId,
        at: Timestamp,
        events: &[AuditEvent],
    ) -> Result<Option<AccessTokenRecord>, Error> {
        let (workspace, id, events) = (workspace.clone(), id.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            if !tokens::revoke(conn, &workspace, &id, at)? {
                return Ok(None);
            }
            this.append(conn, &events)?;
            Ok(tokens::get(conn, &workspace, &id)?)
        })
        .await
    }

    async fn touch_tokens(&self, uses: &[(AccessTokenId, Timestamp)]) -> Result<(), Error> {
        let uses = uses.to_vec();
        self.write(move |conn| Ok(tokens::set_last_used(conn, &uses)?)).await
    }

    async fn any_root_token(&self) -> Result<bool, Error> {
        self.read(|conn| Ok(tokens::any_root(conn)?)).await
    }

    async fn root_tokens(&self) -> Result<Vec<AccessTokenRecord>, Error> {
        self.read(|conn| Ok(tokens::list_root(conn)?)).await
    }

    async fn revoke_root_token(
        &self,
        id: &AccessTokenId,
        at: Timestamp,
        keep_one: bool,
        events: &[AuditEvent],
    ) -> Result<RootRevocation, Error> {
        let (id, events) = (id.clone(), events.to_vec());
        self.write_with(move |this, conn| {
            let roots = tokens::list_root(conn)?;
            if let Some(outcome) = super::refused_root_revocation(&roots, &id, at, keep_one) {
                return Ok(outcome);
            }
            tokens::revoke_root(conn, &id, at)?;
            this.append(conn, &events)?;
            let after =
                tokens::find_by_id(conn, &id)?.ok_or_else(|| Error::internal("a revoked root token vanished"))?;
            Ok(RootRevocation::Revoked(after))
        })
        .await
    }

    async fn touch_credentials(&self, uses: &[CredentialUse]) -> Result<(), Error> {
        let uses = uses.to_vec();
        self.write(move |conn| Ok(credentials::set_last_used(conn, &uses)?)).await
    }

    async fn record_credential_failures(&self, failures: &[CredentialFailureRecord]) -> Result<(), Error> {
        let failures = failures.to_vec();
        self.write(move |conn| Ok(credentials::set_last_failure(conn, &failures)?)).await
    }

    async fn credential_health(&self, deadlines: &[Timestamp]) -> Result<CredentialHealth, Error> {
        let deadlines = deadlines.to_vec();
        self.read(move |conn| Ok(credentials::health(conn, &deadlines)?)).await
    }

    async fn insert_console_session(&self, session: &ConsoleSession) -> Result<(), Error> {
        let session = session.clone();
        self.write(move |conn| Ok(sessions::insert(conn, &session)?)).await
    }

    async fn console_session(&self, hash: &[u8; 32]) -> Result<Option<ConsoleSession>, Error> {
        let hash = *hash;
        self.read(move |conn| Ok(sessions::get(conn, &hash, SessionKind::Session)?)).await
    }

    async fn console_login(&self, hash: &[u8; 32]) -> Result<Option<ConsoleSession>, Error> {
        let hash = *hash;
        self.read(move |conn| Ok(sessions::get(conn, &hash, SessionKind::LoginLink)?)).await
    }

    async fn redeem_console_login(&self, hash: &[u8; 32], now: Timestamp) -> Result<Option<ConsoleSession>, Error> {
        let hash = *hash;
        self.write(move |conn| Ok(sessions::take_login(conn, &hash, now)?)).await
    }

    async fn touch_console_session(&self, hash: &[u8; 32], at: Timestamp) -> Result<(), Error> {
        let hash = *hash;
        self.write(move |conn| Ok(sessions::touch(conn, &hash, at)?)).await
    }

    async fn delete_console_session(&self, hash: &[u8; 32]) -> Result<(), Error> {
        let hash = *hash;
        self.write(move |conn| Ok(sessions::delete(conn, &hash)?)).await
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), Error> {
        let events = events.to_vec();
        self.write_with(move |this, conn| this.append(conn, &events)).await
    }

    async fn audit_events(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, Error> {
        let filter = filter.clone();
        self.read(move |conn| Ok(audit::list(conn, &filter, after_seq, limit)?)).await
    }

    async fn audit_head(&self) -> Result<Option<ChainLink>, Error> {
        self.read(|conn| Ok(audit::head(conn)?)).await
    }

    async fn audit_checkpoint(&self) -> Result<Option<ChainLink>, Error> {
        self.read(|conn| Ok(checkpoint(conn)?)).await
    }

    async fn leases_per_hour(&self, workspace: &WorkspaceId, since: Timestamp) -> Result<Vec<(Timestamp, u64)>, Error> {
        let workspace = workspace.as_str().to_owned();
        self.read(move |conn| Ok(audit::leases_per_hour(conn, &workspace, since)?)).await
    }

    async fn prune_audit(&self, cutoff: Timestamp) -> Result<Pruned, Error> {
        let deleted = self
            .write(move |conn| {
                let Some(last) = audit::last_of_older_prefix(conn, cutoff)? else { return Ok(0) };
                let deleted = audit::delete_through(conn, last.0)?;
                meta::set(conn, super::CHECKPOINT_KEY, &super::format_checkpoint(last))?;
                Ok(deleted)
            })
            .await?;
        // Counted on a reader, so the scan does not hold up the writer.
        let kept_older = self.read(move |conn| Ok(audit::count_before(conn, cutoff)?)).await?;
        Ok(Pruned { deleted, kept_older })
    }

    async fn facts(&self) -> Result<DatabaseFacts, Error> {
        self.read(|conn| {
            Ok(DatabaseFacts {
                schema_version: conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(StoreError::from)?,
                key_checks: meta::key_checks(conn)?,
                active_key_id: meta::get(conn, super::ACTIVE_KEY_ID)?,
                ..DatabaseFacts::with_key_usage(credentials::key_usage(conn)?)
            })
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Option<String>, Error> {
        self.read(|conn| Ok(meta::get(conn, super::SIGNING_KEYS)?)).await
    }

    async fn replace_signing_keys(
        &self,
        expected: Option<&str>,
        keys: &str,
        events: &[AuditEvent],
    ) -> Result<bool, Error> {
        let (expected, keys, events) = (expected.map(str::to_owned), keys.to_owned(), events.to_vec());
        self.write_with(move |this, conn| {
            if meta::get(conn, super::SIGNING_KEYS)? != expected {
                return Ok(false);
            }
            meta::set(conn, super::SIGNING_KEYS, &keys)?;
            this.append(conn, &events)?;
            Ok(true)
        })
        .await
    }

    async fn record_keys(&self, checks: &[(String, Vec<u8>)], active: &str) -> Result<(), Error> {
        let (checks, active) = (checks.to_vec(), active.to_owned());
        self.write(move |conn| {
            for (id, value) in &checks {
                meta::insert_key_check(conn, id, value)?;
            }
            meta::set(conn, super::ACTIVE_KEY_ID, &active)?;
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        self.inner.reader_permits.close();
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || {
            inner.readers.lock().unwrap_or_else(|p| p.into_inner()).clear();
            inner.writer.close();
        })
        .await;
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A migrated store in a temporary directory.
    pub fn temp_store() -> (tempfile::TempDir, crate::store::Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("test.db")).unwrap();
        (dir, crate::store::Store::new(Arc::new(store)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opened_database_uses_wal_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("test.db")).unwrap();
        let (mode, sync) = store
            .write(|conn| {
                let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(StoreError::from)?;
                let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).map_err(StoreError::from)?;
                Ok((mode, sync))
            })
            .await
            .unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }

    #[test]
    fn newer_database_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(inspect(&path), Err(StoreError::TooNew { .. })));
        assert!(matches!(SqliteStore::open(&path), Err(StoreError::TooNew { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
