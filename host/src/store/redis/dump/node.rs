//! What scanning Redis for a dump needs: a key for each master, so that a
//! script run with it scans that node ([`RedisStore::node_keys`]), glob
//! patterns, and the tenant name inside a key.

use std::collections::BTreeMap;

use redis::Value;

use super::super::RedisStore;
use super::super::reply::{corrupt, items, number, text};
use crate::store::StoreResult;

/// The number of Redis Cluster hash slots.
const SLOTS: u16 = 16384;

/// How many hash tags [`key_in_slots`] tries; far more than any slot range
/// needs.
const TAG_TRIES: u32 = 10_000_000;

/// The CRC16 (XMODEM) Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key whose hash tag is `tag`.
fn slot(tag: &str) -> u16 {
    crc16(tag.as_bytes()) % SLOTS
}

/// A key whose slot lies in `start..=end`.
fn key_in_slots(start: u16, end: u16) -> Option<String> {
    (0..TAG_TRIES)
        .map(|n| n.to_string())
        .find(|tag| (start..=end).contains(&slot(tag)))
        .map(|tag| format!("sessiond-scan:{{{tag}}}"))
}

impl RedisStore {
    /// One key for each master, hashing to a slot that master serves; a
    /// single server needs only one, any key.
    pub(super) async fn node_keys(&self) -> StoreResult<Vec<String>> {
        if self.conn.mode() != "cluster" {
            return Ok(vec![format!("{}:scan", self.prefix)]);
        }
        let reply = items(self.conn.query(redis::cmd("CLUSTER").arg("SLOTS")).await?)?;
        // Each entry: start, end, [host, port, ...] of the master, replicas.
        let mut masters: BTreeMap<String, (u16, u16)> = BTreeMap::new();
        for range in reply {
            let range = items(range)?;
            let (Some(start), Some(end), Some(master)) =
                (range.first(), range.get(1), range.get(2))
            else {
                return Err(corrupt("CLUSTER SLOTS: a short slot range"));
            };
            let master = items(master.clone())?;
            let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
                return Err(corrupt("CLUSTER SLOTS: a master without an address"));
            };
            let slot =
                |v: &Value| -> StoreResult<u16> { u16::try_from(number(v)?).map_err(corrupt) };
            masters
                .entry(format!("{}:{}", text(host)?, number(port)?))
                .or_insert((slot(start)?, slot(end)?));
        }
        masters
            .values()
            .map(|&(start, end)| {
                key_in_slots(start, end)
                    .ok_or_else(|| corrupt(format_args!("no key found for slots {start}-{end}")))
            })
            .collect()
    }
}

/// `text` with the characters special to `SCAN MATCH` escaped.
pub(super) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A number that may be negative (`PEXPIRETIME`'s -1 and -2, script answers).
pub(super) fn signed(v: &Value) -> StoreResult<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other)?
            .parse()
            .map_err(|e| corrupt(format_args!("bad number: {e}"))),
    }
}

/// A tenant name as the key layout escapes it, unescaped; none when it is
/// not one.
pub(super) fn unescape(name: &str) -> Option<String> {
    if name == "%" {
        return Some(String::new());
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            "3A" => ':',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The tenant whose key `key` is (`<prefix>:{<tenant>}:...`).
pub(super) fn tenant_of_key(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(":{")?;
    let (tenant, _) = rest.split_once("}:")?;
    if tenant.contains('}') {
        return None;
    }
    unescape(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // CLUSTER KEYSLOT of these keys.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot(""), 0);
        let key = key_in_slots(5461, 10922).unwrap();
        let tag = &key[key.find('{').unwrap() + 1..key.len() - 1];
        assert!((5461..=10922).contains(&slot(tag)), "{key}");
        assert!(key_in_slots(100, 100).is_some());
    }

    #[test]
    fn tenant_names_come_back_from_their_keys() {
        assert_eq!(
            tenant_of_key("sessiond", "sessiond:{demo}:s:ab").as_deref(),
            Some("demo")
        );
        assert_eq!(
            tenant_of_key("sessiond", "sessiond:{a%3Ab%7B%7D%25}:audit").as_deref(),
            Some("a:b{}%")
        );
        assert_eq!(
            tenant_of_key("sessiond", "sessiond:{%}:ends").as_deref(),
            Some("")
        );
        assert_eq!(tenant_of_key("sessiond", "other:{x}:ends"), None);
        assert_eq!(tenant_of_key("sessiond", "sessiond:{x%zz}:ends"), None);
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
