//! Stream ids (`<ms>-<seq>`, ordered like Redis stream ids) for end jobs and
//! audit records, and each tenant's stream counters in the `streams` table.
//!
//! The last id handed out is stored, not derived from the entries, so ids
//! keep increasing across restarts even after every entry was acknowledged
//! or trimmed away.

use rusqlite::{Connection, OptionalExtension, params};

use super::sql_ms;
use crate::session::Millis;
use crate::store::{StoreError, StoreResult};

/// The end queue's stream.
pub(super) const ENDS: &str = "ends";
/// The audit stream.
pub(super) const AUDIT: &str = "audit";

/// A stream id: milliseconds and a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct StreamId {
    pub ms: i64,
    pub seq: i64,
}

impl StreamId {
    /// Reads `<ms>-<seq>`, or `<ms>` for `<ms>-0`.
    pub(super) fn parse(text: &str) -> StoreResult<Self> {
        let bad = || StoreError::Backend(format!("invalid stream id {text:?}"));
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        let ms: u64 = ms.parse().map_err(|_| bad())?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        Ok(Self {
            ms: sql_ms(ms),
            seq: sql_ms(seq),
        })
    }

    /// The id after `self` for an entry added at `now`.
    fn next(self, now: Millis) -> Self {
        let now = sql_ms(now);
        if now > self.ms {
            Self { ms: now, seq: 0 }
        } else {
            Self {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One tenant's counters of one stream.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stream {
    pub last: StreamId,
    /// How many entries the stream holds (kept for the audit stream only).
    pub len: i64,
}

impl Stream {
    pub(super) fn load(conn: &Connection, tenant: &str, name: &str) -> StoreResult<Self> {
        let found = conn
            .prepare_cached(
                "SELECT last_ms, last_seq, len FROM streams WHERE tenant = ?1 AND name = ?2",
            )?
            .query_row(params![tenant, name], |r| {
                Ok(Stream {
                    last: StreamId {
                        ms: r.get(0)?,
                        seq: r.get(1)?,
                    },
                    len: r.get(2)?,
                })
            })
            .optional()?;
        Ok(found.unwrap_or_default())
    }

    /// Hands out the next id (call [`Stream::save`] afterwards).
    pub(super) fn advance(&mut self, now: Millis) -> StreamId {
        self.last = self.last.next(now);
        self.last
    }

    pub(super) fn save(&self, conn: &Connection, tenant: &str, name: &str) -> StoreResult<()> {
        conn.prepare_cached(
            "INSERT INTO streams (tenant, name, last_ms, last_seq, len) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, name) DO UPDATE
             SET last_ms = excluded.last_ms, last_seq = excluded.last_seq, len = excluded.len",
        )?
        .execute(params![tenant, name, self.last.ms, self.last.seq, self.len])?;
        Ok(())
    }
}
