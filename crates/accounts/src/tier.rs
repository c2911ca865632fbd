//! An account's trust tier, from what an attacker cannot buy quickly: the account's age, a
//! record of ordinary use that began before the current attack, and the operator's word (a
//! pin, or a cohort flag). Pure: the caller passes the account's [`Tenure`], the time, and
//! when the current attack began.
//!
//! Payment is not known to Palisade; an operator who knows an account pays pins it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How far an account is trusted, most trusted first. `Newcomer` takes the account out of the
/// member class altogether (what a verified farm account becomes under attack).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustTier {
    Established,
    Standard,
    Recent,
    Newcomer,
}

impl TrustTier {
    pub const COUNT: usize = 4;
    pub const ALL: [TrustTier; Self::COUNT] = [Self::Established, Self::Standard, Self::Recent, Self::Newcomer];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::Standard => "standard",
            Self::Recent => "recent",
            Self::Newcomer => "newcomer",
        }
    }

    /// 0 for the most trusted; an index into per-tier arrays.
    pub const fn rank(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TrustTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier name that is not one of `established`, `standard`, `recent`, `newcomer`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?}; expected established, standard, recent or newcomer")]
pub struct ParseTrustTierError(String);

impl FromStr for TrustTier {
    type Err = ParseTrustTierError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| ParseTrustTierError(s.to_owned()))
    }
}

/// Why an account got its tier: a closed set, for metrics labels and the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TierReason {
    /// The operator pinned it.
    Pinned,
    /// Flagged as one of a cohort of accounts registered together and used alike.
    Cohort,
    /// Created during the current attack or within the window before it.
    CreatedNearAttack,
    /// Old enough, with enough days of use that began before any attack.
    Tenure,
    /// Younger than the recent window.
    Young,
    /// None of the above.
    Ordinary,
}

impl TierReason {
    pub const COUNT: usize = 6;
    pub const ALL: [TierReason; Self::COUNT] =
        [Self::Pinned, Self::Cohort, Self::CreatedNearAttack, Self::Tenure, Self::Young, Self::Ordinary];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Cohort => "cohort",
            Self::CreatedNearAttack => "created_near_attack",
            Self::Tenure => "tenure",
            Self::Young => "young",
            Self::Ordinary => "ordinary",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What the store knows about an account's history; times in Unix milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tenure {
    pub created_at: i64,
    pub first_used_at: Option<i64>,
    pub used_days: i64,
    pub pin: Option<TrustTier>,
    pub flagged: bool,
}

/// The `[accounts.tiers]` section: when an account counts as established or recent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// Account age (days) from which it may be established.
    pub established_after_days: u32,
    /// Distinct days of use it needs as well, the first of them before any current attack.
    pub established_use_days: u32,
    /// Accounts younger than this (hours) are recent.
    pub recent_hours: u32,
    /// Under attack, accounts created during the attack or up to this many hours before it
    /// began drop to the newcomer class.
    pub attack_window_hours: u32,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig { established_after_days: 14, established_use_days: 3, recent_hours: 72, attack_window_hours: 24 }
    }
}

const HOUR_MS: i64 = 3_600_000;

impl TierConfig {
    /// Every problem, each naming its field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if self.established_after_days > 3650 {
            errors.push(format!("{prefix}.established_after_days ({}) must be ≤ 3650", self.established_after_days));
        }
        for (name, hours) in [("recent_hours", self.recent_hours), ("attack_window_hours", self.attack_window_hours)] {
            if hours > 24 * 3650 {
                errors.push(format!("{prefix}.{name} ({hours}) must be ≤ 87600"));
            }
        }
        errors
    }

    /// The window before an attack whose accounts drop to the newcomer class.
    pub fn attack_window(&self) -> Duration {
        Duration::from_secs(u64::from(self.attack_window_hours) * 3600)
    }

    /// The tier of an account with `tenure` at `now`, with `attack_since` the start of the
    /// current attack, if any.
    pub fn decide(&self, tenure: &Tenure, now: i64, attack_since: Option<i64>) -> (TrustTier, TierReason) {
        if let Some(pin) = tenure.pin {
            return (pin, TierReason::Pinned);
        }
        if tenure.flagged {
            return (TrustTier::Newcomer, TierReason::Cohort);
        }
        if let Some(since) = attack_since
            && tenure.created_at >= since.saturating_sub(i64::from(self.attack_window_hours) * HOUR_MS)
        {
            return (TrustTier::Newcomer, TierReason::CreatedNearAttack);
        }
        let age = now.saturating_sub(tenure.created_at);
        // Use counts only if it began before the attack (or now, in peace): days of use an
        // account piles up during an attack prove nothing.
        let used_before = tenure.first_used_at.is_some_and(|first| first < attack_since.unwrap_or(now));
        if age >= i64::from(self.established_after_days) * 24 * HOUR_MS
            && used_before
            && tenure.used_days >= i64::from(self.established_use_days)
        {
            return (TrustTier::Established, TierReason::Tenure);
        }
        if age < i64::from(self.recent_hours) * HOUR_MS {
            return (TrustTier::Recent, TierReason::Young);
        }
        (TrustTier::Standard, TierReason::Ordinary)
    }
}

/// One value per tier, written in configuration as a table naming all four.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByTier<T> {
    pub established: T,
    pub standard: T,
    pub recent: T,
    pub newcomer: T,
}

impl<T: Copy> ByTier<T> {
    pub fn get(&self, tier: TrustTier) -> T {
        match tier {
            TrustTier::Established => self.established,
            TrustTier::Standard => self.standard,
            TrustTier::Recent => self.recent,
            TrustTier::Newcomer => self.newcomer,
        }
    }
}

/// How much an account of each tier may do. Ramps up with tenure, so a fresh account (a
/// farm's) holds little even before admission has to choose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierLimits {
    /// Requests one account may have in flight and queued.
    pub max_in_flight: ByTier<u32>,
    /// Fraction of the per-account request rate and token budget it gets.
    pub budget_fraction: ByTier<f64>,
}

impl Default for TierLimits {
    fn default() -> Self {
        TierLimits {
            max_in_flight: ByTier { established: 16, standard: 8, recent: 2, newcomer: 1 },
            budget_fraction: ByTier { established: 1.0, standard: 1.0, recent: 0.5, newcomer: 0.25 },
        }
    }
}

impl TierLimits {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for tier in TrustTier::ALL {
            let n = self.max_in_flight.get(tier);
            if n == 0 || n > 100_000 {
                errors.push(format!("{prefix}.max_in_flight.{tier} ({n}) must be between 1 and 100000"));
            }
            let f = self.budget_fraction.get(tier);
            if !(f > 0.0 && f <= 1.0) {
                errors.push(format!("{prefix}.budget_fraction.{tier} ({f}) must be > 0 and ≤ 1"));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * HOUR_MS;

    fn account(created_days_ago: i64, first_use_days_ago: Option<i64>, used_days: i64) -> (Tenure, i64) {
        let now = 1_000 * DAY;
        let tenure = Tenure {
            created_at: now - created_days_ago * DAY,
            first_used_at: first_use_days_ago.map(|d| now - d * DAY),
            used_days,
            ..Tenure::default()
        };
        (tenure, now)
    }

    #[test]
    fn age_and_use_before_the_attack_make_an_account_established() {
        let c = TierConfig::default();
        let (old, now) = account(60, Some(50), 10);
        assert_eq!(c.decide(&old, now, None), (TrustTier::Established, TierReason::Tenure));
        assert_eq!(c.decide(&old, now, Some(now - HOUR_MS)).0, TrustTier::Established, "still, under attack");
        let (unused, now) = account(60, None, 0);
        assert_eq!(c.decide(&unused, now, None), (TrustTier::Standard, TierReason::Ordinary));
        let (little_use, now) = account(60, Some(2), 2);
        assert_eq!(c.decide(&little_use, now, None).0, TrustTier::Standard);
        let (young, now) = account(1, Some(1), 1);
        assert_eq!(c.decide(&young, now, None), (TrustTier::Recent, TierReason::Young));
    }

    #[test]
    fn use_that_began_during_the_attack_does_not_count() {
        let c = TierConfig::default();
        // A dormant old account woken up by the attacker during a long attack.
        let (woken, now) = account(60, Some(3), 3);
        let attack_since = now - 5 * DAY;
        assert_eq!(c.decide(&woken, now, Some(attack_since)).0, TrustTier::Standard);
        assert_eq!(c.decide(&woken, now, None).0, TrustTier::Established);
    }

    #[test]
    fn accounts_created_near_an_attack_drop_to_newcomer_and_pins_win() {
        let c = TierConfig::default();
        let (farm, now) = account(0, None, 0);
        let attack_since = now - 600_000;
        assert_eq!(c.decide(&farm, now, Some(attack_since)), (TrustTier::Newcomer, TierReason::CreatedNearAttack));
        assert_eq!(c.decide(&farm, now, None).0, TrustTier::Recent, "recent, not demoted, in peace");
        let (day_before, now) = account(1, None, 0);
        assert_eq!(c.decide(&day_before, now, Some(now)).0, TrustTier::Newcomer, "inside the 24 h window");
        let (two_days, now) = account(2, None, 0);
        assert_eq!(c.decide(&two_days, now, Some(now)).0, TrustTier::Recent, "outside it");
        let pinned = Tenure { pin: Some(TrustTier::Established), ..farm };
        assert_eq!(c.decide(&pinned, now, Some(now)), (TrustTier::Established, TierReason::Pinned));
        let flagged = Tenure { flagged: true, ..account(60, Some(50), 10).0 };
        assert_eq!(c.decide(&flagged, now, None), (TrustTier::Newcomer, TierReason::Cohort));
    }

    #[test]
    fn names_round_trip_and_defaults_validate() {
        for tier in TrustTier::ALL {
            assert_eq!(tier.as_str().parse::<TrustTier>(), Ok(tier));
        }
        assert!("gold".parse::<TrustTier>().is_err());
        assert!(TierConfig::default().validate("accounts.tiers").is_empty());
        assert!(TierLimits::default().validate("accounts.tier_limits").is_empty());
        let mut bad = TierLimits::default();
        bad.max_in_flight.established = 0;
        bad.budget_fraction.standard = 2.0;
        assert_eq!(
            bad.validate("x"),
            vec![
                "x.max_in_flight.established (0) must be between 1 and 100000".to_owned(),
                "x.budget_fraction.standard (2) must be > 0 and ≤ 1".to_owned(),
            ]
        );
    }
}
