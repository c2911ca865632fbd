//! A fixed-size, sharded table of per-source state (rate-limit TATs, in-flight counts,
//! behaviour meters) whose memory never grows, however many distinct sources an attack uses.
//!
//! Layout: 16 shards, each a mutex over a flat array of 8-way buckets (a set-associative
//! cache). A key hashes (keyed by a per-process random seed, so outsiders cannot aim keys at
//! one bucket) to a shard, a bucket and a 64-bit tag; an entry is the tag plus the value. When
//! a bucket is full, the entry with the least [`Slot::retention`] is replaced: for a rate
//! limit that is the source with the least outstanding debt, and a source whose bucket has
//! refilled (retention 0) carries no information at all, so dropping it loses nothing.
//!
//! **Memory bound:** `capacity × size_of::<(u64, V)>()` bytes allocated once at
//! construction (16 bytes per entry for a rate limit), plus a few hundred bytes of shard
//! headers; see [`BoundedTable::memory_bytes`]. One million distinct sources against a
//! 262,144-entry limiter table use 4 MiB, the same as ten sources.
//!
//! **Eviction errs on the side of the client:** an evicted source simply starts again with a
//! full bucket. So a table too small for the traffic lets some excess through (bounded by
//! one burst per eviction) but never refuses a source that is within its rate. The subnet
//! tables see far fewer distinct keys than the per-address ones (a /24 holds 256 addresses),
//! so a smaller subnet table still keeps every active subnet, and the debt-ordered eviction
//! keeps the heaviest subnets longest: that is where a botnet spread over many addresses
//! still gets caught. Two keys with the same 64-bit tag share an entry (odds about
//! `n / 2^64` per lookup with a random seed).

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::cidr::{Cidr, Family, aligned};
use crate::gcra::{Decision, Gcra, nanos};

/// Ways per bucket: 8 entries of 16 bytes are two cache lines.
const WAYS: usize = 8;
/// Shards, each behind its own lock, so two cores rarely contend.
const SHARDS: usize = 16;

/// A value kept per source.
pub trait Slot: Copy + Default {
    /// What would be lost by dropping this entry at `now`. Zero means nothing (the entry is
    /// as good as absent and its slot is free); among full buckets the lowest is evicted.
    fn retention(&self, now: Duration) -> u64;
}

/// What a table entry is keyed on. Build one with the constructors; kinds never collide
/// (an account id and an IPv4 address with the same bits are different keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Kind in bits 0..8, prefix length (subnets) in 8..16, family in 16, route in 20..32.
    domain: u32,
    id: u128,
}

const KIND_IP: u32 = 1;
const KIND_SUBNET: u32 = 2;
const KIND_ACCOUNT: u32 = 3;
const KIND_API_KEY: u32 = 4;
const KIND_CLEARANCE: u32 = 5;
const KIND_CUSTOM: u32 = 6;
const V6_FLAG: u32 = 1 << 16;
/// Routes are numbered 0..MAX_ROUTES and stored +1 in the top 12 bits.
pub const MAX_ROUTES: u16 = 4095;

fn family_flag(family: Family) -> u32 {
    if family == Family::V6 { V6_FLAG } else { 0 }
}

impl Key {
    /// One client address (IPv4-mapped IPv6 counts as IPv4).
    pub fn ip(ip: IpAddr) -> Self {
        let (family, bits) = aligned(ip);
        Self { domain: KIND_IP | family_flag(family), id: bits }
    }

    /// A network, e.g. a [`crate::Client`]'s subnet.
    pub fn subnet(net: Cidr) -> Self {
        let domain = KIND_SUBNET | (u32::from(net.prefix_len()) << 8) | family_flag(net.family());
        Self { domain, id: net.aligned_bits() }
    }

    pub fn account(id: u64) -> Self {
        Self { domain: KIND_ACCOUNT, id: u128::from(id) }
    }

    pub fn api_key(id: u64) -> Self {
        Self { domain: KIND_API_KEY, id: u128::from(id) }
    }

    /// An API key by its public prefix (e.g. the 8 characters of `pal_xxxxxxxx_…`). Up to
    /// 16 bytes are packed without hashing; longer prefixes are truncated, so keep it short.
    pub fn api_key_prefix(prefix: &str) -> Self {
        let mut bytes = [0u8; 16];
        let src = prefix.as_bytes();
        let n = src.len().min(16);
        bytes[..n].copy_from_slice(&src[..n]);
        Self { domain: KIND_API_KEY | 1 << 8, id: u128::from_be_bytes(bytes) }
    }

    /// A proof-of-work clearance, for its request budget.
    pub fn clearance(id: u64) -> Self {
        Self { domain: KIND_CLEARANCE, id: u128::from(id) }
    }

    /// Anything else the caller numbers itself; `space` (0..=255) keeps numberings apart.
    pub fn custom(space: u8, id: u128) -> Self {
        Self { domain: KIND_CUSTOM | u32::from(space) << 8, id }
    }

    /// `inner` scoped to route number `route` (a per-route policy keyed by address, account
    /// …). Routes above [`MAX_ROUTES`] share the last number.
    pub fn route(route: u16, inner: Key) -> Self {
        let r = u32::from(route.min(MAX_ROUTES - 1)) + 1;
        Self { domain: (inner.domain & 0x000f_ffff) | r << 20, id: inner.id }
    }
}

/// The per-subnet key of a client: its `/v4_prefix` (IPv4) or `/v6_prefix` (IPv6) network.
/// The usual choice is 24 and 64: one household or small office, one IPv6 customer LAN.

#[derive(Debug, Clone, Copy, Default)]
struct Entry<V> {
    /// Zero marks an empty slot.
    tag: u64,
    value: V,
}

struct Shard<V> {
    entries: Box<[Entry<V>]>,
    occupied: usize,
    evictions: u64,
}

/// A bounded map from [`Key`] to `V`; see the module documentation for the bound.
pub struct BoundedTable<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    bucket_mask: usize,
    seed: [u64; 4],
}

impl<V: Slot> std::fmt::Debug for BoundedTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedTable").field("capacity", &self.capacity()).finish_non_exhaustive()
    }
}

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// MurmurHash3's finaliser: spreads every input bit over the output.
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn random_seed() -> [u64; 4] {
    use std::hash::BuildHasher;
    // std's RandomState is keyed from the OS generator once per thread and never fails,
    // which is all a table seed needs (it is not a secret that guards anything but balance).
    let state = std::collections::hash_map::RandomState::new();
    [0u64, 1, 2, 3].map(|i| state.hash_one(i))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data is plain counters that are valid at every step; a panic elsewhere while the
    // lock was held leaves nothing half-updated worth refusing service over.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<V: Slot> BoundedTable<V> {
    /// A table of at least `capacity` entries (rounded up to 16 shards × 8 ways × a power of
    /// two buckets; at least 128). All memory is allocated here.
    pub fn new(capacity: usize) -> Self {
        Self::with_seed(capacity, random_seed())
    }

    /// Deterministic placement, for tests and benchmarks.
    pub fn with_seed(capacity: usize, seed: [u64; 4]) -> Self {
        let buckets = capacity.div_ceil(SHARDS * WAYS).max(1).next_power_of_two();
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: vec![Entry::<V>::default(); buckets * WAYS].into_boxed_slice(),
                    occupied: 0,
                    evictions: 0,
                })
            })
            .collect();
        Self { shards, bucket_mask: buckets - 1, seed }
    }

    /// Entries the table holds at most.
    pub fn capacity(&self) -> usize {
        SHARDS * (self.bucket_mask + 1) * WAYS
    }

    /// Bytes of one entry.
    pub const fn entry_bytes() -> usize {
        size_of::<Entry<V>>()
    }

    /// Every byte this table owns: the entry arrays plus shard headers. Constant.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + SHARDS * size_of::<Mutex<Shard<V>>>() + self.capacity() * Self::entry_bytes()
    }

    fn hash(&self, key: Key) -> u64 {
        let (lo, hi) = (key.id as u64, (key.id >> 64) as u64);
        let s = self.seed;
        let a = fold(lo ^ s[0], hi ^ s[1]);
        let b = fold(hi ^ s[2], lo ^ s[3] ^ u64::from(key.domain).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        fmix(a ^ b.rotate_left(29))
    }

    /// Shard, first slot of the bucket, and tag of `key`.
    fn place(&self, key: Key) -> (usize, usize, u64) {
        let h = self.hash(key);
        let shard = (h >> 60) as usize & (SHARDS - 1);
        let bucket = (h as usize) & self.bucket_mask;
        (shard, bucket * WAYS, h.max(1))
    }

    /// Runs `f` on the entry for `key`, creating it (from `V::default()`, evicting if the
    /// bucket is full) when absent. An entry left with zero retention is freed afterwards.
    pub fn update<R>(&self, key: Key, now: Duration, f: impl FnOnce(&mut V) -> R) -> R {
        let (s, start, tag) = self.place(key);
        let mut shard = lock(&self.shards[s]);
        let shard = &mut *shard;
        let bucket = &mut shard.entries[start..start + WAYS];
        let at = match bucket.iter().position(|e| e.tag == tag) {
            Some(at) => at,
            None => {
                let mut victim = 0;
                let mut least = u64::MAX;
                for (i, e) in bucket.iter().enumerate() {
                    let r = if e.tag == 0 { 0 } else { e.value.retention(now) };
                    if r < least {
                        (victim, least) = (i, r);
                        if r == 0 {
                            break;
                        }
                    }
                }
                if bucket[victim].tag == 0 {
                    shard.occupied += 1;
                } else if least > 0 {
                    shard.evictions += 1;
                }
                bucket[victim] = Entry { tag, value: V::default() };
                victim
            }
        };
        let result = f(&mut bucket[at].value);
        if bucket[at].value.retention(now) == 0 {
            bucket[at].tag = 0;
            shard.occupied -= 1;
        }
        result
    }

    /// Runs `f` on the entry for `key` only if it exists (nothing is created or evicted).
    pub fn update_existing<R>(&self, key: Key, now: Duration, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let (s, start, tag) = self.place(key);
        let mut shard = lock(&self.shards[s]);
        let shard = &mut *shard;
        let at = start + shard.entries[start..start + WAYS].iter().position(|e| e.tag == tag)?;
        let result = f(&mut shard.entries[at].value);
        if shard.entries[at].value.retention(now) == 0 {
            shard.entries[at].tag = 0;
            shard.occupied -= 1;
        }
        Some(result)
    }

    /// A copy of the entry for `key`, if present.
    pub fn get(&self, key: Key) -> Option<V> {
        let (s, start, tag) = self.place(key);
        let shard = lock(&self.shards[s]);
        shard.entries[start..start + WAYS].iter().find(|e| e.tag == tag).map(|e| e.value)
    }

    /// Forgets `key` (e.g. an operator resets a source's limits).
    pub fn remove(&self, key: Key) -> Option<V> {
        let (s, start, tag) = self.place(key);
        let mut shard = lock(&self.shards[s]);
        let shard = &mut *shard;
        let e = shard.entries[start..start + WAYS].iter_mut().find(|e| e.tag == tag)?;
        e.tag = 0;
        shard.occupied -= 1;
        Some(e.value)
    }

    /// Occupied slots (entries whose information may have lapsed are counted until reused).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).occupied).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries still carrying information at `now` (a full scan: for reports, not per request).
    pub fn live(&self, now: Duration) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).entries.iter().filter(|e| e.tag != 0 && e.value.retention(now) > 0).count())
            .sum()
    }

    /// Entries dropped while still carrying information, since construction.
    pub fn evictions(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).evictions).sum()
    }
}

/// A rate-limit state: the GCRA theoretical arrival time in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tat(pub u64);

impl Slot for Tat {
    /// The outstanding debt in nanoseconds: zero once the bucket has refilled.
    fn retention(&self, now: Duration) -> u64 {
        self.0.saturating_sub(nanos(now))
    }
}

/// Rate-limit state for many sources (one table per dimension: address, subnet, account…).
pub type LimiterTable = BoundedTable<Tat>;

impl BoundedTable<Tat> {
    /// [`Gcra::check`] against `key`'s state.
    pub fn check(&self, key: Key, limit: &Gcra, now: Duration, cost: u32) -> Decision {
        self.update(key, now, |tat| limit.check(&mut tat.0, now, cost))
    }

    /// [`Gcra::charge`] against `key`'s state.
    pub fn charge(&self, key: Key, limit: &Gcra, now: Duration, cost: u32) {
        self.update(key, now, |tat| limit.charge(&mut tat.0, now, cost));
    }

    /// [`Gcra::refund`] against `key`'s state, if it is still held.
    pub fn refund(&self, key: Key, limit: &Gcra, now: Duration, cost: u32) {
        self.update_existing(key, now, |tat| limit.refund(&mut tat.0, now, cost));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const SEED: [u64; 4] = [1, 2, 3, 4];
    const MS: Duration = Duration::from_millis(1);

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test ip")
    }

    #[test]
    fn keys_of_different_kinds_never_collide() {
        let zero = [
            Key::ip(ip("0.0.0.0")),
            Key::ip(ip("::")),
            Key::subnet("0.0.0.0/24".parse().expect("net")),
            Key::subnet("0.0.0.0/16".parse().expect("net")),
            Key::account(0),
            Key::api_key(0),
            Key::api_key_prefix(""),
            Key::clearance(0),
            Key::custom(0, 0),
            Key::route(0, Key::account(0)),
            Key::route(1, Key::account(0)),
        ];
        for (i, a) in zero.iter().enumerate() {
            for b in &zero[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(Key::ip(ip("::ffff:1.2.3.4")), Key::ip(ip("1.2.3.4")));
        let subnet = |text: &str| Key::subnet(crate::SubnetPrefixes::default().subnet_of(ip(text)));
        assert_eq!(subnet("1.2.3.4"), subnet("1.2.3.200"));
        assert_ne!(subnet("1.2.3.4"), subnet("1.2.4.4"));
        assert_eq!(subnet("2001:db8::1"), subnet("2001:db8::ffff:1"));
    }

    #[test]
    fn capacity_rounds_up_and_memory_is_fixed() {
        let t = LimiterTable::with_seed(1000, SEED);
        assert_eq!(t.capacity(), 1024);
        assert_eq!(LimiterTable::entry_bytes(), 16);
        let before = t.memory_bytes();
        for i in 0..100_000u64 {
            t.check(Key::account(i), &Gcra::new(MS, 1).expect("limit"), Duration::from_secs(1), 1);
        }
        assert_eq!(t.memory_bytes(), before);
        assert!(t.len() <= t.capacity());
        assert!(t.evictions() > 90_000);
        assert_eq!(LimiterTable::with_seed(0, SEED).capacity(), 128);
    }

    #[test]
    fn an_evicted_source_starts_fresh() {
        // 128 slots; 10,000 later sources each spend their whole burst, so source 0 ends up
        // with the least debt and is evicted.
        let t = LimiterTable::with_seed(1, SEED);
        let g = Gcra::new(Duration::from_secs(60), 1).expect("limit");
        let now = Duration::from_secs(10);
        assert!(t.check(Key::account(0), &g, now, 1).allowed);
        assert!(!t.check(Key::account(0), &g, now, 1).allowed);
        for i in 1..10_000u32 {
            t.check(Key::account(u64::from(i)), &g, now + MS * i, 1);
        }
        let later = now + Duration::from_secs(10);
        assert!(t.check(Key::account(0), &g, later, 1).allowed, "forgotten, so let through");
    }

    #[test]
    fn refilled_entries_are_reclaimed_before_indebted_ones() {
        let t = LimiterTable::with_seed(1, SEED);
        let slow = Gcra::new(Duration::from_secs(3600), 2).expect("limit");
        let fast = Gcra::new(MS, 1).expect("limit");
        let now = Duration::from_secs(10);
        // One heavy source, then many light ones whose debt lapses within a millisecond.
        t.check(Key::account(0), &slow, now, 2);
        for i in 1..10_000 {
            t.check(Key::account(i), &fast, now + MS * 2 * i as u32, 1);
        }
        assert!(!t.check(Key::account(0), &slow, now + Duration::from_secs(20), 1).allowed, "heavy debt kept");
    }

    #[test]
    fn refunds_only_touch_existing_entries() {
        let t = LimiterTable::with_seed(1, SEED);
        let g = Gcra::new(Duration::from_secs(1), 2).expect("limit");
        let now = Duration::from_secs(10);
        t.refund(Key::account(7), &g, now, 1);
        assert!(t.is_empty());
        t.check(Key::account(7), &g, now, 2);
        t.refund(Key::account(7), &g, now, 1);
        assert_eq!(t.check(Key::account(7), &g, now, 0).remaining, 1);
        assert_eq!(t.remove(Key::account(7)).map(|tat| tat.0 > 0), Some(true));
        assert!(t.get(Key::account(7)).is_none());
    }

    proptest! {
        /// With no more keys than ways (nothing can be evicted), the table answers exactly
        /// like one GCRA state per key.
        #[test]
        fn table_matches_a_map_of_gcra_states(
            ops in proptest::collection::vec((0u64..8, 0u64..30, 1u32..4), 1..300),
            interval in 1u64..20, burst in 1u32..6,
        ) {
            let t = LimiterTable::new(1);
            let g = Gcra::new(MS * interval as u32, burst).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut model: HashMap<u64, u64> = HashMap::new();
            let mut now = Duration::from_secs(1);
            for (key, gap, cost) in ops {
                now += MS * gap as u32;
                let want = g.check(model.entry(key).or_default(), now, cost);
                prop_assert_eq!(t.check(Key::account(key), &g, now, cost), want);
            }
            prop_assert!(t.len() <= 8);
        }

        /// Over any traffic, the table never holds more than its capacity and a source is
        /// only refused while it is within a burst of its own recent spending.
        #[test]
        fn table_stays_bounded_and_never_refuses_a_fresh_source(
            keys in proptest::collection::vec(any::<u32>(), 1..2_000),
        ) {
            let t = LimiterTable::new(1);
            let g = Gcra::new(Duration::from_secs(1), 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let now = Duration::from_secs(5);
            let mut seen = std::collections::HashSet::new();
            for k in keys {
                let d = t.check(Key::ip(IpAddr::from(k.to_be_bytes())), &g, now, 1);
                if seen.insert(k) {
                    prop_assert!(d.allowed, "first request of a source");
                }
                prop_assert!(t.len() <= t.capacity());
            }
        }
    }
}
