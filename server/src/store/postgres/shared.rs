//! What replicas share through PostgreSQL ([`Shared`]): sealed leases under
//! their cache key, claim rows electing one fetcher per key, and
//! registries' `Retry-After` blocks.
//!
//! A claim is `INSERT … ON CONFLICT (key) DO UPDATE … WHERE expired`: of
//! replicas racing for a key, exactly one row write succeeds, and a claim
//! whose owner died is taken over once its TTL (on the database's clock)
//! has passed. Storing a lease deletes the claim and notifies
//! [`LEASES_CHANNEL`], in the same transaction; so a claim won right after
//! that commit is followed by a second look, which then finds the lease.

use std::time::Duration;

use async_trait::async_trait;

use super::{IDLE_IN_TRANSACTION, PgStore, pg};
use crate::domain::Timestamp;
use crate::error::Error;
use crate::store::{ChangesAfter, LeaseSlot, Shared, SharedLease};

/// The channel a stored lease is announced on (payload: nothing secret,
/// the replicas only need waking).
pub const LEASES_CHANNEL: &str = "pullpass_leases";
/// The payload prefix of a dropped lease on [`LEASES_CHANNEL`] (then the
/// dropping replica and the key, which names a credential by uid and a
/// scope: nothing secret).
pub const DROPPED: &str = "drop ";
/// The change cursor.
const HEAD: &str = "SELECT seq FROM audit_head WHERE id = 1";
/// The oldest event kept (pruning deletes from the start of the chain).
const OLDEST: &str = "SELECT min(seq) FROM audit_events";
/// Most events a catch-up replays; past it, everything derived is dropped
/// instead (a replica cut off for hours on a busy database).
const MAX_REPLAY: i64 = 100_000;
/// The changing events between two cursors.
const CHANGES: &str = "SELECT action, resource FROM audit_events \
                       WHERE seq > $1 AND seq <= $2 AND status_code = 0 AND action = ANY($3) ORDER BY seq";

#[async_trait]
impl Shared for PgStore {
    async fn drop_lease(&self, key: &str, sealed: &[u8], owner: &str) -> Result<bool, Error> {
        self.retrying(|mut client| {
            let (key, sealed, owner) = (key.to_owned(), sealed.to_vec(), owner.to_owned());
            async move {
                let tx = client.transaction().await?;
                tx.batch_execute(IDLE_IN_TRANSACTION).await?;
                let deleted =
                    tx.execute("DELETE FROM shared_leases WHERE key = $1 AND sealed = $2", &[&key, &sealed]).await?;
                if deleted > 0 {
                    let payload = format!("{DROPPED}{owner} {key}");
                    tx.execute("SELECT pg_notify($1, $2)", &[&LEASES_CHANNEL, &payload]).await?;
                }
                tx.commit().await?;
                Ok(deleted > 0)
            }
        })
        .await
    }

    async fn changes_after(&self, cursor: Option<i64>) -> Result<ChangesAfter, Error> {
        self.bounded(async {
            let client = self.client().await?;
            // The head first: every event up to it has committed (`seq` is
            // gapless in commit order), so nothing before it is missed.
            let head: i64 = client.query_one(HEAD, &[]).await.map_err(pg)?.get(0);
            let mut read = ChangesAfter { head, ..ChangesAfter::default() };
            let Some(cursor) = cursor.filter(|cursor| head > *cursor) else { return Ok(read) };
            // A gap too long to replay in one read, or pruned meanwhile (the
            // oldest event kept is past the cursor), is not listed.
            let oldest: Option<i64> = client.query_one(OLDEST, &[]).await.map_err(pg)?.get(0);
            if head - cursor > MAX_REPLAY || oldest.is_none_or(|oldest| oldest > cursor + 1) {
                read.gap = true;
                return Ok(read);
            }
            let changing = super::changes::CHANGING;
            let statement = client.prepare_cached(CHANGES).await.map_err(pg)?;
            let rows = client.query(&statement, &[&cursor, &head, &changing]).await.map_err(pg)?;
            read.changes = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
            Ok(read)
        })
        .await
    }

    async fn lease_or_claim(
        &self,
        key: &str,
        min_life: Duration,
        owner: &str,
        claim_ttl: Duration,
    ) -> Result<LeaseSlot, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let least_expiry = Timestamp::now().plus(min_life).as_micros();
            let lease = client
                .prepare_cached("SELECT sealed, expire_time FROM shared_leases WHERE key = $1 AND expire_time >= $2")
                .await
                .map_err(pg)?;
            if let Some(row) = client.query_opt(&lease, &[&key, &least_expiry]).await.map_err(pg)? {
                return Ok(LeaseSlot::Stored(SharedLease {
                    sealed: row.get(0),
                    expire_time: Timestamp::from_micros(row.get(1)),
                }));
            }
            let claim = client
                .prepare_cached(
                    "INSERT INTO lease_claims (key, owner, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3)) \
                     ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                     WHERE lease_claims.expires_at < now() OR lease_claims.owner = excluded.owner \
                     RETURNING owner",
                )
                .await
                .map_err(pg)?;
            if client.query_opt(&claim, &[&key, &owner, &claim_ttl.as_secs_f64()]).await.map_err(pg)?.is_none() {
                return Ok(LeaseSlot::ClaimedElsewhere);
            }
            // The claim may be free because its holder just stored the lease
            // (both in one commit, after the look above): look again.
            if let Some(row) = client.query_opt(&lease, &[&key, &least_expiry]).await.map_err(pg)? {
                client
                    .execute("DELETE FROM lease_claims WHERE key = $1 AND owner = $2", &[&key, &owner])
                    .await
                    .map_err(pg)?;
                return Ok(LeaseSlot::Stored(SharedLease {
                    sealed: row.get(0),
                    expire_time: Timestamp::from_micros(row.get(1)),
                }));
            }
            Ok(LeaseSlot::Claimed)
        })
        .await
    }

    async fn store_lease(&self, key: &str, lease: &SharedLease, owner: &str) -> Result<(), Error> {
        self.retrying(|mut client| {
            let (key, lease, owner) = (key.to_owned(), lease.clone(), owner.to_owned());
            async move {
                let tx = client.transaction().await?;
                tx.batch_execute(IDLE_IN_TRANSACTION).await?;
                let now = Timestamp::now().as_micros();
                tx.execute(
                    "INSERT INTO shared_leases (key, sealed, expire_time) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET sealed = excluded.sealed, expire_time = excluded.expire_time",
                    &[&key, &lease.sealed, &lease.expire_time.as_micros()],
                )
                .await?;
                tx.execute("DELETE FROM lease_claims WHERE key = $1 AND owner = $2", &[&key, &owner]).await?;
                // Expired leases go as new ones come (indexed by expiry).
                tx.execute(
                    "DELETE FROM shared_leases WHERE key IN \
                     (SELECT key FROM shared_leases WHERE expire_time < $1 LIMIT 100)",
                    &[&now],
                )
                .await?;
                tx.execute("SELECT pg_notify($1, '')", &[&LEASES_CHANNEL]).await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await
    }

    async fn release_claim(&self, key: &str, owner: &str) -> Result<(), Error> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute("DELETE FROM lease_claims WHERE key = $1 AND owner = $2", &[&key, &owner])
                .await
                .map_err(pg)?;
            Ok(())
        })
        .await
    }

    async fn blocked_until(&self, key: &str) -> Result<Option<Timestamp>, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT until FROM upstream_blocks WHERE key = $1 AND until > $2")
                .await
                .map_err(pg)?;
            let row = client.query_opt(&statement, &[&key, &Timestamp::now().as_micros()]).await.map_err(pg)?;
            Ok(row.map(|r| Timestamp::from_micros(r.get(0))))
        })
        .await
    }

    async fn block(&self, key: &str, until: Timestamp) -> Result<(), Error> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO upstream_blocks (key, until) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET until = greatest(upstream_blocks.until, excluded.until)",
                    &[&key, &until.as_micros()],
                )
                .await
                .map_err(pg)?;
            client
                .execute("DELETE FROM upstream_blocks WHERE until < $1", &[&Timestamp::now().as_micros()])
                .await
                .map_err(pg)?;
            Ok(())
        })
        .await
    }
}
