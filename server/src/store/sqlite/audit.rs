//! Queries on the `audit_events` table. Events are only appended; pruning
//! removes the oldest and records where the chain now starts.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::domain::Timestamp;
use crate::domain::audit::{AuditEvent, AuditRecord};
use crate::store::rows::AuditRow;
use crate::store::{AuditFilter, StoreError};

/// The columns, in `from_row` and `insert` order (a macro so `INSERT` can
/// be one literal).
macro_rules! columns {
    () => {
        "seq, event_time, workspace_id, principal, action, resource, status_code, client_address, \
         request_id, image, granted_scope, call_count, prev_hash, hash"
    };
}
const COLUMNS: &str = columns!();
const INSERT: &str = concat!(
    "INSERT INTO audit_events (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
);

fn from_row(row: &Row<'_>) -> Result<AuditRecord, StoreError> {
    AuditRow {
        seq: row.get(0)?,
        event_time: row.get(1)?,
        workspace_id: row.get(2)?,
        principal: row.get(3)?,
        action: row.get(4)?,
        resource: row.get(5)?,
        status_code: row.get(6)?,
        client_address: row.get(7)?,
        request_id: row.get(8)?,
        image: row.get(9)?,
        granted_scope: row.get(10)?,
        count: row.get(11)?,
        prev_hash: row.get(12)?,
        hash: row.get(13)?,
    }
    .record()
}

/// The last event's sequence number and hash, if any.
pub fn head(conn: &Connection) -> Result<Option<(i64, [u8; 32])>, StoreError> {
    let found: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    found
        .map(|(seq, hash)| Ok((seq, hash.try_into().map_err(|_| StoreError::Corrupt("audit hash length".into()))?)))
        .transpose()
}

/// Appends a chained record (its seq follows the head's).
pub fn insert(
    conn: &Connection,
    seq: i64,
    e: &AuditEvent,
    prev_hash: &[u8; 32],
    hash: &[u8; 32],
) -> Result<(), StoreError> {
    let r = AuditRow::of(seq, e, prev_hash, hash);
    conn.prepare_cached(INSERT)?.execute(params![
        r.seq,
        r.event_time,
        r.workspace_id,
        r.principal,
        r.action,
        r.resource,
        r.status_code,
        r.client_address,
        r.request_id,
        r.image,
        r.granted_scope,
        r.count,
        r.prev_hash,
        r.hash,
    ])?;
    Ok(())
}

/// Up to `limit` events after `after_seq` matching `filter`, oldest first.
pub fn list(
    conn: &Connection,
    filter: &AuditFilter,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit_events WHERE seq > ?1 \
           AND (?2 IS NULL OR workspace_id = ?2) AND (?3 IS NULL OR action = ?3) \
           AND (?4 IS NULL OR resource = ?4) AND (?5 IS NULL OR principal = ?5) \
           AND (?6 IS NULL OR event_time >= ?6) AND (?7 IS NULL OR event_time < ?7) \
         ORDER BY seq LIMIT ?8"
    ))?;
    let mut rows = statement.query(params![
        after_seq,
        filter.workspace,
        filter.action,
        filter.resource,
        filter.principal,
        filter.since.map(Timestamp::as_micros),
        filter.before.map(Timestamp::as_micros),
        limit as i64,
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

/// Every event after `after_seq`, for verification, in batches.
pub fn walk(conn: &Connection, after_seq: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
    list(conn, &AuditFilter::default(), after_seq, limit)
}

/// The last event of the longest run from the start of the chain whose
/// times are all before `cutoff`, if any: the events before the first one at
/// or after `cutoff` (all of them when there is none).
pub fn last_of_older_prefix(conn: &Connection, cutoff: Timestamp) -> Result<Option<(i64, [u8; 32])>, StoreError> {
    let first_newer: Option<i64> = conn
        .query_row(
            "SELECT seq FROM audit_events WHERE event_time >= ?1 ORDER BY seq LIMIT 1",
            [cutoff.as_micros()],
            |r| r.get(0),
        )
        .optional()?;
    let found: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_events WHERE seq < ?1 ORDER BY seq DESC LIMIT 1",
            [first_newer.unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    found
        .map(|(seq, hash)| Ok((seq, hash.try_into().map_err(|_| StoreError::Corrupt("audit hash length".into()))?)))
        .transpose()
}

/// How many events older than `cutoff` are left.
pub fn count_before(conn: &Connection, cutoff: Timestamp) -> Result<u64, StoreError> {
    let n: i64 =
        conn.query_row("SELECT count(*) FROM audit_events WHERE event_time < ?1", [cutoff.as_micros()], |r| r.get(0))?;
    Ok(n as u64)
}

/// Deletes events up to and including `seq`; returns how many.
pub fn delete_through(conn: &Connection, seq: i64) -> Result<u64, StoreError> {
    Ok(conn.execute("DELETE FROM audit_events WHERE seq <= ?1", [seq])? as u64)
}

/// Successful leases and gateway pulls of a workspace per hour since
/// `since`: `(hour start, calls)`, oldest first.
pub fn leases_per_hour(
    conn: &Connection,
    workspace: &str,
    since: Timestamp,
) -> Result<Vec<(Timestamp, u64)>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT (event_time / 3600000000) * 3600000000 AS hour, sum(call_count) FROM audit_events \
         WHERE workspace_id = ?1 AND event_time >= ?2 AND status_code = 0 \
           AND action IN ('IssueRegistryAuth', 'GatewayPull') \
         GROUP BY hour ORDER BY hour",
    )?;
    let rows = statement.query_map(params![workspace, since.as_micros()], |r| {
        Ok((Timestamp::from_micros(r.get(0)?), r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
