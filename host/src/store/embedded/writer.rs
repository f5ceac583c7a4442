//! The one writer thread and its group commit.
//!
//! Every write is a closure sent down a channel to the thread that owns the
//! database's only write connection. The thread takes everything waiting in
//! the channel (up to [`MAX_BATCH`] operations), opens one transaction, runs
//! each operation under its own savepoint (an operation that fails is rolled
//! back alone; the others stand), commits once and only then answers every
//! caller. Concurrent writers therefore share one commit and one fsync, and
//! no caller hears of a write before it is committed.
//!
//! Being a single thread, it also serializes every read-modify-write: the
//! limit checks, compare-and-set updates and claims need no further locking.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::lock::DirLock;
use crate::store::{StoreError, StoreResult};

/// The most operations one transaction takes, so that a long queue still
/// gets answers in steady portions.
const MAX_BATCH: usize = 512;

/// An operation waiting for the writer.
trait Job: Send {
    /// Runs the operation in the open transaction, under its own savepoint;
    /// returns the answer to send once the transaction's fate is known.
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Answer>;

    /// Answers without running: the transaction could not be opened.
    fn fail(self: Box<Self>, err: &StoreError);
}

/// The outcome of one operation, held until the commit.
trait Answer: Send {
    /// Sends the outcome if the transaction committed, else the commit's error.
    fn send(self: Box<Self>, commit: Result<(), &StoreError>);
}

struct Call<T, F> {
    op: F,
    reply: oneshot::Sender<StoreResult<T>>,
}

struct Outcome<T> {
    result: StoreResult<T>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Answer> {
        let result = in_savepoint(conn, self.op);
        Box::new(Outcome {
            result,
            reply: self.reply,
        })
    }

    fn fail(self: Box<Self>, err: &StoreError) {
        let _ = self.reply.send(Err(copy(err)));
    }
}

impl<T: Send> Answer for Outcome<T> {
    fn send(self: Box<Self>, commit: Result<(), &StoreError>) {
        let _ = self.reply.send(match commit {
            Ok(()) => self.result,
            Err(e) => Err(copy(e)),
        });
    }
}

/// The same error again, for every caller of a failed batch.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        other => StoreError::Backend(other.to_string()),
    }
}

/// Runs `op` so that its failure undoes only its own changes.
fn in_savepoint<T>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.prepare_cached("SAVEPOINT op")?.execute([])?;
    let result = op(conn);
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    conn.prepare_cached("RELEASE op")?.execute([])?;
    result
}

/// The handle on the writer thread. Dropping it lets the thread finish what
/// is queued, close the database and release the directory lock, and waits
/// for that, so the directory can be opened again at once.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread; it owns `conn` and, until it ends, `lock`.
    pub(super) fn start(conn: Connection, lock: DirLock) -> StoreResult<Self> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("sessiond-store-writer".into())
            .spawn(move || {
                run(&conn, &jobs);
                drop(conn);
                drop(lock);
            })
            .map_err(|e| StoreError::Unavailable(format!("starting the store writer: {e}")))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Runs `op` in the next transaction and returns its outcome once that
    /// transaction is committed.
    pub(super) async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the store writer has stopped".into());
        // The write runs in its caller's trace, for the end jobs it queues.
        let trace = crate::trace::current();
        let op = move |conn: &Connection| crate::trace::sync_scope(trace, || op(conn));
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(Box::new(Call { op, reply }))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Whether the thread still runs.
    pub(super) fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's loop: a batch per wake-up until every sender is gone.
fn run(conn: &Connection, jobs: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(conn, batch);
    }
}

fn commit_batch(conn: &Connection, batch: Vec<Box<dyn Job>>) {
    if let Err(e) = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
    {
        let e = StoreError::from(e);
        for job in batch {
            job.fail(&e);
        }
        return;
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut broken = None;
    for job in batch {
        if let Some(e) = &broken {
            // SQLite gave up the whole transaction (disk full, I/O error):
            // the rest cannot run in it.
            job.fail(e);
            continue;
        }
        answers.push(job.run(conn));
        if conn.is_autocommit() {
            broken = Some(StoreError::Unavailable(
                "the store's transaction was aborted".into(),
            ));
        }
    }
    let commit = match &broken {
        Some(e) => Err(copy(e)),
        None => conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(StoreError::from),
    };
    if commit.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for answer in answers {
        answer.send(commit.as_ref().map(|_| ()));
    }
}
