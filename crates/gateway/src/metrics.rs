//! Request metrics in Prometheus text format, kept in fixed arrays of atomics:
//! recording is a few relaxed increments and never takes a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Mutex;

use accounts::tier::{TierReason, TrustTier};

use crate::error::{ApiError, Reject};
use crate::request::Route;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A latency histogram. Buckets are stored non-cumulative and summed when rendered.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Cumulative request counts of one route: answers, 5xx answers, and answers
/// per latency bucket (`latency[i]` for [`BUCKETS`]`[i]`, the last past all of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteCounts {
    pub requests: u64,
    pub server_errors: u64,
    pub latency: [u64; BUCKETS.len() + 1],
}

const FIRST_STATUS: usize = 100;
/// Distinct fine-grained refusal codes counted apart (far more than the program has).
const MAX_DETAIL_CODES: usize = 64;
const STATUS_SLOTS: usize = 500;

struct RouteStats {
    by_status: Box<[AtomicU64]>,
    latency: Histogram,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats { by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(), latency: Histogram::default() }
    }
}

/// The gateway's request counters.
pub struct Metrics {
    routes: [RouteStats; Route::ALL.len()],
    rejections: [AtomicU64; Reject::ALL.len()],
    /// Refusals whose JSON code is finer than their reject's (which password rule, say):
    /// static codes, so the set is bounded by the program; capped all the same.
    details: Mutex<Vec<(&'static str, u64)>>,
    /// Requests whose input score reached the threshold, by action (log, flag, slow, block).
    guard_input: [AtomicU64; 4],
    guard_leaks: AtomicU64,
    /// Trust-tier decisions of member requests, by tier and reason.
    tiers: [[AtomicU64; TierReason::COUNT]; TrustTier::COUNT],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            routes: Default::default(),
            rejections: std::array::from_fn(|_| AtomicU64::new(0)),
            details: Mutex::new(Vec::new()),
            guard_input: Default::default(),
            guard_leaks: AtomicU64::new(0),
            tiers: Default::default(),
        }
    }
}

impl Metrics {
    /// Count a finished request (status and time to response headers).
    pub fn observe(&self, route: Route, status: u16, elapsed: Duration) {
        let stats = &self.routes[route as usize];
        let slot = (status as usize).wrapping_sub(FIRST_STATUS);
        if let Some(counter) = stats.by_status.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        stats.latency.observe(elapsed);
    }

    /// Count a request placed by its account's trust tier.
    pub fn tier_decision(&self, tier: TrustTier, reason: TierReason) {
        self.tiers[tier.rank()][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests placed at `tier` for `reason` since start.
    pub fn tier_decisions(&self, tier: TrustTier, reason: TierReason) -> u64 {
        self.tiers[tier.rank()][reason.index()].load(Ordering::Relaxed)
    }

    pub fn guard_input(&self, action: aiguard::InputAction) {
        self.guard_input[action as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn guard_leaks(&self, n: u64) {
        self.guard_leaks.fetch_add(n, Ordering::Relaxed);
    }

    /// Count a refusal by its code. The listener calls this for every rendered
    /// [`ApiError`]; nothing else should.
    /// A refusal without a finer code (the listener's own, see `refusal`).
    pub fn refused_reject(&self, reject: Reject) {
        self.rejections[reject.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, error: &ApiError) {
        match error.detail {
            Some(code) if code != error.reject.code() => {
                let mut details = self.details.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((_, n)) = details.iter_mut().find(|(c, _)| *c == code) {
                    *n += 1;
                } else if details.len() < MAX_DETAIL_CODES {
                    details.push((code, 1));
                } else {
                    self.rejections[error.reject.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                self.rejections[error.reject.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn requests(&self, route: Route, status: u16) -> u64 {
        let slot = (status as usize).wrapping_sub(FIRST_STATUS);
        self.routes[route as usize].by_status.get(slot).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Cumulative counts for `route`, for rates and quantiles over an interval
    /// (subtract two readings).
    pub fn route_counts(&self, route: Route) -> RouteCounts {
        let stats = &self.routes[route as usize];
        let mut counts = RouteCounts::default();
        for (slot, counter) in stats.by_status.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            counts.requests += n;
            if (500..600).contains(&(slot + FIRST_STATUS)) {
                counts.server_errors += n;
            }
        }
        for (bucket, counter) in counts.latency.iter_mut().zip(&stats.latency.buckets) {
            *bucket = counter.load(Ordering::Relaxed);
        }
        counts
    }

    /// Requests answered so far, and how many of them were shed (429 or 503), over all
    /// routes: the attack detector's request and shed rates are deltas of these.
    pub fn totals(&self) -> (u64, u64) {
        let mut all = 0;
        let mut shed = 0;
        for stats in &self.routes {
            for (slot, counter) in stats.by_status.iter().enumerate() {
                let n = counter.load(Ordering::Relaxed);
                all += n;
                if matches!(slot + FIRST_STATUS, 429 | 503) {
                    shed += n;
                }
            }
        }
        (all, shed)
    }

    /// Refusals counted under this reject's own code (not those with a finer one).
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejections[reason.index()].load(Ordering::Relaxed)
    }

    /// Refusals counted under `code` so far.
    pub fn rejections(&self, code: &str) -> u64 {
        let coarse = Reject::ALL
            .iter()
            .find(|r| r.code() == code)
            .map_or(0, |r| self.rejections[r.index()].load(Ordering::Relaxed));
        let details = self.details.lock().unwrap_or_else(|e| e.into_inner());
        coarse + details.iter().find(|(c, _)| *c == code).map_or(0, |(_, n)| *n)
    }

    /// Append this registry's series to `out`, in Prometheus text format 0.0.4.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP palisade_requests_total Requests answered, by route and status code.\n");
        out.push_str("# TYPE palisade_requests_total counter\n");
        for route in Route::ALL {
            for (slot, counter) in self.routes[route as usize].by_status.iter().enumerate() {
                let n = counter.load(Ordering::Relaxed);
                if n > 0 {
                    let status = slot + FIRST_STATUS;
                    let _ =
                        writeln!(out, "palisade_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", route.label());
                }
            }
        }
        out.push_str("# HELP palisade_request_duration_seconds Time to response headers, by route.\n");
        out.push_str("# TYPE palisade_request_duration_seconds histogram\n");
        for route in Route::ALL {
            let labels = format!("route=\"{}\"", route.label());
            self.routes[route as usize].latency.render(out, "palisade_request_duration_seconds", &labels);
        }
        out.push_str("# HELP palisade_rejections_total Requests refused by the gateway, by reason.\n");
        out.push_str("# TYPE palisade_rejections_total counter\n");
        for reason in Reject::ALL {
            let n = self.rejections[reason.index()].load(Ordering::Relaxed);
            let _ = writeln!(out, "palisade_rejections_total{{reason=\"{}\"}} {n}", reason.code());
        }
        for (code, n) in self.details.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "palisade_rejections_total{{reason=\"{code}\"}} {n}");
        }
        out.push_str("# HELP palisade_guard_input_total Requests whose prompt scored as an extraction or jailbreak attempt, by action.\n");
        out.push_str("# TYPE palisade_guard_input_total counter\n");
        for (i, action) in ["log", "flag", "slow", "block"].iter().enumerate() {
            let n = self.guard_input[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "palisade_guard_input_total{{action=\"{action}\"}} {n}");
        }
        out.push_str("# HELP palisade_guard_leaks_total System-prompt leaks stopped in replies.\n");
        out.push_str("# TYPE palisade_guard_leaks_total counter\n");
        let _ = writeln!(out, "palisade_guard_leaks_total {}", self.guard_leaks.load(Ordering::Relaxed));
        out.push_str(
            "# HELP palisade_tier_decisions_total Member requests by their account's trust tier and why it has it.\n",
        );
        out.push_str("# TYPE palisade_tier_decisions_total counter\n");
        for tier in TrustTier::ALL {
            for reason in TierReason::ALL {
                let n = self.tier_decisions(tier, reason);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "palisade_tier_decisions_total{{tier=\"{tier}\",reason=\"{}\"}} {n}",
                        reason.as_str()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_status() {
        let m = Metrics::default();
        m.observe(Route::ChatCompletions, 200, Duration::from_millis(3));
        m.observe(Route::ChatCompletions, 200, Duration::from_millis(30));
        m.observe(Route::Models, 503, Duration::from_micros(10));
        m.observe(Route::Other, 42, Duration::ZERO); // out of range: ignored, not a panic
        assert_eq!(m.requests(Route::ChatCompletions, 200), 2);
        let counts = m.route_counts(Route::Models);
        assert_eq!((counts.requests, counts.server_errors, counts.latency[0]), (1, 1, 1));
        assert_eq!(m.route_counts(Route::ChatCompletions).latency.iter().sum::<u64>(), 2);
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("palisade_requests_total{route=\"chat_completions\",status=\"200\"} 2"));
        assert!(text.contains("palisade_requests_total{route=\"models\",status=\"503\"} 1"));
        assert!(text.contains("palisade_request_duration_seconds_bucket{route=\"chat_completions\",le=\"0.005\"} 1"));
        assert!(text.contains("palisade_request_duration_seconds_bucket{route=\"chat_completions\",le=\"+Inf\"} 2"));
        assert!(text.contains("palisade_request_duration_seconds_count{route=\"chat_completions\"} 2"));
    }

    #[test]
    fn refusals_are_counted_by_their_code() {
        let m = Metrics::default();
        m.refused(&ApiError::new(Reject::CsrfFailed, "x"));
        m.refused(&ApiError::new(Reject::WeakPassword, "x").detail("too_short"));
        m.refused(&ApiError::new(Reject::WeakPassword, "x").detail("too_short"));
        assert_eq!(m.rejections("csrf_failed"), 1);
        assert_eq!(m.rejections("too_short"), 2);
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("palisade_rejections_total{reason=\"too_short\"} 2"), "{text}");
        assert!(text.contains("palisade_rejections_total{reason=\"csrf_failed\"} 1"));
    }
}
