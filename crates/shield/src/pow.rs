//! Stateless proof-of-work challenges in the style of Anubis: the gateway signs a random seed
//! with an expiry, a difficulty and the client it was issued to; the client searches for a
//! nonce; the gateway checks the answer with one SHA-256 and one HMAC, and no state except
//! the [`ReplayGuard`] that makes each challenge single-use.
//!
//! # The work (what the browser solver implements)
//!
//! ```text
//! input  = UTF-8 bytes of `seed` (32 lower-case hex characters, exactly as sent)
//!          followed by the nonce in decimal ASCII (no sign, no leading zeros, "0" for zero)
//! digest = SHA-256(input)
//! solved ⇔ digest has at least `difficulty` leading zero bits (bit 7 of byte 0 first)
//! ```
//!
//! Example: seed `000102030405060708090a0b0c0d0e0f`, nonce `4817` hashes
//! `"000102030405060708090a0b0c0d0e0f4817"`. Text rather than binary input because
//! `TextEncoder` + string concatenation is all a JavaScript solver needs, and at most 52
//! bytes it is still one SHA-256 block for the verifier. Decimal nonces stay exact in a JS
//! number up to 2^53, far beyond any difficulty we issue.
//!
//! PoW prices access; it does not prove a human. A solved challenge should only buy a
//! short, bound, budgeted [`crate::clearance::Clearance`], and the client stays subject to
//! every rate limit.

use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::cidr::Cidr;
use crate::client::Client;
use crate::gcra::millis;
use crate::replay::{ReplayError, ReplayGuard};
use crate::signer::{Purpose, SealError, Signer, random_bytes};

/// Highest difficulty issued: 2^32 expected hashes is hours in a browser already.
pub const MAX_DIFFICULTY: u8 = 32;
/// Default time a client has to solve and submit a challenge.
pub const DEFAULT_CHALLENGE_TTL: Duration = Duration::from_secs(120);

const VERSION: u8 = 1;
/// version ‖ seed(16) ‖ expires ms(8) ‖ difficulty(1) ‖ binding(16)
const CHALLENGE_BYTES: usize = 1 + 16 + 8 + 1 + 16;
const SEED_HEX: usize = 32;
/// Longest canonical decimal u64.
const MAX_NONCE_DIGITS: usize = 20;

/// Who a token was issued to: a digest of the client's subnet and user agent. A token
/// carried to another network or another browser is refused. (Mobile clients that change
/// network must solve again; the subnet keeps that rarer than binding to one address.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientBinding {
    digest: [u8; 16],
}

impl std::fmt::Debug for ClientBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Short and not reversible: fine for logs, which must not carry the user agent.
        write!(
            f,
            "ClientBinding({:02x}{:02x}{:02x}{:02x}…)",
            self.digest[0], self.digest[1], self.digest[2], self.digest[3]
        )
    }
}

impl ClientBinding {
    pub fn new(subnet: Cidr, user_agent: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"palisade/shield/binding/v1\0");
        h.update(subnet.to_bytes());
        h.update(user_agent.as_bytes());
        let full: [u8; 32] = h.finalize().into();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        Self { digest }
    }

    /// The binding of `client` with `user_agent`: its subnet, so a client that moves within
    /// its network keeps what it solved.
    pub fn for_client(client: &Client, user_agent: &str) -> Self {
        Self::new(client.subnet(), user_agent)
    }

    pub(crate) fn bytes(&self) -> &[u8; 16] {
        &self.digest
    }

    pub(crate) fn matches(&self, other: &[u8]) -> bool {
        self.digest.ct_eq(other).into()
    }
}

/// A challenge to send to the client (as JSON, a page, or headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Opaque signed token; the client returns it with its nonce.
    pub token: String,
    /// The seed the client hashes: 32 lower-case hex characters.
    pub seed: String,
    pub difficulty: u8,
    /// Since the Unix epoch.
    pub expires_at: Duration,
}

/// A verified solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solved {
    pub seed: [u8; 16],
    pub difficulty: u8,
    /// Since the Unix epoch; the replay guard must remember the seed until then.
    pub expires_at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    #[error("the challenge token is malformed")]
    Malformed,
    #[error("the challenge token's signature does not verify")]
    Forged,
    #[error("the challenge has expired")]
    Expired,
    #[error("the challenge was issued to another client")]
    WrongClient,
    #[error("the nonce must be a decimal number without leading zeros")]
    BadNonce,
    #[error("the nonce does not meet the challenge's difficulty")]
    InsufficientWork,
    #[error("the challenge was already used")]
    Replayed,
    #[error("too many challenges are being redeemed; retry in {retry_after:?}")]
    Busy { retry_after: Duration },
}

impl PowError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "pow_malformed",
            Self::Forged => "pow_forged",
            Self::Expired => "pow_expired",
            Self::WrongClient => "pow_wrong_client",
            Self::BadNonce => "pow_bad_nonce",
            Self::InsufficientWork => "pow_insufficient_work",
            Self::Replayed => "pow_replayed",
            Self::Busy { .. } => "pow_busy",
        }
    }
}

impl From<SealError> for PowError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Malformed => Self::Malformed,
            SealError::Forged => Self::Forged,
        }
    }
}

impl From<ReplayError> for PowError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => Self::Replayed,
            ReplayError::Expired => Self::Expired,
            ReplayError::Full { retry_after } => Self::Busy { retry_after },
        }
    }
}

/// Issues and verifies challenges (and clearances, see [`crate::clearance`]).
#[derive(Debug, Clone)]
pub struct PowIssuer {
    pub(crate) signer: Signer,
    challenge_ttl: Duration,
}

impl PowIssuer {
    /// `key` is a 32-byte secret shared by every gateway node.
    pub fn new(key: [u8; 32]) -> Self {
        Self::from_signer(Signer::new(key))
    }

    /// With a signer that may also accept a previous key during rotation.
    pub fn from_signer(signer: Signer) -> Self {
        Self { signer, challenge_ttl: DEFAULT_CHALLENGE_TTL }
    }

    pub fn with_challenge_ttl(mut self, ttl: Duration) -> Self {
        self.challenge_ttl = ttl;
        self
    }

    /// A fresh challenge for `binding`; `difficulty` is clamped to [`MAX_DIFFICULTY`].
    pub fn challenge(&self, binding: &ClientBinding, difficulty: u8, now: Duration) -> Challenge {
        self.challenge_with_seed(random_bytes::<16>(), binding, difficulty, now)
    }

    /// [`Self::challenge`] with a given seed, for tests and benchmarks. Production code must
    /// use random seeds: a predictable seed can be solved in advance.
    pub fn challenge_with_seed(
        &self,
        seed: [u8; 16],
        binding: &ClientBinding,
        difficulty: u8,
        now: Duration,
    ) -> Challenge {
        let difficulty = difficulty.min(MAX_DIFFICULTY);
        let expires_at = now.saturating_add(self.challenge_ttl);
        let mut p = [0u8; CHALLENGE_BYTES];
        p[0] = VERSION;
        p[1..17].copy_from_slice(&seed);
        p[17..25].copy_from_slice(&millis(expires_at).to_be_bytes());
        p[25] = difficulty;
        p[26..42].copy_from_slice(binding.bytes());
        Challenge {
            token: self.signer.seal(Purpose::PowChallenge, &p),
            seed: String::from_utf8_lossy(&hex(&seed)).into_owned(),
            difficulty,
            expires_at: Duration::from_millis(millis(expires_at)),
        }
    }

    /// Checks a solution: signature (constant time), expiry, client binding, then one
    /// SHA-256 for the work. Does not make the challenge single-use: see [`Self::redeem`].
    pub fn verify(&self, token: &str, nonce: &str, binding: &ClientBinding, now: Duration) -> Result<Solved, PowError> {
        let p: [u8; CHALLENGE_BYTES] = self.signer.open(Purpose::PowChallenge, token)?;
        if p[0] != VERSION {
            return Err(PowError::Malformed);
        }
        let mut seed = [0u8; 16];
        seed.copy_from_slice(&p[1..17]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&p[17..25]);
        let expires_ms = u64::from_be_bytes(exp);
        if millis(now) >= expires_ms {
            return Err(PowError::Expired);
        }
        if !binding.matches(&p[26..42]) {
            return Err(PowError::WrongClient);
        }
        let difficulty = p[25];
        if !is_canonical_nonce(nonce) {
            return Err(PowError::BadNonce);
        }
        let mut input = [0u8; SEED_HEX + MAX_NONCE_DIGITS];
        input[..SEED_HEX].copy_from_slice(&hex(&seed));
        input[SEED_HEX..SEED_HEX + nonce.len()].copy_from_slice(nonce.as_bytes());
        let digest: [u8; 32] = Sha256::digest(&input[..SEED_HEX + nonce.len()]).into();
        if leading_zero_bits(&digest) < u32::from(difficulty) {
            return Err(PowError::InsufficientWork);
        }
        Ok(Solved { seed, difficulty, expires_at: Duration::from_millis(expires_ms) })
    }

    /// [`Self::verify`], then claims the seed in `guard` so the same challenge cannot pass
    /// twice. Only valid solutions reach the guard, so filling it costs real work.
    pub fn redeem(
        &self,
        token: &str,
        nonce: &str,
        binding: &ClientBinding,
        guard: &ReplayGuard,
        now: Duration,
    ) -> Result<Solved, PowError> {
        let solved = self.verify(token, nonce, binding, now)?;
        guard.claim(&solved.seed, solved.expires_at, now)?;
        Ok(solved)
    }
}

fn hex(bytes: &[u8; 16]) -> [u8; SEED_HEX] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; SEED_HEX];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    out
}

/// Decimal, no sign, no leading zeros, fits in u64: one spelling per number.
fn is_canonical_nonce(text: &str) -> bool {
    let b = text.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NONCE_DIGITS
        && b.iter().all(u8::is_ascii_digit)
        && (b.len() == 1 || b[0] != b'0')
        && text.parse::<u64>().is_ok()
}

/// Leading zero bits of a digest, most significant bit of the first byte first.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut n = 0;
    for &b in digest {
        if b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// SHA-256 of `seed` followed by the decimal `nonce`: the function the client inverts.
pub fn work_hash(seed: &str, nonce: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update(nonce.to_string().as_bytes());
    h.finalize().into()
}

/// Searches nonces `start, start+1, …` (at most `attempts` of them) for one whose
/// [`work_hash`] has `difficulty` leading zero bits. Expected work: 2^difficulty hashes.
/// Split `start` ranges across threads to solve in parallel.
pub fn solve_range(seed: &str, difficulty: u8, start: u64, attempts: u64) -> Option<u64> {
    // The seed is absorbed once; each attempt clones that state and adds the digits,
    // written right-aligned into a scratch array (no allocation per attempt).
    let mut prefix = Sha256::new();
    prefix.update(seed.as_bytes());
    let mut digits = [0u8; MAX_NONCE_DIGITS];
    let mut nonce = start;
    for _ in 0..attempts {
        let mut n = nonce;
        let mut at = MAX_NONCE_DIGITS;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut h = prefix.clone();
        h.update(&digits[at..]);
        let digest: [u8; 32] = h.finalize().into();
        if leading_zero_bits(&digest) >= u32::from(difficulty) {
            return Some(nonce);
        }
        nonce = nonce.checked_add(1)?;
    }
    None
}

/// Searches from nonce 0 until a solution is found (what `palisade pow solve` and the tests
/// use). `None` only if no u64 nonce works, which for difficulty ≤ 32 does not happen.
pub fn solve(seed: &str, difficulty: u8) -> Option<u64> {
    solve_range(seed, difficulty, 0, u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::SubnetPrefixes;
    use proptest::prelude::*;

    const NOW: Duration = Duration::from_secs(1_700_000_000);
    const KEY: [u8; 32] = [42; 32];

    fn binding(ip: &str, ua: &str) -> ClientBinding {
        ClientBinding::for_client(&Client::new(ip.parse().expect("ip"), SubnetPrefixes::default()), ua)
    }

    fn solved_challenge(d: u8) -> (PowIssuer, Challenge, String, ClientBinding) {
        let issuer = PowIssuer::new(KEY);
        let b = binding("203.0.113.7", "Mozilla/5.0");
        let c = issuer.challenge(&b, d, NOW);
        let nonce = solve(&c.seed, c.difficulty).expect("solvable").to_string();
        (issuer, c, nonce, b)
    }

    #[test]
    fn the_documented_hash_input_is_what_verify_checks() {
        let seed: [u8; 16] = std::array::from_fn(|i| i as u8);
        let issuer = PowIssuer::new(KEY);
        let b = binding("203.0.113.7", "ua");
        let c = issuer.challenge_with_seed(seed, &b, 8, NOW);
        assert_eq!(c.seed, "000102030405060708090a0b0c0d0e0f");
        let nonce = solve(&c.seed, 8).expect("solvable");
        let manual: [u8; 32] = Sha256::digest(format!("{}{}", c.seed, nonce).as_bytes()).into();
        assert!(leading_zero_bits(&manual) >= 8);
        assert_eq!(manual, work_hash(&c.seed, nonce));
        assert!(issuer.verify(&c.token, &nonce.to_string(), &b, NOW).is_ok());
    }

    #[test]
    fn solutions_verify_once() {
        let (issuer, c, nonce, b) = solved_challenge(10);
        let guard = ReplayGuard::new(1024);
        let s = issuer.redeem(&c.token, &nonce, &b, &guard, NOW).expect("valid solution");
        assert_eq!((s.difficulty, s.expires_at), (10, c.expires_at));
        assert_eq!(issuer.redeem(&c.token, &nonce, &b, &guard, NOW), Err(PowError::Replayed));
        // A different (also valid) nonce for the same challenge is still a replay.
        let other = solve_range(&c.seed, 10, nonce.parse::<u64>().expect("n") + 1, u64::MAX).expect("another");
        assert_eq!(issuer.redeem(&c.token, &other.to_string(), &b, &guard, NOW), Err(PowError::Replayed));
    }

    #[test]
    fn forged_expired_misbound_and_lazy_answers_are_refused() {
        let (issuer, c, nonce, b) = solved_challenge(12);
        assert_eq!(issuer.verify(&c.token, &nonce, &b, c.expires_at), Err(PowError::Expired));
        assert_eq!(issuer.verify(&c.token, &nonce, &binding("203.0.113.7", "curl/8"), NOW), Err(PowError::WrongClient));
        assert_eq!(
            issuer.verify(&c.token, &nonce, &binding("198.51.100.7", "Mozilla/5.0"), NOW),
            Err(PowError::WrongClient)
        );
        assert!(issuer.verify(&c.token, &nonce, &binding("203.0.113.200", "Mozilla/5.0"), NOW).is_ok(), "same /24");
        assert_eq!(PowIssuer::new([1; 32]).verify(&c.token, &nonce, &b, NOW), Err(PowError::Forged));
        assert_eq!(issuer.verify("", &nonce, &b, NOW), Err(PowError::Malformed));
        assert_eq!(issuer.verify(&"A".repeat(10_000), &nonce, &b, NOW), Err(PowError::Malformed));
        for bad in ["", "-1", "+1", "01", "1.0", " 1", "18446744073709551616", "٣"] {
            assert_eq!(issuer.verify(&c.token, bad, &b, NOW), Err(PowError::BadNonce), "{bad}");
        }
        // A nonce that does not meet the difficulty (search for one with a 1 leading bit).
        let lazy = (0u64..).find(|n| work_hash(&c.seed, *n)[0] & 0x80 != 0).expect("exists");
        assert_eq!(issuer.verify(&c.token, &lazy.to_string(), &b, NOW), Err(PowError::InsufficientWork));
        // A clearance-purpose token with the same key is not a challenge.
        let clearance = issuer.issue_clearance(&b, Duration::from_secs(60), 10, NOW);
        assert_eq!(issuer.verify(&clearance, &nonce, &b, NOW), Err(PowError::Malformed));
    }

    #[test]
    fn difficulty_is_clamped_and_zero_always_passes() {
        let issuer = PowIssuer::new(KEY);
        let b = binding("10.0.0.1", "x");
        assert_eq!(issuer.challenge(&b, 200, NOW).difficulty, MAX_DIFFICULTY);
        let c = issuer.challenge(&b, 0, NOW);
        assert!(issuer.verify(&c.token, "0", &b, NOW).is_ok());
    }

    #[test]
    fn leading_zero_bits_counts_from_the_top() {
        assert_eq!(leading_zero_bits(&[0, 0, 0x80]), 16);
        assert_eq!(leading_zero_bits(&[0, 0x01]), 15);
        assert_eq!(leading_zero_bits(&[0; 4]), 32);
        assert_eq!(leading_zero_bits(&[0xff]), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn solve_then_verify_succeeds(seed in any::<[u8; 16]>(), d in 0u8..=10, ua in "\\PC{0,40}") {
            let issuer = PowIssuer::new(KEY);
            let b = binding("2001:db8::1", &ua);
            let c = issuer.challenge_with_seed(seed, &b, d, NOW);
            let nonce = solve(&c.seed, d).ok_or_else(|| TestCaseError::fail("unsolved"))?;
            prop_assert_eq!(issuer.verify(&c.token, &nonce.to_string(), &b, NOW).map(|s| s.seed), Ok(seed));
            prop_assert_eq!(
                issuer.verify(&c.token, &nonce.to_string(), &binding("2001:db8:0:1::1", &ua), NOW),
                Err(PowError::WrongClient)
            );
        }

        #[test]
        fn any_bit_flip_in_the_token_is_refused(bit in 0usize..(CHALLENGE_BYTES + 32) * 8, text_bit in any::<proptest::sample::Index>()) {
            let (issuer, c, nonce, b) = solved_challenge(4);
            use base64::Engine;
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut raw = engine.decode(&c.token).map_err(|e| TestCaseError::fail(e.to_string()))?;
            raw[bit / 8] ^= 1 << (bit % 8);
            let flipped = engine.encode(&raw);
            prop_assert!(issuer.verify(&flipped, &nonce, &b, NOW).is_err());
            // Flipping a bit of the text itself: invalid base64, non-canonical, or forged.
            let mut text = c.token.clone().into_bytes();
            let i = text_bit.index(text.len());
            text[i] ^= 1 << (bit % 7);
            let text = String::from_utf8_lossy(&text).into_owned();
            prop_assert!(issuer.verify(&text, &nonce, &b, NOW).is_err());
        }

        #[test]
        fn verify_never_panics(token in "\\PC{0,120}", nonce in "\\PC{0,24}") {
            let issuer = PowIssuer::new(KEY);
            let _ = issuer.verify(&token, &nonce, &binding("10.0.0.1", ""), NOW);
        }
    }
}
