//! The HTTP connection layer over real sockets: raw bytes written to a
//! server, to see exactly what a client gets for slow bodies, unfinished
//! headers, idle keep-alive connections, the connection caps, malformed
//! request heads and a shutdown with half-sent requests open.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sessiond_tests::Backend;
use sessiond_tests::fixtures::Tenant;
use sessiond_tests::hosts::Host;
use sessiond_tests::server::{Reply, TestServer};

const KEY: &str = "test-key-http";

/// How long a test waits for anything: far longer than any timeout it
/// configures.
const PATIENCE: Duration = Duration::from_secs(10);

fn server(settings: &str) -> TestServer {
    let toml = format!(
        "[server]\n{settings}\n{}",
        Tenant::new("acme").key(KEY).toml()
    );
    TestServer::start(Backend::Memory, &toml)
}

fn addr(server: &TestServer) -> SocketAddr {
    server
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .expect("a socket address")
}

/// A raw client connection.
struct Raw {
    stream: TcpStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The server closed the connection (or reset it).
    Closed,
    /// Nothing came within the read timeout.
    Silent,
}

impl Raw {
    fn connect(to: SocketAddr) -> Raw {
        Raw::wrap(TcpStream::connect(to).expect("connecting"))
    }

    /// A connection from the local address `from` (any 127.x.y.z works on
    /// the loopback interface), to test the per-client cap.
    fn connect_from(from: &str, to: SocketAddr) -> Raw {
        let from: IpAddr = from.parse().unwrap();
        let stream = sessiond_tests::tokio()
            .block_on(async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(from, 0))?;
                socket.connect(to).await?.into_std()
            })
            .expect("connecting from a chosen address");
        stream.set_nonblocking(false).unwrap();
        Raw::wrap(stream)
    }

    fn wrap(stream: TcpStream) -> Raw {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes`; false when the connection is already closed.
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads more bytes into the buffer: how many, or how the read ended.
    fn fill(&mut self) -> Result<usize, End> {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(End::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(End::Silent)
            }
            Err(_) => Err(End::Closed),
        }
    }

    /// The next response, read whole (by its `Content-Length`), or how the
    /// connection ended before one came.
    fn response(&mut self) -> Result<Reply, End> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut headers = HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').expect("a header line");
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                HeaderValue::from_str(value.trim()).unwrap(),
            );
        }
        let length: usize = headers
            .get("content-length")
            .map(|v| v.to_str().unwrap().parse().unwrap())
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            self.fill()?;
        }
        let body: Vec<u8> = self.buf.drain(..head_end + length).skip(head_end).collect();
        Ok(Reply::from_parts(status, headers, &body))
    }

    /// Reads until the server closes the connection, which it must do within
    /// [`PATIENCE`]; returns what came before.
    fn closed(&mut self) -> Vec<u8> {
        loop {
            match self.fill() {
                Ok(_) => continue,
                Err(End::Closed) => return std::mem::take(&mut self.buf),
                Err(End::Silent) => panic!(
                    "the connection is still open after {PATIENCE:?}; read so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: sessiond\r\n\r\n").into_bytes()
}

/// `bytes` written from a thread of their own while the answer is read: a
/// server that stops reading (a head too large) must still be heard.
fn exchange(raw: &mut Raw, bytes: Vec<u8>) -> Result<Reply, End> {
    let mut writer = raw.stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        for chunk in bytes.chunks(64 * 1024) {
            if writer.write_all(chunk).is_err() {
                return;
            }
        }
    });
    let reply = raw.response();
    writing.join().unwrap();
    reply
}

/// A POST of `/v1/sessions` announcing `length` bytes of JSON body, with
/// its first bytes.
fn create_head(length: usize) -> Vec<u8> {
    format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: sessiond\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_body_that_does_not_arrive_gets_408_and_the_connection_closes() {
    let server = server("body_read_timeout_ms = 200");
    let mut raw = Raw::connect(addr(&server));
    let started = Instant::now();
    assert!(raw.send(&create_head(1000)));
    assert!(raw.send(b"{\""));
    let reply = raw.response().expect("an answer");
    assert_eq!(reply.header("connection"), "close");
    let p = reply.problem(408, "body-timeout");
    assert_eq!(p["limit_ms"], 200, "{p}");
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
    assert_eq!(raw.closed(), b"");

    // The deadline counts from the first read, not from the last byte: a
    // client that trickles its body meets it too.
    let mut raw = Raw::connect(addr(&server));
    assert!(raw.send(&create_head(1000)));
    let mut writer = raw.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let until = Instant::now() + PATIENCE;
        while Instant::now() < until && writer.write_all(b" ").is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    raw.response()
        .expect("an answer")
        .problem(408, "body-timeout");
    raw.closed();
    trickle.join().unwrap();

    // A whole body in time is unaffected, on the same kind of connection.
    let mut raw = Raw::connect(addr(&server));
    assert!(raw.send(&create_head(2)));
    assert!(raw.send(b"{}"));
    raw.response().expect("an answer").expect(201);

    // A body the route does not read cannot be told from a next request:
    // the answer is sent, then the connection closed.
    let mut raw = Raw::connect(addr(&server));
    assert!(
        raw.send(b"GET /healthz HTTP/1.1\r\nHost: sessiond\r\nContent-Length: 1000\r\n\r\n{\"")
    );
    raw.response().expect("an answer").expect(200);
    assert_eq!(raw.closed(), b"");
}

#[test]
fn unfinished_headers_are_cut_off_without_an_answer() {
    let server = server("header_read_timeout_ms = 200");
    let mut raw = Raw::connect(addr(&server));
    let started = Instant::now();
    assert!(raw.send(b"GET /healthz HTTP/1.1\r\nHost: sessiond\r\n"));
    assert_eq!(raw.closed(), b"", "hyper closes without an answer");
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
    // A connection that sends nothing at all.
    let mut raw = Raw::connect(addr(&server));
    assert_eq!(raw.closed(), b"");
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let server = server("header_read_timeout_ms = 300");
    let mut raw = Raw::connect(addr(&server));
    // Requests back to back share the connection...
    for _ in 0..3 {
        assert!(raw.send(&get("/healthz")));
        raw.response().expect("an answer").expect(200);
    }
    // ...which the header read timeout closes once it is idle.
    let started = Instant::now();
    assert_eq!(raw.closed(), b"");
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
}

/// Whether a new connection from `from` is served: it is refused when the
/// server closes it without an answer.
fn served(from: &str, server: &TestServer) -> Option<Raw> {
    let mut raw = Raw::connect_from(from, addr(server));
    if !raw.send(&get("/healthz")) {
        return None;
    }
    match raw.response() {
        Ok(reply) => {
            reply.expect(200);
            Some(raw)
        }
        Err(End::Closed) => None,
        Err(End::Silent) => panic!("neither served nor refused within {PATIENCE:?}"),
    }
}

#[test]
fn connections_beyond_the_caps_are_closed_at_once() {
    let server = server("max_connections = 3\nmax_connections_per_client = 2");
    let a1 = served("127.0.0.1", &server).expect("the first connection");
    let _a2 = served("127.0.0.1", &server).expect("the second of a client");
    assert!(
        served("127.0.0.1", &server).is_none(),
        "a third of one client"
    );
    let _b1 = served("127.0.0.2", &server).expect("another client");
    assert!(served("127.0.0.3", &server).is_none(), "a fourth in all");
    // Closing one frees its place, once the server has seen it close.
    drop(a1);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if served("127.0.0.1", &server).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The request heads hyper refuses before any of ours runs, and its answer.
fn malformed_heads() -> Vec<(&'static str, Vec<u8>, u16)> {
    let head = |line: &str, headers: &str| {
        format!("{line}\r\nHost: sessiond\r\n{headers}\r\n").into_bytes()
    };
    let get_with = |headers: &[u8]| {
        let mut bytes = b"GET /healthz HTTP/1.1\r\nHost: sessiond\r\n".to_vec();
        bytes.extend_from_slice(headers);
        bytes.extend_from_slice(b"\r\n");
        bytes
    };
    vec![
        ("a NUL in a header", get_with(b"X-Note: a\0b\r\n"), 400),
        ("a bare CR in a header", get_with(b"X-Note: a\rb\r\n"), 400),
        (
            "two different Content-Length headers",
            head(
                "POST /v1/sessions HTTP/1.1",
                "Content-Length: 2\r\nContent-Length: 3\r\n",
            ),
            400,
        ),
        ("a garbage request line", b"HELLO\r\n\r\n".to_vec(), 400),
        (
            "a TLS hello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        ("HTTP/9.9", head("GET /healthz HTTP/9.9", ""), 400),
        ("a space in the path", head("GET /a b HTTP/1.1", ""), 400),
        (
            "a control byte in the path",
            b"GET /\x01 HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "DEL in the path",
            b"GET /\x7f HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a non-ASCII byte in the path",
            b"GET /\xff HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a 100 KB URI",
            head(&format!("GET /{} HTTP/1.1", "a".repeat(100_000)), ""),
            414,
        ),
        (
            "10 MB of headers",
            head(
                "GET /healthz HTTP/1.1",
                &format!("X-Pad: {}\r\n", "p".repeat(1000)).repeat(10_000),
            ),
            431,
        ),
        (
            "10,000 headers",
            head("GET /healthz HTTP/1.1", &"X-N: v\r\n".repeat(10_000)),
            431,
        ),
        (
            "a 1 MB Authorization",
            head(
                "GET /healthz HTTP/1.1",
                &format!("Authorization: Bearer {}\r\n", "a".repeat(1 << 20)),
            ),
            431,
        ),
    ]
}

/// What the README documents: hyper's own answer, with no body and no
/// content type, and the connection closed.
#[test]
fn malformed_request_heads_get_hypers_bare_answer_and_are_closed() {
    let server = server("");
    for (case, bytes, status) in malformed_heads() {
        let mut raw = Raw::connect(addr(&server));
        let reply = exchange(&mut raw, bytes).unwrap_or_else(|end| panic!("{case}: {end:?}"));
        assert_eq!(reply.status, status, "{case}: {}", reply.text);
        assert_eq!(reply.header("connection"), "close", "{case}");
        assert_eq!(reply.header("content-length"), "0", "{case}");
        assert_eq!(reply.header("content-type"), "", "{case}");
        assert!(reply.text.is_empty(), "{case}: {}", reply.text);
        assert_eq!(raw.closed(), b"", "{case}");
    }
    // Heads that hyper accepts reach the router, whose errors are problems.
    let mut raw = Raw::connect(addr(&server));
    assert!(raw.send(&get("/%ff/no-such-route")));
    raw.response().expect("an answer").problem(404, "");
    let mut raw = Raw::connect(addr(&server));
    assert!(raw.send(
        b"POST /healthz HTTP/1.1\r\nHost: sessiond\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"
    ));
    raw.response().expect("an answer").problem(405, "");
    // An HTTP/2 preface (prior knowledge): closed without a word.
    let mut raw = Raw::connect(addr(&server));
    assert!(raw.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    assert_eq!(raw.closed(), b"");
}

/// Half-sent requests: one with unfinished headers, one with half its body
/// (its request is in flight, waiting for the rest). Returned once the
/// server has accepted both, which it has once a later connection on the
/// same listener was answered.
fn half_sent(to: SocketAddr) -> [Raw; 2] {
    let mut head = Raw::connect(to);
    assert!(head.send(b"GET /healthz HTTP/1.1\r\nHost: sessiond\r\n"));
    let mut body = Raw::connect(to);
    assert!(body.send(&create_head(1000)));
    assert!(body.send(b"{\""));
    let mut later = Raw::connect(to);
    assert!(later.send(b"GET /healthz HTTP/1.1\r\nHost: sessiond\r\nConnection: close\r\n\r\n"));
    later.response().expect("an answer").expect(200);
    [head, body]
}

const PATIENT: &str = "header_read_timeout_ms = 60000\nbody_read_timeout_ms = 60000";

#[test]
fn shutdown_closes_half_sent_requests_at_its_deadline() {
    let server = server(&format!("{PATIENT}\nshutdown_timeout_ms = 300"));
    let half = half_sent(addr(&server));
    let mut idle = Raw::connect(addr(&server));
    assert!(idle.send(&get("/healthz")));
    idle.response().expect("an answer").expect(200);
    let started = Instant::now();
    server.stop().expect("a clean shutdown");
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
    for mut raw in half.into_iter().chain([idle]) {
        assert_eq!(raw.closed(), b"", "closed without an answer");
    }
}

#[test]
fn shutdown_closes_idle_connections_at_once_and_finishes_requests_in_flight() {
    let server = server(&format!("{PATIENT}\nshutdown_timeout_ms = 60000"));
    let to = addr(&server);
    let mut idle = Raw::connect(to);
    assert!(idle.send(&get("/healthz")));
    idle.response().expect("an answer").expect(200);
    let mut in_flight = Raw::connect(to);
    let body = b"{\"user\": \"alice\"}";
    assert!(in_flight.send(&create_head(body.len())));
    assert!(in_flight.send(&body[..5]));
    // Shutdown treats a connection whose request head the server has not
    // read yet as idle. Nothing observable says when hyper has read it, so
    // give it ample time (it needs microseconds).
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let stopping = std::thread::spawn(move || server.stop());
    // The idle connection closes at once, and the listener with it.
    assert_eq!(idle.closed(), b"");
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(to).is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The request in flight gets its answer, and then the connection closes.
    assert!(in_flight.send(&body[5..]));
    in_flight.response().expect("an answer").expect(201);
    assert_eq!(in_flight.closed(), b"");
    stopping
        .join()
        .expect("the stopping thread")
        .expect("a clean shutdown");
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
}

/// The whole process: `sessiond serve` exits on SIGTERM within
/// `server.shutdown_timeout_ms` plus `ends.shutdown_drain_ms`, whatever its
/// clients do.
#[test]
fn sessiond_serve_exits_on_sigterm_with_half_sent_requests_open() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nlisten = \"{{listen}}\"\n{PATIENT}\nshutdown_timeout_ms = 500\n\
         [store]\nbackend = \"memory\"\n[ends]\nshutdown_drain_ms = 500\n{}",
        Tenant::new("acme").key(KEY).toml()
    );
    let mut host = Host::start(
        env!("CARGO_BIN_EXE_sessiond-host"),
        dir.path(),
        "half-sent",
        &toml,
        Duration::from_secs(120),
    );
    let half = half_sent(SocketAddr::from(([127, 0, 0, 1], host.port())));
    let started = Instant::now();
    let status = host.terminate(PATIENCE);
    assert!(status.success(), "{status}:\n{}", host.log());
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
    for mut raw in half {
        assert_eq!(raw.closed(), b"");
    }
}
