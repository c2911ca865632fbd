//! An IPv4 or IPv6 network in CIDR notation, as operators type it into block and allow lists.
//!
//! Addresses are kept left-aligned in a `u128` (an IPv4 address occupies the top 32 bits), so
//! one binary trie walks both families bit by bit from the most significant end. IPv4-mapped
//! IPv6 addresses (`::ffff:1.2.3.4`) are the same host as `1.2.3.4` on a dual-stack socket,
//! so both parsing and [`canonical`] turn them into IPv4: a rule for `1.2.3.0/24` matches a
//! client that the listener reports as `::ffff:1.2.3.9`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest text quoted back in an error, so a megabyte of garbage does not reach the logs.
const QUOTE_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{text}` is not an IP address or CIDR network (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")]
    Invalid { text: String },
    #[error("`{text}`: prefix length is longer than {max} bits")]
    PrefixTooLong { text: String, max: u8 },
    #[error("`{text}` has host bits set below the prefix; did you mean {network}?")]
    HostBitsSet { text: String, network: String },
}

/// Address family of a [`Cidr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Number of bits in an address of this family.
    pub const fn bits(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }
}

/// A network: family, left-aligned address bits (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    family: Family,
    bits: u128,
    len: u8,
}

/// `ip` with IPv4-mapped IPv6 addresses turned into IPv4 (what the block list matches on).
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Family and left-aligned bits of an address, after [`canonical`].
pub fn aligned(ip: IpAddr) -> (Family, u128) {
    match canonical(ip) {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4)) << 96),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

/// Mask keeping the top `len` bits of a left-aligned address.
const fn prefix_mask(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - len as u32) }
}

impl Cidr {
    /// The network of `len` bits containing `ip` (host bits are cleared, not refused: this is
    /// the constructor for code, e.g. "the /24 of this client"; [`FromStr`] is the strict one).
    pub fn new(ip: IpAddr, len: u8) -> Result<Self, CidrError> {
        let (family, bits) = aligned(ip);
        // A mapped address given with a v6 prefix length: /120 of ::ffff:a.b.c.d is a v4 /24.
        let len = match (ip, family) {
            (IpAddr::V6(_), Family::V4) if len >= 96 => len - 96,
            (IpAddr::V6(_), Family::V4) => {
                // Wider than the mapped block: a genuine v6 network that contains all of IPv4.
                return Self::v6_checked(ip, len);
            }
            _ => len,
        };
        if len > family.bits() {
            return Err(CidrError::PrefixTooLong { text: format!("{ip}/{len}"), max: family.bits() });
        }
        Ok(Self { family, bits: bits & prefix_mask(len), len })
    }

    fn v6_checked(ip: IpAddr, len: u8) -> Result<Self, CidrError> {
        let bits = match ip {
            IpAddr::V6(v6) => u128::from(v6),
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        };
        Ok(Self { family: Family::V6, bits: bits & prefix_mask(len), len })
    }

    /// A single host (`/32` or `/128`).
    pub fn host(ip: IpAddr) -> Self {
        let (family, bits) = aligned(ip);
        Self { family, bits, len: family.bits() }
    }

    /// The subnet a client is grouped into for per-subnet limits and reputation: the
    /// `v4_prefix` network for IPv4 clients and the `v6_prefix` one for IPv6 clients.
    /// Prefixes longer than the family allows are clamped to a single host.
    pub fn subnet_of(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Self {
        let (family, bits) = aligned(ip);
        let len = match family {
            Family::V4 => v4_prefix.min(32),
            Family::V6 => v6_prefix.min(128),
        };
        Self { family, bits: bits & prefix_mask(len), len }
    }

    pub const fn family(&self) -> Family {
        self.family
    }

    /// Prefix length in bits of this family (0..=32 or 0..=128).
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Network bits, left-aligned in a `u128` (an IPv4 network sits in the top 32 bits).
    pub const fn aligned_bits(&self) -> u128 {
        self.bits
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from((self.bits >> 96) as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.bits)),
        }
    }

    /// True when `ip` (after [`canonical`]) lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (family, bits) = aligned(ip);
        family == self.family && bits & prefix_mask(self.len) == self.bits
    }

    /// 17 bytes that identify the network exactly (family+length byte, then the bits), for
    /// hashing into bindings and keys.
    pub fn to_bytes(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        // Lengths are ≤ 128, so the high bit is free to carry the family.
        out[0] = self.len | if self.family == Family::V6 { 0x80 } else { 0 };
        out[1..].copy_from_slice(&self.bits.to_be_bytes());
        out
    }
}

fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTE_CHARS {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(QUOTE_CHARS).collect();
        short.push('…');
        short
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `1.2.3.4`, `10.0.0.0/8`, `2001:db8::/32`, `::ffff:10.0.0.0/104`. A bare address
    /// is a single host. Host bits set below the prefix (`10.0.0.1/8`) are refused rather
    /// than silently cleared: the operator may have mistyped the prefix, and blocking a
    /// whole /8 by accident is worse than a clear error.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || CidrError::Invalid { text: quote(text) };
        let trimmed = text.trim();
        let (addr, len) = match trimmed.split_once('/') {
            Some((addr, len)) => {
                // Digits only: `u8::from_str` would accept a leading `+`.
                if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                let len: u16 = len.parse().map_err(|_| invalid())?;
                (addr, Some(len))
            }
            None => (trimmed, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = match ip {
            IpAddr::V4(_) => 32u16,
            IpAddr::V6(_) => 128,
        };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(CidrError::PrefixTooLong { text: quote(text), max: max as u8 });
        }
        let cidr = Self::new(ip, len as u8)?;
        let (_, bits) = aligned(ip);
        let exact = match (ip, cidr.family) {
            // Mapped address under a wide v6 prefix: compare in v6 space.
            (IpAddr::V6(v6), Family::V6) => u128::from(v6) == cidr.bits,
            _ => bits == cidr.bits,
        };
        if !exact {
            return Err(CidrError::HostBitsSet { text: quote(text), network: cidr.to_string() });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    /// Always with the prefix length (`1.2.3.4/32`), so listings are unambiguous.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn parses_hosts_and_networks_of_both_families() {
        let c: Cidr = "10.0.0.0/8".parse().expect("v4 net");
        assert_eq!((c.family(), c.prefix_len(), c.to_string().as_str()), (Family::V4, 8, "10.0.0.0/8"));
        assert!(c.contains(ip("10.200.3.4")) && !c.contains(ip("11.0.0.0")));
        let h: Cidr = "1.2.3.4".parse().expect("v4 host");
        assert_eq!(h.to_string(), "1.2.3.4/32");
        let v6: Cidr = "2001:db8::/32".parse().expect("v6 net");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")), "families never match each other");
        let all: Cidr = "0.0.0.0/0".parse().expect("v4 any");
        assert!(all.contains(ip("255.255.255.255")) && !all.contains(ip("::1")));
        assert_eq!(" 192.168.0.0/16 ".parse::<Cidr>().map(|c| c.prefix_len()), Ok(16));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let c: Cidr = "::ffff:10.1.2.0/120".parse().expect("mapped net");
        assert_eq!(c, "10.1.2.0/24".parse().expect("v4"));
        assert!(c.contains(ip("::ffff:10.1.2.200")) && c.contains(ip("10.1.2.1")));
        assert_eq!(Cidr::host(ip("::ffff:1.2.3.4")), Cidr::host(ip("1.2.3.4")));
        let wide: Cidr = "::/0".parse().expect("v6 any");
        assert_eq!(wide.family(), Family::V6);
    }

    #[test]
    fn bad_text_is_named_in_the_error() {
        for bad in ["", "1.2.3", "1.2.3.4/", "1.2.3.4/+8", "1.2.3.4/x", "::g", "1.2.3.4/8/8", "fe80::1%eth0"] {
            let err = bad.parse::<Cidr>().expect_err(bad);
            assert!(matches!(err, CidrError::Invalid { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        assert_eq!("1.2.3.4/33".parse::<Cidr>(), Err(CidrError::PrefixTooLong { text: "1.2.3.4/33".into(), max: 32 }));
        assert!(matches!("::/129".parse::<Cidr>(), Err(CidrError::PrefixTooLong { max: 128, .. })));
        let err = "10.0.0.1/8".parse::<Cidr>().expect_err("host bits");
        assert_eq!(err.to_string(), "`10.0.0.1/8` has host bits set below the prefix; did you mean 10.0.0.0/8?");
        let long = "x".repeat(10_000);
        assert!(long.parse::<Cidr>().expect_err("long").to_string().len() < 200, "quote is bounded");
    }

    #[test]
    fn subnets_group_clients() {
        assert_eq!(Cidr::subnet_of(ip("1.2.3.4"), 24, 64).to_string(), "1.2.3.0/24");
        assert_eq!(Cidr::subnet_of(ip("2001:db8:1:2:3:4:5:6"), 24, 64).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Cidr::subnet_of(ip("1.2.3.4"), 99, 200).prefix_len(), 32);
    }

    proptest! {
        #[test]
        fn display_parses_back(bits in any::<u128>(), len in 0u8..=128, v4 in any::<bool>()) {
            let c = if v4 {
                Cidr::new(IpAddr::V4(Ipv4Addr::from((bits >> 96) as u32)), len % 33)
            } else {
                Cidr::new(IpAddr::V6(Ipv6Addr::from(bits)), len)
            }.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
            prop_assert!(c.contains(c.network()));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,60}") {
            let _ = text.parse::<Cidr>();
        }
    }
}
