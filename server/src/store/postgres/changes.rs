//! Other replicas' changes, applied here within a second, and the
//! confirmation that bounds how stale this replica may be.
//!
//! Every mutation appends an audit event in its transaction, and the audit
//! `seq` is gapless in commit order, so the audit trail is the change feed
//! and its head is a cursor:
//! * the fast path: mutations `NOTIFY pullpass_changes` (delivered at
//!   commit); a listener connection publishes each into the local
//!   [`ChangeFeed`] at once;
//! * the backstop and the proof: every second, the changes after the cursor
//!   are read through the pool ([`Shared::changes_after`]) and published,
//!   and the feed is [confirmed](ChangeFeed::confirmed) as of the moment
//!   the read began. The same catch-up runs on demand when a call finds
//!   the feed older than `--max-staleness` ([`Confirmer`]);
//! * the cursor survives lost connections: what committed during a gap is
//!   replayed from it, and no cache has to be dropped. A replica that never
//!   read a cursor (its database was out of reach since start-up), or whose
//!   gap cannot be replayed (pruned from the audit trail meanwhile, or over
//!   100,000 events), drops every derived cache instead. Shared leases that
//!   other replicas dropped are announced by notification only, so a
//!   replica whose notifications' connection comes back drops its cached
//!   leases (`LeaseDropsMissed`). A replica starts serving once its first
//!   catch-up is done and that connection listens, so neither drops the
//!   leases its first calls cached.
//!
//! Every statement runs under the store's `query_timeout`, and the
//! listener's connection is checked each second, so a silent database is
//! noticed in seconds. Applying a change twice (notification and poll) only
//! costs a cache miss.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{CHANGES_CHANNEL, PgConfig};
use crate::changes::{Change, ChangeFeed, Confirmer};
use crate::domain::audit::AuditEvent;
use crate::domain::{AccessTokenId, CredentialName, WorkspaceId};
use crate::store::{ChangesAfter, Store};

/// Mutations whose success invalidates what replicas derived.
pub const CHANGING: &[&str] = &[
    "CreateCredential",
    "UpdateCredential",
    "DeleteCredential",
    "ImportDockerConfig",
    "DeleteWorkspace",
    "RevokeAccessToken",
    "CreateIdentityProvider",
    "UpdateIdentityProvider",
    "DeleteIdentityProvider",
    "CreateIdentityBinding",
    "UpdateIdentityBinding",
    "DeleteIdentityBinding",
];
/// How often the backstop polls (and confirms).
const POLL: Duration = Duration::from_secs(1);

/// Does this event change what replicas cache?
pub fn is_change(event: &AuditEvent) -> bool {
    event.status_code == 0 && CHANGING.contains(&event.action.as_str())
}

/// The notification payload of an event: `action resource`.
pub fn payload(event: &AuditEvent) -> String {
    format!("{} {}", event.action, event.resource)
}

/// Publishes the change an `action` on `resource` stands for.
fn publish(feed: &ChangeFeed, action: &str, resource: &str) {
    match action {
        "DeleteWorkspace" => {
            if let Ok(workspace) = WorkspaceId::from_name(resource) {
                feed.publish(Change::Workspace(&workspace));
            }
        }
        action if action.contains("Identity") => feed.publish(Change::Identity),
        "RevokeAccessToken" => {
            if let Some(id) = AccessTokenId::from_resource_name(resource) {
                feed.publish(Change::Token(&id));
            }
        }
        _ => {
            if let Ok(name) = CredentialName::parse(resource) {
                feed.publish(Change::Credential(&name));
            }
        }
    }
}

/// Where the changes are read from: the store ([`Shared::changes_after`]).
pub trait Source: Send + Sync {
    /// See [`Shared::changes_after`].
    fn changes_after(
        &self,
        cursor: Option<i64>,
    ) -> Pin<Box<dyn Future<Output = Result<ChangesAfter, String>> + Send + '_>>;
}

impl Source for Store {
    fn changes_after(
        &self,
        cursor: Option<i64>,
    ) -> Pin<Box<dyn Future<Output = Result<ChangesAfter, String>> + Send + '_>> {
        Box::pin(async move {
            let shared = self.shared().ok_or("the database is not shared")?;
            shared.changes_after(cursor).await.map_err(|e| e.to_string())
        })
    }
}

/// Follows the other replicas' changes into a feed, and confirms it.
pub struct Follower {
    source: Box<dyn Source>,
    feed: ChangeFeed,
    /// The last cursor read; `None` until the first read.
    cursor: tokio::sync::Mutex<Option<i64>>,
    /// Signalled each time the notifications' connection listens.
    listening: tokio::sync::Notify,
}

impl Follower {
    /// A follower of `source`'s changes into `feed`, which it confirms
    /// on demand from now on.
    pub fn new(source: impl Source + 'static, feed: ChangeFeed) -> Arc<Self> {
        let follower = Arc::new(Self {
            source: Box::new(source),
            feed,
            cursor: tokio::sync::Mutex::new(None),
            listening: tokio::sync::Notify::new(),
        });
        follower.feed.set_confirmer(follower.clone());
        follower
    }

    /// Reads and publishes the changes after the cursor, then confirms the
    /// feed as of the moment the read began.
    async fn catch_up(&self) -> Result<(), String> {
        let mut cursor = self.cursor.lock().await;
        let asked = Instant::now();
        let read = self.source.changes_after(*cursor).await?;
        match *cursor {
            // What this replica derived before its first read is unknown,
            // as is what a gap it cannot replay held.
            None => self.feed.publish(Change::Everything),
            Some(_) if read.gap => self.feed.publish(Change::Everything),
            Some(_) => {
                for (action, resource) in &read.changes {
                    publish(&self.feed, action, resource);
                }
            }
        }
        *cursor = Some(read.head);
        self.feed.confirmed(asked);
        Ok(())
    }

    /// Runs until the process ends: notifications on a dedicated
    /// connection (reconnecting by itself), a catch-up every second.
    pub fn run(self: Arc<Self>, config: PgConfig) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let poller = Arc::clone(&self);
            let poll = tokio::spawn(async move {
                let mut tick = tokio::time::interval(POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing = false;
                loop {
                    tick.tick().await;
                    match poller.catch_up().await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!("the change feed is confirmed again");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(
                                error = %e,
                                limit_s = poller.feed.limit().unwrap_or_default().as_secs(),
                                "cannot confirm the other replicas' changes; caches are served until --max-staleness, then calls confirm from the database or fail UNAVAILABLE"
                            );
                        }
                        Err(_) => {}
                    }
                    crate::metrics::change_feed_staleness(poller.feed.staleness());
                }
            });
            let _poll = AbortOnDrop(poll);
            loop {
                if let Err(e) = self.listen(&config).await {
                    tracing::debug!(error = %e, "the change notifications' connection ended; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    /// Publishes notifications until the connection fails or goes silent.
    async fn listen(&self, config: &PgConfig) -> Result<(), String> {
        let limit = config.query_timeout;
        let bounded = |what: &'static str| move |_| format!("{what}: no answer within {} s", limit.as_secs());
        let (client, mut notifications) =
            tokio::time::timeout(limit, listen(config)).await.map_err(bounded("connecting"))??;
        tokio::time::timeout(
            limit,
            client.batch_execute(&format!("LISTEN {CHANGES_CHANNEL}; LISTEN {}", super::shared::LEASES_CHANNEL)),
        )
        .await
        .map_err(bounded("LISTEN"))?
        .map_err(|e| e.to_string())?;
        // What committed before LISTEN took effect and was not yet polled
        // comes with the next catch-up; a lease dropped meanwhile is not in
        // the audit trail, so cached leases go (they are read again from
        // the shared table, not fetched from registries).
        self.feed.publish(Change::LeaseDropsMissed);
        self.listening.notify_one();
        let mut check = tokio::time::interval(POLL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                notification = notifications.recv() => match notification {
                    Some(Ok((channel, payload))) => {
                        if channel == super::shared::LEASES_CHANNEL {
                            match payload.strip_prefix(super::shared::DROPPED) {
                                Some(key) => self.feed.publish(Change::LeaseDropped(key)),
                                None => self.feed.publish(Change::LeaseStored),
                            }
                        } else if let Some((action, resource)) = payload.split_once(' ') {
                            publish(&self.feed, action, resource);
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err("the listener connection closed".into()),
                },
                _ = check.tick() => {
                    // A silent connection delivers no notifications and
                    // reports no error: ask it something.
                    tokio::time::timeout(limit, client.simple_query(""))
                        .await
                        .map_err(bounded("the notifications' connection"))?
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

impl Confirmer for Follower {
    fn confirm(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self.catch_up())
    }
}

/// Aborts a task when dropped (the poller dies with the follower).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts following `store`'s changes into `feed` (see [`Follower`]), and
/// returns once the first catch-up is done and the notifications'
/// connection listens (or after the store's `query_timeout`, with a
/// warning). Both drop what was cached before them, so a replica serves no
/// call until then: a lease it caches from its first call stays cached.
pub async fn follow(config: PgConfig, store: Store, feed: ChangeFeed) -> tokio::task::JoinHandle<()> {
    let follower = Follower::new(store, feed);
    let limit = config.query_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let first = tokio::time::timeout_at(deadline, follower.catch_up()).await;
    let running = Arc::clone(&follower).run(config);
    let listening = tokio::time::timeout_at(deadline, follower.listening.notified()).await;
    if !matches!(first, Ok(Ok(()))) || listening.is_err() {
        tracing::warn!(
            limit_s = limit.as_secs(),
            "the other replicas' changes are not followed yet; serving anyway (they are polled each second, and what is cached meanwhile is dropped once they are)"
        );
    }
    running
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").finish_non_exhaustive()
    }
}

/// Notifications as `(channel, payload)`; an error or the end when the
/// connection is lost.
type Notifications = tokio::sync::mpsc::UnboundedReceiver<Result<(String, String), String>>;

/// A dedicated connection, driven by its own task (which must keep polling
/// it for the client's queries to complete), whose notifications come out
/// of a channel.
async fn listen(config: &PgConfig) -> Result<(tokio_postgres::Client, Notifications), String> {
    fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>) -> Notifications
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                let forwarded = match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        sender.send(Ok((n.channel().to_owned(), n.payload().to_owned())))
                    }
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let _ = sender.send(Err(e.to_string()));
                        return;
                    }
                };
                if forwarded.is_err() {
                    return;
                }
            }
        });
        receiver
    }
    match config.tls()? {
        Some(tls) => {
            let (client, connection) = config.connection().connect(tls).await.map_err(|e| e.to_string())?;
            Ok((client, drive(connection)))
        }
        None => {
            let (client, connection) =
                config.connection().connect(tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
            Ok((client, drive(connection)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers from a script (`None`: the database is out of reach), and
    /// records the cursors asked for.
    #[derive(Default)]
    struct Script {
        answers: Mutex<Vec<Option<ChangesAfter>>>,
        asked: Mutex<Vec<Option<i64>>>,
    }

    impl Source for Arc<Script> {
        fn changes_after(
            &self,
            cursor: Option<i64>,
        ) -> Pin<Box<dyn Future<Output = Result<ChangesAfter, String>> + Send + '_>> {
            self.asked.lock().unwrap().push(cursor);
            let next = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { next.ok_or_else(|| "out of reach".to_owned()) })
        }
    }

    fn script(answers: Vec<Option<ChangesAfter>>) -> Arc<Script> {
        Arc::new(Script { answers: Mutex::new(answers), asked: Mutex::default() })
    }

    fn recorded(feed: &ChangeFeed) -> Arc<Mutex<Vec<String>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        feed.subscribe(move |change| kept.lock().unwrap().push(format!("{change:?}")));
        seen
    }

    fn change(action: &str, resource: &str) -> (String, String) {
        (action.to_owned(), resource.to_owned())
    }

    #[tokio::test]
    async fn a_first_read_that_fails_leaves_the_feed_unconfirmed_and_the_first_that_works_drops_everything() {
        let feed = ChangeFeed::bounded(Duration::from_millis(30));
        let source = script(vec![None, Some(ChangesAfter { head: 7, ..ChangesAfter::default() })]);
        let seen = recorded(&feed);
        let follower = Follower::new(Arc::clone(&source), feed.clone());
        assert!(follower.catch_up().await.is_err());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(!feed.is_fresh(), "never confirmed: past the limit nothing cached is served");
        feed.fresh(Instant::now() + Duration::from_secs(1)).await.expect("confirmed on demand");
        assert_eq!(*seen.lock().unwrap(), ["Everything"], "what was cached before the first read is unknown");
        assert_eq!(*source.asked.lock().unwrap(), [None, None]);
    }

    #[tokio::test]
    async fn a_gap_that_cannot_be_replayed_drops_everything() {
        let feed = ChangeFeed::bounded(Duration::from_secs(10));
        let source = script(vec![
            Some(ChangesAfter { head: 7, ..ChangesAfter::default() }),
            Some(ChangesAfter { head: 500_000, gap: true, changes: vec![] }),
        ]);
        let follower = Follower::new(Arc::clone(&source), feed.clone());
        follower.catch_up().await.unwrap();
        let seen = recorded(&feed);
        follower.catch_up().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["Everything"]);
        assert_eq!(*follower.cursor.lock().await, Some(500_000));
    }

    #[tokio::test]
    async fn after_a_gap_the_changes_are_replayed_from_the_cursor_and_nothing_else_is_dropped() {
        let feed = ChangeFeed::bounded(Duration::from_secs(10));
        let source = script(vec![
            Some(ChangesAfter { head: 7, ..ChangesAfter::default() }),
            None,
            None,
            Some(ChangesAfter {
                head: 9,
                gap: false,
                changes: vec![
                    change("RevokeAccessToken", "workspaces/acme/accessTokens/t1"),
                    change("RevokeAccessToken", "rootTokens/r1"),
                    change("UpdateCredential", "workspaces/acme/credentials/reg"),
                    change("DeleteWorkspace", "workspaces/gone"),
                ],
            }),
        ]);
        let follower = Follower::new(Arc::clone(&source), feed.clone());
        follower.catch_up().await.unwrap();
        let seen = recorded(&feed);
        assert!(follower.catch_up().await.is_err());
        assert!(follower.catch_up().await.is_err());
        follower.catch_up().await.unwrap();
        let seen = seen.lock().unwrap().join("\n");
        assert!(!seen.contains("Everything"), "{seen}");
        assert_eq!(seen.matches("Token(").count(), 2, "{seen}");
        assert!(seen.contains("Credential("), "{seen}");
        assert!(seen.contains("Workspace("), "{seen}");
        assert_eq!(*source.asked.lock().unwrap(), [None, Some(7), Some(7), Some(7)], "the cursor survives the gap");
    }
}
