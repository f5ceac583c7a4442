//! The markdown table: each cell "alone → under attack", and the targets
//! a row misses.

use std::fmt::Write as _;

use crate::load::{Phase, percentile};
use crate::{Knobs, Outcome};

pub fn ms(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 10_000 => format!("{:.1}", us as f64 / 1000.0),
        Some(us) => format!("{}", us / 1000),
    }
}

pub fn bytes(n: u64) -> String {
    match n {
        n if n < 10 << 10 => format!("{n} B"),
        n if n < 10 << 20 => format!("{} KiB", n >> 10),
        n if n < 10 << 30 => format!("{} MiB", n >> 20),
        n => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

/// The end-hook lag: p99 of the ends that came, or, when some did not, how
/// long the oldest of them had waited.
pub fn lag(phase: &Phase) -> String {
    if phase.ends_missing > 0 {
        return format!(
            "{} waiting > {:.1} s",
            phase.ends_missing,
            phase.oldest_missing_ms as f64 / 1000.0
        );
    }
    match percentile(&phase.lags, 99.0) {
        Some(ms) if ms < 10_000 => format!("{ms} ms"),
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
        None => "-".into(),
    }
}

/// The targets this phase misses, compared with the victim alone.
pub fn misses(knobs: &Knobs, alone: &Phase, attacked: &Phase) -> String {
    let mut missed = Vec::new();
    let p99 = |p: &Phase| percentile(&p.latencies, 99.0).unwrap_or(0);
    if p99(attacked) > 3 * p99(alone).max(1) {
        missed.push(format!(
            "p99 {:.0}×",
            p99(attacked) as f64 / p99(alone).max(1) as f64
        ));
    }
    if attacked.error_count() > 0 {
        missed.push("errors".into());
    }
    if attacked.ends_missing > 0 || percentile(&attacked.lags, 99.0).unwrap_or(0) > 1000 {
        missed.push("end lag".into());
    }
    if attacked.peak_rss_kib > knobs.rss_budget_kib {
        missed.push("RSS".into());
    }
    let per_minute = attacked.log_bytes as f64 * 60.0 / attacked.seconds.max(0.001);
    if per_minute > 1e6 {
        missed.push(format!("log {:.0} MB/min", per_minute / 1e6));
    }
    if missed.is_empty() {
        "met".into()
    } else {
        missed.join(", ")
    }
}

pub fn table(knobs: &Knobs, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Victim at {} creates/s, each deleted {} ms later; {} s alone, then {} s under attack; store {}. Cells: alone → under attack.\n",
        knobs.rate,
        knobs.delete_after.as_millis(),
        knobs.baseline.as_secs(),
        knobs.duration.as_secs(),
        knobs.store
    );
    out += "| attack | victim p50 ms | victim p99 ms | victim errors | victim end lag (p99) | host peak RSS | log written | targets missed | notes |\n";
    out += "|---|---|---|---|---|---|---|---|---|\n";
    for o in outcomes {
        let a = &o.alone;
        let p50 = |p: &Phase| ms(percentile(&p.latencies, 50.0));
        let p99 = |p: &Phase| ms(percentile(&p.latencies, 99.0));
        let errors = |p: &Phase| {
            let kinds = p
                .errors
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>();
            if kinds.is_empty() {
                "0".into()
            } else {
                format!("{} ({})", p.error_count(), kinds.join(" "))
            }
        };
        let cell = |f: &dyn Fn(&Phase) -> String| match &o.attacked {
            Some(b) => format!("{} → {}", f(a), f(b)),
            None => format!("{} → -", f(a)),
        };
        let missed = match &o.attacked {
            Some(b) => misses(knobs, a, b),
            None => "host did not start".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.attack,
            cell(&p50),
            cell(&p99),
            cell(&errors),
            cell(&lag),
            cell(&|p| bytes(p.peak_rss_kib << 10)),
            cell(&|p| bytes(p.log_bytes)),
            missed,
            o.note.replace('|', "/"),
        );
    }
    out
}
