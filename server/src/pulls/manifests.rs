//! The gateway's manifest cache.
//!
//! Manifests are kept by digest, as the registry sent them (bytes and media
//! type: never re-serialized), and a tag's answer for a short time
//! (`--gateway-tag-ttl`). Entries belong to the credential that fetched
//! them (its uid and secret version), so content is shared only between
//! callers who were authorized to use that same credential: a workspace
//! with its own account on a registry never sees what another workspace's
//! account fetched. Concurrent misses for one key share one fetch
//! (singleflight). Bounded by entries and bytes; the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::digest::Digest;
use crate::domain::CredentialUid;

/// A manifest as the registry served it.
#[derive(Debug)]
pub struct Manifest {
    /// The bytes, unchanged.
    pub bytes: Bytes,
    /// The `Content-Type` the registry gave.
    pub media_type: String,
    /// The digest of the bytes (verified).
    pub digest: Digest,
}

/// Whose fetch an entry came from, and of which repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The credential.
    pub credential: CredentialUid,
    /// Its secret version (a rotation starts afresh).
    pub secret_version: u64,
    /// The registry API host.
    pub endpoint: String,
    /// The repository.
    pub repository: String,
}

/// What a manifest request names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A tag, with the `Accept` header it was asked with (the answer may
    /// depend on it).
    Tag(Origin, String, String),
    /// A digest.
    Digest(Origin, Digest),
}

/// Most manifests (and tag answers) kept.
const MAX_ENTRIES: usize = 10_000;
/// Most manifest bytes kept.
const MAX_BYTES: usize = 64 * 1024 * 1024;

/// The cache.
pub struct ManifestCache {
    tag_ttl: Duration,
    entries: Mutex<Bounded>,
    flights: Mutex<HashMap<Key, Flight>>,
}

impl std::fmt::Debug for ManifestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestCache").field("tag_ttl", &self.tag_ttl).finish_non_exhaustive()
    }
}

type Flight = Arc<OnceCell<Result<Arc<Manifest>, super::PullError>>>;

impl ManifestCache {
    /// A cache remembering tag answers for `tag_ttl`.
    pub fn new(tag_ttl: Duration) -> Self {
        Self { tag_ttl, entries: Mutex::new(Bounded::default()), flights: Mutex::default() }
    }

    /// The cached manifest for `key`, if any (a tag's answer only while
    /// fresh).
    pub fn get(&self, key: &Key) -> Option<Arc<Manifest>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (manifest, stored) = entries.map.get(key).map(|e| (&e.manifest, e.stored))?;
        match key {
            Key::Tag(..) if stored.elapsed() >= self.tag_ttl => None,
            _ => Some(Arc::clone(manifest)),
        }
    }

    /// The manifest for `key`: cached, or from `fetch`, run once for all
    /// concurrent callers of the key. A fetched manifest is kept under its
    /// digest, and under the tag when asked by tag. Errors are not kept.
    pub async fn get_or_fetch<F, Fut>(&self, key: Key, fetch: F) -> Result<(Arc<Manifest>, bool), super::PullError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Manifest, super::PullError>>,
    {
        if let Some(found) = self.get(&key) {
            return Ok((found, true));
        }
        let flight = Arc::clone(
            self.flights.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_insert_with(Flight::default),
        );
        let outcome = flight.get_or_init(|| async { fetch().await.map(Arc::new) }).await.clone();
        {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.get(&key).is_some_and(|current| Arc::ptr_eq(current, &flight)) {
                flights.remove(&key);
                if let Ok(manifest) = &outcome {
                    self.insert(&key, manifest);
                }
            }
        }
        outcome.map(|manifest| (manifest, false))
    }

    fn insert(&self, key: &Key, manifest: &Arc<Manifest>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Key::Tag(origin, ..) = key {
            entries.insert(Key::Digest(origin.clone(), manifest.digest.clone()), manifest);
        }
        entries.insert(key.clone(), manifest);
    }

    /// Entries kept (tag answers and digests).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Entry {
    manifest: Arc<Manifest>,
    stored: Instant,
    seq: u64,
}

/// A map bounded by entries and bytes, forgetting the oldest insertions.
#[derive(Default)]
struct Bounded {
    map: HashMap<Key, Entry>,
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    seq: u64,
}

impl Bounded {
    fn insert(&mut self, key: Key, manifest: &Arc<Manifest>) {
        self.seq += 1;
        let entry = Entry { manifest: Arc::clone(manifest), stored: Instant::now(), seq: self.seq };
        self.bytes += manifest.bytes.len();
        if let Some(old) = self.map.insert(key.clone(), entry) {
            self.bytes -= old.manifest.bytes.len();
        }
        self.order.push_back((key, self.seq));
        while self.map.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            let Some((oldest, seq)) = self.order.pop_front() else { break };
            if self.map.get(&oldest).is_some_and(|e| e.seq == seq)
                && let Some(removed) = self.map.remove(&oldest)
            {
                self.bytes -= removed.manifest.bytes.len();
            }
        }
        // Superseded positions pile up when one key is stored again and
        // again; drop them once they outnumber the entries.
        if self.order.len() > 2 * MAX_ENTRIES {
            let map = &self.map;
            self.order.retain(|(key, seq)| map.get(key).is_some_and(|e| e.seq == *seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn origin() -> Origin {
        Origin {
            credential: CredentialUid([7; 16]),
            secret_version: 1,
            endpoint: "r".into(),
            repository: "team/app".into(),
        }
    }

    fn manifest(body: &str) -> Manifest {
        Manifest {
            bytes: Bytes::from(body.to_owned()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::sha256_of(body.as_bytes()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_fetch_and_fill_the_digest_entry() {
        let cache = Arc::new(ManifestCache::new(Duration::from_secs(30)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let tag = Key::Tag(origin(), "1.0".into(), "*/*".into());
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, fetches, tag) = (Arc::clone(&cache), Arc::clone(&fetches), tag.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(tag, || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        Ok(manifest("{}"))
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let by_digest = Key::Digest(origin(), Digest::sha256_of(b"{}"));
        assert_eq!(cache.get(&by_digest).unwrap().bytes, Bytes::from_static(b"{}"));
        let other_credential =
            Key::Digest(Origin { credential: CredentialUid([8; 16]), ..origin() }, Digest::sha256_of(b"{}"));
        assert!(cache.get(&other_credential).is_none(), "another credential's fetch is not shared");
    }

    #[tokio::test]
    async fn tag_answers_expire_digests_stay_and_errors_are_not_kept() {
        let cache = ManifestCache::new(Duration::ZERO);
        let tag = Key::Tag(origin(), "1.0".into(), String::new());
        cache.get_or_fetch(tag.clone(), || async { Ok(manifest("a")) }).await.unwrap();
        assert!(cache.get(&tag).is_none(), "a tag answer older than the TTL is not served");
        assert!(cache.get(&Key::Digest(origin(), Digest::sha256_of(b"a"))).is_some());
        let failing = Key::Tag(origin(), "2.0".into(), String::new());
        let error = cache
            .get_or_fetch(failing.clone(), || async { Err(super::super::PullError::Unavailable("down".into())) })
            .await;
        assert!(error.is_err());
        let (_, hit) = cache.get_or_fetch(failing, || async { Ok(manifest("b")) }).await.unwrap();
        assert!(!hit);
    }

    #[test]
    fn the_cache_is_bounded_by_bytes() {
        let mut bounded = Bounded::default();
        let big = Arc::new(Manifest {
            bytes: Bytes::from(vec![b'x'; MAX_BYTES / 4 + 1]),
            media_type: String::new(),
            digest: Digest::sha256_of(b"x"),
        });
        for i in 0..10 {
            bounded.insert(Key::Tag(origin(), format!("t{i}"), String::new()), &big);
        }
        assert!(bounded.bytes <= MAX_BYTES && bounded.map.len() == 3, "{} {}", bounded.bytes, bounded.map.len());
        assert!(bounded.map.contains_key(&Key::Tag(origin(), "t9".into(), String::new())));
    }
}
