//! The shield's configuration: one serde struct with defaults that work alone, and a
//! `validate` that names the offending field (relative to the `[shield]` section).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::attack::{AttackConfig, MetricConfig};
use crate::botscore::BotScoreConfig;
use crate::gcra::{Gcra, GcraError};
use crate::pow::MAX_DIFFICULTY;
use crate::waiting_room::WaitingRoomConfig;

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// Dotted path below the shield section, e.g. `limits.per_ip.burst`.
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), problem: problem.into() }
}

/// `count` tokens every `period_ms`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub count: u32,
    pub period_ms: u64,
    pub burst: u32,
}

impl RateConfig {
    pub const fn new(count: u32, period_ms: u64, burst: u32) -> Self {
        Self { count, period_ms, burst }
    }

    pub fn gcra(&self) -> Result<Gcra, GcraError> {
        Gcra::per_period(self.count, Duration::from_millis(self.period_ms), self.burst)
    }

    fn check(&self, field: &str) -> Result<Gcra, ConfigError> {
        if self.period_ms == 0 {
            return Err(bad(format!("{field}.period_ms"), "must be at least 1"));
        }
        self.gcra().map_err(|e| {
            let which = match e {
                GcraError::ZeroBurst => "burst",
                GcraError::ZeroCount => "count",
                GcraError::Interval | GcraError::TooLong => "period_ms",
            };
            bad(format!("{field}.{which}"), e.to_string())
        })
    }
}

/// What a per-route limit is keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Ip,
    Subnet,
    /// The logged-in account, or the address for anonymous requests.
    Account,
}

/// An extra limit for one route (the gateway maps paths to route names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimit {
    pub route: String,
    pub per: Subject,
    pub rate: RateConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Clients are grouped into subnets of these lengths for per-subnet limits.
    pub v4_subnet_prefix: u8,
    pub v6_subnet_prefix: u8,
    pub per_ip: RateConfig,
    pub per_subnet: RateConfig,
    pub per_account: RateConfig,
    pub per_api_key: RateConfig,
    /// Inference tokens (prompt + completion) per account.
    pub account_tokens: RateConfig,
    /// Inference requests one account may have in flight across a fleet (leases in the
    /// shared state); on a single node admission's per-account limit applies instead.
    pub concurrent_per_account: u32,
    pub routes: Vec<RouteLimit>,
    /// Entries per table (16 bytes each; rounded up to a power of two × 128).
    pub ip_entries: usize,
    pub subnet_entries: usize,
    pub account_entries: usize,
    pub api_key_entries: usize,
    pub route_entries: usize,
    /// Accounts with requests in flight tracked at once.
    pub in_flight_entries: usize,
}

impl LimitsConfig {
    /// The subnet prefixes as one value, for [`crate::Client::new`].
    pub fn prefixes(&self) -> crate::client::SubnetPrefixes {
        crate::client::SubnetPrefixes { v4: self.v4_subnet_prefix, v6: self.v6_subnet_prefix }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            v4_subnet_prefix: 24,
            v6_subnet_prefix: 64,
            per_ip: RateConfig::new(20, 1_000, 60),
            per_subnet: RateConfig::new(200, 1_000, 400),
            per_account: RateConfig::new(20, 1_000, 60),
            per_api_key: RateConfig::new(50, 1_000, 100),
            account_tokens: RateConfig::new(60_000, 60_000, 60_000),
            concurrent_per_account: 8,
            routes: vec![
                RouteLimit { route: "register".into(), per: Subject::Subnet, rate: RateConfig::new(10, 60_000, 10) },
                RouteLimit { route: "login".into(), per: Subject::Ip, rate: RateConfig::new(10, 60_000, 10) },
            ],
            ip_entries: 262_144,
            subnet_entries: 65_536,
            account_entries: 262_144,
            api_key_entries: 65_536,
            route_entries: 65_536,
            in_flight_entries: 65_536,
        }
    }
}

/// Largest table accepted: 2^26 entries is 1 GiB of limiter state.
const MAX_TABLE_ENTRIES: usize = 1 << 26;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockListConfig {
    /// Entries per list (allow and block each).
    pub max_entries: usize,
}

impl Default for BlockListConfig {
    fn default() -> Self {
        Self { max_entries: 100_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowConfig {
    /// Leading zero bits asked of a newcomer in normal times (16 ≈ 65,536 hashes).
    pub base_difficulty: u8,
    /// … while under attack.
    pub under_attack_difficulty: u8,
    /// One more bit per this many bot-score points …
    pub score_points_per_bit: u8,
    /// … up to this difficulty.
    pub max_difficulty: u8,
    pub challenge_ttl_ms: u64,
    pub clearance_ttl_ms: u64,
    /// Requests one clearance buys.
    pub clearance_budget: u32,
    /// Redeemed challenges remembered at once (16 bytes each); see `ReplayGuard`.
    pub replay_capacity: usize,
    /// Clearance budgets tracked at once (24 bytes each).
    pub clearance_entries: usize,
}

impl Default for PowConfig {
    fn default() -> Self {
        Self {
            base_difficulty: 16,
            under_attack_difficulty: 20,
            score_points_per_bit: 25,
            max_difficulty: 24,
            challenge_ttl_ms: 120_000,
            clearance_ttl_ms: 1_800_000,
            clearance_budget: 300,
            replay_capacity: 1 << 20,
            clearance_entries: 1 << 18,
        }
    }
}

impl PowConfig {
    /// The difficulty for a client: the base (or the under-attack level), plus a bit per
    /// `score_points_per_bit` of bot score, capped at `max_difficulty`.
    pub fn difficulty(&self, under_attack: bool, bot_score: u8) -> u8 {
        let base = if under_attack { self.under_attack_difficulty } else { self.base_difficulty };
        let extra = bot_score.checked_div(self.score_points_per_bit).unwrap_or(0);
        base.saturating_add(extra).min(self.max_difficulty).min(MAX_DIFFICULTY)
    }
}

/// Everything the edge defence needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShieldConfig {
    pub blocklist: BlockListConfig,
    pub limits: LimitsConfig,
    pub pow: PowConfig,
    pub bot: BotScoreConfig,
    pub attack: AttackConfig,
    pub waiting_room: WaitingRoomConfig,
}

fn positive(field: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 { Ok(()) } else { Err(bad(field, "must be a positive number")) }
}

fn table(field: &str, n: usize) -> Result<(), ConfigError> {
    if (1..=MAX_TABLE_ENTRIES).contains(&n) {
        Ok(())
    } else {
        Err(bad(field, format!("must be between 1 and {MAX_TABLE_ENTRIES}")))
    }
}

fn nonzero(field: &str, v: u64) -> Result<(), ConfigError> {
    if v > 0 { Ok(()) } else { Err(bad(field, "must be at least 1")) }
}

impl ShieldConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.v4_subnet_prefix > 32 {
            return Err(bad("limits.v4_subnet_prefix", "must be at most 32"));
        }
        if l.v6_subnet_prefix > 128 {
            return Err(bad("limits.v6_subnet_prefix", "must be at most 128"));
        }
        l.per_ip.check("limits.per_ip")?;
        l.per_subnet.check("limits.per_subnet")?;
        l.per_account.check("limits.per_account")?;
        l.per_api_key.check("limits.per_api_key")?;
        l.account_tokens.check("limits.account_tokens")?;
        nonzero("limits.concurrent_per_account", u64::from(l.concurrent_per_account))?;
        if l.routes.len() > usize::from(crate::table::MAX_ROUTES) {
            return Err(bad("limits.routes", format!("at most {} routes", crate::table::MAX_ROUTES)));
        }
        for (i, r) in l.routes.iter().enumerate() {
            let field = format!("limits.routes[{i}]");
            if r.route.trim().is_empty() {
                return Err(bad(format!("{field}.route"), "must not be empty"));
            }
            if l.routes[..i].iter().any(|o| o.route == r.route && o.per == r.per) {
                return Err(bad(format!("{field}.route"), format!("`{}` per {:?} is listed twice", r.route, r.per)));
            }
            r.rate.check(&format!("{field}.rate"))?;
        }
        table("limits.ip_entries", l.ip_entries)?;
        table("limits.subnet_entries", l.subnet_entries)?;
        table("limits.account_entries", l.account_entries)?;
        table("limits.api_key_entries", l.api_key_entries)?;
        table("limits.route_entries", l.route_entries)?;
        table("limits.in_flight_entries", l.in_flight_entries)?;

        table("blocklist.max_entries", self.blocklist.max_entries)?;

        let p = &self.pow;
        for (field, d) in [
            ("pow.base_difficulty", p.base_difficulty),
            ("pow.under_attack_difficulty", p.under_attack_difficulty),
            ("pow.max_difficulty", p.max_difficulty),
        ] {
            if d > MAX_DIFFICULTY {
                return Err(bad(field, format!("must be at most {MAX_DIFFICULTY}")));
            }
        }
        if p.base_difficulty > p.max_difficulty || p.under_attack_difficulty > p.max_difficulty {
            return Err(bad("pow.max_difficulty", "must be at least base_difficulty and under_attack_difficulty"));
        }
        nonzero("pow.challenge_ttl_ms", p.challenge_ttl_ms)?;
        if !(1_000..=86_400_000).contains(&p.clearance_ttl_ms) {
            return Err(bad("pow.clearance_ttl_ms", "must be between 1000 (1 s) and 86400000 (1 day)"));
        }
        nonzero("pow.clearance_budget", u64::from(p.clearance_budget))?;
        table("pow.replay_capacity", p.replay_capacity)?;
        table("pow.clearance_entries", p.clearance_entries)?;

        let b = &self.bot;
        if !(b.challenge_at <= b.limit_at && b.limit_at <= b.block_at) {
            return Err(bad("bot.challenge_at", "thresholds must satisfy challenge_at ≤ limit_at ≤ block_at"));
        }
        if b.block_at > 100 {
            return Err(bad("bot.block_at", "scores run from 0 to 100"));
        }
        positive("bot.signups_per_hour", f64::from(b.signups_per_hour))?;
        positive("bot.timing_max_cv", f64::from(b.timing_max_cv))?;
        if b.reputation_floor > 100 {
            return Err(bad("bot.reputation_floor", "reputation runs from 0 to 100"));
        }

        let a = &self.attack;
        nonzero("attack.fast_window_ms", a.fast_window_ms)?;
        if a.slow_window_ms <= a.fast_window_ms {
            return Err(bad("attack.slow_window_ms", "must be longer than fast_window_ms"));
        }
        if !(a.exit_ratio.is_finite() && a.exit_ratio > 0.0 && a.exit_ratio < 1.0) {
            return Err(bad("attack.exit_ratio", "must be between 0 and 1 (exclusive)"));
        }
        let metrics: [(&str, &MetricConfig); 4] = [
            ("requests", &a.requests),
            ("signups", &a.signups),
            ("login_failures", &a.login_failures),
            ("shed", &a.shed),
        ];
        for (name, m) in metrics {
            positive(&format!("attack.{name}.floor_per_sec"), m.floor_per_sec)?;
            if !(m.enter_factor.is_finite() && m.enter_factor > 1.0) {
                return Err(bad(format!("attack.{name}.enter_factor"), "must be greater than 1"));
            }
        }

        let w = &self.waiting_room;
        if !(1..=10_000_000).contains(&w.capacity) {
            return Err(bad("waiting_room.capacity", "must be between 1 and 10000000"));
        }
        if !(w.admit_per_sec.is_finite() && w.admit_per_sec >= 0.0) {
            return Err(bad("waiting_room.admit_per_sec", "must be zero (manual admission) or positive"));
        }
        nonzero("waiting_room.admit_burst", u64::from(w.admit_burst))?;
        nonzero("waiting_room.poll_interval_ms", w.poll_interval_ms)?;
        if w.poll_ttl_ms <= w.poll_interval_ms {
            return Err(bad("waiting_room.poll_ttl_ms", "must be longer than poll_interval_ms"));
        }
        nonzero("waiting_room.pass_ttl_ms", w.pass_ttl_ms)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = ShieldConfig::default();
        assert_eq!(c.validate(), Ok(()));
        let json = serde_json::to_string(&c).expect("serialise");
        let back: ShieldConfig = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, c);
        let empty: ShieldConfig = serde_json::from_str("{}").expect("all defaults");
        assert_eq!(empty, c);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<ShieldConfig>(r#"{"limits": {"per_ipp": {}}}"#).expect_err("typo");
        assert!(err.to_string().contains("per_ipp"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        type Breakage = fn(&mut ShieldConfig);
        let cases: Vec<(Breakage, &str)> = vec![
            (|c| c.limits.per_ip.burst = 0, "limits.per_ip.burst"),
            (|c| c.limits.per_subnet.count = 0, "limits.per_subnet.count"),
            (|c| c.limits.account_tokens.period_ms = 0, "limits.account_tokens.period_ms"),
            (|c| c.limits.v6_subnet_prefix = 129, "limits.v6_subnet_prefix"),
            (|c| c.limits.routes[1].route = "register".into(), "limits.routes[1].rate.burst"),
            (|c| c.limits.routes.push(c.limits.routes[0].clone()), "limits.routes[2].route"),
            (|c| c.limits.ip_entries = 0, "limits.ip_entries"),
            (|c| c.pow.max_difficulty = 10, "pow.max_difficulty"),
            (|c| c.pow.base_difficulty = 40, "pow.base_difficulty"),
            (|c| c.pow.clearance_ttl_ms = 10, "pow.clearance_ttl_ms"),
            (|c| c.bot.limit_at = 10, "bot.challenge_at"),
            (|c| c.attack.exit_ratio = 1.5, "attack.exit_ratio"),
            (|c| c.attack.signups.enter_factor = f64::NAN, "attack.signups.enter_factor"),
            (|c| c.waiting_room.poll_ttl_ms = 1, "waiting_room.poll_ttl_ms"),
            (|c| c.waiting_room.admit_per_sec = -1.0, "waiting_room.admit_per_sec"),
        ];
        for (break_it, field) in cases {
            let mut c = ShieldConfig::default();
            break_it(&mut c);
            if field == "limits.routes[1].rate.burst" {
                // Same name, different subject: allowed. Break the rate instead.
                c.limits.routes[1].rate.burst = 0;
            }
            assert_eq!(c.validate().map_err(|e| e.field), Err(field.to_string()));
        }
    }

    #[test]
    fn difficulty_rises_with_threat() {
        let p = PowConfig::default();
        assert_eq!(p.difficulty(false, 0), 16);
        assert_eq!(p.difficulty(false, 60), 18);
        assert_eq!(p.difficulty(true, 0), 20);
        assert_eq!(p.difficulty(true, 100), 24);
        let flat = PowConfig { score_points_per_bit: 0, ..PowConfig::default() };
        assert_eq!(flat.difficulty(false, 100), 16);
    }
}
