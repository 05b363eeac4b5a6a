//! The gateway's manifest cache.
//!
//! Two maps: manifests by digest, as the registry sent them (bytes and
//! media type: never re-serialized), and what a tag names (its digest, media
//! type and length), for a short time (`--gateway-tag-ttl`). A tag learnt
//! from a HEAD costs the registry no manifest GET (which registries such as
//! Docker Hub count as a pull); its bytes are then fetched by digest when a
//! client asks for them.
//!
//! Entries belong to the credential that fetched them (its uid and secret
//! version), so content is shared only between callers who were authorized
//! to use that same credential: a workspace with its own account on a
//! registry never sees what another workspace's account fetched. Bounded by
//! entries and bytes; the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::digest::Digest;
use crate::domain::CredentialUid;

/// What a manifest is, without its bytes: what a HEAD answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// Its digest.
    pub digest: Digest,
    /// Its `Content-Type`.
    pub media_type: String,
    /// Its length in bytes.
    pub length: usize,
}

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

impl Manifest {
    /// Its head.
    pub fn head(&self) -> ManifestHead {
        ManifestHead { digest: self.digest.clone(), media_type: self.media_type.clone(), length: self.bytes.len() }
    }
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

/// A tag, asked with an `Accept` set (the answer may depend on it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagKey {
    /// Whose.
    pub origin: Origin,
    /// The tag.
    pub tag: String,
    /// The normalized `Accept` (see [`super::normalized_accept`]).
    pub accept: String,
}

/// A manifest by digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DigestKey {
    /// Whose.
    pub origin: Origin,
    /// The digest.
    pub digest: Digest,
}

/// Most manifests, and most tags, kept.
const MAX_ENTRIES: usize = 10_000;
/// Most bytes kept (manifests and keys).
const MAX_BYTES: usize = 64 * 1024 * 1024;

/// The cache.
pub struct ManifestCache {
    tag_ttl: Duration,
    tags: Mutex<Bounded<TagKey, (ManifestHead, Instant)>>,
    manifests: Mutex<Bounded<DigestKey, Arc<Manifest>>>,
}

impl std::fmt::Debug for ManifestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestCache").field("tag_ttl", &self.tag_ttl).finish_non_exhaustive()
    }
}

impl ManifestCache {
    /// A cache remembering tags for `tag_ttl`.
    pub fn new(tag_ttl: Duration) -> Self {
        Self { tag_ttl, tags: Mutex::default(), manifests: Mutex::default() }
    }

    /// What `key` names, if learnt less than the tag TTL ago.
    pub fn tag(&self, key: &TagKey) -> Option<ManifestHead> {
        let tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        tags.get(key).filter(|(_, at)| at.elapsed() < self.tag_ttl).map(|(head, _)| head.clone())
    }

    /// The manifest of `key`, if kept.
    pub fn manifest(&self, key: &DigestKey) -> Option<Arc<Manifest>> {
        self.manifests.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Remembers what a tag names.
    pub fn remember_tag(&self, key: TagKey, head: ManifestHead) {
        let size = key.tag.len() + key.accept.len() + key.origin.repository.len() + head.media_type.len();
        self.tags.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (head, Instant::now()), size);
    }

    /// Keeps a (verified) manifest.
    pub fn remember_manifest(&self, key: DigestKey, manifest: Arc<Manifest>) {
        let size = manifest.bytes.len() + key.origin.repository.len();
        self.manifests.lock().unwrap_or_else(|p| p.into_inner()).insert(key, manifest, size);
    }

    /// Manifests and tags kept.
    pub fn len(&self) -> usize {
        let tags = self.tags.lock().unwrap_or_else(|p| p.into_inner()).map.len();
        tags + self.manifests.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A map bounded by entries and bytes, forgetting the oldest insertions.
struct Bounded<K, V> {
    map: HashMap<K, (V, usize, u64)>,
    order: VecDeque<(K, u64)>,
    bytes: usize,
    seq: u64,
}

impl<K, V> Default for Bounded<K, V> {
    fn default() -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), bytes: 0, seq: 0 }
    }
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(value, _, _)| value)
    }

    fn insert(&mut self, key: K, value: V, size: usize) {
        self.seq += 1;
        self.bytes += size;
        if let Some((_, old, _)) = self.map.insert(key.clone(), (value, size, self.seq)) {
            self.bytes -= old;
        }
        self.order.push_back((key, self.seq));
        while self.map.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            let Some((oldest, seq)) = self.order.pop_front() else { break };
            if self.map.get(&oldest).is_some_and(|(_, _, s)| *s == seq)
                && let Some((_, size, _)) = self.map.remove(&oldest)
            {
                self.bytes -= size;
            }
        }
        // Superseded positions pile up when one key is stored again and
        // again; drop them once they outnumber the entries.
        if self.order.len() > 2 * MAX_ENTRIES {
            let map = &self.map;
            self.order.retain(|(key, seq)| map.get(key).is_some_and(|(_, _, s)| s == seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(credential: u8) -> Origin {
        Origin {
            credential: CredentialUid([credential; 16]),
            secret_version: 1,
            endpoint: "r".into(),
            repository: "team/app".into(),
        }
    }

    fn manifest(body: &str) -> Arc<Manifest> {
        Arc::new(Manifest {
            bytes: Bytes::from(body.to_owned()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::sha256_of(body.as_bytes()),
        })
    }

    #[test]
    fn tags_expire_manifests_stay_and_nothing_crosses_credentials() {
        let cache = ManifestCache::new(Duration::from_secs(30));
        let m = manifest("{}");
        let tag = TagKey { origin: origin(7), tag: "1.0".into(), accept: String::new() };
        cache.remember_tag(tag.clone(), m.head());
        cache.remember_manifest(DigestKey { origin: origin(7), digest: m.digest.clone() }, Arc::clone(&m));
        assert_eq!(cache.tag(&tag).unwrap().length, 2);
        assert!(cache.manifest(&DigestKey { origin: origin(7), digest: m.digest.clone() }).is_some());
        let other = DigestKey { origin: origin(8), digest: m.digest.clone() };
        assert!(cache.manifest(&other).is_none(), "another credential's fetch is not shared");
        assert!(cache.tag(&TagKey { origin: origin(8), ..tag.clone() }).is_none());
        let expired = ManifestCache::new(Duration::ZERO);
        expired.remember_tag(tag.clone(), m.head());
        assert!(expired.tag(&tag).is_none(), "a tag older than the TTL is asked again");
    }

    #[test]
    fn the_cache_is_bounded_by_bytes() {
        let mut bounded = Bounded::default();
        for i in 0..10 {
            bounded.insert(i, (), MAX_BYTES / 4 + 1);
        }
        assert!(bounded.bytes <= MAX_BYTES && bounded.map.len() == 3, "{} {}", bounded.bytes, bounded.map.len());
        assert!(bounded.map.contains_key(&9));
    }
}
