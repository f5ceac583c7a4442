//! Bounds on what a plugin makes the host write to its log, per (tenant,
//! plugin): the lines the plugin logs through `log.log`, and the one line
//! the host writes per failed call. Each is a token bucket; a line over it
//! is dropped and counted (in `GET /v1/plugins` and in
//! `sessiond_plugin_log_lines_dropped`), and the next line written says
//! how many were dropped before it, so the log shows every gap.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;

/// Longest message of a plugin's log line the host log keeps, in bytes;
/// the rest is cut (the whole line still reaches `sessiond plugin run`).
pub const MAX_LOGGED_BYTES: usize = 1024;

/// A token bucket over one kind of log line of one plugin.
pub(crate) struct LogBudget {
    limiter: Option<DefaultDirectRateLimiter>,
    /// Lines dropped since the start.
    dropped: AtomicU64,
    /// Lines dropped since the last line written.
    unreported: AtomicU64,
    metric: Option<Counter>,
}

impl LogBudget {
    /// `per_second` lines a second on average, `burst` at once; zero
    /// `per_second` drops every line, zero `burst` means `per_second`.
    pub fn new(per_second: u32, burst: u32, metric: Option<Counter>) -> LogBudget {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        LogBudget {
            limiter,
            dropped: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            metric,
        }
    }

    /// One line without a bound (for `plugin check` and `plugin run`).
    pub fn unbounded() -> LogBudget {
        LogBudget::new(u32::MAX, u32::MAX, None)
    }

    /// Takes a token for one line: `Some(n)` to write it, `n` being the
    /// lines dropped since the last line written; `None` to drop it (it
    /// is counted).
    pub fn admit(&self) -> Option<u64> {
        let allowed = self.limiter.as_ref().is_some_and(|l| l.check().is_ok());
        if allowed {
            return Some(self.unreported.swap(0, Ordering::Relaxed));
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.unreported.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metric {
            m.inc();
        }
        None
    }

    /// Lines dropped since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// `message` cut to at most [`MAX_LOGGED_BYTES`] on a character boundary,
/// with a note of how much was cut.
pub fn clip(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_LOGGED_BYTES {
        return message.into();
    }
    let mut end = MAX_LOGGED_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes not logged)",
        &message[..end],
        message.len() - end
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_burst_are_dropped_counted_and_reported_by_the_next() {
        let budget = LogBudget::new(1, 3, None);
        for _ in 0..3 {
            assert_eq!(budget.admit(), Some(0));
        }
        assert_eq!(budget.admit(), None);
        assert_eq!(budget.admit(), None);
        assert_eq!(budget.dropped(), 2);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // The next line written says two went missing before it.
        assert_eq!(budget.admit(), Some(2));
        assert_eq!(budget.dropped(), 2);
    }

    #[test]
    fn a_zero_rate_drops_everything() {
        let budget = LogBudget::new(0, 10, None);
        assert_eq!(budget.admit(), None);
        assert_eq!(budget.dropped(), 1);
    }

    #[test]
    fn long_messages_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_LOGGED_BYTES);
        let clipped = clip(&long);
        assert!(clipped.len() < MAX_LOGGED_BYTES + 40, "{}", clipped.len());
        assert!(clipped.ends_with("more bytes not logged)"));
        assert_eq!(clip("short"), "short");
    }
}
