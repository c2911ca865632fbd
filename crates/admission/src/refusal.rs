//! Why a request was not admitted, in the form the gateway needs: a status, a `Retry-After`
//! and a stable reason code for metrics and JSON bodies.

use std::fmt;
use std::time::Duration;

use crate::class::PriorityClass;

/// The reason a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The account or key already has its maximum in flight and queued (429).
    AccountLimit,
    /// The class's queue, or the whole waiting room, is full (503).
    QueueFull,
    /// The estimated wait is longer than the request's deadline; refused without waiting (503).
    WouldTimeOut,
    /// The request waited until its deadline without getting a slot (503).
    TimedOut,
    /// The request was waiting and gave its place to a more important class (503).
    Displaced,
}

impl RefusalReason {
    /// Number of reasons.
    pub const COUNT: usize = 5;
    /// Every reason, in [`RefusalReason::index`] order.
    pub const ALL: [RefusalReason; Self::COUNT] =
        [Self::AccountLimit, Self::QueueFull, Self::WouldTimeOut, Self::TimedOut, Self::Displaced];

    /// Position in [`RefusalReason::ALL`], for per-reason counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case code for metrics labels and JSON error bodies.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AccountLimit => "account_limit",
            Self::QueueFull => "queue_full",
            Self::WouldTimeOut => "would_time_out",
            Self::TimedOut => "timed_out",
            Self::Displaced => "displaced",
        }
    }

    /// 429 when the client itself is over its share (it should slow down), 503 when the
    /// service is short of capacity (anyone may retry later).
    pub const fn status(self) -> u16 {
        match self {
            Self::AccountLimit => 429,
            Self::QueueFull | Self::WouldTimeOut | Self::TimedOut | Self::Displaced => 503,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::AccountLimit => "too many requests in flight for this account",
            Self::QueueFull => "the queue is full",
            Self::WouldTimeOut => "the wait would exceed the deadline",
            Self::TimedOut => "no capacity became free before the deadline",
            Self::Displaced => "displaced from the queue by more important traffic",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A request that was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{class} request refused: {reason}")]
pub struct Refusal {
    class: PriorityClass,
    reason: RefusalReason,
    retry_after: Duration,
}

/// `Retry-After` hints stay within this range: at least a second (the header's unit), and
/// short enough that a client is not told to go away for long by a transient queue.
const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

impl Refusal {
    pub(crate) fn new(class: PriorityClass, reason: RefusalReason, retry_after: Duration) -> Self {
        Refusal { class, reason, retry_after: retry_after.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX) }
    }

    /// The class the request was refused in.
    pub fn class(&self) -> PriorityClass {
        self.class
    }

    /// Why it was refused.
    pub fn reason(&self) -> RefusalReason {
        self.reason
    }

    /// Stable snake_case code, e.g. `"queue_full"`.
    pub fn reason_code(&self) -> &'static str {
        self.reason.as_str()
    }

    /// HTTP status to answer with: 429 or 503.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// When a retry has a fair chance: the estimated time for the queue ahead to drain,
    /// between 1 and 60 seconds.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// [`Refusal::retry_after`] in whole seconds, rounded up, for the `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_statuses_and_retry_after() {
        let codes: Vec<_> = RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes, ["account_limit", "queue_full", "would_time_out", "timed_out", "displaced"]);
        for (i, reason) in RefusalReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let refusal = Refusal::new(PriorityClass::Member, RefusalReason::AccountLimit, Duration::from_millis(1500));
        assert_eq!((refusal.status(), refusal.reason_code(), refusal.retry_after_secs()), (429, "account_limit", 2));
        assert_eq!(refusal.to_string(), "member request refused: too many requests in flight for this account");
        let short = Refusal::new(PriorityClass::Anonymous, RefusalReason::Displaced, Duration::ZERO);
        assert_eq!((short.status(), short.retry_after_secs()), (503, 1));
        let long = Refusal::new(PriorityClass::Anonymous, RefusalReason::QueueFull, Duration::from_secs(3600));
        assert_eq!(long.retry_after(), Duration::from_secs(60));
    }
}
