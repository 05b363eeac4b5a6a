//! The lease cache: the hot path.
//!
//! Keyed by (credential uid, secret version, metadata update time, scope,
//! accepted form): a fetch that started before a credential changed stores
//! its lease under the old key, where no later request looks. A lease
//! is served while its remaining life is at least the caller's `min_ttl`.
//! Misses for one key share a single upstream exchange ([`Flights`]), so a
//! burst of identical requests costs the registry one token request, and a
//! key whose callers all went away leaves nothing behind. Errors
//! are not cached. Bounded: past its capacity, expired leases go first, then
//! those expiring soonest.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::{Accept, CredentialName, CredentialUid, Lease, Timestamp};
use crate::error::Error;
use crate::metrics;
pub use crate::metrics::CacheOutcome;
use crate::singleflight::Flights;

/// What a lease is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The credential's never-reused id.
    pub uid: CredentialUid,
    /// Its secret version (a rotation makes old leases unreachable).
    pub secret_version: u64,
    /// Its last metadata change (so does any other update).
    pub updated: Timestamp,
    /// The requested scope, as text.
    pub scope: String,
    /// The form the caller accepts.
    pub accept: Accept,
}

impl CacheKey {
    /// Is `lease`, issued with `credential`, the one cached under this
    /// key?
    pub fn names(&self, credential: &crate::domain::Credential, lease: &Lease) -> bool {
        credential.uid == self.uid
            && credential.secret_version == self.secret_version
            && credential.update_time == self.updated
            && lease.requested.to_string() == self.scope
    }
}

/// A lease as the cache keeps it.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The lease.
    pub lease: Arc<Lease>,
    /// On a shared database, the sealed bytes of the row it came from or
    /// was stored as: what a refusal deletes it by (see `shared`).
    pub sealed: Option<Arc<[u8]>>,
}

/// What a fetch for a cache miss brought.
#[derive(Debug)]
pub struct Fetched {
    /// The lease.
    pub lease: Lease,
    /// True when it came without an exchange here (another replica's).
    pub elsewhere: bool,
    /// Its shared row's sealed bytes, if it has one.
    pub sealed: Option<Arc<[u8]>>,
}

impl Fetched {
    /// A lease this replica's own exchange brought, shared with no one.
    pub fn here(lease: Lease) -> Self {
        Self { lease, elsewhere: false, sealed: None }
    }
}

/// The cache.
pub struct LeaseCache {
    ready: Mutex<HashMap<CacheKey, Cached>>,
    flights: Flights<CacheKey, Result<(Cached, bool), Error>>,
    capacity: usize,
}

impl std::fmt::Debug for LeaseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseCache").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl LeaseCache {
    /// A cache holding at most `capacity` leases.
    pub fn new(capacity: usize) -> Self {
        Self { ready: Mutex::default(), flights: Flights::default(), capacity: capacity.max(1) }
    }

    /// A lease for `key` with at least `min_ttl` left: cached, or from
    /// `fetch` (run once for all concurrent callers of the key), with how
    /// it was found.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: CacheKey,
        min_ttl: Duration,
        fetch: F,
    ) -> Result<(Cached, CacheOutcome), Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, Error>>,
    {
        if let Some(cached) = self.lock().get(&key).filter(|cached| remaining(&cached.lease) >= min_ttl) {
            return Ok((cached.clone(), CacheOutcome::Hit));
        }
        let ran = AtomicBool::new(false);
        let (cached, elsewhere) = self
            .flights
            .run(key.clone(), || async {
                // A caller that missed above may start a flight just after
                // the last one landed: by then its lease is kept here.
                if let Some(cached) = self.lock().get(&key).filter(|cached| remaining(&cached.lease) >= min_ttl) {
                    return Ok((cached.clone(), false));
                }
                ran.store(true, Ordering::Relaxed);
                let fetched = fetch().await?;
                let cached = Cached { lease: Arc::new(fetched.lease), sealed: fetched.sealed };
                // Kept before the flight lands, so a caller arriving just
                // after finds it here.
                let mut ready = self.lock();
                ready.insert(key.clone(), cached.clone());
                if ready.len() > self.capacity {
                    evict(&mut ready, self.capacity);
                }
                metrics::lease_cache_entries(ready.len());
                Ok((cached, fetched.elsewhere))
            })
            .await?;
        let outcome = match (elsewhere, ran.load(Ordering::Relaxed)) {
            (true, _) => CacheOutcome::Shared,
            (false, true) => CacheOutcome::Miss,
            (false, false) => CacheOutcome::Joined,
        };
        Ok((cached, outcome))
    }

    /// Drops the lease under `key` if it is still `lease` (a registry
    /// refused it before its time); a fresher one stays.
    pub fn forget(&self, key: &CacheKey, lease: &Arc<Lease>) {
        let mut ready = self.lock();
        if ready.get(key).is_some_and(|current| Arc::ptr_eq(&current.lease, lease)) {
            ready.remove(key);
        }
        metrics::lease_cache_entries(ready.len());
    }

    /// Drops whatever lease is under `key` (another replica saw the
    /// registry refuse it).
    pub fn forget_key(&self, key: &CacheKey) {
        let mut ready = self.lock();
        ready.remove(key);
        metrics::lease_cache_entries(ready.len());
    }

    /// Drops every lease a credential issued (after it changed).
    pub fn evict_credential(&self, name: &CredentialName) {
        let mut ready = self.lock();
        ready.retain(|_, cached| &cached.lease.credential != name);
        metrics::lease_cache_entries(ready.len());
    }

    /// Drops every lease of a workspace.
    pub fn evict_workspace(&self, workspace: &crate::domain::WorkspaceId) {
        let mut ready = self.lock();
        ready.retain(|_, cached| &cached.lease.credential.workspace != workspace);
        metrics::lease_cache_entries(ready.len());
    }

    /// Drops every lease.
    pub fn clear(&self) {
        self.lock().clear();
        metrics::lease_cache_entries(0);
    }

    /// Number of entries (ready and in flight).
    pub fn len(&self) -> usize {
        self.lock().len() + self.flights.len()
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Cached>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn remaining(lease: &Lease) -> Duration {
    lease.expire_time.saturating_since(Timestamp::now())
}

/// Shrinks to 90 % of capacity: expired first, then soonest to expire.
fn evict(ready: &mut HashMap<CacheKey, Cached>, capacity: usize) {
    let now = Timestamp::now();
    ready.retain(|_, cached| cached.lease.expire_time > now);
    let target = capacity - capacity / 10;
    if ready.len() <= target {
        return;
    }
    let mut by_expiry: Vec<(Timestamp, CacheKey)> =
        ready.iter().map(|(key, cached)| (cached.lease.expire_time, key.clone())).collect();
    by_expiry.sort_by_key(|(expiry, _)| *expiry);
    let excess = ready.len() - target;
    for (_, key) in by_expiry.into_iter().take(excess) {
        ready.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use pullpass::scope::Scope;

    use super::*;
    use crate::domain::{CredentialId, Grant, LeaseSecret, WorkspaceId};

    fn lease(ttl: Duration, credential: &str) -> Lease {
        let now = Timestamp::now();
        Lease {
            grant: Grant::Bearer { token: LeaseSecret::new("t".into()) },
            registry: "r".into(),
            requested: Scope::request("a", &[]),
            granted: None,
            issue_time: now,
            expire_time: now.plus(ttl),
            credential: CredentialName {
                workspace: WorkspaceId::parse("acme").unwrap(),
                credential: CredentialId::parse(credential).unwrap(),
            },
        }
    }

    fn key(scope: &str) -> CacheKey {
        CacheKey {
            uid: CredentialUid([1; 16]),
            secret_version: 1,
            updated: Timestamp::default(),
            scope: scope.into(),
            accept: Accept::Any,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_fetch() {
        let cache = Arc::new(LeaseCache::new(100));
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (cache, fetches) = (Arc::clone(&cache), Arc::clone(&fetches));
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(key("s"), Duration::from_secs(30), || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Fetched::here(lease(Duration::from_secs(300), "c")))
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut outcomes = HashMap::new();
        for task in tasks {
            *outcomes.entry(task.await.unwrap().1).or_insert(0) += 1;
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(outcomes.get(&CacheOutcome::Miss), Some(&1), "{outcomes:?}");
        assert!(outcomes.get(&CacheOutcome::Joined).is_some_and(|joined| *joined > 0), "{outcomes:?}");
        let (_, outcome) =
            cache.get_or_fetch(key("s"), Duration::from_secs(30), || async { unreachable!() }).await.unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }

    #[tokio::test]
    async fn too_short_remaining_life_fetches_again_and_errors_are_not_cached() {
        let cache = LeaseCache::new(100);
        cache
            .get_or_fetch(key("s"), Duration::ZERO, || async { Ok(Fetched::here(lease(Duration::from_secs(20), "c"))) })
            .await
            .unwrap();
        let (_, hit) = cache
            .get_or_fetch(key("s"), Duration::from_secs(30), || async {
                Ok(Fetched::here(lease(Duration::from_secs(300), "c")))
            })
            .await
            .unwrap();
        assert_eq!(hit, CacheOutcome::Miss, "20 s left is less than min_ttl 30 s");
        let failed = cache.get_or_fetch(key("e"), Duration::ZERO, || async { Err(Error::internal("boom")) }).await;
        assert!(failed.is_err());
        let (_, hit) = cache
            .get_or_fetch(key("e"), Duration::ZERO, || async {
                Ok(Fetched::here(lease(Duration::from_secs(300), "c")))
            })
            .await
            .unwrap();
        assert_eq!(hit, CacheOutcome::Miss);
    }

    #[tokio::test]
    async fn eviction_by_credential_and_by_capacity() {
        let cache = LeaseCache::new(10);
        for i in 0..30 {
            let ttl = Duration::from_secs(100 + i);
            cache
                .get_or_fetch(
                    key(&format!("s{i}")),
                    Duration::ZERO,
                    || async move { Ok(Fetched::here(lease(ttl, "c"))) },
                )
                .await
                .unwrap();
        }
        assert!(cache.len() <= 10, "{}", cache.len());
        let (_, hit) = cache.get_or_fetch(key("s29"), Duration::ZERO, || async { unreachable!() }).await.unwrap();
        assert_eq!(hit, CacheOutcome::Hit, "the longest-lived lease is kept");
        cache.evict_credential(&CredentialName {
            workspace: WorkspaceId::parse("acme").unwrap(),
            credential: CredentialId::parse("c").unwrap(),
        });
        assert!(cache.is_empty());
    }
}
