//! [`StoreDump`](crate::store::dump::StoreDump) for the embedded store: pages
//! are read in key order on the read connections; an import step is one
//! writer operation, so its items share one transaction (and one fsync).
//!
//! Imported end jobs and audit records are inserted with their ids and move
//! the tenant's stream counter (`streams`) up to them, so that ids handed out
//! later are larger.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::streams::{AUDIT, ENDS, Stream, StreamId};
use super::{EmbeddedStore, decode, encode, sql_ms};
use crate::session::{EndReason, Millis, now_ms};
use crate::store::dump::{
    self, AuditItem, AuditOnceItem, DumpPage, EndJobItem, Imported, Item, Kind, KvItem, PAGE_SIZE,
    SessionItem, StoreDump, end_id, stream_id,
};
use crate::store::{StoreError, StoreResult};

fn tenants(conn: &Connection) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT tenant FROM sessions UNION SELECT tenant FROM ends
         UNION SELECT tenant FROM kv WHERE expires_at IS NULL OR expires_at > ?1
         UNION SELECT tenant FROM audit UNION SELECT tenant FROM audit_once WHERE expires_at > ?1
         UNION SELECT tenant FROM streams UNION SELECT tenant FROM outbox ORDER BY 1",
    )?;
    let rows = stmt.query_map(params![sql_ms(now_ms())], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// `>` after a cursor, `>=` from the start (with the smallest key, `''`).
fn after(cursor: Option<&str>) -> &'static str {
    if cursor.is_some() { ">" } else { ">=" }
}

fn limit() -> i64 {
    PAGE_SIZE as i64
}

/// The `next` of a page: its last key when it was full.
fn next_of(items: &[Item], key: impl Fn(&Item) -> String) -> Option<String> {
    (items.len() >= PAGE_SIZE)
        .then(|| items.last().map(key))
        .flatten()
}

fn sessions(conn: &Connection, tenant: &str, cursor: Option<&str>) -> StoreResult<DumpPage> {
    let sql = format!(
        "SELECT record FROM sessions WHERE tenant = ?1 AND token_hash {} ?2
         ORDER BY token_hash LIMIT ?3",
        after(cursor)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![tenant, cursor.unwrap_or(""), limit()], |r| {
        r.get::<_, String>(0)
    })?;
    let mut items = Vec::new();
    for json in rows {
        items.push(Item::Session(SessionItem::from(&decode(&json?)?)));
    }
    let next = next_of(&items, Item::key);
    Ok(DumpPage { items, next })
}

fn cursor_id(cursor: Option<&str>) -> StoreResult<StreamId> {
    Ok(match cursor {
        Some(c) => StreamId::parse(c)?,
        None => StreamId { ms: -1, seq: 0 },
    })
}

fn ends(conn: &Connection, tenant: &str, cursor: Option<&str>) -> StoreResult<DumpPage> {
    let from = cursor_id(cursor)?;
    let mut stmt = conn.prepare_cached(
        "SELECT ms, seq, record, reason, ended_at FROM ends
         WHERE tenant = ?1 AND (ms, seq) > (?2, ?3) ORDER BY ms, seq LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![tenant, from.ms, from.seq, limit()], |r| {
        Ok((
            StreamId {
                ms: r.get(0)?,
                seq: r.get(1)?,
            },
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (id, record, reason, ended_at) = row?;
        let record = decode(&record)?;
        let reason = EndReason::parse(&reason).ok_or_else(|| {
            StoreError::Corrupt(format!("end job {id}: unknown reason {reason:?}"))
        })?;
        let id = id.to_string();
        items.push(Item::EndJob(EndJobItem {
            tenant: tenant.to_string(),
            end_id: end_id(&record.public_id, &id),
            id,
            reason,
            ended_at: u64::try_from(ended_at).unwrap_or(0),
            record,
        }));
    }
    let next = next_of(&items, Item::key);
    Ok(DumpPage { items, next })
}

fn kv(conn: &Connection, tenant: &str, cursor: Option<&str>) -> StoreResult<DumpPage> {
    let (plugin, key): (String, String) = match cursor {
        Some(c) => serde_json::from_str(c)
            .map_err(|e| StoreError::Backend(format!("invalid kv cursor {c:?}: {e}")))?,
        None => Default::default(),
    };
    let sql = format!(
        "SELECT plugin, key, value, expires_at FROM kv
         WHERE tenant = ?1 AND (plugin, key) {} (?2, ?3)
         AND (expires_at IS NULL OR expires_at > ?4) ORDER BY plugin, key LIMIT ?5",
        after(cursor)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![tenant, plugin, key, sql_ms(now_ms()), limit()],
        |r: &Row<'_>| {
            Ok(KvItem {
                tenant: tenant.to_string(),
                plugin: r.get(0)?,
                key: r.get(1)?,
                value: r.get(2)?,
                expires_at: r.get::<_, Option<i64>>(3)?.map(|at| at.max(0) as Millis),
            })
        },
    )?;
    let items: Vec<Item> = rows
        .map(|r| r.map(Item::Kv))
        .collect::<rusqlite::Result<_>>()?;
    let next = next_of(&items, |item| match item {
        Item::Kv(i) => serde_json::json!([i.plugin, i.key]).to_string(),
        other => other.key(),
    });
    Ok(DumpPage { items, next })
}

fn audit(conn: &Connection, tenant: &str, cursor: Option<&str>) -> StoreResult<DumpPage> {
    let from = cursor_id(cursor)?;
    let mut stmt = conn.prepare_cached(
        "SELECT ms, seq, at, plugin, session, record FROM audit
         WHERE tenant = ?1 AND (ms, seq) > (?2, ?3) ORDER BY ms, seq LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![tenant, from.ms, from.seq, limit()], |r| {
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
    let mut items = Vec::new();
    for row in rows {
        let (id, at, plugin, session, json) = row?;
        let record = serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("audit record {id}: {e}")))?;
        items.push(Item::Audit(AuditItem {
            tenant: tenant.to_string(),
            id: id.to_string(),
            at: u64::try_from(at).unwrap_or(0),
            plugin,
            session,
            record,
        }));
    }
    let next = next_of(&items, Item::key);
    Ok(DumpPage { items, next })
}

fn audit_once(conn: &Connection, tenant: &str, cursor: Option<&str>) -> StoreResult<DumpPage> {
    let sql = format!(
        "SELECT key, id, expires_at FROM audit_once
         WHERE tenant = ?1 AND key {} ?2 AND expires_at > ?3 ORDER BY key LIMIT ?4",
        after(cursor)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![tenant, cursor.unwrap_or(""), sql_ms(now_ms()), limit()],
        |r| {
            Ok(Item::AuditOnce(AuditOnceItem {
                tenant: tenant.to_string(),
                key: r.get(0)?,
                id: r.get(1)?,
                expires_at: r.get::<_, i64>(2)?.max(0) as Millis,
            }))
        },
    )?;
    let items: Vec<Item> = rows.collect::<rusqlite::Result<_>>()?;
    let next = next_of(&items, Item::key);
    Ok(DumpPage { items, next })
}

/// An imported item's stream id, as the tables keep it.
fn id_of(text: &str) -> StoreResult<StreamId> {
    let (ms, seq) = stream_id(text)
        .ok_or_else(|| StoreError::Backend(format!("invalid stream id {text:?}")))?;
    Ok(StreamId {
        ms: sql_ms(ms),
        seq: sql_ms(seq),
    })
}

fn import(
    conn: &Connection,
    items: &[Item],
    max_len: i64,
    now: Millis,
) -> StoreResult<Vec<Imported>> {
    items
        .iter()
        .map(|item| {
            if item.lapsed(now) {
                return Ok(Imported::Lapsed);
            }
            match item {
                Item::Session(i) => import_session(conn, i),
                Item::EndJob(i) => import_end(conn, i),
                Item::Kv(i) => import_kv(conn, i, now),
                Item::Audit(i) => import_audit(conn, i, max_len),
                Item::AuditOnce(i) => import_once(conn, i, now),
                // dump::import_with_outbox pushes those through the outbox.
                Item::Outbox(_) => Err(StoreError::Backend(
                    "outbox items in the import transaction".into(),
                )),
            }
        })
        .collect()
}

fn import_session(conn: &Connection, i: &SessionItem) -> StoreResult<Imported> {
    let r = &i.record;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO sessions (tenant, token_hash, user, last_seen_at, deadline, record)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS
             (SELECT 1 FROM sessions WHERE tenant = ?1 AND token_hash = ?2)",
        )?
        .execute(params![
            r.tenant,
            r.token_hash,
            r.user,
            sql_ms(r.last_seen_at),
            sql_ms(r.expires_at()),
            encode(r)?,
        ])?;
    Ok(written_if(inserted > 0))
}

fn written_if(written: bool) -> Imported {
    if written {
        Imported::Written
    } else {
        Imported::Exists
    }
}

/// Whether the tenant's `table` (`ends` or `audit`) holds the entry `id`.
fn has_entry(conn: &Connection, table: &str, tenant: &str, id: StreamId) -> StoreResult<bool> {
    let sql = format!("SELECT 1 FROM {table} WHERE tenant = ?1 AND ms = ?2 AND seq = ?3");
    Ok(conn
        .prepare_cached(&sql)?
        .exists(params![tenant, id.ms, id.seq])?)
}

fn import_end(conn: &Connection, i: &EndJobItem) -> StoreResult<Imported> {
    let id = id_of(&i.id)?;
    if has_entry(conn, "ends", &i.tenant, id)? {
        return Ok(Imported::Exists);
    }
    let mut stream = Stream::load(conn, &i.tenant, ENDS)?;
    if id <= stream.last {
        return Ok(Imported::OutOfOrder);
    }
    conn.prepare_cached(
        "INSERT INTO ends (tenant, ms, seq, record, reason, ended_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        i.tenant,
        id.ms,
        id.seq,
        encode(&i.record)?,
        i.reason.as_str(),
        sql_ms(i.ended_at),
    ])?;
    stream.last = id;
    stream.save(conn, &i.tenant, ENDS)?;
    Ok(Imported::Written)
}

fn import_kv(conn: &Connection, i: &KvItem, now: Millis) -> StoreResult<Imported> {
    // Replaces a lapsed entry, keeps a live one.
    let written = conn
        .prepare_cached(
            "INSERT INTO kv (tenant, plugin, key, value, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, plugin, key) DO UPDATE
             SET value = excluded.value, expires_at = excluded.expires_at
             WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?6",
        )?
        .execute(params![
            i.tenant,
            i.plugin,
            i.key,
            i.value,
            i.expires_at.map(sql_ms),
            sql_ms(now),
        ])?;
    Ok(written_if(written > 0))
}

fn import_audit(conn: &Connection, i: &AuditItem, max_len: i64) -> StoreResult<Imported> {
    let id = id_of(&i.id)?;
    if has_entry(conn, "audit", &i.tenant, id)? {
        return Ok(Imported::Exists);
    }
    let mut stream = Stream::load(conn, &i.tenant, AUDIT)?;
    if id <= stream.last {
        return Ok(Imported::OutOfOrder);
    }
    conn.prepare_cached(
        "INSERT INTO audit (tenant, ms, seq, at, plugin, session, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        i.tenant,
        id.ms,
        id.seq,
        sql_ms(i.at),
        i.plugin,
        i.session,
        i.record.to_string(),
    ])?;
    stream.last = id;
    stream.len += 1;
    if stream.len > max_len {
        conn.prepare_cached(
            "DELETE FROM audit WHERE rowid IN (SELECT rowid FROM audit WHERE tenant = ?1
             ORDER BY ms, seq LIMIT ?2)",
        )?
        .execute(params![i.tenant, stream.len - max_len])?;
        stream.len = max_len;
    }
    stream.save(conn, &i.tenant, AUDIT)?;
    Ok(Imported::Written)
}

fn import_once(conn: &Connection, i: &AuditOnceItem, now: Millis) -> StoreResult<Imported> {
    let live: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM audit_once WHERE tenant = ?1 AND key = ?2 AND expires_at > ?3",
        )?
        .query_row(params![i.tenant, i.key, sql_ms(now)], |r| r.get(0))
        .optional()?;
    if live.is_some() {
        return Ok(Imported::Exists);
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO audit_once (tenant, key, id, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![i.tenant, i.key, i.id, sql_ms(i.expires_at)])?;
    Ok(Imported::Written)
}

#[async_trait]
impl StoreDump for EmbeddedStore {
    async fn dump_tenants(&self) -> StoreResult<Vec<String>> {
        self.readers.read(tenants).await
    }

    async fn dump_page(
        &self,
        tenant: &str,
        kind: Kind,
        cursor: Option<&str>,
    ) -> StoreResult<DumpPage> {
        if kind == Kind::Outbox {
            return dump::outbox_page(self, tenant, cursor).await;
        }
        let (tenant, cursor) = (tenant.to_string(), cursor.map(str::to_string));
        self.readers
            .read(move |c| {
                let cursor = cursor.as_deref();
                match kind {
                    Kind::Session => sessions(c, &tenant, cursor),
                    Kind::EndJob => ends(c, &tenant, cursor),
                    Kind::Kv => kv(c, &tenant, cursor),
                    Kind::Audit => audit(c, &tenant, cursor),
                    Kind::AuditOnce => audit_once(c, &tenant, cursor),
                    Kind::Outbox => Ok(DumpPage::default()),
                }
            })
            .await
    }

    async fn import_items(&self, items: &[Item], now: Millis) -> StoreResult<Vec<Imported>> {
        let max_len = i64::try_from(self.audit_max_len).unwrap_or(i64::MAX);
        dump::import_with_outbox(self, items, |run| {
            let run = run.to_vec();
            async move {
                if run.is_empty() {
                    return Ok(Vec::new());
                }
                self.writer
                    .write(move |c| import(c, &run, max_len, now))
                    .await
            }
        })
        .await
    }
}
