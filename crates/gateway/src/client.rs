//! Who the client is, resolved once per request at the listener: the socket peer (or
//! the address a trusted proxy's PROXY header named), unless the peer is a trusted proxy
//! that says who it forwards for. `X-Forwarded-For` is read right to left and the first
//! address that is not itself a trusted proxy is the client: everything to its left was
//! written by the client and may be forged. The result is a [`shield::Client`], the only
//! address any later stage sees.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use shield::{Cidr, Client, SubnetPrefixes};

static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// Turns a connection's peer and a request's headers into the client.
#[derive(Clone, Debug)]
pub struct ClientResolver {
    trusted: TrustedProxies,
    prefixes: SubnetPrefixes,
}

impl ClientResolver {
    pub fn new(trusted: TrustedProxies, prefixes: SubnetPrefixes) -> ClientResolver {
        ClientResolver { trusted, prefixes }
    }

    /// True when `peer` may state the client's address (and send a PROXY header).
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted.contains(peer.to_canonical())
    }

    /// The client of a request that arrived from `peer`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let peer = peer.to_canonical();
        let ip = if self.trusted.is_empty() || !self.trusted.contains(peer) {
            peer
        } else {
            // Header lines in order; `client_ip` walks them backwards without collecting.
            let lines = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok());
            self.trusted.client_ip(peer, lines)
        };
        Client::new(ip, self.prefixes)
    }
}

/// Peers allowed to state the client's address.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(ranges: Vec<Cidr>) -> Self {
        TrustedProxies(ranges)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address for a request from `peer` carrying these `X-Forwarded-For`
    /// values (all header lines, in order).
    pub fn client_ip<'a>(&self, peer: IpAddr, forwarded_for: impl DoubleEndedIterator<Item = &'a str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for line in forwarded_for.rev() {
            for entry in line.rsplit(',') {
                let Some(ip) = parse_entry(entry) else {
                    // Garbage from the client's side of the chain: stop at the last hop we
                    // could read (a trusted proxy), never guess past it.
                    return client;
                };
                client = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if entry.len() > 64 {
        return None;
    }
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let t = trusted();
        assert_eq!(t.client_ip(ip("203.0.113.9"), ["1.2.3.4"].into_iter()), ip("203.0.113.9"));
        assert_eq!(t.client_ip(ip("10.0.0.1"), ["1.2.3.4"].into_iter()), ip("1.2.3.4"));
        assert_eq!(t.client_ip(ip("10.0.0.1"), std::iter::empty()), ip("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_address_wins() {
        let t = trusted();
        // The client forged 6.6.6.6; the proxies appended the real address and themselves.
        let got = t.client_ip(ip("10.0.0.1"), ["6.6.6.6, 198.51.100.7", "10.1.1.1:443"].into_iter());
        assert_eq!(got, ip("198.51.100.7"));
        assert_eq!(t.client_ip(ip("::1"), ["[2001:db8::5]:80"].into_iter()), ip("2001:db8::5"));
        assert_eq!(t.client_ip(ip("10.0.0.1"), ["garbage, 10.2.2.2"].into_iter()), ip("10.2.2.2"));
        assert_eq!(t.client_ip(ip("10.0.0.1"), ["::ffff:192.0.2.1"].into_iter()), ip("192.0.2.1"));
    }
}
