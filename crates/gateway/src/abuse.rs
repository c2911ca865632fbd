//! Abuse of the API across requests, as pure bookkeeping (no HTTP; time is passed
//! in): strikes per caller that throttle, then suspend ([`Strikes`]), and the
//! activity signals that give strikes ([`activity`]). A caller is an account, or the
//! subnet digest of anonymous traffic (`shield::Client::subnet_digest`, ≥ 2^63).

pub mod activity;
pub mod cohort;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::validation::InvalidField;

/// Prompt fingerprints remembered per caller; `repeated_prompts` above this
/// could never be reached, so validation caps it here.
pub const RECENT_PROMPTS: usize = 64;

/// What happens to callers who collect strikes (input flagged, prompt leaked).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AbusePolicy {
    /// Strikes after which the caller's requests drop to the `anonymous` class.
    pub throttle_after: u32,
    /// Strikes after which the caller's `/v1` requests are refused (403).
    pub suspend_after: u32,
    /// Strikes are forgotten this long after the first one.
    pub window_s: u64,
    /// A strike when one caller sends the same prompt (ignoring case, spacing,
    /// punctuation and digits) this many times within `repeat_window_s` (0: off).
    pub repeated_prompts: u32,
    pub repeat_window_s: u64,
    /// A strike against a subnet (/24, /64) once this many accounts call from it (0: off).
    pub accounts_per_subnet: u32,
    /// A strike when an account's tokens in one minute exceed this multiple of
    /// its usual minute and `token_spike_floor` (0: off).
    pub token_spike_factor: f64,
    pub token_spike_floor: u64,
    /// Cohorts (see `cohort`): this many accounts (0: off), created within the same
    /// `cohort_created_window_s`, each running into its own limits within
    /// `cohort_recent_s`, from one network or with one prompt, are flagged together.
    pub cohort_min_accounts: u32,
    pub cohort_created_window_s: u64,
    pub cohort_recent_s: u64,
}

impl AbusePolicy {
    pub fn validate(&self, out: &mut Vec<InvalidField>) {
        let mut bad = |field: &str, reason: String| out.push(InvalidField { field: format!("abuse.{field}"), reason });
        if self.throttle_after == 0 || self.suspend_after == 0 {
            bad("throttle_after", "throttle_after and suspend_after must be at least 1".into());
        }
        if self.repeated_prompts as usize > RECENT_PROMPTS {
            bad("repeated_prompts", format!("at most {} (0 turns it off)", RECENT_PROMPTS));
        }
        if self.cohort_min_accounts == 1 {
            bad("cohort_min_accounts", "one account is not a cohort: at least 2 (0 turns it off)".into());
        }
        if self.cohort_min_accounts > 0 && (self.cohort_created_window_s == 0 || self.cohort_recent_s == 0) {
            bad("cohort_created_window_s", "cohort_created_window_s and cohort_recent_s must be at least 1".into());
        }
        if !(self.token_spike_factor >= 0.0 && self.token_spike_factor.is_finite()) {
            bad("token_spike_factor", "must be 0 (off) or a positive number".into());
        }
    }
}

impl AbusePolicy {
    pub fn cohorts(&self) -> cohort::CohortPolicy {
        cohort::CohortPolicy {
            min_accounts: self.cohort_min_accounts,
            created_window: Duration::from_secs(self.cohort_created_window_s),
            recent: Duration::from_secs(self.cohort_recent_s),
        }
    }
}

impl Default for AbusePolicy {
    fn default() -> Self {
        AbusePolicy {
            throttle_after: 3,
            suspend_after: 10,
            window_s: 24 * 3600,
            repeated_prompts: 20,
            repeat_window_s: 600,
            accounts_per_subnet: 50,
            token_spike_factor: 10.0,
            token_spike_floor: 50_000,
            cohort_min_accounts: 8,
            cohort_created_window_s: 3600,
            cohort_recent_s: 600,
        }
    }
}

/// Strikes per caller (an account, or the /24 or /64 of anonymous traffic).
/// Bounded: when full, entries past their window go first, then the fewest strikes.
pub struct Strikes {
    policy: AbusePolicy,
    entries: Mutex<HashMap<u64, Strike>>,
    capacity: usize,
    /// In a fleet: strikes given and forgiven here, for the fleet to hear (bounded by
    /// [`MAX_UNSENT`]); `None` on a single node.
    unsent: Option<Mutex<Vec<StrikeChange>>>,
}

/// Changes a fleet node holds for the shared state at most; more are kept locally only.
const MAX_UNSENT: usize = 10_000;

/// A change to a caller's strikes made on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrikeChange {
    Added { who: u64, reason: &'static str },
    Cleared { who: u64 },
}

/// Every reason a strike is given for, so one read back from the fleet names its reason
/// without an allocation per caller.
const REASONS: [&str; 5] =
    ["flagged_prompt", "prompt_leak", "repeated_prompt", "many_accounts_on_subnet", "token_spike"];

#[derive(Clone, Copy, Debug)]
struct Strike {
    count: u32,
    /// Why the latest strike was given.
    reason: &'static str,
    first: Instant,
    last: Instant,
}

/// One caller with strikes, as the operator sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flag {
    /// An account id, or a subnet digest (≥ 2^63) for anonymous traffic.
    pub caller: u64,
    pub strikes: u32,
    pub last_strike_s_ago: u64,
    pub last_reason: &'static str,
    pub standing: Standing,
}

/// What the strikes say about a caller now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Good,
    Throttled,
    Suspended,
}

impl Strikes {
    pub fn new(policy: AbusePolicy, capacity: usize) -> Strikes {
        Strikes { policy, entries: Mutex::new(HashMap::new()), capacity, unsent: None }
    }

    /// Keeps every change for [`Strikes::take_changes`]: this node is one of a fleet.
    pub fn shared(mut self) -> Strikes {
        self.unsent = Some(Mutex::new(Vec::new()));
        self
    }

    /// How long strikes are remembered after the first.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.policy.window_s)
    }

    /// The changes made here since the last call, oldest first.
    pub fn take_changes(&self) -> Vec<StrikeChange> {
        self.unsent
            .as_ref()
            .map(|u| std::mem::take(&mut *u.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }

    fn note(&self, change: StrikeChange) {
        if let Some(unsent) = &self.unsent {
            let mut unsent = unsent.lock().unwrap_or_else(|e| e.into_inner());
            if unsent.len() < MAX_UNSENT {
                unsent.push(change);
            }
        }
    }

    /// Replaces every caller's strikes with the fleet's: `(caller, count, reason, how
    /// long ago the first strike was, how long ago the latest)`.
    pub fn replace(&self, records: impl IntoIterator<Item = (u64, u32, String, Duration, Duration)>, now: Instant) {
        let window = self.window();
        let fresh: HashMap<u64, Strike> = records
            .into_iter()
            .filter(|(_, count, _, first_ago, _)| *count > 0 && *first_ago < window)
            .take(self.capacity)
            .map(|(who, count, reason, first_ago, last_ago)| {
                let reason = REASONS.iter().find(|r| **r == reason).copied().unwrap_or("shared");
                let at = |ago: Duration| now.checked_sub(ago).unwrap_or(now);
                (who, Strike { count, reason, first: at(first_ago), last: at(last_ago) })
            })
            .collect();
        *self.entries.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    pub fn add(&self, who: u64, reason: &'static str, now: Instant) -> u32 {
        self.note(StrikeChange::Added { who, reason });
        let window = Duration::from_secs(self.policy.window_s);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&who) {
            entries.retain(|_, s| now.duration_since(s.first) < window);
            if entries.len() >= self.capacity
                && let Some(victim) = entries.iter().min_by_key(|(_, s)| s.count).map(|(k, _)| *k)
            {
                entries.remove(&victim);
            }
        }
        let strike = entries.entry(who).or_insert(Strike { count: 0, reason, first: now, last: now });
        if now.duration_since(strike.first) >= window {
            *strike = Strike { count: 0, reason, first: now, last: now };
        }
        strike.count += 1;
        strike.reason = reason;
        strike.last = now;
        strike.count
    }

    pub fn standing(&self, who: u64, now: Instant) -> Standing {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.standing_of(entries.get(&who), now)
    }

    fn standing_of(&self, strike: Option<&Strike>, now: Instant) -> Standing {
        let count = match strike {
            Some(s) if now.saturating_duration_since(s.first) < Duration::from_secs(self.policy.window_s) => s.count,
            _ => 0,
        };
        if count >= self.policy.suspend_after {
            Standing::Suspended
        } else if count >= self.policy.throttle_after {
            Standing::Throttled
        } else {
            Standing::Good
        }
    }

    /// Callers with strikes, most first (at most `limit`).
    pub fn list(&self, limit: usize, now: Instant) -> Vec<Flag> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Flag> = entries
            .iter()
            .map(|(caller, s)| Flag {
                caller: *caller,
                strikes: s.count,
                last_strike_s_ago: now.saturating_duration_since(s.last).as_secs(),
                last_reason: s.reason,
                standing: self.standing_of(Some(s), now),
            })
            .collect();
        all.sort_by(|a, b| b.strikes.cmp(&a.strikes).then(a.caller.cmp(&b.caller)));
        all.truncate(limit);
        all
    }

    pub fn clear(&self, who: u64) -> bool {
        let had = self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&who).is_some();
        if had {
            self.note(StrikeChange::Cleared { who });
        }
        had
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_throttle_then_suspend_and_can_be_cleared() {
        let policy = AbusePolicy { throttle_after: 2, suspend_after: 3, window_s: 3600, ..AbusePolicy::default() };
        let strikes = Strikes::new(policy, 10);
        let t = Instant::now();
        assert_eq!(strikes.standing(1, t), Standing::Good);
        strikes.add(1, "test", t);
        assert_eq!(strikes.standing(1, t), Standing::Good);
        strikes.add(1, "test", t);
        assert_eq!(strikes.standing(1, t), Standing::Throttled);
        strikes.add(1, "test", t);
        assert_eq!(strikes.standing(1, t), Standing::Suspended);
        let flags = strikes.list(10, t);
        assert_eq!(
            (flags[0].caller, flags[0].strikes, flags[0].last_reason, flags[0].standing),
            (1, 3, "test", Standing::Suspended)
        );
        assert_eq!(flags.len(), 1);
        assert!(strikes.clear(1));
        assert_eq!(strikes.standing(1, t), Standing::Good);
    }

    #[test]
    fn strikes_stay_bounded() {
        let strikes = Strikes::new(AbusePolicy::default(), 4);
        let t = Instant::now();
        for who in 0..100 {
            strikes.add(who, "test", t);
        }
        assert!(strikes.list(1000, t).len() <= 4);
    }
}
