//! How many one-time codes may go to one account, or to one phone number or address,
//! in a window: each text message costs the operator money and each e-mail
//! reputation, and a fresh code must never buy fresh guesses. Bounded memory: when
//! full, windows that have ended are forgotten first, then everything (which errs on
//! the side of sending). The same budget keyed by country or number prefix caps what
//! one destination range may cost.
//!
//! [`ConversionBreaker`] watches what codes buy: SMS pumping (toll fraud) sends codes to
//! premium ranges that never enter them, so when the share of codes entered for a prefix,
//! country or subnet collapses over a sliding window, sends there first need a
//! high-difficulty proof of work, then pause.

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

/// What sends to one prefix, country or subnet need now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendGate {
    #[default]
    Open,
    /// Conversion is low: a sender must solve a high-difficulty proof of work first.
    ProofOfWork,
    /// Conversion has collapsed: no sends until it recovers.
    Paused,
}

/// A key's gate and the (sliding-window) counts it was judged on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub gate: SendGate,
    pub sent: f64,
    pub verified: f64,
}

/// When the breaker acts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    pub window: Duration,
    /// Sends in the window before conversion is judged at all.
    pub min_sends: u32,
    /// Below this share of codes entered, sends need a proof of work...
    pub pow_below: f64,
    /// ...and below this one they pause.
    pub pause_below: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { window: Duration::from_secs(900), min_sends: 20, pow_below: 0.3, pause_below: 0.1 }
    }
}

/// Codes sent and codes entered per key over a sliding window (the current fixed window
/// plus the previous one weighted by how much of it still overlaps). Bounded like
/// [`SendBudget`]: when full, idle keys go first, then everything (erring on sending).
pub struct ConversionBreaker {
    config: BreakerConfig,
    window_ms: u64,
    capacity: usize,
    hasher: RandomState,
    entries: Mutex<HashMap<u64, Counts>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    start: u64,
    sent: [u32; 2],
    verified: [u32; 2],
    /// The gate last judged: a held key is released only once half its evidence has slid
    /// out (or its codes are entered again), so it does not flap at `min_sends`.
    gate: SendGate,
}

impl Counts {
    /// Moves the window forward to the one holding `now_ms`: index 1 is the current window.
    fn roll(&mut self, now_ms: u64, window_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.start) / window_ms;
        if elapsed == 0 {
            return;
        }
        if elapsed == 1 {
            self.sent = [self.sent[1], 0];
            self.verified = [self.verified[1], 0];
        } else {
            self.sent = [0, 0];
            self.verified = [0, 0];
        }
        self.start += elapsed * window_ms;
    }

    /// Sends and entries over the sliding window ending at `now_ms`.
    fn estimate(&self, now_ms: u64, window_ms: u64) -> (f64, f64) {
        let overlap = 1.0 - (now_ms.saturating_sub(self.start) as f64 / window_ms as f64).min(1.0);
        let weigh = |c: [u32; 2]| f64::from(c[0]) * overlap + f64::from(c[1]);
        (weigh(self.sent), weigh(self.verified))
    }
}

impl ConversionBreaker {
    pub fn new(config: BreakerConfig, capacity: usize) -> ConversionBreaker {
        ConversionBreaker {
            window_ms: u64::try_from(config.window.as_millis()).unwrap_or(u64::MAX).max(1),
            config,
            capacity,
            hasher: RandomState::new(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// What a send to `key` needs at `now_ms`.
    pub fn gate<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) -> SendGate {
        self.reading(key, now_ms).gate
    }

    /// The gate of `key` at `now_ms`, with the sends and entries it was judged on.
    pub fn reading<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) -> Reading {
        let digest = self.hasher.hash_one(key);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(counts) = entries.get_mut(&digest) else {
            return Reading { gate: SendGate::Open, sent: 0.0, verified: 0.0 };
        };
        counts.roll(now_ms, self.window_ms);
        let (sent, verified) = counts.estimate(now_ms, self.window_ms);
        let evidence = match counts.gate {
            SendGate::Open => f64::from(self.config.min_sends),
            _ => f64::from(self.config.min_sends) / 2.0,
        };
        let gate = if sent < evidence {
            SendGate::Open
        } else if verified / sent < self.config.pause_below {
            SendGate::Paused
        } else if verified / sent < self.config.pow_below {
            SendGate::ProofOfWork
        } else {
            SendGate::Open
        };
        counts.gate = gate;
        Reading { gate, sent, verified }
    }

    /// A code was sent to `key`.
    pub fn sent<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) {
        self.count(key, now_ms, |c| c.sent[1] = c.sent[1].saturating_add(1));
    }

    /// A code sent to `key` was entered correctly.
    pub fn verified<K: Hash + ?Sized>(&self, key: &K, now_ms: u64) {
        self.count(key, now_ms, |c| c.verified[1] = c.verified[1].saturating_add(1));
    }

    fn count<K: Hash + ?Sized>(&self, key: &K, now_ms: u64, add: impl FnOnce(&mut Counts)) {
        let digest = self.hasher.hash_one(key);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            let idle = 2 * self.window_ms;
            entries.retain(|_, c| now_ms.saturating_sub(c.start) < idle);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        let window_start = now_ms - now_ms % self.window_ms;
        let counts = entries.entry(digest).or_insert(Counts { start: window_start, ..Counts::default() });
        counts.roll(now_ms, self.window_ms);
        add(counts);
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

    const MINUTE: u64 = 60_000;

    #[test]
    fn collapsing_conversion_demands_work_then_pauses_and_recovery_reopens() {
        let breaker = ConversionBreaker::new(BreakerConfig::default(), 100);
        let t = 1_000 * MINUTE;
        // Ordinary traffic: most codes are entered.
        for i in 0..40 {
            breaker.sent("+86138", t);
            if i % 4 != 0 {
                breaker.verified("+86138", t);
            }
        }
        assert_eq!(breaker.gate("+86138", t), SendGate::Open);
        // A premium range: codes go out, few come back.
        for i in 0..20 {
            breaker.sent("+88213", t);
            if i % 5 == 0 {
                breaker.verified("+88213", t);
            }
        }
        assert_eq!(breaker.gate("+88213", t), SendGate::ProofOfWork, "20% converted");
        for _ in 0..30 {
            breaker.sent("+88213", t);
        }
        assert_eq!(breaker.gate("+88213", t), SendGate::Paused, "8% converted");
        assert_eq!(breaker.gate("+86138", t), SendGate::Open, "other prefixes unaffected");
        // Two quiet windows later the evidence has slid out.
        assert_eq!(breaker.gate("+88213", t + 30 * MINUTE), SendGate::Open);
    }

    #[test]
    fn a_held_key_stays_held_until_half_its_evidence_has_slid_out() {
        let config = BreakerConfig { min_sends: 10, ..BreakerConfig::default() };
        let breaker = ConversionBreaker::new(config, 100);
        let window = 15 * MINUTE;
        let start = window * 100;
        // Ten texts just before a window's start, judged just after it.
        for _ in 0..10 {
            breaker.sent("x", start - 1);
        }
        assert_eq!(breaker.gate("x", start - 1), SendGate::Paused);
        // A minute on they weigh 9.3: under the ten it took to judge, but held still...
        assert_eq!(breaker.gate("x", start + MINUTE), SendGate::Paused);
        // ...until under five.
        assert_eq!(breaker.gate("x", start + 7 * MINUTE), SendGate::Paused);
        assert_eq!(breaker.gate("x", start + 8 * MINUTE), SendGate::Open);
        // Released, it needs the full ten again.
        for _ in 0..4 {
            breaker.sent("x", start + 8 * MINUTE);
        }
        assert_eq!(breaker.gate("x", start + 8 * MINUTE), SendGate::Open, "8.7 texts, none entered");
    }

    #[test]
    fn the_window_slides_instead_of_resetting() {
        let config = BreakerConfig { min_sends: 10, ..BreakerConfig::default() };
        let breaker = ConversionBreaker::new(config, 100);
        let start = 15 * MINUTE * 100;
        for _ in 0..20 {
            breaker.sent("x", start + MINUTE);
        }
        assert_eq!(breaker.gate("x", start + MINUTE), SendGate::Paused);
        // Just into the next fixed window most of the bad window still counts.
        assert_eq!(breaker.gate("x", start + 16 * MINUTE), SendGate::Paused);
        // Near its end the weight has fallen under min_sends.
        assert_eq!(breaker.gate("x", start + 29 * MINUTE), SendGate::Open);
    }

    #[test]
    fn breaker_memory_stays_bounded() {
        let breaker = ConversionBreaker::new(BreakerConfig::default(), 8);
        for key in 0..1_000u64 {
            breaker.sent(&key, key);
            assert!(breaker.entries.lock().unwrap().len() <= 8);
        }
    }
}
