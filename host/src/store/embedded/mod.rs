//! The durable embedded store: SQLite in one data directory, owned by one
//! process, so a single-host sessiond loses nothing when it restarts.
//!
//! # Files
//!
//! `<dir>/sessiond.db` (with SQLite's `-wal` and `-shm` beside it) holds
//! everything: sessions, end queue and its dead letters, plugin kv, audit
//! streams, idempotency keys and the webhook outbox (`schema.rs` has the
//! tables and the schema version).
//! `<dir>/sessiond.lock` is held with an exclusive `flock` while a process
//! owns the directory and holds its PID; a second open fails naming the
//! directory and that PID.
//!
//! # Writes, reads and group commit
//!
//! One thread (`writer.rs`) owns the only write connection. It takes every
//! operation waiting for it, runs them in one transaction (each under its
//! own savepoint, so each is atomic and one failing does not undo the
//! others), commits once and then answers every caller: concurrent writes
//! share one fsync. Every multi-step operation (create with its limit check
//! and evictions, compare-and-set update with token rotation, touch, every
//! removal with its end jobs, claims, acks, audit appends with their
//! idempotency key) is one such operation, and the single writer makes them
//! serializable. Reads go to a small pool of read connections on blocking
//! threads (`readers.rs`); in WAL mode they never block the writer, and they
//! see every write whose caller has been answered.
//!
//! # Durability
//!
//! [`Durability`] says when a commit reaches the disk:
//!
//! - `full` (the default): the WAL is fsynced at every commit, before any
//!   caller of the batch is answered. An acknowledged write survives a
//!   process crash, an OS crash and a power loss.
//! - `normal` (also spelled `batched`): the WAL is fsynced only at
//!   checkpoints. A process crash loses nothing (committed pages are in the
//!   OS's cache); an OS crash or power loss can lose the commits since the
//!   last checkpoint, but leaves the database consistent.
//! - `off`: nothing is ever fsynced. A process crash loses nothing; an OS
//!   crash or power loss can lose recent commits and can corrupt the file.
//!
//! # Behaviour
//!
//! The same as [`super::memory::MemoryStore`] (both pass the conformance
//! suite): a session past its deadline is invisible to every read but stays
//! until `take_expired` takes it; the per-user limit counts live sessions
//! only and `EvictLru` ends the lowest `last_seen_at` first (ties: lowest
//! token hash); end and audit ids are stream ids (`<ms>-<seq>`, increasing
//! per tenant, also across restarts); kv and idempotency-key expiry follow
//! the wall clock. End-queue consumers are not tracked apart from the jobs
//! they hold, so [`crate::store::EndQueue::prune_end_consumers`] removes none.
//!
//! Opening reads no data: it checks the schema version and sets up
//! connections, so restart time does not grow with the number of sessions
//! (after a crash SQLite also replays the WAL, which checkpoints keep short).
//!
//! # Errors
//!
//! [`StoreError::Unavailable`] for what may pass (I/O errors, a full disk,
//! a directory owned by another process, a stopped writer);
//! [`StoreError::Corrupt`] for a damaged file or unreadable rows;
//! [`StoreError::Backend`] otherwise (a schema newer than this build).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::ErrorCode;

use crate::session::{Millis, SessionRecord};
use crate::store::{StoreError, StoreResult};

mod audit;
mod control;
/// [`crate::store::dump::StoreDump`] for this store.
mod dump;
mod ends;
mod kv;
mod lock;
mod once;
mod outbox;
mod readers;
mod schema;
mod sessions;
mod streams;
mod writer;

pub use lock::LOCK_FILE;
pub use schema::SCHEMA_VERSION;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "sessiond.db";

/// When a committed write reaches the disk (see the module documentation
/// for what each setting can lose).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Every acknowledged write is on disk.
    #[default]
    Full,
    /// A power loss can lose the last commits; a process crash loses nothing.
    #[serde(alias = "batched")]
    Normal,
    /// Never syncs: a power loss can lose commits and corrupt the file.
    Off,
}

/// Where and how to keep the data.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The data directory; created if missing.
    pub dir: PathBuf,
    pub durability: Durability,
    /// How many audit records each tenant's stream keeps.
    pub audit_max_len: usize,
    /// How many read connections the pool keeps.
    pub readers: usize,
}

impl EmbeddedConfig {
    /// The defaults: full durability, [`super::defaults::AUDIT_MAX_LEN`], four read
    /// connections.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            durability: Durability::Full,
            audit_max_len: super::defaults::AUDIT_MAX_LEN,
            readers: 4,
        }
    }
}

/// The SQLite-backed store.
pub struct EmbeddedStore {
    writer: writer::Writer,
    readers: Arc<readers::ReadPool>,
    audit_max_len: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .field("audit_max_len", &self.audit_max_len)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Takes the data directory and opens (or creates) its database. Blocks
    /// for the few file operations that takes; no data is read.
    pub fn open(config: EmbeddedConfig) -> StoreResult<Self> {
        std::fs::create_dir_all(&config.dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "creating data directory {}: {e}",
                config.dir.display()
            ))
        })?;
        let lock = lock::DirLock::acquire(&config.dir)?;
        let path = config.dir.join(DB_FILE);
        let conn = schema::open_writer(&path, config.durability)?;
        // Readers open once the schema exists; if they fail, the lock is
        // released on return.
        let readers = readers::ReadPool::open(path, config.readers)?;
        let writer = writer::Writer::start(conn, lock)?;
        Ok(Self {
            writer,
            readers,
            audit_max_len: config.audit_max_len.max(1),
            dir: config.dir,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A time (or count) as SQLite stores it: clamped to `i64::MAX`, which is
/// later than every real deadline.
fn sql_ms(ms: Millis) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A stored record, at any depth the store accepts.
pub(super) fn decode(json: &str) -> StoreResult<SessionRecord> {
    crate::json::from_stored(json).map_err(|e| StoreError::Corrupt(format!("stored session: {e}")))
}

/// A record to store; one deeper than the store reads back is refused.
pub(super) fn encode(record: &SessionRecord) -> StoreResult<String> {
    crate::json::check_stored(record).map_err(StoreError::Backend)?;
    serde_json::to_string(record).map_err(|e| StoreError::Backend(e.to_string()))
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        match &e {
            E::SqliteFailure(f, _) => match f.code {
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::PermissionDenied
                | ErrorCode::ReadOnly => StoreError::Unavailable(e.to_string()),
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StoreError::Corrupt(e.to_string())
                }
                _ => StoreError::Backend(e.to_string()),
            },
            E::FromSqlConversionFailure(..)
            | E::IntegralValueOutOfRange(..)
            | E::InvalidColumnType(..)
            | E::Utf8Error(..) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}
