//! Token revocations that other processes commit to this SQLite file,
//! applied here within a second.
//!
//! One pullpassd serves an SQLite database and applies its own changes at
//! once, but offline commands write to the same file, and one of them must
//! reach the running server: `pullpassd tokens revoke-root` shuts a
//! (possibly leaked) root token out. Every second the follower reads the
//! audit head; when it moved, the successful `RevokeAccessToken` events
//! after its cursor are published as [`Change::Token`], and the
//! authenticator drops that token's record and reads it again. The
//! server's own revocations come back too, which costs one cache miss.

use std::time::Duration;

use crate::changes::{Change, ChangeFeed};
use crate::domain::AccessTokenId;
use crate::error::Error;
use crate::store::{AuditFilter, Store};

/// How often the audit head is read.
const POLL: Duration = Duration::from_secs(1);
/// Events read per query.
const PAGE: usize = 500;

/// Starts following from the current head (read before this returns, so a
/// revocation committed after it is never missed).
pub async fn follow(store: Store, feed: ChangeFeed) -> tokio::task::JoinHandle<()> {
    let start = match head(&store).await {
        Ok(seq) => Some(seq),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the audit head to follow revocations; retrying every second");
            None
        }
    };
    tokio::spawn(async move {
        let mut cursor = start;
        let mut every = tokio::time::interval(POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = poll(&store, &feed, &mut cursor).await {
                tracing::warn!(error = %e, "cannot read revocations made by other processes; retrying");
            }
        }
    })
}

async fn head(store: &Store) -> Result<i64, Error> {
    Ok(store.audit_head().await?.map_or(0, |(seq, _)| seq))
}

/// Publishes the revocations committed after `cursor` and moves it on.
async fn poll(store: &Store, feed: &ChangeFeed, cursor: &mut Option<i64>) -> Result<(), Error> {
    // The head first: every event up to it has committed.
    let head = head(store).await?;
    let Some(mut after) = *cursor else {
        *cursor = Some(head);
        return Ok(());
    };
    if head <= after {
        return Ok(());
    }
    let revocations = AuditFilter { action: Some("RevokeAccessToken".into()), ..AuditFilter::default() };
    loop {
        let page = store.audit_events(&revocations, after, PAGE).await?;
        for record in &page {
            if record.event.status_code == 0
                && let Some(id) = AccessTokenId::from_resource_name(&record.event.resource)
            {
                feed.publish(Change::Token(&id));
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.seq,
            Some(last) => {
                after = last.seq;
                break;
            }
            None => break,
        }
    }
    *cursor = Some(head.max(after));
    Ok(())
}
