//! The status page's own small rate limit: a token bucket per client (an IPv4
//! address or an IPv6 /64), in a bounded, sharded map.
//!
//! Memory is bounded by `max_clients`. When a shard is full, buckets that have
//! refilled completely are forgotten (a full bucket is the same as no bucket);
//! if the shard is still full, the new client is served without a bucket: the
//! limiter fails open. That is deliberate: every status answer is a copy of
//! pre-rendered bytes, so an attacker with more addresses than the map holds
//! costs bandwidth, not work, and real visitors are never refused for it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shield::{Cidr, SubnetPrefixes};

use crate::config::StatusRateLimit;

const SHARDS: usize = 16;

/// What the limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit; a token is back after this many whole seconds (at least 1).
    Deny {
        retry_after_s: u32,
    },
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<Cidr, Bucket>,
    last_sweep: Option<Instant>,
}

/// Per-client token buckets.
pub struct ClientLimiter {
    shards: [Mutex<Shard>; SHARDS],
    per_s: f64,
    burst: f64,
    per_shard: usize,
}

/// The client a request counts against: the address, or its /64 for IPv6 (one host
/// usually holds a whole /64).
const PER_CLIENT: SubnetPrefixes = SubnetPrefixes { v4: 32, v6: 64 };

impl ClientLimiter {
    pub fn new(config: &StatusRateLimit) -> ClientLimiter {
        ClientLimiter {
            shards: Default::default(),
            per_s: config.per_s,
            burst: f64::from(config.burst.max(1)),
            per_shard: config.max_clients.div_ceil(SHARDS).max(1),
        }
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).buckets.len()).sum()
    }

    /// Take one token for `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        if self.per_s <= 0.0 {
            return Verdict::Allow;
        }
        let key = PER_CLIENT.subnet_of(ip);
        // Spread keys over shards by their low and high bits alike.
        let bits = key.aligned_bits();
        let folded = (bits ^ (bits >> 64)) as u64;
        let shard_index = ((folded ^ (folded >> 32) ^ (folded >> 47)) as usize) % SHARDS;
        let mut shard = self.shards[shard_index].lock().unwrap_or_else(|p| p.into_inner());
        if !shard.buckets.contains_key(&key) && shard.buckets.len() >= self.per_shard {
            self.sweep(&mut shard, now);
            if shard.buckets.len() >= self.per_shard {
                return Verdict::Allow;
            }
        }
        let bucket = shard.buckets.entry(key).or_insert(Bucket { tokens: self.burst, last: now });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_s).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Allow
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_s;
            Verdict::Deny { retry_after_s: (wait.ceil() as u32).max(1) }
        }
    }

    /// Forget buckets that have refilled, at most once a second per shard.
    fn sweep(&self, shard: &mut Shard, now: Instant) {
        if shard.last_sweep.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        shard.last_sweep = Some(now);
        let (per_s, burst) = (self.per_s, self.burst);
        shard.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_s < burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limiter(per_s: f64, burst: u32, max_clients: usize) -> ClientLimiter {
        ClientLimiter::new(&StatusRateLimit { per_s, burst, max_clients })
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn a_burst_then_the_refill_rate() {
        let l = limiter(2.0, 3, 100);
        let t = Instant::now();
        let ip = v4(1);
        for _ in 0..3 {
            assert_eq!(l.check(ip, t), Verdict::Allow);
        }
        assert_eq!(l.check(ip, t), Verdict::Deny { retry_after_s: 1 });
        assert_eq!(l.check(v4(2), t), Verdict::Allow, "another client has its own bucket");
        assert_eq!(l.check(ip, t + Duration::from_millis(500)), Verdict::Allow, "half a second refills one token");
        assert_eq!(l.check(ip, t + Duration::from_millis(500)), Verdict::Deny { retry_after_s: 1 });
    }

    #[test]
    fn retry_after_says_when_a_token_is_back() {
        let l = limiter(0.1, 1, 100);
        let t = Instant::now();
        assert_eq!(l.check(v4(1), t), Verdict::Allow);
        assert_eq!(l.check(v4(1), t), Verdict::Deny { retry_after_s: 10 });
        assert_eq!(l.check(v4(1), t + Duration::from_secs(4)), Verdict::Deny { retry_after_s: 6 });
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let l = limiter(0.0, 1, 1);
        let t = Instant::now();
        for i in 0..1_000 {
            assert_eq!(l.check(v4(i), t), Verdict::Allow);
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn ipv6_clients_are_their_slash_64() {
        let l = limiter(1.0, 1, 100);
        let t = Instant::now();
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(l.check(IpAddr::V6(a), t), Verdict::Allow);
        assert!(matches!(l.check(IpAddr::V6(b), t), Verdict::Deny { .. }), "same /64");
        assert_eq!(l.check(IpAddr::V6(other), t), Verdict::Allow);
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(l.check(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), t), Verdict::Allow);
        assert!(matches!(l.check(mapped, t), Verdict::Deny { .. }), "a mapped address is the IPv4 client");
    }

    #[test]
    fn memory_is_bounded_and_a_full_map_fails_open() {
        let l = limiter(1.0, 1, 160);
        let t = Instant::now();
        for i in 0..100_000 {
            l.check(v4(i), t);
        }
        assert!(l.tracked() <= 160, "{} tracked", l.tracked());
        // A tracked client is still limited; an untracked one is served.
        let tracked = (0..100_000).map(v4).find(|ip| matches!(l.check(*ip, t), Verdict::Deny { .. }));
        assert!(tracked.is_some());
        assert_eq!(l.check(v4(200_000), t), Verdict::Allow);
        // Once buckets have refilled, a sweep makes room for new clients.
        let later = t + Duration::from_secs(5);
        l.check(v4(300_000), later);
        assert_eq!(l.check(v4(300_000), later), Verdict::Deny { retry_after_s: 1 }, "tracked after the sweep");
    }
}
