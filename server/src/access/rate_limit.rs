//! Rate limiting: a token bucket per key, refilled at the configured rate
//! with a burst of twice as many.
//!
//! Keyed by access token, it is the per-token limit both front ends share:
//! over it, a gRPC call gets RESOURCE_EXHAUSTED with `RetryInfo`, a gateway
//! request `429 TOOMANYREQUESTS` with `Retry-After`, each saying when a
//! token is back. Keyed by client address, it bounds the console's
//! anonymous work (sign-ins, unknown session cookies).
//!
//! The map is bounded: past [`MAX_BUCKETS`] keys, buckets idle for a minute
//! (full again by then) are dropped, and if that is not enough, all are.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::AccessTokenId;

/// Keys kept at most before idle buckets are dropped.
pub const MAX_BUCKETS: usize = 100_000;

/// Buckets by key (by access token unless said otherwise).
#[derive(Debug)]
pub struct RateLimiter<K = AccessTokenId> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second` calls per second per key, bursts of twice as many.
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self { per_second, burst: per_second * 2.0, buckets: Mutex::default() }
    }

    /// Takes one call from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
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

    /// Gives back the call last taken from `key`'s bucket (the work it
    /// stood for turned out not to need limiting).
    pub fn give_back(&self, key: &K) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tokens, _)) = buckets.get_mut(key) {
            *tokens = (*tokens + 1.0).min(self.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_calls_wait_for_the_refill() {
        let limiter = RateLimiter::new(10);
        let token = AccessTokenId::parse("abc").unwrap();
        for _ in 0..20 {
            assert!(limiter.check(&token).is_ok());
        }
        let wait = limiter.check(&token).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        let other = AccessTokenId::parse("def").unwrap();
        assert!(limiter.check(&other).is_ok(), "buckets are per token");
        limiter.give_back(&token);
        assert!(limiter.check(&token).is_ok(), "a call given back can be taken again");
    }

    #[test]
    fn the_map_stays_bounded_however_many_keys_are_seen() {
        let limiter = RateLimiter::<u32>::new(1);
        for key in 0..(MAX_BUCKETS as u32 + 10) {
            assert!(limiter.check(&key).is_ok());
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_BUCKETS);
    }
}
