//! A circuit breaker per (tenant, plugin). A plugin that fails most of its
//! calls over a window is opened: its calls are skipped (they fail
//! `circuit-open` at once, spending no fuel, no slot and no memory) and its
//! `on_error` policy decides what each skipped call means. After a backoff
//! one call goes through as a probe: if it succeeds the breaker closes, if
//! it fails the breaker opens again for twice as long, up to a cap.
//!
//! Only failures that are the plugin's own count: traps, limits, its own
//! errors and invalid output. A call refused for want of a slot or of
//! memory (`busy`, `memory-budget`), or whose host calls could not reach
//! the store, says nothing about the plugin and counts as neither.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a plugin's breaker opens and for how long (`circuit = { ... }` on a
/// plugin in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Calls the window must hold before the breaker may open; 0 turns the
    /// breaker off.
    pub min_calls: u32,
    /// The share of the window's calls, in percent, that must fail.
    pub failure_percent: u32,
    /// The window over which calls are counted, in milliseconds.
    pub window_ms: u64,
    /// How long the breaker first stays open, in milliseconds.
    pub open_ms: u64,
    /// The longest it stays open after failed probes, in milliseconds.
    pub max_open_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            min_calls: 20,
            failure_percent: 80,
            window_ms: 10_000,
            open_ms: 1_000,
            max_open_ms: 60_000,
        }
    }
}

impl BreakerSettings {
    /// What is wrong with these settings: the field and the message.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.failure_percent == 0 || self.failure_percent > 100 {
            return Err((
                "failure_percent",
                format!("must be 1 to 100, not {}", self.failure_percent),
            ));
        }
        if self.window_ms == 0 {
            return Err(("window_ms", "must be at least 1".into()));
        }
        if self.open_ms == 0 {
            return Err(("open_ms", "must be at least 1".into()));
        }
        if self.max_open_ms < self.open_ms {
            return Err((
                "max_open_ms",
                format!(
                    "{} is less than open_ms ({})",
                    self.max_open_ms, self.open_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Calls run and are counted.
    Closed,
    /// Calls are skipped until `until`.
    Open { until: Instant },
    /// One probe call runs (since `since`); the others are skipped.
    Probing { since: Instant },
}

/// What a breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Run the call.
    Run,
    /// Run the call as the probe: its outcome closes or reopens the breaker.
    Probe,
    /// Skip the call; the breaker lets calls through again in about this
    /// long.
    Skip(Duration),
}

#[derive(Debug)]
struct State {
    phase: Phase,
    window_started: Instant,
    calls: u32,
    failures: u32,
    /// How long the next opening lasts.
    backoff: Duration,
    /// Times the breaker opened since the start.
    opened: u64,
}

/// One plugin's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

/// A breaker's state for the operator (`GET /v1/plugins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerView {
    /// `closed`, `open` or `probing`.
    pub state: &'static str,
    /// Times it opened since the server started.
    pub opened: u64,
    /// While open: milliseconds until the next probe.
    pub retry_in_ms: Option<u64>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            state: Mutex::new(State {
                phase: Phase::Closed,
                window_started: Instant::now(),
                calls: 0,
                failures: 0,
                backoff: Duration::from_millis(settings.open_ms),
                opened: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may run now.
    pub fn admit(&self) -> Admit {
        if self.settings.min_calls == 0 {
            return Admit::Run;
        }
        let now = Instant::now();
        let mut s = self.lock();
        match s.phase {
            Phase::Closed => Admit::Run,
            Phase::Open { until } if now < until => Admit::Skip(until - now),
            // A probe whose outcome never came (its call was cancelled)
            // gives way to a new one after a backoff.
            Phase::Probing { since } if now < since + s.backoff => {
                Admit::Skip(since + s.backoff - now)
            }
            Phase::Open { .. } | Phase::Probing { .. } => {
                s.phase = Phase::Probing { since: now };
                Admit::Probe
            }
        }
    }

    /// Counts the outcome of a call [`admit`](Self::admit) let run;
    /// `failed`: it failed in a way that is the plugin's own. Returns the
    /// backoff when this outcome opened the breaker.
    pub fn record(&self, admitted: Admit, failed: bool) -> Option<Duration> {
        if self.settings.min_calls == 0 {
            return None;
        }
        let now = Instant::now();
        let mut s = self.lock();
        if admitted == Admit::Probe {
            if failed {
                let backoff = (s.backoff * 2).min(Duration::from_millis(self.settings.max_open_ms));
                s.backoff = backoff;
                return Some(open(&mut s, now));
            }
            s.phase = Phase::Closed;
            s.backoff = Duration::from_millis(self.settings.open_ms);
            s.window_started = now;
            s.calls = 0;
            s.failures = 0;
            return None;
        }
        if s.phase != Phase::Closed {
            // A call let through before the breaker opened.
            return None;
        }
        if now.duration_since(s.window_started) >= Duration::from_millis(self.settings.window_ms) {
            s.window_started = now;
            s.calls = 0;
            s.failures = 0;
        }
        s.calls += 1;
        s.failures += u32::from(failed);
        self.open_if_due(&mut s, now)
    }

    /// Opens the breaker when the window holds enough calls and enough of
    /// them failed; returns the backoff then.
    fn open_if_due(&self, s: &mut State, now: Instant) -> Option<Duration> {
        let ratio_met = u64::from(s.failures) * 100
            >= u64::from(self.settings.failure_percent) * u64::from(s.calls);
        (s.calls >= self.settings.min_calls && ratio_met).then(|| open(s, now))
    }

    /// Turns the last counted call into a failure: it ran, but the chain
    /// found its result unusable. Returns the backoff when that opened the
    /// breaker.
    pub fn record_late_failure(&self) -> Option<Duration> {
        if self.settings.min_calls == 0 {
            return None;
        }
        let now = Instant::now();
        let mut s = self.lock();
        match s.phase {
            Phase::Closed => {
                s.failures = (s.failures + 1).min(s.calls.max(1));
                s.calls = s.calls.max(1);
                self.open_if_due(&mut s, now)
            }
            _ => None,
        }
    }

    /// The breaker's state now.
    pub fn view(&self) -> BreakerView {
        let now = Instant::now();
        let s = self.lock();
        let (state, retry_in_ms) = match s.phase {
            Phase::Closed => ("closed", None),
            Phase::Open { until } => (
                "open",
                Some(until.saturating_duration_since(now).as_millis() as u64),
            ),
            Phase::Probing { .. } => ("probing", None),
        };
        BreakerView {
            state,
            opened: s.opened,
            retry_in_ms,
        }
    }
}

fn open(s: &mut State, now: Instant) -> Duration {
    s.phase = Phase::Open {
        until: now + s.backoff,
    };
    s.opened += 1;
    s.calls = 0;
    s.failures = 0;
    s.backoff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(open_ms: u64) -> BreakerSettings {
        BreakerSettings {
            min_calls: 4,
            failure_percent: 75,
            window_ms: 60_000,
            open_ms,
            max_open_ms: 4 * open_ms,
        }
    }

    #[test]
    fn opens_when_most_calls_fail_and_skips_until_the_backoff() {
        let b = Breaker::new(settings(60_000));
        for failed in [true, false, true] {
            assert_eq!(b.admit(), Admit::Run);
            assert_eq!(b.record(Admit::Run, failed), None);
        }
        assert_eq!(b.admit(), Admit::Run);
        // 3 of 4 failed: 75 %.
        assert_eq!(
            b.record(Admit::Run, true),
            Some(Duration::from_millis(60_000))
        );
        assert!(matches!(b.admit(), Admit::Skip(d) if d > Duration::from_secs(59)));
        let v = b.view();
        assert_eq!((v.state, v.opened), ("open", 1));
    }

    #[test]
    fn a_mostly_healthy_plugin_stays_closed() {
        let b = Breaker::new(settings(60_000));
        for n in 0..100 {
            assert_eq!(b.admit(), Admit::Run);
            assert_eq!(b.record(Admit::Run, n % 2 == 0), None);
        }
        assert_eq!(b.view().state, "closed");
    }

    #[test]
    fn a_failed_probe_doubles_the_backoff_and_a_good_one_closes() {
        let b = Breaker::new(settings(20));
        for _ in 0..4 {
            b.record(b.admit(), true);
        }
        assert!(matches!(b.admit(), Admit::Skip(_)));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit(), Admit::Probe);
        // Only one probe at a time.
        assert!(matches!(b.admit(), Admit::Skip(_)));
        assert_eq!(
            b.record(Admit::Probe, true),
            Some(Duration::from_millis(40))
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.record(Admit::Probe, false), None);
        assert_eq!(b.view().state, "closed");
        assert_eq!(b.admit(), Admit::Run);
    }

    #[test]
    fn min_calls_zero_turns_it_off() {
        let b = Breaker::new(BreakerSettings {
            min_calls: 0,
            ..BreakerSettings::default()
        });
        for _ in 0..100 {
            assert_eq!(b.record(b.admit(), true), None);
        }
        assert_eq!(b.admit(), Admit::Run);
    }
}
