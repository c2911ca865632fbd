//! The `[admission]` configuration: limit bounds, per-class queues, shares and waits, account caps.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::class::{PerClass, PriorityClass};
use crate::tier::{PerTier, Tier};

/// How requests are admitted toward the upstream pool.
///
/// Per-class tables (`max_share`, `queue_capacity`, `max_wait_ms`) may name only the classes
/// they change; the others keep their defaults:
///
/// ```toml
/// [admission.max_share]
/// anonymous = 0.4
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// `false` admits every request at once (still counted): for comparison and emergencies.
    pub enabled: bool,
    /// Waiters of all classes together. When it is full, an arrival displaces the newest waiter
    /// of the least important class below its own, or is refused if there is none.
    pub max_queued: u32,
    /// Requests one account or key may have in flight and queued together; more get 429.
    /// A key may carry its own value ([`crate::AdmissionRequest::max_in_flight`]).
    pub per_account_max_in_flight: u32,
    /// Largest fraction of its class's allowance one account may hold in flight (at least one
    /// request). Further requests of that account wait while other accounts are served.
    pub account_share: f64,
    /// The adaptive concurrency limit toward the upstream pool.
    pub limit: LimitConfig,
    /// Largest fraction of the current limit that a class *and every class below it together*
    /// may hold. Must not increase down the classes. Nested shares are what keep capacity for
    /// members: with the defaults a flood of anonymous, newcomer and login traffic together
    /// never holds more than 75% of the limit, and anonymous traffic alone never more than half.
    #[serde(deserialize_with = "de_max_share")]
    pub max_share: PerClass<f64>,
    /// Waiters each class may have queued; more are refused with `queue_full`.
    #[serde(deserialize_with = "de_queue_capacity")]
    pub queue_capacity: PerClass<u32>,
    /// Longest a request of each class waits for a slot. A request whose estimated wait is
    /// longer is refused at once (`would_time_out`) rather than after the wait.
    #[serde(deserialize_with = "de_max_wait_ms")]
    pub max_wait_ms: PerClass<u64>,
    /// Weight of each trust tier when the accounts of one class compete for a freed slot: it
    /// goes to the waiting tier whose in-flight count divided by its weight is smallest
    /// (weighted max-min fairness). Far apart by default, so established demand is met first.
    #[serde(deserialize_with = "de_tier_weight")]
    pub tier_weight: PerTier<f64>,
    /// Largest fraction of its class's allowance that a tier *and every tier below it
    /// together* may hold, nested like `max_share`: recent accounts may never hold the slots an
    /// established member arriving next would need. Must not increase down the tiers.
    #[serde(deserialize_with = "de_tier_share")]
    pub tier_share: PerTier<f64>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            max_queued: 2048,
            per_account_max_in_flight: 16,
            account_share: 0.25,
            limit: LimitConfig::default(),
            max_share: default_max_share(),
            queue_capacity: default_queue_capacity(),
            max_wait_ms: default_max_wait_ms(),
            tier_weight: default_tier_weight(),
            tier_share: default_tier_share(),
        }
    }
}

/// 16 : 4 : 1, so a tier must hold many times its elders' slots before it is served before them.
fn default_tier_weight() -> PerTier<f64> {
    PerTier([16.0, 4.0, 1.0])
}

/// Recent accounts together hold at most half of their class's allowance.
fn default_tier_share() -> PerTier<f64> {
    PerTier([1.0, 1.0, 0.5])
}

/// Operator and members may use the whole limit; each lower class less, so that a flood of
/// them leaves room that members take without waiting.
fn default_max_share() -> PerClass<f64> {
    PerClass([1.0, 1.0, 0.75, 0.6, 0.5])
}

/// Members may queue the most; a flood's queue is bounded well below it.
fn default_queue_capacity() -> PerClass<u32> {
    PerClass([128, 2048, 512, 1024, 1024])
}

/// Login is interactive and cheap to retry; chat users and a flash crowd of newcomers wait longer.
fn default_max_wait_ms() -> PerClass<u64> {
    PerClass([10_000, 20_000, 5_000, 20_000, 10_000])
}

/// Parameters of the [`crate::AdaptiveLimit`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Limit at start. Set it at most twice the upstreams' real capacity: the limit grows quickly
    /// when it is used, and it learns the unloaded latency from requests that start with at most
    /// half of this in flight.
    pub initial: u32,
    /// The limit never goes below this.
    pub min: u32,
    /// The limit never goes above this.
    pub max: u32,
    /// The smoothed latency may reach this multiple of the unloaded baseline before the limit
    /// is lowered. Lower protects members' latency better; higher gives more throughput.
    pub tolerance: f64,
    /// Factor applied on an overload signal (upstream 429/503/timeout), and the smallest cut
    /// when latency is too high; a larger latency excess cuts more, down to half.
    pub backoff: f64,
    /// Samples averaged into the short-term latency.
    pub smoothing_samples: u32,
    /// Samples averaged into the unloaded baseline latency.
    pub baseline_samples: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            initial: 16,
            min: 2,
            max: 1024,
            tolerance: 1.25,
            backoff: 0.9,
            smoothing_samples: 20,
            baseline_samples: 500,
        }
    }
}

/// Queue and wait bounds that keep memory small whatever the configuration says.
const MAX_QUEUE: u32 = 1_000_000;
const MAX_WAIT: Duration = Duration::from_secs(3600);
const MAX_LIMIT: u32 = 1_000_000;

impl AdmissionConfig {
    /// Every problem with the configuration, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let limit = &self.limit;
        if limit.min < 1 {
            errors.push("admission.limit.min must be at least 1".to_owned());
        }
        if limit.min > limit.max {
            errors.push(format!("admission.limit.min ({}) must be ≤ admission.limit.max ({})", limit.min, limit.max));
        }
        if limit.max > MAX_LIMIT {
            errors.push(format!("admission.limit.max ({}) must be ≤ {MAX_LIMIT}", limit.max));
        }
        if limit.initial < limit.min || limit.initial > limit.max {
            errors.push(format!(
                "admission.limit.initial ({}) must be between admission.limit.min ({}) and admission.limit.max ({})",
                limit.initial, limit.min, limit.max
            ));
        }
        if !(limit.tolerance > 1.0 && limit.tolerance <= 10.0) {
            errors.push(format!("admission.limit.tolerance ({}) must be > 1 and ≤ 10", limit.tolerance));
        }
        if !(limit.backoff >= 0.5 && limit.backoff < 1.0) {
            errors.push(format!("admission.limit.backoff ({}) must be ≥ 0.5 and < 1", limit.backoff));
        }
        if limit.smoothing_samples < 1 {
            errors.push("admission.limit.smoothing_samples must be at least 1".to_owned());
        }
        if limit.baseline_samples < limit.smoothing_samples {
            errors.push(format!(
                "admission.limit.baseline_samples ({}) must be ≥ admission.limit.smoothing_samples ({})",
                limit.baseline_samples, limit.smoothing_samples
            ));
        }
        let mut above: Option<(PriorityClass, f64)> = None;
        for (class, &share) in self.max_share.iter() {
            if !(share > 0.0 && share <= 1.0) {
                errors.push(format!("admission.max_share.{class} ({share}) must be > 0 and ≤ 1"));
            } else if let Some((higher, higher_share)) = above
                && share > higher_share
            {
                errors.push(format!(
                    "admission.max_share.{class} ({share}) must be ≤ admission.max_share.{higher} ({higher_share})"
                ));
            }
            above = Some((class, share));
        }
        for (class, &capacity) in self.queue_capacity.iter() {
            if capacity > MAX_QUEUE {
                errors.push(format!("admission.queue_capacity.{class} ({capacity}) must be ≤ {MAX_QUEUE}"));
            }
        }
        if self.max_queued > MAX_QUEUE {
            errors.push(format!("admission.max_queued ({}) must be ≤ {MAX_QUEUE}", self.max_queued));
        }
        for (class, &wait) in self.max_wait_ms.iter() {
            if Duration::from_millis(wait) > MAX_WAIT {
                errors.push(format!("admission.max_wait_ms.{class} ({wait}) must be ≤ {}", MAX_WAIT.as_millis()));
            }
        }
        for (tier, &weight) in self.tier_weight.iter() {
            if !(weight > 0.0 && weight <= 1e6) {
                errors.push(format!("admission.tier_weight.{tier} ({weight}) must be > 0 and ≤ 1000000"));
            }
        }
        let mut above: Option<(Tier, f64)> = None;
        for (tier, &share) in self.tier_share.iter() {
            if !(share > 0.0 && share <= 1.0) {
                errors.push(format!("admission.tier_share.{tier} ({share}) must be > 0 and ≤ 1"));
            } else if let Some((higher, higher_share)) = above
                && share > higher_share
            {
                errors.push(format!(
                    "admission.tier_share.{tier} ({share}) must be ≤ admission.tier_share.{higher} ({higher_share})"
                ));
            }
            above = Some((tier, share));
        }
        if self.per_account_max_in_flight < 1 {
            errors.push("admission.per_account_max_in_flight must be at least 1".to_owned());
        }
        if !(self.account_share > 0.0 && self.account_share <= 1.0) {
            errors.push(format!("admission.account_share ({}) must be > 0 and ≤ 1", self.account_share));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The longest wait allowed for `class`.
    pub fn max_wait(&self, class: PriorityClass) -> Duration {
        Duration::from_millis(self.max_wait_ms[class])
    }
}

/// Reads a per-class table that names some classes and lets the others keep `defaults`.
fn merge_onto<'de, D, T>(deserializer: D, defaults: PerClass<T>) -> Result<PerClass<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut merged = defaults;
    for (class, value) in BTreeMap::<PriorityClass, T>::deserialize(deserializer)? {
        merged[class] = value;
    }
    Ok(merged)
}

/// Reads a per-tier table that names some tiers and lets the others keep `defaults`.
fn merge_tiers<'de, D, T>(deserializer: D, defaults: PerTier<T>) -> Result<PerTier<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut merged = defaults;
    for (tier, value) in BTreeMap::<Tier, T>::deserialize(deserializer)? {
        merged[tier] = value;
    }
    Ok(merged)
}

fn de_tier_weight<'de, D: Deserializer<'de>>(d: D) -> Result<PerTier<f64>, D::Error> {
    merge_tiers(d, default_tier_weight())
}

fn de_tier_share<'de, D: Deserializer<'de>>(d: D) -> Result<PerTier<f64>, D::Error> {
    merge_tiers(d, default_tier_share())
}

fn de_max_share<'de, D: Deserializer<'de>>(d: D) -> Result<PerClass<f64>, D::Error> {
    merge_onto(d, default_max_share())
}

fn de_queue_capacity<'de, D: Deserializer<'de>>(d: D) -> Result<PerClass<u32>, D::Error> {
    merge_onto(d, default_queue_capacity())
}

fn de_max_wait_ms<'de, D: Deserializer<'de>>(d: D) -> Result<PerClass<u64>, D::Error> {
    merge_onto(d, default_max_wait_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let config = AdmissionConfig::default();
        assert_eq!(config.validate(), Ok(()));
        let text = toml::to_string(&config).expect("serialises");
        let back: AdmissionConfig = toml::from_str(&text).expect("parses");
        assert_eq!(back, config);
        let empty: AdmissionConfig = toml::from_str("").expect("parses");
        assert_eq!(empty, config);
    }

    #[test]
    fn a_partial_class_table_keeps_the_other_defaults() {
        let config: AdmissionConfig =
            toml::from_str("[max_share]\nanonymous = 0.4\n[max_wait_ms]\nmember = 5000\n").expect("parses");
        assert_eq!(config.max_share.0, [1.0, 1.0, 0.75, 0.6, 0.4]);
        assert_eq!(config.max_wait(PriorityClass::Member), Duration::from_secs(5));
        assert_eq!(config.max_wait(PriorityClass::Login), Duration::from_secs(5));
        assert_eq!(config.queue_capacity, default_queue_capacity());
        let tiers: AdmissionConfig = toml::from_str("[tier_share]\nrecent = 0.25\n").expect("parses");
        assert_eq!(tiers.tier_share.0, [1.0, 1.0, 0.25]);
        assert_eq!(tiers.tier_weight, default_tier_weight());
    }

    #[test]
    fn unknown_fields_and_classes_are_rejected() {
        let unknown_field = toml::from_str::<AdmissionConfig>("enable = true").unwrap_err();
        assert!(unknown_field.to_string().contains("enable"), "{unknown_field}");
        let unknown_class = toml::from_str::<AdmissionConfig>("[max_share]\nanon = 0.4").unwrap_err();
        assert!(unknown_class.to_string().contains("anon"), "{unknown_class}");
    }

    #[test]
    fn validation_names_every_bad_field() {
        let mut config = AdmissionConfig::default();
        config.limit.min = 10;
        config.limit.max = 5;
        config.limit.tolerance = 1.0;
        config.max_share[PriorityClass::Anonymous] = 0.9;
        config.account_share = 0.0;
        config.max_wait_ms[PriorityClass::Login] = 10_000_000;
        config.tier_share[Tier::Recent] = 0.0;
        let errors = config.validate().unwrap_err();
        let all = errors.join("\n");
        for field in [
            "admission.limit.min (10) must be ≤ admission.limit.max (5)",
            "admission.limit.initial",
            "admission.limit.tolerance",
            "admission.max_share.anonymous (0.9) must be ≤ admission.max_share.newcomer (0.6)",
            "admission.account_share",
            "admission.max_wait_ms.login",
            "admission.tier_share.recent",
        ] {
            assert!(all.contains(field), "missing {field:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 7, "{all}");
    }

    #[test]
    fn nan_is_rejected() {
        let mut config = AdmissionConfig::default();
        config.limit.backoff = f64::NAN;
        config.max_share[PriorityClass::Member] = f64::NAN;
        let errors = config.validate().unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
