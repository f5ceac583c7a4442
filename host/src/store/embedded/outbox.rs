//! The webhook outbox: the `outbox` table and [`Outbox`] over it.
//!
//! A row is one delivery, keyed by `(tenant, id)`. A lease is a writer
//! operation that picks the due rows in `(due_at, id)` order and moves their
//! `due_at` to when the lease runs out, so a leased row is not due again
//! until then and the single writer hands each lease to one caller. Stats
//! are read on the read connections, in one statement (one snapshot).

use async_trait::async_trait;
use rusqlite::{Connection, Row, params};

use super::{EmbeddedStore, sql_ms};
use crate::session::Millis;
use crate::store::{Delivery, Outbox, OutboxStats, StoreError, StoreResult};

/// A count or limit as SQLite takes it, clamped to `i64::MAX`.
fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored time or count, which is never negative; one that is means the
/// row is damaged.
fn stored_u64(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("outbox {what} {value}")))
}

/// The columns [`delivery`] reads, in its order.
const COLUMNS: &str = "id, message_id, url, body, created_at, due_at, attempts, last_error";

/// A delivery's row as selected with [`COLUMNS`], before its numbers are
/// checked.
struct Stored {
    id: String,
    message_id: String,
    url: String,
    body: String,
    created_at: i64,
    due_at: i64,
    attempts: i64,
    last_error: Option<String>,
}

/// Reads a row selected with [`COLUMNS`].
fn stored(row: &Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        id: row.get(0)?,
        message_id: row.get(1)?,
        url: row.get(2)?,
        body: row.get(3)?,
        created_at: row.get(4)?,
        due_at: row.get(5)?,
        attempts: row.get(6)?,
        last_error: row.get(7)?,
    })
}

/// The delivery a row holds; a time or count out of range is
/// [`StoreError::Corrupt`].
fn delivery(row: Stored) -> StoreResult<Delivery> {
    let attempts = u32::try_from(row.attempts).map_err(|_| {
        StoreError::Corrupt(format!(
            "outbox delivery {}: attempts {}",
            row.id, row.attempts
        ))
    })?;
    Ok(Delivery {
        created_at: stored_u64(row.created_at, "created_at")?,
        due_at: stored_u64(row.due_at, "due_at")?,
        attempts,
        id: row.id,
        message_id: row.message_id,
        url: row.url,
        body: row.body,
        last_error: row.last_error,
    })
}

/// Inserts the deliveries whose id the tenant's outbox does not hold yet;
/// how many it inserted.
fn push(conn: &Connection, tenant: &str, deliveries: &[Delivery]) -> StoreResult<u64> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO outbox
         (tenant, id, message_id, url, body, created_at, due_at, attempts, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut queued = 0;
    for d in deliveries {
        queued += insert.execute(params![
            tenant,
            d.id,
            d.message_id,
            d.url,
            d.body,
            sql_ms(d.created_at),
            sql_ms(d.due_at),
            d.attempts,
            d.last_error,
        ])? as u64;
    }
    Ok(queued)
}

/// Leases up to `max` of the tenant's deliveries due at `now`: each is due
/// again at `now + lease_ms` and counts one more attempt. Returns them as
/// they are after the lease, earliest (previously) due first. A row that
/// cannot be read as a delivery is deleted (and logged), so that it never
/// holds up the tenant's other deliveries.
fn lease(
    conn: &Connection,
    tenant: &str,
    max: usize,
    lease_ms: Millis,
    now: Millis,
) -> StoreResult<Vec<Delivery>> {
    let ids = conn
        .prepare_cached(
            "SELECT id FROM outbox WHERE tenant = ?1 AND due_at <= ?2
             ORDER BY due_at, id LIMIT ?3",
        )?
        .query_map(params![tenant, sql_ms(now), sql_count(max)], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let until = sql_ms(now.saturating_add(lease_ms));
    // Attempts stop at u32::MAX rather than grow past what Delivery holds.
    let mut mark = conn.prepare_cached(&format!(
        "UPDATE outbox SET due_at = ?3, attempts = MIN(attempts + 1, {})
         WHERE tenant = ?1 AND id = ?2 RETURNING {COLUMNS}",
        u32::MAX
    ))?;
    let mut leased = Vec::with_capacity(ids.len());
    for id in ids {
        let read = mark
            .query_row(params![tenant, id, until], stored)
            .map_err(StoreError::from)
            .and_then(delivery);
        match read {
            Ok(d) => leased.push(d),
            // A row no sender could use must not hold up the others.
            Err(e) => {
                tracing::warn!(tenant, id = %id,
                    "dropping an outbox delivery that cannot be read: {e}");
                remove(conn, tenant, std::slice::from_ref(&id))?;
            }
        }
    }
    Ok(leased)
}

/// Deletes the tenant's deliveries `ids`; how many there were.
fn remove(conn: &Connection, tenant: &str, ids: &[String]) -> StoreResult<u64> {
    let mut delete = conn.prepare_cached("DELETE FROM outbox WHERE tenant = ?1 AND id = ?2")?;
    let mut removed = 0;
    for id in ids {
        removed += delete.execute(params![tenant, id])? as u64;
    }
    Ok(removed)
}

/// Makes the delivery `id` due at `due_at` with `error` as its last error;
/// whether the outbox held it.
fn retry(
    conn: &Connection,
    tenant: &str,
    id: &str,
    due_at: Millis,
    error: &str,
) -> StoreResult<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE outbox SET due_at = ?3, last_error = ?4 WHERE tenant = ?1 AND id = ?2",
        )?
        .execute(params![tenant, id, sql_ms(due_at), error])?;
    Ok(changed > 0)
}

/// The tenant's outbox counts, read in one statement so they agree.
fn stats(conn: &Connection, tenant: &str, now: Millis) -> StoreResult<OutboxStats> {
    let (held, due, oldest): (i64, i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE tenant = ?1),
                    (SELECT COUNT(*) FROM outbox WHERE tenant = ?1 AND due_at <= ?2),
                    (SELECT MIN(created_at) FROM outbox WHERE tenant = ?1)",
        )?
        .query_row(params![tenant, sql_ms(now)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(OutboxStats {
        held: stored_u64(held, "count")?,
        due: stored_u64(due, "count")?,
        oldest_created_at: oldest.map(|at| stored_u64(at, "created_at")).transpose()?,
    })
}

/// Up to `max` of the tenant's deliveries after the id `cursor`, in id
/// order, and the last one's id when the page is full.
fn page(
    conn: &Connection,
    tenant: &str,
    cursor: Option<&str>,
    max: usize,
) -> StoreResult<(Vec<Delivery>, Option<String>)> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))?
        .query_map(
            params![tenant, cursor.unwrap_or(""), sql_count(max)],
            stored,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let page = rows
        .into_iter()
        .map(delivery)
        .collect::<StoreResult<Vec<_>>>()?;
    let next = (max > 0 && page.len() == max)
        .then(|| page.last().map(|d| d.id.clone()))
        .flatten();
    Ok((page, next))
}

#[async_trait]
impl Outbox for EmbeddedStore {
    async fn outbox_push(&self, tenant: &str, deliveries: &[Delivery]) -> StoreResult<u64> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let (tenant, deliveries) = (tenant.to_string(), deliveries.to_vec());
        self.writer
            .write(move |c| push(c, &tenant, &deliveries))
            .await
    }

    async fn outbox_lease(
        &self,
        tenant: &str,
        max: usize,
        lease_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let tenant = tenant.to_string();
        self.writer
            .write(move |c| lease(c, &tenant, max, lease_ms, now))
            .await
    }

    async fn outbox_remove(&self, tenant: &str, ids: &[String]) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (tenant, ids) = (tenant.to_string(), ids.to_vec());
        self.writer.write(move |c| remove(c, &tenant, &ids)).await
    }

    async fn outbox_retry(
        &self,
        tenant: &str,
        id: &str,
        due_at: Millis,
        error: &str,
    ) -> StoreResult<bool> {
        let (tenant, id, error) = (tenant.to_string(), id.to_string(), error.to_string());
        self.writer
            .write(move |c| retry(c, &tenant, &id, due_at, &error))
            .await
    }

    async fn outbox_stats(&self, tenant: &str, now: Millis) -> StoreResult<OutboxStats> {
        let tenant = tenant.to_string();
        self.readers.read(move |c| stats(c, &tenant, now)).await
    }

    async fn outbox_page(
        &self,
        tenant: &str,
        cursor: Option<&str>,
        max: usize,
    ) -> StoreResult<(Vec<Delivery>, Option<String>)> {
        let (tenant, cursor) = (tenant.to_string(), cursor.map(str::to_string));
        self.readers
            .read(move |c| page(c, &tenant, cursor.as_deref(), max))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedConfig;

    fn open(dir: &std::path::Path) -> EmbeddedStore {
        EmbeddedStore::open(EmbeddedConfig::new(dir)).unwrap()
    }

    fn delivery(id: &str, created_at: Millis, due_at: Millis) -> Delivery {
        Delivery {
            id: id.to_string(),
            message_id: format!("msg-{id}"),
            url: "https://example.com/hook".to_string(),
            body: r#"{"type":"session.ended"}"#.to_string(),
            created_at,
            due_at,
            attempts: 0,
            last_error: None,
        }
    }

    /// Pushing twice queues once; a lease takes due deliveries in due
    /// order (ties by id), makes them due at the lease's end and counts
    /// the attempt; the leased ones are due again once it runs out.
    #[tokio::test]
    async fn push_lease_and_lease_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let batch = [
            delivery("c", 10, 30),
            delivery("b", 11, 20),
            delivery("a", 12, 20),
            delivery("later", 13, 1_000),
        ];
        assert_eq!(store.outbox_push("t", &batch).await.unwrap(), 4);
        assert_eq!(store.outbox_push("t", &batch[..2]).await.unwrap(), 0);
        assert!(
            store
                .outbox_lease("t", 0, 100, 50)
                .await
                .unwrap()
                .is_empty()
        );

        let leased = store.outbox_lease("t", 2, 100, 50).await.unwrap();
        let ids: Vec<&str> = leased.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(leased.iter().all(|d| d.due_at == 150 && d.attempts == 1));
        assert_eq!(
            leased[0],
            Delivery {
                due_at: 150,
                attempts: 1,
                ..batch[2].clone()
            }
        );

        let next = store.outbox_lease("t", 10, 100, 50).await.unwrap();
        assert_eq!(
            next.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        let again = store.outbox_lease("t", 10, 100, 150).await.unwrap();
        let ids: Vec<&str> = again.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(again.iter().all(|d| d.attempts == 2 && d.due_at == 250));
        // Another tenant sees none of it.
        assert!(
            store
                .outbox_lease("u", 10, 100, 5_000)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Retry moves a held delivery and records its error; remove counts
    /// only what it removed; stats follow.
    #[tokio::test]
    async fn retry_remove_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(
            store.outbox_stats("t", 0).await.unwrap(),
            OutboxStats::default()
        );
        let batch = [delivery("a", 7, 10), delivery("b", 5, 20)];
        store.outbox_push("t", &batch).await.unwrap();
        assert_eq!(
            store.outbox_stats("t", 15).await.unwrap(),
            OutboxStats {
                held: 2,
                due: 1,
                oldest_created_at: Some(5)
            }
        );
        assert!(store.outbox_retry("t", "a", 500, "503").await.unwrap());
        assert!(!store.outbox_retry("t", "gone", 500, "503").await.unwrap());
        assert!(!store.outbox_retry("u", "a", 500, "503").await.unwrap());
        let leased = store.outbox_lease("t", 10, 100, 500).await.unwrap();
        assert_eq!(leased[0].id, "b");
        assert_eq!(leased[1].id, "a");
        assert_eq!(leased[1].last_error.as_deref(), Some("503"));
        let ids = ["a".to_string(), "a".to_string(), "x".to_string()];
        assert_eq!(store.outbox_remove("u", &ids).await.unwrap(), 0);
        assert_eq!(store.outbox_remove("t", &ids).await.unwrap(), 1);
        assert_eq!(
            store.outbox_stats("t", 1_000).await.unwrap(),
            OutboxStats {
                held: 1,
                due: 1,
                oldest_created_at: Some(5)
            }
        );
    }

    /// Deliveries survive reopening the store.
    #[tokio::test]
    async fn deliveries_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let d = Delivery {
            last_error: Some("timeout".into()),
            attempts: 3,
            ..delivery("a", u64::MAX, 1)
        };
        {
            let store = open(dir.path());
            store
                .outbox_push("t", std::slice::from_ref(&d))
                .await
                .unwrap();
        }
        let store = open(dir.path());
        let leased = store.outbox_lease("t", 1, u64::MAX, 1).await.unwrap();
        assert_eq!(
            leased,
            [Delivery {
                created_at: i64::MAX as u64,
                due_at: i64::MAX as u64,
                attempts: 4,
                ..d
            }]
        );
    }
}
