//! Live signals turned into a raw (not yet smoothed) status per component.
//!
//! Rates and latency come from the request metrics: the recorder reads the
//! cumulative counters each tick and judges the difference from the previous
//! reading, so a sample describes exactly the last interval. The API is the
//! `/v1` routes; "web" is everything else a person uses (pages, sign-in, the
//! status page), not the health and metrics endpoints.

use std::time::Duration;

use axum::http::StatusCode;
use status::ComponentStatus;

use crate::config::StatusSignals;
use crate::error::Reject;
use crate::metrics::{BUCKETS, Metrics, RouteCounts};
use crate::request::Route;

const API_ROUTES: [Route; 5] =
    [Route::ChatCompletions, Route::Completions, Route::Embeddings, Route::Models, Route::ApiOther];
const WEB_ROUTES: [Route; 8] = [
    Route::Register,
    Route::Login,
    Route::Ticket,
    Route::Auth,
    Route::Challenge,
    Route::Status,
    Route::Admin,
    Route::Other,
];

/// Requests answered over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    pub server_errors: u64,
    /// 95th-percentile time to response headers (the upper bound of its
    /// histogram bucket); `None` without requests.
    pub p95: Option<Duration>,
}

/// Everything the recorder judges, for one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub web: Traffic,
    pub api: Traffic,
    /// Requests shed for overload, and requests answered on any route.
    pub shed: u64,
    pub total: u64,
    pub upstreams_healthy: usize,
    pub upstreams_total: usize,
    /// Password hashes waiting for a thread.
    pub hashing_queued: usize,
}

/// A refusal that means "too busy right now": a 503 other than the ones that
/// say an upstream is down (judged by upstream health) or the process is stopping.
pub fn is_shed(reason: Reject) -> bool {
    reason.status() == StatusCode::SERVICE_UNAVAILABLE
        && !matches!(reason, Reject::NoHealthyUpstream | Reject::ShuttingDown)
}

/// Remembers the previous reading of the counters.
#[derive(Debug, Default)]
pub struct SignalReader {
    last: Option<Reading>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    web: RouteCounts,
    api: RouteCounts,
    all_requests: u64,
    shed: u64,
}

fn sum(metrics: &Metrics, routes: &[Route]) -> RouteCounts {
    let mut total = RouteCounts::default();
    for route in routes {
        let c = metrics.route_counts(*route);
        total.requests += c.requests;
        total.server_errors += c.server_errors;
        for (t, n) in total.latency.iter_mut().zip(c.latency) {
            *t += n;
        }
    }
    total
}

fn delta(now: &RouteCounts, before: &RouteCounts) -> RouteCounts {
    let mut d = RouteCounts {
        requests: now.requests.saturating_sub(before.requests),
        server_errors: now.server_errors.saturating_sub(before.server_errors),
        latency: [0; BUCKETS.len() + 1],
    };
    for (i, slot) in d.latency.iter_mut().enumerate() {
        *slot = now.latency[i].saturating_sub(before.latency[i]);
    }
    d
}

fn traffic(d: &RouteCounts) -> Traffic {
    Traffic { requests: d.requests, server_errors: d.server_errors, p95: quantile(&d.latency, 0.95) }
}

impl SignalReader {
    /// Traffic since the previous call (the first call sees none), filling the
    /// request fields of a [`Sample`]; the caller adds the gauges.
    pub fn read(&mut self, metrics: &Metrics) -> Sample {
        let now = Reading {
            web: sum(metrics, &WEB_ROUTES),
            api: sum(metrics, &API_ROUTES),
            all_requests: sum(metrics, &Route::ALL).requests,
            shed: Reject::ALL.into_iter().filter(|r| is_shed(*r)).map(|r| metrics.rejected(r)).sum(),
        };
        let before = self.last.replace(now).unwrap_or(now);
        Sample {
            web: traffic(&delta(&now.web, &before.web)),
            api: traffic(&delta(&now.api, &before.api)),
            shed: now.shed.saturating_sub(before.shed),
            total: now.all_requests.saturating_sub(before.all_requests),
            ..Sample::default()
        }
    }
}

/// The `q` quantile of a histogram in [`BUCKETS`] layout, as its bucket's upper
/// bound (twice the last bound for the overflow bucket).
pub fn quantile(buckets: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let bound = BUCKETS.get(i).copied().unwrap_or(BUCKETS[BUCKETS.len() - 1] * 2.0);
            return Some(Duration::from_secs_f64(bound));
        }
    }
    None
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// Error rate and latency of one kind of traffic. Fewer than `min_requests`
/// requests say nothing, so a quiet interval is not judged.
pub fn traffic_status(t: &Traffic, p95_limit: Duration, s: &StatusSignals) -> ComponentStatus {
    if t.requests < s.min_requests.max(1) {
        return ComponentStatus::Operational;
    }
    let errors = rate(t.server_errors, t.requests);
    let mut status = if errors >= s.error_rate_partial {
        ComponentStatus::PartialOutage
    } else if errors >= s.error_rate_degraded {
        ComponentStatus::DegradedPerformance
    } else {
        ComponentStatus::Operational
    };
    if t.p95.is_some_and(|p| p > p95_limit) {
        status = status.max(ComponentStatus::DegradedPerformance);
    }
    status
}

/// All upstreams healthy: operational; none: major outage; some: degraded.
pub fn upstreams_status(healthy: usize, total: usize) -> ComponentStatus {
    match (healthy, total) {
        (h, n) if h >= n => ComponentStatus::Operational,
        (0, _) => ComponentStatus::MajorOutage,
        _ => ComponentStatus::DegradedPerformance,
    }
}

/// The API: upstream health, its error rate and latency, and load shedding.
pub fn api_status(sample: &Sample, s: &StatusSignals) -> ComponentStatus {
    let mut status = upstreams_status(sample.upstreams_healthy, sample.upstreams_total).max(traffic_status(
        &sample.api,
        Duration::from_millis(s.api_p95_ms),
        s,
    ));
    if sample.total >= s.min_requests.max(1) {
        let shed = rate(sample.shed, sample.total);
        if shed >= s.shed_rate_partial {
            status = status.max(ComponentStatus::PartialOutage);
        } else if shed >= s.shed_rate_degraded {
            status = status.max(ComponentStatus::DegradedPerformance);
        }
    }
    status
}

/// Web pages, sign-in forms and the status page itself.
pub fn web_status(sample: &Sample, s: &StatusSignals) -> ComponentStatus {
    traffic_status(&sample.web, Duration::from_millis(s.web_p95_ms), s)
}

/// Sign-in: password hashes queueing for the bounded pool means logins wait.
pub fn login_status(sample: &Sample) -> ComponentStatus {
    if sample.hashing_queued > 0 { ComponentStatus::DegradedPerformance } else { ComponentStatus::Operational }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ComponentStatus::*;

    fn signals() -> StatusSignals {
        StatusSignals { min_requests: 10, ..StatusSignals::default() }
    }

    fn traffic(requests: u64, server_errors: u64, p95_ms: u64) -> Traffic {
        Traffic { requests, server_errors, p95: Some(Duration::from_millis(p95_ms)) }
    }

    #[test]
    fn quantile_is_the_upper_bound_of_the_bucket_holding_the_rank() {
        let mut b = [0u64; BUCKETS.len() + 1];
        assert_eq!(quantile(&b, 0.95), None);
        b[0] = 95; // <= 0.5 ms
        b[7] = 5; // <= 100 ms
        assert_eq!(quantile(&b, 0.95), Some(Duration::from_micros(500)));
        b[0] = 94;
        assert_eq!(quantile(&b, 0.95), Some(Duration::from_millis(100)));
        let mut slow = [0u64; BUCKETS.len() + 1];
        slow[BUCKETS.len()] = 1;
        assert_eq!(quantile(&slow, 0.95), Some(Duration::from_secs(120)));
    }

    #[test]
    fn reader_judges_the_difference_between_readings() {
        let metrics = Metrics::default();
        let mut reader = SignalReader::default();
        metrics.observe(Route::ChatCompletions, 200, Duration::from_millis(1));
        assert_eq!(reader.read(&metrics).api.requests, 0, "the first reading is the baseline");
        for _ in 0..3 {
            metrics.observe(Route::ChatCompletions, 502, Duration::from_millis(30));
        }
        metrics.observe(Route::Other, 200, Duration::from_millis(1));
        metrics.observe(Route::Healthz, 200, Duration::from_millis(1));
        let s = reader.read(&metrics);
        assert_eq!((s.api.requests, s.api.server_errors), (3, 3));
        assert_eq!(s.api.p95, Some(Duration::from_millis(50)));
        assert_eq!((s.web.requests, s.total), (1, 5));
        let s = reader.read(&metrics);
        assert_eq!((s.api.requests, s.web.requests, s.total, s.api.p95), (0, 0, 0, None));
    }

    #[test]
    fn error_rates_and_latency_grade_traffic() {
        let s = signals();
        let limit = Duration::from_millis(1_000);
        assert_eq!(traffic_status(&traffic(100, 4, 10), limit, &s), Operational);
        assert_eq!(traffic_status(&traffic(100, 5, 10), limit, &s), DegradedPerformance);
        assert_eq!(traffic_status(&traffic(100, 25, 10), limit, &s), PartialOutage);
        assert_eq!(traffic_status(&traffic(100, 0, 2_500), limit, &s), DegradedPerformance);
        assert_eq!(traffic_status(&traffic(9, 9, 60_000), limit, &s), Operational, "too few requests to judge");
    }

    #[test]
    fn the_api_is_its_upstreams_its_errors_and_its_shedding() {
        let s = signals();
        let healthy = Sample { upstreams_healthy: 2, upstreams_total: 2, ..Sample::default() };
        assert_eq!(api_status(&healthy, &s), Operational);
        assert_eq!(api_status(&Sample { upstreams_healthy: 1, ..healthy }, &s), DegradedPerformance);
        assert_eq!(api_status(&Sample { upstreams_healthy: 0, ..healthy }, &s), MajorOutage);
        let shedding = Sample { shed: 60, total: 100, ..healthy };
        assert_eq!(api_status(&shedding, &s), PartialOutage);
        assert_eq!(api_status(&Sample { shed: 10, ..shedding }, &s), DegradedPerformance);
        assert_eq!(api_status(&Sample { api: traffic(50, 20, 10), ..healthy }, &s), PartialOutage);
    }

    #[test]
    fn only_overload_refusals_count_as_shedding() {
        assert!(!is_shed(Reject::NoHealthyUpstream));
        assert!(!is_shed(Reject::ShuttingDown));
        assert!(!is_shed(Reject::RateLimited));
        assert!(!is_shed(Reject::BodyTooLarge));
    }

    #[test]
    fn login_waits_when_hashes_queue() {
        assert_eq!(login_status(&Sample::default()), Operational);
        assert_eq!(login_status(&Sample { hashing_queued: 3, ..Sample::default() }), DegradedPerformance);
    }
}
