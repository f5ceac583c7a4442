//! [`StoreDump`](crate::store::dump::StoreDump) for Redis: scripts of their
//! own (`lua/dump_*.lua`, `lua/scan_*.lua`, `lua/import_*.lua`), each
//! touching the keys of one tenant only, so that everything works on Redis
//! Cluster as on one server.
//!
//! - Tenants: a `SCAN` for `<prefix>:{*` on every master (`node`).
//! - Sessions: a `ZSCAN` of `deadlines`, which names every stored session,
//!   reading each one's `r`, `v` and `l`. Kv entries and idempotency keys: a
//!   `SCAN` of the tenant's `kv:*` and `once:*` keys on its node. End jobs
//!   and audit records: `XRANGE` in id order.
//! - Import: one script per run of up to
//!   [`PAGE_SIZE`](crate::store::dump::PAGE_SIZE) items of one tenant and
//!   kind. A session is written with its user and deadline index entries and
//!   its key expires the grace period after its deadline or, when that
//!   passed, after the import. End jobs and audit records are `XADD`ed under
//!   their own ids (the end id given to hooks is `<public id>.<entry id>`, so
//!   it stays the same); kv entries and idempotency keys are `SET NX` with
//!   `PXAT` their expiry.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use async_trait::async_trait;
use redis::{Script, Value};

use super::RedisStore;
use super::keys::{TenantKeys, audit_fields, clamp, session_fields};
use super::reply::{
    audit_record, corrupt, end_job, entry as stream_entry, id_after, items, records, text,
};
use crate::session::Millis;
use crate::store::dump::{
    self, AuditItem, AuditOnceItem, DumpPage, EndJobItem, Imported, Item, Kind, KvItem, PAGE_SIZE,
    SessionItem, StoreDump,
};
use crate::store::{StoreError, StoreResult};

mod node;

use node::{glob_escape, signed, tenant_of_key, unescape};

struct Scripts {
    dump_sessions: Script,
    scan_keys: Script,
    scan_strings: Script,
    import_sessions: Script,
    import_stream: Script,
    import_strings: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let s = |body: &str| Script::new(&format!("{}{body}", include_str!("lua/prelude.lua")));
    Scripts {
        dump_sessions: s(include_str!("lua/dump_sessions.lua")),
        scan_keys: s(include_str!("lua/scan_keys.lua")),
        scan_strings: s(include_str!("lua/scan_strings.lua")),
        import_sessions: s(include_str!("lua/import_sessions.lua")),
        import_stream: s(include_str!("lua/import_stream.lua")),
        import_strings: s(include_str!("lua/import_strings.lua")),
    }
});

/// The `next` of a scan step: none once the cursor is back at 0.
fn scan_next(cursor: &Value) -> StoreResult<Option<String>> {
    let cursor = text(cursor)?;
    Ok((cursor != "0").then(|| cursor.to_string()))
}

/// Splits a scan script's reply into its next cursor and the rest.
fn scan_reply(reply: Value) -> StoreResult<(Option<String>, Vec<Value>)> {
    let mut reply = items(reply)?;
    if reply.is_empty() {
        return Err(corrupt("a scan step answered nothing"));
    }
    let rest = reply.split_off(1);
    Ok((scan_next(&reply[0])?, rest))
}

impl RedisStore {
    async fn session_page(&self, keys: &TenantKeys, cursor: Option<&str>) -> StoreResult<DumpPage> {
        let mut inv = SCRIPTS.dump_sessions.prepare_invoke();
        inv.key(keys.deadlines())
            .arg(keys.base())
            .arg(cursor.unwrap_or("0"))
            .arg(PAGE_SIZE);
        let (next, flat) = scan_reply(self.conn.invoke(&inv).await?)?;
        let items = records(&flat)?
            .iter()
            .map(|r| Item::Session(SessionItem::from(r)))
            .collect();
        Ok(DumpPage { items, next })
    }

    /// A page of a stream (`ends` or `audit`) in id order, after `cursor`.
    async fn stream_page(
        &self,
        tenant: &str,
        key: String,
        kind: Kind,
        cursor: Option<&str>,
    ) -> StoreResult<DumpPage> {
        let start = match cursor.map(id_after).transpose()? {
            None => "-".to_string(),
            Some(Some(next)) => next,
            Some(None) => return Ok(DumpPage::default()),
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(key).arg(start).arg("+").arg("COUNT").arg(PAGE_SIZE);
        let entries = items(self.conn.query(&cmd).await?)?;
        let full = entries.len() >= PAGE_SIZE;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            out.push(match kind {
                Kind::EndJob => {
                    let (id, fields) = stream_entry(entry)?;
                    // Exported as waiting: the importer's workers deliver it anew.
                    Item::EndJob(EndJobItem::from(&end_job(id, &fields, false, 0)?))
                }
                _ => Item::Audit(AuditItem::from(&audit_record(tenant, entry)?)),
            });
        }
        let next = if full {
            out.last().map(Item::key)
        } else {
            None
        };
        Ok(DumpPage { items: out, next })
    }

    /// A scan step over the tenant's kv entries or idempotency keys.
    async fn string_page(
        &self,
        tenant: &str,
        keys: &TenantKeys,
        kind: Kind,
        cursor: Option<&str>,
    ) -> StoreResult<DumpPage> {
        let start = match kind {
            Kind::Kv => format!("{}kv:", keys.base()),
            _ => format!("{}once:", keys.base()),
        };
        let mut inv = SCRIPTS.scan_strings.prepare_invoke();
        inv.key(keys.deadlines())
            .arg(cursor.unwrap_or("0"))
            .arg(format!("{}*", glob_escape(&start)))
            .arg(PAGE_SIZE);
        let (next, flat) = scan_reply(self.conn.invoke(&inv).await?)?;
        if !flat.len().is_multiple_of(3) {
            return Err(corrupt("scan_strings: not key, value, expiry triples"));
        }
        let mut out = Vec::with_capacity(flat.len() / 3);
        for entry in flat.chunks(3) {
            let key = text(&entry[0])?;
            let name = key
                .strip_prefix(&start)
                .ok_or_else(|| corrupt(format_args!("scanned key {key:?} is not the tenant's")))?;
            let value = text(&entry[1])?.to_string();
            // -2: gone meanwhile; -1: no expiry.
            let expires_at = match signed(&entry[2])? {
                -2 => continue,
                -1 => None,
                at => Some(at as Millis),
            };
            out.push(match kind {
                Kind::Kv => {
                    let (plugin, key) = name
                        .split_once(':')
                        .and_then(|(p, k)| Some((unescape(p)?, k)))
                        .ok_or_else(|| corrupt(format_args!("kv key {key:?}")))?;
                    Item::Kv(KvItem {
                        tenant: tenant.to_string(),
                        plugin,
                        key: key.to_string(),
                        value,
                        expires_at,
                    })
                }
                _ => Item::AuditOnce(AuditOnceItem {
                    tenant: tenant.to_string(),
                    key: name.to_string(),
                    id: value,
                    expires_at: expires_at.ok_or_else(|| {
                        corrupt(format_args!("idempotency key {key:?} has no expiry"))
                    })?,
                }),
            });
        }
        Ok(DumpPage { items: out, next })
    }

    /// Writes a run of items of one tenant and kind, none lapsed, in one
    /// script; returns what each did.
    async fn import_run(
        &self,
        keys: &TenantKeys,
        run: &[&Item],
        now: Millis,
    ) -> StoreResult<Vec<Imported>> {
        let Some(first) = run.first() else {
            return Ok(Vec::new());
        };
        let mut inv = match first.kind() {
            Kind::Session => SCRIPTS.import_sessions.prepare_invoke(),
            Kind::EndJob | Kind::Audit => SCRIPTS.import_stream.prepare_invoke(),
            Kind::Kv | Kind::AuditOnce => SCRIPTS.import_strings.prepare_invoke(),
            // dump::import_with_outbox pushes those through the outbox.
            Kind::Outbox => return Err(StoreError::Backend("outbox items in a script run".into())),
        };
        match first.kind() {
            Kind::Session => {
                inv.key(keys.deadlines()).arg(keys.base());
            }
            Kind::EndJob => {
                inv.key(keys.ends()).arg("ends").arg(self.audit_max_len);
            }
            Kind::Audit => {
                inv.key(keys.audit()).arg("audit").arg(self.audit_max_len);
            }
            Kind::Kv | Kind::AuditOnce | Kind::Outbox => {}
        }
        for (n, item) in run.iter().enumerate() {
            match item {
                Item::Session(i) => {
                    let r = &i.record;
                    inv.arg(&r.token_hash);
                    for f in session_fields(r)? {
                        inv.arg(f);
                    }
                    // Past its deadline, the key lives the grace period from
                    // now, so that a sweeper still takes it.
                    inv.arg(self.pexpireat(r.expires_at().max(now)));
                }
                Item::EndJob(i) => {
                    let [r, v, l, ..] = session_fields(&i.record)?;
                    inv.arg(&i.id).arg(10);
                    inv.arg("r").arg(r).arg("v").arg(v).arg("l").arg(l);
                    inv.arg("why").arg(i.reason.as_str());
                    inv.arg("at").arg(clamp(i.ended_at));
                }
                Item::Audit(i) => {
                    let fields = audit_fields(&i.plugin, i.session.as_deref(), &i.record, i.at);
                    inv.arg(&i.id).arg(fields.len());
                    for f in fields {
                        inv.arg(f);
                    }
                }
                Item::Kv(i) => {
                    let key = keys.kv(&i.plugin, &i.key);
                    if n == 0 {
                        inv.key(&key);
                    }
                    let at = i.expires_at.map(|at| clamp(at).to_string());
                    inv.arg(key).arg(&i.value).arg(at.unwrap_or_default());
                }
                Item::AuditOnce(i) => {
                    let key = keys.once(&i.key);
                    if n == 0 {
                        inv.key(&key);
                    }
                    inv.arg(key).arg(&i.id).arg(clamp(i.expires_at));
                }
                Item::Outbox(_) => {}
            }
        }
        let answers = items(self.conn.invoke(&inv).await?)?;
        if answers.len() != run.len() {
            return Err(corrupt(format_args!(
                "an import step answered {} outcomes for {} items",
                answers.len(),
                run.len()
            )));
        }
        answers
            .iter()
            .map(|a| match signed(a)? {
                1 => Ok(Imported::Written),
                0 => Ok(Imported::Exists),
                -1 => Ok(Imported::OutOfOrder),
                other => Err(corrupt(format_args!("an import step answered {other}"))),
            })
            .collect()
    }
}

#[async_trait]
impl StoreDump for RedisStore {
    async fn dump_tenants(&self) -> StoreResult<Vec<String>> {
        let pattern = format!("{}:{{*", glob_escape(&self.prefix));
        let mut tenants = BTreeSet::new();
        for node in self.node_keys().await? {
            let mut cursor = "0".to_string();
            loop {
                let mut inv = SCRIPTS.scan_keys.prepare_invoke();
                inv.key(&node).arg(&cursor).arg(&pattern).arg(PAGE_SIZE);
                let (next, keys) = scan_reply(self.conn.invoke(&inv).await?)?;
                for key in &keys {
                    tenants.extend(tenant_of_key(&self.prefix, text(key)?));
                }
                match next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
        }
        Ok(tenants.into_iter().collect())
    }

    async fn dump_page(
        &self,
        tenant: &str,
        kind: Kind,
        cursor: Option<&str>,
    ) -> StoreResult<DumpPage> {
        let keys = self.keys(tenant);
        match kind {
            Kind::Session => self.session_page(&keys, cursor).await,
            Kind::EndJob => self.stream_page(tenant, keys.ends(), kind, cursor).await,
            Kind::Audit => self.stream_page(tenant, keys.audit(), kind, cursor).await,
            Kind::Kv | Kind::AuditOnce => self.string_page(tenant, &keys, kind, cursor).await,
            Kind::Outbox => dump::outbox_page(self, tenant, cursor).await,
        }
    }

    async fn import_items(&self, items: &[Item], now: Millis) -> StoreResult<Vec<Imported>> {
        dump::import_with_outbox(self, items, |run| self.import_scripted(run, now)).await
    }
}

impl RedisStore {
    /// Imports items of every kind but the outbox, a script per run of one
    /// tenant and kind.
    async fn import_scripted(&self, items: &[Item], now: Millis) -> StoreResult<Vec<Imported>> {
        let mut out = Vec::with_capacity(items.len());
        let mut rest = items;
        while let Some(first) = rest.first() {
            let same = |i: &Item| i.tenant() == first.tenant() && i.kind() == first.kind();
            let len = rest.iter().take_while(|i| same(i)).count().min(PAGE_SIZE);
            let (run, after) = rest.split_at(len);
            rest = after;
            let keys = self.keys(first.tenant());
            let live: Vec<&Item> = run.iter().filter(|i| !i.lapsed(now)).collect();
            let mut answers = self.import_run(&keys, &live, now).await?.into_iter();
            for item in run {
                out.push(if item.lapsed(now) {
                    Imported::Lapsed
                } else {
                    answers.next().expect("one answer per live item")
                });
            }
        }
        Ok(out)
    }
}
