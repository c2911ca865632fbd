//! Open-loop load: requests start on a fixed schedule whatever happens to the
//! earlier ones, as real users and bots do (a closed loop would slow down
//! with the server and hide exactly the latency we want to see).
//!
//! Every run is bounded: a duration, a cap on requests in flight (past it a
//! scheduled request is counted as `dropped` instead of piling up), and a
//! per-request timeout.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

/// One kind of traffic: who sends it, from where, how often, and what.
#[derive(Clone)]
pub struct Traffic {
    pub name: String,
    /// Requests started per second.
    pub rate: f64,
    /// One client per source address (or per user); requests rotate over them.
    pub clients: Vec<reqwest::Client>,
    /// Extra header per client (same index), e.g. a session cookie or an API key.
    pub credentials: Vec<Option<(String, String)>>,
    pub url: String,
    pub body: Bytes,
    /// Cap on this traffic's requests in flight.
    pub max_in_flight: usize,
    pub timeout: Duration,
}

/// One finished (or failed) request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When it started, since the run's start.
    pub at: Duration,
    pub latency: Duration,
    /// HTTP status; 0 for a transport error or a timeout.
    pub status: u16,
}

/// What one traffic kind saw in one phase.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub name: String,
    pub scheduled: usize,
    /// Not started because `max_in_flight` requests were still running.
    pub dropped: usize,
    pub ok: usize,
    pub refused: usize,
    pub errors: usize,
    pub success_pct: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Successful requests per second, over the phase or, when replies came
    /// later than its end, until the last of them.
    pub goodput: f64,
}

/// A client bound to `source` (an address on 127.0.0.0/8 lets one machine
/// stand in for many), keeping its connections alive.
pub fn client_from(source: Option<IpAddr>, timeout: Duration) -> reqwest::Client {
    // What a browser sends: the edge's bot score would challenge a bare client.
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in [
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        ),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "identity"),
    ] {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    let mut builder =
        reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(64).no_proxy().default_headers(headers);
    if let Some(source) = source {
        builder = builder.local_address(source);
    }
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

/// Run `traffic` for `duration`, starting requests at its rate.
pub async fn run(traffic: Arc<Traffic>, duration: Duration, epoch: Instant) -> (Vec<Sample>, usize) {
    let gate = Arc::new(Semaphore::new(traffic.max_in_flight));
    let period = Duration::from_secs_f64(1.0 / traffic.rate.max(0.001));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut dropped = 0;
    let mut n = 0usize;
    while started.elapsed() < duration {
        ticker.tick().await;
        let Ok(slot) = gate.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let t = traffic.clone();
        let i = n % t.clients.len().max(1);
        n += 1;
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            let at = epoch.elapsed();
            let begun = Instant::now();
            let mut request = t.clients[i]
                .post(&t.url)
                .header("content-type", "application/json")
                .timeout(t.timeout)
                .body(t.body.clone());
            if let Some(Some((name, value))) = t.credentials.get(i) {
                request = request.header(name.as_str(), value.as_str());
            }
            let status = match request.send().await {
                // The reply counts once it has arrived in full.
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.bytes().await {
                        Ok(_) => status,
                        Err(_) => 0,
                    }
                }
                Err(_) => 0,
            };
            Sample { at, latency: begun.elapsed(), status }
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(sample) = task.await {
            samples.push(sample);
        }
    }
    (samples, dropped)
}

/// From the first start to the last reply.
fn span(samples: &[Sample]) -> Duration {
    let first = samples.iter().map(|s| s.at).min().unwrap_or_default();
    let last = samples.iter().map(|s| s.at + s.latency).max().unwrap_or_default();
    last.saturating_sub(first)
}

/// Success rate and latency percentiles (of successful requests) of `samples`.
pub fn summarize(name: &str, samples: &[Sample], dropped: usize, duration: Duration) -> Summary {
    let mut ok: Vec<Duration> = samples.iter().filter(|s| (200..300).contains(&s.status)).map(|s| s.latency).collect();
    ok.sort();
    let refused = samples.iter().filter(|s| matches!(s.status, 429 | 503)).count();
    let errors = samples.len() - ok.len() - refused;
    let scheduled = samples.len() + dropped;
    let pct = |q: f64| -> f64 {
        if ok.is_empty() {
            return 0.0;
        }
        let index = ((ok.len() as f64 * q).ceil() as usize).clamp(1, ok.len()) - 1;
        ok[index].as_secs_f64() * 1e3
    };
    Summary {
        name: name.to_owned(),
        scheduled,
        dropped,
        ok: ok.len(),
        refused,
        errors,
        success_pct: if scheduled == 0 { 0.0 } else { 100.0 * ok.len() as f64 / scheduled as f64 },
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: ok.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        goodput: ok.len() as f64 / span(samples).max(duration).as_secs_f64(),
    }
}

/// One gauge/counter sample from `/metrics`.
pub type Metrics = std::collections::BTreeMap<String, f64>;

/// Sends a request and reads its body; the status, or 0 when it failed.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> u16 {
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, status: u16) -> Sample {
        Sample { at: Duration::ZERO, latency: Duration::from_millis(ms), status }
    }

    #[test]
    fn percentiles_count_only_successes_and_success_counts_drops() {
        let mut samples: Vec<Sample> = (1..=100).map(|ms| sample(ms, 200)).collect();
        samples.push(sample(5, 503));
        samples.push(sample(5, 0));
        let s = summarize("x", &samples, 1, Duration::from_secs(10));
        assert_eq!((s.ok, s.refused, s.errors, s.dropped, s.scheduled), (100, 1, 1, 1, 103));
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert!((s.success_pct - 100.0 * 100.0 / 103.0).abs() < 1e-9);
        assert_eq!(s.goodput, 10.0);
    }
}
