//! Turns at writing a session: this host's writers of one session queue up
//! and write one at a time ([`WriteTurns`]). A leaf: [`crate::app::App`]
//! holds one, the compare-and-set write takes its turns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Below this many sessions with queued writers, [`WriteTurns`] does not
/// look for queues to forget.
const TURNS_KEPT: usize = 1024;

/// This host's writers of each session, queued: one writes at a time, the
/// others wait in the order they came (a tokio mutex is fair). Without
/// this, writers of one session on one host would race each other, each
/// lost race running the chain again for nothing. A queue is forgotten once
/// nobody holds or waits for it.
#[derive(Debug, Default)]
pub struct WriteTurns {
    queues: Mutex<Queues>,
}

#[derive(Debug, Default)]
struct Queues {
    by_session: HashMap<String, Weak<tokio::sync::Mutex<()>>>,
    /// How many entries `by_session` may hold before the forgotten ones go.
    sweep_at: usize,
}

impl WriteTurns {
    /// Waits for this writer's turn at the session `key` of `tenant`; the
    /// turn lasts as long as the guard.
    pub(crate) async fn take(&self, tenant: &str, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let queue = {
            let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let id = format!("{tenant}\n{key}");
            match q.by_session.get(&id).and_then(Weak::upgrade) {
                Some(queue) => queue,
                None => {
                    if q.by_session.len() >= q.sweep_at.max(TURNS_KEPT) {
                        q.by_session.retain(|_, queue| queue.strong_count() > 0);
                        q.sweep_at = 2 * q.by_session.len();
                    }
                    let queue = Arc::new(tokio::sync::Mutex::new(()));
                    q.by_session.insert(id, Arc::downgrade(&queue));
                    queue
                }
            }
        };
        queue.lock_owned().await
    }
}
