//! Sessions: the `sessions` table and [`SessionStore`] over it.
//!
//! Every write runs on the writer thread inside one savepoint, so a create
//! with its limit check and evictions, a compare-and-set update, a merge
//! patch, a removal and its end job each happen entirely or not at all. Reads filter on the
//! stored deadline, so a session past it is invisible although it stays
//! stored until `take_expired` takes it.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::{EmbeddedStore, decode, encode, ends, kv, once, sql_ms};
use crate::session::{EndReason, Millis, SessionRecord, now_ms};
use crate::store::{
    CreateLimit, CreateOutcome, Expired, LimitPolicy, MergeOutcome, Once, OnceKey, Remembered,
    SessionStore, StoreError, StoreResult, WriteOutcome,
};

/// How many lapsed kv entries one sweep of a tenant deletes.
const KV_PURGE_PER_SWEEP: i64 = 1000;

fn exists(conn: &Connection, tenant: &str, token_hash: &str) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sessions WHERE tenant = ?1 AND token_hash = ?2")?
        .exists(params![tenant, token_hash])?)
}

/// The live session under `token_hash`.
fn live(
    conn: &Connection,
    tenant: &str,
    token_hash: &str,
    now: Millis,
) -> StoreResult<Option<SessionRecord>> {
    conn.prepare_cached(
        "SELECT record FROM sessions WHERE tenant = ?1 AND token_hash = ?2 AND deadline > ?3",
    )?
    .query_row(params![tenant, token_hash, sql_ms(now)], |r| {
        r.get::<_, String>(0)
    })
    .optional()?
    .map(|json| decode(&json))
    .transpose()
}

/// The live sessions of a user, least recently used first (ties: lowest
/// token hash).
fn live_of_user(
    conn: &Connection,
    tenant: &str,
    user: &str,
    now: Millis,
) -> StoreResult<Vec<SessionRecord>> {
    // Without statistics the planner would pick the deadline index and scan
    // the tenant's every live session.
    let mut stmt = conn.prepare_cached(
        "SELECT record FROM sessions INDEXED BY sessions_user
         WHERE tenant = ?1 AND user = ?2 AND deadline > ?3 ORDER BY last_seen_at, token_hash",
    )?;
    let rows = stmt.query_map(params![tenant, user, sql_ms(now)], |r| {
        r.get::<_, String>(0)
    })?;
    rows.map(|json| decode(&json?)).collect()
}

fn insert(conn: &Connection, record: &SessionRecord) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (tenant, token_hash, user, last_seen_at, deadline, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        record.tenant,
        record.token_hash,
        record.user,
        sql_ms(record.last_seen_at),
        sql_ms(record.expires_at()),
        encode(record)?,
    ])?;
    Ok(())
}

/// Replaces the row under `token_hash` with `record` (which may carry a new
/// token hash, user and deadline).
fn replace(conn: &Connection, token_hash: &str, record: &SessionRecord) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE sessions SET token_hash = ?3, user = ?4, last_seen_at = ?5, deadline = ?6,
         record = ?7 WHERE tenant = ?1 AND token_hash = ?2",
    )?
    .execute(params![
        record.tenant,
        token_hash,
        record.token_hash,
        record.user,
        sql_ms(record.last_seen_at),
        sql_ms(record.expires_at()),
        encode(record)?,
    ])?;
    Ok(())
}

/// Deletes a stored session and queues its end job when asked.
fn end(
    conn: &Connection,
    record: &SessionRecord,
    reason: EndReason,
    queue: bool,
    now: Millis,
) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE tenant = ?1 AND token_hash = ?2")?
        .execute(params![record.tenant, record.token_hash])?;
    if queue {
        ends::queue(conn, record, reason, now)?;
    }
    Ok(())
}

fn oldest_first(records: &mut [SessionRecord]) {
    records.sort_by(|a, b| (a.created_at, &a.public_id).cmp(&(b.created_at, &b.public_id)));
}

fn create(
    conn: &Connection,
    record: &SessionRecord,
    limit: CreateLimit,
    queue: bool,
    now: Millis,
) -> StoreResult<CreateOutcome> {
    if exists(conn, &record.tenant, &record.token_hash)? {
        return Err(StoreError::Backend(
            "a session with this token hash exists".into(),
        ));
    }
    if limit.tenant_max.is_some() {
        let stored: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM sessions WHERE tenant = ?1")?
            .query_row(params![record.tenant], |r| r.get(0))?;
        let stored = u64::try_from(stored).unwrap_or(0);
        if limit.tenant_full(stored) {
            return Ok(CreateOutcome::QuotaReached { stored });
        }
    }
    let mut evicted = Vec::new();
    if let (Some(user), Some(limit)) = (&record.user, limit.user) {
        let live = live_of_user(conn, &record.tenant, user, now)?;
        let max = limit.max as usize;
        if live.len() >= max {
            if limit.policy == LimitPolicy::Deny || max == 0 {
                return Ok(CreateOutcome::LimitReached {
                    active: live.len() as u32,
                });
            }
            let excess = live.len() - max + 1;
            for victim in live.into_iter().take(excess) {
                end(conn, &victim, EndReason::Evicted, queue, now)?;
                evicted.push(victim);
            }
        }
    }
    insert(conn, record)?;
    Ok(CreateOutcome::Created { evicted })
}

fn update(
    conn: &Connection,
    token_hash: &str,
    record: &SessionRecord,
    expected_version: u64,
    now: Millis,
) -> StoreResult<WriteOutcome> {
    let Some(current) = live(conn, &record.tenant, token_hash, now)? else {
        return Ok(WriteOutcome::NotFound);
    };
    if current.version != expected_version {
        return Ok(WriteOutcome::VersionMismatch(current));
    }
    if record.token_hash != token_hash && exists(conn, &record.tenant, &record.token_hash)? {
        return Err(StoreError::Backend(
            "a session with the new token hash exists".into(),
        ));
    }
    replace(conn, token_hash, record)?;
    Ok(WriteOutcome::Written(record.clone()))
}

fn merge(
    conn: &Connection,
    tenant: &str,
    token_hash: &str,
    patch: &Map<String, Value>,
    now: Millis,
) -> StoreResult<MergeOutcome> {
    let Some(current) = live(conn, tenant, token_hash, now)? else {
        return Ok(MergeOutcome::NotFound);
    };
    let next = match crate::store::merged(&current, patch, now) {
        Ok(next) => next,
        Err(over) => return Ok(MergeOutcome::OverLimit(over)),
    };
    replace(conn, token_hash, &next)?;
    Ok(MergeOutcome::Merged(Box::new(next)))
}

fn touch(
    conn: &Connection,
    tenant: &str,
    token_hash: &str,
    now: Millis,
) -> StoreResult<Option<SessionRecord>> {
    let Some(mut record) = live(conn, tenant, token_hash, now)? else {
        return Ok(None);
    };
    record.last_seen_at = record.last_seen_at.max(now);
    record.version += 1;
    replace(conn, token_hash, &record)?;
    Ok(Some(record))
}

fn remove(
    conn: &Connection,
    tenant: &str,
    token_hash: &str,
    reason: EndReason,
    queue: bool,
    now: Millis,
) -> StoreResult<Option<SessionRecord>> {
    let Some(record) = live(conn, tenant, token_hash, now)? else {
        return Ok(None);
    };
    end(conn, &record, reason, queue, now)?;
    Ok(Some(record))
}

fn remove_user(
    conn: &Connection,
    tenant: &str,
    user: &str,
    reason: EndReason,
    queue: bool,
    now: Millis,
) -> StoreResult<Vec<SessionRecord>> {
    let mut records = live_of_user(conn, tenant, user, now)?;
    for record in &records {
        end(conn, record, reason, queue, now)?;
    }
    oldest_first(&mut records);
    Ok(records)
}

fn take_expired(
    conn: &Connection,
    tenant: &str,
    now: Millis,
    max: usize,
    queue: bool,
) -> StoreResult<Vec<Expired>> {
    kv::purge(conn, tenant, KV_PURGE_PER_SWEEP)?;
    let due: Vec<SessionRecord> = {
        let mut stmt = conn.prepare_cached(
            "SELECT record FROM sessions WHERE tenant = ?1 AND deadline <= ?2
             ORDER BY deadline, token_hash LIMIT ?3",
        )?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![tenant, sql_ms(now), limit], |r| {
            r.get::<_, String>(0)
        })?;
        rows.map(|json| decode(&json?))
            .collect::<StoreResult<_>>()?
    };
    let mut out = Vec::with_capacity(due.len());
    for record in due {
        let reason = record.expiry_reason();
        end(conn, &record, reason, queue, now)?;
        out.push(Expired { record, reason });
    }
    Ok(out)
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn ping(&self) -> StoreResult<()> {
        if !self.writer.is_alive() {
            return Err(StoreError::Unavailable(
                "the store writer has stopped".into(),
            ));
        }
        self.readers
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn create(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        let record = record.clone();
        self.writer
            .write(move |c| create(c, &record, limit, queue_ends, now))
            .await
    }

    async fn create_once(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        key: &OnceKey,
        now: Millis,
    ) -> StoreResult<Once<CreateOutcome>> {
        let (record, key) = (record.clone(), key.clone());
        self.writer
            .write(move |c| {
                let clock = now_ms();
                if let Some(known) = once::remembered(c, &record.tenant, &key.id, clock)? {
                    return Ok(Once::Known(Box::new(known)));
                }
                let outcome = create(c, &record, limit, queue_ends, now)?;
                if let CreateOutcome::Created { .. } = outcome {
                    once::remember(c, &record.tenant, &key, Some(&encode(&record)?), clock)?;
                }
                Ok(Once::Ran(outcome))
            })
            .await
    }

    async fn remove_once(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
        key: &OnceKey,
        now: Millis,
    ) -> StoreResult<Once<Option<SessionRecord>>> {
        let (tenant, token_hash, key) = (tenant.to_string(), token_hash.to_string(), key.clone());
        self.writer
            .write(move |c| {
                let clock = now_ms();
                if let Some(known) = once::remembered(c, &tenant, &key.id, clock)? {
                    return Ok(Once::Known(Box::new(known)));
                }
                let ended = remove(c, &tenant, &token_hash, reason, queue_ends, now)?;
                if ended.is_some() {
                    once::remember(c, &tenant, &key, None, clock)?;
                }
                Ok(Once::Ran(ended))
            })
            .await
    }

    async fn remembered(&self, tenant: &str, id: &str) -> StoreResult<Option<Remembered>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.readers
            .read(move |c| once::remembered(c, &tenant, &id, now_ms()))
            .await
    }

    async fn get(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let (tenant, token_hash) = (tenant.to_string(), token_hash.to_string());
        self.readers
            .read(move |c| live(c, &tenant, &token_hash, now))
            .await
    }

    async fn update(
        &self,
        token_hash: &str,
        record: &SessionRecord,
        expected_version: u64,
        now: Millis,
    ) -> StoreResult<WriteOutcome> {
        crate::store::check_next_version(record, expected_version)?;
        let (token_hash, record) = (token_hash.to_string(), record.clone());
        self.writer
            .write(move |c| update(c, &token_hash, &record, expected_version, now))
            .await
    }

    async fn merge(
        &self,
        tenant: &str,
        token_hash: &str,
        patch: &Map<String, Value>,
        now: Millis,
    ) -> StoreResult<MergeOutcome> {
        let (tenant, token_hash, patch) =
            (tenant.to_string(), token_hash.to_string(), patch.clone());
        self.writer
            .write(move |c| merge(c, &tenant, &token_hash, &patch, now))
            .await
    }

    async fn touch(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let (tenant, token_hash) = (tenant.to_string(), token_hash.to_string());
        self.writer
            .write(move |c| touch(c, &tenant, &token_hash, now))
            .await
    }

    async fn remove(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let (tenant, token_hash) = (tenant.to_string(), token_hash.to_string());
        self.writer
            .write(move |c| remove(c, &tenant, &token_hash, reason, queue_ends, now))
            .await
    }

    async fn list_user(
        &self,
        tenant: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>> {
        let (tenant, user) = (tenant.to_string(), user.to_string());
        self.readers
            .read(move |c| {
                let mut records = live_of_user(c, &tenant, &user, now)?;
                oldest_first(&mut records);
                Ok(records)
            })
            .await
    }

    async fn remove_user(
        &self,
        tenant: &str,
        user: &str,
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>> {
        let (tenant, user) = (tenant.to_string(), user.to_string());
        self.writer
            .write(move |c| remove_user(c, &tenant, &user, reason, queue_ends, now))
            .await
    }

    async fn stored_sessions(&self, tenant: &str) -> StoreResult<u64> {
        let tenant = tenant.to_string();
        self.readers
            .read(move |conn| {
                let n: i64 = conn
                    .prepare_cached("SELECT COUNT(*) FROM sessions WHERE tenant = ?1")?
                    .query_row(params![tenant], |r| r.get(0))?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
            .await
    }

    async fn deadlines_between(
        &self,
        tenant: &str,
        after: Millis,
        until: Millis,
        max: usize,
    ) -> StoreResult<Vec<SessionRecord>> {
        let tenant = tenant.to_string();
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT record FROM sessions WHERE tenant = ?1 AND deadline > ?2
                     AND deadline <= ?3 ORDER BY deadline, token_hash LIMIT ?4",
                )?;
                let limit = i64::try_from(max).unwrap_or(i64::MAX);
                let rows = stmt
                    .query_map(params![tenant, sql_ms(after), sql_ms(until), limit], |r| {
                        r.get::<_, String>(0)
                    })?;
                rows.map(|json| decode(&json?)).collect()
            })
            .await
    }

    async fn take_expired(
        &self,
        tenant: &str,
        now: Millis,
        max: usize,
        queue_ends: bool,
    ) -> StoreResult<Vec<Expired>> {
        let tenant = tenant.to_string();
        self.writer
            .write(move |c| take_expired(c, &tenant, now, max, queue_ends))
            .await
    }
}
