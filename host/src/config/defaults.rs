//! Every default of the host configuration, by its config name. The plugin
//! engine's defaults (`[runtime]`) live with the runtime, in
//! `runtime/limits.rs`; the store's come from [`crate::store::defaults`],
//! which the backends also use when built without a config, so each value is
//! written once.

use crate::store::defaults as store;
use crate::store::embedded::Durability;

/// The config file read when `--config` is not given.
pub const CONFIG_PATH: &str = "sessiond.toml";
/// `server.listen`.
pub const LISTEN: &str = "127.0.0.1:8080";
/// `server.max_body_bytes`: 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// `server.header_read_timeout_ms`: 30 seconds (hyper's own default).
pub const HEADER_READ_TIMEOUT_MS: u64 = 30_000;
/// `server.body_read_timeout_ms`: 30 seconds.
pub const BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// `server.max_connections`: below the usual soft limit of 1024 open files,
/// so that the cap, not the file-descriptor limit, is what refuses.
pub const MAX_CONNECTIONS: usize = 768;
/// `server.max_connections_per_client`: room for a busy backend's burst (a
/// REST consumer may fire hundreds of requests at once), while two thirds of
/// `max_connections` keeps one client from taking them all.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 512;
/// `server.shutdown_timeout_ms`: 10 seconds.
pub const SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// `server.idempotency_ttl_seconds`: a day.
pub const IDEMPOTENCY_TTL_SECONDS: u64 = 24 * 3600;
/// The largest `server.idempotency_ttl_seconds` accepted: 30 days.
pub const MAX_IDEMPOTENCY_TTL_SECONDS: u64 = 30 * 24 * 3600;
/// `server.max_in_flight`: requests handled at once on one host, shared
/// out between its tenants (a third of `max_connections`).
pub const MAX_IN_FLIGHT: usize = 256;
/// `runtime.cache_dir`, relative to the working directory.
pub const CACHE_DIR: &str = ".cache/sessiond";
/// `store.audit_max_len`, with every backend.
pub const AUDIT_MAX_LEN: usize = store::AUDIT_MAX_LEN;
/// `store.path` (backend `embedded`): the data directory, relative to the
/// config file's directory.
pub const EMBEDDED_PATH: &str = "data";
/// `store.durability` (backend `embedded`): the store's own default.
pub const EMBEDDED_DURABILITY: Durability = Durability::Full;
/// `store.cluster` (backend `redis`).
pub const REDIS_CLUSTER: bool = false;
/// `store.prefix` (backend `redis`).
pub const REDIS_PREFIX: &str = store::KEY_PREFIX;
/// `store.grace_seconds` (backend `redis`): one hour.
pub const REDIS_GRACE_SECONDS: u64 = store::GRACE.as_secs();
/// `store.response_timeout_ms` (backend `redis`).
pub const REDIS_RESPONSE_TIMEOUT_MS: u64 = store::RESPONSE_TIMEOUT.as_millis() as u64;
/// `store.connection_timeout_ms` (backend `redis`).
pub const REDIS_CONNECTION_TIMEOUT_MS: u64 = store::CONNECTION_TIMEOUT.as_millis() as u64;
/// `store.operation_timeout_ms` (backend `redis`).
pub const REDIS_OPERATION_TIMEOUT_MS: u64 = store::OPERATION_TIMEOUT.as_millis() as u64;
/// `sweeper.interval_ms`.
pub const SWEEP_INTERVAL_MS: u64 = 1_000;
/// `sweeper.batch`.
pub const SWEEP_BATCH: usize = 100;
/// `ends.poll_interval_ms`.
pub const ENDS_POLL_INTERVAL_MS: u64 = 200;
/// `ends.batch`.
pub const ENDS_BATCH: usize = 64;
/// `ends.max_concurrent_per_tenant`.
pub const ENDS_MAX_CONCURRENT_PER_TENANT: usize = 32;
/// `ends.reclaim_after_ms`: 30 seconds.
pub const ENDS_RECLAIM_AFTER_MS: u64 = 30_000;
/// `ends.max_deliveries`.
pub const ENDS_MAX_DELIVERIES: u64 = 5;
/// `ends.shutdown_drain_ms`: 10 seconds.
pub const ENDS_SHUTDOWN_DRAIN_MS: u64 = 10_000;
/// `metrics.allow`: loopback clients only.
pub const METRICS_ALLOW: [&str; 2] = ["127.0.0.0/8", "::1"];
/// `tenants.<name>.ttl_seconds`: one hour.
pub const TTL_SECONDS: u64 = 3_600;
/// `tenants.<name>.max_ttl_seconds`: one day.
pub const MAX_TTL_SECONDS: u64 = 86_400;
/// `tenants.<name>.idle_timeout_seconds`: 15 minutes.
pub const IDLE_TIMEOUT_SECONDS: u64 = 900;

/// How often the webhook sender polls each tenant's outbox.
pub const WEBHOOKS_POLL_INTERVAL_MS: u64 = 200;
/// How long one webhook delivery may take.
pub const WEBHOOKS_TIMEOUT_MS: u64 = 5_000;
/// Attempts per webhook delivery before it is given up on: with the
/// default waits, about four hours of retries.
pub const WEBHOOKS_MAX_ATTEMPTS: u32 = 16;
/// The wait before a delivery's first retry.
pub const WEBHOOKS_RETRY_BASE_MS: u64 = 1_000;
/// The longest wait between two attempts of a delivery.
pub const WEBHOOKS_RETRY_MAX_MS: u64 = 3_600_000;
/// Deliveries of one tenant in flight at once on one host.
pub const WEBHOOKS_MAX_CONCURRENT_PER_TENANT: usize = 16;
