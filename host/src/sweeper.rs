//! The sweeper: ends the sessions that ran out.
//!
//! Every `sweeper.interval_ms` it takes each tenant's expired sessions out of
//! the store (`take_expired`, atomic: each session is taken by exactly one
//! caller, on any number of hosts), which in the same step queues their end
//! jobs with the reason `expired` or `idle-timeout`; the end worker
//! ([`crate::ends`]) runs the hooks.

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
                .take_expired(&tenant.name, now_ms(), batch, tenant.queues_ends())
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
            for expired in &taken {
                state.ended(
                    tenant,
                    std::slice::from_ref(&expired.record),
                    expired.reason,
                );
            }
            if !full {
                break;
            }
        }
    }
    ended
}
