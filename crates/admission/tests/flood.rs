//! The flood scenario on virtual time: an upstream of capacity C = 8 (50 ms per request, 1 s of
//! traffic = 160 requests at full use) serves members at half its capacity while anonymous
//! traffic floods it at twenty times its capacity. With admission, members keep ≥ 99% success
//! and a p99 within twice their p99 without the flood; without admission, they do not.
//!
//! Everything runs on tokio's paused clock with seeded arrivals, so the outcome is the same on
//! every run and on any machine. `cargo test -p admission --test flood -- --nocapture` prints
//! the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use admission::{
    Admission, AdmissionConfig, AdmissionRequest, AdmissionSnapshot, Outcome, PriorityClass, RefusalReason,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

const CAPACITY: usize = 8;
const SERVICE: Duration = Duration::from_millis(50);
/// Requests per second the upstream completes at full use.
const THROUGHPUT: f64 = CAPACITY as f64 / 0.050;
const MEMBER_RATE: f64 = 0.5 * THROUGHPUT;
const FLOOD_RATE: f64 = 20.0 * THROUGHPUT;
/// Members alone first, so the limit learns the unloaded latency as it would in service.
const WARM_UP: Duration = Duration::from_secs(1);
const FLOOD: Duration = Duration::from_secs(5);

/// A model server like `drill`'s simulator: `CAPACITY` requests at once, a bounded FIFO queue,
/// 503 when the queue is full or a wait runs past `QUEUE_TIMEOUT`.
struct Upstream {
    slots: Semaphore,
    waiting: AtomicUsize,
}

const UPSTREAM_QUEUE: usize = 4 * CAPACITY;
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

impl Upstream {
    /// Time to first byte, or `Err` for a 503.
    async fn call(&self) -> Result<Duration, ()> {
        let start = Instant::now();
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= UPSTREAM_QUEUE {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(());
        }
        let slot = tokio::time::timeout(QUEUE_TIMEOUT, self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let Ok(Ok(_slot)) = slot else { return Err(()) };
        tokio::time::sleep(SERVICE).await;
        Ok(start.elapsed())
    }
}

/// SplitMix64: seeded, so arrivals are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Time to the next arrival of a Poisson process of `rate` per second.
    fn gap(&mut self, rate: f64) -> Duration {
        let uniform = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        Duration::from_secs_f64(-uniform.ln() / rate)
    }
}

#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    ok: usize,
    /// End-to-end latency of successful requests: admission wait plus upstream.
    latencies: Vec<Duration>,
}

impl Tally {
    fn success(&self) -> f64 {
        self.ok as f64 / self.sent.max(1) as f64
    }

    /// Latencies must be sorted.
    fn p99(&self) -> Duration {
        let at = (self.latencies.len() * 99).div_ceil(100).saturating_sub(1);
        self.latencies.get(at).copied().unwrap_or(Duration::MAX)
    }
}

struct Run {
    members: Tally,
    anonymous: Tally,
    /// The gate's counters at the end, when there was a gate.
    snapshot: Option<AdmissionSnapshot>,
}

/// Sends one request through admission (if any) and the upstream; `Some(latency)` on success.
async fn request(
    gate: Option<Admission>,
    upstream: Arc<Upstream>,
    class: PriorityClass,
    account: u64,
) -> Option<Duration> {
    let start = Instant::now();
    let permit = match &gate {
        Some(gate) => {
            let request = AdmissionRequest { account: Some(account), ..AdmissionRequest::new(class) };
            Some(gate.acquire(request).await.ok()?)
        }
        None => None,
    };
    let answer = upstream.call().await;
    if let Some(permit) = permit {
        permit.finish(match answer {
            Ok(latency) => Outcome::Success { latency },
            Err(()) => Outcome::Overloaded,
        });
    }
    answer.ok().map(|_| start.elapsed())
}

/// Members for `WARM_UP + FLOOD`, anonymous traffic during `FLOOD` if `flood`; members are
/// counted only during the flood window, so runs with and without it compare like for like.
async fn run(admission: Option<AdmissionConfig>, flood: bool) -> Run {
    let gate = admission.map(|config| Admission::new(config).expect("valid config"));
    let upstream = Arc::new(Upstream { slots: Semaphore::new(CAPACITY), waiting: AtomicUsize::new(0) });
    let start = Instant::now();
    let end = start + WARM_UP + FLOOD;
    // Separate streams, so members arrive at the same times with and without the flood.
    let (mut member_rng, mut flood_rng) = (Rng(7), Rng(11));
    let mut next_member = start + member_rng.gap(MEMBER_RATE);
    let mut next_flood = if flood { start + WARM_UP } else { end };
    let mut members = JoinSet::new();
    let mut anonymous = JoinSet::new();
    loop {
        let (at, is_member) = if next_member <= next_flood { (next_member, true) } else { (next_flood, false) };
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        if is_member {
            let account = member_rng.next() % 200;
            let measured = at >= start + WARM_UP;
            let task = request(gate.clone(), Arc::clone(&upstream), PriorityClass::Member, account);
            members.spawn(async move { (measured, task.await) });
            next_member = at + member_rng.gap(MEMBER_RATE);
        } else {
            // The gateway passes a subnet hash as the account of anonymous traffic.
            let subnet = flood_rng.next() % 4096;
            anonymous.spawn(request(gate.clone(), Arc::clone(&upstream), PriorityClass::Anonymous, subnet));
            next_flood = at + flood_rng.gap(FLOOD_RATE);
        }
    }
    let mut run = Run { members: Tally::default(), anonymous: Tally::default(), snapshot: None };
    for (measured, answer) in members.join_all().await {
        if measured {
            run.members.sent += 1;
            if let Some(latency) = answer {
                run.members.ok += 1;
                run.members.latencies.push(latency);
            }
        }
    }
    for answer in anonymous.join_all().await {
        run.anonymous.sent += 1;
        if let Some(latency) = answer {
            run.anonymous.ok += 1;
            run.anonymous.latencies.push(latency);
        }
    }
    run.members.latencies.sort();
    run.anonymous.latencies.sort();
    run.snapshot = gate.map(|gate| gate.snapshot());
    run
}

fn report(name: &str, run: &Run) {
    eprintln!(
        "{name:<28} members {:>4} sent {:>6.2}% ok p99 {:>6.1} ms | anonymous {:>5} sent {:>5} ok | limit {}",
        run.members.sent,
        100.0 * run.members.success(),
        run.members.p99().as_secs_f64() * 1000.0,
        run.anonymous.sent,
        run.anonymous.ok,
        run.snapshot.as_ref().map_or(0, |s| s.limit),
    );
}

#[tokio::test(start_paused = true)]
async fn members_keep_their_service_through_an_anonymous_flood() {
    let quiet = run(Some(AdmissionConfig::default()), false).await;
    let flooded = run(Some(AdmissionConfig::default()), true).await;
    let unguarded = run(None, true).await;
    let disabled = AdmissionConfig { enabled: false, ..AdmissionConfig::default() };
    let disabled = run(Some(disabled), true).await;
    report("no flood, admission", &quiet);
    report("flood, admission", &flooded);
    report("flood, no admission", &unguarded);
    report("flood, admission disabled", &disabled);

    assert!(quiet.members.sent > 300, "enough samples for a p99: {}", quiet.members.sent);
    assert!(quiet.members.success() >= 0.99, "members without a flood: {:.4}", quiet.members.success());
    let baseline_p99 = quiet.members.p99();

    assert!(flooded.members.success() >= 0.99, "members under the flood: {:.4}", flooded.members.success());
    assert!(
        flooded.members.p99() <= baseline_p99 * 2,
        "members' p99 {:?} under the flood vs {baseline_p99:?} without",
        flooded.members.p99()
    );
    // The flood is not shut out: it gets what members leave (half the upstream during the
    // flood), and its queue drains after it.
    let spare = (THROUGHPUT - MEMBER_RATE) * FLOOD.as_secs_f64();
    assert!(flooded.anonymous.ok as f64 > 0.5 * spare, "anonymous served {}", flooded.anonymous.ok);
    // Refusals are counted by class and reason: the flood is refused up front, members never.
    let counters = flooded.snapshot.as_ref().expect("gated run");
    let refused = |class, reason| counters.refused(class, reason);
    assert_eq!(RefusalReason::ALL.iter().map(|&r| refused(PriorityClass::Member, r)).sum::<u64>(), 0);
    let anonymous_refused: u64 = RefusalReason::ALL.iter().map(|&r| refused(PriorityClass::Anonymous, r)).sum();
    assert_eq!(anonymous_refused as usize, flooded.anonymous.sent - flooded.anonymous.ok);
    assert!(
        refused(PriorityClass::Anonymous, RefusalReason::WouldTimeOut) > anonymous_refused / 2,
        "most of the flood is refused at once rather than after a wait"
    );

    // Without admission (or with it switched off) the same flood takes members down.
    for unprotected in [&unguarded, &disabled] {
        assert!(
            unprotected.members.success() < 0.9 || unprotected.members.p99() > baseline_p99 * 4,
            "members were expected to suffer: {:.4} ok, p99 {:?}",
            unprotected.members.success(),
            unprotected.members.p99()
        );
    }
}
