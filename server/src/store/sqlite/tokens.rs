//! Queries on the `access_tokens` table. Only SHA-256 hashes of token strings
//! are stored.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::domain::{AccessTokenId, AccessTokenRecord, Timestamp, WorkspaceId};
use crate::store::StoreError;
use crate::store::rows::TokenRow;

const COLUMNS: &str =
    "id, workspace_id, role, projects, token_hash, description, create_time, expire_time, revoke_time, last_used_time";

fn from_row(row: &Row<'_>) -> Result<AccessTokenRecord, StoreError> {
    TokenRow {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        role: row.get(2)?,
        projects: row.get(3)?,
        token_hash: row.get(4)?,
        description: row.get(5)?,
        create_time: row.get(6)?,
        expire_time: row.get(7)?,
        revoke_time: row.get(8)?,
        last_used_time: row.get(9)?,
    }
    .record()
}

fn query_one(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<AccessTokenRecord>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    match rows.next()? {
        Some(row) => Ok(Some(from_row(row)?)),
        None => Ok(None),
    }
}

/// Inserts a token record.
pub fn insert(conn: &Connection, token: &AccessTokenRecord) -> Result<(), StoreError> {
    let r = TokenRow::of(token);
    conn.prepare_cached(&format!(
        "INSERT INTO access_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        r.id,
        r.workspace_id,
        r.role,
        r.projects,
        r.token_hash,
        r.description,
        r.create_time,
        r.expire_time,
        r.revoke_time,
        r.last_used_time,
    ])?;
    Ok(())
}

/// The token whose string hashes to `hash`.
pub fn find_by_hash(conn: &Connection, hash: &[u8; 32]) -> Result<Option<AccessTokenRecord>, StoreError> {
    query_one(conn, &format!("SELECT {COLUMNS} FROM access_tokens WHERE token_hash = ?1"), [hash.as_slice()])
}

/// The token with id `id`, in any workspace (or a root token).
pub fn find_by_id(conn: &Connection, id: &AccessTokenId) -> Result<Option<AccessTokenRecord>, StoreError> {
    query_one(conn, &format!("SELECT {COLUMNS} FROM access_tokens WHERE id = ?1"), [id.as_str()])
}

/// One token of a workspace.
pub fn get(
    conn: &Connection,
    workspace: &WorkspaceId,
    id: &AccessTokenId,
) -> Result<Option<AccessTokenRecord>, StoreError> {
    query_one(
        conn,
        &format!("SELECT {COLUMNS} FROM access_tokens WHERE workspace_id = ?1 AND id = ?2"),
        params![workspace.as_str(), id.as_str()],
    )
}

/// Up to `limit` tokens of a workspace with ids after `after`.
pub fn list(
    conn: &Connection,
    workspace: &WorkspaceId,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<AccessTokenRecord>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM access_tokens WHERE workspace_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    ))?;
    let mut rows = statement.query(params![workspace.as_str(), after.unwrap_or(""), limit as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

/// Marks a token revoked (keeps the first revocation time). False if absent.
pub fn revoke(
    conn: &Connection,
    workspace: &WorkspaceId,
    id: &AccessTokenId,
    at: Timestamp,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE access_tokens SET revoke_time = coalesce(revoke_time, ?3) WHERE workspace_id = ?1 AND id = ?2",
        params![workspace.as_str(), id.as_str(), at.as_micros()],
    )? > 0)
}

/// Records when tokens were last used.
pub fn set_last_used(conn: &Connection, uses: &[(AccessTokenId, Timestamp)]) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached("UPDATE access_tokens SET last_used_time = ?2 WHERE id = ?1")?;
    for (id, at) in uses {
        statement.execute(params![id.as_str(), at.as_micros()])?;
    }
    Ok(())
}

/// Is there any root token (revoked or not)?
pub fn any_root(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM access_tokens WHERE workspace_id IS NULL LIMIT 1", [], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Every root token, by id.
pub fn list_root(conn: &Connection) -> Result<Vec<AccessTokenRecord>, StoreError> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM access_tokens WHERE workspace_id IS NULL ORDER BY id"))?;
    let mut rows = statement.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

/// Marks a root token revoked (if it was not).
pub fn revoke_root(conn: &Connection, id: &AccessTokenId, at: Timestamp) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE access_tokens SET revoke_time = coalesce(revoke_time, ?2) WHERE workspace_id IS NULL AND id = ?1",
        params![id.as_str(), at.as_micros()],
    )?;
    Ok(())
}
