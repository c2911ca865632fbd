//! Single-thread argon2id cost at the production parameters (m=19456 KiB, t=2, p=1):
//! one hash or one verification per iteration, so criterion's element throughput is
//! hashes (or verifications) per second per core. Pool admission is measured by
//! `examples/pool_admission.rs`.

use std::hint::black_box;
use std::time::Duration;

use accounts::hasher::{hash_blocking, verify_blocking};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn argon2id(c: &mut Criterion) {
    let mut group = c.benchmark_group("argon2id_m19456_t2_p1");
    group.throughput(Throughput::Elements(1));
    // Each iteration is tens of milliseconds; 20 samples keep the run under a minute.
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.bench_function("hash", |b| b.iter(|| hash_blocking(black_box("violet-tractor-mango-82"))));
    let phc = match hash_blocking("violet-tractor-mango-82") {
        Ok(phc) => phc,
        Err(err) => panic!("hashing failed: {err}"),
    };
    group.bench_function("verify", |b| {
        b.iter(|| verify_blocking(black_box("violet-tractor-mango-82"), black_box(&phc)))
    });
    group.finish();
}

criterion_group!(benches, argon2id);
criterion_main!(benches);
