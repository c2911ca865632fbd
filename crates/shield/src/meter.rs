//! Small per-source behaviour meters that feed the bot score, each a few bytes so they fit
//! in a [`crate::table::BoundedTable`]: how machine-regular a source's request timing is,
//! and a decaying count of events (failed challenges, sign-ups per subnet).

use std::time::Duration;

use crate::gcra::nanos;
use crate::table::Slot;

/// Weight of the newest gap in the running mean and variance (1/8: about the last 8 gaps).
const ALPHA: f32 = 0.125;
/// A gap longer than this starts the series again: a human coming back is not a timer.
const IDLE_RESET: Duration = Duration::from_secs(300);

/// Running mean and variance of a source's inter-arrival gaps (exponentially weighted), for
/// the coefficient of variation. Browsers and people are bursty (CV around or above 1);
/// a script in a `sleep` loop is nearly periodic (CV near 0). 20 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimingTracker {
    last_ns: u64,
    mean_ms: f32,
    var_ms2: f32,
    samples: u32,
}

/// What [`TimingTracker::stats`] reports for the bot score.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimingStats {
    /// Gaps seen since the series (re)started.
    pub samples: u32,
    /// Mean gap in milliseconds.
    pub mean_ms: f32,
    /// Standard deviation over mean of the gaps; 0 for a perfect metronome.
    pub cv: f32,
}

impl TimingTracker {
    /// Records a request at `now` (any monotonic clock, e.g. since the Unix epoch).
    pub fn observe(&mut self, now: Duration) {
        let now = nanos(now).max(1);
        if self.last_ns == 0 || now < self.last_ns || now - self.last_ns > nanos(IDLE_RESET) {
            *self = Self { last_ns: now, ..Self::default() };
            return;
        }
        let gap = (now - self.last_ns) as f32 / 1e6;
        self.last_ns = now;
        if self.samples == 0 {
            self.mean_ms = gap;
        } else {
            // West's incremental EWMA variance: no history kept.
            let diff = gap - self.mean_ms;
            let incr = ALPHA * diff;
            self.mean_ms += incr;
            self.var_ms2 = (1.0 - ALPHA) * (self.var_ms2 + diff * incr);
        }
        self.samples = self.samples.saturating_add(1);
    }

    pub fn stats(&self) -> TimingStats {
        let cv = if self.mean_ms > 0.0 { self.var_ms2.max(0.0).sqrt() / self.mean_ms } else { 0.0 };
        TimingStats { samples: self.samples, mean_ms: self.mean_ms, cv }
    }
}

impl Slot for TimingTracker {
    fn retention(&self, now: Duration) -> u64 {
        if self.last_ns == 0 || nanos(now).saturating_sub(self.last_ns) > nanos(IDLE_RESET) {
            0
        } else {
            u64::from(self.samples) + 1
        }
    }
}

/// A count that halves every `half_life` (e.g. sign-ups from one subnet, failed challenges
/// from one address). The same half-life must be passed on every call for one table.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecayingCount {
    last_ns: u64,
    value: f32,
}

impl DecayingCount {
    /// The count at `now`.
    pub fn value(&self, now: Duration, half_life: Duration) -> f32 {
        let dt = nanos(now).saturating_sub(self.last_ns) as f64;
        let hl = nanos(half_life).max(1) as f64;
        (f64::from(self.value) * (-dt / hl).exp2()) as f32
    }

    /// Adds `n` events at `now`; returns the new count.
    pub fn add(&mut self, n: f32, now: Duration, half_life: Duration) -> f32 {
        self.value = self.value(now, half_life) + n;
        self.last_ns = nanos(now);
        self.value
    }
}

impl Slot for DecayingCount {
    fn retention(&self, _now: Duration) -> u64 {
        // Without the half-life, rank by the stored value; a tiny one is as good as zero.
        if self.value < 0.5 { 0 } else { self.value as u64 + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_metronome_has_low_cv_and_jitter_has_high_cv() {
        let mut bot = TimingTracker::default();
        let mut t = Duration::from_secs(100);
        for _ in 0..30 {
            t += MS * 1000;
            bot.observe(t);
        }
        let s = bot.stats();
        assert_eq!(s.samples, 29);
        assert!(s.cv < 0.01 && (s.mean_ms - 1000.0).abs() < 1.0, "{s:?}");

        let mut human = TimingTracker::default();
        // A deterministic bursty pattern: quick clicks, then reading pauses.
        for gap in [200u32, 300, 9_000, 150, 12_000, 400, 250, 30_000, 100, 7_000, 500, 20_000] {
            t += MS * gap;
            human.observe(t);
        }
        assert!(human.stats().cv > 0.8, "{:?}", human.stats());
    }

    #[test]
    fn idle_gaps_restart_the_series() {
        let mut m = TimingTracker::default();
        let t = Duration::from_secs(1);
        m.observe(t);
        m.observe(t + MS * 10);
        assert_eq!(m.stats().samples, 1);
        m.observe(t + Duration::from_secs(3600));
        assert_eq!(m.stats().samples, 0);
        assert_eq!(m.retention(t + Duration::from_secs(7200)), 0);
    }

    #[test]
    fn decaying_count_halves_per_half_life() {
        let hl = Duration::from_secs(60);
        let mut c = DecayingCount::default();
        let t = Duration::from_secs(1000);
        assert_eq!(c.add(8.0, t, hl), 8.0);
        assert!((c.value(t + hl, hl) - 4.0).abs() < 1e-3);
        assert!((c.add(1.0, t + hl * 2, hl) - 3.0).abs() < 1e-3);
    }
}
