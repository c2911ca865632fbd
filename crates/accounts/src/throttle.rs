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
use std::future::Future;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use shield::Cidr;

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

    /// Takes back one counted failure (an attempt counted up front that turned out not
    /// to be a wrong guess). Any wait already imposed stays.
    pub fn refund<K: Hash + ?Sized>(&self, key: &K) {
        let (mut shard, h) = self.shards.lock(key);
        if let Some(entry) = shard.get_mut(&h) {
            entry.failures = entry.failures.saturating_sub(1);
        }
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

/// The keys one login attempt is counted under.
#[derive(Clone, Copy, Debug)]
pub struct LoginKeys<'a> {
    /// The blind index of the identifier tried (never the identifier itself).
    pub account: &'a [u8],
    pub network: Option<Cidr>,
    pub address: Option<IpAddr>,
}

/// How the login back-off counts; the same on every node of a fleet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoginRules {
    pub free_per_account: u32,
    /// An address may carry many users (NAT), so it gets more.
    pub free_per_address: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub forget_after: Duration,
    /// How long a network an account signed in from stays known.
    pub remember_network: Duration,
}

impl LoginRules {
    pub fn new(free_per_account: u32, remember_network: Duration) -> LoginRules {
        let d = ThrottleConfig::default();
        LoginRules {
            free_per_account,
            free_per_address: free_per_account.saturating_mul(4),
            base_delay: d.base_delay,
            max_delay: d.max_delay,
            forget_after: d.forget_after,
            remember_network,
        }
    }

    /// The wait after `failures` counted failures with `free` of them free.
    pub fn wait_after(&self, failures: u32, free: u32) -> Option<Duration> {
        match failures.checked_sub(free) {
            None | Some(0) => None,
            Some(over) => Some(backoff(self.base_delay, self.max_delay, over - 1)),
        }
    }
}

/// What the back-off says to an attempt. `Go` means it has been counted already, as a
/// failure until [`Outcome`] says otherwise: so parallel guesses (on one node or many)
/// are each counted before any password is checked, and cannot slip past together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Go on. `known`: the account has signed in from this network lately, so its own
    /// per-network count applies rather than the account-wide one.
    Go {
        known: bool,
    },
    Wait(Duration),
}

/// How a counted attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Signed in: clear the counts (the account-wide one only from an unknown network,
    /// so a success from home does not lift a back-off against stuffing elsewhere) and
    /// remember the network.
    Success { known: bool },
    /// Not a wrong guess (the password was right but a second factor is needed, or the
    /// service failed): take the count back.
    Refund,
}

/// The shared state failed to answer; the caller counts locally instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shared login back-off unavailable")]
pub struct SharedLoginsDown;

pub type LoginFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SharedLoginsDown>> + Send + 'a>>;

/// The login back-off and known networks kept outside this process (a fleet's Redis), so
/// every node counts every node's attempts. Each call must be atomic on its side.
pub trait SharedLogins: Send + Sync {
    fn attempt<'a>(&'a self, keys: LoginKeys<'a>, rules: &'a LoginRules) -> LoginFuture<'a, Attempt>;
    fn settle<'a>(&'a self, keys: LoginKeys<'a>, rules: &'a LoginRules, outcome: Outcome) -> LoginFuture<'a, ()>;
}

/// The login back-off in this process: per account, per address, and per (account,
/// network) for networks the account is known on.
pub struct LocalLogins {
    rules: LoginRules,
    by_account: FailureThrottle,
    by_address: FailureThrottle,
    by_account_network: FailureThrottle,
    known_networks: KnownNetworks,
}

impl LocalLogins {
    pub fn new(rules: LoginRules, capacity: usize) -> LocalLogins {
        let throttle = |free| {
            FailureThrottle::new(ThrottleConfig {
                free_failures: free,
                base_delay: rules.base_delay,
                max_delay: rules.max_delay,
                forget_after: rules.forget_after,
                capacity,
            })
        };
        LocalLogins {
            by_account: throttle(rules.free_per_account),
            by_address: throttle(rules.free_per_address),
            by_account_network: throttle(rules.free_per_account),
            known_networks: KnownNetworks::new(rules.remember_network, capacity * 2),
            rules,
        }
    }

    pub fn rules(&self) -> &LoginRules {
        &self.rules
    }

    /// Checks the counts that apply and, when none holds the attempt off, counts it.
    pub fn attempt(&self, keys: LoginKeys<'_>, now_ms: u64) -> Attempt {
        let pair = (keys.account, keys.network);
        let known = self.known_networks.knows(&pair, now_ms);
        let account = if known {
            self.by_account_network.check(&pair, now_ms)
        } else {
            self.by_account.check(keys.account, now_ms)
        };
        for check in [account, self.by_address.check(&keys.address, now_ms)] {
            if let Err(wait) = check {
                return Attempt::Wait(wait);
            }
        }
        self.by_account.record_failure(keys.account, now_ms);
        self.by_account_network.record_failure(&pair, now_ms);
        self.by_address.record_failure(&keys.address, now_ms);
        Attempt::Go { known }
    }

    pub fn settle(&self, keys: LoginKeys<'_>, outcome: Outcome, now_ms: u64) {
        let pair = (keys.account, keys.network);
        match outcome {
            Outcome::Success { known } => {
                if !known {
                    self.by_account.record_success(keys.account);
                }
                self.by_account_network.record_success(&pair);
                self.known_networks.remember(&pair, now_ms);
                self.by_address.record_success(&keys.address);
            }
            Outcome::Refund => {
                self.by_account.refund(keys.account);
                self.by_account_network.refund(&pair);
                self.by_address.refund(&keys.address);
            }
        }
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

    fn keys<'a>(account: &'a [u8], last: u8) -> LoginKeys<'a> {
        LoginKeys {
            account,
            network: Some("10.0.0.0/24".parse().unwrap()),
            address: Some(IpAddr::from([10, 0, 0, last])),
        }
    }

    #[test]
    fn attempts_are_counted_before_the_password_so_parallel_guesses_cannot_all_pass() {
        let logins = LocalLogins::new(LoginRules::new(3, Duration::from_secs(3600)), 1_600);
        // Ten guesses arrive together: none has been answered when the next is checked.
        let passed = (0..10).filter(|_| matches!(logins.attempt(keys(b"acct", 1), 1_000), Attempt::Go { .. })).count();
        assert_eq!(passed, 4, "the free three and the one that starts the wait");
        assert_eq!(logins.attempt(keys(b"acct", 1), 1_500), Attempt::Wait(Duration::from_millis(500)));
    }

    #[test]
    fn a_refund_takes_back_the_count_and_a_success_makes_the_network_known() {
        let logins = LocalLogins::new(LoginRules::new(2, Duration::from_secs(3600)), 1_600);
        for _ in 0..5 {
            assert_eq!(logins.attempt(keys(b"acct", 1), 1_000), Attempt::Go { known: false });
            logins.settle(keys(b"acct", 1), Outcome::Refund, 1_000);
        }
        assert_eq!(logins.attempt(keys(b"acct", 1), 1_000), Attempt::Go { known: false });
        logins.settle(keys(b"acct", 1), Outcome::Success { known: false }, 1_000);
        // Stuffing from elsewhere now waits, while the owner's network has its own count.
        let elsewhere = |n| LoginKeys { network: Some("192.0.2.0/24".parse().unwrap()), ..keys(b"acct", n) };
        let mut last = Attempt::Go { known: false };
        for _ in 0..4 {
            last = logins.attempt(elsewhere(9), 2_000);
        }
        assert!(matches!(last, Attempt::Wait(_)), "{last:?}");
        assert_eq!(logins.attempt(keys(b"acct", 2), 2_000), Attempt::Go { known: true });
    }

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
