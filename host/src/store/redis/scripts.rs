//! The backend's Lua scripts: one file each under `lua/`, whose opening
//! comment gives its KEYS, ARGV and reply, and the shared `lua/prelude.lua`
//! put before every one of them.
//!
//! Scripts receive every key they are given by name in `KEYS`, plus the
//! tenant's key base in `ARGV[1]`; they build the keys of index members
//! (`<base>s:<member>`), of a stored record's user (`<base>u:<user>`) and of
//! the outbox's deliveries (`<base>wh:<id>`) from that base only, so those
//! keys carry the same hash tag and stay in the slot.

use std::sync::LazyLock;

use redis::Script;

use crate::store::{LimitPolicy, UserLimit};

/// Helpers shared by the scripts.
const PRELUDE: &str = include_str!("lua/prelude.lua");

pub(super) struct Scripts {
    pub(super) prune_consumers: Script,
    pub(super) claim_ends: Script,
    pub(super) ack_ends: Script,
    pub(super) end_queue: Script,
    pub(super) dead_letter: Script,
    pub(super) dead_letters: Script,
    pub(super) audit_once: Script,
    pub(super) create: Script,
    pub(super) update: Script,
    pub(super) touch: Script,
    pub(super) merge: Script,
    pub(super) remove: Script,
    pub(super) user: Script,
    pub(super) take_expired: Script,
    pub(super) deadlines_between: Script,
    pub(super) kv_set: Script,
    pub(super) kv_delete: Script,
    pub(super) outbox_push: Script,
    pub(super) outbox_lease: Script,
    pub(super) outbox_remove: Script,
    pub(super) outbox_retry: Script,
    pub(super) outbox_stats: Script,
    pub(super) outbox_page: Script,
    pub(super) control_put: Script,
    pub(super) control_remove: Script,
    pub(super) control_records: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
    Scripts {
        prune_consumers: s(include_str!("lua/prune_consumers.lua")),
        claim_ends: s(include_str!("lua/claim_ends.lua")),
        ack_ends: s(include_str!("lua/ack_ends.lua")),
        end_queue: s(include_str!("lua/end_queue.lua")),
        dead_letter: s(include_str!("lua/dead_letter.lua")),
        dead_letters: s(include_str!("lua/dead_letters.lua")),
        audit_once: s(include_str!("lua/audit_once.lua")),
        create: s(include_str!("lua/create.lua")),
        update: s(include_str!("lua/update.lua")),
        touch: s(include_str!("lua/touch.lua")),
        merge: s(include_str!("lua/merge.lua")),
        remove: s(include_str!("lua/remove.lua")),
        user: s(include_str!("lua/user.lua")),
        take_expired: s(include_str!("lua/take_expired.lua")),
        deadlines_between: s(include_str!("lua/deadlines_between.lua")),
        kv_set: s(include_str!("lua/kv_set.lua")),
        kv_delete: s(include_str!("lua/kv_delete.lua")),
        outbox_push: s(include_str!("lua/outbox_push.lua")),
        outbox_lease: s(include_str!("lua/outbox_lease.lua")),
        outbox_remove: s(include_str!("lua/outbox_remove.lua")),
        outbox_retry: s(include_str!("lua/outbox_retry.lua")),
        outbox_stats: s(include_str!("lua/outbox_stats.lua")),
        outbox_page: s(include_str!("lua/outbox_page.lua")),
        control_put: s(include_str!("lua/control_put.lua")),
        control_remove: s(include_str!("lua/control_remove.lua")),
        control_records: s(include_str!("lua/control_records.lua")),
    }
});

/// A script flag argument.
pub(super) fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// The `queue ends` argument of the scripts that end sessions: `0` (queue
/// nothing), `1` (queue, outside any request's trace) or the `traceparent`
/// of the request the jobs are queued in ([`crate::trace::current`]), which
/// `queue_end` stores with each job.
pub(super) fn ends_flag(on: bool) -> String {
    match (on, crate::trace::current()) {
        (false, _) => "0".into(),
        (true, None) => "1".into(),
        (true, Some(trace)) => trace.header(),
    }
}

/// The create script's `max` (-1: no limit) and `policy` arguments.
pub(super) fn limit_args(limit: Option<UserLimit>) -> (i64, &'static str) {
    match limit {
        Some(l) => (
            i64::from(l.max),
            match l.policy {
                LimitPolicy::Deny => "deny",
                LimitPolicy::EvictLru => "evict",
            },
        ),
        None => (-1, "deny"),
    }
}
