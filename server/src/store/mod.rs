//! Persistence: one domain-level interface ([`Backend`]: operations, not
//! SQL) with two implementations, embedded SQLite ([`sqlite`], the default)
//! and PostgreSQL ([`postgres`], for several replicas on one database).
//!
//! Invariants, on both:
//! * A write is durable before its caller hears back, and a mutation and its
//!   audit events commit together or not at all (the audit chain is
//!   appended inside the mutation's transaction).
//! * The store holds sealed secrets as opaque bytes and token hashes only.
//!   It knows nothing of key material or gRPC; it links the audit chain
//!   with [`crate::audit::chain`] (hashes of what it stores).
//! * Opening checks, before writing anything, that the database is not newer
//!   than this binary ([`Backend`] implementations read [`DatabaseFacts`]
//!   without writing), so start-up checks happen before any change.

pub mod copy;
pub mod postgres;
pub(crate) mod rows;
pub mod sqlite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use pullpass::registry::RegistryServer;

use crate::domain::audit::{AuditEvent, AuditRecord};
use crate::domain::credential::StoredCredential;
use crate::domain::session::ConsoleSession;
use crate::domain::{
    AccessTokenId, AccessTokenRecord, Credential, CredentialName, IdentityBinding, IdentityBindingName,
    IdentityProvider, IdentityProviderId, Provider, SealedSecret, Timestamp, Workspace, WorkspaceId,
};
use crate::error::Error;

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
    /// A database to copy from was last opened by an older pullpassd.
    TooOld {
        /// The database's schema version.
        found: i64,
        /// This binary's.
        current: i64,
    },
    /// Durability settings could not be enabled.
    NotDurable(String),
    /// A stored value does not parse (the database was edited by hand?).
    Corrupt(String),
    /// The store has been closed.
    Closed,
    /// The database cannot be reached (PostgreSQL down, connection lost).
    Unreachable(String),
    /// Any other SQLite error.
    Sqlite(rusqlite::Error),
    /// Any other PostgreSQL error (its message names no secret).
    Postgres(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conflict => f.write_str("a row with this key exists already"),
            Self::TooNew { found, supported } => write!(
                f,
                "the database has schema version {found}, but this pullpassd supports up to {supported}: run a newer pullpassd (or restore a backup made by this version)"
            ),
            Self::TooOld { found, current } => write!(
                f,
                "the database has schema version {found}, older than this pullpassd's {current}: start this pullpassd on it once (it migrates at start-up), then copy"
            ),
            Self::NotDurable(what) => write!(f, "the database cannot be made durable: {what}"),
            Self::Corrupt(what) => write!(f, "the database holds an unreadable value: {what}"),
            Self::Closed => f.write_str("the database is closed (server shutting down)"),
            Self::Unreachable(what) => write!(f, "the database cannot be reached: {what}"),
            Self::Sqlite(e) => write!(f, "SQLite: {e}"),
            Self::Postgres(e) => write!(f, "PostgreSQL: {e}"),
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
                retry_after: None,
            },
            StoreError::Unreachable(what) => Error::Unavailable {
                reason: "DATABASE_UNAVAILABLE",
                message: format!("the database cannot be reached ({what}); retry shortly"),
                retry_after: Some(std::time::Duration::from_secs(1)),
            },
            other => Error::internal(format!("storage failure: {other}")),
        }
    }
}

/// What a database holds, read without modifying it.
#[derive(Debug, Clone, Default)]
pub struct DatabaseFacts {
    /// The schema version: 0 for a new database.
    pub schema_version: i64,
    /// Key-check values per master-key id.
    pub key_checks: Vec<(String, Vec<u8>)>,
    /// The master key the database last recorded as active.
    pub active_key_id: Option<String>,
    /// Master-key ids that wrap at least one stored data key.
    pub key_ids_in_use: Vec<String>,
    /// How many data keys each master-key id wraps.
    pub key_usage: Vec<(String, u64)>,
}

impl DatabaseFacts {
    /// Facts with this key usage (and the key ids it names in use), the
    /// rest default.
    pub fn with_key_usage(key_usage: Vec<(String, u64)>) -> Self {
        let key_ids_in_use = key_usage.iter().filter(|(_, n)| *n > 0).map(|(id, _)| id.clone()).collect();
        Self { key_ids_in_use, key_usage, ..Self::default() }
    }
}

/// Where the database is.
#[derive(Debug, Clone)]
pub enum Location {
    /// An SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database (`--database-url`).
    Postgres(Box<postgres::PgConfig>),
}

impl Location {
    /// For messages: the file, or the server and database (never a
    /// password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite:{}", path.display()),
            Self::Postgres(config) => config.describe(),
        }
    }
}

/// What the database at `location` holds, read without writing; `None` if
/// there is no database yet.
pub async fn inspect(location: &Location) -> Result<Option<DatabaseFacts>, StoreError> {
    match location {
        Location::Sqlite(path) => sqlite::inspect(path),
        Location::Postgres(config) => postgres::inspect(config).await,
    }
}

/// Opens (creating and migrating if needed) the database at `location`.
pub async fn open(location: &Location, fault: AuditFault) -> Result<Store, StoreError> {
    match location {
        Location::Sqlite(path) => Ok(Store::new(Arc::new(sqlite::SqliteStore::open_with(path, fault)?))),
        Location::Postgres(config) => Ok(Store::new(Arc::new(postgres::PgStore::open(config, fault).await?))),
    }
}

/// Narrows a credential listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFilter {
    /// Registry host, and namespace when given.
    pub registry: Option<RegistryServer>,
    /// Provider.
    pub provider: Option<Provider>,
}

/// Narrows an audit listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this workspace (`None`: every workspace).
    pub workspace: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact resource.
    pub resource: Option<String>,
    /// Exact principal.
    pub principal: Option<String>,
    /// Events at or after.
    pub since: Option<Timestamp>,
    /// Events before.
    pub before: Option<Timestamp>,
}

/// What revoking a root token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootRevocation {
    /// Revoked now: the record after.
    Revoked(AccessTokenRecord),
    /// It was revoked before (the record, unchanged).
    AlreadyRevoked(AccessTokenRecord),
    /// No root token has this id.
    Missing,
    /// Refused: no other usable root token would be left.
    LastUsable,
}

/// What pruning the audit trail did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events deleted (all older than the cutoff).
    pub deleted: u64,
    /// Events older than the cutoff that stay because a newer event comes
    /// before them in the chain (event times are not monotonic in `seq`:
    /// group commits, replicas' clocks); a later prune takes them.
    pub kept_older: u64,
}

/// A credential's use: its name and uid, and when it served a lease.
pub type CredentialUse = (CredentialName, crate::domain::CredentialUid, Timestamp);

/// A credential's upstream refusal: its name and uid, and the failure.
pub type CredentialFailureRecord =
    (CredentialName, crate::domain::CredentialUid, crate::domain::credential::CredentialFailure);

/// Every workspace's credential health, counted by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialHealth {
    /// Per deadline asked for: credentials whose `expire_time` is at or
    /// before it (expired ones included).
    pub expiring: Vec<u64>,
    /// Credentials whose last upstream refusal is newer than their last use.
    pub failing: u64,
}

/// Where a walk over every credential stands: `(workspace id, credential
/// id)` of the last row seen.
pub type RowCursor = Option<(String, String)>;

/// The audit chain's last link: `(seq, hash)`.
pub type ChainLink = (i64, [u8; 32]);

/// What deleting an identity provider did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderDeletion {
    /// Deleted, with this many bindings (when forced).
    Deleted {
        /// Bindings deleted with it.
        bindings: u64,
    },
    /// No such provider.
    Missing,
    /// Bindings name it, and it was not forced.
    InUse {
        /// How many.
        bindings: u64,
    },
}

/// What deleting a workspace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceDeletion {
    /// Deleted (with everything in it, when forced).
    Deleted,
    /// No such workspace.
    Missing,
    /// Not empty, and not forced.
    NotEmpty {
        /// Its credentials.
        credentials: u64,
        /// Its access tokens.
        tokens: u64,
    },
}

/// What replacing a credential did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// Replaced.
    Done,
    /// It changed since it was read (read it again).
    Stale,
    /// It no longer exists.
    Missing,
}

/// A rewrapped data key to store, if the row still holds what was read.
#[derive(Debug, Clone)]
pub struct Rewrap {
    /// The credential as read (name, uid, secret version).
    pub credential: Credential,
    /// The new wrapping.
    pub sealed: SealedSecret,
}

/// The operations pullpass needs of its database. Both implementations run
/// the same conformance suite (`conformance.rs`).
///
/// Mutations take the audit events to append with them, in the same
/// transaction; `events` empty means none.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// What kind of database, for logs (`sqlite:/path`, `postgres://host/db`),
    /// never with a password.
    fn describe(&self) -> String;

    // --- workspaces ---

    /// Creates a workspace; `ALREADY_EXISTS` if the id is taken.
    async fn create_workspace(&self, workspace: &Workspace, events: &[AuditEvent]) -> Result<(), Error>;
    /// One workspace.
    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, Error>;
    /// Up to `limit` workspaces with ids after `after`, by id.
    async fn workspaces(&self, after: Option<&str>, limit: usize) -> Result<Vec<Workspace>, Error>;
    /// Deletes a workspace (with everything in it when `force`).
    async fn delete_workspace(
        &self,
        id: &WorkspaceId,
        force: bool,
        events: &[AuditEvent],
    ) -> Result<WorkspaceDeletion, Error>;

    // --- credentials ---

    /// Inserts credentials of one workspace, each with its events, in one
    /// transaction: `NOT_FOUND` if the workspace does not exist; a name
    /// already taken is skipped (its flag is false) when `skip_taken`, else
    /// the whole call fails `ALREADY_EXISTS`.
    async fn insert_credentials(
        &self,
        workspace: &WorkspaceId,
        rows: &[(StoredCredential, AuditEvent)],
        skip_taken: bool,
    ) -> Result<Vec<bool>, Error>;
    /// One credential with its sealed secret.
    async fn credential(&self, name: &CredentialName) -> Result<Option<StoredCredential>, Error>;
    /// Up to `limit` credentials (metadata) of a workspace after `after`,
    /// by id, matching `filter`; `None` if the workspace does not exist.
    async fn credentials(
        &self,
        workspace: &WorkspaceId,
        filter: &CredentialFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Credential>>, Error>;
    /// Every credential of a workspace with sealed secrets (the broker's
    /// index); `None` if the workspace does not exist.
    async fn workspace_credentials(&self, workspace: &WorkspaceId) -> Result<Option<Vec<StoredCredential>>, Error>;
    /// Replaces a credential if it is still as `read` was (same uid and
    /// update time).
    async fn replace_credential(
        &self,
        read: &Credential,
        replacement: &StoredCredential,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error>;
    /// Deletes a credential; false if absent.
    async fn delete_credential(&self, name: &CredentialName, events: &[AuditEvent]) -> Result<bool, Error>;
    /// Up to `limit` credentials after `cursor` (workspace, id order) with
    /// sealed secrets; only those under another master key than
    /// `not_under_key` when given. For key rotation and verification.
    async fn credentials_page(
        &self,
        not_under_key: Option<&str>,
        cursor: &RowCursor,
        limit: usize,
    ) -> Result<Vec<StoredCredential>, Error>;
    /// Stores rewrapped data keys of rows still holding the same secret
    /// version; returns how many were stored (the others changed meanwhile).
    async fn rewrap(&self, rows: &[Rewrap]) -> Result<usize, Error>;
    /// How many data keys are wrapped under another key than `kek_id`.
    async fn count_not_under_key(&self, kek_id: &str) -> Result<u64, Error>;

    // --- access tokens ---

    /// Stores a token record: `NOT_FOUND` if its workspace does not exist.
    async fn insert_token(&self, record: &AccessTokenRecord, events: &[AuditEvent]) -> Result<(), Error>;
    /// The token whose string hashes to `hash`.
    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<AccessTokenRecord>, Error>;
    /// The token with id `id`, in any workspace (or a root token).
    async fn token_by_id(&self, id: &AccessTokenId) -> Result<Option<AccessTokenRecord>, Error>;
    /// One token of a workspace.
    async fn token(&self, workspace: &WorkspaceId, id: &AccessTokenId) -> Result<Option<AccessTokenRecord>, Error>;
    /// Up to `limit` tokens of a workspace after `after`, by id; `None` if
    /// the workspace does not exist.
    async fn tokens(
        &self,
        workspace: &WorkspaceId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<AccessTokenRecord>>, Error>;
    /// Marks a token revoked (keeping the first revocation time); the
    /// record after, or `None` if absent.
    async fn revoke_token(
        &self,
        workspace: &WorkspaceId,
        id: &AccessTokenId,
        at: Timestamp,
        events: &[AuditEvent],
    ) -> Result<Option<AccessTokenRecord>, Error>;
    /// Records when tokens were last used.
    async fn touch_tokens(&self, uses: &[(AccessTokenId, Timestamp)]) -> Result<(), Error>;
    /// Is there any root token (revoked or not)?
    async fn any_root_token(&self) -> Result<bool, Error>;
    /// Every root token (revoked and expired ones too), by id.
    async fn root_tokens(&self) -> Result<Vec<AccessTokenRecord>, Error>;
    /// Revokes a root token at `at`, with its events. With `keep_one`, only
    /// if another root token stays usable (neither revoked nor expired at
    /// `at`), decided in the same transaction, so two revocations racing
    /// cannot leave none. An already revoked token is left as it was (no
    /// events).
    async fn revoke_root_token(
        &self,
        id: &AccessTokenId,
        at: Timestamp,
        keep_one: bool,
        events: &[AuditEvent],
    ) -> Result<RootRevocation, Error>;

    // --- workload identity ---

    /// Inserts an identity provider with its audit events. ALREADY_EXISTS
    /// when its id, or its issuer, is taken.
    async fn insert_identity_provider(&self, provider: &IdentityProvider, events: &[AuditEvent]) -> Result<(), Error>;
    /// Replaces an identity provider if it is still as read (its
    /// `read_update_time`), with its audit events. ALREADY_EXISTS when the
    /// new issuer is another provider's.
    async fn replace_identity_provider(
        &self,
        read_update_time: Timestamp,
        provider: &IdentityProvider,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error>;
    /// Every identity provider, ordered by id.
    async fn identity_providers(&self) -> Result<Vec<IdentityProvider>, Error>;
    /// Deletes an identity provider (and, when `force`, the bindings that
    /// name it) with its audit events.
    async fn delete_identity_provider(
        &self,
        id: &IdentityProviderId,
        force: bool,
        events: &[AuditEvent],
    ) -> Result<ProviderDeletion, Error>;
    /// Inserts an identity binding with its audit events. NOT_FOUND when its
    /// workspace or provider does not exist; ALREADY_EXISTS when its name
    /// is taken.
    async fn insert_identity_binding(&self, binding: &IdentityBinding, events: &[AuditEvent]) -> Result<(), Error>;
    /// Replaces an identity binding if it is still as read, with its audit
    /// events.
    async fn replace_identity_binding(
        &self,
        read_update_time: Timestamp,
        binding: &IdentityBinding,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error>;
    /// The identity bindings of `workspace` (of every workspace when
    /// `None`), ordered by workspace and id.
    async fn identity_bindings(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<IdentityBinding>, Error>;
    /// Deletes an identity binding with its audit events; false when there
    /// was none.
    async fn delete_identity_binding(&self, name: &IdentityBindingName, events: &[AuditEvent]) -> Result<bool, Error>;

    // --- credential use ---

    /// Records when credentials last served a lease (a later time only; a
    /// credential deleted or recreated meanwhile, with another uid, is left
    /// alone). No audit event and no change: nothing derived from the
    /// credential moves.
    async fn touch_credentials(&self, uses: &[CredentialUse]) -> Result<(), Error>;
    /// Records credentials' last upstream refusals, like
    /// [`Backend::touch_credentials`]: a later time only, same uid only, no
    /// audit event, no change.
    async fn record_credential_failures(&self, failures: &[CredentialFailureRecord]) -> Result<(), Error>;
    /// Counts, over every workspace, the credentials expiring by each of
    /// `deadlines` and those failing (the health gauges).
    async fn credential_health(&self, deadlines: &[Timestamp]) -> Result<CredentialHealth, Error>;

    // --- console sign-ins ---

    /// Stores a console session or one-time login link (by the hash of its
    /// secret), deleting those that expired.
    async fn insert_console_session(&self, session: &ConsoleSession) -> Result<(), Error>;
    /// The console session (not a login link) whose secret hashes to `hash`.
    async fn console_session(&self, hash: &[u8; 32]) -> Result<Option<ConsoleSession>, Error>;
    /// The login link (not a session) whose code hashes to `hash`, read
    /// without taking it: a code nobody made costs no write.
    async fn console_login(&self, hash: &[u8; 32]) -> Result<Option<ConsoleSession>, Error>;
    /// Deletes and returns the unexpired login link whose code hashes to
    /// `hash`, in one step: a link works once, on any replica.
    async fn redeem_console_login(&self, hash: &[u8; 32], now: Timestamp) -> Result<Option<ConsoleSession>, Error>;
    /// Records a session's last activity (a later time only).
    async fn touch_console_session(&self, hash: &[u8; 32], at: Timestamp) -> Result<(), Error>;
    /// Ends a session.
    async fn delete_console_session(&self, hash: &[u8; 32]) -> Result<(), Error>;

    // --- audit trail ---

    /// Appends events on their own (lease events, failed attempts).
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), Error>;
    /// Up to `limit` events after `after_seq` matching `filter`, oldest first.
    async fn audit_events(&self, filter: &AuditFilter, after_seq: i64, limit: usize)
    -> Result<Vec<AuditRecord>, Error>;
    /// The last event's link, if any event is stored.
    async fn audit_head(&self) -> Result<Option<ChainLink>, Error>;
    /// Where the chain starts after pruning (the last pruned event's link).
    async fn audit_checkpoint(&self) -> Result<Option<ChainLink>, Error>;
    /// Deletes the longest run of events from the start of the chain whose
    /// times are all before `cutoff` (never an event at or after it, and no
    /// gap in the chain) and records the last deleted one as the checkpoint.
    async fn prune_audit(&self, cutoff: Timestamp) -> Result<Pruned, Error>;
    /// Successful leases (`IssueRegistryAuth`) and gateway pulls of a
    /// workspace per hour since `since` (aggregated events count every call
    /// they stand for): `(start of the hour, calls)`, oldest first, hours
    /// without calls left out.
    async fn leases_per_hour(&self, workspace: &WorkspaceId, since: Timestamp) -> Result<Vec<(Timestamp, u64)>, Error>;

    // --- keys ---

    /// What the database knows, read without writing.
    async fn facts(&self) -> Result<DatabaseFacts, Error>;
    /// The issuer's signing key set as stored (`issuer::keys`' JSON, private
    /// keys sealed), or `None` before the first key.
    async fn signing_keys(&self) -> Result<Option<String>, Error>;
    /// Replaces the signing key set if it is still `expected` (what the
    /// caller read; `None`: no set yet), with its audit events. False when
    /// another process changed it first.
    async fn replace_signing_keys(
        &self,
        expected: Option<&str>,
        keys: &str,
        events: &[AuditEvent],
    ) -> Result<bool, Error>;
    /// Records key-check values of keys new to the database, and the active
    /// key id.
    async fn record_keys(&self, checks: &[(String, Vec<u8>)], active: &str) -> Result<(), Error>;

    // --- replicas ---

    /// What replicas share through this database: `None` for a database
    /// only one process uses (SQLite).
    fn shared(&self) -> Option<&dyn Shared> {
        None
    }

    // --- life cycle ---

    /// Finishes queued writes and closes every connection; later calls fail
    /// with UNAVAILABLE.
    async fn close(&self);
}

/// What a lease cache key holds in the database: a sealed lease and when
/// it expires.
#[derive(Debug, Clone)]
pub struct SharedLease {
    /// The lease, sealed (see `seal::Sealer::seal_blob`).
    pub sealed: Vec<u8>,
    /// When it expires.
    pub expire_time: Timestamp,
}

/// What [`Shared::changes_after`] read.
#[derive(Debug, Clone, Default)]
pub struct ChangesAfter {
    /// The cursor every change up to which has committed.
    pub head: i64,
    /// `(action, resource)` of each changing event after the cursor asked
    /// for, oldest first.
    pub changes: Vec<(String, String)>,
    /// The changes since the cursor cannot be listed (pruned from the
    /// audit trail meanwhile, or too many to replay): everything derived
    /// must go.
    pub gap: bool,
}

/// Where a shared lease key stands for a replica that needs it.
#[derive(Debug, Clone)]
pub enum LeaseSlot {
    /// Another replica stored this lease.
    Stored(SharedLease),
    /// This replica now holds the claim: it fetches, then stores.
    Claimed,
    /// Another replica holds an unexpired claim: wait for its lease.
    ClaimedElsewhere,
}

/// State the replicas of one database share, so the service behaves as one:
/// leases (one upstream exchange per key across replicas) and registries'
/// rate-limit blocks. Keys are opaque text; leases are sealed before they
/// get here.
#[async_trait]
pub trait Shared: Send + Sync {
    /// The lease stored under `key` if it has at least `min_life` left;
    /// else claims the key for `owner` for `claim_ttl` unless another
    /// replica holds an unexpired claim.
    async fn lease_or_claim(
        &self,
        key: &str,
        min_life: std::time::Duration,
        owner: &str,
        claim_ttl: std::time::Duration,
    ) -> Result<LeaseSlot, Error>;
    /// Stores a lease under `key`, releases `owner`'s claim and wakes the
    /// replicas waiting for it.
    async fn store_lease(&self, key: &str, lease: &SharedLease, owner: &str) -> Result<(), Error>;
    /// Releases `owner`'s claim on `key` (its fetch failed).
    async fn release_claim(&self, key: &str, owner: &str) -> Result<(), Error>;
    /// Until when a registry asked not to be called for `key`, if later than
    /// now.
    async fn blocked_until(&self, key: &str) -> Result<Option<Timestamp>, Error>;
    /// Records a registry's `Retry-After` for `key`.
    async fn block(&self, key: &str, until: Timestamp) -> Result<(), Error>;
    /// Deletes the lease under `key` if it is still `sealed` (a registry
    /// refused it; a fresher one another replica stored stays), and tells
    /// the replicas (but `owner`, the replica dropping it), which drop
    /// their copies. True when it was deleted.
    async fn drop_lease(&self, key: &str, sealed: &[u8], owner: &str) -> Result<bool, Error>;
    /// The change cursor now (the audit trail's head), and the changes
    /// committed after `cursor` up to it, oldest first: what the change
    /// follower publishes. `None` asks for the head only.
    async fn changes_after(&self, cursor: Option<i64>) -> Result<ChangesAfter, Error>;
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend.describe()).finish()
    }
}

impl Store {
    /// A handle on `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

/// The testing hook `--fault-audit-fail`: audit appends for this action (or
/// `*`) fail, and with them the mutation they belong to.
#[derive(Debug, Clone, Default)]
pub struct AuditFault(Option<String>);

impl AuditFault {
    /// Fails appends of `action` (or every action, for `*`).
    pub fn new(action: Option<String>) -> Self {
        Self(action)
    }

    /// Refuses `events` if the hook names one of them.
    pub fn check(&self, events: &[AuditEvent]) -> Result<(), Error> {
        match &self.0 {
            Some(action) if events.iter().any(|e| action == "*" || *action == e.action) => Err(audit_unavailable()),
            _ => Ok(()),
        }
    }
}

/// The error of a mutation whose audit event could not be written.
pub fn audit_unavailable() -> Error {
    Error::Unavailable {
        reason: "AUDIT_UNAVAILABLE",
        message: "the audit trail could not be written, so the change was not made".into(),
        retry_after: None,
    }
}

/// Encodes a list of strings for a text column (both backends).
pub(crate) fn encode_list<T: AsRef<str>>(items: &[T]) -> String {
    serde_json::to_string(&items.iter().map(AsRef::as_ref).collect::<Vec<&str>>()).unwrap_or_else(|_| "[]".into())
}

/// ALREADY_EXISTS for a provider whose issuer another provider has.
pub(crate) fn issuer_taken(issuer: &str) -> Error {
    Error::already_exists(format!(
        "an identity provider with issuer `{}` (one provider per issuer)",
        crate::domain::ids::shorten(issuer)
    ))
}

/// Decodes a list written by [`encode_list`].
pub(crate) fn decode_list(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("list column: {e}")))
}

/// The link after `head` for each event, in order: `(seq, prev_hash, hash)`.
pub(crate) fn chain_links(head: Option<ChainLink>, events: &[AuditEvent]) -> Vec<(i64, [u8; 32], [u8; 32])> {
    let (mut seq, mut prev) = head.unwrap_or((0, crate::audit::chain::GENESIS));
    events
        .iter()
        .map(|event| {
            seq += 1;
            let hash = crate::audit::chain::link(&prev, seq, event);
            let link = (seq, prev, hash);
            prev = hash;
            link
        })
        .collect()
}

/// Why a root token cannot be revoked now, given every root token (read
/// in the revoking transaction, rows locked): `None` when it can.
pub(crate) fn refused_root_revocation(
    roots: &[AccessTokenRecord],
    id: &AccessTokenId,
    at: Timestamp,
    keep_one: bool,
) -> Option<RootRevocation> {
    let Some(target) = roots.iter().find(|r| &r.id == id) else { return Some(RootRevocation::Missing) };
    if target.revoke_time.is_some() {
        return Some(RootRevocation::AlreadyRevoked(target.clone()));
    }
    let usable = |r: &&AccessTokenRecord| r.revoke_time.is_none() && r.expire_time.is_none_or(|expiry| expiry > at);
    if keep_one && !roots.iter().filter(|r| &r.id != id).any(|r| usable(&r)) {
        return Some(RootRevocation::LastUsable);
    }
    None
}

/// Reads `seq:hexhash` (the checkpoint's meta value).
pub(crate) fn parse_checkpoint(value: &str) -> Result<ChainLink, StoreError> {
    value
        .split_once(':')
        .and_then(|(seq, hash)| Some((seq.parse().ok()?, crate::audit::chain::from_hex(hash)?)))
        .ok_or_else(|| StoreError::Corrupt("the audit checkpoint is unreadable".into()))
}

/// Writes a checkpoint's meta value.
pub(crate) fn format_checkpoint((seq, hash): ChainLink) -> String {
    format!("{seq}:{}", crate::audit::chain::hex(&hash))
}

/// Meta key holding `seq:hexhash` of the last pruned event.
pub const CHECKPOINT_KEY: &str = "audit_checkpoint";
/// Meta key: the master key id new secrets were last sealed under.
pub const ACTIVE_KEY_ID: &str = "active_key_id";
/// Meta key of the issuer's signing key set.
pub const SIGNING_KEYS: &str = "issuer_signing_keys";
