//! Token buckets by key: the rate limits of the service (per access token,
//! per client address before a console sign-in, per credential's lease
//! refreshes) share this one implementation. A key holds up to `burst`
//! tokens, refilled at `per_second`.
//!
//! The map is bounded: past [`MAX_BUCKETS`] keys, buckets idle for a minute
//! (full again by then) are dropped, and if that is not enough, all are.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept at most before idle buckets are dropped.
pub const MAX_BUCKETS: usize = 100_000;

/// Buckets by key.
#[derive(Debug)]
pub struct Buckets<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Buckets of `burst` tokens refilled at `per_second`.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst: burst.max(1.0), buckets: Mutex::default() }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is
    /// back.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let (tokens, last) = buckets.entry(key.clone()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }

    /// Gives back the token last taken from `key`'s bucket (the work it
    /// stood for turned out not to need limiting).
    pub fn give_back(&self, key: &K) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tokens, _)) = buckets.get_mut(key) {
            *tokens = (*tokens + 1.0).min(self.burst);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_stays_bounded_however_many_keys_are_seen() {
        let buckets = Buckets::<u32>::new(1.0, 2.0);
        for key in 0..(MAX_BUCKETS as u32 + 10) {
            assert!(buckets.take(&key).is_ok());
        }
        assert!(buckets.len() <= MAX_BUCKETS);
    }
}
