//! SQLite persistence: schema migrations, one group-committing writer thread,
//! a small pool of reader connections, and typed queries per table.
//!
//! Invariants:
//! * Every write runs on the writer thread inside a transaction and is on
//!   disk (WAL, `synchronous=FULL`, both checked at open) before its caller
//!   hears back. Concurrent writes share one commit (group commit); each runs
//!   in its own savepoint, so one failing write does not undo another.
//! * The store holds sealed secrets as opaque bytes and token hashes only. It
//!   knows nothing of cryptography or gRPC.
//! * [`inspect`] reads a database without writing a byte, so start-up checks
//!   (schema version, master keys) happen before anything is changed.

pub mod audit;
pub mod credentials;
pub mod meta;
mod migrations;
pub mod tokens;
pub mod workspaces;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

pub use migrations::SCHEMA_VERSION;
use writer::Writer;

use crate::error::Error;

/// Number of reader connections.
const READERS: usize = 4;

/// A low-level storage failure. Domain code turns it into [`Error`].
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A UNIQUE or PRIMARY KEY constraint was violated.
    Conflict,
    /// The database was written by a newer pullpassd.
    TooNew {
        /// The database's schema version.
        found: i64,
        /// The newest this binary understands.
        supported: i64,
    },
    /// WAL or `synchronous=FULL` could not be enabled.
    NotDurable(String),
    /// A stored value does not parse (the database was edited by hand?).
    Corrupt(String),
    /// The store has been closed.
    Closed,
    /// Any other SQLite error.
    Sqlite(rusqlite::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conflict => f.write_str("a row with this key exists already"),
            Self::TooNew { found, supported } => write!(
                f,
                "the database has schema version {found}, but this pullpassd supports up to {supported}: run a newer pullpassd (or restore a backup made by this version)"
            ),
            Self::NotDurable(what) => write!(f, "the database cannot be made durable: {what}"),
            Self::Corrupt(what) => write!(f, "the database holds an unreadable value: {what}"),
            Self::Closed => f.write_str("the database is closed (server shutting down)"),
            Self::Sqlite(e) => write!(f, "SQLite: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(code, _)
                if code.code == rusqlite::ErrorCode::ConstraintViolation
                    && matches!(
                        code.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    ) =>
            {
                Self::Conflict
            }
            _ => Self::Sqlite(e),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => Error::Unavailable {
                reason: "SERVER_SHUTTING_DOWN",
                message: "the server is shutting down; retry on another replica or after restart".into(),
            },
            other => Error::internal(format!("storage failure: {other}")),
        }
    }
}

/// What a database file holds, read without modifying it.
#[derive(Debug, Clone, Default)]
pub struct DatabaseFacts {
    /// `PRAGMA user_version`: 0 for a new file.
    pub schema_version: i64,
    /// Key-check values per master-key id.
    pub key_checks: Vec<(String, Vec<u8>)>,
    /// The master key the database last recorded as active.
    pub active_key_id: Option<String>,
    /// Master-key ids that wrap at least one stored data key.
    pub key_ids_in_use: Vec<String>,
}

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
        active_key_id: meta::get(&conn, meta::ACTIVE_KEY_ID)?,
        key_ids_in_use: credentials::key_ids_in_use(&conn)?,
    }))
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database, and checks that
    /// WAL and `synchronous=FULL` are in effect.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
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

    /// Finishes queued writes, then closes every connection (checkpointing
    /// the WAL). Later calls fail with UNAVAILABLE.
    pub async fn close(&self) {
        self.inner.reader_permits.close();
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || {
            inner.readers.lock().unwrap_or_else(|p| p.into_inner()).clear();
            inner.writer.close();
        })
        .await;
    }

    /// Writes a consistent copy of the live database to `destination` using
    /// SQLite's online backup API (other connections keep working).
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
}

/// Opens a connection with the pragmas every connection needs.
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
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

/// Encodes a list of strings for a TEXT column.
pub(crate) fn encode_list<T: AsRef<str>>(items: &[T]) -> String {
    serde_json::to_string(&items.iter().map(AsRef::as_ref).collect::<Vec<&str>>()).unwrap_or_else(|_| "[]".into())
}

/// Decodes a list written by [`encode_list`].
pub(crate) fn decode_list(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("list column: {e}")))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A migrated store in a temporary directory.
    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("test.db")).unwrap();
        (dir, store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opened_database_uses_wal_and_full_sync() {
        let (_dir, store) = test_support::temp_store();
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
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
