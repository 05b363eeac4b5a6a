//! Root tokens: not bound to a workspace, minted only offline (`pullpassd
//! tokens create-root`, or `--dev` on first start), optionally expiring,
//! and revocable offline (`pullpassd tokens revoke-root`) or by a ROOT
//! caller (`RevokeAccessToken` on `rootTokens/{id}`), so a leaked root
//! token is not permanent control.
//!
//! A revocation is audited as `RevokeAccessToken` on `rootTokens/{id}`,
//! which is how other replicas (and a running server, for an offline
//! revocation) learn of it. Over the API a revocation that would leave no
//! usable root token is refused: only an offline command can mint the next
//! one.

use super::TokenString;
use super::token::new_token_id;
use crate::audit::Actor;
use crate::domain::{AccessTokenId, AccessTokenRecord, Role, Timestamp};
use crate::error::Error;
use crate::store::{RootRevocation, Store};

/// Mints a root token that never expires and stores its hash, with an audit
/// event. The returned string must be shown once and never stored.
pub async fn create_root_token(
    store: &Store,
    actor: &Actor,
    description: &str,
) -> Result<(AccessTokenRecord, TokenString), Error> {
    mint(store, actor, description, None).await
}

/// Mints a root token, expiring at `expire_time` when given.
pub async fn mint(
    store: &Store,
    actor: &Actor,
    description: &str,
    expire_time: Option<Timestamp>,
) -> Result<(AccessTokenRecord, TokenString), Error> {
    if expire_time.is_some_and(|t| t <= Timestamp::now()) {
        return Err(Error::invalid("ttl", "must be in the future"));
    }
    let token = TokenString::generate()?;
    let record = AccessTokenRecord {
        id: new_token_id()?,
        workspace: None,
        role: Role::Root,
        projects: Vec::new(),
        token_hash: token.hash(),
        description: description.to_owned(),
        create_time: Timestamp::now(),
        expire_time,
        revoke_time: None,
        last_used_time: None,
    };
    let event = actor.event("CreateRootToken", "", &record.resource_name(), 0);
    store.insert_token(&record, &[event]).await?;
    Ok((record, token))
}

/// Does the database hold any root token?
pub async fn has_root_token(store: &Store) -> Result<bool, Error> {
    store.any_root_token().await
}

/// Is this root token usable at `now` (neither revoked nor expired)?
pub fn usable(record: &AccessTokenRecord, now: Timestamp) -> bool {
    record.revoke_time.is_none() && record.expire_time.is_none_or(|expiry| expiry > now)
}

/// Revokes root token `id`, audited. With `keep_one`, refused
/// (FAILED_PRECONDITION) when no other usable root token would be left.
/// An unknown id is NOT_FOUND; an already revoked token is returned as it
/// is, with `false`.
pub async fn revoke(
    store: &Store,
    actor: &Actor,
    id: &AccessTokenId,
    keep_one: bool,
) -> Result<(AccessTokenRecord, bool), Error> {
    let resource = format!("rootTokens/{id}");
    let event = actor.event("RevokeAccessToken", "", &resource, 0);
    match store.revoke_root_token(id, Timestamp::now(), keep_one, &[event]).await? {
        RootRevocation::Revoked(record) => Ok((record, true)),
        RootRevocation::AlreadyRevoked(record) => Ok((record, false)),
        RootRevocation::Missing => Err(Error::not_found(resource)),
        RootRevocation::LastUsable => Err(Error::FailedPrecondition {
            reason: pullpass::reason::LAST_ROOT_TOKEN,
            message: format!(
                "{resource} is the last usable root token (no other is unrevoked and unexpired): revoking it would leave nobody able to manage workspaces. \
                 Mint another first with `pullpassd tokens create-root` (offline), or revoke it offline with `pullpassd tokens revoke-root`"
            ),
        }),
    }
}
