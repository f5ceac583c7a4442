//! The Redis backend's control plane: [`ControlStore`] over the keys under
//! `<prefix>:{%control}:` (see `keys`), written by the `control_*` scripts,
//! each of which also publishes the new revision on `<prefix>:control`.

use async_trait::async_trait;
use redis::Value;

use super::RedisStore;
use super::conn::Effect;
use super::keys::ControlKeys;
use super::reply::{corrupt, items, number, text};
use super::scripts::SCRIPTS;
use crate::store::{ControlRecord, ControlStore, StoreResult, Swapped};

impl RedisStore {
    fn control_keys(&self) -> ControlKeys {
        ControlKeys::new(&self.prefix)
    }

    /// The channel every control change is published on.
    pub fn control_channel(&self) -> String {
        self.control_keys().channel().to_string()
    }
}

/// A `{1, revision}` or `{0, actual}` reply.
fn swapped(reply: Value) -> StoreResult<Swapped> {
    match items(reply)?.as_slice() {
        [done, revision] => {
            let revision = number(revision)?;
            Ok(if number(done)? == 1 {
                Ok(revision)
            } else {
                Err(revision)
            })
        }
        other => Err(corrupt(format_args!("control write: {other:?}"))),
    }
}

#[async_trait]
impl ControlStore for RedisStore {
    async fn control_revision(&self) -> StoreResult<u64> {
        let reply = self
            .conn
            .query_as(
                Effect::Read,
                redis::cmd("GET").arg(self.control_keys().revision()),
            )
            .await?;
        match reply {
            Value::Nil => Ok(0),
            v => number(&v),
        }
    }

    async fn control_records(&self) -> StoreResult<Vec<ControlRecord>> {
        let keys = self.control_keys();
        let mut inv = SCRIPTS.control_records.prepare_invoke();
        inv.key(keys.records()).key(keys.revisions());
        let flat = items(self.conn.invoke_as(Effect::Read, &inv).await?)?;
        if !flat.len().is_multiple_of(3) {
            return Err(corrupt("control_records: length is not a multiple of 3"));
        }
        let mut out = flat
            .chunks(3)
            .map(|f| {
                Ok(ControlRecord {
                    name: text(&f[0])?.to_string(),
                    revision: number(&f[1])?,
                    body: text(&f[2])?.to_string(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn control_record(&self, name: &str) -> StoreResult<Option<ControlRecord>> {
        // One record is read with the others: control records are few, and
        // this keeps the read atomic without a script of its own.
        Ok(self
            .control_records()
            .await?
            .into_iter()
            .find(|r| r.name == name))
    }

    async fn control_put(&self, name: &str, body: &str, expected: u64) -> StoreResult<Swapped> {
        let keys = self.control_keys();
        let mut inv = SCRIPTS.control_put.prepare_invoke();
        inv.key(keys.revision())
            .key(keys.records())
            .key(keys.revisions())
            .arg(name)
            .arg(body)
            .arg(expected)
            .arg(keys.channel());
        swapped(self.conn.invoke(&inv).await?)
    }

    async fn control_remove(&self, name: &str, expected: u64) -> StoreResult<Swapped> {
        let keys = self.control_keys();
        let mut inv = SCRIPTS.control_remove.prepare_invoke();
        inv.key(keys.revision())
            .key(keys.records())
            .key(keys.revisions())
            .arg(name)
            .arg(expected)
            .arg(keys.channel());
        swapped(self.conn.invoke(&inv).await?)
    }

    async fn component_put(&self, tenant: &str, sha256: &str, bytes: &[u8]) -> StoreResult<()> {
        let key = self.control_keys().component(tenant, sha256);
        self.conn
            .query(redis::cmd("SET").arg(key).arg(bytes).arg("NX"))
            .await?;
        Ok(())
    }

    async fn component_get(&self, tenant: &str, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        let key = self.control_keys().component(tenant, sha256);
        match self
            .conn
            .query_as(Effect::Read, redis::cmd("GET").arg(key))
            .await?
        {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(b)),
            other => Err(corrupt(format_args!("a component: {other:?}"))),
        }
    }

    async fn component_remove(&self, tenant: &str, sha256: &str) -> StoreResult<bool> {
        let key = self.control_keys().component(tenant, sha256);
        Ok(number(&self.conn.query(redis::cmd("DEL").arg(key)).await?)? > 0)
    }
}
