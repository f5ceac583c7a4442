//! The durable end queue: the `ends` table and [`EndQueue`] over it.
//!
//! A job stays in the table from the step that ended its session until it is
//! acknowledged. A claim records its consumer and the wall-clock `now` it was
//! made at, so a job claimed by a process that then died is still there
//! after a restart and is handed out again, with the same id and end id,
//! once `reclaim_after_ms` has passed since that claim.

use async_trait::async_trait;
use rusqlite::{Connection, Row, params};

use super::sessions::{decode, encode};
use super::streams::{ENDS, Stream, StreamId};
use super::{EmbeddedStore, sql_ms};
use crate::session::{EndReason, Millis, SessionRecord};
use crate::store::{EndJob, EndQueue, EndQueueStats, StoreError, StoreResult};

/// Queues the end job of a session just taken out of the store.
pub(super) fn queue(
    conn: &Connection,
    record: &SessionRecord,
    reason: EndReason,
    now: Millis,
) -> StoreResult<()> {
    let mut stream = Stream::load(conn, &record.tenant, ENDS)?;
    let id = stream.advance(now);
    stream.save(conn, &record.tenant, ENDS)?;
    conn.prepare_cached(
        "INSERT INTO ends (tenant, ms, seq, record, reason, ended_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        record.tenant,
        id.ms,
        id.seq,
        encode(record)?,
        reason.as_str(),
        sql_ms(now),
    ])?;
    Ok(())
}

/// Abandoned jobs: claimed at least `reclaim` ms before `now`, oldest first.
const ABANDONED: &str = "SELECT rowid, ms, seq, record, reason, ended_at FROM ends
    WHERE tenant = ?1 AND claimed_at IS NOT NULL AND MAX(?2 - claimed_at, 0) >= ?3
    ORDER BY ms, seq LIMIT ?4";

/// Jobs never claimed, oldest first.
const WAITING: &str = "SELECT rowid, ms, seq, record, reason, ended_at FROM ends
    WHERE tenant = ?1 AND claimed_at IS NULL ORDER BY ms, seq LIMIT ?2";

/// A job row as [`ABANDONED`] and [`WAITING`] select it.
struct Queued {
    rowid: i64,
    id: StreamId,
    record: String,
    reason: String,
    ended_at: i64,
}

fn queued(row: &Row<'_>) -> rusqlite::Result<Queued> {
    Ok(Queued {
        rowid: row.get(0)?,
        id: StreamId {
            ms: row.get(1)?,
            seq: row.get(2)?,
        },
        record: row.get(3)?,
        reason: row.get(4)?,
        ended_at: row.get(5)?,
    })
}

/// Marks the jobs claimed by `consumer` at `now` and adds them to `out`.
fn hand_out(
    conn: &Connection,
    jobs: Vec<Queued>,
    reclaimed: bool,
    consumer: &str,
    now: Millis,
    out: &mut Vec<EndJob>,
) -> StoreResult<()> {
    let mut mark =
        conn.prepare_cached("UPDATE ends SET consumer = ?2, claimed_at = ?3 WHERE rowid = ?1")?;
    for job in jobs {
        mark.execute(params![job.rowid, consumer, sql_ms(now)])?;
        let record = decode(&job.record)?;
        let reason = EndReason::parse(&job.reason).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "end job {}: unknown reason {:?}",
                job.id, job.reason
            ))
        })?;
        out.push(EndJob {
            id: job.id.to_string(),
            end_id: format!("{}.{}", record.public_id, job.id),
            record,
            reason,
            ended_at: u64::try_from(job.ended_at).unwrap_or(0),
            reclaimed,
        });
    }
    Ok(())
}

fn claim(
    conn: &Connection,
    tenant: &str,
    consumer: &str,
    max: usize,
    reclaim_after_ms: Millis,
    now: Millis,
) -> StoreResult<Vec<EndJob>> {
    let limit = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    // Abandoned jobs first, as XAUTOCLAIM hands them out.
    let abandoned = conn
        .prepare_cached(ABANDONED)?
        .query_map(
            params![tenant, sql_ms(now), sql_ms(reclaim_after_ms), limit(max)],
            queued,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    hand_out(conn, abandoned, true, consumer, now, &mut out)?;
    let left = max.saturating_sub(out.len());
    if left > 0 {
        let waiting = conn
            .prepare_cached(WAITING)?
            .query_map(params![tenant, limit(left)], queued)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        hand_out(conn, waiting, false, consumer, now, &mut out)?;
    }
    Ok(out)
}

fn ack(conn: &Connection, tenant: &str, ids: &[String]) -> StoreResult<()> {
    let mut stmt =
        conn.prepare_cached("DELETE FROM ends WHERE tenant = ?1 AND ms = ?2 AND seq = ?3")?;
    // Unknown (or malformed) ids are ignored, as acknowledging them is.
    for id in ids.iter().filter_map(|id| StreamId::parse(id).ok()) {
        stmt.execute(params![tenant, id.ms, id.seq])?;
    }
    Ok(())
}

fn stats(conn: &Connection, tenant: &str) -> StoreResult<EndQueueStats> {
    let (total, claimed): (i64, i64) = conn
        .prepare_cached("SELECT COUNT(*), COUNT(claimed_at) FROM ends WHERE tenant = ?1")?
        .query_row(params![tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(EndQueueStats {
        waiting: (total - claimed) as u64,
        claimed: claimed as u64,
    })
}

#[async_trait]
impl EndQueue for EmbeddedStore {
    async fn claim_ends(
        &self,
        tenant: &str,
        consumer: &str,
        max: usize,
        reclaim_after_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<EndJob>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let (tenant, consumer) = (tenant.to_string(), consumer.to_string());
        self.writer
            .write(move |c| claim(c, &tenant, &consumer, max, reclaim_after_ms, now))
            .await
    }

    async fn ack_ends(&self, tenant: &str, ids: &[String]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let (tenant, ids) = (tenant.to_string(), ids.to_vec());
        self.writer.write(move |c| ack(c, &tenant, &ids)).await
    }

    async fn end_queue(&self, tenant: &str) -> StoreResult<EndQueueStats> {
        let tenant = tenant.to_string();
        self.readers.read(move |c| stats(c, &tenant)).await
    }

    async fn prune_end_consumers(
        &self,
        _tenant: &str,
        _keep: &str,
        _idle_ms: Millis,
    ) -> StoreResult<u64> {
        // Consumers are recorded only on the jobs they hold: nothing to forget.
        Ok(0)
    }
}
