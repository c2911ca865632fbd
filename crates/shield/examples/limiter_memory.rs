//! Limiter memory at one million distinct sources: 500,000 IPv4 and 500,000 IPv6 addresses
//! each make one request against a per-address table and a per-subnet table of the default
//! sizes. A counting global allocator measures every byte the tables hold; for contrast the
//! same sources are put in an unbounded `HashMap`, which is what a naive limiter does.
//!
//! Run: `cargo run --release -p shield --example limiter_memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shield::{Gcra, Key, LimiterTable, LimitsConfig, SubnetPrefixes};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator and only adds relaxed counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SOURCES: u32 = 1_000_000;

fn source(i: u32) -> IpAddr {
    // Scattered over the whole space, so subnets are mostly distinct too.
    let x = i.wrapping_mul(2_654_435_761);
    if i.is_multiple_of(2) {
        IpAddr::from(x.to_be_bytes())
    } else {
        let v6 = 0x2001_0db8_u128 << 96 | u128::from(x) << 64 | u128::from(i);
        IpAddr::from(v6.to_be_bytes())
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One pass of 1M sources through fresh per-address and per-subnet tables; `spacing` is
/// the time between two sources' arrivals.
fn scenario(title: &str, config: &LimitsConfig, spacing: Duration) {
    let per_ip = config.per_ip.gcra().expect("default limit");
    let per_subnet = config.per_subnet.gcra().expect("default limit");
    let now = Duration::from_secs(1_700_000_000);

    let before = LIVE.load(Ordering::Relaxed);
    let ips = LimiterTable::new(config.ip_entries);
    let subnets = LimiterTable::new(config.subnet_entries);
    let allocated = LIVE.load(Ordering::Relaxed) - before;

    let start = Instant::now();
    for i in 0..SOURCES {
        let t = now + spacing * i;
        ips.check(Key::ip(source(i)), &per_ip, t, 1);
        subnets.check(Key::subnet(SubnetPrefixes::default().subnet_of(source(i))), &per_subnet, t, 1);
    }
    let elapsed = start.elapsed();
    let after = LIVE.load(Ordering::Relaxed) - before;
    let end = now + spacing * SOURCES;

    println!("\n{title}");
    for (name, t) in [("per-ip", &ips), ("per-subnet", &subnets)] {
        println!(
            "{name:>10}: capacity {:>7}, entries kept {:>7}, still in debt {:>7}, evicted in debt {:>7}, bound {:.2} MiB ({} B/entry)",
            t.capacity(),
            t.len(),
            t.live(end),
            t.evictions(),
            mib(t.memory_bytes()),
            LimiterTable::entry_bytes(),
        );
    }
    println!(
        "heap held by both tables: {:.2} MiB at construction, {:.2} MiB after 1M sources (grew: {})",
        mib(allocated),
        mib(after),
        allocated != after
    );
    println!(
        "time per check: {:.0} ns (address + subnet = 2 checks per source, one thread, incl. key hashing)",
        elapsed.as_nanos() as f64 / f64::from(SOURCES * 2)
    );
}

fn main() {
    let config = LimitsConfig::default();
    println!("sources: {SOURCES} distinct (half IPv4, half IPv6), one request each; default limits and table sizes");
    scenario(
        "A. arrivals spread over 1 s (1 µs apart): debts lapse, refilled entries are reused",
        &config,
        Duration::from_micros(1),
    );
    scenario(
        "B. all arrive at the same instant: every source is in debt, the tables must evict",
        &config,
        Duration::ZERO,
    );

    // The unbounded alternative: one map entry per source, growing with the attack.
    let per_ip = config.per_ip.gcra().expect("default limit");
    let now = Duration::from_secs(1_700_000_000);
    let before = LIVE.load(Ordering::Relaxed);
    let mut naive: HashMap<IpAddr, u64> = HashMap::new();
    for i in 0..SOURCES {
        let tat = naive.entry(source(i)).or_default();
        let _ = Gcra::check(&per_ip, tat, now, 1);
    }
    let naive_bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "\nfor comparison, an unbounded HashMap<IpAddr, u64>: {} entries, {:.2} MiB, growing with every new source",
        naive.len(),
        mib(naive_bytes)
    );
}
