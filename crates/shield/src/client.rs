//! The client a request comes from, resolved once: its address (after a trusted proxy's
//! word for it) and the network it is grouped into for per-subnet limits, reputation,
//! fairness and login back-off. Everything downstream takes a [`Client`] and never looks
//! at the socket peer or `X-Forwarded-For` again, so no stage can pick a different address
//! or a different subnet than another.

use std::net::IpAddr;

use crate::cidr::Cidr;

/// How wide a client's network is: the prefix length for IPv4 and for IPv6 clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubnetPrefixes {
    pub v4: u8,
    pub v6: u8,
}

impl Default for SubnetPrefixes {
    /// A /24 holds one small network of IPv4 hosts; one IPv6 host usually owns a whole /64.
    fn default() -> Self {
        SubnetPrefixes { v4: 24, v6: 64 }
    }
}

impl SubnetPrefixes {
    /// The network `ip` belongs to. The one subnet function: everything else calls this.
    pub fn subnet_of(self, ip: IpAddr) -> Cidr {
        Cidr::subnet_of(ip, self.v4, self.v6)
    }
}

/// A resolved client: address (IPv4-mapped IPv6 turned into IPv4) and subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    ip: IpAddr,
    subnet: Cidr,
}

impl Client {
    pub fn new(ip: IpAddr, prefixes: SubnetPrefixes) -> Client {
        let ip = ip.to_canonical();
        Client { ip, subnet: prefixes.subnet_of(ip) }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn subnet(&self) -> Cidr {
        self.subnet
    }

    /// The subnet folded to 64 bits with the top bit set, for keys that share a space with
    /// small numbers (account ids): it never equals one.
    pub fn subnet_digest(&self) -> u64 {
        let bits = self.subnet.aligned_bits() ^ u128::from(self.subnet.prefix_len());
        let folded = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(17);
        // Mix so neighbouring networks do not differ in one bit only.
        let mixed = (folded ^ (folded >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        mixed | 1 << 63
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> Client {
        Client::new(ip.parse().unwrap(), SubnetPrefixes::default())
    }

    #[test]
    fn a_client_carries_its_address_and_network() {
        let c = client("203.0.113.77");
        assert_eq!(c.ip().to_string(), "203.0.113.77");
        assert_eq!(c.subnet().to_string(), "203.0.113.0/24");
        assert_eq!(client("2001:db8:1:2:3:4:5:6").subnet().to_string(), "2001:db8:1:2::/64");
        assert_eq!(client("::ffff:192.0.2.9"), client("192.0.2.9"), "a mapped address is the IPv4 client");
    }

    #[test]
    fn digests_group_by_network_and_stay_above_account_ids() {
        assert_eq!(client("203.0.113.1").subnet_digest(), client("203.0.113.250").subnet_digest());
        assert_ne!(client("203.0.113.1").subnet_digest(), client("203.0.114.1").subnet_digest());
        assert_ne!(client("10.0.0.1").subnet_digest(), client("::a00:1").subnet_digest());
        assert!(client("0.0.0.0").subnet_digest() >= 1 << 63);
    }
}
