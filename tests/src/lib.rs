//! The test harness: paths of the guest components built by `build.rs`, a
//! throwaway `redis-server`, and a sessiond server on a free port.

use std::path::PathBuf;

pub mod redis_server;

/// The path of a built guest component, such as `plugin("single_session")`.
pub fn plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("SESSIOND_PLUGIN_DIR")).join(format!("{name}.wasm"))
}
