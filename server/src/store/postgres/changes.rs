//! Other replicas' changes, applied here within a second.
//!
//! Every mutation appends an audit event in its transaction, and the audit
//! `seq` is gapless in commit order, so the audit trail is the change feed:
//! * the fast path: mutations `NOTIFY pullpass_changes` (delivered at
//!   commit); a listener connection publishes each into the local
//!   [`ChangeFeed`];
//! * the backstop: every second, the mutation events after the cursor (the
//!   `seq` last seen) are read and published too, so a lost notification
//!   costs at most a second;
//! * a listener that lost its connection publishes [`Change::Everything`]
//!   when it is back: what happened meanwhile is unknown, so every derived
//!   cache is dropped then (not before: while the database is out of reach,
//!   cached leases keep being served).
//!
//! Applying a change twice (notification and poll) only costs a cache miss.

use std::time::Duration;

use futures_util::StreamExt;

use super::{CHANGES_CHANNEL, PgConfig};
use crate::changes::{Change, ChangeFeed};
use crate::domain::audit::AuditEvent;
use crate::domain::{AccessTokenId, CredentialName, WorkspaceId};

/// Mutations whose success invalidates what replicas derived.
const CHANGING: &[&str] = &[
    "CreateCredential",
    "UpdateCredential",
    "DeleteCredential",
    "ImportDockerConfig",
    "DeleteWorkspace",
    "RevokeAccessToken",
];
/// How often the backstop polls.
const POLL: Duration = Duration::from_secs(1);

/// Does this event change what replicas cache?
pub fn is_change(event: &AuditEvent) -> bool {
    event.status_code == 0 && CHANGING.contains(&event.action.as_str())
}

/// The notification payload of an event: `action resource`.
pub fn payload(event: &AuditEvent) -> String {
    format!("{} {}", event.action, event.resource)
}

/// Publishes the change an `action` on `resource` stands for.
fn publish(feed: &ChangeFeed, action: &str, resource: &str) {
    match action {
        "DeleteWorkspace" => {
            if let Ok(workspace) = WorkspaceId::from_name(resource) {
                feed.publish(Change::Workspace(&workspace));
            }
        }
        "RevokeAccessToken" => {
            if let Some(id) = AccessTokenId::from_resource_name(resource) {
                feed.publish(Change::Token(&id));
            }
        }
        _ => {
            if let Ok(name) = CredentialName::parse(resource) {
                feed.publish(Change::Credential(&name));
            }
        }
    }
}

/// Follows the database's changes until the process ends, publishing them
/// into `feed`. Reconnects by itself (and then drops every cache).
pub fn follow(config: PgConfig, feed: ChangeFeed) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            if let Err(e) = follow_once(&config, &feed, &mut first).await {
                tracing::warn!(
                    error = %e,
                    "lost the database's change feed; serving from caches, which are dropped once it is back"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn follow_once(config: &PgConfig, feed: &ChangeFeed, first: &mut bool) -> Result<(), String> {
    let (client, mut notifications) = listen(config).await?;
    client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}; LISTEN {}", super::shared::LEASES_CHANNEL))
        .await
        .map_err(|e| e.to_string())?;
    let mut cursor: i64 =
        client.query_one("SELECT seq FROM audit_head WHERE id = 1", &[]).await.map_err(|e| e.to_string())?.get(0);
    if !*first {
        // Back after a gap: what happened meanwhile is unknown.
        feed.publish(Change::Everything);
    }
    *first = false;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            notification = notifications.recv() => match notification {
                Some(Ok((channel, payload))) => {
                    if channel == super::shared::LEASES_CHANNEL {
                        feed.publish(Change::LeaseStored);
                    } else if let Some((action, resource)) = payload.split_once(' ') {
                        publish(feed, action, resource);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Err("the listener connection closed".into()),
            },
            _ = poll.tick() => {
                // The head is read first: every event up to it has committed.
                let head: i64 = client
                    .query_one("SELECT seq FROM audit_head WHERE id = 1", &[])
                    .await
                    .map_err(|e| e.to_string())?
                    .get(0);
                if head > cursor {
                    let rows = client
                        .query(
                            "SELECT action, resource FROM audit_events \
                             WHERE seq > $1 AND seq <= $2 AND status_code = 0 AND action = ANY($3) ORDER BY seq",
                            &[&cursor, &head, &CHANGING],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    for row in &rows {
                        publish(feed, row.get(0), row.get(1));
                    }
                    cursor = head;
                }
            }
        }
    }
}

/// Notifications as `(channel, payload)`; an error or the end when the
/// connection is lost.
type Notifications = tokio::sync::mpsc::UnboundedReceiver<Result<(String, String), String>>;

/// A dedicated connection, driven by its own task (which must keep polling
/// it for the client's queries to complete), whose notifications come out
/// of a channel.
async fn listen(config: &PgConfig) -> Result<(tokio_postgres::Client, Notifications), String> {
    fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>) -> Notifications
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                let forwarded = match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        sender.send(Ok((n.channel().to_owned(), n.payload().to_owned())))
                    }
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let _ = sender.send(Err(e.to_string()));
                        return;
                    }
                };
                if forwarded.is_err() {
                    return;
                }
            }
        });
        receiver
    }
    match config.tls()? {
        Some(tls) => {
            let (client, connection) = config.connection().connect(tls).await.map_err(|e| e.to_string())?;
            Ok((client, drive(connection)))
        }
        None => {
            let (client, connection) =
                config.connection().connect(tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
            Ok((client, drive(connection)))
        }
    }
}
