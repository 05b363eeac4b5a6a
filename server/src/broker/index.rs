//! The in-memory credential index: each workspace's credentials (metadata
//! and sealed secrets), loaded from the store on first use and dropped when a
//! credential or the workspace changes. A cache hit on the lease path costs
//! no database read.
//!
//! A generation counter closes the race between a load and a concurrent
//! change: a load that started before an invalidation is not kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::domain::WorkspaceId;
use crate::domain::credential::StoredCredential;
use crate::error::Error;
use crate::store::Store;

/// A workspace's credentials.
pub type WorkspaceCredentials = Arc<Vec<Arc<StoredCredential>>>;

/// Credentials by workspace.
#[derive(Debug)]
pub struct CredentialIndex {
    store: Store,
    workspaces: RwLock<HashMap<WorkspaceId, WorkspaceCredentials>>,
    generation: AtomicU64,
}

impl CredentialIndex {
    /// An empty index over `store`.
    pub fn new(store: Store) -> Self {
        Self { store, workspaces: RwLock::default(), generation: AtomicU64::new(0) }
    }

    /// The credentials of `workspace`; NOT_FOUND if it does not exist.
    pub async fn credentials(&self, workspace: &WorkspaceId) -> Result<WorkspaceCredentials, Error> {
        if let Some(found) = self.workspaces.read().unwrap_or_else(|p| p.into_inner()).get(workspace) {
            return Ok(Arc::clone(found));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let loaded =
            self.store.workspace_credentials(workspace).await?.ok_or_else(|| Error::not_found(workspace.name()))?;
        let loaded: WorkspaceCredentials = Arc::new(loaded.into_iter().map(Arc::new).collect());
        let mut map = self.workspaces.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) == generation {
            map.insert(workspace.clone(), Arc::clone(&loaded));
        }
        Ok(loaded)
    }

    /// Forgets a workspace's credentials (they are reloaded on next use).
    pub fn invalidate(&self, workspace: &WorkspaceId) {
        let mut map = self.workspaces.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.remove(workspace);
    }

    /// Forgets every workspace's credentials.
    pub fn invalidate_all(&self) {
        let mut map = self.workspaces.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.clear();
    }
}
