//! Queries on the `credentials` table. Secrets are stored only as the three
//! opaque columns of a [`SealedSecret`].

use rusqlite::{Connection, Row, params};

use crate::domain::credential::StoredCredential;
use crate::domain::{Credential, CredentialName, Provider, SealedSecret, Timestamp, WorkspaceId};
use crate::store::rows::CredentialRow;
use crate::store::{CredentialFilter, RowCursor, StoreError};

const META_COLUMNS: &str = "workspace_id, credential_id, uid, provider, registry_host, registry_namespace, \
     username, secret_version, allowed_projects, allow_passthrough, token_realm_allowlist, ca_bundle_pem, \
     description, create_time, update_time, last_used_time, provider_settings, expire_time, last_failure_time, \
     last_failure_reason, failing_since";
const SEALED_COLUMNS: &str = "secret_kek_id, secret_wrapped_dek, secret_ciphertext";

fn row_of(row: &Row<'_>, with_secret: bool) -> Result<CredentialRow, StoreError> {
    Ok(CredentialRow {
        workspace_id: row.get(0)?,
        credential_id: row.get(1)?,
        uid: row.get(2)?,
        provider: row.get(3)?,
        registry_host: row.get(4)?,
        registry_namespace: row.get(5)?,
        username: row.get(6)?,
        secret_version: row.get(7)?,
        allowed_projects: row.get(8)?,
        allow_passthrough: row.get(9)?,
        token_realm_allowlist: row.get(10)?,
        ca_bundle_pem: row.get(11)?,
        description: row.get(12)?,
        create_time: row.get(13)?,
        update_time: row.get(14)?,
        last_used_time: row.get(15)?,
        provider_settings: row.get(16)?,
        expire_time: row.get(17)?,
        last_failure_time: row.get(18)?,
        last_failure_reason: row.get(19)?,
        failing_since: row.get(20)?,
        secret_kek_id: if with_secret { row.get(21)? } else { String::new() },
        secret_wrapped_dek: if with_secret { row.get(22)? } else { Vec::new() },
        secret_ciphertext: if with_secret { row.get(23)? } else { Vec::new() },
    })
}

fn credential_from_row(row: &Row<'_>) -> Result<Credential, StoreError> {
    row_of(row, false)?.credential()
}

fn stored_from_row(row: &Row<'_>) -> Result<StoredCredential, StoreError> {
    row_of(row, true)?.stored()
}

/// Inserts a credential; `Conflict` if the name is taken in the workspace.
pub fn insert(conn: &Connection, stored: &StoredCredential) -> Result<(), StoreError> {
    let r = CredentialRow::of(stored);
    conn.prepare_cached(&format!(
        "INSERT INTO credentials ({META_COLUMNS}, {SEALED_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, \
         ?22, ?23, ?24)"
    ))?
    .execute(params![
        r.workspace_id,
        r.credential_id,
        r.uid,
        r.provider,
        r.registry_host,
        r.registry_namespace,
        r.username,
        r.secret_version,
        r.allowed_projects,
        r.allow_passthrough,
        r.token_realm_allowlist,
        r.ca_bundle_pem,
        r.description,
        r.create_time,
        r.update_time,
        r.last_used_time,
        r.provider_settings,
        r.expire_time,
        r.last_failure_time,
        r.last_failure_reason,
        r.failing_since,
        r.secret_kek_id,
        r.secret_wrapped_dek,
        r.secret_ciphertext,
    ])?;
    Ok(())
}

/// Replaces every column of an existing credential (matched by name and uid).
/// False if it no longer exists.
pub fn replace(conn: &Connection, stored: &StoredCredential) -> Result<bool, StoreError> {
    let r = CredentialRow::of(stored);
    let changed = conn
        .prepare_cached(
            "UPDATE credentials SET registry_host = ?3, registry_namespace = ?4, username = ?5, \
             secret_version = ?6, allowed_projects = ?7, allow_passthrough = ?8, token_realm_allowlist = ?9, \
             ca_bundle_pem = ?10, description = ?11, update_time = ?12, secret_kek_id = ?13, \
             secret_wrapped_dek = ?14, secret_ciphertext = ?15, provider_settings = ?17, expire_time = ?18 \
             WHERE workspace_id = ?1 AND credential_id = ?2 AND uid = ?16",
        )?
        .execute(params![
            r.workspace_id,
            r.credential_id,
            r.registry_host,
            r.registry_namespace,
            r.username,
            r.secret_version,
            r.allowed_projects,
            r.allow_passthrough,
            r.token_realm_allowlist,
            r.ca_bundle_pem,
            r.description,
            r.update_time,
            r.secret_kek_id,
            r.secret_wrapped_dek,
            r.secret_ciphertext,
            r.uid,
            r.provider_settings,
            r.expire_time,
        ])?;
    Ok(changed > 0)
}

/// One credential with its sealed secret.
pub fn get(conn: &Connection, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS}, {SEALED_COLUMNS} FROM credentials WHERE workspace_id = ?1 AND credential_id = ?2"
    ))?;
    let mut rows = statement.query(params![name.workspace.as_str(), name.credential.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(stored_from_row(row)?)),
        None => Ok(None),
    }
}

/// Up to `limit` credentials of a workspace with ids after `after`, ordered
/// by id, matching `filter`. Metadata only.
pub fn list(
    conn: &Connection,
    workspace: &WorkspaceId,
    filter: &CredentialFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Credential>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS} FROM credentials \
         WHERE workspace_id = ?1 AND credential_id > ?2 \
           AND (?3 IS NULL OR registry_host = ?3) AND (?4 IS NULL OR registry_namespace = ?4) \
           AND (?5 IS NULL OR provider = ?5) \
         ORDER BY credential_id LIMIT ?6"
    ))?;
    let registry = filter.registry.as_ref();
    let mut rows = statement.query(params![
        workspace.as_str(),
        after.unwrap_or(""),
        registry.map(|r| r.host().as_str()),
        registry.and_then(|r| r.namespace()),
        filter.provider.map(Provider::code),
        limit as i64,
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(credential_from_row(row)?);
    }
    Ok(out)
}

/// Every credential of a workspace, with sealed secrets: what the broker
/// indexes in memory to choose a credential for an image.
pub fn in_workspace(conn: &Connection, workspace: &WorkspaceId) -> Result<Vec<StoredCredential>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS}, {SEALED_COLUMNS} FROM credentials WHERE workspace_id = ?1 ORDER BY credential_id"
    ))?;
    let mut rows = statement.query(params![workspace.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(stored_from_row(row)?);
    }
    Ok(out)
}

/// Records when credentials last served a lease (never moving it back);
/// a credential replaced or deleted meanwhile (another uid) is left alone.
pub fn set_last_used(
    conn: &Connection,
    uses: &[(CredentialName, crate::domain::CredentialUid, crate::domain::Timestamp)],
) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(
        "UPDATE credentials SET last_used_time = ?4 \
         WHERE workspace_id = ?1 AND credential_id = ?2 AND uid = ?3 \
           AND (last_used_time IS NULL OR last_used_time < ?4)",
    )?;
    for (name, uid, at) in uses {
        statement.execute(params![name.workspace.as_str(), name.credential.as_str(), &uid.0[..], at.as_micros()])?;
    }
    Ok(())
}

/// Records credentials' last upstream refusals (never moving one back); a
/// credential replaced or deleted meanwhile (another uid) is left alone.
pub fn set_last_failure(
    conn: &Connection,
    failures: &[crate::store::CredentialFailureRecord],
) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(
        "UPDATE credentials SET last_failure_time = ?4, last_failure_reason = ?5, \
           failing_since = CASE WHEN last_failure_time IS NULL OR last_failure_time <= coalesce(last_used_time, 0) \
             THEN ?4 ELSE coalesce(failing_since, last_failure_time) END \
         WHERE workspace_id = ?1 AND credential_id = ?2 AND uid = ?3 \
           AND (last_failure_time IS NULL OR last_failure_time < ?4)",
    )?;
    for (name, uid, failure) in failures {
        statement.execute(params![
            name.workspace.as_str(),
            name.credential.as_str(),
            &uid.0[..],
            failure.time.as_micros(),
            failure.reason.name()
        ])?;
    }
    Ok(())
}

/// How many credentials expire by each of `deadlines` (expired included),
/// and how many are failing: every workspace's, for the health gauges.
pub fn health(conn: &Connection, deadlines: &[Timestamp]) -> Result<crate::store::CredentialHealth, StoreError> {
    let mut expiring = Vec::with_capacity(deadlines.len());
    for deadline in deadlines {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM credentials WHERE expire_time IS NOT NULL AND expire_time <= ?1",
            [deadline.as_micros()],
            |r| r.get(0),
        )?;
        expiring.push(n as u64);
    }
    let failing: i64 = conn.query_row(
        "SELECT count(*) FROM credentials WHERE last_failure_time IS NOT NULL \
           AND (last_used_time IS NULL OR last_failure_time > last_used_time)",
        [],
        |r| r.get(0),
    )?;
    Ok(crate::store::CredentialHealth { expiring, failing: failing as u64 })
}

/// Deletes a credential. False if absent.
pub fn delete(conn: &Connection, name: &CredentialName) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM credentials WHERE workspace_id = ?1 AND credential_id = ?2",
        params![name.workspace.as_str(), name.credential.as_str()],
    )? > 0)
}

/// The schema version that added `key_usage`.
const KEY_USAGE_SCHEMA: i64 = 3;

/// How many data keys each master-key id wraps, read from `key_usage`,
/// which triggers keep: no scan of the credentials. A database from before
/// that table (read once, before it is migrated) is counted the slow way.
pub fn key_usage(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let sql = if version >= KEY_USAGE_SCHEMA {
        "SELECT kek_id, data_keys FROM key_usage WHERE data_keys > 0 ORDER BY 1"
    } else {
        "SELECT secret_kek_id, count(*) FROM credentials GROUP BY 1 ORDER BY 1"
    };
    let mut statement = conn.prepare(sql)?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many stored data keys are wrapped under another key than `kek_id`.
pub fn count_not_under_key(conn: &Connection, kek_id: &str) -> Result<u64, StoreError> {
    let n: i64 =
        conn.query_row("SELECT coalesce(sum(data_keys), 0) FROM key_usage WHERE kek_id <> ?1", [kek_id], |r| r.get(0))?;
    Ok(n as u64)
}

/// Up to `limit` credentials after `cursor` (in workspace, id order), with
/// sealed secrets; only those wrapped under another key than `kek_id` when
/// one is given. For key rotation and verification.
pub fn walk(
    conn: &Connection,
    not_under_key: Option<&str>,
    cursor: &RowCursor,
    limit: usize,
) -> Result<Vec<StoredCredential>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS}, {SEALED_COLUMNS} FROM credentials \
         WHERE (?1 IS NULL OR secret_kek_id <> ?1) AND (workspace_id, credential_id) > (?2, ?3) \
         ORDER BY workspace_id, credential_id LIMIT ?4"
    ))?;
    let (workspace, credential) = cursor.clone().unwrap_or_default();
    let mut rows = statement.query(params![not_under_key, workspace, credential, limit as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(stored_from_row(row)?);
    }
    Ok(out)
}

/// Stores a rewrapped data key, if the row still holds the same secret
/// version. False if the row changed meanwhile (it is then re-read).
pub fn set_wrapped_key(conn: &Connection, credential: &Credential, sealed: &SealedSecret) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE credentials SET secret_kek_id = ?4, secret_wrapped_dek = ?5 \
         WHERE workspace_id = ?1 AND credential_id = ?2 AND secret_version = ?3 AND uid = ?6",
        params![
            credential.name.workspace.as_str(),
            credential.name.credential.as_str(),
            credential.secret_version as i64,
            sealed.kek_id,
            sealed.wrapped_dek,
            credential.uid.0.as_slice(),
        ],
    )? > 0)
}
