//! A negative cache: hashes of presented secrets (access tokens, console
//! session cookies, login codes) that the database did not know, remembered for
//! [`UNKNOWN_TTL`] so that presenting them again costs no database work.
//!
//! It refuses nothing that could be valid: secrets are 256 random bits, and
//! no one presents one before it was made, so a hash the database did not
//! know stays unknown (a used login code, or an ended session, is added by
//! the code that ended it). It is bounded: at [`MAX_UNKNOWN`] hashes,
//! expired ones are dropped, and if that is not enough, all are (the cache
//! saves work; forgetting costs only a read). Only hashes are kept.
//!
//! The same set, with a longer memory ([`Unknown::remembering`]), keeps
//! the console's recently valid sessions, whose requests its per-address
//! limit then leaves alone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unknown hash is refused from memory.
pub const UNKNOWN_TTL: Duration = Duration::from_secs(60);
/// Unknown hashes remembered at most.
pub const MAX_UNKNOWN: usize = 100_000;

/// Hashes the database did not know, and when that was seen.
#[derive(Debug, Default)]
pub struct Unknown {
    seen: Mutex<HashMap<[u8; 32], Instant>>,
    /// How long a hash is remembered ([`UNKNOWN_TTL`] unless said).
    ttl: Option<Duration>,
}

impl Unknown {
    /// A set that remembers each hash for `ttl`.
    pub fn remembering(ttl: Duration) -> Self {
        Self { seen: Mutex::default(), ttl: Some(ttl) }
    }

    fn ttl(&self) -> Duration {
        self.ttl.unwrap_or(UNKNOWN_TTL)
    }

    /// Did the database say, within [`UNKNOWN_TTL`], that it does not know
    /// `hash`?
    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(hash) {
            Some(at) if at.elapsed() < self.ttl() => true,
            Some(_) => {
                seen.remove(hash);
                false
            }
            None => false,
        }
    }

    /// Remembers that the database does not know `hash` (any more).
    pub fn insert(&self, hash: [u8; 32]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_UNKNOWN && !seen.contains_key(&hash) {
            let ttl = self.ttl();
            seen.retain(|_, at| at.elapsed() < ttl);
            if seen.len() >= MAX_UNKNOWN {
                seen.clear();
            }
        }
        seen.insert(hash, Instant::now());
    }

    /// Forgets `hash` (it became known: a token minted, a record
    /// refreshed).
    pub fn remove(&self, hash: &[u8; 32]) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
    }

    /// How many hashes are remembered.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Is nothing remembered?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_hash_is_remembered_and_the_cache_stays_bounded() {
        let unknown = Unknown::default();
        assert!(!unknown.contains(&[1; 32]));
        unknown.insert([1; 32]);
        assert!(unknown.contains(&[1; 32]) && !unknown.contains(&[2; 32]));
        for n in 0..(MAX_UNKNOWN as u32 + 10) {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&n.to_be_bytes());
            unknown.insert(hash);
        }
        assert!(unknown.len() <= MAX_UNKNOWN, "{}", unknown.len());
    }
}
