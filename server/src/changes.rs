//! Change notifications: services publish what they changed, caches
//! subscribe and drop what they derived from it. With replicas on
//! PostgreSQL, the changes other replicas commit arrive here too (see
//! `store::postgres::changes`).

use std::sync::{Arc, RwLock};

use crate::domain::{AccessTokenId, CredentialName, WorkspaceId};

/// What changed.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A credential was created, updated or deleted.
    Credential(&'a CredentialName),
    /// A workspace (and possibly everything in it) was created or deleted.
    Workspace(&'a WorkspaceId),
    /// An access token was revoked.
    Token(&'a AccessTokenId),
    /// Another replica stored a shared lease (waiters look again).
    LeaseStored,
    /// Anything may have changed (a replica lost its view of the others'
    /// changes for a while): drop every derived cache.
    Everything,
}

type Listener = Arc<dyn Fn(Change<'_>) + Send + Sync>;

/// A list of listeners, cheap to clone and share.
#[derive(Clone, Default)]
pub struct ChangeFeed(Arc<RwLock<Vec<Listener>>>);

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeFeed")
    }
}

impl ChangeFeed {
    /// Adds a listener, called after every committed change.
    pub fn subscribe(&self, listener: impl Fn(Change<'_>) + Send + Sync + 'static) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).push(Arc::new(listener));
    }

    /// Tells every listener.
    pub fn publish(&self, change: Change<'_>) {
        for listener in self.0.read().unwrap_or_else(|p| p.into_inner()).iter() {
            listener(change);
        }
    }
}
