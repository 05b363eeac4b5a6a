//! The audit trail: every mutating call and every issued registry auth
//! leaves an event (who, what, which resource, outcome, from where), chained
//! by hashes ([`chain`]) so tampering is detectable.
//!
//! Two write paths, on purpose:
//! * **Mutations fail closed.** Their success event is appended inside the
//!   mutation's own transaction (the store's mutations take their events):
//!   if the event cannot be written, the mutation is rolled back and fails.
//! * **Lease events are group-committed.** [`Auditor::record_lease`] queues the
//!   event and returns at once; a background task commits the queue every few
//!   milliseconds in one transaction. Issuance is never serialized behind the
//!   audit log. The trade-off: a crash can lose the last few milliseconds of
//!   lease events (the leases themselves are short-lived and scoped); and if
//!   the queue is full, events are dropped with an error log rather than
//!   blocking issuance.
//!
//! Failed attempts (refused, invalid, not found) are recorded best-effort.
//! Events never hold a secret or an issued token.

pub mod chain;

use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::Timestamp;
use crate::domain::audit::{AuditEvent, AuditRecord};
use crate::error::Error;
use crate::store::{AuditFilter, Store};

/// How long lease events may wait to be committed.
const LEASE_FLUSH: Duration = Duration::from_millis(5);
/// Most lease events queued before new ones are dropped.
const LEASE_QUEUE: usize = 100_000;
/// Most events committed in one lease flush.
const LEASE_BATCH: usize = 1024;

/// Who performed a call, as the audit trail records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The token's resource name (`workspaces/a/accessTokens/x`, `rootTokens/y`).
    pub principal: String,
    /// The request id.
    pub request_id: String,
    /// The caller's address.
    pub client_address: String,
}

impl Actor {
    /// An actor for offline commands.
    pub fn command(name: &str) -> Self {
        Self { principal: format!("pullpassd {name}"), request_id: String::new(), client_address: "local".into() }
    }

    /// An event by this actor.
    pub fn event(&self, action: &str, workspace: &str, resource: &str, status_code: i32) -> AuditEvent {
        AuditEvent {
            event_time: Timestamp::now(),
            workspace: workspace.to_owned(),
            principal: self.principal.clone(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            status_code,
            client_address: self.client_address.clone(),
            request_id: self.request_id.clone(),
            image: String::new(),
            granted_scope: String::new(),
        }
    }
}

/// The audit service: the lease queue, failed attempts, queries.
#[derive(Debug, Clone)]
pub struct Auditor {
    store: Store,
    leases: Option<mpsc::Sender<AuditEvent>>,
    pages: Option<std::sync::Arc<crate::paging::PageTokens>>,
}

impl Auditor {
    /// An auditor over `store`, with its lease-event flusher.
    pub fn new(store: Store, pages: std::sync::Arc<crate::paging::PageTokens>) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(LEASE_QUEUE);
        let flusher = tokio::spawn(flush_leases(store.clone(), receiver));
        (Self { store, leases: Some(sender), pages: Some(pages) }, flusher)
    }

    /// An auditor without a lease queue or listings (offline commands).
    pub fn offline(store: Store) -> Self {
        Self { store, leases: None, pages: None }
    }

    /// Records a failed attempt, best-effort (a failure to record is logged).
    pub async fn record_failure(&self, actor: &Actor, action: &str, workspace: &str, resource: &str, status_code: i32) {
        let event = actor.event(action, workspace, resource, status_code);
        match self.store.append_audit(&[event]).await {
            Ok(()) => crate::metrics::audit_written(1),
            Err(e) => tracing::error!(error = %e, action, "could not record a failed attempt in the audit trail"),
        }
    }

    /// Queues a lease event (committed within a few milliseconds).
    pub fn record_lease(&self, event: AuditEvent) {
        let Some(sender) = &self.leases else { return };
        match sender.try_send(event) {
            Ok(()) => crate::metrics::audit_queued(),
            Err(_) => {
                crate::metrics::audit_dropped(1);
                tracing::error!("the audit queue is full; a lease event was dropped");
            }
        }
    }

    /// A page of events, oldest first: of one workspace, or of all (`None`).
    /// Filter terms: `action`, `resource`, `principal` (`=`), `event_time`
    /// (`>=`, `<`, RFC 3339).
    pub async fn list(
        &self,
        workspace: Option<crate::domain::WorkspaceId>,
        requested_page_size: i32,
        page_token: &str,
        filter: &str,
    ) -> Result<crate::paging::Page<AuditRecord>, Error> {
        let size = crate::paging::page_size(requested_page_size)?;
        let mut parsed = AuditFilter { workspace: workspace.map(|w| w.to_string()), ..Default::default() };
        for term in crate::filter::terms(filter)? {
            use crate::filter::Op;
            let time = || {
                Timestamp::parse_rfc3339(&term.value).ok_or_else(|| {
                    Error::invalid("filter", "event_time needs an RFC 3339 time such as \"2026-01-31T00:00:00Z\"")
                })
            };
            match (term.field.as_str(), term.op) {
                ("action", Op::Equals) => parsed.action = Some(term.value.clone()),
                ("resource", Op::Equals) => parsed.resource = Some(term.value.clone()),
                ("principal", Op::Equals) => parsed.principal = Some(term.value.clone()),
                ("event_time", Op::AtLeast) => parsed.since = Some(time()?),
                ("event_time", Op::Below) => parsed.before = Some(time()?),
                _ => {
                    return Err(crate::filter::unsupported(
                        &term,
                        "`action =`, `resource =`, `principal =`, `event_time >=`, `event_time <`",
                    ));
                }
            }
        }
        let query = format!("audit|{parsed:?}");
        let pages = self.pages.clone().ok_or_else(|| Error::internal("audit listing without page tokens"))?;
        let after: i64 = match pages.decode(&query, page_token)? {
            Some(cursor) => cursor.parse().map_err(|_| Error::invalid("page_token", "is not a valid page token"))?,
            None => 0,
        };
        let fetched = self.store.audit_events(&parsed, after, size + 1).await?;
        Ok(crate::paging::Page::from_fetched(fetched, size, &pages, &query, |r| r.seq.to_string()))
    }

    /// Stops queueing and waits for queued lease events to be committed.
    pub async fn close(self, flusher: tokio::task::JoinHandle<()>) {
        drop(self.leases);
        let _ = flusher.await;
    }
}

async fn flush_leases(store: Store, mut receiver: mpsc::Receiver<AuditEvent>) {
    while let Some(first) = receiver.recv().await {
        // Let events gather without waiting on the queue: a task parked in
        // `recv` is woken by every send, one wake-up per lease under load.
        tokio::time::sleep(LEASE_FLUSH).await;
        let mut batch = vec![first];
        while batch.len() < LEASE_BATCH {
            match receiver.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let count = batch.len();
        match store.append_audit(&batch).await {
            Ok(()) => crate::metrics::audit_written(count),
            Err(e) => {
                crate::metrics::audit_dropped(count);
                tracing::error!(error = %e, events = count, "lease audit events could not be written");
            }
        }
    }
}

/// The outcome of `pullpassd audit verify`.
#[derive(Debug)]
pub struct Verification {
    /// Events checked.
    pub checked: u64,
    /// The head (`seq`, hash) after the last good event.
    pub head: Option<(i64, [u8; 32])>,
    /// The first broken link, if any.
    pub broken: Option<chain::Break>,
}

/// Walks the whole chain from the checkpoint (or the start).
pub async fn verify(store: &Store) -> Result<Verification, Error> {
    let start = store.audit_checkpoint().await?;
    let (mut seq, mut hash) = start.unwrap_or((0, chain::GENESIS));
    let mut checked = 0u64;
    loop {
        let records = store.audit_events(&AuditFilter::default(), seq, 1000).await?;
        if records.is_empty() {
            let head = (checked > 0 || start.is_some()).then_some((seq, hash));
            return Ok(Verification { checked, head, broken: None });
        }
        for record in &records {
            match chain::check(record, seq, &hash) {
                Ok(next) => {
                    hash = next;
                    seq = record.seq;
                    checked += 1;
                }
                Err(broken) => return Ok(Verification { checked, head: Some((seq, hash)), broken: Some(broken) }),
            }
        }
    }
}

/// The chain head as stored (`seq`, hash), for external anchoring.
pub async fn head(store: &Store) -> Result<Option<(i64, [u8; 32])>, Error> {
    match store.audit_head().await? {
        Some(head) => Ok(Some(head)),
        None => store.audit_checkpoint().await,
    }
}

/// Deletes events older than `retention` and records the last deleted one
/// as the chain's new starting point. Returns how many were deleted.
pub async fn prune(store: &Store, retention: Duration) -> Result<u64, Error> {
    store.prune_audit(Timestamp::now().saturating_minus(retention)).await
}
