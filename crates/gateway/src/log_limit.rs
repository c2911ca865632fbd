//! Repetitive warnings, limited: a flood must not become a log flood. A warning or
//! error that one connection or request can cause (h2's "too many resets", an upstream
//! failing every request) would otherwise write one line per attacker's connection.
//!
//! [`RepeatLimit`] is a `tracing` layer that gives every WARN and ERROR call site (one
//! kind of message) a token bucket of [`BURST`] lines refilled at [`PER_SECOND`]; a line
//! over it is dropped before any layer formats it, and counted in
//! `palisade_log_suppressed_total{event="<target>:<line>"}`. INFO and below pass
//! untouched. The table has one entry per call site that has warned, so its size is
//! bounded by the binary, never by the traffic.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines one kind of warning may write at once...
pub const BURST: u32 = 10;
/// ...and per second after that.
pub const PER_SECOND: f64 = 2.0;

/// The layer; add it to the subscriber before the formatting layers see events.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepeatLimit;

struct Bucket {
    label: String,
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl Bucket {
    /// Take a token if one is there, refilling for the time since the last call.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * PER_SECOND).min(f64::from(BURST));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// One process, one log: the buckets are shared by every gateway in it.
static BUCKETS: Mutex<Option<HashMap<Identifier, Bucket>>> = Mutex::new(None);

/// Decide one event: `true` to write it.
fn admit(event: &Event<'_>, now: Instant) -> bool {
    let meta = event.metadata();
    if *meta.level() > Level::WARN {
        return true;
    }
    let mut buckets = BUCKETS.lock().unwrap_or_else(|e| e.into_inner());
    let bucket = buckets.get_or_insert_with(HashMap::new).entry(meta.callsite()).or_insert_with(|| Bucket {
        label: format!("{}:{}", meta.target(), meta.line().unwrap_or(0)),
        tokens: f64::from(BURST),
        refilled: now,
        suppressed: 0,
    });
    bucket.take(now)
}

impl<S: Subscriber> Layer<S> for RepeatLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        admit(event, Instant::now())
    }
}

/// `palisade_log_suppressed_total`, one line per kind of message that was limited.
pub fn render_metrics(out: &mut String) {
    out.push_str(
        "# HELP palisade_log_suppressed_total Warnings and errors not written because the same kind was \
                  logged too often, by call site.\n",
    );
    out.push_str("# TYPE palisade_log_suppressed_total counter\n");
    let buckets = BUCKETS.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<(&str, u64)> = buckets
        .iter()
        .flat_map(|b| b.values())
        .filter(|b| b.suppressed > 0)
        .map(|b| (b.label.as_str(), b.suppressed))
        .collect();
    rows.sort_unstable();
    for (label, n) in rows {
        let _ = writeln!(out, "palisade_log_suppressed_total{{event=\"{}\"}} {n}", label.replace(['"', '\\'], "_"));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bucket(now: Instant) -> Bucket {
        Bucket { label: String::new(), tokens: f64::from(BURST), refilled: now, suppressed: 0 }
    }

    #[test]
    fn a_burst_then_a_few_a_second() {
        let start = Instant::now();
        let mut b = bucket(start);
        let written = (0..1000).filter(|_| b.take(start)).count();
        assert_eq!(written, BURST as usize);
        assert_eq!(b.suppressed, 1000 - u64::from(BURST));
        // One second later, PER_SECOND more.
        let later = start + Duration::from_secs(1);
        let written = (0..1000).filter(|_| b.take(later)).count();
        assert_eq!(written, PER_SECOND as usize);
        // A long quiet refills to the burst, no more.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!((0..1000).filter(|_| b.take(much_later)).count(), BURST as usize);
    }
}
