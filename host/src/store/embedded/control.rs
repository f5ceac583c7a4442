//! The embedded store's control plane: [`ControlStore`] over the `control`,
//! `components` and `control_revision` tables (schema version 6).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::EmbeddedStore;
use crate::store::{ControlRecord, ControlStore, StoreError, StoreResult, Swapped};

fn revision(c: &Connection) -> StoreResult<u64> {
    let n: i64 = c
        .prepare_cached("SELECT revision FROM control_revision WHERE id = 0")?
        .query_row([], |r| r.get(0))?;
    u64::try_from(n).map_err(|_| StoreError::Corrupt("negative control revision".into()))
}

fn actual(c: &Connection, name: &str) -> StoreResult<u64> {
    let n: Option<i64> = c
        .prepare_cached("SELECT revision FROM control WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// Takes the next control revision.
fn bump(c: &Connection) -> StoreResult<u64> {
    let next = revision(c)? + 1;
    c.prepare_cached("UPDATE control_revision SET revision = ?1 WHERE id = 0")?
        .execute([sql(next)])?;
    Ok(next)
}

fn sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ControlRecord> {
    Ok(ControlRecord {
        name: r.get(0)?,
        revision: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        body: r.get(2)?,
    })
}

fn put(c: &Connection, name: &str, body: &str, expected: u64) -> StoreResult<Swapped> {
    let found = actual(c, name)?;
    if found != expected {
        return Ok(Err(found));
    }
    let next = bump(c)?;
    c.prepare_cached(
        "INSERT INTO control (name, revision, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET revision = ?2, body = ?3",
    )?
    .execute(params![name, sql(next), body])?;
    Ok(Ok(next))
}

fn remove(c: &Connection, name: &str, expected: u64) -> StoreResult<Swapped> {
    let found = actual(c, name)?;
    if found != expected || found == 0 {
        return Ok(Err(found));
    }
    let next = bump(c)?;
    c.prepare_cached("DELETE FROM control WHERE name = ?1")?
        .execute([name])?;
    Ok(Ok(next))
}

#[async_trait]
impl ControlStore for EmbeddedStore {
    async fn control_revision(&self) -> StoreResult<u64> {
        self.readers.read(revision).await
    }

    async fn control_records(&self) -> StoreResult<Vec<ControlRecord>> {
        self.readers
            .read(|c| {
                Ok(
                    c.prepare_cached("SELECT name, revision, body FROM control ORDER BY name")?
                        .query_map([], record)?
                        .collect::<rusqlite::Result<Vec<_>>>()?,
                )
            })
            .await
    }

    async fn control_record(&self, name: &str) -> StoreResult<Option<ControlRecord>> {
        let name = name.to_string();
        self.readers
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT name, revision, body FROM control WHERE name = ?1")?
                        .query_row([&name], record)
                        .optional()?,
                )
            })
            .await
    }

    async fn control_put(&self, name: &str, body: &str, expected: u64) -> StoreResult<Swapped> {
        let (name, body) = (name.to_string(), body.to_string());
        self.writer
            .write(move |c| put(c, &name, &body, expected))
            .await
    }

    async fn control_remove(&self, name: &str, expected: u64) -> StoreResult<Swapped> {
        let name = name.to_string();
        self.writer.write(move |c| remove(c, &name, expected)).await
    }

    async fn component_put(&self, tenant: &str, sha256: &str, bytes: &[u8]) -> StoreResult<()> {
        let (tenant, sha256, bytes) = (tenant.to_string(), sha256.to_string(), bytes.to_vec());
        self.writer
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO components (tenant, sha256, wasm) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![tenant, sha256, bytes])?;
                Ok(())
            })
            .await
    }

    async fn component_get(&self, tenant: &str, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        let (tenant, sha256) = (tenant.to_string(), sha256.to_string());
        self.readers
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT wasm FROM components WHERE tenant = ?1 AND sha256 = ?2",
                )?
                .query_row([&tenant, &sha256], |r| r.get(0))
                .optional()?)
            })
            .await
    }

    async fn component_remove(&self, tenant: &str, sha256: &str) -> StoreResult<bool> {
        let (tenant, sha256) = (tenant.to_string(), sha256.to_string());
        self.writer
            .write(move |c| {
                Ok(
                    c.prepare_cached("DELETE FROM components WHERE tenant = ?1 AND sha256 = ?2")?
                        .execute([&tenant, &sha256])?
                        > 0,
                )
            })
            .await
    }
}
