//! Access-token management: minting (the string is returned once), reading,
//! listing and revoking the tokens of a workspace, and revoking root tokens.

use std::sync::Arc;

use super::authn::Authenticator;
use super::token::{TokenString, new_token_id};
use crate::audit::Actor;
use crate::domain::{AccessTokenId, AccessTokenRecord, ProjectName, Role, Timestamp, WorkspaceId};
use crate::error::{Error, Violations};
use crate::paging::{Page, PageTokens, page_size};
use crate::store::Store;

/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// What a new token should be.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// `pullpass.v1.Role` number.
    pub role: i32,
    /// Projects (LAUNCHER only).
    pub projects: Vec<String>,
    /// Expiry, if any.
    pub expire_time: Option<Timestamp>,
    /// Free text.
    pub description: String,
}

/// The access-token service.
#[derive(Clone)]
pub struct AccessTokens {
    store: Store,
    authn: Authenticator,
    pages: Arc<PageTokens>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessTokens")
    }
}

impl AccessTokens {
    /// The service; revocations refresh `authn`'s cache at once.
    pub fn new(store: Store, authn: Authenticator, pages: Arc<PageTokens>) -> Self {
        Self { store, authn, pages }
    }

    /// Checks a new token's fields; returns the role.
    pub fn validate(new: &NewToken) -> Result<(Role, Vec<ProjectName>), Error> {
        let mut violations = Violations::default();
        let role = Role::from_code(new.role).filter(|r| *r != Role::Root);
        if role.is_none() {
            violations.add(
                "access_token.role",
                "must be ADMIN, LAUNCHER or VIEWER (root tokens come from `pullpassd tokens create-root`)",
            );
        }
        let mut projects = Vec::new();
        for project in &new.projects {
            if let Some(p) = violations.check("access_token.projects", ProjectName::parse(project)) {
                projects.push(p);
            }
        }
        projects.sort();
        projects.dedup();
        if !projects.is_empty() && role.is_some_and(|r| r != Role::Launcher) {
            violations.add("access_token.projects", "only LAUNCHER tokens can be limited to projects");
        }
        if new.expire_time.is_some_and(|t| t <= Timestamp::now()) {
            violations.add("access_token.expire_time", "must be in the future");
        }
        if new.description.chars().count() > MAX_DESCRIPTION_CHARS {
            violations.add("access_token.description", format!("is longer than {MAX_DESCRIPTION_CHARS} characters"));
        }
        violations.finish()?;
        Ok((role.unwrap_or(Role::Viewer), projects))
    }

    /// Mints a token; the string is in the result and nowhere else.
    pub async fn create(
        &self,
        actor: &Actor,
        workspace: WorkspaceId,
        new: NewToken,
    ) -> Result<(AccessTokenRecord, TokenString), Error> {
        let (role, projects) = Self::validate(&new)?;
        let token = TokenString::generate()?;
        let record = AccessTokenRecord {
            id: new_token_id()?,
            workspace: Some(workspace),
            role,
            projects,
            token_hash: token.hash(),
            description: new.description,
            create_time: Timestamp::now(),
            expire_time: new.expire_time,
            revoke_time: None,
            last_used_time: None,
        };
        let event = actor.event(
            "CreateAccessToken",
            record.workspace.as_ref().map_or("", |w| w.as_str()),
            &record.resource_name(),
            0,
        );
        self.store.insert_token(&record, &[event]).await?;
        Ok((record, token))
    }

    /// One token of a workspace.
    pub async fn get(&self, workspace: WorkspaceId, id: AccessTokenId) -> Result<AccessTokenRecord, Error> {
        self.store
            .token(&workspace, &id)
            .await?
            .ok_or_else(|| Error::not_found(format!("{}/accessTokens/{id}", workspace.name())))
    }

    /// A page of a workspace's tokens.
    pub async fn list(
        &self,
        workspace: WorkspaceId,
        requested: i32,
        page_token: &str,
    ) -> Result<Page<AccessTokenRecord>, Error> {
        let size = page_size(requested)?;
        let query = format!("accessTokens|{}", workspace.name());
        let after = self.pages.decode(&query, page_token)?;
        let fetched = self
            .store
            .tokens(&workspace, after.as_deref(), size + 1)
            .await?
            .ok_or_else(|| Error::not_found(workspace.name()))?;
        Ok(Page::from_fetched(fetched, size, &self.pages, &query, |t| t.id.to_string()))
    }

    /// Drops the authentication cache (after a workspace and its tokens were
    /// deleted).
    pub fn forget_cached(&self) {
        self.authn.clear();
    }

    /// Revokes a token; it is refused from the next call on.
    pub async fn revoke(
        &self,
        actor: &Actor,
        workspace: WorkspaceId,
        id: AccessTokenId,
    ) -> Result<AccessTokenRecord, Error> {
        let resource = format!("{}/accessTokens/{id}", workspace.name());
        let event = actor.event("RevokeAccessToken", workspace.as_str(), &resource, 0);
        let record = self
            .store
            .revoke_token(&workspace, &id, Timestamp::now(), &[event])
            .await?
            .ok_or_else(|| Error::not_found(resource))?;
        self.authn.refresh(&record);
        Ok(record)
    }

    /// Revokes a root token (a ROOT caller's request); refused when no
    /// other usable root token would be left. It is refused from the next
    /// call on; revoking it again returns it as it is.
    pub async fn revoke_root(&self, actor: &Actor, id: AccessTokenId) -> Result<AccessTokenRecord, Error> {
        let (record, _) = super::root_tokens::revoke(&self.store, actor, &id, true).await?;
        self.authn.refresh(&record);
        Ok(record)
    }
}
