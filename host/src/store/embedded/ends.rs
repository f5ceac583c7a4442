//! The durable end queue: the `ends` table and [`EndQueue`] over it.
//!
//! A job stays in the table from the step that ended its session until it is
//! acknowledged. A claim records its consumer and the wall-clock `now` it was
//! made at, and counts the delivery, so a job claimed by a process that then
//! died is still there after a restart and is handed out again, with the
//! same id and end id, once `reclaim_after_ms` has passed since that claim.
//!
//! A job moved to the dead-letter list goes from `ends` to `dead_ends` in
//! one step, with its record as queued; a row that cannot be read as a job
//! is moved there by the claim that finds it, in the claim's own
//! transaction.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::streams::{ENDS, Stream, StreamId};
use super::{EmbeddedStore, decode, encode, sql_ms};
use crate::session::{EndReason, Millis, SessionRecord};
use crate::store::{
    DeadLetter, DeadLetters, EndJob, EndQueue, EndQueueStats, Poison, StoreError, StoreResult,
    defaults,
};
use crate::trace::TraceParent;

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
        "INSERT INTO ends (tenant, ms, seq, record, reason, ended_at, trace)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        record.tenant,
        id.ms,
        id.seq,
        encode(record)?,
        reason.as_str(),
        sql_ms(now),
        // The writer runs each write in its caller's trace scope.
        crate::trace::current().map(|t| t.header()),
    ])?;
    Ok(())
}

/// Abandoned jobs: claimed at least `reclaim` ms before `now`, oldest first.
const ABANDONED: &str =
    "SELECT rowid, ms, seq, record, reason, ended_at, deliveries, trace FROM ends
    WHERE tenant = ?1 AND claimed_at IS NOT NULL AND MAX(?2 - claimed_at, 0) >= ?3
    ORDER BY ms, seq LIMIT ?4";

/// Jobs never claimed, oldest first.
const WAITING: &str = "SELECT rowid, ms, seq, record, reason, ended_at, deliveries, trace FROM ends
    WHERE tenant = ?1 AND claimed_at IS NULL ORDER BY ms, seq LIMIT ?2";

/// A job row as [`ABANDONED`] and [`WAITING`] select it.
struct Queued {
    rowid: i64,
    id: StreamId,
    record: String,
    reason: String,
    ended_at: i64,
    deliveries: i64,
    trace: Option<String>,
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
        deliveries: row.get(6)?,
        trace: row.get(7)?,
    })
}

/// The job a row holds, handed out for the `deliveries`th time.
fn decode_job(job: &Queued, reclaimed: bool, deliveries: u64) -> StoreResult<EndJob> {
    let record = decode(&job.record)?;
    let reason = EndReason::parse(&job.reason).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "end job {}: unknown reason {:?}",
            job.id, job.reason
        ))
    })?;
    Ok(EndJob {
        id: job.id.to_string(),
        end_id: format!("{}.{}", record.public_id, job.id),
        record,
        reason,
        ended_at: u64::try_from(job.ended_at).unwrap_or(0),
        reclaimed,
        deliveries,
        trace: job.trace.as_deref().and_then(TraceParent::parse),
    })
}

/// Marks the jobs claimed by `consumer` at `now`, counting the delivery,
/// and adds them to `out`; a row that cannot be read as a job goes to the
/// dead-letter list instead.
fn hand_out(
    conn: &Connection,
    tenant: &str,
    jobs: Vec<Queued>,
    reclaimed: bool,
    consumer: &str,
    now: Millis,
    out: &mut Vec<EndJob>,
) -> StoreResult<()> {
    let mut mark = conn.prepare_cached(
        "UPDATE ends SET consumer = ?2, claimed_at = ?3, deliveries = deliveries + 1
         WHERE rowid = ?1",
    )?;
    for job in jobs {
        mark.execute(params![job.rowid, consumer, sql_ms(now)])?;
        let deliveries = u64::try_from(job.deliveries).unwrap_or(0) + 1;
        match decode_job(&job, reclaimed, deliveries) {
            Ok(end) => out.push(end),
            Err(e) => {
                let why = format!("the queued job cannot be read: {e}");
                bury(conn, tenant, job.id, &why, now)?;
            }
        }
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
    hand_out(conn, tenant, abandoned, true, consumer, now, &mut out)?;
    let left = max.saturating_sub(out.len());
    if left > 0 {
        let waiting = conn
            .prepare_cached(WAITING)?
            .query_map(params![tenant, limit(left)], queued)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        hand_out(conn, tenant, waiting, false, consumer, now, &mut out)?;
    }
    Ok(out)
}

fn ack(conn: &Connection, tenant: &str, ids: &[String]) -> StoreResult<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("DELETE FROM ends WHERE tenant = ?1 AND ms = ?2 AND seq = ?3")?;
    let mut taken = Vec::new();
    // Unknown (or malformed) ids are ignored, as acknowledging them is.
    for text in ids {
        let Ok(id) = StreamId::parse(text) else {
            continue;
        };
        if stmt.execute(params![tenant, id.ms, id.seq])? > 0 {
            taken.push(text.clone());
        }
    }
    Ok(taken)
}

/// Moves the job `id` from the queue to the dead-letter list, trimming the
/// list to [`defaults::DEAD_LETTER_MAX_LEN`]. Whether there was such a job.
fn bury(
    conn: &Connection,
    tenant: &str,
    id: StreamId,
    why: &str,
    now: Millis,
) -> StoreResult<bool> {
    let moved = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO dead_ends
             (tenant, ms, seq, record, reason, ended_at, deliveries, why, at)
             SELECT tenant, ms, seq, record, reason, ended_at, deliveries, ?4, ?5 FROM ends
             WHERE tenant = ?1 AND ms = ?2 AND seq = ?3",
        )?
        .execute(params![tenant, id.ms, id.seq, why, sql_ms(now)])?;
    if moved == 0 {
        return Ok(false);
    }
    conn.prepare_cached("DELETE FROM ends WHERE tenant = ?1 AND ms = ?2 AND seq = ?3")?
        .execute(params![tenant, id.ms, id.seq])?;
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM dead_ends WHERE tenant = ?1")?
        .query_row(params![tenant], |r| r.get(0))?;
    let max = i64::try_from(defaults::DEAD_LETTER_MAX_LEN).unwrap_or(i64::MAX);
    if count > max {
        conn.prepare_cached(
            "DELETE FROM dead_ends WHERE rowid IN (SELECT rowid FROM dead_ends
             WHERE tenant = ?1 ORDER BY at, ms, seq LIMIT ?2)",
        )?
        .execute(params![tenant, count - max])?;
    }
    Ok(true)
}

fn dead_letter(conn: &Connection, tenant: &str, jobs: &[Poison], now: Millis) -> StoreResult<u64> {
    let mut moved = 0;
    for job in jobs {
        if let Ok(id) = StreamId::parse(&job.id)
            && bury(conn, tenant, id, &job.why, now)?
        {
            moved += 1;
        }
    }
    Ok(moved)
}

fn dead_letters(conn: &Connection, tenant: &str, limit: usize) -> StoreResult<DeadLetters> {
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM dead_ends WHERE tenant = ?1")?
        .query_row(params![tenant], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT ms, seq, record, reason, deliveries, why, at FROM dead_ends
         WHERE tenant = ?1 ORDER BY at DESC, ms DESC, seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![tenant, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok((
                StreamId {
                    ms: r.get(0)?,
                    seq: r.get(1)?,
                },
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        },
    )?;
    let mut newest = Vec::new();
    for row in rows {
        let (id, record, reason, deliveries, why, at) = row?;
        // A record that could not be read is why some jobs are here.
        let public_id = crate::json::from_stored::<PublicId>(&record).ok();
        newest.push(DeadLetter {
            end_id: public_id.map(|p| format!("{}.{id}", p.public_id)),
            id: id.to_string(),
            reason: EndReason::parse(&reason),
            why,
            at: u64::try_from(at).unwrap_or(0),
            deliveries: u64::try_from(deliveries).unwrap_or(0),
        });
    }
    Ok(DeadLetters {
        count: u64::try_from(count).unwrap_or(0),
        newest,
    })
}

/// The one member of a stored record a dead letter shows.
#[derive(serde::Deserialize)]
struct PublicId {
    public_id: String,
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

    async fn ack_ends(&self, tenant: &str, ids: &[String]) -> StoreResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (tenant, ids) = (tenant.to_string(), ids.to_vec());
        self.writer.write(move |c| ack(c, &tenant, &ids)).await
    }

    async fn dead_letter(&self, tenant: &str, jobs: &[Poison], now: Millis) -> StoreResult<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let (tenant, jobs) = (tenant.to_string(), jobs.to_vec());
        self.writer
            .write(move |c| dead_letter(c, &tenant, &jobs, now))
            .await
    }

    async fn dead_letters(&self, tenant: &str, limit: usize) -> StoreResult<DeadLetters> {
        let tenant = tenant.to_string();
        self.readers
            .read(move |c| dead_letters(c, &tenant, limit))
            .await
    }

    async fn end_queue(&self, tenant: &str) -> StoreResult<EndQueueStats> {
        let tenant = tenant.to_string();
        self.readers.read(move |c| stats(c, &tenant)).await
    }

    async fn oldest_end_at(&self, tenant: &str) -> StoreResult<Option<Millis>> {
        let tenant = tenant.to_string();
        self.readers
            .read(move |c| {
                let first: Option<i64> = c
                    .prepare_cached(
                        "SELECT ended_at FROM ends WHERE tenant = ?1 ORDER BY ms, seq LIMIT 1",
                    )?
                    .query_row(params![tenant], |r| r.get(0))
                    .optional()?;
                Ok(first.map(|ms| u64::try_from(ms).unwrap_or(0)))
            })
            .await
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
