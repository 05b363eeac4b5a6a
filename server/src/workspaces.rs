//! Workspace management: the tenants everything else belongs to.

use std::sync::Arc;

use crate::audit::Actor;
use crate::changes::{Change, ChangeFeed};
use crate::domain::workspace::MAX_DISPLAY_NAME_CHARS;
use crate::domain::{Timestamp, Workspace, WorkspaceId, WorkspaceKind};
use crate::error::{Error, Violations};
use crate::paging::{Page, PageTokens, page_size};
use crate::store::{Store, WorkspaceDeletion};

/// The workspace service.
#[derive(Clone)]
pub struct Workspaces {
    store: Store,
    pages: Arc<PageTokens>,
    changes: ChangeFeed,
}

impl std::fmt::Debug for Workspaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspaces").finish_non_exhaustive()
    }
}

impl Workspaces {
    /// The service over `store`, announcing deletions on `changes`.
    pub fn new(store: Store, pages: Arc<PageTokens>, changes: ChangeFeed) -> Self {
        Self { store, pages, changes }
    }

    /// Creates a workspace.
    pub async fn create(&self, actor: &Actor, id: &str, kind: i32, display_name: String) -> Result<Workspace, Error> {
        let mut violations = Violations::default();
        let id = violations.check("workspace_id", WorkspaceId::parse(id));
        let kind = WorkspaceKind::from_code(kind);
        if kind.is_none() {
            violations.add("workspace.kind", "is required: ORGANIZATION or PERSONAL");
        }
        if display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            violations.add("workspace.display_name", format!("is longer than {MAX_DISPLAY_NAME_CHARS} characters"));
        }
        if display_name.chars().any(char::is_control) {
            violations.add("workspace.display_name", "must not contain control characters");
        }
        violations.finish()?;
        let (Some(id), Some(kind)) = (id, kind) else { return Err(Error::internal("validated fields missing")) };
        let workspace = Workspace { id, kind, display_name, create_time: Timestamp::now() };
        let event = actor.event("CreateWorkspace", workspace.id.as_str(), &workspace.id.name(), 0);
        self.store.create_workspace(&workspace, &[event]).await?;
        Ok(workspace)
    }

    /// One workspace.
    pub async fn get(&self, id: WorkspaceId) -> Result<Workspace, Error> {
        self.store.workspace(&id).await?.ok_or_else(|| Error::not_found(id.name()))
    }

    /// A page of workspaces, ordered by id.
    pub async fn list(&self, requested_page_size: i32, page_token: &str) -> Result<Page<Workspace>, Error> {
        let size = page_size(requested_page_size)?;
        let query = "workspaces|";
        let after = self.pages.decode(query, page_token)?;
        let fetched = self.store.workspaces(after.as_deref(), size + 1).await?;
        Ok(Page::from_fetched(fetched, size, &self.pages, query, |w| w.id.to_string()))
    }

    /// Deletes a workspace; with `force`, everything in it too.
    pub async fn delete(&self, actor: &Actor, id: WorkspaceId, force: bool) -> Result<(), Error> {
        let event = actor.event("DeleteWorkspace", id.as_str(), &id.name(), 0);
        match self.store.delete_workspace(&id, force, &[event]).await? {
            WorkspaceDeletion::Deleted => {}
            WorkspaceDeletion::Missing => return Err(Error::not_found(id.name())),
            WorkspaceDeletion::NotEmpty { credentials, tokens } => {
                return Err(Error::FailedPrecondition {
                    reason: pullpass::reason::WORKSPACE_NOT_EMPTY,
                    message: format!(
                        "{} still holds {credentials} credential(s) and {tokens} access token(s); delete them first or set `force`",
                        id.name()
                    ),
                });
            }
        }
        self.changes.publish(Change::Workspace(&id));
        Ok(())
    }
}
