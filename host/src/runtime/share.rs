//! What one tenant's plugins may take of the host together: slots for
//! plugin calls running at once, and linear memory, counted against the
//! tenant's share and against the host-wide budget
//! (`runtime.memory_budget_mib`).
//!
//! Memory is reserved when an instance's memory grows (instantiation
//! included) and given back when the instance is dropped, so warm instances
//! in the pool count too: the sum over every live instance of the process
//! never passes the budget, whatever tenants do.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of linear memory reserved out of a fixed total.
#[derive(Debug)]
pub struct MemoryPool {
    limit: u64,
    used: AtomicU64,
}

impl MemoryPool {
    pub fn new(limit_bytes: u64) -> MemoryPool {
        MemoryPool {
            limit: limit_bytes,
            used: AtomicU64::new(0),
        }
    }

    /// Reserves `n` bytes, or nothing when they would pass the limit.
    fn reserve(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The most bytes that may be reserved.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Which pool refused a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The tenant's own share.
    Tenant { limit: u64 },
    /// The host-wide budget.
    Host { limit: u64 },
}

/// One tenant's share of the host's plugin capacity.
#[derive(Debug)]
pub struct TenantShare {
    calls: Arc<Semaphore>,
    max_calls: usize,
    memory: MemoryPool,
    host: Arc<MemoryPool>,
}

impl TenantShare {
    /// A share of `max_calls` concurrent plugin calls and `memory_bytes` of
    /// linear memory, inside the host's `host` budget.
    pub fn new(max_calls: usize, memory_bytes: u64, host: Arc<MemoryPool>) -> TenantShare {
        let max_calls = max_calls.max(1);
        TenantShare {
            calls: Arc::new(Semaphore::new(max_calls)),
            max_calls,
            memory: MemoryPool::new(memory_bytes),
            host,
        }
    }

    /// A share without bounds of its own, for tools that run one plugin
    /// (`sessiond plugin run`, `check`).
    pub fn unbounded() -> TenantShare {
        TenantShare::new(
            Semaphore::MAX_PERMITS,
            u64::MAX,
            Arc::new(MemoryPool::new(u64::MAX)),
        )
    }

    /// A slot for one plugin call, waiting up to `wait` for one to free (or
    /// for as long as it takes, with none); none when every slot stayed
    /// taken that long.
    pub async fn call_slot(&self, wait: Option<Duration>) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.calls.clone().try_acquire_owned() {
            return Some(permit);
        }
        let acquire = self.calls.clone().acquire_owned();
        match wait {
            Some(wait) => tokio::time::timeout(wait, acquire).await.ok()?.ok(),
            None => acquire.await.ok(),
        }
    }

    /// Plugin calls of the tenant that may run at once.
    pub fn max_calls(&self) -> usize {
        self.max_calls
    }

    /// Plugin calls of the tenant running now.
    pub fn calls_running(&self) -> usize {
        self.max_calls
            .saturating_sub(self.calls.available_permits())
    }

    /// Reserves `n` bytes of linear memory in the tenant's share and the
    /// host's budget, or says which one is full.
    pub fn reserve(&self, n: u64) -> Result<(), Refused> {
        if !self.memory.reserve(n) {
            return Err(Refused::Tenant {
                limit: self.memory.limit(),
            });
        }
        if !self.host.reserve(n) {
            self.memory.release(n);
            return Err(Refused::Host {
                limit: self.host.limit(),
            });
        }
        Ok(())
    }

    /// Gives back `n` reserved bytes.
    pub fn release(&self, n: u64) {
        self.memory.release(n);
        self.host.release(n);
    }

    /// Bytes the tenant's live instances hold now.
    pub fn memory_used(&self) -> u64 {
        self.memory.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_cannot_pass_its_share_or_the_host_budget() {
        let host = Arc::new(MemoryPool::new(80));
        let a = TenantShare::new(1, 60, host.clone());
        let b = TenantShare::new(1, 60, host.clone());
        assert_eq!(a.reserve(50), Ok(()));
        assert_eq!(a.reserve(20), Err(Refused::Tenant { limit: 60 }));
        assert_eq!(b.reserve(50), Err(Refused::Host { limit: 80 }));
        // A refusal by the host takes nothing from the tenant's share.
        assert_eq!(b.memory_used(), 0);
        a.release(50);
        assert_eq!(host.used(), 0);
        assert_eq!(b.reserve(50), Ok(()));
        assert_eq!(host.used(), 50);
    }

    #[tokio::test]
    async fn call_slots_are_bounded_and_freed() {
        let share = TenantShare::new(2, 1, Arc::new(MemoryPool::new(1)));
        let one = share.call_slot(Some(Duration::ZERO)).await.unwrap();
        let _two = share.call_slot(Some(Duration::ZERO)).await.unwrap();
        assert!(
            share
                .call_slot(Some(Duration::from_millis(5)))
                .await
                .is_none()
        );
        drop(one);
        assert!(
            share
                .call_slot(Some(Duration::from_millis(5)))
                .await
                .is_some()
        );
    }
}
