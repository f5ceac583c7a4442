//! The control plane's timer: keeps this host's tenants up to the control
//! store ([`crate::service::control`]) with a refresh every
//! `operator.poll_ms`, one as soon as a change is published, and a step of
//! any tenant deletion after each; and the runtime's compiled components
//! that no plugin uses any more are dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::service::control;

/// Runs until `stop`.
pub async fn run(app: Arc<App>, stop: CancellationToken) {
    let poll = Duration::from_millis(app.control.settings.poll_ms);
    let listener = app.control.listen(stop.clone());
    let mut failing = false;
    loop {
        let step = async {
            control::refresh(&app).await?;
            control::finish_deletions(&app).await
        };
        // Compiled versions whose last plugin has gone (swapped out and
        // drained) leave memory.
        app.runtime.prune();
        match step.await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("cannot apply the control store; retrying: {e:#}");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(poll) => {}
            () = app.control.woken() => {}
        }
    }
    if let Some(listener) = listener {
        listener.abort();
    }
}
