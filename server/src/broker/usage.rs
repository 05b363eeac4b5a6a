//! When each credential last served a lease (`last_used_time`), recorded off
//! the lease path: at most once a minute per credential, by a background
//! write, so a cached lease costs an atomic load, not a database write.
//!
//! The write touches only that column: it is no change (no audit event, no
//! new `update_time`), so no cache or index moves because of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use crate::domain::credential::StoredCredential;
use crate::domain::{CredentialUid, Timestamp};
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
}

impl Usage {
    /// Uses recorded in `store`.
    pub fn new(store: Store) -> Self {
        Self { store, slots: RwLock::default() }
    }

    /// The slot of a credential (kept by the broker's memo, so repeated
    /// leases skip even this lookup).
    pub fn slot(&self, credential: &StoredCredential) -> Slot {
        let uid = credential.credential.uid;
        if let Some(slot) = self.slots.read().unwrap_or_else(|p| p.into_inner()).get(&uid) {
            return Arc::clone(slot);
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= 100_000 {
            slots.clear();
        }
        Arc::clone(slots.entry(uid).or_default())
    }

    /// `credential` served a lease now: written in the background unless it
    /// was within [`RESOLUTION`].
    pub fn used(&self, slot: &Slot, credential: &StoredCredential) {
        let now = EPOCH.elapsed().as_millis() as u64 + 1;
        let last = slot.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < RESOLUTION.as_millis() as u64 {
            return;
        }
        if slot.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
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
}
