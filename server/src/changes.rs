//! Change notifications, and how stale what was derived from them may be.
//!
//! Services publish what they changed, caches subscribe and drop what they
//! derived from it. With replicas on PostgreSQL, the changes other replicas
//! commit arrive here too (see `store::postgres::changes`), and this
//! replica's caches are only as current as the last time it confirmed that
//! it had seen every change committed before some moment: the feed keeps
//! that moment ([`ChangeFeed::confirmed`]).
//!
//! The promise is bounded staleness. Once a change commits, no replica
//! honours the old state for longer than `--max-staleness`:
//! * a cache consumer asks [`ChangeFeed::fresh`] before it serves anything
//!   derived (a token record, a workspace's credentials, a remembered lease);
//! * while the last confirmation is younger than the limit, that is one
//!   atomic load and a clock read;
//! * past the limit (the replica is cut off from the database, or its
//!   follower never connected), the call confirms the feed itself: one read
//!   of the change cursor through the [`Confirmer`], shared by every call
//!   waiting at that moment, which publishes what was missed (so caches
//!   drop it) before anything cached is served;
//! * if the database cannot answer in time, the call fails `UNAVAILABLE`
//!   (with a retry delay): a stale answer is never given.
//!
//! A short outage that every replica sees (PostgreSQL restarting) is ridden
//! out from caches within the limit. On a single replica (SQLite), every
//! change goes through this feed, so it is always fresh.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock};

use futures_util::FutureExt;
use std::time::{Duration, Instant};

use crate::domain::{AccessTokenId, CredentialName, WorkspaceId};
use crate::error::Error;

/// What changed.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A credential was created, updated or deleted.
    Credential(&'a CredentialName),
    /// A workspace (and possibly everything in it) was created or deleted.
    Workspace(&'a WorkspaceId),
    /// An access token was revoked.
    Token(&'a AccessTokenId),
    /// Another replica stored a shared lease (waiters look again).
    LeaseStored,
    /// Another replica dropped the shared lease under this key (the
    /// registry refused it): a copy cached here is dead too.
    LeaseDropped(&'a str),
    /// An identity provider or binding was created, changed or deleted:
    /// what was derived from them (verified tokens, their grants) goes.
    Identity,
    /// Such drops may have been missed (the notifications' connection was
    /// lost; they are not in the audit trail to replay): cached leases go.
    LeaseDropsMissed,
    /// Anything may have changed (a replica lost its view of the others'
    /// changes for a while): drop every derived cache.
    Everything,
}

type Listener = Arc<dyn Fn(Change<'_>) + Send + Sync>;

/// A confirmation under way, shared by the calls waiting for it.
type Attempt = futures_util::future::Shared<Pin<Box<dyn Future<Output = Result<(), String>> + Send>>>;

/// Reads the changes committed since the last confirmation from the
/// database, publishes them into the feed and confirms it (see
/// `store::postgres::changes`).
pub trait Confirmer: Send + Sync {
    /// Catches up and calls [`ChangeFeed::confirmed`]; an error when the
    /// database did not answer.
    fn confirm(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Default `--max-staleness`.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(10);
/// Longest a call without a deadline of its own waits for the feed to be
/// confirmed before it is refused.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);
/// The retry delay a call refused for staleness suggests.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The origin of the feed's clock (milliseconds on a monotonic clock).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_millis() as u64
}

/// How current this replica's view of other replicas' changes is.
struct Bound {
    limit: Duration,
    /// Every change committed before this moment (ms after [`EPOCH`]) has
    /// been published.
    confirmed: AtomicU64,
    confirmer: OnceLock<Arc<dyn Confirmer>>,
    /// The confirmation under way, if any: one at a time, run by a task of
    /// its own (so a caller that gives up does not cancel it), every call
    /// past the limit waiting for it within its own deadline.
    attempt: Mutex<Option<Attempt>>,
    /// When a confirmation last failed (ms after [`EPOCH`], plus one; 0:
    /// never): for [`RETRY_AFTER`] after it, calls are refused at once
    /// instead of each waiting out its deadline on a silent database.
    failed: AtomicU64,
}

#[derive(Default)]
struct Feed {
    listeners: RwLock<Vec<Listener>>,
    bound: Option<Bound>,
}

/// A list of listeners, cheap to clone and share.
#[derive(Clone, Default)]
pub struct ChangeFeed(Arc<Feed>);

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeFeed")
    }
}

impl ChangeFeed {
    /// The feed of a replica that shares its database with others: what
    /// it derived is served for at most `limit` after the last confirmation
    /// (counted from now until the first).
    pub fn bounded(limit: Duration) -> Self {
        Self(Arc::new(Feed {
            listeners: RwLock::default(),
            bound: Some(Bound {
                limit,
                confirmed: AtomicU64::new(millis(Instant::now())),
                confirmer: OnceLock::new(),
                attempt: Mutex::new(None),
                failed: AtomicU64::new(0),
            }),
        }))
    }

    /// Adds a listener, called after every committed change.
    pub fn subscribe(&self, listener: impl Fn(Change<'_>) + Send + Sync + 'static) {
        self.0.listeners.write().unwrap_or_else(|p| p.into_inner()).push(Arc::new(listener));
    }

    /// Tells every listener.
    pub fn publish(&self, change: Change<'_>) {
        for listener in self.0.listeners.read().unwrap_or_else(|p| p.into_inner()).iter() {
            listener(change);
        }
    }

    /// Sets what confirms the feed on demand (the database's change
    /// follower).
    pub fn set_confirmer(&self, confirmer: Arc<dyn Confirmer>) {
        if let Some(bound) = &self.0.bound {
            let _ = bound.confirmer.set(confirmer);
        }
    }

    /// Every change committed before `as_of` has been published.
    pub fn confirmed(&self, as_of: Instant) {
        if let Some(bound) = &self.0.bound {
            bound.confirmed.fetch_max(millis(as_of), Ordering::SeqCst);
        }
    }

    /// How old the last confirmation is (zero on a single replica).
    pub fn staleness(&self) -> Duration {
        match &self.0.bound {
            Some(bound) => {
                Duration::from_millis(millis(Instant::now()).saturating_sub(bound.confirmed.load(Ordering::SeqCst)))
            }
            None => Duration::ZERO,
        }
    }

    /// The limit (`--max-staleness`), on a replica.
    pub fn limit(&self) -> Option<Duration> {
        self.0.bound.as_ref().map(|b| b.limit)
    }

    /// May what was derived from the feed be served now, without asking?
    pub fn is_fresh(&self) -> bool {
        self.0.bound.as_ref().is_none_or(|bound| self.staleness() < bound.limit)
    }

    /// Returns once what was derived may be served: at once while the
    /// feed is within its limit, else after confirming it from the
    /// database (by `deadline`). `UNAVAILABLE` when that cannot be done:
    /// a stale answer is never given.
    pub async fn fresh(&self, deadline: Instant) -> Result<(), Error> {
        if self.is_fresh() {
            return Ok(());
        }
        let Some(bound) = &self.0.bound else { return Ok(()) };
        let failed = bound.failed.load(Ordering::SeqCst);
        if failed != 0 && millis(Instant::now()) + 1 < failed + RETRY_AFTER.as_millis() as u64 {
            return Err(self.stale("the last attempt to confirm it failed moments ago"));
        }
        let Some(confirmer) = bound.confirmer.get() else {
            return Err(self.stale("no change follower runs"));
        };
        let attempt = {
            let mut slot = bound.attempt.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref().filter(|attempt| attempt.peek().is_none()) {
                Some(under_way) => under_way.clone(),
                None => {
                    let (confirmer, feed) = (Arc::clone(confirmer), self.clone());
                    let confirming: Pin<Box<dyn Future<Output = Result<(), String>> + Send>> = Box::pin(async move {
                        let outcome = confirmer.confirm().await;
                        if let (Err(_), Some(bound)) = (&outcome, &feed.0.bound) {
                            bound.failed.store(millis(Instant::now()) + 1, Ordering::SeqCst);
                        }
                        outcome
                    });
                    let attempt: Attempt = confirming.shared();
                    tokio::spawn(attempt.clone());
                    *slot = Some(attempt.clone());
                    attempt
                }
            }
        };
        let outcome = match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err("the database did not answer before the call's deadline".to_owned()),
        };
        match outcome {
            Ok(()) if self.is_fresh() => Ok(()),
            Ok(()) => Err(self.stale("the confirmation came too late")),
            Err(why) => Err(self.stale(&why)),
        }
    }

    fn stale(&self, why: &str) -> Error {
        crate::metrics::stale_refusal();
        Error::Unavailable {
            reason: pullpass::reason::REPLICA_STALE,
            message: format!(
                "this replica cannot confirm the other replicas' changes ({why}; last confirmed {} s ago, \
                 limit --max-staleness {} s): retry, or call another replica",
                self.staleness().as_secs(),
                self.limit().unwrap_or_default().as_secs()
            ),
            retry_after: Some(RETRY_AFTER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counting {
        feed: ChangeFeed,
        calls: AtomicUsize,
        answers: bool,
    }

    impl Confirmer for Counting {
        fn confirm(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let asked = Instant::now();
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.answers {
                    self.feed.confirmed(asked);
                    Ok(())
                } else {
                    Err("cut off".into())
                }
            })
        }
    }

    #[tokio::test]
    async fn a_single_replica_is_always_fresh() {
        let feed = ChangeFeed::default();
        assert!(feed.is_fresh());
        feed.fresh(Instant::now()).await.unwrap();
    }

    #[tokio::test]
    async fn past_the_limit_calls_confirm_once_together_and_are_served_after() {
        let feed = ChangeFeed::bounded(Duration::from_millis(50));
        let confirmer = Arc::new(Counting { feed: feed.clone(), calls: AtomicUsize::new(0), answers: true });
        feed.set_confirmer(confirmer.clone());
        assert!(feed.is_fresh(), "inside the limit from the start");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!feed.is_fresh());
        let deadline = Instant::now() + Duration::from_secs(5);
        let calls = (0..20).map(|_| feed.fresh(deadline));
        for outcome in futures_util::future::join_all(calls).await {
            outcome.unwrap();
        }
        assert_eq!(confirmer.calls.load(Ordering::SeqCst), 1, "one confirmation for every waiting call");
        assert!(feed.is_fresh());
    }

    #[tokio::test]
    async fn a_feed_that_cannot_be_confirmed_refuses_unavailable_with_a_retry_delay() {
        let feed = ChangeFeed::bounded(Duration::from_millis(10));
        feed.set_confirmer(Arc::new(Counting { feed: feed.clone(), calls: AtomicUsize::new(0), answers: false }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = feed.fresh(Instant::now() + Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(refused, Error::Unavailable { retry_after: Some(_), .. }), "{refused:?}");
        assert!(refused.to_string().contains("--max-staleness"), "{refused}");
        let started = Instant::now();
        feed.fresh(started + Duration::from_secs(5)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(10), "refused at once right after a failure");
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_early_does_not_fail_the_others() {
        let feed = ChangeFeed::bounded(Duration::from_millis(100));
        let confirmer = Arc::new(Counting { feed: feed.clone(), calls: AtomicUsize::new(0), answers: true });
        feed.set_confirmer(confirmer.clone());
        tokio::time::sleep(Duration::from_millis(110)).await;
        // The confirmation takes 20 ms: this caller's deadline is shorter.
        assert!(feed.fresh(Instant::now() + Duration::from_millis(1)).await.is_err());
        feed.fresh(Instant::now() + Duration::from_secs(5))
            .await
            .expect("the confirmation went on and served the next caller");
        assert_eq!(confirmer.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_confirmation_slower_than_the_deadline_refuses_at_the_deadline() {
        let feed = ChangeFeed::bounded(Duration::from_millis(10));
        struct Silent;
        impl Confirmer for Silent {
            fn confirm(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
                Box::pin(std::future::pending())
            }
        }
        feed.set_confirmer(Arc::new(Silent));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let refused = feed.fresh(started + Duration::from_millis(100)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(matches!(refused, Error::Unavailable { .. }));
    }
}
