//! The PostgreSQL backend: several `pullpassd` replicas on one database.
//!
//! * Connections come from a deadpool-postgres pool (`RecyclingMethod::Clean`),
//!   over rustls (ring) when TLS is on; the password never appears in a log
//!   or error.
//! * Every operation commits before it returns. Mutations are
//!   group-committed per replica ([`writer`]: one transaction, a savepoint
//!   each); other writes are one transaction each. Serialization failures
//!   and deadlocks (40001, 40P01) are retried here and never reach a
//!   caller; a lost database is `UNAVAILABLE`.
//! * One audit chain for all replicas: an append locks the `audit_head` row
//!   until its transaction commits, so events get gapless `seq`s in commit
//!   order, and a race is an error (retried), never a fork.
//! * Mutations `NOTIFY pullpass_changes` with what changed, delivered when
//!   they commit (see [`changes`]).

pub mod changes;
pub mod config;
pub(crate) mod migrations;
pub mod shared;
mod writer;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

pub use config::PgConfig;
pub use migrations::SCHEMA_VERSION;

use super::rows::{
    AuditRow, CredentialRow, IdentityBindingRow, IdentityProviderRow, SessionRow, TokenRow, WorkspaceRow,
};
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
    IdentityProvider, IdentityProviderId, Provider, Timestamp, Workspace, WorkspaceId,
};
use crate::error::Error;

/// The channel mutations notify on.
pub const CHANGES_CHANNEL: &str = "pullpass_changes";
/// Tries of a transaction that hit a serialization failure or deadlock.
const ATTEMPTS: u32 = 8;
/// The first statement of every transaction: PostgreSQL ends one of ours
/// that waits over 5 s for its next statement. A replica whose network
/// path goes silent mid-transaction (the connection stays open, nothing
/// arrives) would otherwise hold its locks, the audit trail's head among
/// them, and stall every replica's writes until the connection breaks.
pub(crate) const IDLE_IN_TRANSACTION: &str = "SET LOCAL idle_in_transaction_session_timeout = '5s'";

const CREDENTIAL_COLUMNS: &str = "workspace_id, credential_id, uid, provider, registry_host, registry_namespace, \
     username, secret_version, allowed_projects, allow_passthrough, token_realm_allowlist, ca_bundle_pem, \
     description, create_time, update_time, secret_kek_id, secret_wrapped_dek, secret_ciphertext, last_used_time, \
     provider_settings, expire_time, last_failure_time, last_failure_reason, failing_since";
const SESSION_COLUMNS: &str = "id_hash, kind, token_id, create_time, expire_time, last_seen";
const TOKEN_COLUMNS: &str =
    "id, workspace_id, role, projects, token_hash, description, create_time, expire_time, revoke_time, last_used_time";
const AUDIT_COLUMNS: &str = "seq, event_time, workspace_id, principal, action, resource, status_code, client_address, \
     request_id, image, granted_scope, call_count, prev_hash, hash";

/// A PostgreSQL error as a store error: a lost connection is
/// `Unreachable`, a unique violation `Conflict`. No message holds a secret.
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
        return StoreError::Unreachable(e.to_string());
    }
    match e.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict,
        Some(code) if code.code().starts_with("08") || *code == SqlState::ADMIN_SHUTDOWN => {
            StoreError::Unreachable(e.to_string())
        }
        _ => StoreError::Postgres(e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned())),
    }
}

/// Why a transaction attempt ended.
#[derive(Debug)]
pub(crate) enum TxError {
    /// From PostgreSQL (retried if a serialization failure or deadlock).
    Pg(tokio_postgres::Error),
    /// A domain outcome (not retried).
    Domain(Error),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        Self::Domain(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Domain(e.into())
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// The PostgreSQL backend; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: PgConfig,
    writer: std::sync::Arc<writer::Writer>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.config.describe()).finish_non_exhaustive()
    }
}

/// One connection, outside the pool (inspection, migrations, listening).
pub(crate) async fn connect(config: &PgConfig) -> Result<tokio_postgres::Client, StoreError> {
    let describe = config.describe();
    let failed = |e: tokio_postgres::Error| StoreError::Unreachable(format!("{describe}: {e}"));
    let client = match config.tls().map_err(StoreError::Unreachable)? {
        Some(tls) => {
            let (client, connection) = config.connection().connect(tls).await.map_err(failed)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        None => {
            let (client, connection) = config.connection().connect(tokio_postgres::NoTls).await.map_err(failed)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
    };
    Ok(client)
}

/// What the database holds, read without writing; `Some` with schema
/// version 0 for an empty database.
pub async fn inspect(config: &PgConfig) -> Result<Option<DatabaseFacts>, StoreError> {
    let client = connect(config).await?;
    let schema_version = migrations::current_version(&client).await?;
    if schema_version > SCHEMA_VERSION {
        return Err(StoreError::TooNew { found: schema_version, supported: SCHEMA_VERSION });
    }
    if schema_version == 0 {
        return Ok(Some(DatabaseFacts::default()));
    }
    read_facts(&client, schema_version).await.map(Some)
}

async fn read_facts(client: &impl GenericClient, schema_version: i64) -> Result<DatabaseFacts, StoreError> {
    let key_checks = client
        .query("SELECT kek_id, check_value FROM key_checks ORDER BY create_time, kek_id", &[])
        .await
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let active_key_id = client
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&super::ACTIVE_KEY_ID])
        .await
        .map_err(pg)?
        .map(|r| r.get(0));
    // `key_usage` (kept by a trigger) came with schema version 4; an older
    // database, read once before it is migrated, is counted the slow way.
    let sql = if schema_version >= 4 {
        "SELECT kek_id, data_keys FROM key_usage WHERE data_keys > 0 ORDER BY 1"
    } else {
        "SELECT secret_kek_id, count(*) FROM credentials GROUP BY 1 ORDER BY 1"
    };
    let key_usage: Vec<(String, u64)> =
        client.query(sql, &[]).await.map_err(pg)?.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect();
    Ok(DatabaseFacts { schema_version, key_checks, active_key_id, ..DatabaseFacts::with_key_usage(key_usage) })
}

impl PgStore {
    /// Connects, migrates (once across replicas), and builds the pool.
    pub async fn open(config: &PgConfig, fault: AuditFault) -> Result<Self, StoreError> {
        let mut client = connect(config).await?;
        migrations::migrate(&mut client).await?;
        drop(client);
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Clean };
        let manager = match config.tls().map_err(StoreError::Unreachable)? {
            Some(tls) => Manager::from_config(config.connection().clone(), tls, manager_config),
            None => Manager::from_config(config.connection().clone(), tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.query_timeout))
            .create_timeout(Some(Duration::from_secs(5).min(config.query_timeout)))
            // A connection returned while its statement hung (a timeout)
            // is checked before reuse; one that does not answer goes.
            .recycle_timeout(Some(Duration::from_secs(2)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        let writer = std::sync::Arc::new(writer::Writer::start(pool.clone(), fault, config.query_timeout));
        Ok(Self { pool, config: config.clone(), writer })
    }

    /// The settings.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    async fn client(&self) -> Result<Object, Error> {
        self.pool.get().await.map_err(|e| StoreError::Unreachable(e.to_string()).into())
    }

    /// `work` (a connection from the pool and its statements), failing
    /// `UNAVAILABLE` once the `query_timeout` is over: a silent database
    /// costs that long, not the kernel's retransmission timeout.
    pub(crate) async fn bounded<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.config.query_timeout, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unreachable(format!(
                "{}: no answer within {} s",
                self.config.describe(),
                self.config.query_timeout.as_secs()
            ))
            .into()),
        }
    }

    /// Runs `attempt` with a fresh connection until it commits, retrying
    /// serialization failures and deadlocks with a short jittered pause.
    pub(crate) async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, Error>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, TxError>>,
    {
        self.bounded(async {
            let mut tries = 0;
            loop {
                tries += 1;
                let client = self.client().await?;
                match attempt(client).await {
                    Ok(value) => return Ok(value),
                    Err(TxError::Pg(e)) if retryable(&e) && tries < ATTEMPTS => {
                        let pause = Duration::from_millis(2u64 << tries.min(6)) + jitter();
                        tokio::time::sleep(pause).await;
                    }
                    Err(TxError::Pg(e)) => return Err(pg(e).into()),
                    Err(TxError::Domain(e)) => return Err(e),
                }
            }
        })
        .await
    }

    /// Runs a mutation in the next group commit of this replica (see
    /// [`writer`]); its value once committed.
    /// Deletes the row `sql` names by `$1` = `workspace` and `$2` = `id`,
    /// auditing `events` in the same transaction; `false` (and nothing
    /// audited) when there was no such row.
    async fn delete_audited(
        &self,
        sql: &'static str,
        workspace: &str,
        id: &str,
        events: &[AuditEvent],
    ) -> Result<bool, Error> {
        let (workspace, id, events) = (workspace.to_owned(), id.to_owned(), events.to_vec());
        self.mutate(move |tx| {
            let (workspace, id, events) = (workspace.clone(), id.clone(), events.clone());
            Box::pin(async move {
                if tx.execute(sql, &[&workspace.as_str(), &id.as_str()]).await? == 0 {
                    return Ok(false);
                }
                tx.audit(&events)?;
                Ok(true)
            })
        })
        .await
    }

    async fn mutate<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'t, 'c> Fn(
                &'t writer::Tx<'t, 'c>,
            ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, TxError>> + Send + 't>>
            + Send
            + Sync
            + 'static,
    {
        self.writer.mutate(work).await
    }

    /// Reads with one statement (no transaction).
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(pg)?;
            client.query(&statement, params).await.map_err(|e| pg(e).into())
        })
        .await
    }
}

/// Events a prune deletes per transaction.
const PRUNE_BATCH: i64 = 10_000;
/// Older events kept (behind a newer one) counted at most.
const PRUNE_COUNT_LIMIT: i64 = 1_000_000;

fn jitter() -> Duration {
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    Duration::from_millis(u64::from(byte[0]) % 8)
}

/// Appends `events` to the chain inside `tx` (locking the head until
/// commit), and notifies the replicas of each mutation among them: once
/// per batch ([`writer`]), pipelined.
pub(crate) async fn append(tx: &deadpool_postgres::Transaction<'_>, events: &[AuditEvent]) -> Result<(), TxError> {
    if events.is_empty() {
        return Ok(());
    }
    let head = tx.query_one("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE", &[]).await?;
    let (seq, hash): (i64, Vec<u8>) = (head.get(0), head.get(1));
    let hash: [u8; 32] = hash.try_into().map_err(|_| StoreError::Corrupt("audit head hash length".into()))?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .await?;
    let links = super::chain_links(Some((seq, hash)), events);
    let rows: Vec<AuditRow> = links.iter().zip(events).map(|((s, p, h), e)| AuditRow::of(*s, e, p, h)).collect();
    let params: Vec<[&(dyn ToSql + Sync); 14]> = rows
        .iter()
        .map(|r| -> [&(dyn ToSql + Sync); 14] {
            [
                &r.seq,
                &r.event_time,
                &r.workspace_id,
                &r.principal,
                &r.action,
                &r.resource,
                &r.status_code,
                &r.client_address,
                &r.request_id,
                &r.image,
                &r.granted_scope,
                &r.count,
                &r.prev_hash,
                &r.hash,
            ]
        })
        .collect();
    let inserts = params.iter().map(|p| tx.execute(&insert, p));
    // Pipelined: one round trip for the batch.
    for inserted in futures_util::future::join_all(inserts).await {
        inserted?;
    }
    if let Some(last) = rows.last() {
        tx.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", &[&last.seq, &last.hash]).await?;
    }
    let payloads: Vec<String> = events.iter().filter(|e| changes::is_change(e)).map(changes::payload).collect();
    let params: Vec<[&(dyn ToSql + Sync); 2]> = payloads.iter().map(|p| [&CHANGES_CHANNEL as _, p as _]).collect();
    let notifies = params.iter().map(|p| tx.execute("SELECT pg_notify($1, $2)", p));
    for notified in futures_util::future::join_all(notifies).await {
        notified?;
    }
    Ok(())
}

fn credential_row(row: &Row) -> CredentialRow {
    CredentialRow {
        workspace_id: row.get(0),
        credential_id: row.get(1),
        uid: row.get(2),
        provider: row.get(3),
        registry_host: row.get(4),
        registry_namespace: row.get(5),
        username: row.get(6),
        secret_version: row.get(7),
        allowed_projects: row.get(8),
        allow_passthrough: row.get(9),
        token_realm_allowlist: row.get(10),
        ca_bundle_pem: row.get(11),
        description: row.get(12),
        create_time: row.get(13),
        update_time: row.get(14),
        secret_kek_id: row.get(15),
        secret_wrapped_dek: row.get(16),
        secret_ciphertext: row.get(17),
        last_used_time: row.get(18),
        provider_settings: row.get(19),
        expire_time: row.get(20),
        last_failure_time: row.get(21),
        last_failure_reason: row.get(22),
        failing_since: row.get(23),
    }
}

fn session_row(row: &Row) -> SessionRow {
    SessionRow {
        id_hash: row.get(0),
        kind: row.get(1),
        token_id: row.get(2),
        create_time: row.get(3),
        expire_time: row.get(4),
        last_seen: row.get(5),
    }
}

const PROVIDER_COLUMNS: &str = "id, issuer, jwks_uri, jwks, ca_certificates, audiences, allowed_algorithms, \
     max_token_lifetime_s, clock_skew_s, description, create_time, update_time";
const BINDING_COLUMNS: &str =
    "workspace_id, id, provider_id, bound_claims, role, allowed_projects, description, create_time, update_time";

fn provider_row(row: &Row) -> IdentityProviderRow {
    IdentityProviderRow {
        id: row.get(0),
        issuer: row.get(1),
        jwks_uri: row.get(2),
        jwks: row.get(3),
        ca_certificates: row.get(4),
        audiences: row.get(5),
        allowed_algorithms: row.get(6),
        max_token_lifetime_s: row.get(7),
        clock_skew_s: row.get(8),
        description: row.get(9),
        create_time: row.get(10),
        update_time: row.get(11),
    }
}

fn binding_row(row: &Row) -> IdentityBindingRow {
    IdentityBindingRow {
        workspace_id: row.get(0),
        id: row.get(1),
        provider_id: row.get(2),
        bound_claims: row.get(3),
        role: row.get(4),
        allowed_projects: row.get(5),
        description: row.get(6),
        create_time: row.get(7),
        update_time: row.get(8),
    }
}

fn token_row(row: &Row) -> TokenRow {
    TokenRow {
        id: row.get(0),
        workspace_id: row.get(1),
        role: row.get(2),
        projects: row.get(3),
        token_hash: row.get(4),
        description: row.get(5),
        create_time: row.get(6),
        expire_time: row.get(7),
        revoke_time: row.get(8),
        last_used_time: row.get(9),
    }
}

fn audit_row(row: &Row) -> AuditRow {
    AuditRow {
        seq: row.get(0),
        event_time: row.get(1),
        workspace_id: row.get(2),
        principal: row.get(3),
        action: row.get(4),
        resource: row.get(5),
        status_code: row.get(6),
        client_address: row.get(7),
        request_id: row.get(8),
        image: row.get(9),
        granted_scope: row.get(10),
        count: row.get(11),
        prev_hash: row.get(12),
        hash: row.get(13),
    }
}

fn workspace_of(row: &Row) -> Result<Workspace, StoreError> {
    WorkspaceRow { id: row.get(0), kind: row.get(1), display_name: row.get(2), create_time: row.get(3) }.workspace()
}

async fn insert_credential(
    tx: &deadpool_postgres::Transaction<'_>,
    r: &CredentialRow,
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx
        .prepare_cached(&format!(
            "INSERT INTO credentials ({CREDENTIAL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
             $22, $23, $24) ON CONFLICT (workspace_id, credential_id) DO NOTHING"
        ))
        .await?;
    tx.execute(
        &statement,
        &[
            &r.workspace_id,
            &r.credential_id,
            &r.uid,
            &r.provider,
            &r.registry_host,
            &r.registry_namespace,
            &r.username,
            &r.secret_version,
            &r.allowed_projects,
            &r.allow_passthrough,
            &r.token_realm_allowlist,
            &r.ca_bundle_pem,
            &r.description,
            &r.create_time,
            &r.update_time,
            &r.secret_kek_id,
            &r.secret_wrapped_dek,
            &r.secret_ciphertext,
            &r.last_used_time,
            &r.provider_settings,
            &r.expire_time,
            &r.last_failure_time,
            &r.last_failure_reason,
            &r.failing_since,
        ],
    )
    .await
}

#[async_trait]
impl Backend for PgStore {
    fn describe(&self) -> String {
        self.config.describe()
    }

    async fn create_workspace(&self, workspace: &Workspace, events: &[AuditEvent]) -> Result<(), Error> {
        let r = WorkspaceRow::of(workspace);
        let (r, events) = (r.clone(), events.to_vec());
        self.mutate(move |tx| {
            let (r, events) = (r.clone(), events.clone());
            Box::pin(async move {
                let inserted = tx
                    .execute(
                        "INSERT INTO workspaces (id, kind, display_name, create_time) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (id) DO NOTHING",
                        &[&r.id, &r.kind, &r.display_name, &r.create_time],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(Error::already_exists(format!("workspaces/{}", r.id)).into());
                }
                tx.audit(&events)?;
                Ok(())
            })
        })
        .await
    }

    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, Error> {
        let rows = self
            .query("SELECT id, kind, display_name, create_time FROM workspaces WHERE id = $1", &[&id.as_str()])
            .await?;
        rows.first().map(workspace_of).transpose().map_err(Error::from)
    }

    async fn workspaces(&self, after: Option<&str>, limit: usize) -> Result<Vec<Workspace>, Error> {
        let rows = self
            .query(
                "SELECT id, kind, display_name, create_time FROM workspaces WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after.unwrap_or(""), &(limit as i64)],
            )
            .await?;
        rows.iter().map(workspace_of).collect::<Result<_, _>>().map_err(Error::from)
    }

    async fn delete_workspace(
        &self,
        id: &WorkspaceId,
        force: bool,
        events: &[AuditEvent],
    ) -> Result<WorkspaceDeletion, Error> {
        let (id, events) = (id.as_str().to_owned(), events.to_vec());
        self.mutate(move |tx| {
            let (id, events) = (id.clone(), events.clone());
            Box::pin(async move {
                if tx.query_opt("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", &[&id]).await?.is_none() {
                    return Ok(WorkspaceDeletion::Missing);
                }
                let credentials: i64 =
                    tx.query_one("SELECT count(*) FROM credentials WHERE workspace_id = $1", &[&id]).await?.get(0);
                let tokens: i64 =
                    tx.query_one("SELECT count(*) FROM access_tokens WHERE workspace_id = $1", &[&id]).await?.get(0);
                if !force && credentials + tokens > 0 {
                    return Ok(WorkspaceDeletion::NotEmpty { credentials: credentials as u64, tokens: tokens as u64 });
                }
                tx.execute("DELETE FROM workspaces WHERE id = $1", &[&id]).await?;
                tx.audit(&events)?;
                Ok(WorkspaceDeletion::Deleted)
            })
        })
        .await
    }

    async fn insert_credentials(
        &self,
        workspace: &WorkspaceId,
        rows: &[(StoredCredential, AuditEvent)],
        skip_taken: bool,
    ) -> Result<Vec<bool>, Error> {
        let rows: Vec<(CredentialRow, AuditEvent)> =
            rows.iter().map(|(stored, event)| (CredentialRow::of(stored), event.clone())).collect();
        let (workspace, rows) = (workspace.clone(), rows.clone());
        self.mutate(move |tx| {
            let (workspace, rows) = (workspace.clone(), rows.clone());
            Box::pin(async move {
                // Locks the workspace: a concurrent deletion waits or wins.
                if tx
                    .query_opt("SELECT 1 FROM workspaces WHERE id = $1 FOR SHARE", &[&workspace.as_str()])
                    .await?
                    .is_none()
                {
                    return Err(Error::not_found(workspace.name()).into());
                }
                let mut inserted = Vec::with_capacity(rows.len());
                let mut events = Vec::new();
                for (row, event) in &rows {
                    if insert_credential(tx, row).await? == 1 {
                        inserted.push(true);
                        events.push(event.clone());
                    } else if skip_taken {
                        inserted.push(false);
                    } else {
                        return Err(Error::already_exists(format!(
                            "workspaces/{}/credentials/{}",
                            row.workspace_id, row.credential_id
                        ))
                        .into());
                    }
                }
                tx.audit(&events)?;
                Ok(inserted)
            })
        })
        .await
    }

    async fn credential(&self, name: &CredentialName) -> Result<Option<StoredCredential>, Error> {
        let rows = self
            .query(
                &format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE workspace_id = $1 AND credential_id = $2"),
                &[&name.workspace.as_str(), &name.credential.as_str()],
            )
            .await?;
        rows.first().map(|r| credential_row(r).stored()).transpose().map_err(Error::from)
    }

    async fn credentials(
        &self,
        workspace: &WorkspaceId,
        filter: &CredentialFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Credential>>, Error> {
        if self.workspace(workspace).await?.is_none() {
            return Ok(None);
        }
        let registry = filter.registry.as_ref();
        let rows = self
            .query(
                &format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials \
                     WHERE workspace_id = $1 AND credential_id > $2 \
                       AND ($3::TEXT IS NULL OR registry_host = $3) AND ($4::TEXT IS NULL OR registry_namespace = $4) \
                       AND ($5::INTEGER IS NULL OR provider = $5) \
                     ORDER BY credential_id LIMIT $6"
                ),
                &[
                    &workspace.as_str(),
                    &after.unwrap_or(""),
                    &registry.map(|r| r.host().as_str()),
                    &registry.and_then(|r| r.namespace()),
                    &filter.provider.map(Provider::code),
                    &(limit as i64),
                ],
            )
            .await?;
        rows.iter().map(|r| credential_row(r).credential()).collect::<Result<_, _>>().map(Some).map_err(Error::from)
    }

    async fn workspace_credentials(&self, workspace: &WorkspaceId) -> Result<Option<Vec<StoredCredential>>, Error> {
        if self.workspace(workspace).await?.is_none() {
            return Ok(None);
        }
        let rows = self
            .query(
                &format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE workspace_id = $1 ORDER BY credential_id"),
                &[&workspace.as_str()],
            )
            .await?;
        rows.iter().map(|r| credential_row(r).stored()).collect::<Result<_, _>>().map(Some).map_err(Error::from)
    }

    async fn replace_credential(
        &self,
        read: &Credential,
        replacement: &StoredCredential,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error> {
        let r = CredentialRow::of(replacement);
        let (uid, update_time) = (read.uid.0.to_vec(), read.update_time.as_micros());
        let (r, uid, events) = (r.clone(), uid.clone(), events.to_vec());
        self.mutate(move |tx| {
            let (r, uid, events) = (r.clone(), uid.clone(), events.clone());
            Box::pin(async move {
                let current = tx
                    .query_opt(
                        "SELECT uid, update_time FROM credentials WHERE workspace_id = $1 AND credential_id = $2 FOR UPDATE",
                        &[&r.workspace_id, &r.credential_id],
                    )
                    .await?;
                let Some(current) = current else { return Ok(Replaced::Missing) };
                if current.get::<_, Vec<u8>>(0) != uid {
                    return Ok(Replaced::Missing);
                }
                if current.get::<_, i64>(1) != update_time {
                    return Ok(Replaced::Stale);
                }
                tx.execute(
                    "UPDATE credentials SET registry_host = $3, registry_namespace = $4, username = $5, \
                     secret_version = $6, allowed_projects = $7, allow_passthrough = $8, token_realm_allowlist = $9, \
                     ca_bundle_pem = $10, description = $11, update_time = $12, secret_kek_id = $13, \
                     secret_wrapped_dek = $14, secret_ciphertext = $15, provider_settings = $16, expire_time = $17 \
                     WHERE workspace_id = $1 AND credential_id = $2",
                    &[
                        &r.workspace_id,
                        &r.credential_id,
                        &r.registry_host,
                        &r.registry_namespace,
                        &r.username,
                        &r.secret_version,
                        &r.allowed_projects,
                        &r.allow_passthrough,
                        &r.token_realm_allowlist,
                        &r.ca_bundle_pem,
                        &r.description,
                        &r.update_time,
                        &r.secret_kek_id,
                        &r.secret_wrapped_dek,
                        &r.secret_ciphertext,
                        &r.provider_settings,
                        &r.expire_time,
                    ],
                )
                .await?;
                tx.audit(&events)?;
                Ok(Replaced::Done)
            })
        })
        .await
    }

    async fn delete_credential(&self, name: &CredentialName, events: &[AuditEvent]) -> Result<bool, Error> {
        let sql = "DELETE FROM credentials WHERE workspace_id = $1 AND credential_id = $2";
        self.delete_audited(sql, name.workspace.as_str(), name.credential.as_str(), events).await
    }

    async fn insert_identity_provider(&self, provider: &IdentityProvider, events: &[AuditEvent]) -> Result<(), Error> {
        let (r, events, name) = (IdentityProviderRow::of(provider), events.to_vec(), provider.id.name());
        self.mutate(move |tx| {
            let (r, events, name) = (r.clone(), events.clone(), name.clone());
            Box::pin(async move {
                let inserted = tx
                    .execute(
                        &format!(
                            "INSERT INTO identity_providers ({PROVIDER_COLUMNS}) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING"
                        ),
                        &[
                            &r.id,
                            &r.issuer,
                            &r.jwks_uri,
                            &r.jwks,
                            &r.ca_certificates,
                            &r.audiences,
                            &r.allowed_algorithms,
                            &r.max_token_lifetime_s,
                            &r.clock_skew_s,
                            &r.description,
                            &r.create_time,
                            &r.update_time,
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    let id_taken = tx.query_opt("SELECT 1 FROM identity_providers WHERE id = $1", &[&r.id]).await?;
                    return Err(match id_taken {
                        Some(_) => Error::already_exists(name),
                        None => super::issuer_taken(&r.issuer),
                    }
                    .into());
                }
                tx.audit(&events)?;
                Ok(())
            })
        })
        .await
    }

    async fn replace_identity_provider(
        &self,
        read_update_time: Timestamp,
        provider: &IdentityProvider,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error> {
        let (r, events) = (IdentityProviderRow::of(provider), events.to_vec());
        self.mutate(move |tx| {
            let (r, events) = (r.clone(), events.clone());
            Box::pin(async move {
                let current = tx
                    .query_opt("SELECT update_time FROM identity_providers WHERE id = $1 FOR UPDATE", &[&r.id])
                    .await?;
                let Some(current) = current else { return Ok(Replaced::Missing) };
                if current.get::<_, i64>(0) != read_update_time.as_micros() {
                    return Ok(Replaced::Stale);
                }
                let taken = tx
                    .query_opt("SELECT 1 FROM identity_providers WHERE issuer = $1 AND id <> $2", &[&r.issuer, &r.id])
                    .await?;
                if taken.is_some() {
                    return Err(super::issuer_taken(&r.issuer).into());
                }
                tx.execute(
                    "UPDATE identity_providers SET issuer = $2, jwks_uri = $3, jwks = $4, ca_certificates = $5, \
                     audiences = $6, allowed_algorithms = $7, max_token_lifetime_s = $8, clock_skew_s = $9, \
                     description = $10, update_time = $11 WHERE id = $1",
                    &[
                        &r.id,
                        &r.issuer,
                        &r.jwks_uri,
                        &r.jwks,
                        &r.ca_certificates,
                        &r.audiences,
                        &r.allowed_algorithms,
                        &r.max_token_lifetime_s,
                        &r.clock_skew_s,
                        &r.description,
                        &r.update_time,
                    ],
                )
                .await?;
                tx.audit(&events)?;
                Ok(Replaced::Done)
            })
        })
        .await
    }

    async fn identity_providers(&self) -> Result<Vec<IdentityProvider>, Error> {
        let rows = self.query(&format!("SELECT {PROVIDER_COLUMNS} FROM identity_providers ORDER BY id"), &[]).await?;
        rows.iter().map(|r| provider_row(r).provider()).collect::<Result<_, _>>().map_err(Error::from)
    }

    async fn delete_identity_provider(
        &self,
        id: &IdentityProviderId,
        force: bool,
        events: &[AuditEvent],
    ) -> Result<ProviderDeletion, Error> {
        let (id, events) = (id.as_str().to_owned(), events.to_vec());
        self.mutate(move |tx| {
            let (id, events) = (id.clone(), events.clone());
            Box::pin(async move {
                // Locked first, so a binding cannot be created for it meanwhile.
                if tx.query_opt("SELECT 1 FROM identity_providers WHERE id = $1 FOR UPDATE", &[&id]).await?.is_none() {
                    return Ok(ProviderDeletion::Missing);
                }
                let bindings: i64 =
                    tx.query_one("SELECT count(*) FROM identity_bindings WHERE provider_id = $1", &[&id]).await?.get(0);
                if bindings > 0 && !force {
                    return Ok(ProviderDeletion::InUse { bindings: bindings as u64 });
                }
                let bindings = tx.execute("DELETE FROM identity_bindings WHERE provider_id = $1", &[&id]).await?;
                tx.execute("DELETE FROM identity_providers WHERE id = $1", &[&id]).await?;
                tx.audit(&events)?;
                Ok(ProviderDeletion::Deleted { bindings })
            })
        })
        .await
    }

    async fn insert_identity_binding(&self, binding: &IdentityBinding, events: &[AuditEvent]) -> Result<(), Error> {
        let (r, events, name) = (IdentityBindingRow::of(binding), events.to_vec(), binding.name.to_string());
        self.mutate(move |tx| {
            let (r, events, name) = (r.clone(), events.clone(), name.clone());
            Box::pin(async move {
                if tx.query_opt("SELECT 1 FROM workspaces WHERE id = $1 FOR SHARE", &[&r.workspace_id]).await?.is_none()
                {
                    return Err(Error::not_found(format!("workspaces/{}", r.workspace_id)).into());
                }
                if tx
                    .query_opt("SELECT 1 FROM identity_providers WHERE id = $1 FOR SHARE", &[&r.provider_id])
                    .await?
                    .is_none()
                {
                    return Err(Error::not_found(format!("identityProviders/{}", r.provider_id)).into());
                }
                let inserted = tx
                    .execute(
                        &format!(
                            "INSERT INTO identity_bindings ({BINDING_COLUMNS}) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"
                        ),
                        &[
                            &r.workspace_id,
                            &r.id,
                            &r.provider_id,
                            &r.bound_claims,
                            &r.role,
                            &r.allowed_projects,
                            &r.description,
                            &r.create_time,
                            &r.update_time,
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(Error::already_exists(name).into());
                }
                tx.audit(&events)?;
                Ok(())
            })
        })
        .await
    }

    async fn replace_identity_binding(
        &self,
        read_update_time: Timestamp,
        binding: &IdentityBinding,
        events: &[AuditEvent],
    ) -> Result<Replaced, Error> {
        let (r, events) = (IdentityBindingRow::of(binding), events.to_vec());
        self.mutate(move |tx| {
            let (r, events) = (r.clone(), events.clone());
            Box::pin(async move {
                let current = tx
                    .query_opt(
                        "SELECT update_time FROM identity_bindings WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
                        &[&r.workspace_id, &r.id],
                    )
                    .await?;
                let Some(current) = current else { return Ok(Replaced::Missing) };
                if current.get::<_, i64>(0) != read_update_time.as_micros() {
                    return Ok(Replaced::Stale);
                }
                tx.execute(
                    "UPDATE identity_bindings SET bound_claims = $3, role = $4, allowed_projects = $5, \
                     description = $6, update_time = $7 WHERE workspace_id = $1 AND id = $2",
                    &[
                        &r.workspace_id,
                        &r.id,
                        &r.bound_claims,
                        &r.role,
                        &r.allowed_projects,
                        &r.description,
                        &r.update_time,
                    ],
                )
                .await?;
                tx.audit(&events)?;
                Ok(Replaced::Done)
            })
        })
        .await
    }

    async fn identity_bindings(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<IdentityBinding>, Error> {
        let rows = match workspace {
            Some(workspace) => {
                self.query(
                    &format!(
                        "SELECT {BINDING_COLUMNS} FROM identity_bindings WHERE workspace_id = $1 ORDER BY workspace_id, id"
                    ),
                    &[&workspace.as_str()],
                )
                .await?
            }
            None => {
                self.query(&format!("SELECT {BINDING_COLUMNS} FROM identity_bindings ORDER BY workspace_id, id"), &[])
                    .await?
            }
        };
        rows.iter().map(|r| binding_row(r).binding()).collect::<Result<_, _>>().map_err(Error::from)
    }

    async fn delete_identity_binding(&self, name: &IdentityBindingName, events: &[AuditEvent]) -> Result<bool, Error> {
        let sql = "DELETE FROM identity_bindings WHERE workspace_id = $1 AND id = $2";
        self.delete_audited(sql, name.workspace.as_str(), name.binding.as_str(), events).await
    }

    async fn credentials_page(
        &self,
        not_under_key: Option<&str>,
        cursor: &RowCursor,
        limit: usize,
    ) -> Result<Vec<StoredCredential>, Error> {
        let (workspace, credential) = cursor.clone().unwrap_or_default();
        let rows = self
            .query(
                &format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials \
                     WHERE ($1::TEXT IS NULL OR secret_kek_id <> $1) AND (workspace_id, credential_id) > ($2, $3) \
                     ORDER BY workspace_id, credential_id LIMIT $4"
                ),
                &[&not_under_key, &workspace, &credential, &(limit as i64)],
            )
            .await?;
        rows.iter().map(|r| credential_row(r).stored()).collect::<Result<_, _>>().map_err(Error::from)
    }

    async fn rewrap(&self, rows: &[Rewrap]) -> Result<usize, Error> {
        self.retrying(|mut client| {
            let rows = rows.to_vec();
            async move {
                let tx = client.transaction().await?;
                tx.batch_execute(IDLE_IN_TRANSACTION).await?;
                let mut stored = 0;
                for row in &rows {
                    let c = &row.credential;
                    stored += tx
                        .execute(
                            "UPDATE credentials SET secret_kek_id = $4, secret_wrapped_dek = $5 \
                             WHERE workspace_id = $1 AND credential_id = $2 AND secret_version = $3 AND uid = $6",
                            &[
                                &c.name.workspace.as_str(),
                                &c.name.credential.as_str(),
                                &(c.secret_version as i64),
                                &row.sealed.kek_id,
                                &row.sealed.wrapped_dek,
                                &c.uid.0.as_slice(),
                            ],
                        )
                        .await? as usize;
                }
                tx.commit().await?;
                Ok(stored)
            }
        })
        .await
    }

    async fn count_not_under_key(&self, kek_id: &str) -> Result<u64, Error> {
        let rows = self
            .query("SELECT coalesce(sum(data_keys), 0)::BIGINT FROM key_usage WHERE kek_id <> $1", &[&kek_id])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    async fn insert_token(&self, record: &AccessTokenRecord, events: &[AuditEvent]) -> Result<(), Error> {
        let r = TokenRow::of(record);
        let (r, events) = (r.clone(), events.to_vec());
        self.mutate(move |tx| {
            let (r, events) = (r.clone(), events.clone());
            Box::pin(async move {
                if let Some(workspace) = &r.workspace_id
                    && tx.query_opt("SELECT 1 FROM workspaces WHERE id = $1 FOR SHARE", &[workspace]).await?.is_none()
                {
                    return Err(Error::not_found(format!("workspaces/{workspace}")).into());
                }
                let inserted = tx
                    .execute(
                        &format!(
                            "INSERT INTO access_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                             ON CONFLICT DO NOTHING"
                        ),
                        &[
                            &r.id,
                            &r.workspace_id,
                            &r.role,
                            &r.projects,
                            &r.token_hash,
                            &r.description,
                            &r.create_time,
                            &r.expire_time,
                            &r.revoke_time,
                            &r.last_used_time,
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(Error::internal("token id collision; retry").into());
                }
                tx.audit(&events)?;
                Ok(())
            })
        })
        .await
    }

    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<AccessTokenRecord>, Error> {
        let rows = self
            .query(&format!("SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE token_hash = $1"), &[&hash.as_slice()])
            .await?;
        rows.first().map(|r| token_row(r).record()).transpose().map_err(Error::from)
    }

    async fn token_by_id(&self, id: &AccessTokenId) -> Result<Option<AccessTokenRecord>, Error> {
        let rows =
            self.query(&format!("SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE id = $1"), &[&id.as_str()]).await?;
        rows.first().map(|r| token_row(r).record()).transpose().map_err(Error::from)
    }

    async fn token(&self, workspace: &WorkspaceId, id: &AccessTokenId) -> Result<Option<AccessTokenRecord>, Error> {
        let rows = self
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE workspace_id = $1 AND id = $2"),
                &[&workspace.as_str(), &id.as_str()],
            )
            .await?;
        rows.first().map(|r| token_row(r).record()).transpose().map_err(Error::from)
    }

    async fn tokens(
        &self,
        workspace: &WorkspaceId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<AccessTokenRecord>>, Error> {
        if self.workspace(workspace).await?.is_none() {
            return Ok(None);
        }
        let rows = self
            .query(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ),
                &[&workspace.as_str(), &after.unwrap_or(""), &(limit as i64)],
            )
            .await?;
        rows.iter().map(|r| token_row(r).record()).collect::<Result<_, _>>().map(Some).map_err(Error::from)
    }

    async fn revoke_token(
        &self,
        workspace: &WorkspaceId,
        id: &AccessTokenId,
        at: Timestamp,
        events: &[AuditEvent],
    ) -> Result<Option<AccessTokenRecord>, Error> {
        let (workspace, id, events) = (workspace.as_str().to_owned(), id.as_str().to_owned(), events.to_vec());
        self.mutate(move |tx| {
            let (workspace, id, events) = (workspace.clone(), id.clone(), events.clone());
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        &format!(
                            "UPDATE access_tokens SET revoke_time = coalesce(revoke_time, $3) \
                             WHERE workspace_id = $1 AND id = $2 RETURNING {TOKEN_COLUMNS}"
                        ),
                        &[&workspace, &id, &at.as_micros()],
                    )
                    .await?;
                let Some(row) = row else { return Ok(None) };
                tx.audit(&events)?;
                Ok(Some(token_row(&row).record()?))
            })
        })
        .await
    }

    async fn touch_tokens(&self, uses: &[(AccessTokenId, Timestamp)]) -> Result<(), Error> {
        self.bounded(async {
            let client = self.client().await?;
            for (id, at) in uses {
                client
                    .execute(
                        "UPDATE access_tokens SET last_used_time = $2 WHERE id = $1",
                        &[&id.as_str(), &at.as_micros()],
                    )
                    .await
                    .map_err(pg)?;
            }
            Ok(())
        })
        .await
    }

    async fn any_root_token(&self) -> Result<bool, Error> {
        Ok(!self.query("SELECT 1 FROM access_tokens WHERE workspace_id IS NULL LIMIT 1", &[]).await?.is_empty())
    }

    async fn root_tokens(&self) -> Result<Vec<AccessTokenRecord>, Error> {
        let rows = self
            .query(&format!("SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE workspace_id IS NULL ORDER BY id"), &[])
            .await?;
        rows.iter().map(|r| token_row(r).record()).collect::<Result<_, _>>().map_err(Error::from)
    }

    async fn revoke_root_token(
        &self,
        id: &AccessTokenId,
        at: Timestamp,
        keep_one: bool,
        events: &[AuditEvent],
    ) -> Result<RootRevocation, Error> {
        let (id, events) = (id.clone(), events.to_vec());
        self.mutate(move |tx| {
            let (id, events) = (id.clone(), events.clone());
            Box::pin(async move {
                // Every root row locked, in one order: a revocation racing
                // this one (on any replica) waits, then sees this one's.
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE workspace_id IS NULL ORDER BY id FOR UPDATE"
                        ),
                        &[],
                    )
                    .await?;
                let roots = rows.iter().map(|r| token_row(r).record()).collect::<Result<Vec<_>, _>>()?;
                if let Some(outcome) = super::refused_root_revocation(&roots, &id, at, keep_one) {
                    return Ok(outcome);
                }
                let row = tx
                    .query_one(
                        &format!(
                            "UPDATE access_tokens SET revoke_time = coalesce(revoke_time, $2) \
                             WHERE workspace_id IS NULL AND id = $1 RETURNING {TOKEN_COLUMNS}"
                        ),
                        &[&id.as_str(), &at.as_micros()],
                    )
                    .await?;
                tx.audit(&events)?;
                Ok(RootRevocation::Revoked(token_row(&row).record()?))
            })
        })
        .await
    }

    async fn touch_credentials(&self, uses: &[CredentialUse]) -> Result<(), Error> {
        for (name, uid, at) in uses {
            self.query(
                "UPDATE credentials SET last_used_time = $4 \
                 WHERE workspace_id = $1 AND credential_id = $2 AND uid = $3 \
                   AND (last_used_time IS NULL OR last_used_time < $4)",
                &[&name.workspace.as_str(), &name.credential.as_str(), &&uid.0[..], &at.as_micros()],
            )
            .await?;
        }
        Ok(())
    }

    async fn record_credential_failures(&self, failures: &[CredentialFailureRecord]) -> Result<(), Error> {
        for (name, uid, failure) in failures {
            self.query(
                "UPDATE credentials SET last_failure_time = $4, last_failure_reason = $5, \
                   failing_since = CASE WHEN last_failure_time IS NULL OR last_failure_time <= coalesce(last_used_time, 0) \
                     THEN $4 ELSE coalesce(failing_since, last_failure_time) END \
                 WHERE workspace_id = $1 AND credential_id = $2 AND uid = $3 \
                   AND (last_failure_time IS NULL OR last_failure_time < $4)",
                &[
                    &name.workspace.as_str(),
                    &name.credential.as_str(),
                    &&uid.0[..],
                    &failure.time.as_micros(),
                    &failure.reason.name(),
                ],
            )
            .await?;
        }
        Ok(())
    }

    async fn credential_health(&self, deadlines: &[Timestamp]) -> Result<CredentialHealth, Error> {
        let mut expiring = Vec::with_capacity(deadlines.len());
        for deadline in deadlines {
            let rows = self
                .query(
                    "SELECT count(*) FROM credentials WHERE expire_time IS NOT NULL AND expire_time <= $1",
                    &[&deadline.as_micros()],
                )
                .await?;
            expiring.push(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64);
        }
        let rows = self
            .query(
                "SELECT count(*) FROM credentials WHERE last_failure_time IS NOT NULL \
                   AND (last_used_time IS NULL OR last_failure_time > last_used_time)",
                &[],
            )
            .await?;
        let failing = rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64;
        Ok(CredentialHealth { expiring, failing })
    }

    async fn insert_console_session(&self, session: &ConsoleSession) -> Result<(), Error> {
        self.query("DELETE FROM console_sessions WHERE expire_time <= $1", &[&Timestamp::now().as_micros()]).await?;
        let r = SessionRow::of(session);
        self.query(
            &format!("INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[&r.id_hash, &r.kind, &r.token_id, &r.create_time, &r.expire_time, &r.last_seen],
        )
        .await?;
        Ok(())
    }

    async fn console_session(&self, hash: &[u8; 32]) -> Result<Option<ConsoleSession>, Error> {
        let rows = self
            .query(
                &format!("SELECT {SESSION_COLUMNS} FROM console_sessions WHERE id_hash = $1 AND kind = $2"),
                &[&&hash[..], &SessionKind::Session.code()],
            )
            .await?;
        rows.first().map(|r| session_row(r).session()).transpose().map_err(Error::from)
    }

    async fn console_login(&self, hash: &[u8; 32]) -> Result<Option<ConsoleSession>, Error> {
        let rows = self
            .query(
                &format!("SELECT {SESSION_COLUMNS} FROM console_sessions WHERE id_hash = $1 AND kind = $2"),
                &[&&hash[..], &SessionKind::LoginLink.code()],
            )
            .await?;
        rows.first().map(|r| session_row(r).session()).transpose().map_err(Error::from)
    }

    async fn redeem_console_login(&self, hash: &[u8; 32], now: Timestamp) -> Result<Option<ConsoleSession>, Error> {
        let rows = self
            .query(
                &format!(
                    "DELETE FROM console_sessions WHERE id_hash = $1 AND kind = $2 AND expire_time > $3 \
                     RETURNING {SESSION_COLUMNS}"
                ),
                &[&&hash[..], &SessionKind::LoginLink.code(), &now.as_micros()],
            )
            .await?;
        rows.first().map(|r| session_row(r).session()).transpose().map_err(Error::from)
    }

    async fn touch_console_session(&self, hash: &[u8; 32], at: Timestamp) -> Result<(), Error> {
        self.query(
            "UPDATE console_sessions SET last_seen = $2 WHERE id_hash = $1 AND last_seen < $2",
            &[&&hash[..], &at.as_micros()],
        )
        .await?;
        Ok(())
    }

    async fn delete_console_session(&self, hash: &[u8; 32]) -> Result<(), Error> {
        self.query("DELETE FROM console_sessions WHERE id_hash = $1", &[&&hash[..]]).await?;
        Ok(())
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), Error> {
        let events = events.to_vec();
        self.mutate(move |tx| {
            let events = events.clone();
            Box::pin(async move {
                tx.audit(&events)?;
                Ok(())
            })
        })
        .await
    }

    async fn audit_events(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, Error> {
        let rows = self
            .query(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > $1 \
                       AND ($2::TEXT IS NULL OR workspace_id = $2) AND ($3::TEXT IS NULL OR action = $3) \
                       AND ($4::TEXT IS NULL OR resource = $4) AND ($5::TEXT IS NULL OR principal = $5) \
                       AND ($6::BIGINT IS NULL OR event_time >= $6) AND ($7::BIGINT IS NULL OR event_time < $7) \
                     ORDER BY seq LIMIT $8"
                ),
                &[
                    &after_seq,
                    &filter.workspace,
                    &filter.action,
                    &filter.resource,
                    &filter.principal,
                    &filter.since.map(Timestamp::as_micros),
                    &filter.before.map(Timestamp::as_micros),
                    &(limit as i64),
                ],
            )
            .await?;
        rows.iter().map(|r| audit_row(r).record()).collect::<Result<_, _>>().map_err(Error::from)
    }

    async fn audit_head(&self) -> Result<Option<ChainLink>, Error> {
        let rows = self.query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1", &[]).await?;
        rows.first()
            .map(|r| {
                let hash: Vec<u8> = r.get(1);
                Ok((r.get(0), hash.try_into().map_err(|_| StoreError::Corrupt("audit hash length".into()))?))
            })
            .transpose()
    }

    async fn audit_checkpoint(&self) -> Result<Option<ChainLink>, Error> {
        let rows = self.query("SELECT value FROM meta WHERE key = $1", &[&super::CHECKPOINT_KEY]).await?;
        rows.first().map(|r| super::parse_checkpoint(r.get(0))).transpose().map_err(Error::from)
    }

    async fn leases_per_hour(&self, workspace: &WorkspaceId, since: Timestamp) -> Result<Vec<(Timestamp, u64)>, Error> {
        let rows = self
            .query(
                "SELECT (event_time / 3600000000) * 3600000000 AS hour, sum(call_count)::BIGINT FROM audit_events \
                 WHERE workspace_id = $1 AND event_time >= $2 AND status_code = 0 \
                   AND action IN ('IssueRegistryAuth', 'GatewayPull') \
                 GROUP BY hour ORDER BY hour",
                &[&workspace.as_str(), &since.as_micros()],
            )
            .await?;
        Ok(rows.iter().map(|r| (Timestamp::from_micros(r.get(0)), r.get::<_, i64>(1) as u64)).collect())
    }

    async fn prune_audit(&self, cutoff: Timestamp) -> Result<Pruned, Error> {
        // The run from the start of the chain whose events are all older
        // than the cutoff, deleted a batch per transaction (each within the
        // query timeout, the checkpoint moved with it), so a backlog of
        // millions is worked off rather than rolled back.
        let mut deleted = 0;
        loop {
            let (batch, more) = self
                .retrying(|mut client| async move {
                    let tx = client.transaction().await?;
                    tx.batch_execute(IDLE_IN_TRANSACTION).await?;
                    let rows = tx
                        .query(
                            "SELECT seq, event_time, hash FROM audit_events ORDER BY seq LIMIT $1",
                            &[&PRUNE_BATCH],
                        )
                        .await?;
                    let full = rows.len() as i64 == PRUNE_BATCH;
                    let old = rows.iter().take_while(|r| r.get::<_, i64>(1) < cutoff.as_micros()).count();
                    let Some(last) = old.checked_sub(1).map(|at| &rows[at]) else { return Ok((0, false)) };
                    let (seq, hash): (i64, Vec<u8>) = (last.get(0), last.get(2));
                    let hash: [u8; 32] =
                        hash.try_into().map_err(|_| StoreError::Corrupt("audit hash length".into()))?;
                    let batch = tx.execute("DELETE FROM audit_events WHERE seq <= $1", &[&seq]).await?;
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        &[&super::CHECKPOINT_KEY, &super::format_checkpoint((seq, hash))],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok((batch, full && old == rows.len()))
                })
                .await?;
            deleted += batch;
            if !more {
                break;
            }
        }
        // Counted up to a bound, so the scan stays within the timeout.
        let kept_older: i64 = self
            .query(
                "SELECT count(*) FROM (SELECT 1 FROM audit_events WHERE event_time < $1 LIMIT $2) older",
                &[&cutoff.as_micros(), &PRUNE_COUNT_LIMIT],
            )
            .await?
            .first()
            .map_or(0, |r| r.get(0));
        Ok(Pruned { deleted, kept_older: kept_older as u64 })
    }

    async fn facts(&self) -> Result<DatabaseFacts, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let version = migrations::current_version(&client).await?;
            Ok(read_facts(&**client, version).await?)
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Option<String>, Error> {
        let rows = self.query("SELECT value FROM meta WHERE key = $1", &[&super::SIGNING_KEYS]).await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn replace_signing_keys(
        &self,
        expected: Option<&str>,
        keys: &str,
        events: &[AuditEvent],
    ) -> Result<bool, Error> {
        let (expected, keys, events) = (expected.map(str::to_owned), keys.to_owned(), events.to_vec());
        self.mutate(move |tx| {
            let (expected, keys, events) = (expected.clone(), keys.clone(), events.clone());
            Box::pin(async move {
                // The row is locked (or, before the first key, the insert
                // conflicts), so two processes cannot both replace one set.
                let current: Option<String> = tx
                    .query_opt("SELECT value FROM meta WHERE key = $1 FOR UPDATE", &[&super::SIGNING_KEYS])
                    .await?
                    .map(|r| r.get(0));
                if current != expected {
                    return Ok(false);
                }
                let changed = tx
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE meta.value = $3",
                        &[&super::SIGNING_KEYS, &keys, &expected.as_deref().unwrap_or("")],
                    )
                    .await?;
                if changed == 0 {
                    return Ok(false);
                }
                tx.audit(&events)?;
                Ok(true)
            })
        })
        .await
    }

    async fn record_keys(&self, checks: &[(String, Vec<u8>)], active: &str) -> Result<(), Error> {
        self.retrying(|mut client| {
            let (checks, active) = (checks.to_vec(), active.to_owned());
            async move {
                let tx = client.transaction().await?;
                tx.batch_execute(IDLE_IN_TRANSACTION).await?;
                for (id, value) in &checks {
                    tx.execute(
                        "INSERT INTO key_checks (kek_id, check_value, create_time) VALUES ($1, $2, $3) ON CONFLICT (kek_id) DO NOTHING",
                        &[id, value, &Timestamp::now().as_micros()],
                    )
                    .await?;
                }
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&super::ACTIVE_KEY_ID, &active],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await
    }

    fn shared(&self) -> Option<&dyn super::Shared> {
        Some(self)
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close();
    }
}
