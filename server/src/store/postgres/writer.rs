//! Group commit per replica: mutations queue here, and one task runs
//! whatever is queued in one transaction, each mutation in its own
//! savepoint, so N concurrent writes cost one commit (one WAL flush, one
//! hold of the audit head row) instead of N.
//!
//! * Mutations hand their audit events to [`Tx::audit`]; the batch appends
//!   them all at its end (one lock of the head row, one pipelined insert,
//!   one NOTIFY per change) in the same transaction, so each mutation still
//!   commits with its events or not at all.
//! * A mutation that fails (a domain outcome such as `ALREADY_EXISTS`, the
//!   audit fault hook, a statement error) is rolled back to its savepoint,
//!   with its events; the others still commit.
//! * A serialization failure or deadlock aborts the batch, which runs again
//!   (mutations are `Fn`, so they can), up to a bound; callers never see it.
//! * Each caller hears back only after `COMMIT` (or the batch's failure).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{ATTEMPTS, TxError, jitter, pg, retryable};
use crate::domain::audit::AuditEvent;
use crate::error::Error;
use crate::store::{AuditFault, StoreError};

/// Most mutations in one transaction.
const MAX_BATCH: usize = 256;
/// Queued mutations before callers wait.
const QUEUE: usize = 4096;

/// The batch's transaction as a mutation sees it: every statement of
/// [`Transaction`], and [`Tx::audit`] for its events.
pub struct Tx<'t, 'c> {
    tx: &'t Transaction<'c>,
    events: &'t Mutex<Vec<AuditEvent>>,
    fault: &'t AuditFault,
}

impl<'c> std::ops::Deref for Tx<'_, 'c> {
    type Target = Transaction<'c>;

    fn deref(&self) -> &Self::Target {
        self.tx
    }
}

impl Tx<'_, '_> {
    /// Appends `events` to the chain with this mutation (refused, and the
    /// mutation with them, when the audit fault hook names one).
    pub fn audit(&self, events: &[AuditEvent]) -> Result<(), TxError> {
        self.fault.check(events)?;
        self.events.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(events);
        Ok(())
    }
}

/// A mutation's work inside a transaction.
pub type Work = Box<
    dyn for<'t, 'c> Fn(&'t Tx<'t, 'c>) -> Pin<Box<dyn Future<Output = Result<(), TxError>> + Send + 't>> + Send + Sync,
>;

struct Job {
    work: Work,
    done: oneshot::Sender<Result<(), Error>>,
}

/// The queue into the replica's writer task.
#[derive(Debug)]
pub struct Writer {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    timeout: Duration,
}

impl Writer {
    /// Starts the writer task over `pool`, with the audit fault hook; a
    /// batch that takes longer than `timeout` (a silent database) fails.
    pub fn start(pool: Pool, fault: AuditFault, timeout: Duration) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(pool, fault, timeout, receiver));
        Self { queue: Mutex::new(Some(sender)), task: Mutex::new(Some(task)), timeout }
    }

    /// Runs `work` in the next batch; its value once committed.
    pub async fn mutate<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'t, 'c> Fn(&'t Tx<'t, 'c>) -> Pin<Box<dyn Future<Output = Result<T, TxError>> + Send + 't>>
            + Send
            + Sync
            + 'static,
    {
        let slot: Arc<Mutex<Option<T>>> = Arc::default();
        let kept = Arc::clone(&slot);
        let work: Work = Box::new(move |tx| {
            let kept = Arc::clone(&kept);
            let running = work(tx);
            Box::pin(async move {
                let value = running.await?;
                *kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                Ok(())
            })
        });
        let (done, answer) = oneshot::channel();
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let queue = queue.ok_or(StoreError::Closed)?;
        let submitted = std::time::Instant::now();
        let committed = async {
            queue.send(Job { work, done }).await.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        };
        // Queued behind batches a silent database holds up, a caller waits
        // two timeouts at most; its job is then left out, unless already
        // under way (whether that one committed is unknown, as for any
        // lost connection).
        let committed = tokio::time::timeout(self.timeout * 2, committed);
        tracing::Instrument::instrument(committed, crate::telemetry::child("store.write")).await.map_err(|_| {
            StoreError::Unreachable(format!("the database did not answer within {} s", self.timeout.as_secs()))
        })??;
        crate::metrics::store_write("postgres", submitted.elapsed());
        let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        value.ok_or_else(|| Error::internal("a committed write left no result"))
    }

    /// Finishes the queued mutations and stops the task.
    pub async fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(pool: Pool, fault: AuditFault, timeout: Duration, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let outcomes = match tokio::time::timeout(timeout, batch(&pool, &fault, &jobs)).await {
            Ok(outcomes) => outcomes,
            Err(_) => {
                // Whether a COMMIT sent just before reached the database is
                // unknown, as for any lost connection.
                let failed: Error =
                    StoreError::Unreachable(format!("the database did not answer within {} s", timeout.as_secs()))
                        .into();
                jobs.iter().map(|_| Err(failed.clone())).collect()
            }
        };
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let _ = job.done.send(outcome);
        }
    }
}

/// What one attempt at a batch came to.
enum Attempt {
    /// Committed: each job's outcome.
    Done(Vec<Result<(), Error>>),
    /// A serialization failure or deadlock: run the batch again.
    Again,
    /// The batch failed as a whole (every job gets this).
    Failed(Error),
}

async fn batch(pool: &Pool, fault: &AuditFault, jobs: &[Job]) -> Vec<Result<(), Error>> {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt(pool, fault, jobs).await {
            Attempt::Done(outcomes) => return outcomes,
            Attempt::Again if tries < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(2u64 << tries.min(6)) + jitter()).await;
            }
            Attempt::Again => {
                let failed = Error::Unavailable {
                    reason: "DATABASE_CONTENTION",
                    message: "the database kept refusing the transaction (serialization failures); retry".into(),
                    retry_after: Some(Duration::from_millis(100)),
                };
                return jobs.iter().map(|_| Err(failed.clone())).collect();
            }
            Attempt::Failed(error) => return jobs.iter().map(|_| Err(error.clone())).collect(),
        }
    }
}

async fn attempt(pool: &Pool, fault: &AuditFault, jobs: &[Job]) -> Attempt {
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(e) => return Attempt::Failed(StoreError::Unreachable(e.to_string()).into()),
    };
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => return Attempt::Failed(pg(e).into()),
    };
    if let Err(e) = tx.batch_execute(super::IDLE_IN_TRANSACTION).await {
        return Attempt::Failed(pg(e).into());
    }
    let single = jobs.len() == 1;
    let events = Mutex::new(Vec::new());
    let view = Tx { tx: &tx, events: &events, fault };
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.done.is_closed() {
            // Its caller gave up waiting: nobody will hear of it.
            outcomes.push(Err(StoreError::Closed.into()));
            continue;
        }
        if !single && let Err(e) = tx.batch_execute("SAVEPOINT job").await {
            return failed(e);
        }
        let before = events.lock().unwrap_or_else(|p| p.into_inner()).len();
        match (job.work)(&view).await {
            Ok(()) => {
                if !single && let Err(e) = tx.batch_execute("RELEASE SAVEPOINT job").await {
                    return failed(e);
                }
                outcomes.push(Ok(()));
            }
            Err(TxError::Pg(e)) if retryable(&e) => return Attempt::Again,
            Err(error) => {
                let error = match error {
                    TxError::Pg(e) if e.is_closed() => return failed(e),
                    TxError::Pg(e) => Error::from(pg(e)),
                    TxError::Domain(e) => e,
                };
                if single {
                    // Nothing to keep: the transaction rolls back unsent.
                    return Attempt::Done(vec![Err(error)]);
                }
                if let Err(e) = tx.batch_execute("ROLLBACK TO SAVEPOINT job").await {
                    return failed(e);
                }
                events.lock().unwrap_or_else(|p| p.into_inner()).truncate(before);
                outcomes.push(Err(error));
            }
        }
    }
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(|p| p.into_inner()));
    match super::append(&tx, &events).await {
        Ok(()) => {}
        Err(TxError::Pg(e)) if retryable(&e) => return Attempt::Again,
        Err(TxError::Pg(e)) if e.is_closed() => return failed(e),
        Err(error) => {
            let detail = match error {
                TxError::Pg(e) => pg(e).to_string(),
                TxError::Domain(e) => e.to_string(),
            };
            tracing::error!(error = %detail, "audit append failed; the batch is rolled back");
            return Attempt::Failed(crate::store::audit_unavailable());
        }
    }
    match tx.commit().await {
        Ok(()) => Attempt::Done(outcomes),
        Err(e) if retryable(&e) => Attempt::Again,
        Err(e) => failed(e),
    }
}

fn failed(e: tokio_postgres::Error) -> Attempt {
    if retryable(&e) { Attempt::Again } else { Attempt::Failed(pg(e).into()) }
}
