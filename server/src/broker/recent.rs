//! The broker's memo of recent request shapes, in front of the lease cache.
//!
//! Launchers ask for the same few images over and over. For a request shape
//! (workspace, project, image as written, actions, accepted form) the memo
//! keeps what the last call worked out: the parsed image, the chosen
//! credential, the lease the cache served, and the lease's facts as text for
//! the response and the audit event. A repeated call whose lease still has
//! the life it asks for skips parsing the reference, choosing the
//! credential, building the cache key and formatting scopes.
//!
//! It never serves what the cache would not: every change that drops index
//! entries or cached leases (a credential or workspace changed, another
//! replica's changes) moves the memo to a new epoch, and an entry of an
//! older epoch is never served. A registry refusing one lease drops only
//! the entries holding that lease ([`Recent::forget_lease`]), so a caller
//! probing repositories its credential cannot read cannot flush every other
//! tenant's memo. An entry is kept only when nothing was dropped while it
//! was being worked out ([`Ticket`]). Bounded: past its capacity, it starts
//! over.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pullpass::reference::ImageRef;
use pullpass::scope::Action;

use crate::domain::credential::StoredCredential;
use crate::domain::{Accept, IssuedText, Lease, ProjectName, Timestamp, WorkspaceId};

/// A request shape, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// The workspace.
    pub workspace: &'a WorkspaceId,
    /// The caller's project.
    pub project: Option<&'a ProjectName>,
    /// The image as the caller wrote it.
    pub image: &'a str,
    /// The actions (empty means pull).
    pub actions: &'a [Action],
    /// The accepted form.
    pub accept: Accept,
}

impl Shape<'_> {
    fn actions_bits(&self) -> u8 {
        self.actions.iter().fold(0, |bits, action| {
            bits | match action {
                Action::Pull => 1,
                Action::Push => 2,
            }
        })
    }

    fn key(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.workspace.as_str().hash(&mut hasher);
        self.project.map(ProjectName::as_str).hash(&mut hasher);
        self.image.hash(&mut hasher);
        self.actions_bits().hash(&mut hasher);
        self.accept.hash(&mut hasher);
        hasher.finish()
    }
}

/// What a shape resolves to.
#[derive(Debug)]
pub struct Resolved {
    /// The parsed image.
    pub image: Arc<ImageRef>,
    /// The credential that serves it.
    pub stored: Arc<StoredCredential>,
    /// The lease the cache served.
    pub lease: Arc<Lease>,
    /// The lease's facts as text.
    pub text: Arc<IssuedText>,
    /// When the credential's use was last recorded.
    pub usage: super::usage::Slot,
}

/// A remembered shape and what it resolved to.
#[derive(Debug)]
pub struct Resolution {
    epoch: u64,
    workspace: WorkspaceId,
    project: Option<ProjectName>,
    written: String,
    actions: u8,
    accept: Accept,
    /// What it resolved to.
    pub resolved: Resolved,
}

impl Resolution {
    fn is(&self, shape: &Shape<'_>) -> bool {
        self.written == shape.image
            && &self.workspace == shape.workspace
            && self.project.as_ref() == shape.project
            && self.actions == shape.actions_bits()
            && self.accept == shape.accept
    }
}

/// The memo.
#[derive(Debug)]
pub struct Recent {
    entries: RwLock<HashMap<u64, Arc<Resolution>>>,
    epoch: AtomicU64,
    /// Leases dropped one by one so far.
    dropped: AtomicU64,
    capacity: usize,
}

/// Where the memo stood when a shape began to be worked out: take it
/// before reading anything the work depends on (the credential index
/// first of all), hand it to [`Recent::remember`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    dropped: u64,
}

impl Recent {
    /// A memo of at most `capacity` shapes.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::default(),
            epoch: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Where the memo stands: take it before working a shape out (before
    /// loading the credentials it is chosen from), and hand it to
    /// [`Recent::remember`].
    pub fn ticket(&self) -> Ticket {
        Ticket { epoch: self.epoch.load(Ordering::SeqCst), dropped: self.dropped.load(Ordering::SeqCst) }
    }

    /// What `shape` resolved to, if nothing changed since and its lease has
    /// at least `min_ttl` left.
    pub fn get(&self, shape: &Shape<'_>, min_ttl: Duration) -> Option<Arc<Resolution>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let found = entries.get(&shape.key())?;
        let fresh = found.epoch == self.epoch.load(Ordering::SeqCst)
            && found.is(shape)
            && found.resolved.lease.expire_time.saturating_since(Timestamp::now()) >= min_ttl;
        fresh.then(|| Arc::clone(found))
    }

    /// Keeps what `shape` resolved to, unless something was dropped since
    /// `ticket` (a change or a refused lease raced the work).
    pub fn remember(&self, shape: &Shape<'_>, ticket: Ticket, resolved: Resolved) {
        let epoch = ticket.epoch;
        let resolution = Arc::new(Resolution {
            epoch,
            workspace: shape.workspace.clone(),
            project: shape.project.cloned(),
            written: shape.image.to_owned(),
            actions: shape.actions_bits(),
            accept: shape.accept,
            resolved,
        });
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.ticket() != ticket {
            return;
        }
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(shape.key(), resolution);
    }

    /// Forgets the entries whose lease `dead` says is dead (a registry
    /// refused it); the others stay.
    pub fn forget_lease(&self, dead: impl Fn(&Resolved) -> bool) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.dropped.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, resolution| !dead(&resolution.resolved));
    }

    /// Starts a new epoch: nothing remembered so far is served again.
    pub fn forget_all(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Credential, CredentialId, CredentialName, CredentialUid, Grant, LeaseSecret, Provider};
    use crate::domain::{SealedSecret, Timestamp};
    use pullpass::registry::RegistryServer;
    use pullpass::scope::Scope;

    fn stored() -> Arc<StoredCredential> {
        Arc::new(StoredCredential {
            credential: Credential {
                name: CredentialName {
                    workspace: WorkspaceId::parse("acme").unwrap(),
                    credential: CredentialId::parse("ghcr").unwrap(),
                },
                uid: CredentialUid([0; 16]),
                provider: Provider::Generic,
                registry: RegistryServer::parse("ghcr.io").unwrap().server,
                username: "u".into(),
                secret_version: 1,
                settings: Default::default(),
                allowed_projects: vec![],
                allow_passthrough: false,
                token_realm_allowlist: vec![],
                ca_bundle_pem: String::new(),
                description: String::new(),
                create_time: Timestamp::default(),
                update_time: Timestamp::default(),
                last_used_time: None,
                expire_time: None,
                last_failure: None,
            },
            sealed: SealedSecret { kek_id: "k".into(), wrapped_dek: vec![], ciphertext: vec![] },
        })
    }

    fn lease(ttl: Duration) -> Arc<Lease> {
        let now = Timestamp::now();
        Arc::new(Lease {
            grant: Grant::Bearer { token: LeaseSecret::new("t".into()) },
            registry: "ghcr.io".into(),
            requested: Scope::request("acme/app", &[]),
            granted: None,
            issue_time: now,
            expire_time: now.plus(ttl),
            credential: stored().credential.name.clone(),
        })
    }

    fn remember(recent: &Recent, shape: &Shape<'_>, ticket: Ticket, ttl: Duration) {
        let image = Arc::new(ImageRef::parse(shape.image).unwrap());
        let lease = lease(ttl);
        let text = Arc::new(IssuedText::of(&image, &lease));
        recent.remember(shape, ticket, Resolved { image, stored: stored(), lease, text, usage: Default::default() });
    }

    #[test]
    fn a_shape_is_served_only_as_it_was_asked_while_nothing_changed_and_its_lease_lasts() {
        let recent = Recent::new(10);
        let workspace = WorkspaceId::parse("acme").unwrap();
        let project = ProjectName::parse("rnaseq").unwrap();
        let shape = Shape {
            workspace: &workspace,
            project: Some(&project),
            image: "ghcr.io/acme/app:1",
            actions: &[],
            accept: Accept::Any,
        };
        remember(&recent, &shape, recent.ticket(), Duration::from_secs(300));
        let hit = recent.get(&shape, Duration::from_secs(30)).expect("remembered");
        assert_eq!(hit.resolved.text.image, "ghcr.io/acme/app:1");
        assert!(recent.get(&shape, Duration::from_secs(600)).is_none(), "not enough life left");
        for other in [
            Shape { project: None, ..shape },
            Shape { image: "ghcr.io/acme/app:2", ..shape },
            Shape { actions: &[Action::Push], ..shape },
            Shape { accept: Accept::BasicOnly, ..shape },
        ] {
            assert!(recent.get(&other, Duration::ZERO).is_none(), "{other:?}");
        }
        recent.forget_all();
        assert!(recent.get(&shape, Duration::ZERO).is_none(), "a change ends the epoch");
    }

    #[test]
    fn what_was_worked_out_across_a_change_is_not_kept() {
        let recent = Recent::new(10);
        let workspace = WorkspaceId::parse("acme").unwrap();
        let shape = Shape {
            workspace: &workspace,
            project: None,
            image: "ghcr.io/acme/app:1",
            actions: &[],
            accept: Accept::Any,
        };
        let before = recent.ticket();
        recent.forget_all();
        remember(&recent, &shape, before, Duration::from_secs(300));
        assert!(recent.get(&shape, Duration::ZERO).is_none());
        let before = recent.ticket();
        recent.forget_lease(|_| false);
        remember(&recent, &shape, before, Duration::from_secs(300));
        assert!(recent.get(&shape, Duration::ZERO).is_none(), "a lease dropped meanwhile may be this one");
    }

    #[test]
    fn a_refused_lease_is_forgotten_alone() {
        let recent = Recent::new(10);
        let workspace = WorkspaceId::parse("acme").unwrap();
        let shape = |image| Shape { workspace: &workspace, project: None, image, actions: &[], accept: Accept::Any };
        remember(&recent, &shape("ghcr.io/acme/app:1"), recent.ticket(), Duration::from_secs(300));
        remember(&recent, &shape("ghcr.io/acme/other:1"), recent.ticket(), Duration::from_secs(300));
        recent.forget_lease(|resolved| resolved.image.repository() == "acme/app");
        assert!(recent.get(&shape("ghcr.io/acme/app:1"), Duration::ZERO).is_none());
        assert!(recent.get(&shape("ghcr.io/acme/other:1"), Duration::ZERO).is_some(), "the others stay");
    }
}
