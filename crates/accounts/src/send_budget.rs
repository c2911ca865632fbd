//! How many one-time codes may go to one account, or to one phone number or address,
//! in a window: each text message costs the operator money and each e-mail
//! reputation, and a fresh code must never buy fresh guesses. Bounded memory: when
//! full, windows that have ended are forgotten first, then everything (which errs on
//! the side of sending).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::Duration;

/// Sends per key per window.
pub struct SendBudget {
    window_ms: u64,
    per_window: u32,
    capacity: usize,
    hasher: RandomState,
    /// Key digest → (window start, sends in it).
    entries: Mutex<HashMap<u64, (u64, u32)>>,
}

impl SendBudget {
    pub fn new(per_window: u32, window: Duration, capacity: usize) -> SendBudget {
        SendBudget {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            per_window,
            capacity,
            hasher: RandomState::new(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Count one send to `key` at `now_ms`, or say how long until one is allowed.
    pub fn spend<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) -> Result<(), Duration> {
        let digest = self.hasher.hash_one(key);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            let window = self.window_ms;
            entries.retain(|_, (start, _)| now_ms.saturating_sub(*start) < window);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        let (start, sent) = entries.entry(digest).or_insert((now_ms, 0));
        if now_ms.saturating_sub(*start) >= self.window_ms {
            *start = now_ms;
            *sent = 0;
        }
        if *sent >= self.per_window {
            return Err(Duration::from_millis((*start + self.window_ms).saturating_sub(now_ms).max(1000)));
        }
        *sent += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_sends_per_window_then_waits_for_the_next() {
        let budget = SendBudget::new(3, Duration::from_secs(3600), 100);
        for _ in 0..3 {
            assert!(budget.spend("+8613800138000", 1_000).is_ok());
        }
        let wait = budget.spend("+8613800138000", 61_000).unwrap_err();
        assert_eq!(wait, Duration::from_millis(3_600_000 - 60_000));
        assert!(budget.spend("+8613900139000", 61_000).is_ok(), "another key has its own");
        assert!(budget.spend("+8613800138000", 3_601_000).is_ok(), "a new window");
    }

    #[test]
    fn memory_stays_bounded() {
        let budget = SendBudget::new(1, Duration::from_secs(60), 8);
        for key in 0..1_000u64 {
            let _ = budget.spend(&key, 0);
            assert!(budget.entries.lock().unwrap().len() <= 8);
        }
    }
}
