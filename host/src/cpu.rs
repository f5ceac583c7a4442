//! Fair shares of the host's CPU between the tenants that are busy at the
//! same time.
//!
//! A request's handler (plugin calls included) is timed on every poll, in
//! the thread's CPU time.
//! Every 20 ms the process's CPU time over that window is shared out
//! between the tenants and charged to their buckets: each gets its
//! handlers' time plus, per request, an equal part of the rest (the HTTP
//! parsing and writing, the kernel's sockets, the background tasks), so
//! a flood of cheap requests pays for what its requests cost outside their
//! handlers too.
//!
//! While more than one tenant has sent requests in the last second, each
//! may use at most an equal share of the host's CPUs: a tenant over its
//! share has its next requests wait, off the CPU, until its bucket
//! refills, and when that would take longer than its queue time
//! (`quota.queue_timeout_ms`) they get 429 `tenant-busy` at once. A tenant
//! alone on the host uses all of it.
//!
//! A flood held to its share leaves the other tenants the rest of the
//! machine however cheap or costly its requests are, so their latency
//! stays near what it is alone: no tenant saturates the CPU.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A tenant counts as busy for this long after its last request.
const ACTIVE_FOR: Duration = Duration::from_secs(1);
/// How much of its share a tenant may use at once before it waits.
const BURST: Duration = Duration::from_millis(50);
/// How often the count of busy tenants is refreshed.
const RECOUNT_EVERY_MS: u64 = 100;
/// How often the process's CPU time is shared out between the tenants.
const SETTLE_EVERY_MS: u64 = 20;

/// One tenant's CPU account.
#[derive(Debug)]
struct Account {
    /// Nanoseconds of CPU the tenant may still use now; below zero, its
    /// debt.
    bucket: Mutex<Bucket>,
    /// When it last sent a request, in ms since the clock started.
    last_seen_ms: AtomicU64,
    /// Its handlers' time, in ns, since the last settling.
    handler_ns: AtomicU64,
    /// Its requests since the last settling.
    requests: AtomicU64,
    /// What one of its requests cost in the last windows, in ns: charged
    /// up front when it starts, so that many requests arriving at once are
    /// spread over time instead of all starting together.
    cost_ns: AtomicU64,
    /// What was charged up front since the last settling, in ns.
    precharged_ns: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    tokens_ns: f64,
    refilled: Instant,
}

/// Every tenant's CPU account on this host.
#[derive(Debug)]
pub struct CpuShares {
    /// Nanoseconds of CPU the host has each second.
    capacity_ns: f64,
    accounts: HashMap<String, Arc<Account>>,
    started: Instant,
    /// Tenants seen within [`ACTIVE_FOR`], as last counted.
    busy: AtomicUsize,
    counted_ms: AtomicU64,
    /// When the CPU time was last shared out, and the process's CPU time
    /// then (ns).
    settled_ms: AtomicU64,
    settle: Mutex<u64>,
    /// The process's CPU time, in ns.
    process_cpu: fn() -> u64,
}

/// Why a request may not start yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverShare {
    /// How long until the tenant's share lets it run again.
    pub wait: Duration,
    /// The share of the host's CPU the tenant has now, in percent.
    pub percent: u32,
}

impl CpuShares {
    /// Accounts for `tenants` on a host with `cpus` CPUs.
    pub fn new(cpus: usize, tenants: impl IntoIterator<Item = String>) -> CpuShares {
        CpuShares::with_clock(cpus, tenants, process_cpu_ns)
    }

    /// [`CpuShares::new`] reading the process's CPU time from `process_cpu`.
    fn with_clock(
        cpus: usize,
        tenants: impl IntoIterator<Item = String>,
        process_cpu: fn() -> u64,
    ) -> CpuShares {
        let started = Instant::now();
        CpuShares {
            capacity_ns: cpus.max(1) as f64 * 1e9,
            accounts: tenants
                .into_iter()
                .map(|name| {
                    let account = Account {
                        bucket: Mutex::new(Bucket {
                            tokens_ns: 0.0,
                            refilled: started,
                        }),
                        last_seen_ms: AtomicU64::new(0),
                        handler_ns: AtomicU64::new(0),
                        requests: AtomicU64::new(0),
                        cost_ns: AtomicU64::new(0),
                        precharged_ns: AtomicU64::new(0),
                    };
                    (name, Arc::new(account))
                })
                .collect(),
            started,
            busy: AtomicUsize::new(0),
            counted_ms: AtomicU64::new(0),
            settled_ms: AtomicU64::new(0),
            settle: Mutex::new(process_cpu()),
            process_cpu,
        }
    }

    /// Shares out the process's CPU time since the last settling (at most
    /// every 20 ms, by whichever request comes first).
    fn settle(&self, now_ms: u64) {
        let settled = self.settled_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(settled) < SETTLE_EVERY_MS
            || self
                .settled_ms
                .compare_exchange(settled, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let Ok(mut last) = self.settle.try_lock() else {
            return;
        };
        let now = (self.process_cpu)();
        let spent = now.saturating_sub(*last) as f64;
        *last = now;
        let taken: Vec<(&Arc<Account>, u64, u64, u64)> = self
            .accounts
            .values()
            .map(|a| {
                let h = a.handler_ns.swap(0, Ordering::Relaxed);
                let n = a.requests.swap(0, Ordering::Relaxed);
                let pre = a.precharged_ns.swap(0, Ordering::Relaxed);
                (a, h, n, pre)
            })
            .collect();
        let handlers: u64 = taken.iter().map(|t| t.1).sum();
        let requests: u64 = taken.iter().map(|t| t.2).sum();
        if requests == 0 {
            return;
        }
        // What the handlers did not account for, shared per request.
        let per_request = (spent - handlers as f64).max(0.0) / requests as f64;
        for (account, h, n, pre) in taken {
            if n == 0 && h == 0 && pre == 0 {
                continue;
            }
            let actual = h as f64 + n as f64 * per_request;
            if n > 0 {
                let was = account.cost_ns.load(Ordering::Relaxed) as f64;
                let now = actual / n as f64;
                let estimate = if was == 0.0 { now } else { (was + now) / 2.0 };
                account.cost_ns.store(estimate as u64, Ordering::Relaxed);
            }
            let mut bucket = account.bucket.lock().unwrap_or_else(|e| e.into_inner());
            // What was charged up front is replaced by what was spent.
            bucket.tokens_ns -= actual - pre as f64;
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Tenants busy now (recounted at most every 100 ms).
    fn busy_tenants(&self, now_ms: u64) -> usize {
        let counted = self.counted_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(counted) >= RECOUNT_EVERY_MS
            && self
                .counted_ms
                .compare_exchange(counted, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let window = ACTIVE_FOR.as_millis() as u64;
            let busy = self
                .accounts
                .values()
                .filter(|a| {
                    let seen = a.last_seen_ms.load(Ordering::Relaxed);
                    seen > 0 && now_ms.saturating_sub(seen) < window
                })
                .count();
            self.busy.store(busy, Ordering::Relaxed);
        }
        self.busy.load(Ordering::Relaxed).max(1)
    }

    /// Notes a request of `tenant` and says when its share lets it start:
    /// `Ok(None)` now, `Ok(Some(wait))` after `wait`; `Err` when that would
    /// be later than `max_wait` (the request is not charged then).
    pub fn check(&self, tenant: &str, max_wait: Duration) -> Result<Option<Duration>, OverShare> {
        let Some(account) = self.accounts.get(tenant) else {
            return Ok(None);
        };
        let now_ms = self.now_ms();
        account.last_seen_ms.store(now_ms, Ordering::Relaxed);
        account.requests.fetch_add(1, Ordering::Relaxed);
        self.settle(now_ms);
        let busy = self.busy_tenants(now_ms);
        let mut bucket = account.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if busy < 2 {
            // Alone: nothing to share; start the next contention even.
            bucket.tokens_ns = 0.0;
            bucket.refilled = now;
            return Ok(None);
        }
        let rate = self.capacity_ns / busy as f64;
        let burst = rate * BURST.as_secs_f64();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens_ns = (bucket.tokens_ns + elapsed * rate).min(burst);
        bucket.refilled = now;
        let cost = account.cost_ns.load(Ordering::Relaxed);
        bucket.tokens_ns -= cost as f64;
        if bucket.tokens_ns >= 0.0 {
            account.precharged_ns.fetch_add(cost, Ordering::Relaxed);
            return Ok(None);
        }
        let wait = Duration::from_secs_f64(-bucket.tokens_ns / rate);
        if wait > max_wait {
            bucket.tokens_ns += cost as f64;
            return Err(OverShare {
                wait,
                percent: (100 / busy) as u32,
            });
        }
        account.precharged_ns.fetch_add(cost, Ordering::Relaxed);
        Ok(Some(wait))
    }

    /// Notes `used` of handler time for the account.
    fn charge(&self, account: &Account, used: Duration) {
        account
            .handler_ns
            .fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
    }

    /// `work`, each of its polls timed and charged to `tenant`.
    pub fn metered<F: Future>(self: &Arc<Self>, tenant: &str, work: F) -> Metered<F> {
        Metered {
            work: Box::pin(work),
            shares: self.clone(),
            account: self.accounts.get(tenant).cloned(),
        }
    }
}

/// A future whose polls are charged to a tenant's CPU account.
pub struct Metered<F> {
    work: Pin<Box<F>>,
    shares: Arc<CpuShares>,
    account: Option<Arc<Account>>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // CPU time, not wall time: a poll the OS preempts is not charged
        // for the other threads' time.
        let started = thread_cpu_ns();
        let polled = self.work.as_mut().poll(cx);
        if let Some(account) = &self.account {
            let used = thread_cpu_ns().saturating_sub(started);
            self.shares.charge(account, Duration::from_nanos(used));
        }
        polled
    }
}

/// The CPU time the calling thread has used, in ns.
fn thread_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The CPU time the process has used, in ns.
fn process_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's CPU time as the tests set it: other tests run in
    /// this process at the same time.
    static PROCESS_CPU: AtomicU64 = AtomicU64::new(0);

    fn shares() -> Arc<CpuShares> {
        let tenants = ["a".to_string(), "b".to_string()];
        Arc::new(CpuShares::with_clock(1, tenants, || {
            PROCESS_CPU.load(Ordering::Relaxed)
        }))
    }

    fn spin(for_: Duration) {
        let until = Instant::now() + for_;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }

    #[tokio::test]
    async fn a_tenant_alone_is_never_held_back() {
        let s = shares();
        for _ in 0..5 {
            assert_eq!(s.check("a", Duration::ZERO), Ok(None));
            s.metered("a", async { spin(Duration::from_millis(30)) })
                .await;
        }
        assert_eq!(s.check("a", Duration::ZERO), Ok(None));
    }

    #[tokio::test]
    async fn with_two_busy_a_tenant_past_half_the_cpu_waits() {
        let s = shares();
        let none = Duration::ZERO;
        s.check("b", none).unwrap();
        // Let the busy count see both.
        tokio::time::sleep(Duration::from_millis(RECOUNT_EVERY_MS + 10)).await;
        s.check("a", none).unwrap();
        s.metered("a", async { spin(Duration::from_millis(120)) })
            .await;
        PROCESS_CPU.fetch_add(120_000_000, Ordering::Relaxed);
        // The next request settles the window: tenant a used the CPU.
        tokio::time::sleep(Duration::from_millis(SETTLE_EVERY_MS + 5)).await;
        let over = s.check("a", none).unwrap_err();
        assert_eq!(over.percent, 50);
        // About 120 ms of CPU against a 25 ms burst at 0.5 s a second.
        assert!(over.wait > Duration::from_millis(100), "{over:?}");
        assert!(over.wait < Duration::from_millis(300), "{over:?}");
        // Willing to wait, it is told how long.
        let wait = s.check("a", Duration::from_secs(1)).unwrap().unwrap();
        assert!(wait >= over.wait - Duration::from_millis(5), "{wait:?}");
        // The other tenant, within its share, is not held back.
        assert_eq!(s.check("b", none), Ok(None));
        // Unknown tenants are not accounted.
        assert_eq!(s.check("nobody", none), Ok(None));
    }
}
