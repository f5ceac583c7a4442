//! Admission control per tenant, before a request reaches its handler: a
//! bound on the tenant's requests in flight on this host with a short
//! queue behind it, and an optional request-rate quota (a token bucket).
//!
//! Each tenant has a gate of its own, so one tenant's full queue never
//! delays another tenant's requests: a request beyond its tenant's bound
//! waits up to `quota.queue_timeout_ms` among at most `quota.max_queued`
//! others of the same tenant, then gets 429 with `Retry-After`. Requests
//! over the rate get 429 at once, with `Retry-After` saying when the next
//! token comes. Every bound holds per host (see [`crate::config::quota`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Shares;
use crate::cpu::CpuShares;

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The tenant is over its request rate; the next request fits after
    /// `retry_after`.
    Rate {
        per_second: u32,
        retry_after: Duration,
    },
    /// The tenant's in-flight requests and its queue are full, or the
    /// request waited its whole queue time.
    Busy {
        max_in_flight: usize,
        queue_timeout_ms: u64,
    },
    /// The tenant used more than its share of the host's CPU while other
    /// tenants were busy, and would wait longer than its queue time.
    Cpu { percent: u32, retry_after: Duration },
}

/// One tenant's gate.
#[derive(Debug)]
pub struct Gate {
    slots: Arc<Semaphore>,
    shares: Shares,
    waiting: AtomicUsize,
    bucket: Option<DefaultDirectRateLimiter>,
}

/// Takes a queued request off the count when it stops waiting.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub fn new(shares: Shares) -> Gate {
        let bucket = shares.rate.and_then(|(rps, burst)| {
            let quota = Quota::per_second(NonZeroU32::new(rps)?)
                .allow_burst(NonZeroU32::new(burst.max(1))?);
            Some(DefaultDirectRateLimiter::direct(quota))
        });
        Gate {
            slots: Arc::new(Semaphore::new(shares.max_in_flight.max(1))),
            shares,
            waiting: AtomicUsize::new(0),
            bucket,
        }
    }

    /// Admits one request: the permit is its slot until it drops.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Some(bucket) = &self.bucket
            && let Err(not_until) = bucket.check()
        {
            return Err(Refusal::Rate {
                per_second: self.shares.rate.map_or(0, |(rps, _)| rps),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            });
        }
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let busy = Refusal::Busy {
            max_in_flight: self.shares.max_in_flight,
            queue_timeout_ms: self.shares.queue_timeout_ms,
        };
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.shares.max_queued {
            return Err(busy);
        }
        let wait = Duration::from_millis(self.shares.queue_timeout_ms);
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy),
        }
    }

    /// How long a request may wait before it is refused.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.shares.queue_timeout_ms)
    }

    /// Requests of the tenant waiting in its queue now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Requests of the tenant in flight now.
    pub fn in_flight(&self) -> usize {
        self.shares.max_in_flight.max(1) - self.slots.available_permits()
    }
}

/// Every tenant's gate, by tenant name. Gates of tenants created through
/// the operator API come and go ([`Admission::set`]); a request holds its
/// gate until it ends.
#[derive(Debug, Default)]
pub struct Admission {
    gates: RwLock<HashMap<String, Arc<Gate>>>,
    cpu: Option<Arc<CpuShares>>,
}

impl Admission {
    /// Gates for `tenants`, each with its resolved quota.
    pub fn new(tenants: impl IntoIterator<Item = (String, Shares)>) -> Admission {
        Admission {
            gates: RwLock::new(
                tenants
                    .into_iter()
                    .map(|(name, shares)| (name, Arc::new(Gate::new(shares))))
                    .collect(),
            ),
            cpu: None,
        }
    }

    /// Gives tenant `name` a gate with `shares`: a new one when its shares
    /// changed (requests admitted through the old one finish under it).
    pub fn set(&self, name: &str, shares: Shares) {
        let mut gates = self.gates.write().unwrap_or_else(|e| e.into_inner());
        if gates.get(name).is_none_or(|g| g.shares != shares) {
            gates.insert(name.to_string(), Arc::new(Gate::new(shares)));
        }
    }

    /// Drops the gates of tenants not in `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.gates
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| keep(name));
    }

    /// These gates, with the tenants held to fair shares of `cpus` CPUs
    /// while more than one is busy.
    pub fn with_fair_cpu(mut self, cpus: usize) -> Admission {
        let names: Vec<String> = self
            .gates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        self.cpu = Some(Arc::new(CpuShares::new(cpus, names)));
        self
    }

    /// The tenants' CPU accounts, when CPU is shared fairly.
    pub fn cpu(&self) -> Option<&Arc<CpuShares>> {
        self.cpu.as_ref()
    }

    /// The gate of tenant `name`, if it has one.
    pub fn gate(&self, name: &str) -> Option<Arc<Gate>> {
        self.gates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(max_in_flight: usize, max_queued: usize, rate: Option<(u32, u32)>) -> Shares {
        Shares {
            max_in_flight,
            max_queued,
            queue_timeout_ms: 20,
            max_plugin_calls: 1,
            rate,
            memory_mib: 1,
        }
    }

    #[tokio::test]
    async fn past_the_bound_requests_queue_then_are_refused() {
        let gate = Arc::new(Gate::new(shares(1, 1, None)));
        let first = gate.admit().await.unwrap();
        assert_eq!(gate.in_flight(), 1);
        // One may wait; it gets the slot when the first ends.
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit().await.map(drop) }
        });
        tokio::task::yield_now().await;
        while gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // The queue is full: the next one is refused at once.
        assert!(matches!(gate.admit().await, Err(Refusal::Busy { .. })));
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        // Waiting the whole queue time is refused too.
        let _held = gate.admit().await.unwrap();
        assert!(matches!(gate.admit().await, Err(Refusal::Busy { .. })));
    }

    #[tokio::test]
    async fn the_rate_quota_refuses_with_the_wait() {
        let gate = Gate::new(shares(10, 10, Some((1, 2))));
        assert!(gate.admit().await.is_ok());
        assert!(gate.admit().await.is_ok());
        match gate.admit().await {
            Err(Refusal::Rate {
                per_second,
                retry_after,
            }) => {
                assert_eq!(per_second, 1);
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
    }
}
