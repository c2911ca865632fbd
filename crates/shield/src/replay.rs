//! Single-use memory for signed tokens (proof-of-work challenges, admission passes): the ids
//! already redeemed, each kept until its token expires, in a fixed-size table.
//!
//! Layout: 8-way buckets, each id may sit in one of two buckets (chosen from its random bits)
//! and goes to the emptier one, which keeps buckets evenly filled until the table is nearly
//! full. A slot whose token has expired is free. **Memory bound:** `capacity × 16` bytes,
//! allocated at construction.
//!
//! **When full, new claims are refused** ([`ReplayError::Full`], with the time until the
//! oldest entry in the way expires), never accepted by forgetting an unexpired id. Forgetting
//! would let a client who can fill the table replay the forgotten tokens again and again
//! for as long as they live, turning a bounded cost into unlimited passes. Refusing costs
//! availability only for newcomers still solving challenges (the lowest priority class),
//! only while someone is redeeming more than `capacity` valid solutions per challenge TTL,
//! and each of those solutions cost real work. Size the table above the redemption rate
//! the per-subnet limits allow times the challenge TTL.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::gcra::millis;

const WAYS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("already used")]
    Replayed,
    #[error("the token has expired")]
    Expired,
    #[error("the replay guard is full; retry in {retry_after:?}")]
    Full { retry_after: Duration },
}

#[derive(Debug, Clone, Copy, Default)]
struct Used {
    id: u64,
    /// Unix milliseconds; 0 (or any past time) marks a free slot.
    expires_ms: u64,
}

/// Remembers redeemed token ids until they expire. See the module documentation.
#[derive(Debug)]
pub struct ReplayGuard {
    slots: Mutex<Box<[Used]>>,
    bucket_mask: usize,
}

impl ReplayGuard {
    /// A guard for at least `capacity` live ids (rounded up to a power of two, at least 8).
    pub fn new(capacity: usize) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Self { slots: Mutex::new(vec![Used::default(); buckets * WAYS].into_boxed_slice()), bucket_mask: buckets - 1 }
    }

    pub fn capacity(&self) -> usize {
        (self.bucket_mask + 1) * WAYS
    }

    /// Bytes owned: constant.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.capacity() * size_of::<Used>()
    }

    /// Ids currently remembered (a full scan: for reports).
    pub fn live(&self, now: Duration) -> usize {
        let now = millis(now);
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|u| u.expires_ms > now).count()
    }

    /// Records `token_id` (16 random bytes from a signed token) as used until `expires_at`
    /// (Unix time). Refuses an id already recorded and still live.
    pub fn claim(&self, token_id: &[u8; 16], expires_at: Duration, now: Duration) -> Result<(), ReplayError> {
        let (now_ms, exp_ms) = (millis(now), millis(expires_at));
        if exp_ms <= now_ms {
            return Err(ReplayError::Expired);
        }
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&token_id[..8]);
        hi.copy_from_slice(&token_id[8..]);
        let (id, alt) = (u64::from_le_bytes(lo), u64::from_le_bytes(hi));
        let b1 = (id as usize & self.bucket_mask) * WAYS;
        let b2 = (alt as usize & self.bucket_mask) * WAYS;
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let live = |u: &Used| u.expires_ms > now_ms;
        let mut load = [0usize; 2];
        for (n, start) in [b1, b2].into_iter().enumerate() {
            for u in &slots[start..start + WAYS] {
                if live(u) {
                    if u.id == id {
                        return Err(ReplayError::Replayed);
                    }
                    load[n] += 1;
                }
            }
        }
        let start = if load[1] < load[0] { b2 } else { b1 };
        if let Some(u) = slots[start..start + WAYS].iter_mut().find(|u| !live(u)) {
            *u = Used { id, expires_ms: exp_ms };
            return Ok(());
        }
        let soonest = slots[b1..b1 + WAYS].iter().chain(&slots[b2..b2 + WAYS]).map(|u| u.expires_ms).min();
        let wait_ms = soonest.unwrap_or(now_ms).saturating_sub(now_ms).max(1);
        Err(ReplayError::Full { retry_after: Duration::from_millis(wait_ms) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Duration = Duration::from_secs(1_000_000);
    const TTL: Duration = Duration::from_secs(60);

    fn id(n: u64) -> [u8; 16] {
        // Spread like random ids: different bits select the two buckets.
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        out[8..].copy_from_slice(&n.wrapping_mul(0xc2b2_ae3d_27d4_eb4f).rotate_left(17).to_le_bytes());
        out
    }

    #[test]
    fn ids_are_single_use_until_they_expire() {
        let g = ReplayGuard::new(64);
        assert_eq!(g.claim(&id(1), NOW + TTL, NOW), Ok(()));
        assert_eq!(g.claim(&id(1), NOW + TTL, NOW + TTL / 2), Err(ReplayError::Replayed));
        assert_eq!(g.claim(&id(2), NOW + TTL, NOW), Ok(()));
        assert_eq!(g.claim(&id(3), NOW, NOW), Err(ReplayError::Expired));
        assert_eq!(g.live(NOW), 2);
        assert_eq!(g.live(NOW + TTL), 0, "an expired id is forgotten; its token is refused as expired anyway");
    }

    #[test]
    fn a_full_guard_refuses_and_recovers_when_entries_expire() {
        let g = ReplayGuard::new(64);
        let mut accepted = 0;
        let mut refused = None;
        for n in 0..1_000 {
            match g.claim(&id(n), NOW + TTL, NOW) {
                Ok(()) => accepted += 1,
                Err(ReplayError::Full { retry_after }) => refused = Some(retry_after),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(accepted <= g.capacity());
        assert!(accepted >= g.capacity() * 3 / 4, "two-choice placement fills most slots ({accepted})");
        assert_eq!(refused, Some(TTL));
        for n in 0..1_000 {
            // Every accepted id is still refused as a replay: nothing was forgotten.
            assert_ne!(g.claim(&id(n), NOW + TTL, NOW + Duration::from_secs(1)), Ok(()));
        }
        assert_eq!(g.claim(&id(5_000), NOW + TTL * 3, NOW + TTL), Ok(()));
        assert_eq!(g.memory_bytes() - size_of::<ReplayGuard>(), 64 * 16);
    }

    proptest! {
        /// Against a set with expiry: a claim succeeds exactly when the id is not live in the
        /// model (the capacity is large enough never to fill here).
        #[test]
        fn matches_a_set_with_expiry(ops in proptest::collection::vec((0u64..40, 1u64..30, 0u64..5), 1..300)) {
            let g = ReplayGuard::new(4096);
            let mut model = std::collections::HashMap::new();
            let mut now = NOW;
            for (n, ttl, step) in ops {
                now += Duration::from_secs(step);
                let exp = now + Duration::from_secs(ttl);
                let live = model.get(&n).is_some_and(|e| *e > now);
                let got = g.claim(&id(n), exp, now);
                if live {
                    prop_assert_eq!(got, Err(ReplayError::Replayed));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    model.insert(n, exp);
                }
            }
        }
    }
}
