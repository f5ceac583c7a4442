//! The test harness: the backends a test runs on ([`every_backend!`]),
//! shared fixtures, paths of the guest components built by `build.rs`,
//! throwaway `redis-server`s, a sessiond server on a free port, the router
//! without a socket, and whole sessiond host processes.

use std::net::TcpListener;
use std::path::PathBuf;

pub mod backend;
pub mod edge;
pub mod fixtures;
pub mod hosts;
pub mod redis_server;
pub mod server;

pub use backend::Backend;

/// The path of a built guest component, such as `plugin("single_session")`.
pub fn plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("SESSIOND_PLUGIN_DIR")).join(format!("{name}.wasm"))
}

use std::sync::{Arc, OnceLock};

use sessiond::runtime::{
    Capability, EngineSettings, HostStores, LimitOverrides, OnError, PluginSpec, Runtime,
};
use sessiond::store::StoreBackend;
use sessiond::store::memory::MemoryStore;

/// A multi-threaded async runtime shared by the tests of one binary; plugin
/// calls made from a test thread run on it (see [`Block`]).
pub fn tokio() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs a future to completion on the shared runtime, for the plugin calls
/// of synchronous tests: `chain.session_start(record, now).block()`.
pub trait Block: std::future::Future + Sized {
    fn block(self) -> Self::Output {
        tokio().block_on(self)
    }
}

impl<F: std::future::Future> Block for F {}

/// Where tests cache precompiled components, shared by every test binary so
/// that the Python plugin is compiled once per engine configuration.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sessiond-test-cache")
}

/// Engine settings for tests: a small instance pool and the shared cache.
pub fn test_settings() -> EngineSettings {
    EngineSettings {
        cache_dir: Some(cache_dir()),
        max_instances: 64,
        ..EngineSettings::default()
    }
}

/// A runtime over `store` with test settings.
pub fn runtime(store: Arc<dyn StoreBackend>) -> Runtime {
    Runtime::new(test_settings(), HostStores::of(store)).expect("runtime")
}

/// A runtime over a fresh memory store, returned with the store.
pub fn memory_runtime() -> (Runtime, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (runtime(store.clone()), store)
}

/// A plugin spec for the component `file` (a name under `target/plugins`).
pub fn spec(name: &str, file: &str, grants: &[Capability], config: &[(&str, &str)]) -> PluginSpec {
    PluginSpec {
        name: name.to_string(),
        path: plugin(file),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        grants: grants.to_vec(),
        limits: LimitOverrides::default(),
        on_error: OnError::Deny,
        instance_reuse: true,
        circuit: Default::default(),
    }
}

/// A port on 127.0.0.1 that was free a moment ago, as was `port + offset`
/// for each offset in `also_free` (a Redis Cluster node's bus port, say).
pub fn free_port(also_free: &[u16]) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
        let port = listener.local_addr().expect("local address").port();
        let others_free = also_free.iter().all(|offset| {
            port.checked_add(*offset)
                .is_some_and(|other| TcpListener::bind(("127.0.0.1", other)).is_ok())
        });
        if others_free {
            return port;
        }
    }
}
