//! Server-wide facts: key-check values and small key/value settings.

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::Timestamp;
use crate::store::StoreError;

/// Reads a meta value.
pub fn get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Writes a meta value.
pub fn set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Every stored key-check value, by master key id.
pub fn key_checks(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut statement = conn.prepare("SELECT kek_id, check_value FROM key_checks ORDER BY create_time, kek_id")?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records the key-check value of a master key (once per id).
pub fn insert_key_check(conn: &Connection, kek_id: &str, value: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO key_checks (kek_id, check_value, create_time) VALUES (?1, ?2, ?3) ON CONFLICT (kek_id) DO NOTHING",
        params![kek_id, value, Timestamp::now().as_micros()],
    )?;
    Ok(())
}
