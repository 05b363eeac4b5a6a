//! Per-token rate limiting: a token bucket per access token, refilled at the
//! configured rate with a burst of twice as many, shared by both front ends.
//! Over the limit, a gRPC call gets RESOURCE_EXHAUSTED with `RetryInfo`, a
//! gateway request `429 TOOMANYREQUESTS` with `Retry-After`, each saying when
//! a token is back.

use std::time::Duration;

use crate::buckets::Buckets;
use crate::domain::AccessTokenId;

/// Buckets by token.
#[derive(Debug)]
pub struct RateLimiter(Buckets<AccessTokenId>);

impl RateLimiter {
    /// `per_second` calls per second per token, bursts of twice as many.
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self(Buckets::new(per_second, per_second * 2.0))
    }

    /// Takes one call from `token`'s bucket, or says how long to wait.
    pub fn check(&self, token: &AccessTokenId) -> Result<(), Duration> {
        self.0.take(token)
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
    }
}
