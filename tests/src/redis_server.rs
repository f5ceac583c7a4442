//! Throwaway `redis-server` processes for tests: one server on a free port, or
//! a three-master Redis Cluster, either of a test's own or shared by the tests
//! of one binary (`shared`). Each lives in its own temporary directory and is
//! killed when dropped. Tests never touch a Redis they did not start.
//!
//! A shared server lives in a `static` and is never dropped, so each server
//! also gets a tiny watchdog shell that kills it and removes its directory
//! once the test process is gone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A cluster node talks to the others on its port plus this.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    persistent: bool,
    cluster: bool,
}

/// One `redis-server` bound to 127.0.0.1 on a free port, in a temporary
/// directory; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    watchdog: Option<Child>,
    port: u16,
    dir: TempDir,
    mode: Mode,
}

impl RedisServer {
    /// A server without persistence (`--save "" --appendonly no`).
    pub fn start() -> Self {
        Self::start_mode(Mode::default())
    }

    /// One server for all the tests of this binary, started by the first
    /// that asks (blocking). Tests that share it keep apart by tenant or
    /// key prefix, and never kill it.
    pub fn shared() -> &'static RedisServer {
        static SERVER: OnceLock<RedisServer> = OnceLock::new();
        SERVER.get_or_init(RedisServer::start)
    }

    /// A server that writes every change to its append-only file before
    /// answering (`--appendonly yes --appendfsync always`), so that
    /// [`RedisServer::restart`] loses nothing that was acknowledged.
    pub fn start_persistent() -> Self {
        Self::start_mode(Mode {
            persistent: true,
            ..Mode::default()
        })
    }

    fn start_mode(mode: Mode) -> Self {
        let mut last_log = String::new();
        // A free port can be taken between choosing and binding it: retry.
        for _ in 0..5 {
            let port = if mode.cluster {
                crate::free_port(&[CLUSTER_BUS_OFFSET])
            } else {
                crate::free_port(&[])
            };
            let dir = tempfile::Builder::new()
                .prefix("sessiond-redis-")
                .tempdir()
                .expect("creating a temporary directory for redis-server");
            let mut server = RedisServer {
                child: None,
                watchdog: None,
                port,
                dir,
                mode,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start; its last log:\n{last_log}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (append-only file, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        for mut child in [self.child.take(), self.watchdog.take()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server process (SIGSTOP) without killing it: its sockets
    /// stay open and what clients send waits in them, to be run when it is
    /// [thawed](RedisServer::thaw), as after a long pause of the machine.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a [frozen](RedisServer::freeze) server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server if it runs and starts it again on the same port and
    /// directory; a persistent server comes back with its data.
    pub fn restart(&mut self) {
        self.kill();
        // The port was just released; give the kernel a few tries.
        let mut last_log = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(log) => last_log = log,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not restart on port {}; its log:\n{last_log}",
            self.port
        );
    }

    /// Sends one command and returns the reply as text (see [`command`]).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        command(self.port, args)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts the process and waits for PING; on failure returns the log.
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = self
            .dir
            .path()
            .to_str()
            .expect("utf-8 temp dir")
            .to_string();
        let log = self
            .log_path()
            .to_str()
            .expect("utf-8 temp dir")
            .to_string();
        let mut args: Vec<&str> = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--logfile",
            &log,
            "--daemonize",
            "no",
            "--save",
            "",
        ];
        if self.mode.persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            args.extend(["--appendonly", "no"]);
        }
        if self.mode.cluster {
            args.extend([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]);
        }
        let mut child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(reply) = command(self.port, &["PING"])
                && reply == "PONG"
            {
                self.watchdog = watchdog(child.id(), self.dir.path());
                self.child = Some(child);
                return Ok(());
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a shell that waits for this test process to end, then kills the
/// server `pid` and removes `dir`. Killed with the server in [`RedisServer::kill`].
fn watchdog(pid: u32, dir: &Path) -> Option<Child> {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null; rm -rf '{dir}'",
        parent = std::process::id(),
        dir = dir.display(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// A Redis Cluster of three masters (no replicas), each a [`RedisServer`].
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_mode(Mode {
                    persistent: false,
                    cluster: true,
                })
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        if !output.status.success() {
            panic!(
                "redis-cli --cluster create failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + START_TIMEOUT;
        while !cluster.is_ok() {
            if Instant::now() > deadline {
                let logs: Vec<String> = cluster.nodes.iter().map(|n| n.log()).collect();
                panic!(
                    "the cluster did not become ready; logs:\n{}",
                    logs.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// One cluster for all the tests of this binary, like
    /// [`RedisServer::shared`].
    pub fn shared() -> &'static RedisCluster {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(RedisCluster::start)
    }

    /// Whether every node reports `cluster_state:ok` and all slots assigned.
    fn is_ok(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.command(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
        })
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// Sends one command to the server on `port` and returns its reply as text: a
/// simple string, a bulk string, an integer, or `Err` for an error reply.
/// Enough for PING, CLUSTER INFO, DBSIZE, CONFIG SET and the like.
pub fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = |what: &str| std::io::Error::other(format!("{what}: {line:?}"));
    match line.split_at_checked(1) {
        Some(("+", s)) | Some((":", s)) => Ok(s.to_string()),
        Some(("-", e)) => Err(std::io::Error::other(e.to_string())),
        Some(("$", n)) => {
            let n: i64 = n.parse().map_err(|_| bad("bad bulk length"))?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            reader.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            String::from_utf8(buf).map_err(|_| bad("non-utf-8 reply"))
        }
        _ => Err(bad("unsupported reply")),
    }
}
