//! The single writer thread and its group commit.
//!
//! Writes queue up as closures. The thread takes every queued closure (up to
//! [`MAX_BATCH`]), runs each inside its own SAVEPOINT of one IMMEDIATE
//! transaction, commits once, and only then tells each caller its outcome.
//! With one caller this is one commit per write; with many, one fsync serves
//! a whole batch, which is where the throughput comes from.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::store::StoreError;

/// Most writes committed together.
const MAX_BATCH: usize = 512;
/// Writes that may wait in the queue before submitters wait.
const QUEUE: usize = 4096;

/// Tells a submitter how its write ended, given the batch's commit result.
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs against the connection, says whether it failed, and returns
/// the completion to call once the batch's commit is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

pub(super) struct Writer {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("pullpass-db-writer".into())
            .spawn(move || run(conn, receiver))
            .map_err(|e| StoreError::NotDurable(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { sender: Mutex::new(Some(sender)), thread: Mutex::new(Some(thread)) })
    }

    pub(super) async fn submit<T, F>(&self, job: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(sender) = sender else { return Err(StoreError::Closed.into()) };
        let (reply, outcome) = oneshot::channel::<Result<T, Error>>();
        let job: Job = Box::new(move |conn| {
            let result = match catch_unwind(AssertUnwindSafe(|| job(conn))) {
                Ok(result) => result,
                Err(_) => Err(Error::internal("a database write panicked")),
            };
            let failed = result.is_err();
            let completion: Completion = Box::new(move |commit| {
                let _ = reply.send(match commit {
                    Ok(()) => result,
                    Err(e) => result.and(Err(e.into())),
                });
            });
            (failed, completion)
        });
        let submitted = std::time::Instant::now();
        let committed = async {
            sender.send(job).await.map_err(|_| Error::from(StoreError::Closed))?;
            outcome.await.map_err(|_| Error::internal("the database write was abandoned; see the server log"))
        };
        let outcome = tracing::Instrument::instrument(committed, crate::telemetry::child("store.write")).await?;
        if outcome.is_ok() {
            crate::metrics::store_write("sqlite", submitted.elapsed());
        }
        outcome
    }

    /// Stops accepting writes, finishes the queued ones, and closes the
    /// connection. Blocks until done.
    pub(super) fn close(&self) {
        drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            batch = commit_batch(&conn, batch);
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::error!(error = %e, "closing the database failed");
    }
}

/// Runs `batch` in one transaction and tells every job's submitter the
/// outcome. Returns the jobs it did not run: when SQLite aborts the whole
/// transaction (disk full, I/O error), the jobs already run are reported as
/// not durable and the rest go into a fresh transaction.
fn commit_batch(conn: &Connection, batch: Vec<Job>) -> Vec<Job> {
    if let Err(e) = execute_cached(conn, "BEGIN IMMEDIATE") {
        // Dropping the jobs drops their reply channels: each submitter gets
        // "write abandoned" instead of waiting forever.
        tracing::error!(error = %e, jobs = batch.len(), "could not begin a write transaction");
        return Vec::new();
    }
    // A lone job needs no savepoint: if it fails, the whole transaction is
    // rolled back instead (saving the savepoint's page copies).
    let alone = batch.len() == 1;
    let mut completions = Vec::with_capacity(batch.len());
    let mut failed_alone = false;
    let mut aborted: Option<String> = None;
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        if !alone && let Err(e) = execute_cached(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "could not open a savepoint; write abandoned");
            aborted = Some(format!("could not open a savepoint: {e}"));
            break;
        }
        let (failed, completion) = job(conn);
        completions.push(completion);
        if alone {
            failed_alone = failed;
        } else {
            let undone = if failed { execute_cached(conn, "ROLLBACK TO job") } else { Ok(()) };
            if let Err(e) = undone.and_then(|()| execute_cached(conn, "RELEASE job")) {
                aborted = Some(format!("could not close a savepoint: {e}"));
            }
        }
        // SQLite ends the transaction by itself on some errors; a later
        // SAVEPOINT would then open (and RELEASE commit) a new one.
        if aborted.is_none() && conn.is_autocommit() {
            aborted = Some("SQLite rolled the transaction back".into());
        }
        if aborted.is_some() {
            break;
        }
    }
    let not_run: Vec<Job> = jobs.collect();
    let commit = if let Some(reason) = aborted {
        tracing::error!(reason, lost = completions.len(), retried = not_run.len(), "write transaction aborted");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        Err(StoreError::NotDurable(format!("the write transaction was aborted ({reason})")))
    } else if failed_alone {
        execute_cached(conn, "ROLLBACK")
    } else {
        let commit = execute_cached(conn, "COMMIT");
        if let Err(e) = &commit {
            tracing::error!(error = %e, "commit failed; the batch is rolled back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        commit
    };
    for completion in completions {
        completion(match &commit {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::NotDurable(format!("commit failed: {e}"))),
        });
    }
    not_run
}

/// Runs a parameterless statement through the statement cache.
fn execute_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)").unwrap();
        conn
    }

    /// A job running `sql`, failing when told to; its outcome goes to `tx`.
    fn job(sql: &'static str, fail: bool, tx: &std_mpsc::Sender<(&'static str, bool)>) -> Job {
        let tx = tx.clone();
        Box::new(move |conn| {
            let ran = conn.execute_batch(sql).is_ok();
            let failed = fail || !ran;
            let completion: Completion = Box::new(move |commit| {
                let _ = tx.send((sql, !failed && commit.is_ok()));
            });
            (failed, completion)
        })
    }

    fn values(conn: &Connection) -> Vec<i64> {
        let mut statement = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_failed_job_is_undone_alone_and_the_others_commit() {
        let conn = table();
        let (tx, rx) = std_mpsc::channel();
        let batch = vec![
            job("INSERT INTO t VALUES (1)", false, &tx),
            job("INSERT INTO t VALUES (2)", true, &tx),
            job("INSERT INTO t VALUES (3)", false, &tx),
        ];
        assert!(commit_batch(&conn, batch).is_empty());
        assert_eq!(values(&conn), [1, 3]);
        let outcomes: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            outcomes,
            [
                ("INSERT INTO t VALUES (1)", true),
                ("INSERT INTO t VALUES (2)", false),
                ("INSERT INTO t VALUES (3)", true)
            ]
        );
    }

    #[test]
    fn a_transaction_sqlite_aborted_reports_its_jobs_failed_and_reruns_the_rest() {
        let conn = table();
        let (tx, rx) = std_mpsc::channel();
        // The second job ends the transaction the way SQLite does on a full
        // disk or an I/O error.
        let batch = vec![
            job("INSERT INTO t VALUES (1)", false, &tx),
            job("INSERT INTO t VALUES (2); ROLLBACK", true, &tx),
            job("INSERT INTO t VALUES (3)", false, &tx),
            job("INSERT INTO t VALUES (4)", false, &tx),
        ];
        let rest = commit_batch(&conn, batch);
        assert_eq!(rest.len(), 2, "the jobs after the abort were not run");
        assert!(values(&conn).is_empty(), "nothing of the aborted transaction is stored");
        assert!(rx.try_iter().all(|(_, ok)| !ok), "the jobs run before the abort are told they failed");
        assert!(commit_batch(&conn, rest).is_empty());
        assert_eq!(values(&conn), [3, 4]);
        assert_eq!(rx.try_iter().filter(|(_, ok)| *ok).count(), 2);
        assert!(conn.is_autocommit(), "no transaction is left open");
    }
}
