//! The host's Prometheus metrics (`GET /metrics`), on `prometheus-client`.
//!
//! Each running server owns one [`Metrics`], with a registry of its own:
//! there is no process-wide recorder, so the many servers a test process
//! starts never count into each other. The API records HTTP requests
//! ([`HttpMetrics`]), the runtime every hook call ([`PluginMetrics`]), and
//! the store wrapper of [`crate::store::metered`] every store operation and
//! every session it creates or ends ([`StoreMetrics`]). What the store must
//! be asked for (the end queues) is read at scrape time into a registry of
//! that scrape only ([`Scrape`]), so nothing stale outlives a tenant.
//!
//! Labels are bounded: route templates (never paths), methods, statuses,
//! tenant and plugin names from the config, hook names, failure kinds, store
//! operations and end reasons, each a fixed set. No session id, token, user
//! or plugin output is ever a label.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `GET /metrics`: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A family of histograms that all share one set of buckets.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// A server's metrics and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub plugins: PluginMetrics,
    pub store: StoreMetrics,
    pub webhooks: WebhookMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric of the host, registered, at zero; and the build info.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let plugins = PluginMetrics::register(&mut registry);
        let store = StoreMetrics::register(&mut registry);
        let webhooks = WebhookMetrics::register(&mut registry);
        registry.register(
            "sessiond_build",
            "The version of this build (always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            registry,
            http,
            plugins,
            store,
            webhooks,
        }
    }

    /// The Prometheus text of every metric, followed by those of `scrape`.
    pub fn encode(&self, scrape: &Scrape) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        let _ = prometheus_text::encode(&mut text, &scrape.registry);
        text
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

/// HTTP requests, by route template, method and status.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Histograms<RouteLabels>,
    refusals: Family<RefusalLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    tenant: String,
    reason: &'static str,
}

impl HttpMetrics {
    /// A request of `tenant` refused before its handler: `busy` (its
    /// requests in flight and its queue were full), `rate-limited` or
    /// `degraded`.
    pub fn refused(&self, tenant: &str, reason: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabels {
                tenant: tenant.to_string(),
                reason,
            })
            .inc();
    }

    fn register(registry: &mut Registry) -> HttpMetrics {
        let refusals = Family::default();
        registry.register(
            "sessiond_tenant_refusals",
            "Requests refused by admission before their handler, by tenant and reason: \
             busy (429, in-flight bound and queue full), rate-limited (429), \
             degraded (503, a plugin did not load)",
            refusals.clone(),
        );
        let requests = Family::default();
        registry.register(
            "sessiond_http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let duration: Histograms<RouteLabels> = Family::new_with_constructor(|| {
            // 0.5 ms to about 16 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "sessiond_http_request_duration_seconds",
            "Time from a request's head to its answer, by route template and method",
            duration.clone(),
        );
        HttpMetrics {
            requests,
            duration,
            refusals,
        }
    }

    /// One request answered. `route` is the matched route template (or a
    /// fixed placeholder), never the request's path.
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    tenant: String,
    plugin: String,
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    tenant: String,
    plugin: String,
    hook: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DroppedLineLabels {
    tenant: String,
    plugin: String,
    line: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    tenant: String,
    plugin: String,
    instance: &'static str,
}

/// What one hook call that ran cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCost {
    pub fuel: u64,
    pub wall_us: u64,
    pub peak_memory_bytes: u64,
}

/// Plugin hook calls, by tenant, plugin and hook.
#[derive(Clone)]
pub struct PluginMetrics {
    calls: Family<HookLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    instances: Family<InstanceLabels, Counter>,
    dropped_lines: Family<DroppedLineLabels, Counter>,
    fuel: Histograms<HookLabels>,
    wall: Histograms<HookLabels>,
    memory: Histograms<HookLabels>,
}

impl std::fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMetrics").finish_non_exhaustive()
    }
}

impl PluginMetrics {
    fn register(registry: &mut Registry) -> PluginMetrics {
        let calls = Family::default();
        registry.register(
            "sessiond_plugin_calls",
            "Hook calls, failed ones included, by tenant, plugin and hook",
            calls.clone(),
        );
        let failures = Family::default();
        registry.register(
            "sessiond_plugin_failures",
            "Failed hook calls, by tenant, plugin, hook and failure kind \
             (an end hook's failure counts once its end job is finished)",
            failures.clone(),
        );
        let instances = Family::default();
        registry.register(
            "sessiond_plugin_instances",
            "Hook calls by the instance that served them: warm (reused) or fresh",
            instances.clone(),
        );
        let dropped_lines = Family::default();
        registry.register(
            "sessiond_plugin_log_lines_dropped",
            "Log lines over a plugin's log rate, dropped: its own (line=plugin) \
             and the host's lines about its failed calls (line=failure)",
            dropped_lines.clone(),
        );
        let fuel: Histograms<HookLabels> = Family::new_with_constructor(|| {
            // 1,000 to about 1.07e9 units (the default limit is 5e7).
            Histogram::new(exponential_buckets(1_000.0, 4.0, 16))
        });
        registry.register(
            "sessiond_plugin_call_fuel",
            "Fuel a hook call consumed",
            fuel.clone(),
        );
        let wall: Histograms<HookLabels> = Family::new_with_constructor(|| {
            // 10 µs to about 1.3 s (the default deadline is 250 ms).
            Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
        });
        registry.register(
            "sessiond_plugin_call_duration_seconds",
            "Wall time of a hook call, a fresh instance's creation included",
            wall.clone(),
        );
        let memory: Histograms<HookLabels> = Family::new_with_constructor(|| {
            // 64 KiB to 128 MiB (the default limit is 64 MiB).
            Histogram::new(exponential_buckets(65_536.0, 2.0, 12))
        });
        registry.register(
            "sessiond_plugin_call_peak_memory_bytes",
            "Linear memory of the instance at the end of a hook call",
            memory.clone(),
        );
        PluginMetrics {
            calls,
            failures,
            instances,
            dropped_lines,
            fuel,
            wall,
            memory,
        }
    }

    fn hook_labels(tenant: &str, plugin: &str, hook: &'static str) -> HookLabels {
        HookLabels {
            tenant: tenant.to_string(),
            plugin: plugin.to_string(),
            hook,
        }
    }

    /// A call was made (whether or not it got to run).
    pub fn call(&self, tenant: &str, plugin: &str, hook: &'static str) {
        self.calls
            .get_or_create(&Self::hook_labels(tenant, plugin, hook))
            .inc();
    }

    /// A call got an instance, warm from the pool or `fresh`.
    pub fn instance(&self, tenant: &str, plugin: &str, fresh: bool) {
        self.instances
            .get_or_create(&InstanceLabels {
                tenant: tenant.to_string(),
                plugin: plugin.to_string(),
                instance: if fresh { "fresh" } else { "warm" },
            })
            .inc();
    }

    /// The counter of `plugin`'s dropped log lines of kind `line`
    /// (`plugin` or `failure`).
    pub fn dropped_lines(&self, tenant: &str, plugin: &str, line: &'static str) -> Counter {
        self.dropped_lines
            .get_or_create(&DroppedLineLabels {
                tenant: tenant.to_string(),
                plugin: plugin.to_string(),
                line,
            })
            .clone()
    }

    /// What a call that ran cost.
    pub fn cost(&self, tenant: &str, plugin: &str, hook: &'static str, cost: CallCost) {
        let labels = Self::hook_labels(tenant, plugin, hook);
        self.fuel.get_or_create(&labels).observe(cost.fuel as f64);
        self.wall
            .get_or_create(&labels)
            .observe(cost.wall_us as f64 / 1e6);
        self.memory
            .get_or_create(&labels)
            .observe(cost.peak_memory_bytes as f64);
    }

    /// A call failed with `kind` (a failure kind's fixed name).
    pub fn failure(&self, tenant: &str, plugin: &str, hook: &'static str, kind: &'static str) {
        self.failures
            .get_or_create(&FailureLabels {
                tenant: tenant.to_string(),
                plugin: plugin.to_string(),
                hook,
                kind,
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationErrorLabels {
    operation: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    tenant: String,
    reason: &'static str,
}

/// Store operations by operation, and the sessions this host's store
/// operations created and ended.
#[derive(Clone)]
pub struct StoreMetrics {
    operations: Family<OperationLabels, Counter>,
    errors: Family<OperationErrorLabels, Counter>,
    duration: Histograms<OperationLabels>,
    created: Family<TenantLabels, Counter>,
    ended: Family<EndLabels, Counter>,
}

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMetrics").finish_non_exhaustive()
    }
}

impl StoreMetrics {
    fn register(registry: &mut Registry) -> StoreMetrics {
        let operations = Family::default();
        registry.register(
            "sessiond_store_operations",
            "Store operations, failed ones included, by operation",
            operations.clone(),
        );
        let errors = Family::default();
        registry.register(
            "sessiond_store_errors",
            "Failed store operations, by operation and error kind",
            errors.clone(),
        );
        let duration: Histograms<OperationLabels> = Family::new_with_constructor(|| {
            // 0.1 ms to about 3.3 s (Redis operations time out at 3 s).
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "sessiond_store_operation_duration_seconds",
            "Time of a store operation, by operation",
            duration.clone(),
        );
        let created = Family::default();
        registry.register(
            "sessiond_sessions_created",
            "Sessions created through this host, by tenant",
            created.clone(),
        );
        let ended = Family::default();
        registry.register(
            "sessiond_sessions_ended",
            "Sessions this host took out of the store, by tenant and end reason",
            ended.clone(),
        );
        StoreMetrics {
            operations,
            errors,
            duration,
            created,
            ended,
        }
    }

    /// One store operation (a method of the store traits) and its error
    /// kind, if it failed.
    pub fn operation(
        &self,
        operation: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        let labels = OperationLabels { operation };
        self.operations.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            self.errors
                .get_or_create(&OperationErrorLabels { operation, kind })
                .inc();
        }
    }

    /// A session of `tenant` was created.
    pub fn created(&self, tenant: &str) {
        self.created
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .inc();
    }

    /// `count` sessions of `tenant` ended with `reason`.
    pub fn ended(&self, tenant: &str, reason: &'static str, count: u64) {
        if count == 0 {
            return;
        }
        self.ended
            .get_or_create(&EndLabels {
                tenant: tenant.to_string(),
                reason,
            })
            .inc_by(count);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    tenant: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    tenant: String,
    outcome: &'static str,
}

/// Webhook deliveries this host attempted, and how long they took.
#[derive(Clone)]
pub struct WebhookMetrics {
    attempts: Family<DeliveryLabels, Counter>,
    duration: Histograms<TenantLabels>,
    latency: Histograms<TenantLabels>,
}

impl std::fmt::Debug for WebhookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMetrics").finish_non_exhaustive()
    }
}

impl WebhookMetrics {
    fn register(registry: &mut Registry) -> WebhookMetrics {
        let attempts = Family::default();
        registry.register(
            "sessiond_webhook_attempts",
            "Webhook delivery attempts of this host, by tenant and outcome: sent (a 2xx \
             answer), failed (retried later), gave-up (its last attempt failed) or dropped \
             (its endpoint is no longer configured)",
            attempts.clone(),
        );
        let duration: Histograms<TenantLabels> = Family::new_with_constructor(|| {
            // 1 ms to about 33 s (an attempt times out at webhooks.timeout_ms).
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "sessiond_webhook_attempt_duration_seconds",
            "Time of one webhook delivery attempt, by tenant",
            duration.clone(),
        );
        let latency: Histograms<TenantLabels> = Family::new_with_constructor(|| {
            // 1 ms to about 9 hours: from queued to sent, retries included.
            Histogram::new(exponential_buckets(0.001, 2.0, 26))
        });
        registry.register(
            "sessiond_webhook_delivery_latency_seconds",
            "From an event's delivery being queued to its endpoint's 2xx answer, by tenant",
            latency.clone(),
        );
        WebhookMetrics {
            attempts,
            duration,
            latency,
        }
    }

    /// One attempt of `tenant` ended with `outcome` after `elapsed`.
    pub fn attempt(&self, tenant: &str, outcome: &'static str, elapsed: Duration) {
        self.attempts
            .get_or_create(&DeliveryLabels {
                tenant: tenant.to_string(),
                outcome,
            })
            .inc();
        self.duration
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A delivery of `tenant` was sent, `latency` after it was queued.
    pub fn delivered(&self, tenant: &str, latency: Duration) {
        self.latency
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .observe(latency.as_secs_f64());
    }
}

/// What one scrape read: each tenant's end queue and dead letters from the
/// store, and this host's end-worker counters.
pub struct Scrape {
    registry: Registry,
    jobs: Family<QueueLabels, Gauge>,
    dead: Family<TenantLabels, Gauge>,
    worker: Family<OutcomeLabels, Counter>,
    tenant_load: Family<LoadLabels, Gauge>,
    outbox: Family<QueueLabels, Gauge>,
    sessions: Family<TenantLabels, Gauge>,
    oldest_end: Family<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadLabels {
    tenant: String,
    what: &'static str,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Default for Scrape {
    fn default() -> Self {
        Scrape::new()
    }
}

impl Scrape {
    /// An empty scrape.
    pub fn new() -> Scrape {
        let mut registry = Registry::default();
        let jobs = Family::default();
        registry.register(
            "sessiond_end_queue_jobs",
            "End jobs in the tenant's queue (shared by every host), by state: \
             waiting (not yet claimed) or claimed (by a host, not yet acknowledged)",
            jobs.clone(),
        );
        let dead = Family::default();
        registry.register(
            "sessiond_end_dead_letters",
            "End jobs in the tenant's dead-letter list",
            dead.clone(),
        );
        let worker = Family::default();
        registry.register(
            "sessiond_end_worker_jobs",
            "End jobs this host's end worker finished, by outcome: ran, reclaimed \
             (of those ran, taken over from another host), superseded (finished \
             meanwhile by another host), dead-lettered",
            worker.clone(),
        );
        let tenant_load = Family::default();
        registry.register(
            "sessiond_tenant_load",
            "What each tenant holds of this host now: requests_in_flight, \
             requests_queued (waiting for admission), plugin_calls (running) and \
             plugin_memory_bytes (linear memory of its instances, running and warm)",
            tenant_load.clone(),
        );
        let outbox = Family::default();
        registry.register(
            "sessiond_webhook_outbox",
            "Webhook deliveries in the tenant's outbox (shared by every host), by state: \
             held (all of them) or due (to be sent now)",
            outbox.clone(),
        );
        let sessions = Family::default();
        registry.register(
            "sessiond_sessions",
            "Sessions the tenant has stored (shared by every host): the live ones, and those \
             past their deadline that no sweeper has taken yet",
            sessions.clone(),
        );
        let oldest_end = Family::default();
        registry.register(
            "sessiond_end_queue_oldest_age_seconds",
            "How long ago the oldest end job in the tenant's queue was queued; 0 when the \
             queue is empty",
            oldest_end.clone(),
        );
        Scrape {
            registry,
            jobs,
            dead,
            worker,
            tenant_load,
            outbox,
            sessions,
            oldest_end,
        }
    }

    /// This host's end-worker counters since it started.
    pub fn end_worker(&self, ran: u64, reclaimed: u64, superseded: u64, dead_lettered: u64) {
        for (outcome, n) in [
            ("ran", ran),
            ("reclaimed", reclaimed),
            ("superseded", superseded),
            ("dead-lettered", dead_lettered),
        ] {
            self.worker
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n);
        }
    }

    /// The depth of `tenant`'s end queue.
    pub fn end_queue(&self, tenant: &str, waiting: u64, claimed: u64) {
        for (state, n) in [("waiting", waiting), ("claimed", claimed)] {
            self.jobs
                .get_or_create(&QueueLabels {
                    tenant: tenant.to_string(),
                    state,
                })
                .set(n as i64);
        }
    }

    /// How many sessions `tenant` has stored.
    pub fn sessions(&self, tenant: &str, n: u64) {
        self.sessions
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(n as i64);
    }

    /// The age of the oldest job in `tenant`'s end queue (0: empty).
    pub fn oldest_end(&self, tenant: &str, age: Duration) {
        self.oldest_end
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(age.as_secs_f64());
    }

    /// What `tenant`'s webhook outbox holds.
    pub fn outbox(&self, tenant: &str, held: u64, due: u64) {
        for (state, n) in [("held", held), ("due", due)] {
            self.outbox
                .get_or_create(&QueueLabels {
                    tenant: tenant.to_string(),
                    state,
                })
                .set(n as i64);
        }
    }

    /// What `tenant` holds of this host now, `what` being
    /// `requests_in_flight`, `requests_queued`, `plugin_calls` (running)
    /// or `plugin_memory_bytes`.
    pub fn tenant_load(&self, tenant: &str, what: &'static str, n: u64) {
        self.tenant_load
            .get_or_create(&LoadLabels {
                tenant: tenant.to_string(),
                what,
            })
            .set(n as i64);
    }

    /// How many dead letters `tenant` has.
    pub fn dead_letters(&self, tenant: &str, count: u64) {
        self.dead
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(count as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_family_with_its_labels() {
        let metrics = Metrics::new();
        metrics
            .http
            .request("/v1/sessions/{id}", "GET", 200, Duration::from_millis(3));
        metrics.plugins.call("demo", "p", "on-session-start");
        metrics
            .plugins
            .failure("demo", "p", "on-session-start", "trap");
        metrics
            .store
            .operation("get", Duration::from_micros(50), None);
        metrics.store.ended("demo", "logout", 2);
        let scrape = Scrape::new();
        scrape.end_queue("demo", 3, 1);
        let text = metrics.encode(&scrape);
        for line in [
            "# TYPE sessiond_http_requests_total counter",
            r#"sessiond_http_requests_total{route="/v1/sessions/{id}",method="GET",status="200"} 1"#,
            r#"sessiond_http_request_duration_seconds_count{route="/v1/sessions/{id}",method="GET"} 1"#,
            r#"sessiond_plugin_calls_total{tenant="demo",plugin="p",hook="on-session-start"} 1"#,
            r#"sessiond_plugin_failures_total{tenant="demo",plugin="p",hook="on-session-start",kind="trap"} 1"#,
            r#"sessiond_store_operations_total{operation="get"} 1"#,
            r#"sessiond_sessions_ended_total{tenant="demo",reason="logout"} 2"#,
            r#"sessiond_end_queue_jobs{tenant="demo",state="waiting"} 3"#,
            r#"sessiond_end_queue_jobs{tenant="demo",state="claimed"} 1"#,
            concat!(
                r#"sessiond_build_info{version=""#,
                env!("CARGO_PKG_VERSION"),
                r#""} 1"#
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
