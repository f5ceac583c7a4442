//! Whole sessiond host processes for multi-host and restart tests: each runs
//! `sessiond serve` (the test crate's `sessiond-host` binary) with its own
//! config on a free port, logs to a file, and can be stopped gracefully
//! (SIGTERM) or killed (SIGKILL) like a crashing machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::server::Api;

/// One sessiond process.
#[derive(Debug)]
pub struct Host {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    pub name: String,
}

/// The status of `GET path` on 127.0.0.1:`port`, over a plain blocking
/// socket (no async runtime needed); none when nothing answers.
pub fn probe(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

impl Host {
    /// Starts `bin serve --config <dir>/<name>.toml`, where the config is
    /// `toml` with `{listen}` replaced by `127.0.0.1:<free port>`. Returns
    /// once `/readyz` answers 200; panics with the host's log if it does not
    /// within `timeout`.
    pub fn start(bin: &str, dir: &Path, name: &str, toml: &str, timeout: Duration) -> Host {
        let mut host = Host::spawn(bin, dir, name, toml);
        host.wait_ready(timeout);
        host
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if probe(self.port, "/readyz") == Some(200) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "host {} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "host {} was not ready within {timeout:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port the host listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client of this host with `key`.
    pub fn api(&self, key: &str) -> Api {
        Api::new(&self.base_url(), Some(key))
    }

    /// The host's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (at most `timeout`) for a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the host is running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "host {} did not stop within {timeout:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Hosts that must not start, and what a test needs of a running one.
impl Host {
    /// The process id, while the host runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `bin serve` as [`Host::start`] does, for a host that must
    /// refuse to start: waits (at most `timeout`) for it to exit, and returns
    /// its exit status and its log. Panics if it answers `/readyz` with 200
    /// first, or does not exit in time.
    pub fn start_refused(
        bin: &str,
        dir: &Path,
        name: &str,
        toml: &str,
        timeout: Duration,
    ) -> (ExitStatus, String) {
        let mut host = Host::spawn(bin, dir, name, toml);
        let deadline = Instant::now() + timeout;
        loop {
            if probe(host.port, "/readyz") == Some(200) {
                panic!("host {name} became ready:\n{}", host.log());
            }
            let child = host.child.as_mut().expect("the host was started");
            if let Ok(Some(status)) = child.try_wait() {
                host.child = None;
                return (status, host.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "host {name} neither started nor exited within {timeout:?}:\n{}",
                    host.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes the config and starts the process, without waiting for it.
    fn spawn(bin: &str, dir: &Path, name: &str, toml: &str) -> Host {
        Host::spawn_with_log(bin, dir, name, toml, Some("warn"))
    }

    /// [`Host::start`], logging as the config's `[log]` says (no
    /// `RUST_LOG`; the other hosts run with `RUST_LOG=warn`).
    pub fn start_logging_as_configured(
        bin: &str,
        dir: &Path,
        name: &str,
        toml: &str,
        timeout: Duration,
    ) -> Host {
        let mut host = Host::spawn_with_log(bin, dir, name, toml, None);
        host.wait_ready(timeout);
        host
    }

    fn spawn_with_log(
        bin: &str,
        dir: &Path,
        name: &str,
        toml: &str,
        rust_log: Option<&str>,
    ) -> Host {
        let port = crate::free_port(&[]);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            toml.replace("{listen}", &format!("127.0.0.1:{port}")),
        )
        .expect("writing a host config");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("creating a host log");
        let err = out.try_clone().expect("cloning a file handle");
        let mut command = Command::new(bin);
        match rust_log {
            Some(levels) => command.env("RUST_LOG", levels),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        Host {
            child: Some(child),
            port,
            log,
            name: name.to_string(),
        }
    }
}
