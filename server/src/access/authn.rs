//! Authentication: `authorization: Bearer pp_…` → [`Principal`].
//!
//! Tokens are looked up by the SHA-256 of the presented string (memory first,
//! then the database) and the stored hash is compared in constant time.
//! Expiry and revocation are checked on every call, against the cached record
//! too, and revocation through this server updates the cache at once; one
//! through another replica arrives through the [`ChangeFeed`] and drops the
//! record, which is then read again. A generation counter keeps a read that
//! started before such a drop from caching what it read. On replicas, a
//! cached record is used only while the change feed is fresh (see
//! `changes`). As a backstop, none is used longer than the staleness limit
//! after it was read: `--max-staleness` on replicas, 10 s on a single
//! server (where the SQLite follower brings offline revocations within a
//! second anyway).
//!
//! A known token costs a hash and a map lookup: its cached entry holds the
//! [`Principal`] ready made (shared, not rebuilt per call) and when its last
//! use was written, so the hot path takes no lock but the map's read lock.
//!
//! Refusals stay cheap, so a flood of calls without a valid token cannot
//! starve the others: a hash the database did not know is remembered for
//! [`UNKNOWN_TTL`](super::unknown::UNKNOWN_TTL) and refused from memory (no
//! token is ever presented before it is minted, so this refuses nothing
//! that could be valid), and at most [`LOOKUPS_AT_ONCE`] tokens never seen
//! are looked up at a time, so a flood of always-new tokens waits for those
//! few reader connections instead of taking them all. Known tokens never
//! wait for them: they are in memory, and a record past the limit is read
//! again outside those few. No read waits past the call's deadline.

use crate::metrics::{self, AuthFailure};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::Principal;
use super::identity::callers::{IdentityCallers, looks_like_jwt};
use super::token::{hash_token, is_well_formed};
use super::unknown::Unknown;
use crate::changes::{Change, ChangeFeed};
use crate::domain::{AccessTokenRecord, Timestamp};
use crate::error::Error;
use crate::store::Store;

/// A token known to be valid until its record says otherwise: the record,
/// the principal it stands for, and when its last use was last written.
struct Known {
    record: AccessTokenRecord,
    principal: Arc<Principal>,
    /// When the record was read from the database.
    read: Instant,
    /// Milliseconds after [`EPOCH`] of the last `last_used_time` write, plus
    /// one (0: never).
    written: AtomicU64,
}

impl Known {
    fn new(record: AccessTokenRecord) -> Arc<Self> {
        let principal = Arc::new(Principal::of(&record));
        Arc::new(Self { record, principal, read: Instant::now(), written: AtomicU64::new(0) })
    }
}

/// The origin of [`Known::written`].
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Checks bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    cache: Arc<RwLock<HashMap<[u8; 32], Arc<Known>>>>,
    /// The same records by token id (gateway passwords name their token).
    by_id: Arc<RwLock<HashMap<crate::domain::AccessTokenId, Arc<Known>>>>,
    generation: Arc<AtomicU64>,
    /// Hashes the database did not know, and when that was seen.
    unknown: Arc<Unknown>,
    lookups: Arc<tokio::sync::Semaphore>,
    /// The change feed whose freshness cached records depend on.
    feed: ChangeFeed,
    /// Longest a cached record is used after it was read.
    record_ttl: Duration,
    /// Workload identities (JWTs), when served.
    identities: Option<Arc<IdentityCallers>>,
}

/// Database lookups of uncached tokens under way at once.
pub const LOOKUPS_AT_ONCE: usize = 4;

/// `last_used_time` is written at most this often per token.
const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

const NO_TOKEN: &str = "missing `authorization: Bearer <token>` metadata";
const MALFORMED: &str = "malformed access token: expected `pp_` and 43 letters and digits";

impl Authenticator {
    /// An authenticator over the token table of `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: Arc::default(),
            by_id: Arc::default(),
            generation: Arc::default(),
            unknown: Arc::default(),
            lookups: Arc::new(tokio::sync::Semaphore::new(LOOKUPS_AT_ONCE)),
            feed: ChangeFeed::default(),
            record_ttl: crate::changes::DEFAULT_MAX_STALENESS,
            identities: None,
        }
    }

    /// Also accepts workload-identity JWTs, verified by `identities`.
    pub fn with_identities(mut self, identities: Arc<IdentityCallers>) -> Self {
        self.identities = Some(identities);
        self
    }

    /// Follows `changes`: drops what they made stale (a revoked token's
    /// record, and everything when a workspace went or other replicas'
    /// changes were missed), and serves cached records only while the feed
    /// is fresh and for at most its staleness limit after their read.
    pub fn following(mut self, changes: &ChangeFeed) -> Self {
        let listener = self.clone();
        changes.subscribe(move |change| match change {
            Change::Token(id) => listener.forget(id),
            Change::Workspace(_) | Change::Everything => {
                listener.clear();
                if let Some(identities) = &listener.identities {
                    identities.changed();
                }
            }
            Change::Identity => {
                if let Some(identities) = &listener.identities {
                    identities.changed();
                }
            }
            Change::Credential(_) | Change::LeaseStored | Change::LeaseDropped(_) | Change::LeaseDropsMissed => {}
        });
        self.feed = changes.clone();
        if let Some(limit) = changes.limit() {
            self.record_ttl = limit;
        }
        self
    }

    /// The principal of an `authorization` header value.
    /// Confirming the change feed (see [`ChangeFeed::fresh`]) waits until
    /// `deadline` at most.
    pub async fn authenticate(&self, header: Option<&str>, deadline: Instant) -> Result<Arc<Principal>, Error> {
        let Some(header) = header else {
            metrics::authentication_failure(AuthFailure::Missing);
            return Err(Error::Unauthenticated(NO_TOKEN.into()));
        };
        let token = bearer_token(header).inspect_err(|_| metrics::authentication_failure(AuthFailure::Malformed))?;
        self.authenticate_token_by(token, deadline).await
    }

    /// The principal of a token string (`pp_…`, or a workload-identity
    /// JWT where identity providers are served).
    pub async fn authenticate_token(&self, token: &str) -> Result<Arc<Principal>, Error> {
        self.authenticate_token_by(token, Instant::now() + crate::changes::CONFIRM_WAIT).await
    }

    async fn authenticate_token_by(&self, token: &str, deadline: Instant) -> Result<Arc<Principal>, Error> {
        if let Some(identities) = &self.identities
            && looks_like_jwt(token)
        {
            if !self.feed.is_fresh() {
                self.feed.fresh(deadline).await?;
            }
            if let Some(principal) = identities.remembered(token) {
                return Ok(principal);
            }
            return within(deadline, identities.principal(token)).await;
        }
        if !is_well_formed(token) {
            metrics::authentication_failure(AuthFailure::Malformed);
            return Err(Error::Unauthenticated(MALFORMED.into()));
        }
        let hash = hash_token(token);
        if !self.feed.is_fresh() {
            self.feed.fresh(deadline).await?;
        }
        let record = match self.cached(&hash) {
            Some(record) => record,
            None => {
                // A token read before, whose record is only older than the
                // limit, is read again at once; only tokens never seen wait
                // for one of the few lookups.
                let previous = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned();
                let known = previous.is_some();
                if !known && self.known_unknown(&hash) {
                    metrics::authentication_failure(AuthFailure::Unknown);
                    return Err(Error::Unauthenticated("unknown access token".into()));
                }
                let read = async {
                    let _turn = match known {
                        true => None,
                        false => {
                            Some(self.lookups.acquire().await.map_err(|_| Error::internal("token lookups closed"))?)
                        }
                    };
                    let generation = self.generation.load(Ordering::SeqCst);
                    Ok::<_, Error>((generation, self.store.token_by_hash(&hash).await?))
                };
                match (within(deadline, read).await, previous) {
                    (Ok((generation, found)), _) => {
                        let record = found.ok_or_else(|| {
                            self.remember_unknown(hash);
                            metrics::authentication_failure(AuthFailure::Unknown);
                            Error::Unauthenticated("unknown access token".into())
                        })?;
                        self.remember(record, generation)
                    }
                    // The database is out of reach, but the change feed is
                    // confirmed within its limit: the record is still known
                    // to be current (an outage every replica sees is ridden
                    // out from caches, as leases are).
                    (Err(Error::Unavailable { .. }), Some(previous)) if self.feed.is_fresh() => previous,
                    (Err(error), _) => return Err(error),
                }
            }
        };
        if !bool::from(record.record.token_hash.ct_eq(&hash)) {
            metrics::authentication_failure(AuthFailure::Unknown);
            return Err(Error::Unauthenticated("unknown access token".into()));
        }
        self.check(&record)
    }

    /// The principal of the token with id `id` (gateway passwords name the
    /// token that asked for them). Revocation and expiry are checked as for
    /// a presented token; the record is read from the database, then kept
    /// in memory with the others (and read again past the staleness limit).
    pub async fn principal_by_id(&self, id: &crate::domain::AccessTokenId) -> Result<Arc<Principal>, Error> {
        if !self.feed.is_fresh() {
            self.feed.fresh(Instant::now() + crate::changes::CONFIRM_WAIT).await?;
        }
        let previous = self.by_id.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned();
        let cached = previous.clone().filter(|known| self.current(known));
        let record = match cached {
            Some(record) => record,
            None => {
                let read = async {
                    let generation = self.generation.load(Ordering::SeqCst);
                    Ok::<_, Error>((generation, self.store.token_by_id(id).await?))
                };
                match (within(Instant::now() + crate::changes::CONFIRM_WAIT, read).await, previous) {
                    (Ok((generation, found)), _) => {
                        let record = found.ok_or_else(|| {
                            Error::Unauthenticated(
                                "the access token that asked for this password no longer exists".into(),
                            )
                        })?;
                        self.remember(record, generation)
                    }
                    // As for a presented token: ridden out while the feed is
                    // confirmed.
                    (Err(Error::Unavailable { .. }), Some(previous)) if self.feed.is_fresh() => previous,
                    (Err(error), _) => return Err(error),
                }
            }
        };
        self.check(&record)
    }

    /// The principal behind a gateway password minted for a workload
    /// identity (see `gateway_password`).
    pub async fn principal_for_identity_password(
        &self,
        token_id: &crate::domain::AccessTokenId,
        workspace: &crate::domain::WorkspaceId,
        identity: &super::gateway_password::IdentityRef,
        expires: Timestamp,
    ) -> Result<Arc<Principal>, Error> {
        let Some(identities) = &self.identities else {
            return Err(Error::Unauthenticated("workload identities are not accepted here".into()));
        };
        if !self.feed.is_fresh() {
            self.feed.fresh(Instant::now() + crate::changes::CONFIRM_WAIT).await?;
        }
        identities.principal_for_password(token_id, workspace, identity, expires).await
    }

    /// Caches a record read from the database when the read began at
    /// `generation`. A record that arrived meanwhile (a revocation through
    /// [`Authenticator::refresh`]) is newer than this read and wins; after a
    /// drop meanwhile, the read is used once but not kept.
    fn remember(&self, record: AccessTokenRecord, generation: u64) -> Arc<Known> {
        let record = Known::new(record);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return record;
        }
        // A record older than the limit is replaced by this read; a fresher
        // one (a revocation through `refresh`) stays.
        let kept = match cache.get(&record.record.token_hash) {
            Some(current) if self.current(current) => Arc::clone(current),
            previous => {
                // When the last use was written carries over (once a minute).
                if let Some(previous) = previous {
                    record.written.store(previous.written.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                cache.insert(record.record.token_hash, Arc::clone(&record));
                record
            }
        };
        match by_id.get(&kept.record.id) {
            Some(current) if self.current(current) => {}
            _ => {
                by_id.insert(kept.record.id.clone(), Arc::clone(&kept));
            }
        }
        kept
    }

    /// Refuses revoked and expired tokens; records the use.
    fn check(&self, known: &Known) -> Result<Arc<Principal>, Error> {
        let record = &known.record;
        let now = Timestamp::now();
        if record.revoke_time.is_some() {
            metrics::authentication_failure(AuthFailure::Revoked);
            return Err(Error::Unauthenticated(format!("access token {} was revoked", record.resource_name())));
        }
        if record.expire_time.is_some_and(|expiry| expiry <= now) {
            metrics::authentication_failure(AuthFailure::Expired);
            return Err(Error::Unauthenticated(format!("access token {} has expired", record.resource_name())));
        }
        self.touch(known, now);
        Ok(Arc::clone(&known.principal))
    }

    /// Records the use of a token, at most once a minute per token, in the
    /// background (no write on the call's path).
    fn touch(&self, known: &Known, now: Timestamp) {
        let elapsed = EPOCH.elapsed().as_millis() as u64 + 1;
        let last = known.written.load(Ordering::Relaxed);
        if last != 0 && elapsed.saturating_sub(last) < LAST_USED_RESOLUTION.as_millis() as u64 {
            return;
        }
        // One caller of the minute wins the write.
        if known.written.compare_exchange(last, elapsed, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let record = &known.record;
        let store = self.store.clone();
        let uses = vec![(record.id.clone(), now)];
        tokio::spawn(async move {
            if let Err(e) = store.touch_tokens(&uses).await {
                tracing::warn!(error = %e, "could not record a token's last use");
            }
        });
    }

    /// Puts the current record of a token in the cache after a change
    /// (always: a read of the old record racing this one must not win).
    pub fn refresh(&self, record: &AccessTokenRecord) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        let fresh = Known::new(record.clone());
        self.unknown.remove(&record.token_hash);
        cache.insert(record.token_hash, Arc::clone(&fresh));
        by_id.insert(record.id.clone(), fresh);
    }

    /// Drops every cached record (after a workspace deletion).
    pub fn clear(&self) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        cache.clear();
        by_id.clear();
    }

    /// Drops one token's record (it changed elsewhere).
    pub fn forget(&self, id: &crate::domain::AccessTokenId) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(known) = by_id.remove(id) {
            cache.remove(&known.record.token_hash);
        }
        cache.retain(|_, known| &known.record.id != id);
    }

    /// Did the database say, within [`UNKNOWN_TTL`](super::unknown::UNKNOWN_TTL), that it does not know
    /// this hash?
    fn known_unknown(&self, hash: &[u8; 32]) -> bool {
        self.unknown.contains(hash)
    }

    fn remember_unknown(&self, hash: [u8; 32]) {
        self.unknown.insert(hash);
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Arc<Known>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).get(hash).cloned().filter(|known| self.current(known))
    }

    /// May a cached record still be used (read less than the staleness
    /// limit ago)? An older one is read again, and replaces it.
    fn current(&self, known: &Known) -> bool {
        known.read.elapsed() < self.record_ttl
    }
}

/// `read`, or `UNAVAILABLE` once `deadline` has passed (a silent database
/// does not hold a call past its deadline).
async fn within<T>(deadline: Instant, read: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Error::Unavailable {
            reason: "DATABASE_UNAVAILABLE",
            message: "the database did not answer before the call's deadline; retry shortly".into(),
            retry_after: Some(Duration::from_secs(1)),
        }),
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive), if well formed.
fn bearer_token(header: &str) -> Result<&str, Error> {
    let (scheme, token) = header.trim().split_once(' ').ok_or_else(|| Error::Unauthenticated(NO_TOKEN.into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::Unauthenticated("the authorization scheme must be `Bearer`".into()));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::create_root_token;
    use crate::store::sqlite::test_support::temp_store;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_valid_root_token_authenticates_and_others_do_not() {
        let (_dir, store) = temp_store();
        let (record, token) = create_root_token(&store, &Default::default(), "test").await.unwrap();
        let authn = Authenticator::new(store);
        let header = format!("Bearer {}", token.expose());
        let principal = authn.authenticate(Some(&header), soon()).await.unwrap();
        assert_eq!(principal.token_id, record.id);
        // Second call is served from the cache.
        assert_eq!(authn.authenticate(Some(&format!("bearer {}", token.expose())), soon()).await.unwrap(), principal);
        let other = crate::access::TokenString::generate().unwrap();
        for bad in [
            None,
            Some("Bearer".to_owned()),
            Some(format!("Basic {}", token.expose())),
            Some("Bearer pp_short".to_owned()),
            Some(format!("Bearer {}", other.expose())),
        ] {
            let error = authn.authenticate(bad.as_deref(), soon()).await.unwrap_err();
            assert!(matches!(error, Error::Unauthenticated(_)), "{bad:?}: {error:?}");
            assert!(!error.message().contains(token.expose()));
        }
    }

    #[tokio::test]
    async fn an_unknown_token_is_then_refused_from_memory_and_a_minted_one_is_not() {
        let (_dir, store) = temp_store();
        let authn = Authenticator::new(store.clone());
        let stranger = crate::access::TokenString::generate().unwrap();
        for _ in 0..3 {
            assert!(matches!(authn.authenticate_token(stranger.expose()).await, Err(Error::Unauthenticated(_))));
        }
        assert!(authn.known_unknown(&hash_token(stranger.expose())), "remembered as unknown");
        let (record, token) = create_root_token(&store, &Default::default(), "test").await.unwrap();
        assert!(!authn.known_unknown(&hash_token(token.expose())));
        assert_eq!(authn.authenticate_token(token.expose()).await.unwrap().token_id, record.id);
        authn.remember_unknown(record.token_hash);
        authn.refresh(&record);
        assert!(!authn.known_unknown(&record.token_hash), "a refreshed record is never refused as unknown");
    }

    #[tokio::test]
    async fn a_revocation_seen_before_the_first_use_wins_over_the_database_read() {
        let (_dir, store) = temp_store();
        let (mut record, token) = create_root_token(&store, &Default::default(), "test").await.unwrap();
        let authn = Authenticator::new(store);
        // The revocation arrives while (in another request) the token's old
        // row is being read: the read must not bring the token back.
        record.revoke_time = Some(Timestamp::now());
        authn.refresh(&record);
        assert!(matches!(authn.authenticate_token(token.expose()).await, Err(Error::Unauthenticated(_))));
        assert!(matches!(authn.principal_by_id(&record.id).await, Err(Error::Unauthenticated(_))));
    }

    #[tokio::test]
    async fn a_revoked_cached_token_is_refused_on_the_next_call() {
        let (_dir, store) = temp_store();
        let (mut record, token) = create_root_token(&store, &Default::default(), "test").await.unwrap();
        let authn = Authenticator::new(store);
        let header = format!("Bearer {}", token.expose());
        authn.authenticate(Some(&header), soon()).await.unwrap();
        record.revoke_time = Some(Timestamp::now());
        authn.refresh(&record);
        assert!(matches!(authn.authenticate(Some(&header), soon()).await, Err(Error::Unauthenticated(_))));
    }

    #[tokio::test]
    async fn a_record_past_its_ttl_rides_out_a_database_outage_only_while_the_feed_is_confirmed() {
        let (_dir, store) = temp_store();
        let (_, token) = create_root_token(&store, &Default::default(), "test").await.unwrap();
        let feed = ChangeFeed::bounded(Duration::from_millis(300));
        let authn = Authenticator::new(store.clone()).following(&feed);
        let header = format!("Bearer {}", token.expose());
        authn.authenticate(Some(&header), soon()).await.unwrap();
        // The record is older than its TTL, the feed was just confirmed, and
        // the database is gone: the record is still known to be current.
        tokio::time::sleep(Duration::from_millis(350)).await;
        feed.confirmed(Instant::now());
        store.close().await;
        authn.authenticate(Some(&header), soon()).await.expect("served from the cached record");
        // Once the feed is past its limit too, nothing cached is served.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let refused = authn.authenticate(Some(&header), soon()).await.unwrap_err();
        assert!(matches!(refused, Error::Unavailable { .. }), "{refused:?}");
    }
}
