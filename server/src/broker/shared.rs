//! Leases and rate-limit blocks shared by the replicas of one database, so
//! N replicas cost a registry what one does.
//!
//! Below the per-replica [`super::cache::LeaseCache`] (one flight per key
//! per replica), a miss asks the database ([`crate::store::Shared`]):
//! * another replica's lease for the key, sealed under the master key, is
//!   opened and served with no upstream call;
//! * else one replica wins the key's claim row and runs the exchange, then
//!   stores the lease sealed and wakes the others; the others wait for it
//!   (woken by NOTIFY, with a poll as backstop) within their deadline. A
//!   claimant that dies leaves a claim that expires after [`CLAIM_TTL`], and
//!   the next replica to look takes it over.
//! * a registry's `Retry-After` is recorded too, so one replica's 429 stops
//!   the others from calling it;
//! * a lease a registry refused before its time (it rotated its keys) is
//!   deleted from the table, compared on its sealed bytes (kept with the
//!   cached lease) so that a fresh one another replica stored meanwhile
//!   stays, and the other replicas drop their copies when the database
//!   tells them (`LeaseDropped`; a replica whose notifications' connection
//!   was lost drops every cached lease when it is back, since it may have
//!   missed one).
//!
//! The database is an optimization here: if it cannot be reached, the
//! replica fetches on its own (its cached leases keep being served).
//! Keys name the credential by uid, secret version and update time (as the
//! cache does), so a rotated secret never meets an old lease.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::cache::{CacheKey, Fetched};
use crate::domain::{Accept, CredentialName, Grant, Lease, LeaseSecret, Timestamp};
use crate::error::Error;
use crate::seal::Sealer;
use crate::store::{LeaseSlot, SharedLease, Store};

/// How long a claim stands before another replica may take it over: longer
/// than a healthy exchange, short enough that a dead claimant costs little.
pub const CLAIM_TTL: Duration = Duration::from_secs(5);
/// What shared leases are sealed for.
const PURPOSE: &str = "shared lease";
/// Longest wait between looks while another replica fetches.
const MAX_POLL: Duration = Duration::from_millis(200);

/// The replicas' shared leases, as this replica sees them.
pub struct SharedLeases {
    store: Store,
    sealer: Arc<Sealer>,
    /// This replica's name on claims (random per process).
    owner: String,
    stored: Notify,
}

impl std::fmt::Debug for SharedLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLeases").field("owner", &self.owner).finish_non_exhaustive()
    }
}

/// A lease as stored (inside the seal): every field of [`Lease`]; wiped
/// when dropped, as it holds the lease's secret.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct Stored {
    bearer: Option<String>,
    username: Option<String>,
    password: Option<String>,
    registry: String,
    requested: String,
    granted: Option<String>,
    issue_time: i64,
    expire_time: i64,
    credential: String,
}

impl SharedLeases {
    /// Shared leases over `store`, if its database is shared.
    pub fn new(store: &Store, sealer: Arc<Sealer>) -> Option<Self> {
        store.shared()?;
        let mut owner = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut owner).ok()?;
        let owner = format!("{}-{}", std::process::id(), hex(&owner));
        Some(Self { store: store.clone(), sealer, owner, stored: Notify::new() })
    }

    /// Wakes the callers waiting for another replica's lease (it stored one).
    pub fn wake(&self) {
        self.stored.notify_waiters();
    }

    /// A lease for `key` with `min_ttl` left: another replica's, or from
    /// `fetch` when this replica wins the claim (or the database is out of
    /// reach), with the sealed bytes of its shared row when it has one.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: &CacheKey,
        min_ttl: Duration,
        deadline: Instant,
        fetch: F,
    ) -> Result<Fetched, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Lease, Error>>,
    {
        let Some(shared) = self.store.shared() else { return fetch().await.map(Fetched::here) };
        let text = key_text(key);
        let mut pause = Duration::from_millis(10);
        loop {
            let stored = self.stored.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            match shared.lease_or_claim(&text, min_ttl, &self.owner, CLAIM_TTL).await {
                Ok(LeaseSlot::Stored(lease)) => match self.open(&text, &lease) {
                    Ok(opened) => {
                        return Ok(Fetched { lease: opened, elsewhere: true, sealed: Some(lease.sealed.into()) });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a shared lease does not open here; fetching");
                        return fetch().await.map(Fetched::here);
                    }
                },
                Ok(LeaseSlot::Claimed) => {
                    return match fetch().await {
                        Ok(lease) => {
                            let sealed = self.publish(shared, &text, &lease).await;
                            Ok(Fetched { lease, elsewhere: false, sealed })
                        }
                        Err(error) => {
                            if let Err(e) = shared.release_claim(&text, &self.owner).await {
                                tracing::debug!(error = %e, "could not release a lease claim (it expires)");
                            }
                            Err(error)
                        }
                    };
                }
                Ok(LeaseSlot::ClaimedElsewhere) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Unavailable {
                            reason: pullpass::reason::UPSTREAM_UNAVAILABLE,
                            message: "another replica is fetching this lease and did not finish before the deadline"
                                .into(),
                            retry_after: None,
                        });
                    }
                    let wait = pause.min(deadline - now);
                    let _ = tokio::time::timeout(wait, stored).await;
                    pause = (pause * 2).min(MAX_POLL);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shared leases are out of reach; fetching on this replica");
                    return fetch().await.map(Fetched::here);
                }
            }
        }
    }

    /// The registry refused the lease under `key`, whose shared row was
    /// `sealed`: deletes the row if it still holds that lease (the other
    /// replicas are told, and drop their copies).
    pub async fn refused(&self, key: &CacheKey, sealed: &[u8]) {
        let Some(shared) = self.store.shared() else { return };
        if let Err(e) = shared.drop_lease(&key_text(key), sealed, &self.owner).await {
            tracing::warn!(error = %e, "could not drop a refused lease from the replicas' table");
        }
    }

    /// The cache key of a lease another replica dropped (from its
    /// notification: `OWNER KEY`); `None` for this replica's own drops or
    /// a payload that does not parse.
    pub fn dropped_elsewhere(&self, payload: &str) -> Option<CacheKey> {
        let (owner, text) = payload.split_once(' ')?;
        if owner == self.owner {
            return None;
        }
        parse_key_text(text)
    }

    /// Refuses at once while another replica recorded a registry's
    /// `Retry-After` for this credential and endpoint.
    pub async fn check_block(&self, key: &CacheKey, endpoint: &str, registry: &str) -> Result<(), Error> {
        let Some(shared) = self.store.shared() else { return Ok(()) };
        match shared.blocked_until(&block_key(key, endpoint)).await {
            Ok(Some(until)) => {
                crate::metrics::upstream_held_back();
                let retry_after = until.saturating_since(Timestamp::now()).max(Duration::from_secs(1));
                Err(Error::ResourceExhausted {
                    reason: pullpass::reason::UPSTREAM_RATE_LIMITED,
                    message: format!("registry {registry} is rate limiting (retry in {} s)", retry_after.as_secs()),
                    retry_after,
                })
            }
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "shared rate-limit blocks are out of reach");
                Ok(())
            }
        }
    }

    /// Records a registry's `Retry-After` for the other replicas.
    pub async fn block(&self, key: &CacheKey, endpoint: &str, retry_after: Duration) {
        let Some(shared) = self.store.shared() else { return };
        if let Err(e) = shared.block(&block_key(key, endpoint), Timestamp::now().plus(retry_after)).await {
            tracing::warn!(error = %e, "could not share a registry's rate limit with the other replicas");
        }
    }

    /// Stores `lease` for the other replicas; its sealed bytes, once
    /// stored.
    async fn publish(&self, shared: &dyn crate::store::Shared, text: &str, lease: &Lease) -> Option<Arc<[u8]>> {
        let sealed = match self.seal(text, lease) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::warn!(error = %e, "could not seal a lease for the other replicas");
                return None;
            }
        };
        let stored = SharedLease { sealed, expire_time: lease.expire_time };
        match shared.store_lease(text, &stored, &self.owner).await {
            Ok(()) => Some(stored.sealed.into()),
            Err(e) => {
                tracing::warn!(error = %e, "could not share a lease with the other replicas");
                None
            }
        }
    }

    fn seal(&self, text: &str, lease: &Lease) -> Result<Vec<u8>, String> {
        let (bearer, username, password) = match &lease.grant {
            Grant::Bearer { token } => (Some(token.expose().to_owned()), None, None),
            Grant::Basic { username, password } => (None, Some(username.clone()), Some(password.expose().to_owned())),
        };
        let stored = Stored {
            bearer,
            username,
            password,
            registry: lease.registry.clone(),
            requested: lease.requested.to_string(),
            granted: lease.granted.as_ref().map(ToString::to_string),
            issue_time: lease.issue_time.as_micros(),
            expire_time: lease.expire_time.as_micros(),
            credential: lease.credential.to_string(),
        };
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(&stored).map_err(|e| e.to_string())?);
        drop(stored);
        self.sealer.seal_blob(PURPOSE, text.as_bytes(), &plain).map_err(|e| e.to_string())
    }

    fn open(&self, text: &str, lease: &SharedLease) -> Result<Lease, String> {
        let plain = self.sealer.open_blob(PURPOSE, text.as_bytes(), &lease.sealed).map_err(|e| e.to_string())?;
        let mut stored: Stored = serde_json::from_slice(&plain).map_err(|_| "unreadable shared lease".to_owned())?;
        let grant = match (stored.bearer.take(), stored.username.take(), stored.password.take()) {
            (Some(token), None, None) => Grant::Bearer { token: LeaseSecret::new(token) },
            (None, Some(username), Some(password)) => Grant::Basic { username, password: LeaseSecret::new(password) },
            _ => return Err("unreadable shared lease".into()),
        };
        let scope =
            |text: &str| pullpass::scope::Scope::parse(text).ok_or_else(|| "unreadable shared lease".to_owned());
        Ok(Lease {
            grant,
            registry: std::mem::take(&mut stored.registry),
            requested: scope(&stored.requested)?,
            granted: stored.granted.as_deref().map(scope).transpose()?,
            issue_time: Timestamp::from_micros(stored.issue_time),
            expire_time: Timestamp::from_micros(stored.expire_time),
            credential: CredentialName::parse(&stored.credential).map_err(|_| "unreadable shared lease".to_owned())?,
        })
    }
}

/// The database key of a cache key: every field, unambiguous (the scope
/// comes last and is the only free text).
fn key_text(key: &CacheKey) -> String {
    let accept = match key.accept {
        Accept::Any => "any",
        Accept::BasicOnly => "basic",
        Accept::BearerOnly => "bearer",
        Accept::Gateway => "gateway",
    };
    format!("{} {} {} {accept} {}", hex(&key.uid.0), key.secret_version, key.updated.as_micros(), key.scope)
}

/// The cache key a [`key_text`] stands for.
fn parse_key_text(text: &str) -> Option<CacheKey> {
    let mut parts = text.splitn(5, ' ');
    let uid = parts.next()?;
    let mut bytes = [0u8; 16];
    if uid.len() != 32 {
        return None;
    }
    for (at, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(uid.get(at * 2..at * 2 + 2)?, 16).ok()?;
    }
    let secret_version = parts.next()?.parse().ok()?;
    let updated = Timestamp::from_micros(parts.next()?.parse().ok()?);
    let accept = match parts.next()? {
        "any" => Accept::Any,
        "basic" => Accept::BasicOnly,
        "bearer" => Accept::BearerOnly,
        "gateway" => Accept::Gateway,
        _ => return None,
    };
    let scope = parts.next()?.to_owned();
    Some(CacheKey { uid: crate::domain::CredentialUid(bytes), secret_version, updated, scope, accept })
}

/// The database key of a rate-limit block: the credential (by uid) and the
/// registry endpoint, as [`crate::upstream::Upstream`] keys its own.
fn block_key(key: &CacheKey, endpoint: &str) -> String {
    format!("{} {endpoint}", hex(&key.uid.0))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_in_every_field_of_the_cache_key() {
        let base = CacheKey {
            uid: crate::domain::CredentialUid([1; 16]),
            secret_version: 1,
            updated: Timestamp::from_micros(5),
            scope: "repository:a:pull".into(),
            accept: Accept::Any,
        };
        let variants = [
            CacheKey { uid: crate::domain::CredentialUid([2; 16]), ..base.clone() },
            CacheKey { secret_version: 2, ..base.clone() },
            CacheKey { updated: Timestamp::from_micros(6), ..base.clone() },
            CacheKey { scope: "repository:b:pull".into(), ..base.clone() },
            CacheKey { accept: Accept::Gateway, ..base.clone() },
        ];
        for variant in &variants {
            assert_ne!(key_text(variant), key_text(&base), "{variant:?}");
            assert_eq!(parse_key_text(&key_text(variant)).as_ref(), Some(variant), "round trip");
        }
        assert_eq!(parse_key_text(&key_text(&base)), Some(base));
        for bad in
            ["", "zz 1 2 any s", &format!("{} x 2 any s", "0".repeat(32)), &format!("{} 1 2 all s", "0".repeat(32))]
        {
            assert_eq!(parse_key_text(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_stored_lease_is_wiped_when_dropped() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Stored>();
    }
}
