//! The sweeper: ends the sessions that ran out.
//!
//! Every `sweeper.interval_ms` it ends each tenant's expired sessions
//! through [`crate::service::end::sweep`]: the store takes them out
//! atomically (each session is taken by exactly one caller, on any number of
//! hosts) and in the same step queues their end jobs with the reason
//! `expired` or `idle-timeout`; the end worker ([`crate::ends`]) runs the
//! hooks. Then it sends the idle warnings that are due
//! ([`crate::service::idle`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::SweeperConfig;
use crate::service::end::sweep;
use crate::service::idle::{Cursors, warn};

/// Sweeps until `stop` is cancelled.
pub async fn run(app: Arc<App>, config: SweeperConfig, stop: CancellationToken) {
    let period = Duration::from_millis(config.interval_ms.max(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursors = Cursors::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        sweep(&app, config.batch).await;
        warn(&app, &mut cursors, config.batch).await;
    }
}
