//! The generic cell rate algorithm: a token bucket kept as one `u64` per source.
//!
//! The state is the *theoretical arrival time* (TAT) in nanoseconds: the moment the source's
//! bucket would be full again. A request costing `c` at time `t` is allowed when
//! `max(TAT, t) + c·T ≤ t + burst·T` (T is the emission interval, the time one token takes
//! to refill), and then `TAT ← max(TAT, t) + c·T`. So at most `burst` requests pass at once
//! and one more per `T` after that: in any window of length `w`, at most `burst + w/T`
//! tokens are spent. A TAT at or before `now` means "bucket full": such state carries no
//! information, so a table may drop it at no cost, and a fresh source starts at TAT 0.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcraError {
    #[error("burst must be at least 1")]
    ZeroBurst,
    #[error("the rate must let at least one token through: count must be at least 1")]
    ZeroCount,
    #[error("the emission interval must be between 1 ns and one year per token")]
    Interval,
    #[error("burst × emission interval must not exceed 100 years")]
    TooLong,
}

/// Longest emission interval accepted: one token per year is already "never".
const MAX_INTERVAL_NS: u64 = 365 * 24 * 3600 * 1_000_000_000;
/// Longest full-refill time accepted; keeps `now + burst·T` far from `u64::MAX` nanoseconds.
const MAX_TAU_NS: u128 = 100 * 365 * 24 * 3600 * 1_000_000_000;

/// Nanoseconds of `d`, saturating (u64 nanoseconds last 584 years).
/// A time as whole milliseconds, saturating (what signed tokens carry).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A rate limit: one token per `emission interval`, at most `burst` tokens saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gcra {
    interval_ns: u64,
    burst: u32,
}

/// The outcome of one [`Gcra::check`], with everything the rate-limit headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst: the most tokens the source can ever hold (`RateLimit-Limit`).
    pub limit: u32,
    /// Whole tokens left after this request (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Until the bucket is full again (`RateLimit-Reset`).
    pub reset_after: Duration,
    /// Until this same request would be allowed (`Retry-After`). `None` when allowed, and
    /// also when it can never be: a cost above the burst. Answer that without `Retry-After`.
    pub retry_after: Option<Duration>,
    /// Time for the whole burst to refill from empty (the policy window).
    pub window: Duration,
}

impl Gcra {
    /// One token per `emission_interval`, up to `burst` at once.
    pub fn new(emission_interval: Duration, burst: u32) -> Result<Self, GcraError> {
        let interval_ns = nanos(emission_interval);
        if burst == 0 {
            return Err(GcraError::ZeroBurst);
        }
        if interval_ns == 0 || interval_ns > MAX_INTERVAL_NS {
            return Err(GcraError::Interval);
        }
        if u128::from(interval_ns) * u128::from(burst) > MAX_TAU_NS {
            return Err(GcraError::TooLong);
        }
        Ok(Self { interval_ns, burst })
    }

    /// `count` tokens per `period` (e.g. 600 per minute), up to `burst` at once.
    pub fn per_period(count: u32, period: Duration, burst: u32) -> Result<Self, GcraError> {
        if count == 0 {
            return Err(GcraError::ZeroCount);
        }
        let interval = period / count;
        Self::new(interval.max(Duration::from_nanos(1)), burst)
    }

    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn tau(&self) -> u128 {
        u128::from(self.interval_ns) * u128::from(self.burst)
    }

    /// Spends `cost` tokens if the source has them, updating `tat`. A cost of 0 only reads.
    pub fn check(&self, tat: &mut u64, now: Duration, cost: u32) -> Decision {
        let now = u128::from(nanos(now));
        let t = u128::from(self.interval_ns);
        let tau = self.tau();
        let base = u128::from(*tat).max(now);
        let new_tat = base + t * u128::from(cost);
        let mut d = Decision {
            allowed: false,
            limit: self.burst,
            remaining: 0,
            reset_after: Duration::ZERO,
            retry_after: None,
            window: duration(tau),
        };
        if new_tat <= now + tau {
            *tat = u64::try_from(new_tat).unwrap_or(u64::MAX);
            d.allowed = true;
            d.remaining = tokens(now + tau - new_tat, t);
            d.reset_after = duration(new_tat - now);
        } else {
            // Not spent: the state stays as it was and the headers describe it.
            d.remaining = tokens((now + tau).saturating_sub(base), t);
            d.reset_after = duration(base - now);
            if cost <= self.burst {
                d.retry_after = Some(duration(new_tat - tau - now));
            }
        }
        d
    }

    /// Spends `cost` tokens whether or not the source has them: for costs known only after
    /// the fact (an inference reply's tokens). The debt is capped at one window beyond an
    /// empty bucket (TAT ≤ now + 2·burst·T), so a huge reply blocks the source for at most
    /// one window rather than for hours.
    pub fn charge(&self, tat: &mut u64, now: Duration, cost: u32) {
        let now = u128::from(nanos(now));
        let base = u128::from(*tat).max(now);
        let cap = now + 2 * self.tau();
        let new_tat = (base + u128::from(self.interval_ns) * u128::from(cost)).min(cap);
        *tat = u64::try_from(new_tat).unwrap_or(u64::MAX);
    }

    /// Gives back `cost` tokens spent by an earlier [`Self::check`] (e.g. a later stage
    /// refused the request after this limit allowed it). Never makes the bucket fuller than
    /// full.
    pub fn refund(&self, tat: &mut u64, now: Duration, cost: u32) {
        let back = self.interval_ns.saturating_mul(u64::from(cost));
        *tat = tat.saturating_sub(back).max(nanos(now).min(*tat));
    }
}

fn duration(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

fn tokens(spare_ns: u128, t: u128) -> u32 {
    u32::try_from(spare_ns / t).unwrap_or(u32::MAX)
}

/// Whole seconds, rounded up: a client told "0" would retry at once.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// An answer for a request that needs no limit (e.g. an allow-listed operator address).
    pub fn unlimited() -> Self {
        Self {
            allowed: true,
            limit: u32::MAX,
            remaining: u32::MAX,
            reset_after: Duration::ZERO,
            retry_after: None,
            window: Duration::ZERO,
        }
    }

    /// Of two decisions for the same request (per-address and per-subnet, say), the one the
    /// client must obey: a refusal over an allowance, the later retry among refusals, the
    /// fewer remaining tokens among allowances.
    pub fn tightest(self, other: Self) -> Self {
        match (self.allowed, other.allowed) {
            (true, false) => other,
            (false, true) => self,
            (false, false) => {
                // A refusal that can never pass beats one with a retry time.
                let key = |d: &Self| d.retry_after.map_or(u128::MAX, |r| r.as_nanos());
                if key(&other) > key(&self) { other } else { self }
            }
            (true, true) => {
                if other.remaining < self.remaining {
                    other
                } else {
                    self
                }
            }
        }
    }

    /// `Retry-After` in whole seconds (at least 1), when a retry can succeed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|r| ceil_secs(r).max(1))
    }

    /// Response headers: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds
    /// until full, draft-ietf-httpapi-ratelimit-headers), `RateLimit-Policy` (`burst;w=secs`),
    /// and `Retry-After` when refused with a possible retry. Empty for [`Self::unlimited`].
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        if self.limit == u32::MAX {
            return Vec::new();
        }
        let mut h = vec![
            ("RateLimit-Limit", self.limit.to_string()),
            ("RateLimit-Remaining", self.remaining.to_string()),
            ("RateLimit-Reset", ceil_secs(self.reset_after).to_string()),
            ("RateLimit-Policy", format!("{};w={}", self.limit, ceil_secs(self.window).max(1))),
        ];
        if let Some(secs) = self.retry_after_secs() {
            h.push(("Retry-After", secs.to_string()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn limit(interval_ms: u64, burst: u32) -> Gcra {
        Gcra::new(MS * interval_ms as u32, burst).expect("valid test limit")
    }

    #[test]
    fn burst_passes_then_one_per_interval() {
        let g = limit(100, 3);
        let mut tat = 0;
        let t = Duration::from_secs(50);
        let got: Vec<_> = (0..4).map(|_| g.check(&mut tat, t, 1)).collect();
        assert_eq!(got.iter().map(|d| d.allowed).collect::<Vec<_>>(), [true, true, true, false]);
        assert_eq!(got.iter().map(|d| d.remaining).collect::<Vec<_>>(), [2, 1, 0, 0]);
        assert_eq!(got[3].retry_after, Some(MS * 100));
        assert_eq!(got[2].reset_after, MS * 300);
        assert!(!g.check(&mut tat, t + MS * 99, 1).allowed);
        assert!(g.check(&mut tat, t + MS * 100, 1).allowed);
    }

    #[test]
    fn costs_above_the_burst_are_never_allowed_and_say_so() {
        let g = limit(10, 5);
        let mut tat = 0;
        let d = g.check(&mut tat, Duration::from_secs(1), 6);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, None);
        assert_eq!(d.remaining, 5);
        assert_eq!(tat, 0, "a refusal spends nothing");
        assert!(!d.headers().iter().any(|(name, _)| *name == "Retry-After"));
    }

    #[test]
    fn zero_cost_reads_without_spending() {
        let g = limit(10, 5);
        let mut tat = 0;
        g.check(&mut tat, Duration::from_secs(1), 2);
        let before = tat;
        let d = g.check(&mut tat, Duration::from_secs(1), 0);
        assert!(d.allowed && d.remaining == 3 && tat == before);
    }

    #[test]
    fn charge_and_refund() {
        let g = limit(10, 5);
        let now = Duration::from_secs(1);
        let mut tat = 0;
        g.charge(&mut tat, now, 1_000_000);
        assert_eq!(Duration::from_nanos(tat) - now, MS * 100, "debt capped at two windows");
        assert!(!g.check(&mut tat, now, 1).allowed);
        let mut tat = 0;
        g.check(&mut tat, now, 3);
        g.refund(&mut tat, now, 3);
        assert_eq!(g.check(&mut tat, now, 0).remaining, 5);
        g.refund(&mut tat, now, 3);
        assert_eq!(g.check(&mut tat, now, 0).remaining, 5, "never fuller than full");
    }

    #[test]
    fn headers_are_whole_seconds_rounded_up() {
        let g = Gcra::per_period(60, Duration::from_secs(60), 10).expect("valid");
        let mut tat = 0;
        let now = Duration::from_secs(100);
        for _ in 0..10 {
            g.check(&mut tat, now, 1);
        }
        let d = g.check(&mut tat, now + MS * 10, 1);
        let h = d.headers();
        let get = |name| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("RateLimit-Limit"), Some("10"));
        assert_eq!(get("RateLimit-Remaining"), Some("0"));
        assert_eq!(get("RateLimit-Reset"), Some("10"));
        assert_eq!(get("RateLimit-Policy"), Some("10;w=10"));
        assert_eq!(get("Retry-After"), Some("1"));
        assert!(Decision::unlimited().headers().is_empty());
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(Gcra::new(MS, 0), Err(GcraError::ZeroBurst));
        assert_eq!(Gcra::new(Duration::ZERO, 1), Err(GcraError::Interval));
        assert_eq!(Gcra::per_period(0, MS, 1), Err(GcraError::ZeroCount));
        assert_eq!(Gcra::new(Duration::from_secs(3600 * 24 * 365), u32::MAX), Err(GcraError::TooLong));
        assert!(Gcra::per_period(u32::MAX, MS, 1).is_ok(), "sub-nanosecond intervals round up to 1 ns");
    }

    #[test]
    fn tightest_prefers_refusals_and_scarcity() {
        let g = limit(100, 3);
        let now = Duration::from_secs(5);
        let (mut a, mut b) = (0, 0);
        let fresh = g.check(&mut a, now, 1);
        g.check(&mut b, now, 2);
        let scarce = g.check(&mut b, now, 0);
        assert_eq!(fresh.tightest(scarce), scarce);
        let refused = g.check(&mut b, now, 3);
        assert_eq!(scarce.tightest(refused), refused);
        let never = g.check(&mut b, now, 4);
        assert_eq!(refused.tightest(never), never);
    }

    /// Sorted arrival times (ms) with costs.
    fn arrivals() -> impl Strategy<Value = Vec<(u64, u32)>> {
        proptest::collection::vec((0u64..200, 1u32..4), 1..200).prop_map(|gaps| {
            let mut t = 0;
            gaps.into_iter()
                .map(|(gap, cost)| {
                    // Many zero gaps: simultaneous bursts are the interesting case.
                    t += gap.saturating_sub(80);
                    (t, cost)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn spend_in_any_window_is_at_most_burst_plus_window_over_interval(
            seq in arrivals(), interval in 1u64..50, burst in 1u32..10, start in 0u64..1_000_000,
        ) {
            let g = limit(interval, burst);
            let mut tat = 0;
            let allowed: Vec<(u64, u32)> = seq
                .iter()
                .filter(|(t, c)| g.check(&mut tat, MS * (start + t) as u32, *c).allowed)
                .copied()
                .collect();
            for (i, &(a, _)) in allowed.iter().enumerate() {
                let mut spent = 0u64;
                for &(b, c) in &allowed[i..] {
                    spent += u64::from(c);
                    let bound = u64::from(burst) + (b - a) / interval;
                    prop_assert!(spent <= bound, "{} tokens in [{}, {}] ms, bound {}", spent, a, b, bound);
                }
            }
        }

        #[test]
        fn never_refuses_a_source_within_its_rate(
            gaps in proptest::collection::vec(0u64..100, 1..200), interval in 1u64..50, burst in 1u32..10,
        ) {
            // Up to `burst` requests at once, then each at least one interval after the last.
            let g = limit(interval, burst);
            let mut tat = 0;
            let mut t = 1_000;
            for (i, gap) in gaps.into_iter().enumerate() {
                if i >= burst as usize {
                    t += interval + gap;
                }
                prop_assert!(g.check(&mut tat, MS * t as u32, 1).allowed, "request {} at {} ms", i, t);
            }
        }

        #[test]
        fn refused_requests_leave_the_state_alone_and_retry_after_is_exact(
            seq in arrivals(), interval in 1u64..50, burst in 1u32..10,
        ) {
            let g = limit(interval, burst);
            let mut tat = 0;
            for (t, c) in seq {
                let now = MS * t as u32;
                let before = tat;
                let d = g.check(&mut tat, now, c);
                if !d.allowed {
                    prop_assert_eq!(tat, before);
                    if c > burst {
                        prop_assert_eq!(d.retry_after, None, "can never pass");
                        continue;
                    }
                    let retry = d.retry_after.ok_or_else(|| TestCaseError::fail("cost ≤ burst has a retry"))?;
                    let mut probe = tat;
                    prop_assert!(g.check(&mut probe, now + retry, c).allowed);
                    let mut probe = tat;
                    prop_assert!(!g.check(&mut probe, now + retry - Duration::from_nanos(1), c).allowed);
                }
            }
        }
    }
}
