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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writers_of_a_session_take_turns_in_order() {
        let turns = Arc::new(WriteTurns::default());
        let first = turns.take("t", "a").await;
        // Another session, or the same key of another tenant, does not wait.
        drop(turns.take("t", "b").await);
        drop(turns.take("u", "a").await);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..5 {
            let (turns, order) = (turns.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _turn = turns.take("t", "a").await;
                order.lock().unwrap().push(i);
            }));
            // Let it queue before the next one comes.
            tokio::task::yield_now().await;
        }
        assert!(order.lock().unwrap().is_empty(), "all wait for the first");
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn queues_nobody_holds_are_forgotten() {
        let turns = WriteTurns::default();
        for i in 0..3 * TURNS_KEPT {
            drop(turns.take("t", &i.to_string()).await);
        }
        let kept = turns.queues.lock().unwrap().by_session.len();
        assert!(kept <= TURNS_KEPT + 1, "{kept} queues kept");
    }
}
