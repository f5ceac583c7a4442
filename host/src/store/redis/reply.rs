//! Reading Redis replies: strings, numbers and arrays, session records (from
//! their `r`, `v` and `l` fields), end jobs, dead letters and audit records. A reply of an
//! unexpected shape is [`StoreError::Corrupt`]. Stored JSON is read with
//! [`crate::json::from_stored`], so any depth a store accepts reads back.

use redis::Value;

use crate::session::{AuditRecord, EndReason, SessionRecord};
use crate::store::{DeadLetter, EndJob, Remembered, StoreError, StoreResult};
use crate::trace::TraceParent;

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn text(v: &Value) -> StoreResult<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).map_err(corrupt),
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

pub(super) fn number(v: &Value) -> StoreResult<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).map_err(corrupt),
        other => text(other)?
            .parse()
            .map_err(|e| corrupt(format_args!("bad number: {e}"))),
    }
}

pub(super) fn items(v: Value) -> StoreResult<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

/// A record from its JSON (`r`) and its authoritative version (`v`) and
/// last_seen_at (`l`).
pub(super) fn parse_record(r: &Value, v: &Value, l: &Value) -> StoreResult<SessionRecord> {
    let mut record: SessionRecord = crate::json::from_stored(text(r)?).map_err(corrupt)?;
    record.version = number(v)?;
    record.last_seen_at = number(l)?;
    Ok(record)
}

/// Records from a flat `r, v, l, r, v, l, …` list.
pub(super) fn records(flat: &[Value]) -> StoreResult<Vec<SessionRecord>> {
    if !flat.len().is_multiple_of(3) {
        return Err(corrupt("record list length is not a multiple of 3"));
    }
    flat.chunks(3)
        .map(|c| parse_record(&c[0], &c[1], &c[2]))
        .collect()
}

/// `None` for an empty reply, else the one record in it.
pub(super) fn one_record(reply: &[Value]) -> StoreResult<Option<SessionRecord>> {
    match reply {
        [] => Ok(None),
        [r, v, l] => parse_record(r, v, l).map(Some),
        _ => Err(corrupt("expected one record")),
    }
}

/// What an idempotency key recorded, from its `q`, `r`, `t` fields (`r`
/// and `t` absent or nil for a remove); none when `q` is.
pub(super) fn remembered(fields: &[Value]) -> StoreResult<Option<Remembered>> {
    let present = |i: usize| fields.get(i).filter(|v| !matches!(v, Value::Nil));
    let Some(q) = present(0) else {
        return Ok(None);
    };
    let created = match present(1) {
        Some(r) => {
            let record: SessionRecord = crate::json::from_stored(text(r)?).map_err(corrupt)?;
            let sealed = present(2).map(text).transpose()?.unwrap_or_default();
            Some((record, sealed.to_string()))
        }
        None => None,
    };
    Ok(Some(Remembered {
        request: text(q)?.to_string(),
        created,
    }))
}

/// A stream entry `[id, [field, value, …]]`: its id and its fields, names
/// and values alternating.
pub(super) fn entry(entry: Value) -> StoreResult<(String, Vec<Value>)> {
    let mut parts = items(entry)?.into_iter();
    let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
        return Err(corrupt("malformed stream entry"));
    };
    let id = text(&id)?.to_string();
    let fields = match fields {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => items(other)?,
    };
    Ok((id, fields))
}

/// The end job of the ends stream's entry `id` (fields `r`, `v`, `l`,
/// `why`, `at`, and `tp` when a request queued it), on its `deliveries`th
/// delivery.
pub(super) fn end_job(
    id: String,
    fields: &[Value],
    reclaimed: bool,
    deliveries: u64,
) -> StoreResult<EndJob> {
    let (mut r, mut v, mut l, mut why, mut at) = (None, None, None, None, None);
    let mut trace = None;
    for pair in fields.chunks(2) {
        let [k, val] = pair else {
            return Err(corrupt("odd end job field list"));
        };
        match text(k)? {
            "r" => r = Some(val),
            "v" => v = Some(val),
            "l" => l = Some(val),
            "why" => why = Some(text(val)?),
            "at" => at = Some(number(val)?),
            // A traceparent that cannot be read costs the job its trace only.
            "tp" => trace = text(val).ok().and_then(TraceParent::parse),
            _ => {}
        }
    }
    let (Some(r), Some(v), Some(l), Some(why), Some(at)) = (r, v, l, why, at) else {
        return Err(corrupt(format_args!("end job {id} lacks a field")));
    };
    let record = parse_record(r, v, l)?;
    let reason = EndReason::parse(why)
        .ok_or_else(|| corrupt(format_args!("end job {id}: unknown reason {why:?}")))?;
    Ok(EndJob {
        end_id: format!("{}.{id}", record.public_id),
        id,
        record,
        reason,
        ended_at: at,
        reclaimed,
        deliveries,
        trace,
    })
}

/// A dead letter from an entry of the dead stream (fields `job`, `why`,
/// `at`, `deliveries`, and what could be copied of the job: `r`, `reason`).
/// The entry's own id is not the job's.
pub(super) fn dead_letter(entry_value: Value) -> StoreResult<DeadLetter> {
    let (_, fields) = entry(entry_value)?;
    let (mut job, mut why, mut at, mut deliveries) = (None, None, 0, 0);
    let (mut end_id, mut reason) = (None, None);
    let mut public_id = None;
    for pair in fields.chunks(2) {
        let [k, val] = pair else {
            return Err(corrupt("odd dead letter field list"));
        };
        match text(k)? {
            "job" => job = Some(text(val)?.to_string()),
            "why" => why = Some(text(val)?.to_string()),
            "at" => at = number(val)?,
            "deliveries" => deliveries = number(val)?,
            // A record that could not be read is why some jobs are here.
            "r" => {
                public_id = text(val)
                    .ok()
                    .and_then(|r| crate::json::from_stored::<PublicId>(r).ok())
            }
            "reason" => reason = text(val).ok().and_then(EndReason::parse),
            _ => {}
        }
    }
    let (Some(id), Some(why)) = (job, why) else {
        return Err(corrupt("dead letter lacks a field"));
    };
    if let Some(p) = public_id {
        end_id = Some(format!("{}.{id}", p.public_id));
    }
    Ok(DeadLetter {
        id,
        end_id,
        reason,
        why,
        at,
        deliveries,
    })
}

/// The one member of a stored record a dead letter shows.
#[derive(serde::Deserialize)]
struct PublicId {
    public_id: String,
}

/// An audit record from an XRANGE entry: `[id, [field, value, …]]`.
pub(super) fn audit_record(tenant: &str, entry: Value) -> StoreResult<AuditRecord> {
    let mut parts = items(entry)?.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(corrupt("malformed audit entry"));
    };
    let id = text(&id)?.to_string();
    let (mut at, mut plugin, mut session, mut record) = (None, None, None, None);
    let fields = match fields {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => items(other)?,
    };
    for pair in fields.chunks(2) {
        let [k, v] = pair else {
            return Err(corrupt("odd audit field list"));
        };
        match text(k)? {
            "at" => at = Some(number(v)?),
            "plugin" => plugin = Some(text(v)?.to_string()),
            "session" => session = Some(text(v)?.to_string()),
            "record" => record = Some(crate::json::from_stored(text(v)?).map_err(corrupt)?),
            _ => {}
        }
    }
    match (at, plugin, record) {
        (Some(at), Some(plugin), Some(record)) => Ok(AuditRecord {
            id,
            at,
            tenant: tenant.to_string(),
            plugin,
            session,
            record,
        }),
        _ => Err(corrupt(format_args!("audit entry {id} lacks a field"))),
    }
}

/// The smallest stream id after `id` (`<ms>-<seq>`), as XRANGE's inclusive
/// start; none when `id` is the largest there is.
pub(super) fn id_after(id: &str) -> StoreResult<Option<String>> {
    let bad = || StoreError::Backend(format!("invalid stream id {id:?}"));
    let (ms, seq) = id.split_once('-').ok_or_else(bad)?;
    let (ms, seq): (u64, u64) = (
        ms.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    );
    Ok(match seq.checked_add(1) {
        Some(seq) => Some(format!("{ms}-{seq}")),
        None => ms.checked_add(1).map(|ms| format!("{ms}-0")),
    })
}
