//! Single-use recovery codes: the way back into an account whose second factor is lost.
//!
//! Ten codes of twelve symbols from Crockford's base32 alphabet (no I, L, O, U; 60 bits
//! each), shown once as `xxxx-xxxx-xxxx` and stored only as SHA-256 hashes.
//!
//! Why a fast hash and not argon2: a code is random, not a human choice, so there is no
//! dictionary to try first and only the search space counts. Online, guesses are capped
//! by the login rate limits. Offline, after a database leak, one code takes ~2^59
//! SHA-256 trials on average: about a year of one high-end GPU (~2×10^10 hashes/s), and
//! a code is only a second factor, useless without the account's argon2id-protected
//! password. (Ten symbols, 50 bits, would fall to one GPU in hours: hence twelve.)
//! Argon2 over ten stored codes per attempt would instead hand attackers a cheap way to
//! burn our CPU.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Codes issued per set.
pub const CODES_PER_SET: usize = 10;
/// Symbols per code, not counting the dash.
pub const SYMBOLS_PER_CODE: usize = 12;

/// Crockford base32: digits and upper-case letters without I, L, O and U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A freshly issued set: show `codes` to the user once, store `hashes`.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCodes {
    /// `xxxx-xxxx-xxxx`, lower case, in the order of `hashes`.
    pub codes: Vec<String>,
    pub hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for IssuedCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedCodes({} codes, <redacted>)", self.codes.len())
    }
}

/// Issues a new set of [`CODES_PER_SET`] codes. The caller replaces any previous set.
pub fn generate() -> IssuedCodes {
    let mut codes = Vec::with_capacity(CODES_PER_SET);
    let mut hashes = Vec::with_capacity(CODES_PER_SET);
    for _ in 0..CODES_PER_SET {
        let bytes: [u8; SYMBOLS_PER_CODE] = crate::random_bytes();
        // 256 is a multiple of 32, so masking keeps every symbol equally likely.
        let symbols: String = bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect();
        hashes.push(digest(&symbols));
        let lower = symbols.to_ascii_lowercase();
        codes.push(format!("{}-{}-{}", &lower[..4], &lower[4..8], &lower[8..]));
    }
    IssuedCodes { codes, hashes }
}

/// Normalises what the user typed: case, dashes and spaces do not matter, and the
/// look-alikes O, I and L read as 0, 1 and 1. `None` when it cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let mut out = String::with_capacity(SYMBOLS_PER_CODE);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' | '\t' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        if out.len() == SYMBOLS_PER_CODE {
            return None;
        }
        out.push(c);
    }
    (out.len() == SYMBOLS_PER_CODE).then_some(out)
}

/// Finds which stored hash `input` matches, comparing against every entry without
/// stopping early. The caller must then delete (or mark used) that entry: single use is
/// enforced where the hashes live.
pub fn find(input: &str, stored: &[[u8; 32]]) -> Option<usize> {
    let candidate = digest(&normalize(input)?);
    let mut found = None;
    for (i, hash) in stored.iter().enumerate() {
        if bool::from(hash.ct_eq(&candidate)) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// The stored form of what the user typed, or `None` when it cannot be a code.
/// The store looks it up and spends it atomically, which keeps codes single-use.
pub fn hash_input(input: &str) -> Option<[u8; 32]> {
    normalize(input).map(|n| digest(&n))
}

fn digest(normalized: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    // Domain separation: these hashes can never equal a token or API-key hash.
    h.update(b"palisade recovery code v1\0");
    h.update(normalized.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn issues_ten_distinct_well_formed_codes() {
        let set = generate();
        assert_eq!(set.codes.len(), CODES_PER_SET);
        assert_eq!(set.hashes.len(), CODES_PER_SET);
        let unique: std::collections::HashSet<_> = set.codes.iter().collect();
        assert_eq!(unique.len(), CODES_PER_SET);
        for code in &set.codes {
            assert_eq!(code.len(), 14);
            assert_eq!((&code[4..5], &code[9..10]), ("-", "-"));
            assert!(code.chars().all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_lowercase()), "{code}");
            assert!(!code.contains(['i', 'l', 'o', 'u']), "{code}");
        }
        assert!(!format!("{set:?}").contains(&set.codes[0]));
    }

    #[test]
    fn each_code_finds_its_own_slot() {
        let set = generate();
        for (i, code) in set.codes.iter().enumerate() {
            assert_eq!(find(code, &set.hashes), Some(i));
        }
    }

    #[test]
    fn typing_variations_are_accepted() {
        let set = generate();
        let code = &set.codes[3];
        let variants = [
            code.to_uppercase(),
            code.replace('-', ""),
            format!("  {} ", code.replace('-', " ")),
            code.replace('0', "o").replace('1', "l"),
        ];
        for v in variants {
            assert_eq!(find(&v, &set.hashes), Some(3), "{v:?}");
        }
    }

    #[test]
    fn refuses_wrong_or_malformed_input() {
        let set = generate();
        let other = generate();
        assert_eq!(find(&other.codes[0], &set.hashes), None);
        for bad in ["", "abcd", "abcd-efgh-jkmn-p", "abcd_efgh_jkmn", "äbcd-efgh-jkmn", "abcd-efgh-jkmu"] {
            assert_eq!(find(bad, &set.hashes), None, "{bad:?}");
        }
        assert_eq!(find(&set.codes[0], &[]), None);
    }

    proptest! {
        #[test]
        fn normalize_is_idempotent_and_never_panics(input in "\\PC{0,40}") {
            if let Some(n) = normalize(&input) {
                prop_assert_eq!(n.len(), SYMBOLS_PER_CODE);
                prop_assert_eq!(normalize(&n), Some(n.clone()));
            }
        }
    }
}
