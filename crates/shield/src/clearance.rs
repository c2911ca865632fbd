//! Clearance tokens: what a solved proof-of-work buys. A clearance is signed, bound to the
//! client's subnet and user agent, expires after a short TTL, and carries a request budget
//! that the [`ClearanceLedger`] counts down. Native solvers pass SHA-256 challenges far
//! faster than browsers, so the clearance is deliberately small: it lets a newcomer through
//! the challenge wall for a while, and every rate limit still applies.

use std::time::Duration;

use crate::gcra::millis;
use crate::pow::{ClientBinding, PowIssuer};
use crate::signer::{Purpose, SealError, random_bytes};
use crate::table::{BoundedTable, Key, Slot};

const VERSION: u8 = 1;
/// version ‖ id(8) ‖ issued ms(8) ‖ expires ms(8) ‖ budget(4) ‖ binding(16)
const CLEARANCE_BYTES: usize = 1 + 8 + 8 + 8 + 4 + 16;
/// Longest clearance issued: one that outlives a day is a standing credential, not a pass.
pub const MAX_CLEARANCE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClearanceError {
    #[error("the clearance token is malformed")]
    Malformed,
    #[error("the clearance token's signature does not verify")]
    Forged,
    #[error("the clearance has expired")]
    Expired,
    #[error("the clearance was issued to another client")]
    WrongClient,
    #[error("the clearance's request budget is spent")]
    BudgetSpent,
}

impl ClearanceError {
    /// Stable machine-readable reason. All of them mean "challenge again".
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "clearance_malformed",
            Self::Forged => "clearance_forged",
            Self::Expired => "clearance_expired",
            Self::WrongClient => "clearance_wrong_client",
            Self::BudgetSpent => "clearance_budget_spent",
        }
    }
}

impl From<SealError> for ClearanceError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Malformed => Self::Malformed,
            SealError::Forged => Self::Forged,
        }
    }
}

/// A verified clearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clearance {
    /// Random; keys the budget in the [`ClearanceLedger`].
    pub id: u64,
    /// Unix time.
    pub issued_at: Duration,
    /// Unix time.
    pub expires_at: Duration,
    /// Requests this clearance may make in its lifetime.
    pub budget: u32,
}

impl PowIssuer {
    /// A clearance for `binding`, valid for `ttl` (clamped to 1 s ..= [`MAX_CLEARANCE_TTL`])
    /// and `budget` requests (at least 1). Send it as a cookie.
    pub fn issue_clearance(&self, binding: &ClientBinding, ttl: Duration, budget: u32, now: Duration) -> String {
        let ttl = ttl.clamp(Duration::from_secs(1), MAX_CLEARANCE_TTL);
        let mut p = [0u8; CLEARANCE_BYTES];
        p[0] = VERSION;
        p[1..9].copy_from_slice(&random_bytes::<8>());
        p[9..17].copy_from_slice(&millis(now).to_be_bytes());
        p[17..25].copy_from_slice(&millis(now.saturating_add(ttl)).to_be_bytes());
        p[25..29].copy_from_slice(&budget.max(1).to_be_bytes());
        p[29..45].copy_from_slice(binding.bytes());
        self.signer.seal(Purpose::Clearance, &p)
    }

    /// Checks signature (constant time), expiry and binding. The budget is counted
    /// separately with [`ClearanceLedger::spend`].
    pub fn check_clearance(
        &self,
        token: &str,
        binding: &ClientBinding,
        now: Duration,
    ) -> Result<Clearance, ClearanceError> {
        let p: [u8; CLEARANCE_BYTES] = self.signer.open(Purpose::Clearance, token)?;
        if p[0] != VERSION {
            return Err(ClearanceError::Malformed);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut budget = [0u8; 4];
        budget.copy_from_slice(&p[25..29]);
        let c = Clearance {
            id: u64_at(1),
            issued_at: Duration::from_millis(u64_at(9)),
            expires_at: Duration::from_millis(u64_at(17)),
            budget: u32::from_be_bytes(budget),
        };
        if millis(now) >= millis(c.expires_at) {
            return Err(ClearanceError::Expired);
        }
        if !binding.matches(&p[29..45]) {
            return Err(ClearanceError::WrongClient);
        }
        Ok(c)
    }
}

/// Requests spent by one clearance, remembered until it expires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetUse {
    expires_ms: u64,
    used: u32,
}

impl Slot for BudgetUse {
    fn retention(&self, now: Duration) -> u64 {
        // An expired clearance is refused by its signature check; its count is worthless.
        if self.expires_ms <= millis(now) { 0 } else { u64::from(self.used) }
    }
}

/// Budget counts of live clearances in a fixed-size [`BoundedTable`] (24 bytes per entry).
/// Eviction errs toward the client: an evicted clearance gets its budget back. A clearance
/// costs a solved challenge, so evicting on purpose is dearer than solving again.
pub type ClearanceLedger = BoundedTable<BudgetUse>;

impl BoundedTable<BudgetUse> {
    /// Spends one request of `clearance`'s budget; returns how many remain.
    pub fn spend(&self, clearance: &Clearance, now: Duration) -> Result<u32, ClearanceError> {
        self.update(Key::clearance(clearance.id), now, |u| {
            u.expires_ms = millis(clearance.expires_at);
            if u.used >= clearance.budget {
                return Err(ClearanceError::BudgetSpent);
            }
            u.used += 1;
            Ok(clearance.budget - u.used)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Duration = Duration::from_secs(1_700_000_000);

    fn binding(ua: &str) -> ClientBinding {
        ClientBinding::for_client(&crate::Client::new("2001:db8:1:2::9".parse().expect("ip"), Default::default()), ua)
    }

    #[test]
    fn clearances_check_expiry_binding_and_budget() {
        let issuer = PowIssuer::new([3; 32]);
        let b = binding("Mozilla/5.0");
        let token = issuer.issue_clearance(&b, Duration::from_secs(600), 3, NOW);
        let c = issuer.check_clearance(&token, &b, NOW).expect("valid");
        assert_eq!((c.budget, c.expires_at - c.issued_at), (3, Duration::from_secs(600)));
        assert_eq!(issuer.check_clearance(&token, &b, c.expires_at), Err(ClearanceError::Expired));
        assert_eq!(issuer.check_clearance(&token, &binding("curl/8.0"), NOW), Err(ClearanceError::WrongClient));
        assert_eq!(PowIssuer::new([4; 32]).check_clearance(&token, &b, NOW), Err(ClearanceError::Forged));
        assert_eq!(issuer.check_clearance("nope", &b, NOW), Err(ClearanceError::Malformed));

        let ledger = ClearanceLedger::new(1);
        assert_eq!(ledger.spend(&c, NOW), Ok(2));
        assert_eq!(ledger.spend(&c, NOW), Ok(1));
        assert_eq!(ledger.spend(&c, NOW), Ok(0));
        assert_eq!(ledger.spend(&c, NOW), Err(ClearanceError::BudgetSpent));
        let other =
            issuer.check_clearance(&issuer.issue_clearance(&b, Duration::ZERO, 0, NOW), &b, NOW).expect("valid");
        assert_eq!((other.budget, other.expires_at - other.issued_at), (1, Duration::from_secs(1)), "clamped");
        assert_eq!(ledger.spend(&other, NOW), Ok(0));
        assert_eq!(ledger.live(other.expires_at), 1, "the expired one no longer counts");
        assert_eq!(ledger.live(c.expires_at), 0, "expired clearances free their slots");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_bit_flip_in_a_clearance_is_refused(bit in 0usize..(CLEARANCE_BYTES + 32) * 8) {
            use base64::Engine;
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let issuer = PowIssuer::new([5; 32]);
            let b = binding("ua");
            let token = issuer.issue_clearance(&b, Duration::from_secs(60), 10, NOW);
            let mut raw = engine.decode(&token).map_err(|e| TestCaseError::fail(e.to_string()))?;
            raw[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(issuer.check_clearance(&engine.encode(&raw), &b, NOW).is_err());
        }
    }
}
