//! PostgreSQL schema migrations. Version N is reached by running
//! `MIGRATIONS[0..N]`, each in its own transaction together with the bump
//! of `pullpass_schema.version`, under a session advisory lock, so replicas
//! starting at once migrate once and the others wait. Append new
//! migrations; never edit a released one.

use tokio_postgres::Client;

use crate::store::StoreError;

/// The advisory lock key that serializes migrations ("pullpass" in ASCII).
const MIGRATION_LOCK: i64 = 0x7075_6c6c_7061_7373;

const MIGRATIONS: &[&str] = &[
    // 1: workspaces, sealed credentials, access-token hashes, key checks.
    // Ids sort bytewise (`COLLATE "C"`), as on SQLite, whatever the
    // database's locale: pages and `store copy` cursors rely on it.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE key_checks (
        kek_id      TEXT PRIMARY KEY,
        check_value BYTEA NOT NULL,
        create_time BIGINT NOT NULL
    );
    CREATE TABLE workspaces (
        id           TEXT COLLATE "C" PRIMARY KEY,
        kind         INTEGER NOT NULL,
        display_name TEXT NOT NULL,
        create_time  BIGINT NOT NULL
    );
    CREATE TABLE credentials (
        workspace_id          TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        credential_id         TEXT COLLATE "C" NOT NULL,
        uid                   BYTEA NOT NULL,
        provider              INTEGER NOT NULL,
        registry_host         TEXT NOT NULL,
        registry_namespace    TEXT NOT NULL,
        username              TEXT NOT NULL,
        secret_version        BIGINT NOT NULL,
        secret_kek_id         TEXT NOT NULL,
        secret_wrapped_dek    BYTEA NOT NULL,
        secret_ciphertext     BYTEA NOT NULL,
        allowed_projects      TEXT NOT NULL,
        allow_passthrough     BOOLEAN NOT NULL,
        token_realm_allowlist TEXT NOT NULL,
        ca_bundle_pem         TEXT NOT NULL,
        description           TEXT NOT NULL,
        create_time           BIGINT NOT NULL,
        update_time           BIGINT NOT NULL,
        PRIMARY KEY (workspace_id, credential_id)
    );
    CREATE TABLE access_tokens (
        id             TEXT COLLATE "C" PRIMARY KEY,
        workspace_id   TEXT COLLATE "C" REFERENCES workspaces(id) ON DELETE CASCADE,
        role           INTEGER NOT NULL,
        projects       TEXT NOT NULL,
        token_hash     BYTEA NOT NULL UNIQUE,
        description    TEXT NOT NULL,
        create_time    BIGINT NOT NULL,
        expire_time    BIGINT,
        revoke_time    BIGINT,
        last_used_time BIGINT
    );
    CREATE INDEX access_tokens_by_workspace ON access_tokens (workspace_id, id);
    "#,
    // 2: the audit trail. One chain for every replica: appends lock the
    // head row until they commit, so `seq` is gapless in commit order (and
    // serves as the change feed's cursor).
    r#"
    CREATE TABLE audit_events (
        seq            BIGINT PRIMARY KEY,
        event_time     BIGINT NOT NULL,
        workspace_id   TEXT NOT NULL,
        principal      TEXT NOT NULL,
        action         TEXT NOT NULL,
        resource       TEXT NOT NULL,
        status_code    INTEGER NOT NULL,
        client_address TEXT NOT NULL,
        request_id     TEXT NOT NULL,
        image          TEXT NOT NULL,
        granted_scope  TEXT NOT NULL,
        prev_hash      BYTEA NOT NULL,
        hash           BYTEA NOT NULL
    );
    CREATE INDEX audit_events_by_workspace ON audit_events (workspace_id, seq);
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  BIGINT NOT NULL,
        hash BYTEA NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');
    "#,
    // 3: what replicas share: sealed leases under their cache key, claims
    // electing one fetcher per key, and registries' Retry-After blocks.
    r#"
    CREATE TABLE shared_leases (
        key         TEXT PRIMARY KEY,
        sealed      BYTEA NOT NULL,
        expire_time BIGINT NOT NULL
    );
    CREATE INDEX shared_leases_by_expiry ON shared_leases (expire_time);
    CREATE TABLE lease_claims (
        key        TEXT PRIMARY KEY,
        owner      TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE upstream_blocks (
        key   TEXT PRIMARY KEY,
        until BIGINT NOT NULL
    );
    "#,
    // 4: how many data keys each master key wraps, so start-up reads the
    // key facts in O(keys) instead of scanning every credential. A trigger
    // keeps it in the transaction of each write that changes it (cascades
    // from workspaces included). The table lock keeps writes of replicas
    // still on version 3 out until the counts and the trigger commit.
    r#"
    LOCK TABLE credentials IN SHARE ROW EXCLUSIVE MODE;
    CREATE TABLE key_usage (
        kek_id    TEXT PRIMARY KEY,
        data_keys BIGINT NOT NULL CHECK (data_keys >= 0)
    );
    INSERT INTO key_usage (kek_id, data_keys)
        SELECT secret_kek_id, count(*) FROM credentials GROUP BY secret_kek_id;
    CREATE FUNCTION pullpass_key_usage() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.secret_kek_id = NEW.secret_kek_id THEN
            RETURN NULL;
        END IF;
        -- Decrement first (waiting for, then seeing, concurrent changes to
        -- the row), then drop it at zero: a DELETE matched on a snapshot
        -- could miss a row another transaction was about to decrement.
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            UPDATE key_usage SET data_keys = data_keys - 1 WHERE kek_id = OLD.secret_kek_id;
            DELETE FROM key_usage WHERE kek_id = OLD.secret_kek_id AND data_keys = 0;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO key_usage (kek_id, data_keys) VALUES (NEW.secret_kek_id, 1)
                ON CONFLICT (kek_id) DO UPDATE SET data_keys = key_usage.data_keys + 1;
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER key_usage AFTER INSERT OR DELETE OR UPDATE OF secret_kek_id ON credentials
        FOR EACH ROW EXECUTE FUNCTION pullpass_key_usage();
    "#,
    // 5: lease events aggregate identical calls (see `audit::aggregate`):
    // how many calls an event stands for. Earlier events stand for one.
    r#"
    ALTER TABLE audit_events ADD COLUMN call_count BIGINT NOT NULL DEFAULT 1 CHECK (call_count >= 1);
    "#,
    // 6: the web console: when each credential last served a lease, and
    // console sign-ins (sessions and one-time login links; the SHA-256 of
    // their secret only), which go with their access token.
    r#"
    ALTER TABLE credentials ADD COLUMN last_used_time BIGINT;
    CREATE TABLE console_sessions (
        id_hash     BYTEA PRIMARY KEY,
        kind        INTEGER NOT NULL,
        token_id    TEXT NOT NULL REFERENCES access_tokens(id) ON DELETE CASCADE,
        create_time BIGINT NOT NULL,
        expire_time BIGINT NOT NULL,
        last_seen   BIGINT NOT NULL
    );
    CREATE INDEX console_sessions_by_expiry ON console_sessions (expire_time);
    "#,
    // 7: workload identity: trusted JWT issuers, and what their tokens earn
    // in a workspace. Lists and claim maps are JSON text, as on SQLite.
    r#"
    CREATE TABLE identity_providers (
        id                   TEXT COLLATE "C" PRIMARY KEY,
        issuer               TEXT NOT NULL UNIQUE,
        jwks_uri             TEXT NOT NULL,
        jwks                 TEXT NOT NULL,
        ca_certificates      TEXT NOT NULL,
        audiences            TEXT NOT NULL,
        allowed_algorithms   TEXT NOT NULL,
        max_token_lifetime_s BIGINT NOT NULL,
        clock_skew_s         BIGINT NOT NULL,
        description          TEXT NOT NULL,
        create_time          BIGINT NOT NULL,
        update_time          BIGINT NOT NULL
    );
    CREATE TABLE identity_bindings (
        workspace_id     TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        id               TEXT COLLATE "C" NOT NULL,
        provider_id      TEXT COLLATE "C" NOT NULL REFERENCES identity_providers(id),
        bound_claims     TEXT NOT NULL,
        role             INTEGER NOT NULL,
        allowed_projects TEXT NOT NULL,
        description      TEXT NOT NULL,
        create_time      BIGINT NOT NULL,
        update_time      BIGINT NOT NULL,
        PRIMARY KEY (workspace_id, id)
    );
    CREATE INDEX identity_bindings_by_provider ON identity_bindings (provider_id);
    "#,
    // 8: cloud registries without stored keys: how a provider is reached
    // beyond username and secret, as JSON; empty for none (as on SQLite).
    r#"
    ALTER TABLE credentials ADD COLUMN provider_settings TEXT NOT NULL DEFAULT '';
    "#,
    // 9: credential health (as on SQLite): the upstream secret's expiry, the
    // last upstream refusal, and an index for the leases-per-hour chart.
    r#"
    ALTER TABLE credentials ADD COLUMN expire_time BIGINT;
    ALTER TABLE credentials ADD COLUMN last_failure_time BIGINT;
    ALTER TABLE credentials ADD COLUMN last_failure_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE credentials ADD COLUMN failing_since BIGINT;
    CREATE INDEX audit_events_by_workspace_time ON audit_events (workspace_id, event_time);
    "#,
];

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The database's schema version, read without writing (0 for an empty
/// database).
pub async fn current_version(client: &Client) -> Result<i64, StoreError> {
    let exists: bool =
        client.query_one("SELECT to_regclass('pullpass_schema') IS NOT NULL", &[]).await.map_err(super::pg)?.get(0);
    if !exists {
        return Ok(0);
    }
    let row = client.query_one("SELECT version FROM pullpass_schema", &[]).await.map_err(super::pg)?;
    Ok(row.get(0))
}

/// Brings the database to [`SCHEMA_VERSION`] under the migration lock.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(super::pg)?;
    let result = migrate_locked(client).await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result?;
    unlocked.map_err(super::pg)?;
    Ok(())
}

async fn migrate_locked(client: &mut Client) -> Result<(), StoreError> {
    let mut version = current_version(client).await?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew { found: version, supported: SCHEMA_VERSION });
    }
    while version < SCHEMA_VERSION {
        let tx = client.transaction().await.map_err(super::pg)?;
        if version == 0 {
            tx.batch_execute(
                "CREATE TABLE pullpass_schema (version BIGINT NOT NULL); INSERT INTO pullpass_schema VALUES (0);",
            )
            .await
            .map_err(super::pg)?;
        }
        tx.batch_execute(MIGRATIONS[version as usize]).await.map_err(super::pg)?;
        version += 1;
        tx.execute("UPDATE pullpass_schema SET version = $1", &[&version]).await.map_err(super::pg)?;
        tx.commit().await.map_err(super::pg)?;
        tracing::info!(schema_version = version, "database migrated (PostgreSQL)");
    }
    Ok(())
}
