//! The one wasmtime engine of the process: configuration, the epoch ticker
//! that drives deadlines, and the on-disk cache of precompiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::Plugin;
use super::host::HostState;
use super::limits::EngineSettings;

/// Stack a call's fiber keeps for host code above the guest's wasm stack.
const HOST_STACK_KIB: u64 = 1024;

/// The engine, the linker with every host capability, and the ticker.
pub(crate) struct SharedEngine {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub settings: EngineSettings,
    stop: Arc<AtomicBool>,
}

impl Drop for SharedEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl SharedEngine {
    pub fn new(settings: EngineSettings) -> Result<SharedEngine> {
        let max_limit = settings.default_limits.memory_mib;
        anyhow::ensure!(
            max_limit <= settings.max_memory_mib,
            "default memory_mib ({max_limit}) exceeds max_memory_mib ({})",
            settings.max_memory_mib
        );
        let mut pool = PoolingAllocationConfig::new();
        let n = settings.max_instances.max(1);
        // A componentize-py component holds about a dozen core instances and
        // a few memories and tables; Rust components hold fewer.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(4))
            .total_tables(n.saturating_mul(8))
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            // One fiber stack per call under way (not per idle instance).
            .total_stacks(n)
            .max_memory_size((settings.max_memory_mib as usize) << 20)
            // Reset a freed slot by rewriting only its dirty pages (Linux's
            // PAGEMAP_SCAN, 6.7+) instead of unmapping it: a fresh instance
            // then takes no page faults and no TLB shootdowns for the low
            // pages a plugin touched. Elsewhere this falls back to madvise.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(settings.keep_resident_kib as usize * 1024)
            .table_keep_resident(64 * 1024);

        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack((settings.wasm_stack_kib as usize) << 10)
            // Calls run on fibers. Above the guest's stack, host functions
            // (the store futures they poll) get a fixed headroom.
            .async_stack_size(((settings.wasm_stack_kib + HOST_STACK_KIB) as usize) << 10)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64))
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e:#}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking the sessiond host capabilities: {e:#}"))?;

        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(&engine, settings.epoch_tick_ms, stop.clone());
        Ok(SharedEngine {
            engine,
            linker,
            settings,
            stop,
        })
    }

    /// Compiles a component, or loads its precompiled artifact from the cache
    /// directory. Artifacts are keyed by the SHA-256 of the component and the
    /// engine's compatibility hash, so a different engine configuration or
    /// wasmtime version never reads another's artifact.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, CacheUse)> {
        let Some(dir) = &self.settings.cache_dir else {
            return Ok((Component::new(&self.engine, bytes)?, CacheUse::Disabled));
        };
        let path = self.artifact_path(dir, bytes);
        if path.exists() {
            match load_artifact(&self.engine, &path) {
                Ok(component) => return Ok((component, CacheUse::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = store_artifact(&component, dir, &path) {
            tracing::warn!(dir = %dir.display(), "cannot cache a precompiled component: {e:#}");
        }
        Ok((component, CacheUse::Miss))
    }

    fn artifact_path(&self, dir: &Path, bytes: &[u8]) -> PathBuf {
        let mut engine_hash = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let content = hex::encode(Sha256::digest(bytes));
        dir.join(format!("{content}-{:016x}.cwasm", engine_hash.finish()))
    }
}

/// Whether a component came from the artifact cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheUse {
    Hit,
    Miss,
    Disabled,
}

#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, path: &Path) -> Result<Component> {
    // SAFETY: deserializing runs native code from the file. The file is one
    // this process (or an earlier one) wrote with `Component::serialize` into
    // the operator's cache directory, under a name that binds it to the
    // component's SHA-256 and to this engine's compatibility hash; wasmtime
    // also checks the artifact's header against the engine. The directory
    // must be writable by the operator only, like any code directory.
    Ok(unsafe { Component::deserialize_file(engine, path)? })
}

fn store_artifact(component: &Component, dir: &Path, path: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    // Write then rename, so that a concurrent reader never sees half a file.
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), bytes)?;
    tmp.persist(path)?;
    Ok(())
}

fn spawn_ticker(engine: &Engine, tick_ms: u64, stop: Arc<AtomicBool>) {
    let engine = engine.weak();
    let tick = Duration::from_millis(tick_ms.max(1));
    std::thread::Builder::new()
        .name("sessiond-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}
