//! Queries on the `console_sessions` table: console sessions and one-time
//! login links, by the SHA-256 of their secret.

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::Timestamp;
use crate::domain::session::{ConsoleSession, SessionKind};
use crate::store::StoreError;
use crate::store::rows::SessionRow;

const COLUMNS: &str = "id_hash, kind, token_id, create_time, expire_time, last_seen";

fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id_hash: row.get(0)?,
        kind: row.get(1)?,
        token_id: row.get(2)?,
        create_time: row.get(3)?,
        expire_time: row.get(4)?,
        last_seen: row.get(5)?,
    })
}

/// Stores a session or login link, first deleting those that expired.
pub fn insert(conn: &Connection, session: &ConsoleSession) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM console_sessions WHERE expire_time <= ?1")?
        .execute([Timestamp::now().as_micros()])?;
    let r = SessionRow::of(session);
    conn.prepare_cached(&format!("INSERT INTO console_sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))?
        .execute(params![r.id_hash, r.kind, r.token_id, r.create_time, r.expire_time, r.last_seen])?;
    Ok(())
}

/// The session or login link (as `kind` says) whose secret hashes to `hash`.
pub fn get(conn: &Connection, hash: &[u8; 32], kind: SessionKind) -> Result<Option<ConsoleSession>, StoreError> {
    let found = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM console_sessions WHERE id_hash = ?1 AND kind = ?2"))?
        .query_row(params![&hash[..], kind.code()], read)
        .optional()?;
    found.map(|row| row.session()).transpose()
}

/// Deletes and returns the unexpired login link whose code hashes to `hash`.
pub fn take_login(conn: &Connection, hash: &[u8; 32], now: Timestamp) -> Result<Option<ConsoleSession>, StoreError> {
    let found = conn
        .prepare_cached(&format!(
            "DELETE FROM console_sessions WHERE id_hash = ?1 AND kind = ?2 AND expire_time > ?3 RETURNING {COLUMNS}"
        ))?
        .query_row(params![&hash[..], SessionKind::LoginLink.code(), now.as_micros()], read)
        .optional()?;
    found.map(|row| row.session()).transpose()
}

/// Records a session's last activity.
pub fn touch(conn: &Connection, hash: &[u8; 32], at: Timestamp) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE console_sessions SET last_seen = ?2 WHERE id_hash = ?1 AND last_seen < ?2")?
        .execute(params![&hash[..], at.as_micros()])?;
    Ok(())
}

/// Deletes a session or link.
pub fn delete(conn: &Connection, hash: &[u8; 32]) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM console_sessions WHERE id_hash = ?1")?.execute([&hash[..]])?;
    Ok(())
}
