//! Idempotency keys of creates and removes: the `once_keys` table. A key is
//! written by the same savepoint as the write it guards (`sessions.rs`), and
//! kept its `ttl_ms` by the wall clock.

use rusqlite::{Connection, OptionalExtension, params};

use super::sql_ms;
use crate::session::{Millis, SessionRecord};
use crate::store::{OnceKey, Remembered, StoreError, StoreResult};

/// How many lapsed keys one recording deletes.
const PURGE_PER_WRITE: i64 = 16;

/// What the key `id` of `tenant` recorded, unless it lapsed by `clock`.
pub(super) fn remembered(
    conn: &Connection,
    tenant: &str,
    id: &str,
    clock: Millis,
) -> StoreResult<Option<Remembered>> {
    let row: Option<(String, Option<String>, Option<String>)> = conn
        .prepare_cached(
            "SELECT request, record, sealed FROM once_keys
             WHERE tenant = ?1 AND id = ?2 AND expires_at > ?3",
        )?
        .query_row(params![tenant, id, sql_ms(clock)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((request, record, sealed)) = row else {
        return Ok(None);
    };
    let created = match record {
        Some(json) => {
            let record: SessionRecord = crate::json::from_stored(&json).map_err(|e| {
                StoreError::Corrupt(format!("the session of an idempotency key: {e}"))
            })?;
            Some((record, sealed.unwrap_or_default()))
        }
        None => None,
    };
    Ok(Some(Remembered { request, created }))
}

/// Records `key` for `tenant` with the session it created (if any, as its
/// stored JSON), and deletes a few lapsed keys.
pub(super) fn remember(
    conn: &Connection,
    tenant: &str,
    key: &OnceKey,
    created: Option<&str>,
    clock: Millis,
) -> StoreResult<()> {
    conn.prepare_cached(
        "DELETE FROM once_keys WHERE (tenant, id) IN (SELECT tenant, id FROM once_keys
         WHERE tenant = ?1 AND expires_at <= ?2 LIMIT ?3)",
    )?
    .execute(params![tenant, sql_ms(clock), PURGE_PER_WRITE])?;
    let sealed = created.and(key.sealed.as_deref());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO once_keys (tenant, id, request, record, sealed, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        tenant,
        key.id,
        key.request,
        created,
        sealed,
        sql_ms(clock.saturating_add(key.ttl_ms))
    ])?;
    Ok(())
}
