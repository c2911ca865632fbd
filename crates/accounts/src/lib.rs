//! Pure account logic for Palisade: password rules and hashing, TOTP, recovery codes,
//! PII encryption, phone and e-mail normalisation, tokens, and the registration policy.
//!
//! The modules are pure logic, tested alone; [`service`] runs the account flows
//! over the store, and [`notify`] delivers one-time codes. Nothing here speaks
//! HTTP to clients: the gateway calls in with plain values and gets plain values
//! (or a typed refusal with a stable `code()`) back.

pub mod crypto;
pub mod email;
pub mod hasher;
pub mod notify;
pub mod operator;
pub mod password;
pub mod phone;
pub mod policy;
pub mod principal;
pub mod principal_cache;
pub mod recovery;
pub mod send_budget;
pub mod service;
pub mod sms;
pub mod throttle;
pub mod tier;
pub mod tokens;
pub mod totp;

/// Now, in Unix milliseconds (the store's time unit).
pub(crate) fn unix_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Fills an array from the operating system's CSPRNG.
///
/// Panics if the OS generator fails. On the platforms we ship (Linux `getrandom(2)`) that
/// only happens on a broken kernel, and there is nothing safe to fall back to: issuing a
/// predictable secret would be worse than stopping.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(err) = getrandom::fill(&mut buf) {
        panic!("operating system random generator failed: {err}");
    }
    buf
}

/// A uniformly random integer in `0..bound` (rejection sampling, no modulo bias).
pub(crate) fn random_below(bound: u32) -> u32 {
    assert!(bound > 0, "random_below needs a positive bound");
    // Largest multiple of `bound` that fits in u32; draws at or above it would bias
    // the low residues, so they are thrown away and redrawn.
    let zone = u32::MAX - (u32::MAX % bound);
    loop {
        let x = u32::from_le_bytes(random_bytes::<4>());
        if x < zone {
            return x % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_below_stays_in_range_and_covers_it() {
        let mut seen = [false; 10];
        for _ in 0..2_000 {
            let x = random_below(10) as usize;
            seen[x] = true;
        }
        assert!(seen.iter().all(|s| *s), "all ten residues appear in 2000 draws");
    }

    #[test]
    fn random_bytes_differ() {
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
    }
}
