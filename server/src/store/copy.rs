//! `pullpassd store copy`: moves an installation between databases (SQLite
//! to PostgreSQL, and back for `backup` of a PostgreSQL database), row by
//! row and as stored: sealed secrets stay sealed (no key is needed), token
//! hashes stay hashes, and audit events keep their `seq` and hashes, so the
//! chain verifies on the destination.
//!
//! * The source is read inside one read-only snapshot (an SQLite read
//!   transaction, a PostgreSQL `REPEATABLE READ` transaction), so a copy of
//!   a live database is consistent.
//! * Tables go in key order, in batches, one destination transaction each
//!   (`INSERT … ON CONFLICT DO NOTHING`). An interrupted copy is resumed by
//!   running it again: each table continues after the destination's last
//!   key. A meta row names the copy's source while it runs, so a
//!   destination holding anything else is refused.
//! * Both schemas have the same tables and columns; [`TABLES`] describes
//!   them once. PostgreSQL's replica-only tables (shared leases, claims,
//!   blocks) are caches and are not copied, nor are console sessions and
//!   login links (people sign in again on the copy).

use std::path::Path;

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::postgres::PgConfig;
use super::{Location, StoreError};

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// BIGINT / INTEGER.
    I64,
    /// INTEGER on PostgreSQL (i32).
    I32,
    /// Nullable BIGINT.
    OptI64,
    /// BOOLEAN on PostgreSQL, INTEGER on SQLite.
    Bool,
    /// TEXT.
    Text,
    /// Nullable TEXT.
    OptText,
    /// BYTEA / BLOB.
    Bytes,
}

/// One table as both backends store it.
#[derive(Debug)]
struct Table {
    name: &'static str,
    /// The primary key columns (a prefix of `columns`).
    key: usize,
    columns: &'static [(&'static str, Kind)],
}

use Kind::{Bool, Bytes, I32, I64, OptI64, OptText, Text};

/// Copied in this order (parents before children, the audit trail last).
const TABLES: &[Table] = &[
    Table { name: "key_checks", key: 1, columns: &[("kek_id", Text), ("check_value", Bytes), ("create_time", I64)] },
    Table {
        name: "workspaces",
        key: 1,
        columns: &[("id", Text), ("kind", I32), ("display_name", Text), ("create_time", I64)],
    },
    Table {
        name: "credentials",
        key: 2,
        columns: &[
            ("workspace_id", Text),
            ("credential_id", Text),
            ("uid", Bytes),
            ("provider", I32),
            ("registry_host", Text),
            ("registry_namespace", Text),
            ("username", Text),
            ("secret_version", I64),
            ("secret_kek_id", Text),
            ("secret_wrapped_dek", Bytes),
            ("secret_ciphertext", Bytes),
            ("allowed_projects", Text),
            ("allow_passthrough", Bool),
            ("token_realm_allowlist", Text),
            ("ca_bundle_pem", Text),
            ("description", Text),
            ("create_time", I64),
            ("update_time", I64),
            ("last_used_time", OptI64),
            ("provider_settings", Text),
            ("expire_time", OptI64),
            ("last_failure_time", OptI64),
            ("last_failure_reason", Text),
            ("failing_since", OptI64),
        ],
    },
    Table {
        name: "access_tokens",
        key: 1,
        columns: &[
            ("id", Text),
            ("workspace_id", OptText),
            ("role", I32),
            ("projects", Text),
            ("token_hash", Bytes),
            ("description", Text),
            ("create_time", I64),
            ("expire_time", OptI64),
            ("revoke_time", OptI64),
            ("last_used_time", OptI64),
        ],
    },
    Table {
        name: "identity_providers",
        key: 1,
        columns: &[
            ("id", Text),
            ("issuer", Text),
            ("jwks_uri", Text),
            ("jwks", Text),
            ("ca_certificates", Text),
            ("audiences", Text),
            ("allowed_algorithms", Text),
            ("max_token_lifetime_s", I64),
            ("clock_skew_s", I64),
            ("description", Text),
            ("create_time", I64),
            ("update_time", I64),
        ],
    },
    Table {
        name: "identity_bindings",
        key: 2,
        columns: &[
            ("workspace_id", Text),
            ("id", Text),
            ("provider_id", Text),
            ("bound_claims", Text),
            ("role", I32),
            ("allowed_projects", Text),
            ("description", Text),
            ("create_time", I64),
            ("update_time", I64),
        ],
    },
    Table {
        name: "audit_events",
        key: 1,
        columns: &[
            ("seq", I64),
            ("event_time", I64),
            ("workspace_id", Text),
            ("principal", Text),
            ("action", Text),
            ("resource", Text),
            ("status_code", I32),
            ("client_address", Text),
            ("request_id", Text),
            ("image", Text),
            ("granted_scope", Text),
            ("call_count", I64),
            ("prev_hash", Bytes),
            ("hash", Bytes),
        ],
    },
    Table { name: "meta", key: 1, columns: &[("key", Text), ("value", Text)] },
];

/// Meta row naming the source of a copy under way (removed when done).
const COPY_MARKER: &str = "store_copy_from";

/// One value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

type Row = Vec<Value>;

impl Table {
    fn column_list(&self) -> String {
        self.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }

    fn key_list(&self) -> String {
        self.columns[..self.key].iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }

    /// `SELECT … WHERE (key) > (…) ORDER BY key LIMIT …` with `$n` or `?n`.
    fn page_sql(&self, after: bool, placeholder: fn(usize) -> String) -> String {
        let keys = self.key_list();
        let filter = if after {
            let marks: Vec<String> = (1..=self.key).map(placeholder).collect();
            format!("WHERE ({keys}) > ({})", marks.join(", "))
        } else {
            String::new()
        };
        let limit = placeholder(if after { self.key + 1 } else { 1 });
        format!("SELECT {} FROM {} {filter} ORDER BY {keys} LIMIT {limit}", self.column_list(), self.name)
    }
}

/// How far a copy got, for its report.
#[derive(Debug, Default, Clone)]
pub struct CopyReport {
    /// Rows written per table (this run).
    pub copied: Vec<(&'static str, u64)>,
    /// Rows already there from an interrupted run.
    pub resumed: bool,
}

/// Reads a snapshot of the source.
#[async_trait]
trait Source: Send {
    async fn count(&mut self, table: &Table) -> Result<u64, StoreError>;
    async fn page(&mut self, table: &Table, after: Option<&[Value]>, limit: usize) -> Result<Vec<Row>, StoreError>;
}

/// Writes the destination.
#[async_trait]
trait Destination: Send {
    async fn count(&mut self, table: &Table) -> Result<u64, StoreError>;
    async fn last_key(&mut self, table: &Table) -> Result<Option<Row>, StoreError>;
    async fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    /// Inserts `rows` (skipping those present) and sets `meta` pairs, in one
    /// transaction; `None` value deletes.
    async fn write(&mut self, table: &Table, rows: &[Row], meta: &[(&str, Option<&str>)]) -> Result<u64, StoreError>;
    /// After every table: makes the chain head the last copied event (or
    /// the pruning checkpoint, when every event was pruned).
    async fn finish(&mut self) -> Result<(), StoreError>;
}

/// Copies `from` into `to` (created and migrated if needed), `batch` rows
/// per transaction, calling `progress(table, done, total)` per batch.
pub async fn copy(
    from: &Location,
    to: &Location,
    batch: usize,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<CopyReport, StoreError> {
    let source_name = from.describe();
    if source_name == to.describe() {
        return Err(StoreError::Corrupt("--from and --to are the same database".into()));
    }
    let mut source: Box<dyn Source> = match from {
        Location::Sqlite(path) => Box::new(sqlite::Reader::open(path)?),
        Location::Postgres(config) => Box::new(postgres::Reader::open(config).await?),
    };
    // Create and migrate the destination with the backend's own code.
    super::open(to, Default::default()).await?.close().await;
    let mut destination: Box<dyn Destination> = match to {
        Location::Sqlite(path) => Box::new(sqlite::Writer::open(path)?),
        Location::Postgres(config) => Box::new(postgres::Writer::open(config).await?),
    };
    let mut report = CopyReport::default();
    match destination.meta(COPY_MARKER).await? {
        Some(marked) if marked == source_name => report.resumed = true,
        Some(marked) => {
            return Err(StoreError::Corrupt(format!(
                "the destination holds an interrupted copy from {marked}; finish it with --from {marked}, or use an empty destination"
            )));
        }
        None => {
            for table in TABLES.iter().filter(|t| t.name != "meta") {
                if destination.count(table).await? > 0 {
                    return Err(StoreError::Corrupt(format!(
                        "the destination is not empty (table {} has rows); copy into an empty database",
                        table.name
                    )));
                }
            }
            destination.write(&TABLES[0], &[], &[(COPY_MARKER, Some(&source_name))]).await?;
        }
    }
    for table in TABLES {
        let total = source.count(table).await?;
        let mut after = if table.name == "meta" { None } else { destination.last_key(table).await? };
        let mut done = match &after {
            Some(_) => destination.count(table).await?,
            None => 0,
        };
        let mut written = 0;
        loop {
            let rows = source.page(table, after.as_deref(), batch).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last[..table.key].to_vec());
            // The marker is source data too: never copied over ours.
            let rows: Vec<Row> =
                rows.into_iter().filter(|r| table.name != "meta" || r[0] != Value::Text(COPY_MARKER.into())).collect();
            let inserted = destination.write(table, &rows, &[]).await?;
            written += inserted;
            done += rows.len() as u64;
            progress(table.name, done.min(total), total);
        }
        report.copied.push((table.name, written));
    }
    destination.finish().await?;
    destination.write(&TABLES[0], &[], &[(COPY_MARKER, None)]).await?;
    Ok(report)
}

/// SQLite ends: plain connections (the source inside one read transaction).
mod sqlite {
    use super::*;
    use rusqlite::types::ValueRef;

    fn mark(n: usize) -> String {
        format!("?{n}")
    }

    fn read_row(table: &Table, row: &rusqlite::Row<'_>) -> Result<Row, StoreError> {
        table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| {
                Ok(match (row.get_ref(i)?, kind) {
                    (ValueRef::Null, _) => Value::Null,
                    (ValueRef::Integer(n), Bool) => Value::Bool(n != 0),
                    (ValueRef::Integer(n), _) => Value::Int(n),
                    (ValueRef::Text(t), _) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    (ValueRef::Blob(b), _) => Value::Bytes(b.to_vec()),
                    (ValueRef::Real(_), _) => return Err(StoreError::Corrupt(format!("a real in {}", table.name))),
                })
            })
            .collect()
    }

    fn param(value: &Value) -> rusqlite::types::Value {
        match value {
            Value::Null => rusqlite::types::Value::Null,
            Value::Int(n) => rusqlite::types::Value::Integer(*n),
            Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
            Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
            Value::Bytes(b) => rusqlite::types::Value::Blob(b.clone()),
        }
    }

    pub struct Reader(rusqlite::Connection);

    impl Reader {
        pub fn open(path: &Path) -> Result<Self, StoreError> {
            if !path.exists() {
                return Err(StoreError::Corrupt(format!("no database at {}", path.display())));
            }
            let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            crate::store::sqlite::migrations::refuse_newer(&conn)?;
            let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let current = crate::store::sqlite::migrations::SCHEMA_VERSION;
            if found < current {
                return Err(StoreError::TooOld { found, current });
            }
            // One read transaction: every page sees the same snapshot.
            conn.execute_batch("BEGIN; SELECT count(*) FROM meta;")?;
            Ok(Self(conn))
        }
    }

    #[async_trait]
    impl Source for Reader {
        async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
            Ok(self.0.query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| r.get::<_, i64>(0))? as u64)
        }

        async fn page(&mut self, table: &Table, after: Option<&[Value]>, limit: usize) -> Result<Vec<Row>, StoreError> {
            let mut params: Vec<rusqlite::types::Value> = after.unwrap_or_default().iter().map(param).collect();
            params.push(rusqlite::types::Value::Integer(limit as i64));
            let mut statement = self.0.prepare_cached(&table.page_sql(after.is_some(), mark))?;
            let mut rows = statement.query(rusqlite::params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(read_row(table, row)?);
            }
            Ok(out)
        }
    }

    pub struct Writer(rusqlite::Connection);

    impl Writer {
        pub fn open(path: &Path) -> Result<Self, StoreError> {
            let conn = crate::store::sqlite::open_connection(path)?;
            Ok(Self(conn))
        }
    }

    #[async_trait]
    impl Destination for Writer {
        async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
            Ok(self.0.query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| r.get::<_, i64>(0))? as u64)
        }

        async fn last_key(&mut self, table: &Table) -> Result<Option<Row>, StoreError> {
            let keys = table.key_list();
            let descending: Vec<String> = table.columns[..table.key].iter().map(|(c, _)| format!("{c} DESC")).collect();
            let sql = format!("SELECT {keys} FROM {} ORDER BY {} LIMIT 1", table.name, descending.join(", "));
            let key_table = Table { name: table.name, key: table.key, columns: &table.columns[..table.key] };
            let mut statement = self.0.prepare(&sql)?;
            let mut rows = statement.query([])?;
            rows.next()?.map(|row| read_row(&key_table, row)).transpose()
        }

        async fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
            use rusqlite::OptionalExtension;
            Ok(self.0.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
        }

        async fn write(
            &mut self,
            table: &Table,
            rows: &[Row],
            meta: &[(&str, Option<&str>)],
        ) -> Result<u64, StoreError> {
            let tx = self.0.transaction()?;
            let marks: Vec<String> = (1..=table.columns.len()).map(mark).collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                table.name,
                table.column_list(),
                marks.join(", ")
            );
            let mut inserted = 0;
            {
                let mut statement = tx.prepare_cached(&sql)?;
                for row in rows {
                    inserted += statement.execute(rusqlite::params_from_iter(row.iter().map(param)))? as u64;
                }
                for (key, value) in meta {
                    match value {
                        Some(value) => tx.execute(
                            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            [key, value],
                        )?,
                        None => tx.execute("DELETE FROM meta WHERE key = ?1", [key])?,
                    };
                }
            }
            tx.commit()?;
            Ok(inserted)
        }

        async fn finish(&mut self) -> Result<(), StoreError> {
            // SQLite's head is the newest event itself.
            Ok(())
        }
    }
}

/// PostgreSQL ends: one connection each (the source inside one
/// `REPEATABLE READ READ ONLY` transaction).
mod postgres {
    use super::*;
    use crate::store::postgres::{connect, pg};

    fn mark(n: usize) -> String {
        format!("${n}")
    }

    fn read_row(table: &Table, row: &tokio_postgres::Row) -> Result<Row, StoreError> {
        table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| {
                let value = match kind {
                    I64 => row.try_get::<_, i64>(i).map(Value::Int),
                    I32 => row.try_get::<_, i32>(i).map(|n| Value::Int(i64::from(n))),
                    OptI64 => row.try_get::<_, Option<i64>>(i).map(|n| n.map_or(Value::Null, Value::Int)),
                    Bool => row.try_get::<_, bool>(i).map(Value::Bool),
                    Text => row.try_get::<_, String>(i).map(Value::Text),
                    OptText => row.try_get::<_, Option<String>>(i).map(|t| t.map_or(Value::Null, Value::Text)),
                    Bytes => row.try_get::<_, Vec<u8>>(i).map(Value::Bytes),
                };
                value.map_err(|e| StoreError::Corrupt(format!("{}: {e}", table.name)))
            })
            .collect()
    }

    fn param(value: &Value, kind: Kind) -> Box<dyn ToSql + Sync + Send> {
        match (value, kind) {
            (Value::Int(n), I32) => Box::new(*n as i32),
            (Value::Int(n), _) => Box::new(*n),
            (Value::Null, OptText) => Box::new(None::<String>),
            (Value::Null, _) => Box::new(None::<i64>),
            (Value::Bool(b), _) => Box::new(*b),
            (Value::Text(t), _) => Box::new(t.clone()),
            (Value::Bytes(b), _) => Box::new(b.clone()),
        }
    }

    pub struct Reader(tokio_postgres::Client);

    impl Reader {
        pub async fn open(config: &PgConfig) -> Result<Self, StoreError> {
            let client = connect(config).await?;
            let version = crate::store::postgres::migrations::current_version(&client).await?;
            if version == 0 {
                return Err(StoreError::Corrupt(format!("no pullpass database at {}", config.describe())));
            }
            if version > crate::store::postgres::SCHEMA_VERSION {
                return Err(StoreError::TooNew { found: version, supported: crate::store::postgres::SCHEMA_VERSION });
            }
            if version < crate::store::postgres::SCHEMA_VERSION {
                return Err(StoreError::TooOld { found: version, current: crate::store::postgres::SCHEMA_VERSION });
            }
            client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(pg)?;
            Ok(Self(client))
        }
    }

    #[async_trait]
    impl Source for Reader {
        async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
            let row = self.0.query_one(&format!("SELECT count(*) FROM {}", table.name), &[]).await.map_err(pg)?;
            Ok(row.get::<_, i64>(0) as u64)
        }

        async fn page(&mut self, table: &Table, after: Option<&[Value]>, limit: usize) -> Result<Vec<Row>, StoreError> {
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = after
                .unwrap_or_default()
                .iter()
                .zip(table.columns)
                .map(|(value, (_, kind))| param(value, *kind))
                .collect();
            params.push(Box::new(limit as i64));
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
            let statement = self.0.prepare(&table.page_sql(after.is_some(), mark)).await.map_err(pg)?;
            let rows = self.0.query(&statement, &refs).await.map_err(pg)?;
            rows.iter().map(|r| read_row(table, r)).collect()
        }
    }

    pub struct Writer(tokio_postgres::Client);

    impl Writer {
        pub async fn open(config: &PgConfig) -> Result<Self, StoreError> {
            Ok(Self(connect(config).await?))
        }
    }

    #[async_trait]
    impl Destination for Writer {
        async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
            let row = self.0.query_one(&format!("SELECT count(*) FROM {}", table.name), &[]).await.map_err(pg)?;
            Ok(row.get::<_, i64>(0) as u64)
        }

        async fn last_key(&mut self, table: &Table) -> Result<Option<Row>, StoreError> {
            let descending: Vec<String> = table.columns[..table.key].iter().map(|(c, _)| format!("{c} DESC")).collect();
            let sql =
                format!("SELECT {} FROM {} ORDER BY {} LIMIT 1", table.key_list(), table.name, descending.join(", "));
            let key_table = Table { name: table.name, key: table.key, columns: &table.columns[..table.key] };
            let row = self.0.query_opt(&sql, &[]).await.map_err(pg)?;
            row.map(|r| read_row(&key_table, &r)).transpose()
        }

        async fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
            let row = self.0.query_opt("SELECT value FROM meta WHERE key = $1", &[&key]).await.map_err(pg)?;
            Ok(row.map(|r| r.get(0)))
        }

        async fn write(
            &mut self,
            table: &Table,
            rows: &[Row],
            meta: &[(&str, Option<&str>)],
        ) -> Result<u64, StoreError> {
            let tx = self.0.transaction().await.map_err(pg)?;
            let marks: Vec<String> = (1..=table.columns.len()).map(mark).collect();
            let insert = tx
                .prepare(&format!(
                    "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                    table.name,
                    table.column_list(),
                    marks.join(", ")
                ))
                .await
                .map_err(pg)?;
            let params: Vec<Vec<Box<dyn ToSql + Sync + Send>>> = rows
                .iter()
                .map(|row| row.iter().zip(table.columns).map(|(v, (_, kind))| param(v, *kind)).collect())
                .collect();
            let refs: Vec<Vec<&(dyn ToSql + Sync)>> =
                params.iter().map(|p| p.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect()).collect();
            // Pipelined: the batch costs about one round trip.
            let results = futures_util::future::join_all(refs.iter().map(|r| tx.execute(&insert, r))).await;
            let mut inserted = 0;
            for result in results {
                inserted += result.map_err(pg)?;
            }
            for (key, value) in meta {
                match value {
                    Some(value) => tx
                        .execute(
                            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            &[key, value],
                        )
                        .await
                        .map_err(pg)?,
                    None => tx.execute("DELETE FROM meta WHERE key = $1", &[key]).await.map_err(pg)?,
                };
            }
            tx.commit().await.map_err(pg)?;
            Ok(inserted)
        }

        async fn finish(&mut self) -> Result<(), StoreError> {
            let last = self
                .0
                .query_opt("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1", &[])
                .await
                .map_err(pg)?;
            let head: Option<(i64, Vec<u8>)> = match last {
                Some(row) => Some((row.get(0), row.get(1))),
                None => match self.meta(crate::store::CHECKPOINT_KEY).await? {
                    Some(value) => {
                        let (seq, hash) = crate::store::parse_checkpoint(&value)?;
                        Some((seq, hash.to_vec()))
                    }
                    None => None,
                },
            };
            if let Some((seq, hash)) = head {
                self.0
                    .execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq < $1", &[&seq, &hash])
                    .await
                    .map_err(pg)?;
            }
            Ok(())
        }
    }
}
