//! Proof-of-work asymmetry in a few seconds (the criterion bench `pow` is the careful
//! version): what the gateway pays to verify an answer against what a client pays to find
//! one, on one core. `cargo run --release -p shield --example pow_table`

use std::time::{Duration, Instant};

use shield::pow::solve_range;
use shield::{Client, ClientBinding, PowIssuer, SubnetPrefixes};

const NOW: Duration = Duration::from_secs(1_700_000_000);

fn main() {
    let issuer = PowIssuer::new([7; 32]);
    let binding = ClientBinding::for_client(
        &Client::new("203.0.113.9".parse().expect("ip"), SubnetPrefixes::default()),
        "Mozilla/5.0 (bench)",
    );
    let challenge = issuer.challenge(&binding, 16, NOW);
    let nonce = shield::solve(&challenge.seed, 16).expect("solvable").to_string();
    let rounds = 200_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(issuer.verify(&challenge.token, &nonce, &binding, NOW).is_ok());
    }
    let verify = started.elapsed() / rounds;
    println!("verify (HMAC + one SHA-256): {:.2} µs", verify.as_secs_f64() * 1e6);
    println!("{:>10} {:>14} {:>14} {:>16}", "difficulty", "solves timed", "mean solve", "solve / verify");
    for (d, solves) in [(8u8, 2_000u64), (12, 200), (16, 24), (20, 4)] {
        let started = Instant::now();
        for i in 0..solves {
            let seed = format!("{:032x}", u128::from(i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            std::hint::black_box(solve_range(&seed, d, 0, u64::MAX));
        }
        let mean = started.elapsed() / solves as u32;
        let ratio = mean.as_secs_f64() / verify.as_secs_f64();
        println!("{d:>10} {solves:>14} {:>11.2} ms {ratio:>16.0}", mean.as_secs_f64() * 1e3);
    }
}
