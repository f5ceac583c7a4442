//! Each tenant's audit stream: the `audit` and `audit_once` tables and
//! [`AuditStore`] over them.
//!
//! Ids are stream ids ([`StreamId`]), increasing per tenant. The stream keeps
//! the newest `audit_max_len` records: the count lives in the tenant's
//! `streams` row, so trimming never counts the table. Idempotency keys are
//! kept [`AUDIT_ONCE_TTL_MS`] by the wall clock, as Redis keeps them.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::streams::{AUDIT, Stream, StreamId};
use super::{EmbeddedStore, sql_ms};
use crate::session::{AuditRecord, Millis, now_ms};
use crate::store::{AUDIT_ONCE_TTL_MS, AuditPage, AuditStore, StoreError, StoreResult};

/// How many lapsed idempotency keys one append deletes.
const PURGE_PER_APPEND: i64 = 16;

/// One append, as the writer runs it.
struct Append {
    tenant: String,
    plugin: String,
    session: Option<String>,
    record: String,
    once: Option<String>,
    now: Millis,
    max_len: i64,
}

fn append(conn: &Connection, a: &Append) -> StoreResult<String> {
    let clock = sql_ms(now_ms());
    if let Some(key) = &a.once {
        conn.prepare_cached(
            "DELETE FROM audit_once WHERE (tenant, key) IN (SELECT tenant, key FROM audit_once
             WHERE tenant = ?1 AND expires_at <= ?2 LIMIT ?3)",
        )?
        .execute(params![a.tenant, clock, PURGE_PER_APPEND])?;
        let first: Option<String> = conn
            .prepare_cached(
                "SELECT id FROM audit_once WHERE tenant = ?1 AND key = ?2 AND expires_at > ?3",
            )?
            .query_row(params![a.tenant, key, clock], |r| r.get(0))
            .optional()?;
        if let Some(id) = first {
            return Ok(id);
        }
    }
    let mut stream = Stream::load(conn, &a.tenant, AUDIT)?;
    let id = stream.advance(a.now);
    conn.prepare_cached(
        "INSERT INTO audit (tenant, ms, seq, at, plugin, session, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        a.tenant,
        id.ms,
        id.seq,
        sql_ms(a.now),
        a.plugin,
        a.session,
        a.record
    ])?;
    stream.len += 1;
    if stream.len > a.max_len {
        conn.prepare_cached(
            "DELETE FROM audit WHERE rowid IN (SELECT rowid FROM audit WHERE tenant = ?1
             ORDER BY ms, seq LIMIT ?2)",
        )?
        .execute(params![a.tenant, stream.len - a.max_len])?;
        stream.len = a.max_len;
    }
    stream.save(conn, &a.tenant, AUDIT)?;
    if let Some(key) = &a.once {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO audit_once (tenant, key, id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            a.tenant,
            key,
            id.to_string(),
            clock.saturating_add(AUDIT_ONCE_TTL_MS as i64)
        ])?;
    }
    Ok(id.to_string())
}

fn page(
    conn: &Connection,
    tenant: &str,
    after: Option<StreamId>,
    limit: usize,
) -> StoreResult<AuditPage> {
    // A page holds at least one record, so `next` always makes progress.
    let limit = limit.max(1);
    let after = after.unwrap_or(StreamId { ms: -1, seq: 0 });
    let mut stmt = conn.prepare_cached(
        "SELECT ms, seq, at, plugin, session, record FROM audit
         WHERE tenant = ?1 AND (ms, seq) > (?2, ?3) ORDER BY ms, seq LIMIT ?4",
    )?;
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let rows = stmt.query_map(params![tenant, after.ms, after.seq, fetch], |r| {
        Ok((
            StreamId {
                ms: r.get(0)?,
                seq: r.get(1)?,
            },
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut records = Vec::new();
    let mut more = false;
    for row in rows {
        let (id, at, plugin, session, json) = row?;
        if records.len() == limit {
            more = true;
            break;
        }
        let record: Value = crate::json::from_stored(&json)
            .map_err(|e| StoreError::Corrupt(format!("audit record {id}: {e}")))?;
        records.push(AuditRecord {
            id: id.to_string(),
            at: u64::try_from(at).unwrap_or(0),
            tenant: tenant.to_string(),
            plugin,
            session,
            record,
        });
    }
    let next = if more {
        records.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(AuditPage { records, next })
}

#[async_trait]
impl AuditStore for EmbeddedStore {
    async fn audit_append(
        &self,
        tenant: &str,
        plugin: &str,
        session: Option<&str>,
        record: &Value,
        once: Option<&str>,
        now: Millis,
    ) -> StoreResult<String> {
        let a = Append {
            tenant: tenant.to_string(),
            plugin: plugin.to_string(),
            session: session.map(str::to_string),
            record: record.to_string(),
            once: once.map(str::to_string),
            now,
            max_len: i64::try_from(self.audit_max_len).unwrap_or(i64::MAX),
        };
        self.writer.write(move |c| append(c, &a)).await
    }

    async fn audit_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<AuditPage> {
        let after = after.map(StreamId::parse).transpose()?;
        let tenant = tenant.to_string();
        self.readers
            .read(move |c| page(c, &tenant, after, limit))
            .await
    }
}
