//! The attack benchmark's driver (`just attack`, scripts/attack.sh,
//! docs/attack.md): one sessiond with a victim tenant and an attacker
//! tenant, restarted for every attack. Per attack it measures the victim
//! alone, then again while the attacker's plugin (the `attacker` test
//! fixture, in the attack's mode) and the attacker's clients do their worst,
//! and prints a markdown table: the victim's create latency (p50, p99,
//! measured from each request's scheduled send time), its errors and its
//! end-hook lag, the host's peak RSS and the bytes it logged.
//!
//! The victim is open loop: RATE creates a second, each session deleted
//! DELETE_AFTER_MS later, its end hook (the `ender` fixture) writing an
//! audit record whose time gives the lag from the DELETE. The attacker is
//! closed loop: CONNECTIONS clients (HOLD_CONNECTIONS for `hold`) creating
//! sessions, and for the end-hook attacks deleting them, as fast as the
//! host answers. Every knob is an environment variable, listed in
//! [`Knobs::from_env`] and docs/attack.md.

// The crate root's modules sit in attack/, beside it, not in src/bin/.
#[path = "attack/load.rs"]
mod load;
#[path = "attack/report.rs"]
mod report;
#[path = "attack/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::load::{Phase, phase};
use crate::report::table;
use crate::server::start_server;

pub const VICTIM_KEY: &str = "attack-victim-key-not-secret";
pub const ATTACKER_KEY: &str = "attack-attacker-key-not-secret";
/// A placeholder hash: the real keys come from SESSIOND_API_KEY_<TENANT>.
pub const NO_KEY: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// The attacks, in the order they run by default.
pub const ATTACKS: &[&str] = &[
    "harmless",
    "grow",
    "hold",
    "loop",
    "log-flood",
    "kv-flood",
    "end-panic",
    "end-sleep",
    "invalid-output",
    "load-error",
];

/// The run's settings, from the environment.
pub struct Knobs {
    pub bin: PathBuf,
    pub plugins: PathBuf,
    pub cache_dir: PathBuf,
    pub baseline: Duration,
    pub duration: Duration,
    pub rate: u64,
    pub connections: usize,
    pub hold_connections: usize,
    pub attacks: Vec<String>,
    pub store: String,
    pub server_cpu: String,
    pub log: String,
    pub runtime_toml: String,
    /// Extra lines for the config's `[server]` table.
    pub server_toml: String,
    pub delete_after: Duration,
    pub end_wait: Duration,
    pub rss_limit_kib: u64,
    pub log_limit_bytes: u64,
    pub rss_budget_kib: u64,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn env_num(name: &str, default: u64) -> Result<u64> {
    env_or(name, &default.to_string())
        .parse()
        .with_context(|| format!("{name} must be a whole number"))
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        // The config lives in a temporary directory: every path in it is absolute.
        let absolute = |path: String| std::path::absolute(&path).unwrap_or_else(|_| path.into());
        let root = absolute(env_or("ROOT", "."));
        let duration = env_num("DURATION", 10)?;
        let attacks: Vec<String> = env_or("ATTACKS", &ATTACKS.join(" "))
            .split([' ', ','])
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = attacks.iter().find(|a| !ATTACKS.contains(&a.as_str())) {
            bail!(
                "unknown attack {bad:?} in ATTACKS (known: {})",
                ATTACKS.join(", ")
            );
        }
        let store = env_or("STORE", "memory");
        if !["memory", "redis", "embedded"].contains(&store.as_str()) {
            bail!("unknown STORE {store:?} (memory, redis or embedded)");
        }
        Ok(Knobs {
            bin: absolute(env_or("SESSIOND_BIN", "target/release/sessiond")),
            plugins: absolute(env_or("PLUGIN_DIR", "target/plugins")),
            cache_dir: root.join(".cache/sessiond"),
            baseline: Duration::from_secs(env_num("BASELINE", duration)?),
            duration: Duration::from_secs(duration),
            rate: env_num("RATE", 500)?.max(1),
            connections: env_num("CONNECTIONS", 50)? as usize,
            hold_connections: env_num("HOLD_CONNECTIONS", 200)? as usize,
            attacks,
            store,
            server_cpu: env_or("SERVER_CPU", "0"),
            log: env_or("LOG", "warn"),
            runtime_toml: env_or("RUNTIME_TOML", ""),
            server_toml: env_or("SERVER_TOML", ""),
            delete_after: Duration::from_millis(env_num("DELETE_AFTER_MS", 100)?),
            end_wait: Duration::from_secs(env_num("END_WAIT", 5)?),
            rss_limit_kib: env_num("RSS_LIMIT_MIB", 4096)? << 10,
            log_limit_bytes: env_num("LOG_LIMIT_MIB", 1024)? << 20,
            rss_budget_kib: env_num("RSS_BUDGET_MIB", 1024)? << 10,
        })
    }
}

/// One attack's result: the victim alone, then under attack (None when the
/// host did not start), and what to say about it.
pub struct Outcome {
    pub attack: String,
    pub alone: Phase,
    pub attacked: Option<Phase>,
    pub note: String,
}

/// Runs one attack on a fresh host (two for `load-error`: one to measure
/// the victim alone, one whose attacker plugin cannot load).
async fn run_attack(knobs: &Knobs, work: &Path, attack: &str) -> Result<Outcome> {
    let mode = match attack {
        "load-error" => "harmless",
        other => other,
    };
    let server = start_server(knobs, work, attack, mode)
        .await
        .with_context(|| format!("sessiond for {attack}"))?;
    eprintln!(
        "attack: {attack}: victim alone for {} s",
        knobs.baseline.as_secs()
    );
    let alone = phase(knobs, &server, knobs.baseline, 0, false).await?;
    if attack == "load-error" {
        drop(server);
        let broken = format!("{attack}-broken");
        return Ok(
            match start_server(knobs, work, &broken, "describe-recursion").await {
                Err(e) => Outcome {
                    attack: attack.into(),
                    alone,
                    attacked: None,
                    note: format!("host did not start: {e:#}"),
                },
                Ok(server) => {
                    eprintln!(
                        "attack: {attack}: host started; victim for {} s",
                        knobs.duration.as_secs()
                    );
                    let attacked = phase(knobs, &server, knobs.duration, 0, false).await?;
                    Outcome {
                        attack: attack.into(),
                        alone,
                        attacked: Some(attacked),
                        note: "host started without the attacker's plugin".into(),
                    }
                }
            },
        );
    }
    let connections = if attack == "hold" {
        knobs.hold_connections
    } else {
        knobs.connections
    };
    let ends = attack.starts_with("end-");
    eprintln!(
        "attack: {attack}: under attack ({connections} connections) for {} s",
        knobs.duration.as_secs()
    );
    let attacked = phase(knobs, &server, knobs.duration, connections, ends).await?;
    let answers = attacked
        .attacker
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let answers = match &attacked.attacker_detail {
        Some(detail) => format!("{answers} (first refusal: {detail})"),
        None => answers,
    };
    let late = attacked.sender_late_ms.max(alone.sender_late_ms);
    let answers = if late > 10 {
        format!("{answers}; the driver sent up to {late} ms late")
    } else {
        answers
    };
    let note = match &attacked.stopped {
        Some(why) => format!("{why} after {:.1} s; attacker: {answers}", attacked.seconds),
        None => format!("attacker: {answers}"),
    };
    Ok(Outcome {
        attack: attack.into(),
        alone,
        attacked: Some(attacked),
        note,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let knobs = Knobs::from_env()?;
    for file in ["attacker.wasm", "ender.wasm"] {
        let path = knobs.plugins.join(file);
        if !path.exists() {
            bail!(
                "{} is missing: run scripts/build-plugins.sh",
                path.display()
            );
        }
    }
    let work = tempfile::Builder::new()
        .prefix("sessiond-attack.")
        .tempdir()?;
    let mut outcomes = Vec::new();
    for attack in &knobs.attacks {
        let outcome = run_attack(&knobs, work.path(), attack).await?;
        eprintln!(
            "{}",
            table(&knobs, std::slice::from_ref(&outcome))
                .lines()
                .last()
                .unwrap_or("")
        );
        outcomes.push(outcome);
    }
    print!("{}", table(&knobs, &outcomes));
    Ok(())
}
