//! Singleflight: concurrent callers asking for the same key share one run of
//! the work. The entry of a key is removed when its run ends or when every
//! caller waiting on it has gone away (a client that disconnects), so keys
//! nobody waits for do not pile up.
//!
//! Results are not kept here: callers that want a cache store the result
//! from inside the work, before the flight lands, and look in the cache
//! again as the work starts. A caller that missed the cache just before a
//! flight landed starts a new flight just after, and must find the result
//! there rather than run the work a second time.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Runs of work by key.
pub struct Flights<K, V> {
    map: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> std::fmt::Debug for Flights<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Self { map: Mutex::default() }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    /// The result of `work` for `key`, run once for all concurrent callers.
    /// If the caller running it goes away, a waiting caller runs its own
    /// `work` instead.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let flight = Arc::clone(self.lock().entry(key.clone()).or_default());
        let _landing = Landing { flights: self, key: &key, flight: &flight };
        flight.get_or_init(work).await.clone()
    }

    /// Keys with a run in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Is nothing in progress?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<OnceCell<V>>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes a key's entry when the last caller of its flight leaves (done or
/// dropped), unless a newer flight took its place.
struct Landing<'a, K: Hash + Eq, V> {
    flights: &'a Flights<K, V>,
    key: &'a K,
    flight: &'a Arc<OnceCell<V>>,
}

impl<K: Hash + Eq, V> Drop for Landing<'_, K, V> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and this caller's: nobody else waits.
        let alone = Arc::strong_count(self.flight) <= 2;
        if map.get(self.key).is_some_and(|current| Arc::ptr_eq(current, self.flight))
            && (self.flight.initialized() || alone)
        {
            map.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_run_and_the_key_is_gone_after() {
        let flights = Arc::new(Flights::<&'static str, usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, runs) = (Arc::clone(&flights), Arc::clone(&runs));
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 1);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_key_whose_callers_all_went_away_is_dropped() {
        let flights = Flights::<u32, u32>::default();
        for key in 0..100 {
            let abandoned = tokio::time::timeout(
                Duration::from_millis(1),
                flights.run(key, || async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    0
                }),
            )
            .await;
            assert!(abandoned.is_err());
        }
        assert!(flights.is_empty(), "{} keys left behind", flights.len());
        assert_eq!(flights.run(7, || async { 7 }).await, 7, "a later caller runs afresh");
    }
}
