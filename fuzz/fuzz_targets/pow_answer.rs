//! A proof-of-work answer as the gateway reads it (`X-Palisade-Proof: <token> <nonce>`,
//! split as `Edge::prove` does) checked by `shield::PowIssuer::verify`.
//!
//! Input: a difficulty byte (0..=4 bits), a byte of seconds since the challenge was
//! issued, then the answer. `TOKEN` in the answer stands for the token just issued, so the
//! fuzzer reaches the nonce and work checks without forging a signature.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shield::pow::{DEFAULT_CHALLENGE_TTL, leading_zero_bits, work_hash};
use shield::{Cidr, ClientBinding, PowError, PowIssuer};

const T0: Duration = Duration::from_secs(1_700_000_000);

fuzz_target!(|data: &[u8]| {
    let [difficulty, elapsed, answer @ ..] = data else { return };
    let difficulty = difficulty % 5;
    let now = T0 + Duration::from_secs(u64::from(*elapsed));
    let issuer = PowIssuer::new([7; 32]);
    let subnet = Cidr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24).expect("a /24");
    let binding = ClientBinding::new(subnet, "fuzz");
    let challenge = issuer.challenge_with_seed([3; 16], &binding, difficulty, T0);
    let answer = String::from_utf8_lossy(answer).replacen("TOKEN", &challenge.token, 1);

    let Some((token, nonce)) = answer.trim().split_once(' ') else { return };
    let nonce = nonce.trim();
    let result = issuer.verify(token, nonce, &binding, now);

    // What a correct verifier decides, from the public definition of the work.
    let canonical = nonce.parse::<u64>().ok().filter(|n| n.to_string() == nonce);
    let expected = if token != challenge.token {
        None // Only the token as issued opens (no other spelling, no forgery).
    } else if now >= challenge.expires_at {
        Some(Err(PowError::Expired))
    } else {
        match canonical {
            None => Some(Err(PowError::BadNonce)),
            Some(n) if leading_zero_bits(&work_hash(&challenge.seed, n)) < u32::from(difficulty) => {
                Some(Err(PowError::InsufficientWork))
            }
            Some(_) => None,
        }
    };
    match (&result, expected) {
        (Ok(solved), None) => {
            assert_eq!(token, challenge.token, "a token that verifies is the one issued");
            assert_eq!(solved.difficulty, difficulty);
            assert_eq!(solved.expires_at, challenge.expires_at);
            assert!(now < challenge.expires_at);
        }
        (Err(e), None) => assert!(
            token != challenge.token && matches!(e, PowError::Malformed | PowError::Forged),
            "the issued token with a good nonce was refused: {e:?}"
        ),
        (result, Some(expected)) => assert_eq!(*result, expected, "{token:?} {nonce:?}"),
    }

    // Another client, or after expiry, never passes.
    let other = ClientBinding::new(subnet, "another agent");
    assert!(issuer.verify(token, nonce, &other, now).is_err());
    assert!(issuer.verify(token, nonce, &binding, now + DEFAULT_CHALLENGE_TTL).is_err());
});
