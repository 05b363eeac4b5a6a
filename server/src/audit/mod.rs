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
//! * **Identical lease events are aggregated** ([`aggregate`]): calls of one
//!   batch that differ only in time and request id, and ended within the same
//!   second, are written as one event with their `count` and every request
//!   id. At tens of thousands of cached leases a second from a few launchers,
//!   a row (and a chain link) per call would be most of a lease's cost and
//!   of the database's growth; this keeps every call's who, what, outcome
//!   and request id.
//!
//! Failed attempts (refused, invalid, not found) are recorded best-effort.
//! Events never hold a secret or an issued token.

pub mod chain;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::Timestamp;
use crate::domain::audit::{AuditEvent, AuditRecord};
use crate::error::Error;
use crate::store::{AuditFilter, Pruned, Store};

/// How long lease events may wait to be committed.
const LEASE_FLUSH: Duration = Duration::from_millis(20);
/// Most lease events queued before new ones are dropped.
const LEASE_QUEUE: usize = 100_000;
/// Most events committed in one lease flush.
const LEASE_BATCH: usize = 4096;

/// Who performed a call, as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's resource name (`workspaces/a/accessTokens/x`, `rootTokens/y`).
    pub principal: Arc<str>,
    /// The request id (shared with the call's log line and context).
    pub request_id: Arc<str>,
    /// Where the call came from.
    pub origin: Origin,
}

impl Default for Actor {
    fn default() -> Self {
        Self { principal: Arc::from(""), request_id: Arc::from(""), origin: Origin::Unknown }
    }
}

/// Where a call came from (the audit trail's `client_address`), kept as an
/// address and written out only into the events that record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Origin {
    /// Not known ("").
    #[default]
    Unknown,
    /// A network peer.
    Peer(std::net::SocketAddr),
    /// This machine's command line ("local").
    Local,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => Ok(()),
            Self::Peer(address) => address.fmt(f),
            Self::Local => f.write_str("local"),
        }
    }
}

impl Actor {
    /// An actor for offline commands.
    pub fn command(name: &str) -> Self {
        Self { principal: format!("pullpassd {name}").into(), request_id: Arc::from(""), origin: Origin::Local }
    }

    /// The workspace of the caller's own token (`workspaces/{w}/…`), or ""
    /// for ROOT and offline commands.
    pub fn own_workspace(&self) -> &str {
        self.principal.strip_prefix("workspaces/").and_then(|rest| rest.split('/').next()).unwrap_or("")
    }

    /// An event by this actor.
    pub fn event(&self, action: &str, workspace: &str, resource: &str, status_code: i32) -> AuditEvent {
        AuditEvent {
            event_time: Timestamp::now(),
            workspace: workspace.to_owned(),
            principal: self.principal.to_string(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            status_code,
            client_address: self.origin.to_string(),
            request_id: self.request_id.to_string(),
            image: String::new(),
            granted_scope: String::new(),
            count: 1,
        }
    }

    /// The event of a lease this actor was issued, for
    /// [`Auditor::record_issued`].
    pub fn issued(&self, text: &Arc<crate::domain::IssuedText>) -> IssuedNote {
        IssuedNote {
            time: Timestamp::now(),
            principal: Arc::clone(&self.principal),
            origin: self.origin,
            request_id: Arc::clone(&self.request_id),
            text: Arc::clone(text),
        }
    }
}

/// The audit event of one successfully issued lease, as the hot path hands
/// it over: what is shared between calls is shared by reference, and it is
/// written out into an [`AuditEvent`] once per aggregated group.
#[derive(Debug)]
pub struct IssuedNote {
    time: Timestamp,
    principal: Arc<str>,
    origin: Origin,
    request_id: Arc<str>,
    text: Arc<crate::domain::IssuedText>,
}

impl IssuedNote {
    fn event(&self) -> AuditEvent {
        AuditEvent {
            event_time: self.time,
            workspace: self.text.workspace.clone(),
            principal: self.principal.to_string(),
            action: "IssueRegistryAuth".into(),
            resource: self.text.credential.clone(),
            status_code: 0,
            client_address: self.origin.to_string(),
            request_id: self.request_id.to_string(),
            image: self.text.image.clone(),
            granted_scope: self.text.granted.clone(),
            count: 1,
        }
    }
}

/// What waits in the lease queue.
#[derive(Debug)]
enum Queued {
    Event(AuditEvent),
    Issued(IssuedNote),
}

impl Queued {
    /// When it was queued (its event's time).
    fn time(&self) -> Timestamp {
        match self {
            Queued::Event(event) => event.event_time,
            Queued::Issued(note) => note.time,
        }
    }
}

/// The audit service: the lease queue, failed attempts, queries.
#[derive(Debug, Clone)]
pub struct Auditor {
    store: Store,
    leases: Option<mpsc::Sender<Queued>>,
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
    /// A workspace token's attempt goes into its own workspace's trail,
    /// whichever workspace `resource` names: a caller probing another
    /// tenant leaves nothing in that tenant's trail, and its own admins see
    /// what it tried. ROOT may act in every workspace: its attempt goes into
    /// the trail of the workspace `resource` names (`workspaces/{w}…`), if
    /// any. `resource` is what the caller wrote, so at most 80 characters
    /// of it are kept, control characters replaced.
    pub async fn record_failure(&self, actor: &Actor, action: &str, resource: &str, status_code: i32) {
        let workspace = match actor.own_workspace() {
            "" => resource
                .strip_prefix("workspaces/")
                .and_then(|rest| crate::domain::WorkspaceId::parse(rest.split('/').next().unwrap_or("")).ok())
                .map(|w| w.to_string())
                .unwrap_or_default(),
            own => own.to_owned(),
        };
        let resource = crate::domain::ids::shorten(resource);
        let event = actor.event(action, &workspace, &resource, status_code);
        match self.store.append_audit(&[event]).await {
            Ok(()) => crate::metrics::audit_written(1),
            Err(e) => tracing::error!(error = %e, action, "could not record a failed attempt in the audit trail"),
        }
    }

    /// Queues a lease event (committed within a few milliseconds).
    pub fn record_lease(&self, event: AuditEvent) {
        self.queue(Queued::Event(event));
    }

    /// Queues the event of an issued lease (see [`Actor::issued`]).
    pub fn record_issued(&self, note: IssuedNote) {
        self.queue(Queued::Issued(note));
    }

    fn queue(&self, queued: Queued) {
        let Some(sender) = &self.leases else { return };
        match sender.try_send(queued) {
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

    /// Successful leases and gateway pulls of a workspace per hour since
    /// `since`, from the trail (the console's chart).
    pub async fn leases_per_hour(
        &self,
        workspace: &crate::domain::WorkspaceId,
        since: Timestamp,
    ) -> Result<Vec<(Timestamp, u64)>, Error> {
        self.store.leases_per_hour(workspace, since).await
    }

    /// Walks the whole chain (see [`verify`]).
    pub async fn verify(&self) -> Result<Verification, Error> {
        verify(&self.store).await
    }

    /// Stops queueing and waits for queued lease events to be committed.
    pub async fn close(self, flusher: tokio::task::JoinHandle<()>) {
        drop(self.leases);
        let _ = flusher.await;
    }
}

async fn flush_leases(store: Store, mut receiver: mpsc::Receiver<Queued>) {
    while let Some(first) = receiver.recv().await {
        // Until this batch is committed, its first event is the oldest one
        // waiting (the queue is FIFO: everything behind it is newer).
        crate::metrics::audit_pending(Some(first.time()));
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
        let batch = aggregate(written_out(batch));
        match store.append_audit(&batch).await {
            Ok(()) => crate::metrics::audit_written(count),
            Err(e) => {
                crate::metrics::audit_dropped(count);
                tracing::error!(error = %e, events = count, "lease audit events could not be written");
            }
        }
        crate::metrics::audit_pending(None);
    }
}

/// The queued events as [`AuditEvent`]s, in queue order, the notes of
/// identical issued leases (same lease facts, principal, origin and second)
/// already folded together: cheaply, by reference, so a burst of identical
/// cached leases is written out once, not once per call.
fn written_out(batch: Vec<Queued>) -> Vec<AuditEvent> {
    type NoteKey = (*const crate::domain::IssuedText, *const u8, Origin, i64);
    // The shared parts are held until the end, so no key's address can be
    // reused by another value meanwhile.
    type Held = (usize, Arc<crate::domain::IssuedText>, Arc<str>);
    let mut groups: std::collections::HashMap<NoteKey, Held> = std::collections::HashMap::new();
    let mut out: Vec<AuditEvent> = Vec::with_capacity(batch.len().min(64));
    for queued in batch {
        match queued {
            Queued::Event(event) => out.push(event),
            Queued::Issued(note) => {
                let second = note.time.as_micros().div_euclid(1_000_000);
                let key = (Arc::as_ptr(&note.text), Arc::as_ptr(&note.principal).cast::<u8>(), note.origin, second);
                match groups.get(&key) {
                    Some(&(index, ..)) => {
                        let folded = &mut out[index];
                        folded.count = folded.count.saturating_add(1);
                        folded.request_id.push(' ');
                        folded.request_id.push_str(&note.request_id);
                    }
                    None => {
                        groups.insert(key, (out.len(), Arc::clone(&note.text), Arc::clone(&note.principal)));
                        out.push(note.event());
                    }
                }
            }
        }
    }
    out
}

/// Folds identical events of one batch into one: same workspace, principal,
/// action, resource, outcome, client address, image and granted scope, and
/// an `event_time` in the same second. The folded event keeps the first
/// call's time, adds up the counts and lists every request id in order
/// (space-separated: request ids hold no spaces). Events keep the order of
/// their first call.
pub fn aggregate(batch: Vec<AuditEvent>) -> Vec<AuditEvent> {
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str, i32, &'a str, &'a str, &'a str, i64);
    fn key(e: &AuditEvent) -> Key<'_> {
        let second = e.event_time.as_micros().div_euclid(1_000_000);
        (
            &e.workspace,
            &e.principal,
            &e.action,
            &e.resource,
            e.status_code,
            &e.client_address,
            &e.image,
            &e.granted_scope,
            second,
        )
    }
    let mut group_of = Vec::with_capacity(batch.len());
    {
        let mut groups: std::collections::HashMap<Key<'_>, usize> = std::collections::HashMap::new();
        for event in &batch {
            let next = groups.len();
            group_of.push(*groups.entry(key(event)).or_insert(next));
        }
    }
    let mut out: Vec<AuditEvent> = Vec::new();
    for (event, group) in batch.into_iter().zip(group_of) {
        // Groups are numbered in order of first appearance.
        if group == out.len() {
            out.push(event);
        } else {
            let folded = &mut out[group];
            folded.count = folded.count.saturating_add(event.count);
            folded.request_id.push(' ');
            folded.request_id.push_str(&event.request_id);
        }
    }
    out
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
/// as the chain's new starting point.
///
/// Event times are not monotonic in `seq` (a group commit's events, or
/// replicas whose clocks differ), and the chain has no gaps: so it deletes
/// the longest run from the start of the chain whose events are all older
/// than the cutoff. It never deletes a newer event; an older one that comes
/// after a newer one stays (counted in [`Pruned::kept_older`]) until a later
/// prune can take it.
pub async fn prune(store: &Store, retention: Duration) -> Result<Pruned, Error> {
    store.prune_audit(Timestamp::now().saturating_minus(retention)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(at_micros: i64, request_id: &str, client: &str, code: i32) -> AuditEvent {
        AuditEvent {
            event_time: Timestamp::from_micros(at_micros),
            workspace: "acme".into(),
            principal: "workspaces/acme/accessTokens/ci".into(),
            action: "IssueRegistryAuth".into(),
            resource: "workspaces/acme/credentials/ghcr".into(),
            status_code: code,
            client_address: client.into(),
            request_id: request_id.into(),
            image: "ghcr.io/acme/app:1".into(),
            granted_scope: "repository:acme/app:pull".into(),
            count: 1,
        }
    }

    #[test]
    fn identical_calls_of_one_second_become_one_event_with_every_request_id() {
        let batch = vec![
            lease(5_000_100, "r1", "10.0.0.1:1", 0),
            lease(5_000_200, "r2", "10.0.0.2:1", 0),
            lease(5_000_300, "r3", "10.0.0.1:1", 0),
            lease(5_999_999, "r4", "10.0.0.1:1", 0),
            lease(5_999_999, "r5", "10.0.0.1:1", 7),
            lease(6_000_000, "r6", "10.0.0.1:1", 0),
        ];
        let folded = aggregate(batch);
        let summary: Vec<(&str, u32, i64)> =
            folded.iter().map(|e| (e.request_id.as_str(), e.count, e.event_time.as_micros())).collect();
        assert_eq!(
            summary,
            [
                ("r1 r3 r4", 3, 5_000_100), // the first call's time
                ("r2", 1, 5_000_200),       // another client
                ("r5", 1, 5_999_999),       // another outcome
                ("r6", 1, 6_000_000),       // the next second
            ]
        );
        assert_eq!(folded[0].request_ids().collect::<Vec<_>>(), ["r1", "r3", "r4"]);
        assert_eq!(folded.iter().map(|e| e.count).sum::<u32>(), 6, "every call is counted");
    }

    #[test]
    fn notes_of_one_issued_lease_are_written_out_once_between_other_events_in_queue_order() {
        let workspace = crate::domain::WorkspaceId::parse("acme").unwrap();
        let text = Arc::new(crate::domain::IssuedText {
            workspace: workspace.to_string(),
            image: "ghcr.io/acme/app:1".into(),
            credential: "workspaces/acme/credentials/ghcr".into(),
            requested: "repository:acme/app:pull".into(),
            granted: "repository:acme/app:pull".into(),
            narrower: false,
        });
        let peer = |port| Origin::Peer(std::net::SocketAddr::from(([10, 0, 0, 1], port)));
        let actor =
            |id: &str, port| Actor { principal: Arc::from("rootTokens/r"), request_id: id.into(), origin: peer(port) };
        // One second for all, whenever the test runs.
        let at = |actor: Actor| {
            Queued::Issued(IssuedNote { time: Timestamp::from_micros(7_000_000), ..actor.issued(&text) })
        };
        let first = actor("a", 1);
        let batch = vec![
            at(first.clone()),
            Queued::Event(lease(7_000_001, "failed", "x", 5)),
            at(Actor { request_id: "b".into(), ..first.clone() }),
            at(actor("c", 2)),
            at(Actor { request_id: "d".into(), ..first.clone() }),
        ];
        let events = aggregate(written_out(batch));
        let summary: Vec<(&str, &str, u32)> =
            events.iter().map(|e| (e.request_id.as_str(), e.client_address.as_str(), e.count)).collect();
        assert_eq!(summary, [("a b d", "10.0.0.1:1", 3), ("failed", "x", 1), ("c", "10.0.0.1:2", 1)]);
        let issued = &events[0];
        assert_eq!(
            (issued.action.as_str(), issued.workspace.as_str(), issued.resource.as_str(), issued.image.as_str()),
            ("IssueRegistryAuth", "acme", "workspaces/acme/credentials/ghcr", "ghcr.io/acme/app:1")
        );
        assert_eq!(
            (issued.principal.as_str(), issued.granted_scope.as_str()),
            ("rootTokens/r", "repository:acme/app:pull")
        );
    }

    #[test]
    fn events_that_differ_in_anything_but_time_and_request_id_stay_apart() {
        let base = lease(1_000_000, "r1", "c", 0);
        let variants: Vec<AuditEvent> = vec![
            AuditEvent { workspace: "other".into(), ..base.clone() },
            AuditEvent { principal: "rootTokens/x".into(), ..base.clone() },
            AuditEvent { action: "TestCredential".into(), ..base.clone() },
            AuditEvent { resource: "workspaces/acme/credentials/x".into(), ..base.clone() },
            AuditEvent { image: "ghcr.io/acme/other:1".into(), ..base.clone() },
            AuditEvent { granted_scope: String::new(), ..base.clone() },
        ];
        let mut batch = vec![base];
        batch.extend(variants);
        assert_eq!(aggregate(batch).len(), 7);
    }
}
