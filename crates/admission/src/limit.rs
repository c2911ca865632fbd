//! An adaptive concurrency limit toward the upstreams: it grows while it is used and latency stays
//! near the unloaded baseline, and is cut multiplicatively on an overload signal or when latency
//! climbs past `tolerance × baseline` — so it settles at the upstreams' knee, not at a guess.
//!
//! - Latency is the time to the upstream's first byte, which reflects its queueing; the length
//!   of a streamed reply says nothing about load and must not be fed here.
//! - The baseline is a slow average of samples taken at light load: requests that started with
//!   at most half of the *last known safe limit* in flight (the limit right after the latest cut,
//!   or `initial` before any). Measured against that rather than the current limit, a limit that
//!   overshot the knee cannot teach the baseline that congested latency is normal. Before any
//!   such sample the first samples seed it.
//! - Growth needs use: the limit grows only when at least 90% of it is in flight, so an idle
//!   period never inflates it. Until the first cut it grows by one per sample (doubling per round
//!   trip, like TCP slow start) and that first cut halves it, undoing the overshoot; afterwards it
//!   grows by `max(1, √limit / 2)` per round trip.
//! - A cut needs load: latency is held against the limit only when at least half of it is in
//!   flight; otherwise the slowness is not ours to fix. Cuts are at most one per round trip: a
//!   reply to a request admitted before the latest cut ran under the old limit and only feeds
//!   the baseline, and the excess already acted on is forgotten. A latency cut is proportional
//!   to the excess, between `backoff` and half.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::LimitConfig;

/// The deepest single cut: one burst of slow replies should not empty the pipe.
const DEEPEST_CUT: f64 = 0.5;
/// The limit counts as used when this fraction of it is in flight.
const USED: f64 = 0.9;

/// The load under which one request ran, passed with its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// When it was admitted.
    pub admitted_at: Instant,
    /// Requests in flight right after it was admitted, itself included.
    pub in_flight_then: u32,
    /// Requests in flight as it completes, itself included.
    pub in_flight_now: u32,
}

/// A concurrency limit that adapts to the upstreams' latency and overload signals.
///
/// Pure: the caller passes the time and the load with every sample, so it is tested with
/// deterministic sequences.
#[derive(Clone, Debug)]
pub struct AdaptiveLimit {
    min: f64,
    max: f64,
    tolerance: f64,
    backoff: f64,
    limit: f64,
    /// The limit right after the latest cut (`initial` before any): light load is judged by it.
    safe: f64,
    short: Average,
    baseline: Average,
    baseline_samples: u32,
    /// The baseline was seeded by loaded samples, for want of light-load ones.
    baseline_from_load: bool,
    slow_start: bool,
    last_cut: Option<Instant>,
}

impl AdaptiveLimit {
    /// A limit at `config.initial`. The config should have passed [`crate::AdmissionConfig::validate`];
    /// out-of-range values are clamped rather than trusted.
    pub fn new(config: &LimitConfig) -> Self {
        let min = f64::from(config.min.max(1));
        let max = f64::from(config.max).max(min);
        let initial = f64::from(config.initial).clamp(min, max);
        AdaptiveLimit {
            min,
            max,
            tolerance: if config.tolerance > 1.0 { config.tolerance } else { 1.25 },
            backoff: if (DEEPEST_CUT..1.0).contains(&config.backoff) { config.backoff } else { 0.9 },
            limit: initial,
            safe: initial,
            short: Average::new(config.smoothing_samples),
            baseline: Average::new(config.baseline_samples),
            baseline_samples: config.baseline_samples,
            baseline_from_load: false,
            slow_start: true,
            last_cut: None,
        }
    }

    /// Requests that may be in flight now (at least `min`, at most `max`).
    pub fn current(&self) -> u32 {
        // `limit` stays within [min, max] ⊂ [1, u32::MAX], so the cast only drops the fraction.
        self.limit as u32
    }

    /// The smoothed recent latency, once measured.
    pub fn latency(&self) -> Option<Duration> {
        self.short.value().map(Duration::from_secs_f64)
    }

    /// The unloaded baseline latency, once measured.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline.value().map(Duration::from_secs_f64)
    }

    /// A request answered after `latency` (time to first byte) under `load`.
    pub fn on_success(&mut self, now: Instant, latency: Duration, load: Load) {
        let sample = latency.as_secs_f64();
        if f64::from(load.in_flight_then) * 2.0 <= self.safe {
            if self.baseline_from_load {
                self.baseline = Average::new(self.baseline_samples);
                self.baseline_from_load = false;
            }
            self.baseline.add(sample);
        } else if self.baseline.value().is_none() || self.baseline_from_load {
            self.baseline.add(sample);
            self.baseline_from_load = true;
        }
        if self.ran_before_last_cut(load) {
            // It ran under the old limit, whose excess is already acted on.
            return;
        }
        let short = self.short.add(sample);
        let baseline = self.baseline.value().unwrap_or(sample);
        let in_flight = f64::from(load.in_flight_now);
        if short > self.tolerance * baseline {
            if in_flight * 2.0 >= self.limit {
                let factor = (self.tolerance * baseline / short).clamp(DEEPEST_CUT, self.backoff);
                self.cut(now, factor, load);
            }
        } else if in_flight >= USED * self.limit.floor() {
            let step = if self.slow_start { 1.0 } else { (self.limit.sqrt() / 2.0).max(1.0) / self.limit };
            self.limit = (self.limit + step).min(self.max);
        }
    }

    /// The upstream said it is overloaded (429, 503, a timeout): cut by `backoff` (by half the
    /// first time, ending slow start).
    pub fn on_overload(&mut self, now: Instant, load: Load) {
        self.cut(now, self.backoff, load);
    }

    /// Whether the request was admitted before the latest cut (at the same instant counts as
    /// before): its news is already acted on. This spaces cuts by one round trip.
    fn ran_before_last_cut(&self, load: Load) -> bool {
        self.last_cut.is_some_and(|cut| load.admitted_at <= cut)
    }

    fn cut(&mut self, now: Instant, factor: f64, load: Load) {
        if self.ran_before_last_cut(load) {
            return;
        }
        let factor = if self.slow_start { DEEPEST_CUT } else { factor };
        self.limit = (self.limit * factor).max(self.min);
        self.safe = self.limit;
        self.slow_start = false;
        self.last_cut = Some(now);
        // Forget the excess just acted on, so the next cut needs fresh evidence.
        if let Some(baseline) = self.baseline.value() {
            self.short.cap(self.tolerance * baseline);
        }
    }
}

/// An exponentially weighted moving average over about `samples` samples; a plain mean until
/// that many have been seen, so the first sample does not dominate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Average {
    alpha: f64,
    count: u32,
    value: f64,
}

impl Average {
    pub(crate) fn new(samples: u32) -> Self {
        Average { alpha: 2.0 / (f64::from(samples.max(1)) + 1.0), count: 0, value: 0.0 }
    }

    pub(crate) fn add(&mut self, sample: f64) -> f64 {
        self.count = self.count.saturating_add(1);
        let weight = self.alpha.max(1.0 / f64::from(self.count));
        self.value += weight * (sample - self.value);
        self.value
    }

    /// Lowers the average to at most `ceiling`.
    pub(crate) fn cap(&mut self, ceiling: f64) {
        self.value = self.value.min(ceiling);
    }

    pub(crate) fn value(&self) -> Option<f64> {
        (self.count > 0).then_some(self.value)
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use super::*;

    const BASE: Duration = Duration::from_millis(50);

    fn load(admitted_at: Instant, in_flight_then: u32, in_flight_now: u32) -> Load {
        Load { admitted_at, in_flight_then, in_flight_now }
    }

    fn config(initial: u32) -> LimitConfig {
        LimitConfig { initial, ..LimitConfig::default() }
    }

    /// Keeps the limit full against a server whose latency depends on the number in flight
    /// when a request starts; returns the limit after every completion with its time.
    fn saturate(
        limit: &mut AdaptiveLimit,
        latency_at: impl Fn(u32) -> Duration,
        run: Duration,
    ) -> Vec<(Duration, u32)> {
        let start = Instant::now();
        let mut now = start;
        let mut running = BinaryHeap::new();
        let mut in_flight = 0u32;
        let mut trace = Vec::new();
        loop {
            while in_flight < limit.current() {
                in_flight += 1;
                running.push(Reverse((now + latency_at(in_flight), in_flight, now)));
            }
            let Some(Reverse((done, at_start, started))) = running.pop() else { break };
            if done - start > run {
                break;
            }
            now = done;
            limit.on_success(
                now,
                done - started,
                Load { admitted_at: started, in_flight_then: at_start, in_flight_now: in_flight },
            );
            in_flight -= 1;
            trace.push((now - start, limit.current()));
        }
        trace
    }

    fn mean_after(trace: &[(Duration, u32)], from: Duration) -> f64 {
        let tail: Vec<u32> = trace.iter().filter(|(t, _)| *t >= from).map(|(_, l)| *l).collect();
        f64::from(tail.iter().sum::<u32>()) / tail.len() as f64
    }

    #[test]
    fn converges_near_capacity_when_latency_doubles_past_it() {
        // Starting anywhere up to twice the knee, it learns the unloaded latency from the lower
        // half of the initial limit, then finds the knee.
        for initial in [2, 4, 8, 16] {
            let mut limit = AdaptiveLimit::new(&config(initial));
            let cliff = |n: u32| if n > 8 { 2 * BASE } else { BASE };
            let trace = saturate(&mut limit, cliff, Duration::from_secs(60));
            let mean = mean_after(&trace, Duration::from_secs(30));
            assert!((7.0..=10.0).contains(&mean), "initial {initial}: mean limit {mean}");
            let lowest = trace.iter().filter(|(t, _)| *t >= Duration::from_secs(30)).map(|(_, l)| *l).min();
            assert!(lowest >= Some(6), "initial {initial}: the limit collapsed to {lowest:?}");
        }
    }

    #[test]
    fn holds_latency_near_tolerance_on_a_server_that_slows_gradually() {
        let mut limit = AdaptiveLimit::new(&config(4));
        // Processor sharing: past 8 in flight every request slows in proportion.
        let sharing = |n: u32| BASE * n.max(8) / 8;
        let trace = saturate(&mut limit, sharing, Duration::from_secs(60));
        let mean = mean_after(&trace, Duration::from_secs(30));
        let tolerance = LimitConfig::default().tolerance;
        assert!((8.0..=8.0 * tolerance + 1.0).contains(&mean), "mean limit {mean}");
        let latency = limit.latency().expect("measured");
        assert!(latency <= BASE.mul_f64(tolerance * 1.1), "latency {latency:?}");
    }

    #[test]
    fn noisy_latency_neither_collapses_nor_inflates_the_limit() {
        // Service times spread uniformly over 0.2–1.8 × the mean (as prompt lengths spread
        // time to first token), on the processor-sharing server above.
        let mut seed = 1u64;
        let mut limit = AdaptiveLimit::new(&config(4));
        let noisy = move |n: u32| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let spread = 0.2 + 1.6 * ((seed >> 11) as f64 / (1u64 << 53) as f64);
            BASE.mul_f64(spread) * n.max(8) / 8
        };
        let noisy = std::cell::RefCell::new(noisy);
        let trace = saturate(&mut limit, |n| (noisy.borrow_mut())(n), Duration::from_secs(120));
        let mean = mean_after(&trace, Duration::from_secs(60));
        assert!((6.0..=13.0).contains(&mean), "mean limit {mean}");
    }

    #[test]
    fn slow_start_doubles_per_round_trip_until_the_first_cut() {
        let mut limit = AdaptiveLimit::new(&config(4));
        let trace = saturate(&mut limit, |_| BASE, Duration::from_millis(260));
        // Five round trips at constant latency: 4 → 8 → 16 → 32 → 64 → 128.
        assert_eq!(trace.last().map(|(_, l)| *l), Some(128));
        let later = Instant::now() + Duration::from_secs(1);
        limit.on_overload(later, load(later, 128, 128));
        assert_eq!(limit.current(), 64, "the first cut halves");
        let after = later + Duration::from_millis(1);
        limit.on_overload(after + BASE, load(after, 64, 64));
        assert_eq!(limit.current(), 57, "later ones cut by backoff, 0.9 × 64");
    }

    #[test]
    fn overload_cuts_once_per_round_trip_and_stops_at_min() {
        let mut limit = AdaptiveLimit::new(&config(100));
        let t0 = Instant::now();
        limit.on_success(t0, BASE, load(t0, 1, 1));
        for i in 0..10 {
            // All admitted before the first cut, at t0.
            limit.on_overload(t0 + BASE + Duration::from_millis(i), load(t0, 100, 100));
        }
        assert_eq!(limit.current(), 50, "a burst of overloads from one round trip cuts once");
        for i in 2..=100 {
            limit.on_overload(t0 + BASE * i, load(t0 + BASE * (i - 1), 50, 50));
        }
        assert_eq!(limit.current(), 2, "clamped at min");
    }

    #[test]
    fn slowness_without_our_load_changes_nothing() {
        let mut limit = AdaptiveLimit::new(&config(32));
        let t0 = Instant::now();
        for i in 0..100 {
            limit.on_success(t0 + BASE * i, BASE, load(t0, 3, 3));
        }
        for i in 100..1000 {
            // Five times slower, but only 3 of 32 in flight: neither a cut nor growth.
            limit.on_success(t0 + BASE * i, BASE * 5, load(t0, 3, 3));
        }
        assert_eq!(limit.current(), 32);
    }

    #[test]
    fn a_latency_cut_is_proportional_to_the_excess_but_at_most_half() {
        let mut limit = AdaptiveLimit::new(&LimitConfig { smoothing_samples: 1, ..config(64) });
        let t0 = Instant::now();
        limit.slow_start = false;
        limit.on_success(t0, BASE, load(t0, 1, 1));
        limit.on_success(t0 + BASE, BASE * 2, load(t0, 64, 64));
        assert_eq!(limit.current(), 40, "64 × 1.25 / 2");
        let t1 = t0 + BASE * 2;
        limit.on_success(t1 + BASE * 100, BASE * 100, load(t1, 40, 40));
        assert_eq!(limit.current(), 20, "at most halved");
    }

    #[test]
    fn average_is_a_mean_until_warm() {
        let mut average = Average::new(100);
        assert_eq!(average.value(), None);
        average.add(1.0);
        average.add(3.0);
        assert_eq!(average.value(), Some(2.0));
    }
}
