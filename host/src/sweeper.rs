//! The sweeper: ends the sessions that ran out.
//!
//! Every `sweeper.interval_ms` it takes each tenant's expired sessions out of
//! the store (`take_expired`, atomic: each session is taken by exactly one
//! caller, on any number of hosts) and runs their `on-session-end` hooks with
//! the reason the store gives (`expired` or `idle-timeout`). Batches are
//! finished before the next one is taken, and cancelling stops it only
//! between two sweeps, so a session it took always gets its end hook.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::SweeperConfig;
use crate::server::AppState;
use crate::session::now_ms;

/// Sweeps until `stop` is cancelled.
pub async fn run(state: AppState, config: SweeperConfig, stop: CancellationToken) {
    let period = Duration::from_millis(config.interval_ms.max(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        sweep_once(&state, config.batch.max(1)).await;
    }
}

/// Takes and ends every expired session of every tenant, one batch at a
/// time; returns how many sessions it ended.
pub async fn sweep_once(state: &AppState, batch: usize) -> usize {
    let mut ended = 0;
    for tenant in state.tenants.values() {
        loop {
            let taken = match state
                .store
                .take_expired(&tenant.name, now_ms(), batch)
                .await
            {
                Ok(taken) => taken,
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, "sweeping failed: {e}");
                    break;
                }
            };
            let full = taken.len() >= batch;
            ended += taken.len();
            let handles: Vec<_> = taken
                .into_iter()
                .map(|e| state.end_session(tenant, e.record, e.reason))
                .collect();
            for h in handles {
                let _ = h.await;
            }
            if !full {
                break;
            }
        }
    }
    ended
}
