//! Moving a store's whole content to another store, of the same backend or
//! another: the [`StoreDump`] capability every backend implements, the items
//! it reads and writes ([`Item`]), and (in `lines`) the JSON lines format
//! that `sessiond store export` writes and `sessiond store import` reads.
//!
//! # Format
//!
//! UTF-8 text, one JSON object per line. The first line names the format and
//! its version, and when the export started:
//!
//! ```text
//! {"format":"sessiond-store","version":1,"exported_at":1767225600000}
//! ```
//!
//! Every other line is one item: its `kind` and `tenant` first, then the
//! fields of that kind. Tenants come in name order; within a tenant the kinds
//! come in this order:
//!
//! | `kind` | fields |
//! |---|---|
//! | `session` | `record`: the whole stored session (token hash, public id, version, times and deadlines, user, roles, client, data, plugin state) |
//! | `end-job` | `id` (its place in the end queue, `<ms>-<seq>`), `end_id` (`<public id>.<id>`, the idempotency key its end hooks get), `reason`, `ended_at`, `record` (the session as it ended) |
//! | `kv` | `plugin`, `key`, `value`, `expires_at` (absent: never) |
//! | `audit` | `id` (`<ms>-<seq>`), `at`, `plugin`, `session` (absent: none), `record` |
//! | `audit-once` | `key` (an idempotency key of an audit append), `id` (the record its first append wrote), `expires_at` |
//! | `outbox` | `id`, `message_id` (its `webhook-id`), `url`, `body` (exactly as signed), `created_at`, `due_at`, `attempts`, `last_error` (absent: none) |
//!
//! Times are milliseconds since the Unix epoch. No token appears: the store
//! holds only their hashes. A dump does hold every session's data, so keep it
//! as safe as the store. Being JSON lines, it reads with `jq`:
//! `jq -c 'select(.kind == "session") | .record.user'`.
//!
//! # What moves, and how
//!
//! - Sessions, with their token hash, version and deadlines, also those past
//!   their deadline that no sweeper took yet. An imported session past its
//!   deadline stays so: the target's sweeper ends it, with its end hooks and
//!   reason `expired` or `idle-timeout`. Redis gives its key the grace period
//!   from the import, so that a sweeper still finds it.
//! - End jobs with their ids, so their end ids stay the same and end hooks
//!   that run again after the move write each audit record once. A job some
//!   host had claimed is exported as waiting: the target's end workers run it.
//! - Plugin kv entries with their expiry as an absolute time, and audit
//!   idempotency keys with theirs; those that lapsed are left out (at export)
//!   or counted as [`Imported::Lapsed`] (at import).
//! - Audit records with their ids.
//! - Webhook deliveries still waiting in the outbox, with their ids (so a
//!   delivery sent again after the move carries the same `webhook-id`),
//!   attempts and due times. One leased at export time is due when its
//!   lease would have ended.
//!
//! End jobs and audit records keep their ids, and a stream only grows at its
//! end (as a Redis stream does): one whose id is not after the last id the
//! target's stream of that tenant has handed out cannot be placed and is
//! [`Imported::OutOfOrder`]. An import into a tenant the target never held
//! never meets this.
//!
//! An export reads page by page while the store may change: for an exact
//! copy, stop every host first.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EndJob, StoreResult};
use crate::session::{AuditRecord, EndReason, Millis, SessionRecord};

pub mod lines;

/// About how many items a backend reads for one [`StoreDump::dump_page`] and
/// writes in one step of an import.
pub const PAGE_SIZE: usize = 200;

/// The kinds of item, in the order an export writes them for each tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Session,
    EndJob,
    Kv,
    Audit,
    AuditOnce,
    Outbox,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Session,
        Kind::EndJob,
        Kind::Kv,
        Kind::Audit,
        Kind::AuditOnce,
        Kind::Outbox,
    ];

    /// The kind's name in the format.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::EndJob => "end-job",
            Kind::Kv => "kv",
            Kind::Audit => "audit",
            Kind::AuditOnce => "audit-once",
            Kind::Outbox => "outbox",
        }
    }
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionItem {
    pub tenant: String,
    pub record: SessionRecord,
}

/// A job of the end queue (claimed or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndJobItem {
    pub tenant: String,
    /// The job's place in the tenant's end queue (`<ms>-<seq>`).
    pub id: String,
    /// `<public id>.<id>`, given to the end hooks.
    pub end_id: String,
    pub reason: EndReason,
    pub ended_at: Millis,
    /// The session as it ended.
    pub record: SessionRecord,
}

/// A plugin's kv entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvItem {
    pub tenant: String,
    pub plugin: String,
    pub key: String,
    pub value: String,
    /// When the entry lapses; none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
}

/// A record of the audit stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditItem {
    pub tenant: String,
    /// The record's place in the tenant's audit stream (`<ms>-<seq>`).
    pub id: String,
    pub at: Millis,
    pub plugin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub record: Value,
}

/// An idempotency key of [`super::AuditStore::audit_append`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOnceItem {
    pub tenant: String,
    pub key: String,
    /// The id of the record the first append with the key wrote.
    pub id: String,
    pub expires_at: Millis,
}

/// A webhook delivery waiting in the outbox ([`super::Delivery`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxItem {
    pub tenant: String,
    pub id: String,
    pub message_id: String,
    pub url: String,
    pub body: String,
    pub created_at: Millis,
    pub due_at: Millis,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl OutboxItem {
    /// The delivery as the outbox holds it.
    pub fn delivery(&self) -> super::Delivery {
        super::Delivery {
            id: self.id.clone(),
            message_id: self.message_id.clone(),
            url: self.url.clone(),
            body: self.body.clone(),
            created_at: self.created_at,
            due_at: self.due_at,
            attempts: self.attempts,
            last_error: self.last_error.clone(),
        }
    }

    /// The item of `tenant`'s delivery `d`.
    pub fn of(tenant: &str, d: &super::Delivery) -> OutboxItem {
        OutboxItem {
            tenant: tenant.to_string(),
            id: d.id.clone(),
            message_id: d.message_id.clone(),
            url: d.url.clone(),
            body: d.body.clone(),
            created_at: d.created_at,
            due_at: d.due_at,
            attempts: d.attempts,
            last_error: d.last_error.clone(),
        }
    }
}

/// A page of `tenant`'s outbox as dump items: every backend's
/// [`StoreDump::dump_page`] of [`Kind::Outbox`], over its [`super::Outbox`].
pub async fn outbox_page(
    outbox: &(impl super::Outbox + ?Sized),
    tenant: &str,
    cursor: Option<&str>,
) -> StoreResult<DumpPage> {
    let (page, next) = outbox.outbox_page(tenant, cursor, PAGE_SIZE).await?;
    Ok(DumpPage {
        items: page
            .iter()
            .map(|d| Item::Outbox(OutboxItem::of(tenant, d)))
            .collect(),
        next,
    })
}

/// Imports `items` in order: outbox deliveries through the backend's own
/// [`super::Outbox::outbox_push`] (which keeps a delivery it holds
/// already), every other run of items through `rest`.
pub async fn import_with_outbox<'a, F, Fut>(
    outbox: &(impl super::Outbox + ?Sized),
    items: &'a [Item],
    mut rest: F,
) -> StoreResult<Vec<Imported>>
where
    F: FnMut(&'a [Item]) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Vec<Imported>>>,
{
    let mut out = Vec::with_capacity(items.len());
    let mut left = items;
    while let Some(first) = left.first() {
        let is_outbox = |i: &Item| matches!(i, Item::Outbox(_));
        let len = left
            .iter()
            .take_while(|i| is_outbox(i) == is_outbox(first))
            .count();
        let (run, after) = left.split_at(len);
        left = after;
        if is_outbox(first) {
            for item in run {
                let Item::Outbox(i) = item else {
                    unreachable!("a run of outbox items")
                };
                let queued = outbox.outbox_push(&i.tenant, &[i.delivery()]).await?;
                out.push(if queued > 0 {
                    Imported::Written
                } else {
                    Imported::Exists
                });
            }
        } else {
            out.extend(rest(run).await?);
        }
    }
    Ok(out)
}

/// One item of a store, as one line of the format holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Item {
    Session(SessionItem),
    EndJob(EndJobItem),
    Kv(KvItem),
    Audit(AuditItem),
    AuditOnce(AuditOnceItem),
    Outbox(OutboxItem),
}

impl Item {
    pub fn kind(&self) -> Kind {
        match self {
            Item::Session(_) => Kind::Session,
            Item::EndJob(_) => Kind::EndJob,
            Item::Kv(_) => Kind::Kv,
            Item::Audit(_) => Kind::Audit,
            Item::AuditOnce(_) => Kind::AuditOnce,
            Item::Outbox(_) => Kind::Outbox,
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            Item::Session(i) => &i.tenant,
            Item::EndJob(i) => &i.tenant,
            Item::Kv(i) => &i.tenant,
            Item::Audit(i) => &i.tenant,
            Item::AuditOnce(i) => &i.tenant,
            Item::Outbox(i) => &i.tenant,
        }
    }

    /// What identifies the item within its tenant and kind: the token hash,
    /// the job or audit id, the plugin and key, the idempotency key.
    pub fn key(&self) -> String {
        match self {
            Item::Session(i) => i.record.token_hash.clone(),
            Item::EndJob(i) => i.id.clone(),
            Item::Kv(i) => format!("{}\0{}", i.plugin, i.key),
            Item::Audit(i) => i.id.clone(),
            Item::AuditOnce(i) => i.key.clone(),
            Item::Outbox(i) => i.id.clone(),
        }
    }

    /// Whether the item expired by `now` (kv entries and idempotency keys).
    pub fn lapsed(&self, now: Millis) -> bool {
        match self {
            Item::Kv(i) => i.expires_at.is_some_and(|at| at <= now),
            Item::AuditOnce(i) => i.expires_at <= now,
            _ => false,
        }
    }

    /// Checks what the types do not: ids are stream ids, records belong to
    /// the item's tenant, an end id is the one its job's id gives.
    pub fn check(&self) -> Result<(), String> {
        let tenant_of = |record: &SessionRecord| {
            if record.tenant == self.tenant() {
                Ok(())
            } else {
                Err(format!(
                    "the record's tenant {:?} is not the item's tenant {:?}",
                    record.tenant,
                    self.tenant()
                ))
            }
        };
        match self {
            Item::Session(i) => {
                tenant_of(&i.record)?;
                if i.record.token_hash.is_empty() {
                    return Err("the record has an empty token_hash".into());
                }
                Ok(())
            }
            Item::EndJob(i) => {
                tenant_of(&i.record)?;
                stream_id(&i.id).ok_or_else(|| bad_id("id", &i.id))?;
                let expected = end_id(&i.record.public_id, &i.id);
                if i.end_id != expected {
                    return Err(format!(
                        "end_id {:?} is not <public id>.<id> ({expected:?})",
                        i.end_id
                    ));
                }
                Ok(())
            }
            Item::Kv(_) => Ok(()),
            Item::Audit(i) => stream_id(&i.id)
                .map(drop)
                .ok_or_else(|| bad_id("id", &i.id)),
            Item::AuditOnce(i) => stream_id(&i.id)
                .map(drop)
                .ok_or_else(|| bad_id("id", &i.id)),
            Item::Outbox(i) => {
                if i.id.is_empty() || i.message_id.is_empty() || i.url.is_empty() {
                    return Err("a delivery needs an id, a message_id and a url".into());
                }
                Ok(())
            }
        }
    }
}

fn bad_id(field: &str, id: &str) -> String {
    format!("{field} {id:?} is not a stream id <ms>-<seq> (each at most 2^63 - 1)")
}

/// The end id of the job with `id` of the session with `public_id`, as
/// every backend gives it to the end hooks.
pub fn end_id(public_id: &str, id: &str) -> String {
    format!("{public_id}.{id}")
}

/// The two numbers of a stream id `<ms>-<seq>`, each at most `i64::MAX` (so
/// that every backend stores it exactly).
pub fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    let max = i64::MAX as u64;
    (ms <= max && seq <= max).then_some((ms, seq))
}

impl From<&SessionRecord> for SessionItem {
    fn from(record: &SessionRecord) -> Self {
        SessionItem {
            tenant: record.tenant.clone(),
            record: record.clone(),
        }
    }
}

impl From<&EndJob> for EndJobItem {
    fn from(job: &EndJob) -> Self {
        EndJobItem {
            tenant: job.record.tenant.clone(),
            id: job.id.clone(),
            end_id: job.end_id.clone(),
            reason: job.reason,
            ended_at: job.ended_at,
            record: job.record.clone(),
        }
    }
}

impl From<&AuditRecord> for AuditItem {
    fn from(r: &AuditRecord) -> Self {
        AuditItem {
            tenant: r.tenant.clone(),
            id: r.id.clone(),
            at: r.at,
            plugin: r.plugin.clone(),
            session: r.session.clone(),
            record: r.record.clone(),
        }
    }
}

impl AuditItem {
    /// The record as [`super::AuditStore::audit_page`] returns it.
    pub fn to_record(&self) -> AuditRecord {
        AuditRecord {
            id: self.id.clone(),
            at: self.at,
            tenant: self.tenant.clone(),
            plugin: self.plugin.clone(),
            session: self.session.clone(),
            record: self.record.clone(),
        }
    }
}

/// One page of a tenant's items of one kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DumpPage {
    pub items: Vec<Item>,
    /// Pass as `cursor` to read the next page; none when this page is the
    /// last. A page before the last may be empty.
    pub next: Option<String>,
}

/// What importing one item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Imported {
    /// Written as it was exported.
    Written,
    /// The target already holds an item with the same key (the same session
    /// key, end-job id, kv key, audit id or idempotency key): kept as it is.
    Exists,
    /// A kv entry or idempotency key whose expiry had passed: not written.
    Lapsed,
    /// An end job or audit record whose id is not after the last id the
    /// target's stream handed out: not written (see the module docs).
    OutOfOrder,
}

/// Reading a store's whole content and writing it into another. Reads see
/// everything the store holds, sessions past their deadline included (kv
/// entries and idempotency keys that lapsed excepted); writes keep token
/// hashes, versions, deadlines, end-job ids and audit ids.
#[async_trait]
pub trait StoreDump: Send + Sync + 'static {
    /// The tenants the store holds anything for, in name order. That
    /// includes a tenant whose end queue or audit stream is empty but has
    /// handed out ids.
    async fn dump_tenants(&self) -> StoreResult<Vec<String>>;

    /// Up to about [`PAGE_SIZE`] of the tenant's items of `kind`, after
    /// `cursor` (the `next` of the page before; from the start when none).
    /// An item may come twice while the store changes (Redis scans), but
    /// every item the store holds throughout comes at least once.
    async fn dump_page(
        &self,
        tenant: &str,
        kind: Kind,
        cursor: Option<&str>,
    ) -> StoreResult<DumpPage>;

    /// Writes checked ([`Item::check`]) items, each atomically (a session
    /// with its indexes), and returns what each did, in order. `now` decides
    /// which entries lapsed and, in Redis, when a session key past its
    /// deadline expires. End jobs and audit records of one tenant must come
    /// in id order to be placed.
    async fn import_items(&self, items: &[Item], now: Millis) -> StoreResult<Vec<Imported>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Item, String> {
        let item: Item = serde_json::from_str(line).map_err(|e| e.to_string())?;
        item.check().map(|()| item)
    }

    const RECORD: &str = r#"{"token_hash":"h","public_id":"p","tenant":"t","created_at":1,
        "last_seen_at":1,"absolute_expires_at":9,"idle_timeout_ms":5,"version":2}"#;

    #[test]
    fn lines_are_checked() {
        let job = |id: &str, end_id: &str| {
            format!(
                r#"{{"kind":"end-job","tenant":"t","id":"{id}","end_id":"{end_id}",
                "reason":"expired","ended_at":3,"record":{RECORD}}}"#
            )
        };
        let item = parse(&job("7-0", "p.7-0")).unwrap();
        assert_eq!((item.kind(), item.key()), (Kind::EndJob, "7-0".to_string()));
        let line = serde_json::to_string(&item).unwrap();
        assert!(
            line.starts_with(r#"{"kind":"end-job","tenant":"t","id":"7-0""#),
            "{line}"
        );
        assert_eq!(parse(&line).unwrap(), item);

        for (line, error) in [
            (job("7-0", "p.8-0"), "is not <public id>.<id>"),
            (job("7", "p.7"), "is not a stream id"),
            (
                job("9223372036854775808-0", "p.9223372036854775808-0"),
                "2^63 - 1",
            ),
            (
                format!(r#"{{"kind":"session","tenant":"u","record":{RECORD}}}"#),
                "is not the item's tenant",
            ),
            (
                r#"{"kind":"kv","tenant":"t","plugin":"p","key":"k","value":"v","expire_at":1}"#
                    .into(),
                "unknown field `expire_at`",
            ),
            (
                r#"{"kind":"sessions","tenant":"t"}"#.into(),
                "unknown variant",
            ),
        ] {
            let err = parse(&line).unwrap_err();
            assert!(err.contains(error), "{line}: {err}");
        }
        assert_eq!(stream_id("12-3"), Some((12, 3)));
        assert_eq!(stream_id("12-"), None);
        assert_eq!(stream_id("+1-3"), None);
    }
}
