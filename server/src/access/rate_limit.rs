//! Rate limiting: a token bucket per key (see `buckets`), refilled at the
//! configured rate with a burst of twice as many.
//!
//! Keyed by access token, it is the per-token limit both front ends share:
//! over it, a gRPC call gets RESOURCE_EXHAUSTED with `RetryInfo`, a gateway
//! request `429 TOOMANYREQUESTS` with `Retry-After`, each saying when a
//! token is back. Keyed by client address, it bounds the console's
//! anonymous work (sign-ins, unknown session cookies).

use std::hash::Hash;
use std::time::Duration;

use crate::buckets::Buckets;
use crate::domain::AccessTokenId;

/// Buckets by key (by access token unless said otherwise).
#[derive(Debug)]
pub struct RateLimiter<K = AccessTokenId>(Buckets<K>);

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second` calls per second per key, bursts of twice as many.
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self(Buckets::new(per_second, per_second * 2.0))
    }

    /// Takes one call from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.0.take(key)
    }

    /// Gives back the call last taken from `key`'s bucket (the work it
    /// stood for turned out not to need limiting).
    pub fn give_back(&self, key: &K) {
        self.0.give_back(key);
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
}
