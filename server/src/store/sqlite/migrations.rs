//! Versioned schema migrations. Version N of the schema is reached by running
//! `MIGRATIONS[0..N]`, each in its own transaction together with the bump of
//! `PRAGMA user_version`, so a crash leaves the database at a whole version.
//! Append new migrations; never edit a released one.

use rusqlite::Connection;

use crate::store::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: workspaces, sealed credentials, access-token hashes, key checks.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    CREATE TABLE key_checks (
        kek_id      TEXT PRIMARY KEY,
        check_value BLOB NOT NULL,
        create_time INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE workspaces (
        id           TEXT PRIMARY KEY,
        kind         INTEGER NOT NULL,
        display_name TEXT NOT NULL,
        create_time  INTEGER NOT NULL
    ) STRICT;

    -- Clustered on the primary key and without secondary indexes: every
    -- index would cost another page write (and fsync'd bytes) per commit;
    -- reads go by primary key, and the broker keeps its own in-memory index.
    -- `uid` is 128 random bits, unique without a constraint.
    CREATE TABLE credentials (
        workspace_id          TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        credential_id         TEXT NOT NULL,
        uid                   BLOB NOT NULL,
        provider              INTEGER NOT NULL,
        registry_host         TEXT NOT NULL,
        registry_namespace    TEXT NOT NULL,
        username              TEXT NOT NULL,
        secret_version        INTEGER NOT NULL,
        secret_kek_id         TEXT NOT NULL,
        secret_wrapped_dek    BLOB NOT NULL,
        secret_ciphertext     BLOB NOT NULL,
        allowed_projects      TEXT NOT NULL,
        allow_passthrough     INTEGER NOT NULL,
        token_realm_allowlist TEXT NOT NULL,
        ca_bundle_pem         TEXT NOT NULL,
        description           TEXT NOT NULL,
        create_time           INTEGER NOT NULL,
        update_time           INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, credential_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE access_tokens (
        id             TEXT PRIMARY KEY,
        workspace_id   TEXT REFERENCES workspaces(id) ON DELETE CASCADE,
        role           INTEGER NOT NULL,
        projects       TEXT NOT NULL,
        token_hash     BLOB NOT NULL UNIQUE,
        description    TEXT NOT NULL,
        create_time    INTEGER NOT NULL,
        expire_time    INTEGER,
        revoke_time    INTEGER,
        last_used_time INTEGER
    ) STRICT;
    CREATE INDEX access_tokens_by_workspace ON access_tokens (workspace_id, id);
    "#,
    // 2: the audit trail, a hash chain over every event (see `audit`).
    r#"
    -- `seq` continues from the newest event (or the pruning checkpoint), so
    -- no AUTOINCREMENT bookkeeping is written per event.
    CREATE TABLE audit_events (
        seq            INTEGER PRIMARY KEY,
        event_time     INTEGER NOT NULL,
        workspace_id   TEXT NOT NULL,
        principal      TEXT NOT NULL,
        action         TEXT NOT NULL,
        resource       TEXT NOT NULL,
        status_code    INTEGER NOT NULL,
        client_address TEXT NOT NULL,
        request_id     TEXT NOT NULL,
        image          TEXT NOT NULL,
        granted_scope  TEXT NOT NULL,
        prev_hash      BLOB NOT NULL,
        hash           BLOB NOT NULL
    ) STRICT;
    CREATE INDEX audit_events_by_workspace ON audit_events (workspace_id, seq);
    "#,
    // 3: how many data keys each master key wraps, so start-up reads the
    // key facts in O(keys) instead of scanning every credential. Triggers
    // keep it in the transaction of each write that changes it (foreign-key
    // cascades fire them too); the counts start from one scan, here.
    r#"
    CREATE TABLE key_usage (
        kek_id    TEXT PRIMARY KEY,
        data_keys INTEGER NOT NULL CHECK (data_keys >= 0)
    ) STRICT;
    INSERT INTO key_usage (kek_id, data_keys)
        SELECT secret_kek_id, count(*) FROM credentials GROUP BY secret_kek_id;
    CREATE TRIGGER key_usage_on_insert AFTER INSERT ON credentials BEGIN
        INSERT INTO key_usage (kek_id, data_keys) VALUES (NEW.secret_kek_id, 1)
            ON CONFLICT (kek_id) DO UPDATE SET data_keys = data_keys + 1;
    END;
    CREATE TRIGGER key_usage_on_delete AFTER DELETE ON credentials BEGIN
        UPDATE key_usage SET data_keys = data_keys - 1 WHERE kek_id = OLD.secret_kek_id;
        DELETE FROM key_usage WHERE kek_id = OLD.secret_kek_id AND data_keys = 0;
    END;
    CREATE TRIGGER key_usage_on_rewrap AFTER UPDATE OF secret_kek_id ON credentials
        WHEN OLD.secret_kek_id IS NOT NEW.secret_kek_id BEGIN
        UPDATE key_usage SET data_keys = data_keys - 1 WHERE kek_id = OLD.secret_kek_id;
        DELETE FROM key_usage WHERE kek_id = OLD.secret_kek_id AND data_keys = 0;
        INSERT INTO key_usage (kek_id, data_keys) VALUES (NEW.secret_kek_id, 1)
            ON CONFLICT (kek_id) DO UPDATE SET data_keys = data_keys + 1;
    END;
    "#,
    // 4: lease events aggregate identical calls (see `audit::aggregate`):
    // how many calls an event stands for. Earlier events stand for one.
    r#"
    ALTER TABLE audit_events ADD COLUMN call_count INTEGER NOT NULL DEFAULT 1 CHECK (call_count >= 1);
    "#,
    // 5: the web console: when each credential last served a lease, and
    // console sign-ins (sessions and one-time login links; the SHA-256 of
    // their secret only), which go with their access token.
    r#"
    ALTER TABLE credentials ADD COLUMN last_used_time INTEGER;
    CREATE TABLE console_sessions (
        id_hash     BLOB PRIMARY KEY,
        kind        INTEGER NOT NULL,
        token_id    TEXT NOT NULL REFERENCES access_tokens(id) ON DELETE CASCADE,
        create_time INTEGER NOT NULL,
        expire_time INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX console_sessions_by_expiry ON console_sessions (expire_time);
    "#,
    // 6: workload identity: trusted JWT issuers, and what their tokens earn
    // in a workspace. Lists and claim maps are JSON text.
    r#"
    CREATE TABLE identity_providers (
        id                   TEXT PRIMARY KEY,
        issuer               TEXT NOT NULL UNIQUE,
        jwks_uri             TEXT NOT NULL,
        jwks                 TEXT NOT NULL,
        ca_certificates      TEXT NOT NULL,
        audiences            TEXT NOT NULL,
        allowed_algorithms   TEXT NOT NULL,
        max_token_lifetime_s INTEGER NOT NULL,
        clock_skew_s         INTEGER NOT NULL,
        description          TEXT NOT NULL,
        create_time          INTEGER NOT NULL,
        update_time          INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE identity_bindings (
        workspace_id     TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        id               TEXT NOT NULL,
        provider_id      TEXT NOT NULL REFERENCES identity_providers(id),
        bound_claims     TEXT NOT NULL,
        role             INTEGER NOT NULL,
        allowed_projects TEXT NOT NULL,
        description      TEXT NOT NULL,
        create_time      INTEGER NOT NULL,
        update_time      INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, id)
    ) STRICT;
    CREATE INDEX identity_bindings_by_provider ON identity_bindings (provider_id);
    "#,
    // 7: cloud registries without stored keys: how a provider is reached
    // beyond username and secret (ECR roles, ACR's app registration,
    // Google and Quay federation), as JSON; empty for none. A keyless
    // credential has secret_version 0.
    r#"
    ALTER TABLE credentials ADD COLUMN provider_settings TEXT NOT NULL DEFAULT '';
    "#,
    // 8: credential health: the upstream secret's own expiry (set by a
    // person or learned from the registry), the last upstream refusal (time
    // and typed reason, written like last_used_time), and an index for the
    // console's leases-per-hour chart.
    r#"
    ALTER TABLE credentials ADD COLUMN expire_time INTEGER;
    ALTER TABLE credentials ADD COLUMN last_failure_time INTEGER;
    ALTER TABLE credentials ADD COLUMN last_failure_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE credentials ADD COLUMN failing_since INTEGER;
    CREATE INDEX audit_events_by_workspace_time ON audit_events (workspace_id, event_time);
    "#,
];

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Fails, without writing, if the database is newer than this binary.
pub fn refuse_newer(conn: &Connection) -> Result<(), StoreError> {
    let found = current_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { found, supported: SCHEMA_VERSION });
    }
    Ok(())
}

/// Brings the database to [`SCHEMA_VERSION`], one transaction per version.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

fn migrate_to(conn: &mut Connection, target: i64) -> Result<(), StoreError> {
    refuse_newer(conn)?;
    let mut version = current_version(conn)?;
    while version < target {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        version += 1;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(schema_version = version, "database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_reaches_the_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(current_version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn key_usage_starts_from_the_credentials_a_version_2_database_holds() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 2).unwrap();
        conn.execute_batch("INSERT INTO workspaces VALUES ('a', 1, 'A', 0);").unwrap();
        for (id, kek) in [("c1", "k1"), ("c2", "k1"), ("c3", "k2")] {
            conn.execute(
                "INSERT INTO credentials VALUES ('a', ?1, x'00', 1, 'r', '', 'u', 1, ?2, x'00', x'00', '', 0, '', '', '', 0, 0)",
                [id, kek],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let usage: Vec<(String, i64)> = conn
            .prepare("SELECT kek_id, data_keys FROM key_usage ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(usage, [("k1".to_owned(), 2), ("k2".to_owned(), 1)]);
    }
}
