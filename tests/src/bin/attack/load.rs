//! One measured phase: the victim's open-loop sessions, the watcher of its
//! end records, the attacker's closed-loop clients, the RSS and log watch.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use sessiond::session::now_ms;
use tokio::task::JoinSet;

use crate::server::{Server, client, file_len, memory_kib};
use crate::{ATTACKER_KEY, Knobs, VICTIM_KEY};

/// What one phase measured.
#[derive(Default)]
pub struct Phase {
    /// Create latencies from the scheduled send time, in microseconds.
    pub latencies: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    /// DELETE → end record, in milliseconds.
    pub lags: Vec<u64>,
    /// Deleted sessions whose end record had not come at the end of the wait.
    pub ends_missing: usize,
    pub oldest_missing_ms: u64,
    pub peak_rss_kib: u64,
    pub log_bytes: u64,
    pub seconds: f64,
    pub stopped: Option<String>,
    /// How late the driver sent its latest victim request, in ms: its own
    /// delay, which the latencies include.
    pub sender_late_ms: u64,
    pub attacker: BTreeMap<String, u64>,
    pub attacker_detail: Option<String>,
}

impl Phase {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Shared between a phase's tasks.
#[derive(Default)]
pub struct Shared {
    latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
    /// Public id → when its DELETE was sent (ms since the epoch).
    deleted: HashMap<String, u64>,
    lags: Vec<u64>,
    attacker: BTreeMap<String, u64>,
    /// The `detail` of the attacker's first refused create.
    attacker_detail: Option<String>,
}

pub type SharedRef = Arc<Mutex<Shared>>;

pub fn lock(shared: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn count(map: &mut BTreeMap<String, u64>, what: String) {
    *map.entry(what).or_default() += 1;
}

pub fn failure(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// One victim session: create (timed from `scheduled`), wait, delete.
pub async fn victim_session(
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
pub async fn watch_ends(
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
pub async fn attacker_client(
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

/// Runs the victim for `length`, with `attackers` attacker clients (0: the
/// victim alone), and collects what it measured.
pub async fn phase(
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
    // The attacker's clients get a runtime (and a thread) of their own, so
    // that their busy loop does not queue ahead of the victim's schedule:
    // the kernel shares the CPU between the two threads instead.
    let attack_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("attacker")
        .enable_all()
        .build()?;
    for _ in 0..attackers {
        attack_runtime.spawn(attacker_client(
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
    let mut sender_late = Duration::ZERO;
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
        sender_late = sender_late.max(scheduled.elapsed());
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
    attack_runtime.shutdown_background();

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
        sender_late_ms: sender_late.as_millis() as u64,
        attacker: std::mem::take(&mut shared.attacker),
        attacker_detail: shared.attacker_detail.take(),
    })
}
