//! Credential health: which credentials need a person's attention (their
//! upstream secret expires soon, or the registry has been refusing them),
//! for the console's badges and filter, and the health gauges every
//! replica refreshes from the store for Prometheus.
//!
//! Health never changes what the broker does: an expired secret is still
//! presented (the registry decides), and a failing credential is still
//! tried, so a registry outage heals without anyone touching pullpass.

use std::time::Duration;

use crate::domain::{Credential, Timestamp};
use crate::store::Store;

/// Within this, an expiry needs attention (the console's "expires in N
/// days" badge, the "needs attention" filter, the `30d` gauge).
pub const ATTENTION_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// Whole days until the credential's upstream secret expires (negative
/// once expired), if it has an expiry within [`ATTENTION_WINDOW`].
pub fn expires_in_days(credential: &Credential, now: Timestamp) -> Option<i64> {
    let expiry = credential.expire_time?;
    if expiry > now.plus(ATTENTION_WINDOW) {
        return None;
    }
    let micros = expiry.as_micros() - now.as_micros();
    Some(micros.div_euclid(86_400_000_000))
}

/// Does the credential need attention: expiring within
/// [`ATTENTION_WINDOW`] (or expired), or failing?
pub fn needs_attention(credential: &Credential, now: Timestamp) -> bool {
    credential.failing() || expires_in_days(credential, now).is_some()
}

/// Keeps `pullpass_credentials_expiring` and `pullpass_credentials_failing`
/// current: counted by the store every `refresh` (30 s by default), over
/// every workspace (each replica reports the same numbers; dashboards take
/// the max).
pub async fn keep_gauges(store: Store, refresh: Duration) {
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        let deadlines: Vec<Timestamp> =
            crate::metrics::EXPIRY_WINDOWS.iter().map(|(_, window)| now.plus(*window)).collect();
        match store.credential_health(&deadlines).await {
            Ok(health) => crate::metrics::credential_health(&health.expiring, health.failing),
            Err(e) => tracing::warn!(error = %e, "could not count credential health for the metrics"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::{CredentialFailure, FailureReason};

    fn credential() -> Credential {
        crate::broker::choose::tests::stored("health", "ghcr.io", &[]).credential.clone()
    }

    #[test]
    fn an_expiry_within_thirty_days_needs_attention_and_counts_whole_days() {
        let now = Timestamp::from_micros(1_000_000_000_000_000);
        let mut c = credential();
        assert!(!needs_attention(&c, now));
        c.expire_time = Some(now.plus(Duration::from_secs(31 * 86_400)));
        assert_eq!(expires_in_days(&c, now), None);
        c.expire_time = Some(now.plus(Duration::from_secs(6 * 86_400 + 3600)));
        assert_eq!(expires_in_days(&c, now), Some(6));
        assert!(needs_attention(&c, now));
        c.expire_time = Some(now.saturating_minus(Duration::from_secs(3600)));
        assert_eq!(expires_in_days(&c, now), Some(-1));
    }

    #[test]
    fn a_refusal_after_the_last_use_is_failing_and_a_later_use_heals_it() {
        let now = Timestamp::from_micros(1_000_000_000_000_000);
        let mut c = credential();
        c.last_failure = Some(CredentialFailure { time: now, reason: FailureReason::Rejected, since: now });
        assert!(c.failing() && needs_attention(&c, now));
        c.last_used_time = Some(now.plus(Duration::from_secs(1)));
        assert!(!c.failing() && !needs_attention(&c, now));
    }
}
