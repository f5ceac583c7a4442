//! Reaching Redis: the backend's settings ([`RedisConfig`]), one connection
//! to a single server or a cluster, the operation timeout every request runs
//! under, and how redis-rs errors map onto [`StoreError`] kinds.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use crate::store::{StoreError, StoreResult, defaults};

/// How to reach Redis and how to lay keys out in it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` URLs. More than one, or `cluster`, means Redis Cluster.
    pub urls: Vec<String>,
    /// Connect to a Redis Cluster even with a single seed URL.
    pub cluster: bool,
    /// The first part of every key.
    pub prefix: String,
    /// How long a session key outlives its deadline, so the sweeper can still
    /// take it and run its end hooks.
    pub grace: Duration,
    /// About how many records each tenant's audit stream keeps.
    pub audit_max_len: usize,
    /// How long one response may take.
    pub response_timeout: Duration,
    /// How long one connection attempt may take.
    pub connection_timeout: Duration,
    /// The bound on a whole operation, reconnecting included; past it the
    /// call fails with [`StoreError::OutcomeUnknown`] (a read with
    /// [`StoreError::Unavailable`]).
    pub operation_timeout: Duration,
}

impl RedisConfig {
    /// The given URLs with every other setting at its default ([`defaults`]).
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            cluster: false,
            prefix: defaults::KEY_PREFIX.into(),
            grace: defaults::GRACE,
            audit_max_len: defaults::AUDIT_MAX_LEN,
            response_timeout: defaults::RESPONSE_TIMEOUT,
            connection_timeout: defaults::CONNECTION_TIMEOUT,
            operation_timeout: defaults::OPERATION_TIMEOUT,
        }
    }
}

/// Whether a request can change what Redis holds, which decides what a
/// request that got no answer failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    /// Changes nothing: a lost answer is [`StoreError::Unavailable`].
    Read,
    /// May change something: a lost answer is [`StoreError::OutcomeUnknown`].
    Write,
}

/// One connection handle: a reconnecting single-server connection or a
/// cluster connection. Both are cheap to clone (shared, multiplexed).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection whose every request, reconnecting included, is bounded by
/// the operation timeout.
pub(super) struct Connection {
    conn: Conn,
    operation_timeout: Duration,
}

impl Connection {
    /// Connects as `config` says: one URL is a single server unless
    /// `cluster` is set, more than one a cluster.
    pub(super) async fn open(config: &RedisConfig) -> StoreResult<Self> {
        if config.urls.is_empty() {
            return Err(StoreError::Backend("no Redis URL given".into()));
        }
        let connect = async {
            if config.cluster || config.urls.len() > 1 {
                let client = redis::cluster::ClusterClient::builder(config.urls.iter().cloned())
                    .connection_timeout(config.connection_timeout)
                    .response_timeout(config.response_timeout)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            } else {
                let client = redis::Client::open(config.urls[0].as_str())?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(config.response_timeout))
                    .set_connection_timeout(Some(config.connection_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, manager_config).await?,
                ))
            }
        };
        let conn = tokio::time::timeout(config.operation_timeout, connect)
            .await
            .map_err(|_| StoreError::Unavailable("connecting to Redis timed out".into()))?
            // Nothing was sent while connecting: every failure is `Unavailable`.
            .map_err(|e| map_err(e, Effect::Read))?;
        Ok(Self {
            conn,
            operation_timeout: config.operation_timeout,
        })
    }

    /// `single` or `cluster`.
    pub(super) fn mode(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "single",
            Conn::Cluster(_) => "cluster",
        }
    }

    /// Runs one request under the operation timeout.
    async fn run<T>(
        &self,
        effect: Effect,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.operation_timeout, f).await {
            Ok(r) => r.map_err(|e| map_err(e, effect)),
            Err(_) => Err(no_answer(effect, "Redis did not answer in time".into())),
        }
    }

    /// Sends a command that may change what Redis holds.
    pub(super) async fn query(&self, cmd: &Cmd) -> StoreResult<Value> {
        self.query_as(Effect::Write, cmd).await
    }

    /// Sends a command; `effect` says whether it may change anything.
    pub(super) async fn query_as(&self, effect: Effect, cmd: &Cmd) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        self.run(effect, cmd.query_async::<Value>(&mut conn)).await
    }

    /// Runs a script that may change what Redis holds.
    pub(super) async fn invoke(&self, inv: &redis::ScriptInvocation<'_>) -> StoreResult<Value> {
        self.invoke_as(Effect::Write, inv).await
    }

    /// Runs a script; `effect` says whether it may change anything.
    pub(super) async fn invoke_as(
        &self,
        effect: Effect,
        inv: &redis::ScriptInvocation<'_>,
    ) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        self.run(effect, inv.invoke_async::<Value>(&mut conn)).await
    }
}

/// The error of a request that may have been sent and got no answer.
fn no_answer(effect: Effect, what: String) -> StoreError {
    match effect {
        Effect::Read => StoreError::Unavailable(what),
        Effect::Write => StoreError::OutcomeUnknown(format!("{what}; the write may have happened")),
    }
}

/// Maps a redis-rs error onto the store's error kinds.
fn map_err(e: RedisError, effect: Effect) -> StoreError {
    // Redis answered that it did not run the command, or no connection
    // could be made: the command never ran.
    let not_run = e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly,
                )
        )
        || e.code() == Some("BUSY");
    // Sent, or maybe sent, and no answer came.
    let lost = e.is_timeout() || e.is_connection_dropped() || matches!(e.kind(), ErrorKind::Io);
    if not_run {
        StoreError::Unavailable(e.to_string())
    } else if lost {
        no_answer(effect, e.to_string())
    } else if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        StoreError::Corrupt(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}
