//! Proof-of-work asymmetry: what the gateway pays to verify a solution (one SHA-256 plus one
//! HMAC) against what a client pays to find one (2^difficulty SHA-256 on average), for
//! difficulty 8, 12, 16 and 20 on one core. Each solve iteration uses a fresh seed, so the
//! mean over many iterations approaches the expected cost; the `sha256` case gives the
//! per-hash price to compare with.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shield::pow::{solve_range, work_hash};
use shield::{Client, ClientBinding, PowIssuer, ReplayGuard, SubnetPrefixes};

const NOW: Duration = Duration::from_secs(1_700_000_000);

fn seed_text(i: u64) -> String {
    format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

fn verify(c: &mut Criterion) {
    let issuer = PowIssuer::new([7; 32]);
    let binding = ClientBinding::for_client(
        &Client::new("203.0.113.9".parse().expect("ip"), SubnetPrefixes::default()),
        "Mozilla/5.0 (bench)",
    );
    let challenge = issuer.challenge(&binding, 16, NOW);
    let nonce = shield::solve(&challenge.seed, 16).expect("solvable").to_string();
    let mut g = c.benchmark_group("pow_verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_d16", |b| {
        b.iter(|| issuer.verify(black_box(&challenge.token), black_box(&nonce), black_box(&binding), NOW))
    });
    // Verification plus the replay guard claim, as `redeem` does it (fresh guard per batch
    // so every claim succeeds).
    g.bench_function("redeem_d16_with_replay_guard", |b| {
        b.iter_batched(
            || ReplayGuard::new(1 << 16),
            |guard| issuer.redeem(&challenge.token, &nonce, &binding, &guard, NOW),
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("issue_challenge", |b| b.iter(|| issuer.challenge(black_box(&binding), 16, NOW)));
    g.bench_function("sha256_one_attempt", |b| b.iter(|| work_hash(black_box(&challenge.seed), black_box(123_456))));
    g.finish();
}

fn solve(c: &mut Criterion) {
    let mut g = c.benchmark_group("pow_solve");
    g.sample_size(10);
    for d in [8u8, 12, 16, 20] {
        // Expected attempts 2^d; report per solve (one element = one solved challenge).
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(if d >= 20 { 60 } else { 10 }));
        eprintln!("pow_solve/{d}: expected 2^{d} = {} hashes per solve", 1u64 << d);
        let mut i = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(d), &d, |b, &d| {
            b.iter(|| {
                i += 1;
                solve_range(&seed_text(i), d, 0, u64::MAX)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, verify, solve);
criterion_main!(benches);
