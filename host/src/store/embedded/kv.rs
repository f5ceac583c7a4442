//! Plugins' private key-value entries: the `kv` table and [`KvStore`] over it.
//!
//! Expiry follows the wall clock, as Redis's does. A lapsed entry is
//! invisible at once; its row is deleted by a later write of the tenant
//! (a few per `kv_set`, more per sweep), found through the expiry index.
//!
//! A plugin's quota is checked in the write's own transaction, by counting
//! its live rows (the primary key `(tenant, plugin, key)` finds them), so no
//! counter can drift from the rows and the schema needs nothing new.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{EmbeddedStore, sql_ms};
use crate::session::now_ms;
use crate::store::{KvQuota, KvStore, StoreResult};

/// How many lapsed entries one `kv_set` deletes.
const PURGE_PER_SET: i64 = 16;

/// Deletes up to `max` of the tenant's lapsed entries.
pub(super) fn purge(conn: &Connection, tenant: &str, max: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "DELETE FROM kv WHERE rowid IN (SELECT rowid FROM kv
         WHERE tenant = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2 LIMIT ?3)",
    )?
    .execute(params![tenant, sql_ms(now_ms()), max])?;
    Ok(())
}

fn get(conn: &Connection, tenant: &str, plugin: &str, key: &str) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT value FROM kv WHERE tenant = ?1 AND plugin = ?2 AND key = ?3
             AND (expires_at IS NULL OR expires_at > ?4)",
        )?
        .query_row(params![tenant, plugin, key, sql_ms(now_ms())], |r| r.get(0))
        .optional()?)
}

/// The plugin's live entries, and their bytes (keys plus values), other
/// than the one under `except`. Counted in the write's transaction (the
/// quota bounds how many rows this reads).
fn usage(conn: &Connection, tenant: &str, plugin: &str, except: &str) -> StoreResult<(u64, u64)> {
    let (keys, bytes): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))), 0)
             FROM kv WHERE tenant = ?1 AND plugin = ?2 AND key <> ?3
             AND (expires_at IS NULL OR expires_at > ?4)",
        )?
        .query_row(params![tenant, plugin, except, sql_ms(now_ms())], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok((keys.max(0) as u64, bytes.max(0) as u64))
}

fn set(
    conn: &Connection,
    tenant: &str,
    plugin: &str,
    key: &str,
    value: &str,
    ttl_seconds: Option<u32>,
    quota: KvQuota,
) -> StoreResult<()> {
    purge(conn, tenant, PURGE_PER_SET)?;
    // A TTL of 0 expires the entry at once.
    if ttl_seconds == Some(0) {
        delete(conn, tenant, plugin, key)?;
        return Ok(());
    }
    if quota != KvQuota::UNLIMITED {
        let (keys, bytes) = usage(conn, tenant, plugin, key)?;
        quota.check(keys + 1, bytes + (key.len() + value.len()) as u64)?;
    }
    let expires_at = ttl_seconds.map(|s| sql_ms(now_ms() + u64::from(s) * 1000));
    conn.prepare_cached(
        "INSERT INTO kv (tenant, plugin, key, value, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tenant, plugin, key) DO UPDATE
         SET value = excluded.value, expires_at = excluded.expires_at",
    )?
    .execute(params![tenant, plugin, key, value, expires_at])?;
    Ok(())
}

/// Deletes the entry; whether it existed and had not lapsed.
fn delete(conn: &Connection, tenant: &str, plugin: &str, key: &str) -> StoreResult<bool> {
    let gone: Option<Option<i64>> = conn
        .prepare_cached(
            "DELETE FROM kv WHERE tenant = ?1 AND plugin = ?2 AND key = ?3 RETURNING expires_at",
        )?
        .query_row(params![tenant, plugin, key], |r| r.get(0))
        .optional()?;
    let now = sql_ms(now_ms());
    Ok(gone.is_some_and(|at| at.is_none_or(|at| at > now)))
}

#[async_trait]
impl KvStore for EmbeddedStore {
    async fn kv_get(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<Option<String>> {
        let (tenant, plugin, key) = (tenant.to_string(), plugin.to_string(), key.to_string());
        self.readers
            .read(move |c| get(c, &tenant, &plugin, &key))
            .await
    }

    async fn kv_set_within(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        value: &str,
        ttl_seconds: Option<u32>,
        quota: KvQuota,
    ) -> StoreResult<()> {
        let (tenant, plugin, key) = (tenant.to_string(), plugin.to_string(), key.to_string());
        let value = value.to_string();
        self.writer
            .write(move |c| set(c, &tenant, &plugin, &key, &value, ttl_seconds, quota))
            .await
    }

    async fn kv_delete(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<bool> {
        let (tenant, plugin, key) = (tenant.to_string(), plugin.to_string(), key.to_string());
        self.writer
            .write(move |c| delete(c, &tenant, &plugin, &key))
            .await
    }
}
