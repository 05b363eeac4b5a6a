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

use super::StoreError;
use crate::error::Error;

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
        sender.send(job).await.map_err(|_| Error::from(StoreError::Closed))?;
        outcome.await.map_err(|_| Error::internal("the database write was abandoned; see the server log"))?
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
        commit_batch(&conn, batch);
    }
    if let Err((_, e)) = conn.close() {
        tracing::error!(error = %e, "closing the database failed");
    }
}

fn commit_batch(conn: &Connection, batch: Vec<Job>) {
    if let Err(e) = execute_cached(conn, "BEGIN IMMEDIATE") {
        // Dropping the jobs drops their reply channels: each submitter gets
        // "write abandoned" instead of waiting forever.
        tracing::error!(error = %e, jobs = batch.len(), "could not begin a write transaction");
        return;
    }
    // A lone job needs no savepoint: if it fails, the whole transaction is
    // rolled back instead (saving the savepoint's page copies).
    let alone = batch.len() == 1;
    let mut completions = Vec::with_capacity(batch.len());
    let mut failed_alone = false;
    for job in batch {
        if !alone && let Err(e) = execute_cached(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "could not open a savepoint; write abandoned");
            continue;
        }
        let (failed, completion) = job(conn);
        if alone {
            failed_alone = failed;
        } else {
            if failed {
                let _ = execute_cached(conn, "ROLLBACK TO job");
            }
            let _ = execute_cached(conn, "RELEASE job");
        }
        completions.push(completion);
    }
    let commit = if failed_alone {
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
}

/// Runs a parameterless statement through the statement cache.
fn execute_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}
