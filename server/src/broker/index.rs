//! The in-memory credential index: each workspace's credentials (metadata
//! and sealed secrets), loaded from the store on first use and kept current
//! change by change. A cache hit on the lease path costs no database read.
//!
//! A changed credential is not a reason to reload a whole workspace (tens
//! of thousands of credentials, under a writer creating fifty a second,
//! would be reloaded on every lease). The change marks the credential
//! pending; the next caller reads just the pending ones and patches the
//! list. Only a workspace-wide change (the workspace deleted, a replica's
//! lost view of the others) drops a workspace's list.
//!
//! Races between a read and a change are settled by sequence numbers: each
//! change gets the next number, and a read started at number `s` settles
//! only the marks up to `s`; a credential changed again meanwhile stays
//! pending and is read again by the next caller. A caller never gets a
//! list older than a change published before it asked: one that joined a
//! refresh begun before its change looks again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::domain::credential::StoredCredential;
use crate::domain::{CredentialId, CredentialName, WorkspaceId};
use crate::error::Error;
use crate::singleflight::Flights;
use crate::store::Store;

/// Most pending credentials read one by one; past it, the workspace is
/// loaded whole.
const MAX_PATCH: usize = 64;

/// A workspace's credentials.
pub type WorkspaceCredentials = Arc<Vec<Arc<StoredCredential>>>;

/// What the index knows of one workspace.
#[derive(Debug, Default)]
struct Slot {
    /// The list, once loaded.
    credentials: Option<WorkspaceCredentials>,
    /// Credentials changed since, with the number of their last change.
    pending: HashMap<CredentialId, u64>,
    /// The number of the last workspace-wide change.
    dropped: u64,
}

impl Slot {
    /// Is this list current for a caller that arrived at `arrived`?
    fn current_for(&self, arrived: u64) -> Option<&WorkspaceCredentials> {
        let credentials = self.credentials.as_ref()?;
        self.pending.values().all(|mark| *mark > arrived).then_some(credentials)
    }
}

/// Credentials by workspace.
#[derive(Debug)]
pub struct CredentialIndex {
    store: Store,
    slots: RwLock<HashMap<WorkspaceId, Slot>>,
    /// The number of the last change.
    sequence: AtomicU64,
    /// The number of the last change to every workspace: a load begun
    /// before it is not kept, whether its workspace had a slot or not.
    floor: AtomicU64,
    refreshes: Flights<WorkspaceId, Result<(WorkspaceCredentials, u64), Error>>,
}

impl CredentialIndex {
    /// An empty index over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            slots: RwLock::default(),
            sequence: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            refreshes: Flights::default(),
        }
    }

    /// The credentials of `workspace`; NOT_FOUND if it does not exist.
    pub async fn credentials(&self, workspace: &WorkspaceId) -> Result<WorkspaceCredentials, Error> {
        let arrived = self.sequence.load(Ordering::SeqCst);
        loop {
            if let Some(current) = self.read().get(workspace).and_then(|slot| slot.current_for(arrived)) {
                return Ok(Arc::clone(current));
            }
            let (credentials, started) = self.refreshes.run(workspace.clone(), || self.refresh(workspace)).await?;
            // A refresh this caller joined may have begun before a change it
            // must see; then it looks again.
            if started >= arrived {
                return Ok(credentials);
            }
        }
    }

    /// Loads the workspace, or reads its pending credentials and patches
    /// its list; keeps what nothing raced.
    async fn refresh(&self, workspace: &WorkspaceId) -> Result<(WorkspaceCredentials, u64), Error> {
        let started = self.sequence.load(Ordering::SeqCst);
        let (known, pending): (Option<WorkspaceCredentials>, Vec<CredentialId>) = {
            let slots = self.read();
            match slots.get(workspace) {
                Some(slot) => (slot.credentials.clone(), slot.pending.keys().cloned().collect()),
                None => (None, Vec::new()),
            }
        };
        // Many pending (an import of thousands) are read faster as a list.
        let known = known.filter(|_| pending.len() <= MAX_PATCH);
        let refreshed: WorkspaceCredentials = match known {
            Some(known) => {
                let mut read = Vec::with_capacity(pending.len());
                for id in pending {
                    let name = CredentialName { workspace: workspace.clone(), credential: id };
                    let stored = self.store.credential(&name).await?;
                    read.push((name.credential, stored));
                }
                Arc::new(patched(&known, read))
            }
            None => {
                let loaded = self
                    .store
                    .workspace_credentials(workspace)
                    .await?
                    .ok_or_else(|| Error::not_found(workspace.name()))?;
                let mut loaded: Vec<_> = loaded.into_iter().map(Arc::new).collect();
                loaded.sort_by(|a, b| a.credential.name.credential.cmp(&b.credential.name.credential));
                Arc::new(loaded)
            }
        };
        let mut slots = self.write();
        let slot = slots.entry(workspace.clone()).or_default();
        if slot.dropped <= started && self.floor.load(Ordering::SeqCst) <= started {
            slot.pending.retain(|_, mark| *mark > started);
            slot.credentials = Some(Arc::clone(&refreshed));
        }
        Ok((refreshed, started))
    }

    /// Marks a credential changed (it is read again on next use).
    pub fn changed(&self, name: &CredentialName) {
        let mut slots = self.write();
        let mark = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(slot) = slots.get_mut(&name.workspace) {
            slot.pending.insert(name.credential.clone(), mark);
        } else {
            // A load under way started before this change: it must not be kept.
            slots.insert(name.workspace.clone(), Slot { dropped: mark, ..Slot::default() });
        }
    }

    /// Forgets a workspace's credentials (they are reloaded on next use).
    pub fn invalidate(&self, workspace: &WorkspaceId) {
        let mut slots = self.write();
        let mark = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        slots.insert(workspace.clone(), Slot { dropped: mark, ..Slot::default() });
    }

    /// Forgets every workspace's credentials.
    pub fn invalidate_all(&self) {
        let mut slots = self.write();
        let mark = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        slots.clear();
        // Loads under way must not be kept, whether their workspace had a
        // slot or not.
        self.floor.store(mark, Ordering::SeqCst);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<WorkspaceId, Slot>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<WorkspaceId, Slot>> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// `known` with each credential read since applied: replaced, added, or
/// (read as gone) removed. Kept in id order, as the store lists them.
fn patched(
    known: &[Arc<StoredCredential>],
    read: Vec<(CredentialId, Option<StoredCredential>)>,
) -> Vec<Arc<StoredCredential>> {
    let mut list = known.to_vec();
    for (id, stored) in read {
        let at = list.binary_search_by(|c| c.credential.name.credential.cmp(&id));
        match (at, stored) {
            (Ok(at), Some(stored)) => list[at] = Arc::new(stored),
            (Err(at), Some(stored)) => list.insert(at, Arc::new(stored)),
            (Ok(at), None) => {
                list.remove(at);
            }
            (Err(_), None) => {}
        }
    }
    list
}
