//! When each credential last served a lease (`last_used_time`) and when the
//! registry last refused it (`last_failure`), recorded off the lease path:
//! at most once a minute per credential and kind, by a background write, so
//! a cached lease costs an atomic load, not a database write.
//!
//! The writes touch only those columns: they are no change (no audit event,
//! no new `update_time`), so no cache or index moves because of them. Every
//! refusal is counted in `pullpass_upstream_refusals_total{reason}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use crate::domain::credential::{CredentialFailure, FailureReason, StoredCredential};
use crate::domain::{Credential, CredentialUid, Timestamp};
use crate::store::Store;

/// A credential's use is written at most this often.
pub const RESOLUTION: Duration = Duration::from_secs(60);

/// Origin of [`Slot`] times.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When a credential's use was last written: milliseconds after [`EPOCH`],
/// plus one (0: never).
pub type Slot = Arc<AtomicU64>;

/// The record of credential uses.
#[derive(Debug)]
pub struct Usage {
    store: Store,
    slots: RwLock<HashMap<CredentialUid, Slot>>,
    failures: RwLock<HashMap<CredentialUid, Slot>>,
}

impl Usage {
    /// Uses recorded in `store`.
    pub fn new(store: Store) -> Self {
        Self { store, slots: RwLock::default(), failures: RwLock::default() }
    }

    /// The slot of a credential (kept by the broker's memo, so repeated
    /// leases skip even this lookup).
    pub fn slot(&self, credential: &StoredCredential) -> Slot {
        slot_in(&self.slots, credential.credential.uid)
    }

    /// `credential` served a lease now: written in the background unless it
    /// was within [`RESOLUTION`].
    pub fn used(&self, slot: &Slot, credential: &StoredCredential) {
        if !due(slot) {
            return;
        }
        let store = self.store.clone();
        let c = &credential.credential;
        let uses = vec![(c.name.clone(), c.uid, Timestamp::now())];
        tokio::spawn(async move {
            if let Err(e) = store.touch_credentials(&uses).await {
                tracing::warn!(error = %e, "could not record a credential's last use");
            }
        });
    }

    /// An exchange with `credential` failed now, for `reason`: counted; and,
    /// when the reason says something about the credential
    /// ([`FailureReason::marks_credential`]), written in the background
    /// unless a failure was within [`RESOLUTION`].
    pub fn failed(&self, credential: &Credential, reason: FailureReason) {
        crate::metrics::upstream_refusal(reason);
        if !reason.marks_credential() || !due(&slot_in(&self.failures, credential.uid)) {
            return;
        }
        let store = self.store.clone();
        let now = Timestamp::now();
        let failures =
            vec![(credential.name.clone(), credential.uid, CredentialFailure { time: now, reason, since: now })];
        tokio::spawn(async move {
            if let Err(e) = store.record_credential_failures(&failures).await {
                tracing::warn!(error = %e, "could not record a credential's last failure");
            }
        });
    }
}

/// The slot of `uid` in `slots` (emptied past 100,000 credentials).
fn slot_in(slots: &RwLock<HashMap<CredentialUid, Slot>>, uid: CredentialUid) -> Slot {
    if let Some(slot) = slots.read().unwrap_or_else(|p| p.into_inner()).get(&uid) {
        return Arc::clone(slot);
    }
    let mut slots = slots.write().unwrap_or_else(|p| p.into_inner());
    if slots.len() >= 100_000 {
        slots.clear();
    }
    Arc::clone(slots.entry(uid).or_default())
}

/// Is a write due on `slot` (none within [`RESOLUTION`])? Claims it if so.
fn due(slot: &Slot) -> bool {
    let now = EPOCH.elapsed().as_millis() as u64 + 1;
    let last = slot.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < RESOLUTION.as_millis() as u64 {
        return false;
    }
    slot.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}
