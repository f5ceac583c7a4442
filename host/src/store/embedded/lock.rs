//! The data directory's owner lock: an exclusive `flock` on `<dir>/sessiond.lock`
//! that names the holding process (its PID is the file's content).
//!
//! The kernel drops the lock when the process exits, however it exits, so a
//! crashed owner never leaves the directory locked; the stale PID it leaves
//! in the file is overwritten by the next owner.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::{StoreError, StoreResult};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "sessiond.lock";

/// How many more times a held lock is asked for, [`LOCK_RETRY`] apart.
const LOCK_ATTEMPTS: u32 = 10;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Held for as long as this process owns the directory.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the directory, or fails naming the directory and the PID of the
    /// process that holds it.
    pub(super) fn acquire(dir: &Path) -> StoreResult<Self> {
        let path = dir.join(LOCK_FILE);
        let io = |what: &str, e: std::io::Error| {
            StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
        };
        // Not truncated on open: the holder's PID must survive a failed attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        // A lock that its holder has just released can still look held for
        // a moment: a process that forked while holding it keeps a copy of
        // the descriptor until its child execs. Ask again a few times before
        // calling the directory taken.
        let mut attempts = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if attempts < LOCK_ATTEMPTS => {
                    attempts += 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(TryLockError::WouldBlock) => return Err(held(dir, &mut file)),
                Err(TryLockError::Error(e)) => return Err(io("locking", e)),
            }
        }
        file.set_len(0).map_err(|e| io("writing", e))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(|e| io("writing", e))?;
        Ok(Self { _file: file })
    }
}

/// The error for a directory that another process owns.
fn held(dir: &Path, file: &mut File) -> StoreError {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let holder = match text.trim().parse::<u32>() {
        Ok(pid) => format!("process {pid}"),
        // The holder took the lock a moment ago and has not written yet.
        Err(_) => "another process".to_string(),
    };
    StoreError::Unavailable(format!(
        "data directory {} is in use by {holder} (lock file {})",
        dir.display(),
        PathBuf::from(dir).join(LOCK_FILE).display()
    ))
}
