//! A real sessiond server for HTTP tests: built from a TOML config, bound to
//! 127.0.0.1 on a free port, run on its own thread and async runtime (so the
//! test's runtime, whatever its flavour, only plays the client), on a
//! [`Backend`]: the memory store, a throwaway `redis-server` of its own, or
//! the binary's shared Redis Cluster under a key prefix of its own. Dropping
//! it shuts the server down gracefully. Also the HTTP client of the tests
//! ([`Api`], [`Reply`]).
//!
//! In a config text, `{plugins}` stands for the directory of the built guest
//! components.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use sessiond::config::{Config, EmbeddedStoreConfig, RedisStoreConfig, StoreConfig, hash_api_key};
use sessiond::runtime::EngineSettings;

use crate::Backend;
use crate::redis_server::{RedisCluster, RedisServer};

/// The older name of [`Backend`], for the server's store.
pub type StoreKind = Backend;

/// The directory of the built guest components.
pub fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("SESSIOND_PLUGIN_DIR"))
}

/// `sha256:<hex>` of a plain API key, for a config text.
pub fn key_hash(key: &str) -> String {
    hash_api_key(key)
}

fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A running server.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
    redis: Option<RedisServer>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server; panics when it does not start.
    pub fn start(backend: Backend, toml: &str) -> TestServer {
        match TestServer::try_start(backend, toml) {
            Ok(server) => server,
            Err(e) => panic!("the test server did not start: {e:#}"),
        }
    }

    /// Parses `toml` (with `{plugins}` replaced), points the store at
    /// `backend`, and starts a server on a free port of 127.0.0.1. Returns
    /// once it accepts requests, or with the error that stopped it.
    pub fn try_start(backend: Backend, toml: &str) -> Result<TestServer> {
        init_logging();
        let dir = tempfile::Builder::new()
            .prefix("sessiond-test-")
            .tempdir()?;
        let text = toml.replace("{plugins}", &plugin_dir().display().to_string());
        let path = dir.path().join("sessiond.toml");
        std::fs::write(&path, &text)?;
        let origin = path.display().to_string();
        let mut config = Config::parse(&text, &origin, dir.path())?;
        // The shared test engine settings, unless the config sets its own.
        let test_settings = crate::test_settings();
        if config.runtime.max_instances == EngineSettings::default().max_instances {
            config.runtime.max_instances = test_settings.max_instances;
        }
        config.runtime.cache_dir = test_settings.cache_dir;
        // The config's own Redis settings, if it has any, else the defaults.
        let base = match &config.store {
            StoreConfig::Redis(redis) => redis.clone(),
            other => RedisStoreConfig {
                audit_max_len: other.audit_max_len(),
                ..RedisStoreConfig::default()
            },
        };
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => {
                let server = RedisServer::start();
                // Short timeouts: a test that kills its Redis sees 503s soon.
                config.store = StoreConfig::Redis(RedisStoreConfig {
                    urls: vec![server.url()],
                    operation_timeout_ms: 1_000,
                    response_timeout_ms: 500,
                    connection_timeout_ms: 300,
                    ..base
                });
                Some(server)
            }
            Backend::Cluster => {
                // Other servers of this binary share the cluster: a prefix
                // of its own keeps every key of this one apart.
                static SERVERS: AtomicU64 = AtomicU64::new(1);
                let n = SERVERS.fetch_add(1, Ordering::Relaxed);
                config.store = StoreConfig::Redis(RedisStoreConfig {
                    urls: RedisCluster::shared().urls(),
                    cluster: true,
                    prefix: format!("test-server-{n}"),
                    ..base
                });
                None
            }
            Backend::Embedded => {
                // No fsync per commit: a test asserts behaviour, not power-loss
                // durability (tests/tests/embedded_crash.rs runs the default),
                // and an fsync stalled by a busy disk could outlast a plugin's
                // 250 ms deadline inside an audit append.
                config.store = StoreConfig::Embedded(EmbeddedStoreConfig {
                    path: dir.path().join("data"),
                    durability: sessiond::store::embedded::Durability::Normal,
                    audit_max_len: config.store.audit_max_len(),
                });
                None
            }
        };
        config.validate(&origin)?;

        let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sessiond-test-server".into())
            .spawn(move || -> Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let started = async {
                        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                        let addr = listener.local_addr()?;
                        let server = sessiond::server::build(config).await?;
                        Ok::<_, anyhow::Error>((listener, addr, server))
                    };
                    match started.await {
                        Ok((listener, addr, server)) => {
                            let _ = ready_tx.send(Ok(addr));
                            server
                                .run(listener, async move {
                                    let _ = stop_rx.await;
                                })
                                .await
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            Ok(())
                        }
                    }
                })
            })?;
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(600))
            .context("the server thread ended before it was ready")??;
        Ok(TestServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            redis,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// A client that sends `key` as its bearer API key.
    pub fn api(&self, key: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: self.base_url(),
            key: Some(key.to_string()),
        }
    }

    /// A client without an API key.
    pub fn anonymous(&self) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: self.base_url(),
            key: None,
        }
    }

    /// The server's own redis-server, with [`Backend::Redis`] (the shared
    /// cluster is no one server's).
    pub fn redis(&mut self) -> Option<&mut RedisServer> {
        self.redis.as_mut()
    }

    /// Shuts the server down gracefully and returns how `serve` ended.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !thread.is_finished() {
            if Instant::now() > deadline {
                return Err(anyhow!("the server did not shut down within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        thread
            .join()
            .map_err(|_| anyhow!("the server thread panicked"))?
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown()
            && !std::thread::panicking()
        {
            panic!("{e:#}");
        }
    }
}

/// An HTTP client for one server and API key.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        Reply::from_parts(status, headers, &bytes)
    }

    /// A reply from its status, headers and body bytes.
    pub fn from_parts(status: u16, headers: HeaderMap, bytes: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// A header's value as text ("" when missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `Content-Type` without parameters.
    pub fn content_type(&self) -> &str {
        self.header("content-type")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
    }

    /// Asserts the status (printing the body otherwise) and returns self.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts an RFC 9457 problem with this status and a `type` ending in
    /// `slug` (any type when `slug` is empty); returns the problem.
    #[track_caller]
    pub fn problem(self, status: u16, slug: &str) -> Value {
        let reply = self.expect(status);
        assert_eq!(
            reply.content_type(),
            "application/problem+json",
            "not a problem: {}",
            reply.text
        );
        let body = reply.body;
        assert_eq!(body["status"], status, "{body}");
        assert!(body["title"].is_string(), "{body}");
        assert!(body["detail"].is_string(), "{body}");
        let kind = body["type"].as_str().unwrap_or_default();
        assert!(
            kind.ends_with(slug),
            "type {kind:?} is not {slug:?}: {body}"
        );
        body
    }
}

/// The Prometheus text of `GET /metrics` on the server at `base`, asked
/// without a key (from loopback, which the default `[metrics]` allows).
pub async fn scrape(base: &str) -> String {
    Api::new(base, None).get("/metrics").await.expect(200).text
}

impl Api {
    /// A client for the server at `base` (`http://host:port`) that sends
    /// `key`, if any, as its bearer API key.
    pub fn new(base: &str, key: Option<&str>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            key: key.map(str::to_string),
        }
    }

    /// A request with the API key.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Sends a request built by [`Api::request`].
    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Reply {
        Reply::read(builder.send().await.expect("sending a request")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// POST without a body.
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.request(Method::POST, path)).await
    }

    /// PATCH with a merge patch.
    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(
            self.request(Method::PATCH, path)
                .header("content-type", "application/merge-patch+json")
                .body(body.to_string()),
        )
        .await
    }

    /// Creates a session; panics unless 201. Returns the answer's body.
    pub async fn create(&self, body: &Value) -> Value {
        self.post("/v1/sessions", body).await.expect(201).body
    }

    /// Every audit record of the tenant, following `next`.
    pub async fn audit_all(&self) -> Vec<Value> {
        self.try_audit_all()
            .await
            .expect("GET /v1/audit answered 200")
    }

    /// [`Api::audit_all`], or `None` when a page does not answer 200 (the
    /// store may be coming back from an outage).
    pub async fn try_audit_all(&self) -> Option<Vec<Value>> {
        let mut records = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/audit?limit=1000&after={a}"),
                None => "/v1/audit?limit=1000".to_string(),
            };
            let page = self.get(&path).await;
            if page.status != 200 {
                return None;
            }
            let page = page.body;
            records.extend(page["records"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return Some(records),
            }
        }
    }

    /// The audit records written by plugins about the session with this
    /// public id, whose `record.type` is `kind`.
    pub async fn audit_of(&self, public_id: &str, kind: &str) -> Vec<Value> {
        self.audit_all()
            .await
            .into_iter()
            .filter(|r| r["session"] == public_id && r["record"]["type"] == kind)
            .collect()
    }

    /// The `session_ended` audit records (audit-log plugin) of a session,
    /// once at least one exists: end hooks run on the end worker shortly
    /// after the API call that ended the session. Waits 10 s at most, then a
    /// further 300 ms so that a second record (which must not come) could
    /// show.
    pub async fn end_records(&self, public_id: &str) -> Vec<Value> {
        let found = eventually(Duration::from_secs(10), || async {
            let ended = self.audit_of(public_id, "session_ended").await;
            (!ended.is_empty()).then_some(ended)
        })
        .await
        .unwrap_or_else(|| panic!("session {public_id} was never ended"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = self.audit_of(public_id, "session_ended").await;
        assert_eq!(again.len(), found.len(), "a late second end: {again:?}");
        again
    }

    /// The reasons of [`Api::end_records`].
    pub async fn end_reasons(&self, public_id: &str) -> Vec<String> {
        self.end_records(public_id)
            .await
            .iter()
            .map(|r| {
                r["record"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// Panics if the session has an end record after 300 ms (time enough for
    /// the end worker to have run a hook that was queued).
    pub async fn assert_not_ended(&self, public_id: &str) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ended = self.audit_of(public_id, "session_ended").await;
        assert!(ended.is_empty(), "session {public_id} ended: {ended:?}");
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
