//! Cost of admission on the hot path, in nanoseconds per acquire + release:
//! `cargo bench -p admission`.
//!
//! - `uncontended`: a free slot, one thread; `acquire` is ready on its first poll.
//! - `two_threads`: the same from two OS threads at once on one gate (lock contention).
//! - `queued`: 64 tasks on one runtime thread share a limit of 8, so almost every acquisition
//!   waits in the queue and is woken by a finishing permit (channel and task switch included).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use admission::{Admission, AdmissionConfig, AdmissionRequest, LimitConfig, Outcome, PriorityClass};
use criterion::{Criterion, criterion_group, criterion_main};

const ANSWERED: Outcome = Outcome::Success { latency: Duration::from_millis(50) };

fn gate(limit: u32) -> Admission {
    let limit = LimitConfig { initial: limit, min: limit, max: limit, ..LimitConfig::default() };
    let config = AdmissionConfig { limit, per_account_max_in_flight: 1024, ..AdmissionConfig::default() };
    Admission::new(config).expect("valid config")
}

fn member(account: u64) -> AdmissionRequest {
    AdmissionRequest { account: Some(account), ..AdmissionRequest::new(PriorityClass::Member) }
}

/// Acquires a free slot without a runtime: it is ready on the first poll.
fn acquire_free(gate: &Admission, account: u64) {
    let mut acquire = pin!(gate.acquire(member(account)));
    match acquire.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(permit)) => permit.finish(ANSWERED),
        _ => panic!("a free slot must be granted on the first poll"),
    }
}

fn uncontended(c: &mut Criterion) {
    let gate = gate(1024);
    let mut account = 0u64;
    c.bench_function("uncontended", |b| {
        b.iter(|| {
            account = account.wrapping_add(1) % 1000;
            acquire_free(&gate, black_box(account));
        })
    });
}

fn two_threads(c: &mut Criterion) {
    let gate = gate(1024);
    c.bench_function("two_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..2u64 {
                    let gate = &gate;
                    scope.spawn(move || {
                        for i in 0..iters / 2 {
                            acquire_free(gate, black_box(thread * 1000 + i % 1000));
                        }
                    });
                }
            });
            // Two threads did `iters` operations in this wall time.
            start.elapsed()
        })
    });
}

fn queued(c: &mut Criterion) {
    const TASKS: u64 = 64;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let gate = gate(8);
    c.bench_function("queued", |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(TASKS);
            runtime.block_on(async {
                let start = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for task in 0..TASKS {
                    let gate = gate.clone();
                    tasks.spawn(async move {
                        for _ in 0..per_task {
                            let permit = gate.acquire(member(task)).await.expect("admitted");
                            tokio::task::yield_now().await;
                            permit.finish(ANSWERED);
                        }
                    });
                }
                tasks.join_all().await;
                start.elapsed().mul_f64(iters as f64 / (per_task * TASKS) as f64)
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = uncontended, two_threads, queued
}
criterion_main!(benches);
