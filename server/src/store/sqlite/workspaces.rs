//! Queries on the `workspaces` table.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::domain::{Workspace, WorkspaceId};
use crate::store::StoreError;
use crate::store::rows::WorkspaceRow;

const COLUMNS: &str = "id, kind, display_name, create_time";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<Workspace, StoreError>> {
    let stored =
        WorkspaceRow { id: row.get(0)?, kind: row.get(1)?, display_name: row.get(2)?, create_time: row.get(3)? };
    Ok(stored.workspace())
}

/// Inserts a workspace; `Conflict` if the id is taken.
pub fn insert(conn: &Connection, workspace: &Workspace) -> Result<(), StoreError> {
    let r = WorkspaceRow::of(workspace);
    conn.execute(
        "INSERT INTO workspaces (id, kind, display_name, create_time) VALUES (?1, ?2, ?3, ?4)",
        params![r.id, r.kind, r.display_name, r.create_time],
    )?;
    Ok(())
}

/// One workspace.
pub fn get(conn: &Connection, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM workspaces WHERE id = ?1"), [id.as_str()], from_row)
        .optional()?
        .transpose()
}

/// Does the workspace exist?
pub fn exists(conn: &Connection, id: &WorkspaceId) -> Result<bool, StoreError> {
    Ok(conn.query_row("SELECT 1 FROM workspaces WHERE id = ?1", [id.as_str()], |_| Ok(())).optional()?.is_some())
}

/// Up to `limit` workspaces with ids after `after`, ordered by id.
pub fn list(conn: &Connection, after: Option<&str>, limit: usize) -> Result<Vec<Workspace>, StoreError> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM workspaces WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
    let rows = statement.query_map(params![after.unwrap_or(""), limit as i64], from_row)?;
    rows.map(|r| r?).collect()
}

/// How many credentials and access tokens the workspace holds.
pub fn count_children(conn: &Connection, id: &WorkspaceId) -> Result<(u64, u64), StoreError> {
    let credentials: i64 =
        conn.query_row("SELECT count(*) FROM credentials WHERE workspace_id = ?1", [id.as_str()], |r| r.get(0))?;
    let tokens: i64 =
        conn.query_row("SELECT count(*) FROM access_tokens WHERE workspace_id = ?1", [id.as_str()], |r| r.get(0))?;
    Ok((credentials as u64, tokens as u64))
}

/// Deletes a workspace and (by cascade) everything in it. False if absent.
pub fn delete(conn: &Connection, id: &WorkspaceId) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM workspaces WHERE id = ?1", [id.as_str()])? > 0)
}
