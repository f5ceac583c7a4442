//! The HTTP/1.1 connection layer under the API: the accept loop, the
//! connection caps, the header read timeout and the shutdown deadline of open
//! connections. It serves any axum [`Router`]; what happens once a request's
//! head is read (body size, body deadline, problems) is the router's.
//!
//! - A connection beyond `server.max_connections`, or beyond
//!   `server.max_connections_per_client` from one client address (the TCP
//!   peer's: the headers are not read yet), is closed at once, unanswered.
//! - hyper cuts off a client that does not send complete headers within
//!   `server.header_read_timeout_ms`, without an answer. Its timer also runs
//!   while a keep-alive connection waits for its next request, so the same
//!   timeout closes idle connections.
//! - hyper answers malformed request heads itself (400, 414, 431, with no
//!   body) and closes the connection; nothing of ours runs for them.
//! - Shutdown stops accepting, lets requests in flight finish, closes idle
//!   connections, and after `server.shutdown_timeout_ms` closes whatever is
//!   left, half-sent requests included.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use crate::config::ServerConfig;

/// How long the accept loop pauses after an error that is not one
/// connection's (out of file descriptors, say), so that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What the connection layer enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub shutdown_timeout: Duration,
}

impl Limits {
    /// The limits of `[server]`.
    pub fn of(server: &ServerConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            max_connections: server.max_connections,
            max_connections_per_client: server.max_connections_per_client,
            shutdown_timeout: Duration::from_millis(server.shutdown_timeout_ms),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then shuts the
/// connections down (see the module doc) and returns once none is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Slots::new(
        limits.max_connections,
        limits.max_connections_per_client,
    ));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let stop = Stop::default();
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_one_connections(&e) => continue,
            Err(e) => {
                tracing::warn!("cannot accept connections: {e}");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                // Dropping the stream closes it. Debug only: a flood would
                // flood the log too.
                tracing::debug!(%peer, "connection refused: {refused}");
                continue;
            }
        };
        let connection = Connection {
            stream,
            peer,
            router: router.clone(),
            builder: builder.clone(),
            stop: stop.clone(),
            _slot: slot,
        };
        tracker.spawn(connection.run());
    }
    drop(listener);
    tracker.close();
    stop.closing.cancel();
    if tokio::time::timeout(limits.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tracker.len(),
            "closing the connections still open at the shutdown deadline"
        );
        stop.cut.cancel();
        tracker.wait().await;
    }
}

/// Accept errors that concern one connection only (it was reset before it
/// was accepted): the next accept may well succeed.
fn is_one_connections(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

/// The two steps of shutdown, as every connection sees them.
#[derive(Debug, Clone, Default)]
struct Stop {
    /// Finish the request in flight, then close.
    closing: CancellationToken,
    /// Close now.
    cut: CancellationToken,
}

/// One accepted connection and what it needs to be served.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: Arc<http1::Builder>,
    stop: Stop,
    /// Held while the connection is open.
    _slot: Slot,
}

impl Connection {
    async fn run(self) {
        let Connection {
            stream,
            peer,
            router,
            builder,
            stop,
            _slot,
        } = self;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // What `api::client` reads the peer's address from.
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(request)
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            ended = conn.as_mut() => ended,
            () = stop.closing.cancelled() => {
                // Idle: closes now; busy: after the response in flight.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    ended = conn.as_mut() => ended,
                    () = stop.cut.cancelled() => return,
                }
            }
        };
        if let Err(e) = ended {
            // Clients that go away, time out or send garbage: theirs, not ours.
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refused {
    #[error("server.max_connections are open")]
    Full,
    #[error("server.max_connections_per_client are open from this address")]
    ClientFull,
}

/// The open connections, in all and by client address.
#[derive(Debug)]
struct Slots {
    max: usize,
    max_per_client: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// One open connection's place in [`Slots`]; dropping it frees the place.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    client: IpAddr,
}

impl Slots {
    fn new(max: usize, max_per_client: usize) -> Slots {
        Slots {
            max,
            max_per_client,
            open: Mutex::new(Open::default()),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `client`, if both caps allow one.
    fn take(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Refused> {
        // `::ffff:10.0.0.1` is the client 10.0.0.1 on a dual-stack socket.
        let client = client.to_canonical();
        let mut open = self.open();
        if open.total >= self.max {
            return Err(Refused::Full);
        }
        let of_client = open.by_client.entry(client).or_insert(0);
        if *of_client >= self.max_per_client {
            return Err(Refused::ClientFull);
        }
        *of_client += 1;
        open.total += 1;
        Ok(Slot {
            slots: self.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        open.total -= 1;
        if let Entry::Occupied(mut of_client) = open.by_client.entry(self.client) {
            *of_client.get_mut() -= 1;
            if *of_client.get() == 0 {
                of_client.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn caps_count_open_connections_in_all_and_per_client() {
        let slots = Arc::new(Slots::new(3, 2));
        let a1 = slots.take(addr("192.0.2.1")).unwrap();
        let a2 = slots.take(addr("192.0.2.1")).unwrap();
        // The same client through a dual-stack socket.
        assert_eq!(
            slots.take(addr("::ffff:192.0.2.1")).unwrap_err(),
            Refused::ClientFull
        );
        let b1 = slots.take(addr("192.0.2.2")).unwrap();
        assert_eq!(slots.take(addr("192.0.2.3")).unwrap_err(), Refused::Full);
        drop(a1);
        let a3 = slots.take(addr("192.0.2.1")).unwrap();
        drop((a2, a3, b1));
        let open = slots.open();
        assert_eq!(open.total, 0);
        assert!(open.by_client.is_empty(), "{:?}", open.by_client);
    }

    #[test]
    fn a_refused_client_takes_no_place() {
        let slots = Arc::new(Slots::new(10, 1));
        let _held = slots.take(addr("2001:db8::1")).unwrap();
        for _ in 0..5 {
            assert!(slots.take(addr("2001:db8::1")).is_err());
        }
        assert_eq!(slots.open().total, 1);
        assert_eq!(slots.open().by_client[&addr("2001:db8::1")], 1);
    }
}
