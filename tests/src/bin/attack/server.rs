//! Starting and watching the host: the generated config, the sessiond
//! process (and its throwaway redis-server), its memory and its log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sessiond_tests::redis_server::RedisServer;

use crate::{ATTACKER_KEY, Knobs, NO_KEY, VICTIM_KEY};

/// One running sessiond (and its throwaway redis-server), killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    _redis: Option<RedisServer>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: a sleeping end hook would hold a graceful stop for its drain.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The [[plugins]] table of a tenant: the attacker fixture in `mode`.
pub fn attacker_plugin(tenant: &str, name: &str, plugins: &Path, mode: &str) -> String {
    format!(
        "\n[[tenants.{tenant}.plugins]]\nname = \"{name}\"\npath = \"{}\"\ngrants = [\"kv\"]\nconfig = {{ mode = \"{mode}\" }}\n",
        plugins.join("attacker.wasm").display()
    )
}

/// Writes the config and starts sessiond on it; `Err` with the end of its
/// log when it does not become ready.
pub async fn start_server(knobs: &Knobs, work: &Path, run: &str, mode: &str) -> Result<Server> {
    let port = free_port()?;
    let (store, redis) = match knobs.store.as_str() {
        "redis" => {
            let redis = RedisServer::start();
            let table = format!(
                // The sweeper is off: the check on the grace period asks for ten of its intervals.
                "backend = \"redis\"\nurls = [\"{}\"]\ngrace_seconds = 86400\n",
                redis.url()
            );
            (table, Some(redis))
        }
        "embedded" => (
            format!(
                "backend = \"embedded\"\npath = \"{}\"\ndurability = \"normal\"\n",
                work.join(format!("data-{run}")).display()
            ),
            None,
        ),
        _ => ("backend = \"memory\"\n".to_owned(), None),
    };
    let tenant = |name: &str| {
        format!(
            "\n[tenants.{name}]\napi_keys = [\"{NO_KEY}\"]\nttl_seconds = 3600\nmax_ttl_seconds = 86400\nidle_timeout_seconds = 3600\n"
        )
    };
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n# Victim and attacker share 127.0.0.1 here; in production they would not.\nmax_connections = 4096\nmax_connections_per_client = 4096\n{}\n\n[store]\n{store}\n[runtime]\ncache_dir = \"{}\"\n{}\n\n[sweeper]\ninterval_ms = 3600000\n",
        knobs.server_toml,
        knobs.cache_dir.display(),
        knobs.runtime_toml
    );
    config += &tenant("victim");
    config += &attacker_plugin("victim", "greeter", &knobs.plugins, "harmless");
    config += &format!(
        "\n[[tenants.victim.plugins]]\nname = \"ender\"\npath = \"{}\"\ngrants = [\"audit\"]\n",
        knobs.plugins.join("ender.wasm").display()
    );
    config += &tenant("attacker");
    config += &attacker_plugin("attacker", "attacker", &knobs.plugins, mode);
    let config_path = work.join(format!("{run}.toml"));
    std::fs::write(&config_path, config)?;

    let log = work.join(format!("{run}.log"));
    let child = Command::new("taskset")
        .args(["-c", &knobs.server_cpu])
        .arg(&knobs.bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", &knobs.log)
        .env("SESSIOND_API_KEY_VICTIM", VICTIM_KEY)
        .env("SESSIOND_API_KEY_ATTACKER", ATTACKER_KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", knobs.bin.display()))?;
    let mut server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
        _redis: redis,
    };
    let ready = format!("{}/readyz", server.base);
    let probe = client(1)?;
    for _ in 0..1200 {
        if let Some(status) = server.child.try_wait()? {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            bail!("exited ({status}): {}", last.unwrap_or("no log").trim());
        }
        if let Ok(r) = probe.get(&ready).send().await
            && r.status().is_success()
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("not ready after 120 s")
}

/// What /proc says of a process: (VmRSS, VmHWM) in KiB, or None once it
/// has exited.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    if status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'))
    {
        return None;
    }
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// An HTTP client keeping up to `pool` idle connections, with a 10 s
/// timeout per request.
pub fn client(pool: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(10))
        .build()?)
}
