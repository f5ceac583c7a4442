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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sessiond::session::now_ms;
use sessiond_tests::redis_server::RedisServer;
use tokio::task::JoinSet;

const VICTIM_KEY: &str = "attack-victim-key-not-secret";
const ATTACKER_KEY: &str = "attack-attacker-key-not-secret";
/// A placeholder hash: the real keys come from SESSIOND_API_KEY_<TENANT>.
const NO_KEY: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// The attacks, in the order they run by default.
const ATTACKS: &[&str] = &[
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
struct Knobs {
    bin: PathBuf,
    plugins: PathBuf,
    cache_dir: PathBuf,
    baseline: Duration,
    duration: Duration,
    rate: u64,
    connections: usize,
    hold_connections: usize,
    attacks: Vec<String>,
    store: String,
    server_cpu: String,
    log: String,
    runtime_toml: String,
    delete_after: Duration,
    end_wait: Duration,
    rss_limit_kib: u64,
    log_limit_bytes: u64,
    rss_budget_kib: u64,
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
            delete_after: Duration::from_millis(env_num("DELETE_AFTER_MS", 100)?),
            end_wait: Duration::from_secs(env_num("END_WAIT", 5)?),
            rss_limit_kib: env_num("RSS_LIMIT_MIB", 4096)? << 10,
            log_limit_bytes: env_num("LOG_LIMIT_MIB", 1024)? << 20,
            rss_budget_kib: env_num("RSS_BUDGET_MIB", 1024)? << 10,
        })
    }
}

/// One running sessiond (and its throwaway redis-server), killed on drop.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
    _redis: Option<RedisServer>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: a sleeping end hook would hold a graceful stop for its drain.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The [[plugins]] table of a tenant: the attacker fixture in `mode`.
fn attacker_plugin(tenant: &str, name: &str, plugins: &Path, mode: &str) -> String {
    format!(
        "\n[[tenants.{tenant}.plugins]]\nname = \"{name}\"\npath = \"{}\"\ngrants = [\"kv\"]\nconfig = {{ mode = \"{mode}\" }}\n",
        plugins.join("attacker.wasm").display()
    )
}

/// Writes the config and starts sessiond on it; `Err` with the end of its
/// log when it does not become ready.
async fn start_server(knobs: &Knobs, work: &Path, run: &str, mode: &str) -> Result<Server> {
    let port = free_port()?;
    let (store, redis) = match knobs.store.as_str() {
        "redis" => {
            let redis = RedisServer::start();
            let table = format!("backend = \"redis\"\nurls = [\"{}\"]\n", redis.url());
            (table, Some(redis))
        }
        "embedded" => (
            format!(
                "backend = \"embedded\"\npath = \"{}\"\ndurability = \"normal\"\n",
                work.join(format!("data-{run}")).display()
            ),
            None,
        ),
        _ => ("backend = \"memory\"\n".to_owned(), None),
    };
    let tenant = |name: &str| {
        format!(
            "\n[tenants.{name}]\napi_keys = [\"{NO_KEY}\"]\nttl_seconds = 3600\nmax_ttl_seconds = 86400\nidle_timeout_seconds = 3600\n"
        )
    };
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n# Victim and attacker share 127.0.0.1 here; in production they would not.\nmax_connections = 4096\nmax_connections_per_client = 4096\n\n[store]\n{store}\n[runtime]\ncache_dir = \"{}\"\n{}\n\n[sweeper]\ninterval_ms = 3600000\n",
        knobs.cache_dir.display(),
        knobs.runtime_toml
    );
    config += &tenant("victim");
    config += &attacker_plugin("victim", "greeter", &knobs.plugins, "harmless");
    config += &format!(
        "\n[[tenants.victim.plugins]]\nname = \"ender\"\npath = \"{}\"\ngrants = [\"audit\"]\n",
        knobs.plugins.join("ender.wasm").display()
    );
    config += &tenant("attacker");
    config += &attacker_plugin("attacker", "attacker", &knobs.plugins, mode);
    let config_path = work.join(format!("{run}.toml"));
    std::fs::write(&config_path, config)?;

    let log = work.join(format!("{run}.log"));
    let child = Command::new("taskset")
        .args(["-c", &knobs.server_cpu])
        .arg(&knobs.bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", &knobs.log)
        .env("SESSIOND_API_KEY_VICTIM", VICTIM_KEY)
        .env("SESSIOND_API_KEY_ATTACKER", ATTACKER_KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", knobs.bin.display()))?;
    let mut server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
        _redis: redis,
    };
    let ready = format!("{}/readyz", server.base);
    let probe = client(1)?;
    for _ in 0..1200 {
        if let Some(status) = server.child.try_wait()? {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            bail!("exited ({status}): {}", last.unwrap_or("no log").trim());
        }
        if let Ok(r) = probe.get(&ready).send().await
            && r.status().is_success()
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("not ready after 120 s")
}

/// What /proc says of a process: (VmRSS, VmHWM) in KiB, or None once it
/// has exited.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    if status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'))
    {
        return None;
    }
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What one phase measured.
#[derive(Default)]
struct Phase {
    /// Create latencies from the scheduled send time, in microseconds.
    latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
    /// DELETE → end record, in milliseconds.
    lags: Vec<u64>,
    /// Deleted sessions whose end record had not come at the end of the wait.
    ends_missing: usize,
    oldest_missing_ms: u64,
    peak_rss_kib: u64,
    log_bytes: u64,
    seconds: f64,
    stopped: Option<String>,
    attacker: BTreeMap<String, u64>,
    attacker_detail: Option<String>,
}

impl Phase {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Shared between a phase's tasks.
#[derive(Default)]
struct Shared {
    latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
    /// Public id → when its DELETE was sent (ms since the epoch).
    deleted: HashMap<String, u64>,
    lags: Vec<u64>,
    attacker: BTreeMap<String, u64>,
    /// The `detail` of the attacker's first refused create.
    attacker_detail: Option<String>,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(shared: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn count(map: &mut BTreeMap<String, u64>, what: String) {
    *map.entry(what).or_default() += 1;
}

fn failure(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// One victim session: create (timed from `scheduled`), wait, delete.
async fn victim_session(
    client: reqwest::Client,
    base: String,
    scheduled: Instant,
    delete_after: Duration,
    shared: SharedRef,
) {
    let created = client
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(VICTIM_KEY)
        .json(&json!({"user": "victim"}))
        .send()
        .await;
    let answer = match created {
        Ok(r) if r.status() == 201 => r.json::<Value>().await.ok(),
        Ok(r) => {
            count(
                &mut lock(&shared).errors,
                format!("create {}", r.status().as_u16()),
            );
            None
        }
        Err(e) => {
            count(&mut lock(&shared).errors, format!("create {}", failure(&e)));
            None
        }
    };
    lock(&shared)
        .latencies
        .push(scheduled.elapsed().as_micros() as u64);
    let Some(session) = answer else { return };
    let (Some(token), Some(public)) = (session["id"].as_str(), session["public_id"].as_str())
    else {
        count(&mut lock(&shared).errors, "create: no id".into());
        return;
    };
    tokio::time::sleep(delete_after).await;
    lock(&shared).deleted.insert(public.to_owned(), now_ms());
    let deleted = client
        .delete(format!("{base}/v1/sessions/{token}"))
        .bearer_auth(VICTIM_KEY)
        .send()
        .await;
    let problem = match deleted {
        Ok(r) if r.status() == 204 => None,
        Ok(r) => Some(format!("delete {}", r.status().as_u16())),
        Err(e) => Some(format!("delete {}", failure(&e))),
    };
    if let Some(problem) = problem {
        let mut shared = lock(&shared);
        shared.deleted.remove(public);
        count(&mut shared.errors, problem);
    }
}

/// Reads the victim's audit stream and turns each end record of a session
/// it deleted into a lag, until `stop`.
async fn watch_ends(
    client: reqwest::Client,
    base: String,
    shared: SharedRef,
    stop: Arc<AtomicBool>,
) {
    let mut after = String::new();
    while !stop.load(Ordering::Relaxed) {
        let page = client
            .get(format!("{base}/v1/audit?limit=1000&after={after}"))
            .bearer_auth(VICTIM_KEY)
            .send()
            .await;
        let page = match page {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let records = page["records"].as_array().cloned().unwrap_or_default();
        {
            let mut shared = lock(&shared);
            for record in &records {
                let (Some(session), Some(at)) =
                    (record["session"].as_str(), record["at_ms"].as_u64())
                else {
                    continue;
                };
                if record["plugin"] == "ender"
                    && let Some(sent) = shared.deleted.remove(session)
                {
                    shared.lags.push(at.saturating_sub(sent));
                }
            }
        }
        if let Some(next) = page["next"].as_str() {
            after = next.to_owned();
        } else if let Some(last) = records.last().and_then(|r| r["id"].as_str()) {
            after = last.to_owned();
        }
        if records.len() < 1000 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One attacker client: create (and for the end-hook attacks delete) as
/// fast as the host answers, until `stop`.
async fn attacker_client(
    client: reqwest::Client,
    base: String,
    ends: bool,
    shared: SharedRef,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let created = client
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(ATTACKER_KEY)
            .json(&json!({}))
            .send()
            .await;
        let outcome = match created {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.json::<Value>().await.unwrap_or(Value::Null);
                if status >= 300 {
                    let mut shared = lock(&shared);
                    if shared.attacker_detail.is_none() {
                        shared.attacker_detail = body["detail"].as_str().map(str::to_owned);
                    }
                }
                if ends
                    && status == 201
                    && let Some(token) = body["id"].as_str()
                {
                    let _ = client
                        .delete(format!("{base}/v1/sessions/{token}"))
                        .bearer_auth(ATTACKER_KEY)
                        .send()
                        .await;
                }
                status.to_string()
            }
            Err(e) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                failure(&e)
            }
        };
        count(&mut lock(&shared).attacker, outcome);
    }
}

fn client(pool: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// Runs the victim for `length`, with `attackers` attacker clients (0: the
/// victim alone), and collects what it measured.
async fn phase(
    knobs: &Knobs,
    server: &Server,
    length: Duration,
    attackers: usize,
    ends: bool,
) -> Result<Phase> {
    let pid = server.child.id();
    let shared = SharedRef::default();
    let stop_attack = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let victim = client(1024)?;
    let attacker = client(attackers)?;
    let log_start = file_len(&server.log);

    let watcher = tokio::spawn(watch_ends(
        victim.clone(),
        server.base.clone(),
        shared.clone(),
        stop_watch.clone(),
    ));
    let mut attack = JoinSet::new();
    for _ in 0..attackers {
        attack.spawn(attacker_client(
            attacker.clone(),
            server.base.clone(),
            ends,
            shared.clone(),
            stop_attack.clone(),
        ));
    }

    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / knobs.rate as f64);
    let mut sessions = JoinSet::new();
    let mut peak_rss = 0;
    let mut stopped = None;
    let mut next_sample = start;
    for i in 0.. {
        let scheduled = start + period * i;
        if scheduled >= start + length {
            break;
        }
        if scheduled >= next_sample {
            next_sample += Duration::from_millis(50);
            match memory_kib(pid) {
                Some((rss, _)) => peak_rss = peak_rss.max(rss),
                None => stopped = Some("the host exited".to_owned()),
            }
            let logged = file_len(&server.log).saturating_sub(log_start);
            if peak_rss > knobs.rss_limit_kib {
                stopped = Some(format!(
                    "stopped: host RSS over {} MiB",
                    knobs.rss_limit_kib >> 10
                ));
            } else if logged > knobs.log_limit_bytes {
                stopped = Some(format!(
                    "stopped: log over {} MiB",
                    knobs.log_limit_bytes >> 20
                ));
            }
            if stopped.is_some() {
                break;
            }
        }
        tokio::time::sleep_until(scheduled.into()).await;
        sessions.spawn(victim_session(
            victim.clone(),
            server.base.clone(),
            scheduled,
            knobs.delete_after,
            shared.clone(),
        ));
    }
    let seconds = start.elapsed().as_secs_f64();
    while sessions.join_next().await.is_some() {
        if let Some((rss, _)) = memory_kib(pid) {
            peak_rss = peak_rss.max(rss);
        }
    }
    stop_attack.store(true, Ordering::Relaxed);
    let log_bytes = file_len(&server.log).saturating_sub(log_start);
    if let Some((rss, hwm)) = memory_kib(pid) {
        peak_rss = peak_rss.max(rss).max(if attackers > 0 { hwm } else { 0 });
    }
    attack.abort_all();

    let waited = Instant::now();
    while waited.elapsed() < knobs.end_wait && !lock(&shared).deleted.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_watch.store(true, Ordering::Relaxed);
    watcher.abort();

    let mut shared = lock(&shared);
    let now = now_ms();
    shared.latencies.sort_unstable();
    shared.lags.sort_unstable();
    Ok(Phase {
        latencies: std::mem::take(&mut shared.latencies),
        errors: std::mem::take(&mut shared.errors),
        lags: std::mem::take(&mut shared.lags),
        ends_missing: shared.deleted.len(),
        oldest_missing_ms: shared
            .deleted
            .values()
            .map(|t| now.saturating_sub(*t))
            .max()
            .unwrap_or(0),
        peak_rss_kib: peak_rss,
        log_bytes,
        seconds,
        stopped,
        attacker: std::mem::take(&mut shared.attacker),
        attacker_detail: shared.attacker_detail.take(),
    })
}

/// One attack's result: the victim alone, then under attack (None when the
/// host did not start), and what to say about it.
struct Outcome {
    attack: String,
    alone: Phase,
    attacked: Option<Phase>,
    note: String,
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

fn ms(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 10_000 => format!("{:.1}", us as f64 / 1000.0),
        Some(us) => format!("{}", us / 1000),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 10 << 10 => format!("{n} B"),
        n if n < 10 << 20 => format!("{} KiB", n >> 10),
        n if n < 10 << 30 => format!("{} MiB", n >> 20),
        n => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

/// The end-hook lag: p99 of the ends that came, or, when some did not, how
/// long the oldest of them had waited.
fn lag(phase: &Phase) -> String {
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
fn misses(knobs: &Knobs, alone: &Phase, attacked: &Phase) -> String {
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

fn table(knobs: &Knobs, outcomes: &[Outcome]) -> String {
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
