//! A circuit breaker for one upstream, in three atomics.
//!
//! Closed: traffic flows and consecutive failures are counted. At the threshold
//! it opens: no traffic for `open_ms`. Then it lets exactly one trial request
//! through (half-open); success closes it, failure opens it again. A trial whose
//! outcome is never reported (its client vanished) expires after `open_ms`, so
//! the breaker cannot stay stuck half-open.
//!
//! Time is passed in by the caller (milliseconds from any fixed origin, never 0)
//! so the logic is tested without sleeping.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What the breaker currently lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    open_ms: u64,
    consecutive_failures: AtomicU32,
    /// 0 when closed; otherwise when traffic may be tried again.
    open_until: AtomicU64,
    /// 0 when no trial is running; otherwise when the running trial started.
    trial_started: AtomicU64,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_ms: u64) -> CircuitBreaker {
        CircuitBreaker {
            threshold: threshold.max(1),
            open_ms,
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            trial_started: AtomicU64::new(0),
        }
    }

    pub fn state(&self, now_ms: u64) -> BreakerState {
        match self.open_until.load(Ordering::Relaxed) {
            0 => BreakerState::Closed,
            until if now_ms < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may be sent now. In half-open state this claims the
    /// single trial slot, so call it only for a request that will be sent.
    pub fn try_acquire(&self, now_ms: u64) -> bool {
        match self.state(now_ms) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let started = self.trial_started.load(Ordering::Relaxed);
                let free = started == 0 || now_ms.saturating_sub(started) >= self.open_ms;
                free && self
                    .trial_started
                    .compare_exchange(started, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            }
        }
    }

    pub fn on_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Relaxed);
        self.trial_started.store(0, Ordering::Relaxed);
    }

    pub fn on_failure(&self, now_ms: u64) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let trial_failed = self.trial_started.swap(0, Ordering::AcqRel) != 0;
        if trial_failed || failures >= self.threshold {
            self.open_until.store(now_ms + self.open_ms, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn opens_at_threshold_and_recovers_through_one_trial() {
        let b = CircuitBreaker::new(3, 1_000);
        b.on_failure(10);
        b.on_failure(20);
        assert!(b.try_acquire(30));
        b.on_failure(30);
        assert_eq!(b.state(31), BreakerState::Open);
        assert!(!b.try_acquire(1_029));
        // Half-open: exactly one trial.
        assert!(b.try_acquire(1_030));
        assert!(!b.try_acquire(1_031));
        b.on_success();
        assert_eq!(b.state(1_032), BreakerState::Closed);
        assert!(b.try_acquire(1_033));
    }

    #[test]
    fn a_failed_trial_reopens() {
        let b = CircuitBreaker::new(1, 100);
        b.on_failure(1);
        assert!(b.try_acquire(101));
        b.on_failure(102);
        assert_eq!(b.state(150), BreakerState::Open);
        assert!(b.try_acquire(202));
    }

    #[test]
    fn an_abandoned_trial_expires() {
        let b = CircuitBreaker::new(1, 100);
        b.on_failure(1);
        assert!(b.try_acquire(101)); // the trial's client vanished: no outcome reported
        assert!(!b.try_acquire(150));
        assert!(b.try_acquire(201));
    }

    proptest! {
        /// Whatever the sequence of outcomes, after `threshold` consecutive
        /// failures the breaker refuses traffic until `open_ms` has passed, and a
        /// success always closes it.
        #[test]
        fn never_admits_while_open(threshold in 1u32..6, open_ms in 1u64..500,
                                   events in proptest::collection::vec(any::<bool>(), 0..60)) {
            let b = CircuitBreaker::new(threshold, open_ms);
            let mut now = 1;
            let mut run = 0;
            for ok in events {
                now += 1;
                if ok { b.on_success(); run = 0; } else { b.on_failure(now); run += 1; }
                if run >= threshold {
                    prop_assert_eq!(b.state(now), BreakerState::Open);
                    prop_assert!(!b.try_acquire(now + open_ms - 1));
                } else if run == 0 {
                    prop_assert_eq!(b.state(now), BreakerState::Closed);
                }
            }
        }
    }
}
