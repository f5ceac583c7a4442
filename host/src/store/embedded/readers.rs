//! A small pool of read connections, used on tokio's blocking threads.
//!
//! In WAL mode readers never wait for the writer and the writer never waits
//! for them. Each read statement starts its own read transaction, so it sees
//! every transaction committed before it, which includes every write whose
//! caller has been answered.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::schema;
use crate::store::{StoreError, StoreResult};

pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Bounds the reads in flight to the pool's size.
    permits: Semaphore,
    size: usize,
}

impl ReadPool {
    /// Opens `size` read connections on the database at `path`.
    pub(super) fn open(path: PathBuf, size: usize) -> StoreResult<Arc<Self>> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| schema::open_reader(&path))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Arc::new(Self {
            path,
            idle: Mutex::new(idle),
            permits: Semaphore::new(size),
            size,
        }))
    }

    /// Runs `read` on a pooled connection on a blocking thread.
    pub(super) async fn read<T, F>(self: &Arc<Self>, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match pool.take() {
                Some(conn) => conn,
                // A read whose caller gave up may still hold one.
                None => schema::open_reader(&pool.path)?,
            };
            let result = read(&conn);
            pool.put_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store read failed: {e}")))?
    }

    fn take(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.size {
            idle.push(conn);
        }
    }
}
