//! What admission reports: how a request that held a permit went (which feeds the
//! adaptive limit), and its counters and gauges for metrics.

use std::time::Duration;

use crate::class::{PerClass, PriorityClass};
use crate::refusal::RefusalReason;
use crate::tier::PerTier;

/// How the upstream call that held a permit went; feeds the adaptive limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered; `latency` is the time to its first byte (response headers or
    /// first streamed token), not to the end of the stream.
    Success {
        /// Time from sending the request upstream to its first byte.
        latency: Duration,
    },
    /// The upstream signalled overload: 429, 503, or a time-out waiting for it.
    Overloaded,
    /// Any other failure (4xx, 500, connect refused): says nothing about load, not counted.
    Failed,
    /// The client went away or the call was never made: not counted.
    Cancelled,
}

/// Counters and gauges for metrics and the admin API.
#[derive(Clone, Debug, PartialEq)]
pub struct AdmissionSnapshot {
    /// Whether admission is enforced.
    pub enabled: bool,
    /// The current concurrency limit.
    pub limit: u32,
    /// Smoothed recent upstream latency (time to first byte).
    pub latency: Option<Duration>,
    /// The unloaded baseline latency the limit compares against.
    pub baseline_latency: Option<Duration>,
    /// Requests holding a slot, by class.
    pub in_flight: PerClass<u32>,
    /// Requests waiting, by class.
    pub queued: PerClass<u32>,
    /// Requests admitted since start, by class (at once or after waiting).
    pub admitted: PerClass<u64>,
    /// Requests holding a slot, by trust tier (all classes together).
    pub tier_in_flight: PerTier<u32>,
    /// Requests admitted since start, by trust tier.
    pub tier_admitted: PerTier<u64>,
    /// Requests refused since start, by class and [`RefusalReason::index`].
    pub refused: PerClass<[u64; RefusalReason::COUNT]>,
    /// Waiters whose client gave up before a slot came, by class.
    pub abandoned: PerClass<u64>,
}

impl AdmissionSnapshot {
    /// Refusals of `class` for `reason` since start.
    pub fn refused(&self, class: PriorityClass, reason: RefusalReason) -> u64 {
        self.refused[class][reason.index()]
    }
}
