//! Under-attack detection: rolling baselines of request, sign-up, login-failure and shed
//! rates, an automatic switch into attack mode when a recent rate leaves its baseline far
//! behind, and a hysteresis that keeps the switch from flapping.
//!
//! Each metric keeps two exponentially weighted moving averages of its per-second rate: a
//! fast one (seconds) that says "now" and a slow one (tens of minutes) that says "normal".
//! The detector enters attack mode when any fast rate exceeds
//! `max(enter_factor × slow, floor)`, and leaves only after every fast rate has stayed below
//! `exit_ratio` × that threshold for `hold` without interruption. The slow baselines stop
//! learning while in attack mode, so a long attack never becomes the new normal. An
//! operator can force the mode either way; every change is returned as a [`Transition`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A rate the detector watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Requests,
    Signups,
    LoginFailures,
    /// Requests refused by admission or limits (429/503).
    Shed,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Self::Requests, Self::Signups, Self::LoginFailures, Self::Shed];

    pub fn code(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Signups => "signups",
            Self::LoginFailures => "login_failures",
            Self::Shed => "shed",
        }
    }
}

/// Events counted since the previous [`AttackDetector::observe`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub signups: u64,
    pub login_failures: u64,
    pub shed: u64,
}

impl Counters {
    fn get(&self, m: Metric) -> u64 {
        match m {
            Metric::Requests => self.requests,
            Metric::Signups => self.signups,
            Metric::LoginFailures => self.login_failures,
            Metric::Shed => self.shed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Normal,
    UnderAttack,
}

/// Why the mode changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cause {
    /// `metric`'s fast rate (per second) crossed `threshold`.
    RateExceeded { metric: Metric, rate: f64, threshold: f64 },
    /// Every rate stayed below its exit threshold for `held`.
    Calm { held: Duration },
    /// The operator forced the mode (or handed control back to the detector).
    Operator,
}

impl Cause {
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateExceeded { .. } => "rate_exceeded",
            Self::Calm { .. } => "calm",
            Self::Operator => "operator",
        }
    }
}

/// A mode change, for the status page, the audit log and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub at: Duration,
    pub from: Mode,
    pub to: Mode,
    pub cause: Cause,
}

/// Per-metric thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricConfig {
    /// Rate per second below which this metric never triggers, whatever the baseline.
    pub floor_per_sec: f64,
    /// Trigger when the fast rate exceeds this many times the slow baseline.
    pub enter_factor: f64,
}

impl Default for MetricConfig {
    fn default() -> Self {
        Self { floor_per_sec: 100.0, enter_factor: 4.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttackConfig {
    /// Time constant of the fast averages.
    pub fast_window_ms: u64,
    /// Time constant of the slow baselines.
    pub slow_window_ms: u64,
    /// Leave attack mode only below this fraction of the entry threshold …
    pub exit_ratio: f64,
    /// … held for this long.
    pub hold_ms: u64,
    pub requests: MetricConfig,
    pub signups: MetricConfig,
    pub login_failures: MetricConfig,
    pub shed: MetricConfig,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self {
            fast_window_ms: 10_000,
            slow_window_ms: 900_000,
            exit_ratio: 0.5,
            hold_ms: 120_000,
            requests: MetricConfig { floor_per_sec: 200.0, enter_factor: 4.0 },
            signups: MetricConfig { floor_per_sec: 2.0, enter_factor: 5.0 },
            login_failures: MetricConfig { floor_per_sec: 10.0, enter_factor: 5.0 },
            shed: MetricConfig { floor_per_sec: 20.0, enter_factor: 4.0 },
        }
    }
}

impl AttackConfig {
    fn metric(&self, m: Metric) -> &MetricConfig {
        match m {
            Metric::Requests => &self.requests,
            Metric::Signups => &self.signups,
            Metric::LoginFailures => &self.login_failures,
            Metric::Shed => &self.shed,
        }
    }
}

/// One metric's averages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Averages {
    fast: f64,
    slow: f64,
    /// Total weight the slow average has accumulated (1 − e^(−t/τ)).
    slow_weight: f64,
}

impl Averages {
    /// The slow average as if it had started at `prior` rather than at zero. A young
    /// detector must not take the mean of its first minutes as normal: a gateway
    /// started (or restarted) into an attack would learn the attack as its baseline
    /// within seconds. The prior fades as real history accumulates.
    fn baseline(&self, prior: f64) -> f64 {
        self.slow + (1.0 - self.slow_weight).max(0.0) * prior
    }
}

/// A metric's current figures, for dashboards and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricState {
    pub metric: Metric,
    /// Recent rate per second.
    pub rate: f64,
    /// Normal rate per second.
    pub baseline: f64,
    /// Rate that enters attack mode.
    pub enter_threshold: f64,
    /// Rate every metric must stay under to leave it.
    pub exit_threshold: f64,
}

/// The detector. Call [`Self::observe`] once per tick (a second is a good tick) from one
/// task; it is plain data, so wrap it in a mutex if several tasks need to read it.
#[derive(Debug, Clone)]
pub struct AttackDetector {
    config: AttackConfig,
    averages: [Averages; 4],
    mode: Mode,
    forced: Option<bool>,
    since: Duration,
    last: Option<Duration>,
    pending: Counters,
    calm_since: Option<Duration>,
}

fn alpha(dt: Duration, window_ms: u64) -> f64 {
    let tau = (window_ms.max(1) as f64) / 1000.0;
    1.0 - (-dt.as_secs_f64() / tau).exp()
}

impl AttackDetector {
    pub fn new(config: AttackConfig) -> Self {
        Self {
            config,
            averages: [Averages::default(); 4],
            mode: Mode::Normal,
            forced: None,
            since: Duration::ZERO,
            last: None,
            pending: Counters::default(),
            calm_since: None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `Some(true)`/`Some(false)` while the operator forces the mode.
    pub fn forced(&self) -> Option<bool> {
        self.forced
    }

    /// When the current mode began.
    pub fn since(&self) -> Duration {
        self.since
    }

    /// The baseline assumed before there is history: the rate at which the enter
    /// threshold is exactly the floor.
    fn prior(&self, m: Metric) -> f64 {
        let c = self.config.metric(m);
        if c.enter_factor > 0.0 { c.floor_per_sec / c.enter_factor } else { 0.0 }
    }

    fn thresholds(&self, m: Metric, a: &Averages) -> (f64, f64) {
        let c = self.config.metric(m);
        let enter = (c.enter_factor * a.baseline(self.prior(m))).max(c.floor_per_sec);
        (enter, enter * self.config.exit_ratio)
    }

    /// Every metric's rate, baseline and thresholds.
    pub fn metrics(&self) -> [MetricState; 4] {
        Metric::ALL.map(|m| {
            let a = &self.averages[m as usize];
            let (enter, exit) = self.thresholds(m, a);
            MetricState {
                metric: m,
                rate: a.fast,
                baseline: a.baseline(self.prior(m)),
                enter_threshold: enter,
                exit_threshold: exit,
            }
        })
    }

    /// Feeds the events counted since the last call. The first call only starts the clock
    /// (its counts are kept for the next interval); calls at the same instant accumulate.
    pub fn observe(&mut self, counts: Counters, now: Duration) -> Option<Transition> {
        for m in Metric::ALL {
            let p = match m {
                Metric::Requests => &mut self.pending.requests,
                Metric::Signups => &mut self.pending.signups,
                Metric::LoginFailures => &mut self.pending.login_failures,
                Metric::Shed => &mut self.pending.shed,
            };
            *p = p.saturating_add(counts.get(m));
        }
        let Some(last) = self.last else {
            self.last = Some(now);
            return None;
        };
        let dt = now.checked_sub(last).filter(|dt| !dt.is_zero())?;
        self.last = Some(now);
        let counts = std::mem::take(&mut self.pending);
        let learning = self.mode == Mode::Normal;
        let (af, asl) = (alpha(dt, self.config.fast_window_ms), alpha(dt, self.config.slow_window_ms));
        for m in Metric::ALL {
            let rate = counts.get(m) as f64 / dt.as_secs_f64();
            let a = &mut self.averages[m as usize];
            a.fast += af * (rate - a.fast);
            if learning {
                a.slow += asl * (rate - a.slow);
                a.slow_weight += asl * (1.0 - a.slow_weight);
            }
        }
        if self.forced.is_some() {
            return None;
        }
        match self.mode {
            Mode::Normal => {
                let hot = Metric::ALL.into_iter().find_map(|m| {
                    let a = &self.averages[m as usize];
                    let (enter, _) = self.thresholds(m, a);
                    (a.fast > enter).then_some(Cause::RateExceeded { metric: m, rate: a.fast, threshold: enter })
                })?;
                self.calm_since = None;
                Some(self.switch(Mode::UnderAttack, hot, now))
            }
            Mode::UnderAttack => {
                let calm = Metric::ALL.into_iter().all(|m| {
                    let a = &self.averages[m as usize];
                    a.fast < self.thresholds(m, a).1
                });
                if !calm {
                    self.calm_since = None;
                    return None;
                }
                let start = *self.calm_since.get_or_insert(now);
                let held = now.saturating_sub(start);
                (held >= Duration::from_millis(self.config.hold_ms))
                    .then(|| self.switch(Mode::Normal, Cause::Calm { held }, now))
            }
        }
    }

    /// Operator override: `Some(true)` forces attack mode, `Some(false)` forces normal mode,
    /// `None` hands control back to the detector (which keeps the current mode and decides
    /// on the next tick; leaving attack mode still needs the full calm hold).
    pub fn force(&mut self, force: Option<bool>, now: Duration) -> Option<Transition> {
        self.forced = force;
        self.calm_since = None;
        let to = match force {
            Some(true) => Mode::UnderAttack,
            Some(false) => Mode::Normal,
            None => return None,
        };
        (to != self.mode).then(|| self.switch(to, Cause::Operator, now))
    }

    fn switch(&mut self, to: Mode, cause: Cause, now: Duration) -> Transition {
        let t = Transition { at: now, from: self.mode, to, cause };
        self.mode = to;
        self.since = now;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// Runs `secs` one-second ticks of `rps` requests; returns the transitions.
    fn run(d: &mut AttackDetector, t: &mut Duration, secs: u64, rps: impl Fn(u64) -> u64) -> Vec<Transition> {
        let mut out = Vec::new();
        for i in 0..secs {
            *t += SEC;
            if let Some(tr) = d.observe(Counters { requests: rps(i), ..Counters::default() }, *t) {
                out.push(tr);
            }
        }
        out
    }

    #[test]
    fn a_flood_enters_and_calm_leaves_after_the_hold() {
        let mut d = AttackDetector::new(AttackConfig::default());
        let mut t = Duration::from_secs(1_000);
        assert!(run(&mut d, &mut t, 1_800, |_| 100).is_empty(), "steady traffic is normal");
        let base = d.metrics()[0].baseline;
        // Two slow windows in, the prior (floor / factor = 50) still weighs e^-2.
        assert!((base - 100.0).abs() < 10.0, "baseline {base}");

        let start = t;
        let enter = run(&mut d, &mut t, 600, |_| 3_000);
        assert_eq!(enter.len(), 1);
        assert_eq!(enter[0].to, Mode::UnderAttack);
        assert!(enter[0].at - start <= Duration::from_secs(3), "detected within seconds");
        assert!(matches!(enter[0].cause, Cause::RateExceeded { metric: Metric::Requests, .. }));
        // Two ticks of learning before the switch move it a little; 600 s would move it to
        // about 1,000 if learning continued.
        assert!(d.metrics()[0].baseline < base + 10.0, "the attack did not become the baseline");

        let calm_start = t;
        let leave = run(&mut d, &mut t, 600, |_| 100);
        assert_eq!(leave.len(), 1);
        assert_eq!(leave[0].to, Mode::Normal);
        let took = leave[0].at - calm_start;
        assert!(took >= Duration::from_secs(120) && took < Duration::from_secs(180), "{took:?}");
    }

    #[test]
    fn a_detector_started_into_an_attack_does_not_learn_it_as_normal() {
        // A gateway up for 15 s with 22 requests/s, then 800/s: the drill's first run
        // showed a baseline made of the mean so far rose with the attack and never let
        // it cross the threshold.
        let mut d = AttackDetector::new(AttackConfig::default());
        let mut t = Duration::from_secs(0);
        assert!(run(&mut d, &mut t, 15, |_| 22).is_empty());
        let enter = run(&mut d, &mut t, 30, |_| 800);
        assert_eq!(enter.len(), 1, "{enter:?}");
        assert!(enter[0].at <= Duration::from_secs(15 + 5), "entered at {:?}", enter[0].at);
    }

    #[test]
    fn rates_swinging_across_both_thresholds_do_not_flap() {
        let mut d = AttackDetector::new(AttackConfig::default());
        let mut t = Duration::from_secs(0);
        run(&mut d, &mut t, 1_800, |_| 100);
        assert_eq!(run(&mut d, &mut t, 20, |_| 1_000).len(), 1);
        // Entry threshold 400/s, exit 200/s. For an hour, 30 s above the entry threshold
        // then 30 s well under the exit one: calm never lasts the 120 s hold.
        let swings = run(&mut d, &mut t, 3_600, |i| if (i / 30) % 2 == 0 { 450 } else { 150 });
        assert!(swings.is_empty(), "{swings:?}");
        let leave = run(&mut d, &mut t, 600, |_| 100);
        assert_eq!(leave.iter().map(|tr| tr.to).collect::<Vec<_>>(), [Mode::Normal]);
    }

    #[test]
    fn a_rate_hovering_at_the_entry_threshold_switches_at_most_once() {
        let mut d = AttackDetector::new(AttackConfig::default());
        let mut t = Duration::from_secs(0);
        run(&mut d, &mut t, 1_800, |_| 100);
        let trs = run(&mut d, &mut t, 3_600, |i| if (i / 30) % 2 == 0 { 420 } else { 380 });
        assert!(trs.len() <= 1, "{trs:?}");
    }

    #[test]
    fn floors_keep_a_quiet_service_calm() {
        let mut d = AttackDetector::new(AttackConfig::default());
        let mut t = Duration::ZERO;
        run(&mut d, &mut t, 600, |_| 1);
        // 50× the baseline, but under the 200/s floor.
        assert!(run(&mut d, &mut t, 120, |_| 50).is_empty());
        let mut sign = Vec::new();
        for _ in 0..30 {
            t += SEC;
            sign.extend(d.observe(Counters { requests: 1, signups: 20, ..Counters::default() }, t));
        }
        assert!(matches!(
            sign.as_slice(),
            [Transition { cause: Cause::RateExceeded { metric: Metric::Signups, .. }, .. }]
        ));
    }

    #[test]
    fn operator_forces_either_way_and_hands_back() {
        let mut d = AttackDetector::new(AttackConfig::default());
        let mut t = Duration::ZERO;
        run(&mut d, &mut t, 60, |_| 100);
        let on = d.force(Some(true), t).expect("a transition");
        assert_eq!((on.from, on.to, on.cause), (Mode::Normal, Mode::UnderAttack, Cause::Operator));
        assert!(d.force(Some(true), t).is_none(), "already there");
        assert!(run(&mut d, &mut t, 600, |_| 100).is_empty(), "forced mode ignores calm");
        assert!(d.force(None, t).is_none());
        let back = run(&mut d, &mut t, 600, |_| 100);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].cause.code(), "calm");
        d.force(Some(false), t);
        assert!(run(&mut d, &mut t, 60, |_| 100_000).is_empty(), "forced normal ignores floods");
        assert_eq!(d.forced(), Some(false));
    }

    #[test]
    fn irregular_ticks_are_handled() {
        let mut d = AttackDetector::new(AttackConfig::default());
        assert!(d.observe(Counters { requests: 10, ..Counters::default() }, SEC).is_none());
        assert!(d.observe(Counters { requests: 10, ..Counters::default() }, SEC).is_none(), "same instant accumulates");
        assert!(d.observe(Counters::default(), Duration::ZERO).is_none(), "time going backwards is ignored");
        d.observe(Counters::default(), SEC * 2);
        assert!(d.metrics()[0].rate > 0.0);
    }
}
