//! How often a credential's leases may be refreshed after a registry
//! refused one before its time.
//!
//! A registry that rotates its signing keys refuses every lease it issued
//! before, and each is then dropped and fetched again once. But a registry
//! also refuses a lease for a repository its credential cannot read, and
//! a caller probing such repositories must not turn each probe into an
//! exchange with the registry (nor into cache churn for the others). So
//! refreshes are a token bucket per credential: [`BURST`] at once, then
//! [`PER_SECOND`]; past that, the registry's refusal stands.

use crate::buckets::Buckets;
use crate::domain::CredentialUid;

/// Refreshes a credential may have at once.
pub const BURST: f64 = 10.0;
/// Refreshes a credential gets back per second.
pub const PER_SECOND: f64 = 1.0;

/// Refresh buckets by credential.
#[derive(Debug)]
pub struct Refreshes(Buckets<CredentialUid>);

impl Default for Refreshes {
    fn default() -> Self {
        Self(Buckets::new(PER_SECOND, BURST))
    }
}

impl Refreshes {
    /// May a lease of `credential` be refreshed now?
    pub fn allow(&self, credential: &CredentialUid) -> bool {
        let allowed = self.0.take(credential).is_ok();
        if !allowed {
            tracing::debug!("a registry refused a lease again; this credential's refreshes are over their rate");
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_refreshes_then_the_refusal_stands_per_credential() {
        let refreshes = Refreshes::default();
        let one = CredentialUid([1; 16]);
        let allowed = (0..50).filter(|_| refreshes.allow(&one)).count();
        assert_eq!(allowed, BURST as usize);
        assert!(refreshes.allow(&CredentialUid([2; 16])), "another credential's refreshes are its own");
    }
}
