//! Queries on the `workspaces` table.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::domain::{Timestamp, Workspace, WorkspaceId, WorkspaceKind};
use crate::store::StoreError;

const COLUMNS: &str = "id, kind, display_name, create_time";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<Workspace, StoreError>> {
    let id: String = row.get(0)?;
    let kind: i32 = row.get(1)?;
    Ok((|| {
        Ok(Workspace {
            id: WorkspaceId::parse(&id).map_err(StoreError::Corrupt)?,
            kind: WorkspaceKind::from_code(kind)
                .ok_or_else(|| StoreError::Corrupt(format!("workspace kind {kind}")))?,
            display_name: row.get(2)?,
            create_time: Timestamp::from_micros(row.get(3)?),
        })
    })())
}

/// Inserts a workspace; `Conflict` if the id is taken.
pub fn insert(conn: &Connection, workspace: &Workspace) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO workspaces (id, kind, display_name, create_time) VALUES (?1, ?2, ?3, ?4)",
        params![
            workspace.id.as_str(),
            workspace.kind.code(),
            workspace.display_name,
            workspace.create_time.as_micros()
        ],
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
