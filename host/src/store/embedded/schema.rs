//! The database's tables, its schema version and the upgrade path, and the
//! settings every connection gets.
//!
//! The schema version lives in the file (`PRAGMA user_version`). [`STEPS`]
//! holds one SQL script per version: a file at version `n` is brought up to
//! date by running `STEPS[n..]` in one transaction, so adding version 2 means
//! appending its script. A file with a version newer than this build knows is
//! refused untouched.
//!
//! Times are milliseconds since the Unix epoch, stored as SQLite integers
//! (clamped to `i64::MAX`, far beyond any real deadline). Session and end-job
//! records are the [`crate::session::SessionRecord`] JSON; the columns beside
//! them are the indexed copies of the fields lookups need.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::Durability;
use crate::store::{StoreError, StoreResult};

/// Marks the file as a sessiond store (`PRAGMA application_id`, "sesd").
pub(super) const APPLICATION_ID: i32 = 0x7365_7364;

/// Version 1: sessions, end queue, plugin kv, audit stream. A file is
/// created by running every step, so this one stays as version 1 wrote it.
const V1: &str = "
CREATE TABLE sessions (
    tenant       TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL,
    user         TEXT,              -- NULL when anonymous
    last_seen_at INTEGER NOT NULL,  -- LRU order for eviction
    deadline     INTEGER NOT NULL,  -- min(absolute, last_seen_at + idle)
    record       TEXT    NOT NULL   -- the SessionRecord JSON
);
CREATE UNIQUE INDEX sessions_key ON sessions (tenant, token_hash);
CREATE INDEX sessions_user ON sessions (tenant, user, last_seen_at, token_hash)
    WHERE user IS NOT NULL;
CREATE INDEX sessions_deadline ON sessions (tenant, deadline, token_hash);

-- The last id handed out per tenant and stream ('ends', 'audit'), and the
-- number of entries the audit stream holds (for its cap).
CREATE TABLE streams (
    tenant   TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    last_ms  INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    len      INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;

CREATE TABLE ends (
    tenant     TEXT    NOT NULL,
    ms         INTEGER NOT NULL,  -- job id <ms>-<seq>
    seq        INTEGER NOT NULL,
    record     TEXT    NOT NULL,  -- the session as it ended
    reason     TEXT    NOT NULL,
    ended_at   INTEGER NOT NULL,
    consumer   TEXT,              -- the holder; NULL until first claimed
    claimed_at INTEGER            -- wall clock of the last claim
);
CREATE UNIQUE INDEX ends_id ON ends (tenant, ms, seq);
CREATE INDEX ends_waiting ON ends (tenant, ms, seq) WHERE claimed_at IS NULL;
CREATE INDEX ends_claimed ON ends (tenant, ms, seq) WHERE claimed_at IS NOT NULL;

CREATE TABLE kv (
    tenant     TEXT    NOT NULL,
    plugin     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    expires_at INTEGER            -- NULL: never
);
CREATE UNIQUE INDEX kv_key ON kv (tenant, plugin, key);
CREATE INDEX kv_expiry ON kv (tenant, expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE audit (
    tenant  TEXT    NOT NULL,
    ms      INTEGER NOT NULL,     -- record id <ms>-<seq>
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    plugin  TEXT    NOT NULL,
    session TEXT,
    record  TEXT    NOT NULL      -- JSON
);
CREATE UNIQUE INDEX audit_id ON audit (tenant, ms, seq);

-- Idempotency keys of audit appends and the id the first one wrote.
CREATE TABLE audit_once (
    tenant     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE INDEX audit_once_expiry ON audit_once (tenant, expires_at);
";

/// Version 2: end jobs count their deliveries; jobs that cannot finish go
/// to a dead-letter table. A job claimed before the upgrade was delivered
/// once.
const V2: &str = "
ALTER TABLE ends ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
UPDATE ends SET deliveries = 1 WHERE claimed_at IS NOT NULL;

CREATE TABLE dead_ends (
    tenant     TEXT    NOT NULL,
    ms         INTEGER NOT NULL,  -- the job's id <ms>-<seq> in the queue
    seq        INTEGER NOT NULL,
    record     TEXT    NOT NULL,  -- the session as it ended, as queued
    reason     TEXT    NOT NULL,
    ended_at   INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    why        TEXT    NOT NULL,  -- why it was taken out
    at         INTEGER NOT NULL   -- when
);
CREATE UNIQUE INDEX dead_ends_id ON dead_ends (tenant, ms, seq);
CREATE INDEX dead_ends_at ON dead_ends (tenant, at);
";

/// Version 3: idempotency keys of creates and removes, each recorded in the
/// transaction of the write it guards.
const V3: &str = "
CREATE TABLE once_keys (
    tenant     TEXT    NOT NULL,
    id         TEXT    NOT NULL,  -- a digest of the tenant and the client's key
    request    TEXT    NOT NULL,  -- a digest of what the request asked for
    record     TEXT,              -- create: the session as created
    sealed     TEXT,              -- create: its token, sealed with the client's key
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX once_keys_expiry ON once_keys (tenant, expires_at);
";

/// Version 4: the webhook outbox. A row is one delivery; a lease moves its
/// `due_at` to when the lease runs out, so a leased row is simply not due.
/// The table has a rowid, like the other tables whose rows carry a payload
/// (`body`), so its key index stays small.
const V4: &str = "
CREATE TABLE outbox (
    tenant     TEXT    NOT NULL,
    id         TEXT    NOT NULL,  -- unique in the tenant: the message id and the endpoint
    message_id TEXT    NOT NULL,  -- webhook-id, the same on every attempt
    url        TEXT    NOT NULL,
    body       TEXT    NOT NULL,  -- the JSON body, exactly as signed
    created_at INTEGER NOT NULL,
    due_at     INTEGER NOT NULL,  -- leased: when the lease runs out
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,              -- NULL before the first failure
    PRIMARY KEY (tenant, id)
);
CREATE INDEX outbox_due ON outbox (tenant, due_at, id);
CREATE INDEX outbox_created ON outbox (tenant, created_at);
";

/// Version 5: an end job keeps the `traceparent` of the request that ended
/// its session (NULL: the sweeper ended it, or an older version queued it).
const V5: &str = "
ALTER TABLE ends ADD COLUMN trace TEXT;
";

/// Version 6: the control plane: tenants created through the operator API,
/// their uploaded components, and the control revision.
const V6: &str = "
CREATE TABLE control (
    name     TEXT    NOT NULL PRIMARY KEY,
    revision INTEGER NOT NULL,
    body     TEXT    NOT NULL  -- the record JSON
) WITHOUT ROWID;
CREATE TABLE components (
    tenant TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    wasm   BLOB NOT NULL,
    PRIMARY KEY (tenant, sha256)
) WITHOUT ROWID;
CREATE TABLE control_revision (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 0),
    revision INTEGER NOT NULL
);
INSERT INTO control_revision VALUES (0, 0);
";

/// The upgrade path: `STEPS[n]` takes a file from version `n` to `n + 1`.
const STEPS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = STEPS.len() as u32;

/// How long a connection waits for a lock held by another connection of
/// this process (the writer's checkpoints, a reader opening the WAL).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// Opens the writer's connection: checks the file is ours and not newer,
/// switches to WAL, applies `durability` and upgrades the schema.
pub(super) fn open_writer(path: &Path, durability: Durability) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(path, flags())?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if app != 0 && app != APPLICATION_ID {
        return Err(StoreError::Corrupt(format!(
            "{} is not a sessiond store (application id {app:#x})",
            path.display()
        )));
    }
    let found = check_version(&conn, path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "{} cannot use write-ahead logging (journal mode {mode})",
            path.display()
        )));
    }
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
        Durability::Off => "OFF",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // Keep a WAL that grew under a burst from staying that large on disk.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.pragma_update(None, "cache_size", -16 * 1024)?;
    conn.set_prepared_statement_cache_capacity(64);
    if found < SCHEMA_VERSION || app != APPLICATION_ID {
        upgrade(&conn, path)?;
    }
    Ok(conn)
}

/// Opens a read connection; it never writes.
pub(super) fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(path, flags())?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn version(conn: &Connection) -> StoreResult<u32> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v}")))
}

fn check_version(conn: &Connection, path: &Path) -> StoreResult<u32> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "{} has schema version {found}, newer than version {SCHEMA_VERSION} that this \
             sessiond understands: run a newer sessiond",
            path.display()
        )));
    }
    Ok(found)
}

/// Runs the steps from the file's version to [`SCHEMA_VERSION`] in one
/// transaction, so a crash mid-upgrade leaves the old version intact.
fn upgrade(conn: &Connection, path: &Path) -> StoreResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        // Read again under the write lock: the version checked before may be stale.
        let from = check_version(conn, path)?;
        for (i, step) in STEPS.iter().enumerate().skip(from as usize) {
            conn.execute_batch(step)?;
            conn.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written at version 1, with one job claimed and one waiting,
    /// is brought to the current version: the claimed job was delivered
    /// once, and the dead-letter table is there.
    #[test]
    fn version_1_files_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(V1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.execute_batch(
                "INSERT INTO ends (tenant, ms, seq, record, reason, ended_at, consumer, claimed_at)
                 VALUES ('t', 1, 0, '{}', 'logout', 1, 'host', 5), ('t', 2, 0, '{}', 'logout', 2, NULL, NULL)",
            )
            .unwrap();
        }
        let conn = open_writer(&path, Durability::Full).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let deliveries: Vec<i64> = conn
            .prepare("SELECT deliveries FROM ends ORDER BY ms")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(deliveries, [1, 0]);
        let dead: i64 = conn
            .query_row("SELECT COUNT(*) FROM dead_ends", [], |r| r.get(0))
            .unwrap();
        assert_eq!(dead, 0);
    }

    /// A file as `STEPS[..n]` left it, with the application id set.
    fn file_at(path: &Path, n: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        for step in &STEPS[..n] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", n as i64).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn
    }

    /// A file of every older version is brought to the current one.
    #[test]
    fn every_older_version_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        for n in 1..STEPS.len() {
            let path = dir.path().join(format!("v{n}.db"));
            drop(file_at(&path, n));
            let conn = open_writer(&path, Durability::Full).unwrap();
            assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION, "from version {n}");
        }
    }

    /// A file written at version 3 gets the outbox, empty and with its
    /// indexes, and keeps what it held.
    #[test]
    fn version_3_files_get_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let conn = file_at(&path, 3);
            conn.execute_batch(
                "INSERT INTO kv (tenant, plugin, key, value, expires_at) VALUES ('t', 'p', 'k', 'v', NULL)",
            )
            .unwrap();
        }
        let conn = open_writer(&path, Durability::Full).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let kept: String = conn
            .query_row("SELECT value FROM kv WHERE tenant = 't'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, "v");
        let held: i64 = conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(held, 0);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'outbox' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(indexes, ["outbox_created", "outbox_due"]);
        conn.execute_batch(
            "INSERT INTO outbox (tenant, id, message_id, url, body, created_at, due_at)
             VALUES ('t', 'm.u', 'm', 'https://example.com', '{}', 1, 1)",
        )
        .unwrap();
        let attempts: i64 = conn
            .query_row("SELECT attempts FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(attempts, 0);
    }
}
