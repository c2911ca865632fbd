//! Login failure throttling with exponential back-off, per account and per
//! client address (the brute-force detection Keycloak does, in memory).
//!
//! After `free_failures` consecutive failures a key must wait before its next
//! attempt; each further failure doubles the wait up to `max_delay`. A success
//! clears the key; a quiet `forget_after` does too.
//!
//! Memory is bounded: at most `capacity` keys, in shards. A full shard first
//! drops keys that are neither waiting nor recent, then arbitrary ones. So an
//! attacker with more distinct keys than `capacity` makes us forget some state;
//! the per-address and per-subnet rate limits in front of login are what bound
//! such an attacker, this only has to be exact for the accounts under attack.
//!
//! Keys are hashed with a per-process random seed, so an attacker cannot craft
//! colliding keys; times are passed in (milliseconds) so tests need no sleeps.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How strict the throttle is.
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleConfig {
    /// Consecutive failures allowed before any wait.
    pub free_failures: u32,
    /// The first wait; each further failure doubles it.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Failures older than this are forgotten.
    pub forget_after: Duration,
    /// Most keys remembered.
    pub capacity: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(12 * 3600),
            capacity: 100_000,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure_ms: u64,
    wait_until_ms: u64,
}

const SHARDS: usize = 16;

/// Keys hashed with a per-process seed into `SHARDS` locked maps.
struct Shards<V> {
    hasher: RandomState,
    maps: [Mutex<HashMap<u64, V>>; SHARDS],
}

impl<V> Shards<V> {
    fn new() -> Shards<V> {
        Shards { hasher: RandomState::new(), maps: std::array::from_fn(|_| Mutex::new(HashMap::new())) }
    }

    /// The shard holding `key`, locked, and the key's hash within it.
    fn lock<K: Hash + ?Sized>(&self, key: &K) -> (MutexGuard<'_, HashMap<u64, V>>, u64) {
        let h = self.hasher.hash_one(key);
        (self.at((h as usize) % SHARDS), h)
    }

    fn at(&self, index: usize) -> MutexGuard<'_, HashMap<u64, V>> {
        // A panic while holding the lock cannot leave an entry half-written, so
        // a poisoned shard is still consistent.
        self.maps[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.at(i).len()).sum()
    }
}

/// Failure counts for a set of keys (accounts, addresses).
pub struct FailureThrottle {
    config: ThrottleConfig,
    shards: Shards<Entry>,
}

impl FailureThrottle {
    pub fn new(config: ThrottleConfig) -> FailureThrottle {
        FailureThrottle { config, shards: Shards::new() }
    }

    /// `Err(wait)` when `key` must wait before its next attempt.
    pub fn check<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) -> Result<(), Duration> {
        let (shard, h) = self.shards.lock(key);
        match shard.get(&h) {
            Some(e) if e.wait_until_ms > now_ms => Err(Duration::from_millis(e.wait_until_ms - now_ms)),
            _ => Ok(()),
        }
    }

    /// Count a failure; returns the wait now imposed, if any.
    pub fn record_failure<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) -> Option<Duration> {
        let forget_ms = self.config.forget_after.as_millis() as u64;
        let (mut shard, h) = self.shards.lock(key);
        if !shard.contains_key(&h) && shard.len() >= (self.config.capacity / SHARDS).max(1) {
            make_room(&mut shard, now_ms, forget_ms);
        }
        let entry = shard.entry(h).or_insert(Entry { failures: 0, last_failure_ms: now_ms, wait_until_ms: 0 });
        if now_ms.saturating_sub(entry.last_failure_ms) > forget_ms {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure_ms = now_ms;
        let over = entry.failures.checked_sub(self.config.free_failures)?;
        if over == 0 {
            return None;
        }
        let wait = backoff(self.config.base_delay, self.config.max_delay, over - 1);
        entry.wait_until_ms = now_ms + wait.as_millis() as u64;
        Some(wait)
    }

    /// A success clears the key.
    pub fn record_success<K: Hash + ?Sized>(&self, key: &K) {
        let (mut shard, h) = self.shards.lock(key);
        shard.remove(&h);
    }

    /// Consecutive failures currently counted for `key`.
    pub fn failures<K: Hash + ?Sized>(&self, key: &K) -> u32 {
        let (shard, h) = self.shards.lock(key);
        shard.get(&h).map_or(0, |e| e.failures)
    }

    /// Keys remembered now (for metrics).
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where each account has logged in successfully lately: (account, network) pairs,
/// bounded like [`FailureThrottle`]. Credential stuffing against an account trips
/// its account-wide back-off, which would lock its owner out too; a network the
/// owner has signed in from is held instead to its own per-(account, network)
/// back-off, which attackers elsewhere cannot move. (Networks rather than device
/// cookies: a second device at home or at work is known the first time.)
pub struct KnownNetworks {
    remember_ms: u64,
    capacity: usize,
    /// Last success, in ms, by key.
    shards: Shards<u64>,
}

impl KnownNetworks {
    pub fn new(remember: Duration, capacity: usize) -> KnownNetworks {
        KnownNetworks { remember_ms: remember.as_millis() as u64, capacity, shards: Shards::new() }
    }

    /// Whether `key` (account and network) had a success within the memory.
    pub fn knows<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) -> bool {
        let (shard, h) = self.shards.lock(key);
        shard.get(&h).is_some_and(|&at| now_ms.saturating_sub(at) <= self.remember_ms)
    }

    /// Remember a success; a full shard forgets its oldest entry.
    pub fn remember<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) {
        let (mut shard, h) = self.shards.lock(key);
        if !shard.contains_key(&h)
            && shard.len() >= (self.capacity / SHARDS).max(1)
            && let Some(oldest) = shard.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k)
        {
            shard.remove(&oldest);
        }
        shard.insert(h, now_ms);
    }
}

/// `base * 2^exponent`, capped at `max`.
fn backoff(base: Duration, max: Duration, exponent: u32) -> Duration {
    let factor = 1u32.checked_shl(exponent.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

fn make_room(shard: &mut HashMap<u64, Entry>, now_ms: u64, forget_ms: u64) {
    let before = shard.len();
    shard.retain(|_, e| e.wait_until_ms > now_ms || now_ms.saturating_sub(e.last_failure_ms) <= forget_ms.min(60_000));
    if shard.len() == before {
        // Everything is live: drop an arbitrary key (iteration order is seeded
        // randomly, so an attacker cannot pick which).
        if let Some(victim) = shard.keys().next().copied() {
            shard.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_networks_expire_and_stay_bounded() {
        let k = KnownNetworks::new(Duration::from_secs(10), SHARDS);
        k.remember("a", 1_000);
        assert!(k.knows("a", 11_000));
        assert!(!k.knows("a", 11_001), "forgotten after the memory");
        assert!(!k.knows("b", 1_000));
        // One entry per shard: remembering many keeps at most SHARDS.
        for i in 0..1_000u32 {
            k.remember(&i, 2_000 + u64::from(i));
        }
        let total = k.shards.len();
        assert!(total <= SHARDS, "{total}");
        assert!(k.knows(&999u32, 3_000), "the newest is kept");
    }
    use proptest::prelude::*;

    fn throttle(free: u32) -> FailureThrottle {
        FailureThrottle::new(ThrottleConfig { free_failures: free, ..ThrottleConfig::default() })
    }

    #[test]
    fn waits_double_after_the_free_failures() {
        let t = throttle(3);
        let mut now = 1_000;
        for _ in 0..3 {
            assert!(t.check("alice", now).is_ok());
            assert_eq!(t.record_failure("alice", now), None);
        }
        assert_eq!(t.record_failure("alice", now), Some(Duration::from_secs(1)));
        assert_eq!(t.check("alice", now + 999), Err(Duration::from_millis(1)));
        now += 1_000;
        assert!(t.check("alice", now).is_ok());
        assert_eq!(t.record_failure("alice", now), Some(Duration::from_secs(2)));
        now += 2_000;
        assert_eq!(t.record_failure("alice", now), Some(Duration::from_secs(4)));
        assert!(t.check("bob", now).is_ok(), "keys are independent");
        t.record_success("alice");
        assert!(t.check("alice", now).is_ok());
        assert_eq!(t.failures("alice"), 0);
    }

    #[test]
    fn the_wait_is_capped_and_old_failures_are_forgotten() {
        let t = throttle(0);
        let mut last = None;
        for i in 0..64 {
            last = t.record_failure("k", 1 + i);
        }
        assert_eq!(last, Some(ThrottleConfig::default().max_delay));
        let much_later = 100 + ThrottleConfig::default().forget_after.as_millis() as u64 + 1;
        assert_eq!(t.record_failure("k", much_later), Some(Duration::from_secs(1)), "count restarted");
    }

    #[test]
    fn memory_stays_bounded_under_many_keys() {
        let t = FailureThrottle::new(ThrottleConfig { capacity: 1_600, ..ThrottleConfig::default() });
        for i in 0..50_000u32 {
            t.record_failure(&i, 10);
        }
        assert!(t.len() <= 1_600, "{}", t.len());
        // A key under attack right now keeps its state while others churn.
        for _ in 0..10 {
            t.record_failure("victim", 10);
        }
        assert!(t.check("victim", 10).is_err());
    }

    proptest! {
        /// Whatever the failure times, an imposed wait never exceeds max_delay,
        /// and a key with fewer than free_failures consecutive failures never waits.
        #[test]
        fn waits_are_bounded(free in 0u32..6, gaps in proptest::collection::vec(0u64..5_000, 1..40)) {
            let t = throttle(free);
            let mut now = 1;
            for (i, gap) in gaps.iter().enumerate() {
                now += gap;
                let wait = t.record_failure("k", now);
                if (i as u32) < free { prop_assert!(wait.is_none()); }
                if let Some(w) = wait { prop_assert!(w <= ThrottleConfig::default().max_delay); }
            }
        }
    }
}
