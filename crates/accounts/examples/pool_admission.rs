//! How many concurrent verifications a `HashPool` admits before answering `Busy`, how
//! fast the refusal is, and what the admitted ones cost.
//!
//! `cargo run --release --example pool_admission`
//!
//! For each pool size it fires `threads + queue + 20` verify requests at once (each
//! future polled once, which is when admission is decided), counts admitted (pending)
//! and refused (`Busy`), then drives the admitted ones to completion.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use accounts::hasher::{HashError, HashPool, HashPoolConfig, hash_blocking};

type Verify<'a> = Pin<Box<dyn Future<Output = Result<bool, HashError>> + 'a>>;

fn main() {
    let phc = match hash_blocking("violet-tractor-mango-82") {
        Ok(phc) => phc,
        Err(err) => panic!("hashing failed: {err}"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(err) => panic!("tokio runtime: {err}"),
    };
    println!("threads  queue  offered  admitted  busy  busy_answer_max  drain_time  verifies/s  slowest_wait");
    for (threads, queue) in [(1, 0), (1, 4), (2, 0), (2, 8), (2, 30)] {
        let pool = match HashPool::new(HashPoolConfig { threads, queue }) {
            Ok(pool) => pool,
            Err(err) => panic!("pool: {err}"),
        };
        let offered = threads + queue + 20;
        let mut pending: Vec<Verify<'_>> = Vec::new();
        let mut busy = 0;
        let mut busy_max = Duration::ZERO;
        let start = Instant::now();
        for _ in 0..offered {
            let mut fut: Verify<'_> = Box::pin(pool.verify("violet-tractor-mango-82".into(), phc.clone()));
            let t = Instant::now();
            match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Pending => pending.push(fut),
                Poll::Ready(Err(HashError::Busy)) => {
                    busy += 1;
                    busy_max = busy_max.max(t.elapsed());
                }
                Poll::Ready(other) => panic!("unexpected immediate answer: {other:?}"),
            }
        }
        let admitted = pending.len();
        assert_eq!(pool.in_flight() + pool.queued(), admitted, "counters agree with admission");
        let slowest = runtime.block_on(async {
            let mut slowest = Duration::ZERO;
            for fut in pending {
                assert_eq!(fut.await.ok(), Some(true));
                slowest = slowest.max(start.elapsed());
            }
            slowest
        });
        let drain = start.elapsed();
        println!(
            "{threads:>7}  {queue:>5}  {offered:>7}  {admitted:>8}  {busy:>4}  {:>13.1?}  {:>10.0?}  {:>10.1}  {:>12.0?}",
            busy_max,
            drain,
            admitted as f64 / drain.as_secs_f64(),
            slowest,
        );
        assert_eq!(admitted, threads + queue, "exactly threads + queue admitted");
    }
}
