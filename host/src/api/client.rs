//! Where a request comes from: the client's address and user agent.
//!
//! The address is the TCP peer's, unless the peer is a trusted proxy
//! (`server.trusted_proxies`): then `X-Forwarded-For` is read from the right
//! and the first address that is not itself a trusted proxy is the client's.
//! A header that cannot be parsed is ignored (the peer's address is used).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;

use crate::app::App;
use crate::config::ProxyNet;
use crate::session::ClientInfo;

/// The longest user agent kept, in bytes.
pub const MAX_USER_AGENT: usize = 512;

/// The client of a request (its device comes from the body, when given).
#[derive(Debug, Clone)]
pub struct Client(pub ClientInfo);

impl FromRequestParts<Arc<App>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let remote = peer.map(|p| client_addr(p, &parts.headers, &state.server.trusted_proxies));
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| truncate(ua.trim(), MAX_USER_AGENT).to_string())
            .filter(|ua| !ua.is_empty());
        Ok(Client(ClientInfo {
            remote_addr: remote.map(|a| a.to_string()),
            user_agent,
            device: None,
        }))
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn trusted(addr: IpAddr, proxies: &[ProxyNet]) -> bool {
    let addr = canonical(addr);
    proxies.iter().any(|n| n.0.contains(&addr))
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// The client's address for a request from `peer` with `headers`.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, proxies: &[ProxyNet]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(peer, proxies) {
        return peer;
    }
    // Every X-Forwarded-For header, in order, as one list.
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match parse_hop(item) {
                Some(addr) => hops.push(canonical(addr)),
                None => return peer,
            }
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !trusted(hop, proxies) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
/// `[::1]:5678`.
fn parse_hop(item: &str) -> Option<IpAddr> {
    if let Ok(addr) = item.parse::<IpAddr>() {
        return Some(addr);
    }
    item.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<ProxyNet> {
        list.iter()
            .map(|s| ProxyNet::try_from(s.to_string()).unwrap())
            .collect()
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = xff(&["203.0.113.9"]);
        assert_eq!(
            client_addr(addr("192.0.2.1"), &h, &proxies),
            addr("192.0.2.1")
        );
    }

    #[test]
    fn rightmost_untrusted_hop() {
        let proxies = nets(&["10.0.0.0/8", "127.0.0.1"]);
        let h = xff(&["198.51.100.1, 203.0.113.9", "10.1.1.1"]);
        assert_eq!(
            client_addr(addr("127.0.0.1"), &h, &proxies),
            addr("203.0.113.9")
        );
        // All hops trusted: the left-most one.
        let h = xff(&["10.2.2.2, 10.1.1.1"]);
        assert_eq!(
            client_addr(addr("127.0.0.1"), &h, &proxies),
            addr("10.2.2.2")
        );
        // No header: the peer.
        assert_eq!(
            client_addr(addr("127.0.0.1"), &HeaderMap::new(), &proxies),
            addr("127.0.0.1")
        );
        // Garbage: the peer.
        let h = xff(&["not-an-ip"]);
        assert_eq!(
            client_addr(addr("127.0.0.1"), &h, &proxies),
            addr("127.0.0.1")
        );
        // Ports and brackets.
        let h = xff(&["[2001:db8::1]:443, 192.0.2.7:80"]);
        assert_eq!(
            client_addr(addr("127.0.0.1"), &h, &proxies),
            addr("192.0.2.7")
        );
    }

    #[test]
    fn mapped_addresses() {
        let proxies = nets(&["127.0.0.1"]);
        let h = xff(&["192.0.2.5"]);
        assert_eq!(
            client_addr(addr("::ffff:127.0.0.1"), &h, &proxies),
            addr("192.0.2.5")
        );
    }

    #[test]
    fn long_user_agents_are_cut_on_a_char_boundary() {
        let ua = "é".repeat(400);
        assert!(truncate(&ua, MAX_USER_AGENT).len() <= MAX_USER_AGENT);
    }
}
