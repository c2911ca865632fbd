//! From a run's raw events and metric samples to what an operator reads: a table per
//! traffic class and phase, what the defences did, attack-mode transitions, who got
//! the model's capacity, the verdict on each target, and the baselines side by side.
//! With several nodes, each node's share and the fleet's, and how exactly a per-key
//! limit held across them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::chart::{ChartInput, Series, Span};
use crate::farm::FarmSetup;
use crate::fleet::LimitProbe;
use crate::run::{
    FARM_LABEL, MEMBERS_CLASS, MEMBERS_LABEL, Metrics, NEWCOMERS_CLASS, NEWCOMERS_LABEL, RunData, TargetKind,
    is_bot_class,
};
use crate::scenario::{BotKind, Scenario};
use crate::sim::Usage;
use crate::traffic::{Event, Outcome, SignUpTally};

/// One class in one phase (or over the whole drill).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassSummary {
    pub class: String,
    pub phase: String,
    pub requests: usize,
    pub ok: usize,
    /// 429/503: limited, queued out, shed.
    pub refused: usize,
    /// Other 4xx: blocked, challenged, unauthorised, cut off.
    pub denied: usize,
    pub errors: usize,
    /// Not sent: in-flight cap or request budget.
    pub dropped: usize,
    pub success_pct: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Successful attempts per second of the phase.
    pub goodput: f64,
}

/// Summarises `events` over `seconds`.
pub fn summarize(class: &str, phase: &str, events: &[&Event], seconds: f64) -> ClassSummary {
    let mut ok: Vec<f64> = events.iter().filter(|e| e.outcome == Outcome::Ok).map(|e| e.latency).collect();
    ok.sort_by(f64::total_cmp);
    let count = |o: Outcome| events.iter().filter(|e| e.outcome == o).count();
    let pct = |q: f64| -> f64 {
        if ok.is_empty() {
            return 0.0;
        }
        let index = ((ok.len() as f64 * q).ceil() as usize).clamp(1, ok.len()) - 1;
        ok[index] * 1e3
    };
    ClassSummary {
        class: class.to_owned(),
        phase: phase.to_owned(),
        requests: events.len(),
        ok: ok.len(),
        refused: count(Outcome::Refused),
        denied: count(Outcome::Denied),
        errors: count(Outcome::Error),
        dropped: count(Outcome::Dropped),
        success_pct: if events.is_empty() { 0.0 } else { 100.0 * ok.len() as f64 / events.len() as f64 },
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        goodput: if seconds > 0.0 { ok.len() as f64 / seconds } else { 0.0 },
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DefenceRow {
    /// blocked, limited, challenged, queued, shed, refused connection, refusal.
    pub action: String,
    pub reason: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    pub at_s: f64,
    pub to: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct UsageRow {
    pub user: String,
    pub requests: u64,
    pub slot_seconds: f64,
    /// Share of the model's capacity (slots × seconds) in attack phases, percent.
    pub attack_capacity_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub target: TargetKind,
    pub label: String,
    pub setup_s: f64,
    pub summaries: Vec<ClassSummary>,
    pub defences: Vec<DefenceRow>,
    pub transitions: Vec<Transition>,
    /// None when the drill does not own the upstream (`--target`).
    pub upstream: Option<Vec<UsageRow>>,
    /// Bots' share of the model's capacity in attack phases, percent (the account farm's
    /// is apart, in `farm`).
    pub bot_capacity_pct: Option<f64>,
    pub solved_challenges: usize,
    /// With an account farm: its sign-ups and its share of the model against the members'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub farm: Option<FarmReport>,
    /// With SMS pumping: texts to bots against genuine sign-ups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsReport>,
    /// With several nodes: each one's figures and the fleet's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetReport>,
}

/// One node's share of a run, or the fleet's (the nodes' sum).
#[derive(Clone, Debug, Serialize)]
pub struct NodeRow {
    /// `1`..`N`, or `fleet`.
    pub node: String,
    pub url: Option<String>,
    /// What the drill's clients sent to it and got back.
    pub requests: usize,
    pub ok: usize,
    pub refused: usize,
    pub denied: usize,
    pub errors: usize,
    /// From its own /metrics over the phases: requests it answered, its edge's
    /// decisions other than allow, its calls to the shared state and the decisions it
    /// took locally because the shared state did not answer in time.
    pub answered: u64,
    pub edge_actions: u64,
    pub shared_state_calls: u64,
    pub shared_state_fallbacks: u64,
}

/// The cross-node limit probe's figures (see [`crate::fleet::limit_probe`]).
#[derive(Clone, Debug, Serialize)]
pub struct LimitAccuracy {
    pub limit_per_minute: u32,
    pub nodes: usize,
    pub sent: usize,
    pub admitted: usize,
    pub admitted_per_node: Vec<usize>,
    pub refused: usize,
    /// Neither 200 nor 429: these did not test the limit.
    pub other: usize,
    pub elapsed_s: f64,
    /// What the limit allows in `elapsed_s`.
    pub allowed: f64,
    /// `admitted / allowed`: 1.0 is exact.
    pub ratio: f64,
    /// What `nodes` independent nodes, each with the whole limit, would have allowed.
    pub independent_allowed: f64,
}

impl LimitAccuracy {
    fn of(p: &LimitProbe) -> LimitAccuracy {
        LimitAccuracy {
            limit_per_minute: p.limit_per_minute,
            nodes: p.admitted.len(),
            sent: p.sent,
            admitted: p.admitted_total(),
            admitted_per_node: p.admitted.clone(),
            refused: p.refused,
            other: p.other,
            elapsed_s: p.elapsed_s,
            allowed: p.allowed(),
            ratio: p.ratio(),
            independent_allowed: p.independent_allowed(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FleetReport {
    pub nodes: Vec<NodeRow>,
    pub fleet: NodeRow,
    pub limit_accuracy: Option<LimitAccuracy>,
    /// Why the limit accuracy was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_not_measured: Option<String>,
}

/// The account farm in one run. Shares are of the model's capacity during the attack
/// phases: slot-seconds held (the simulated model tallies them by the request's `user`
/// label) over capacity × the attack phases' seconds, percent. None when the drill does
/// not own the upstream.
#[derive(Clone, Debug, Serialize)]
pub struct FarmReport {
    pub setup: FarmSetup,
    pub in_flight_per_account: usize,
    /// The farm's chat requests in attack phases, and those answered 2xx.
    pub requests: usize,
    pub served: usize,
    pub farm_capacity_pct: Option<f64>,
    pub member_capacity_pct: Option<f64>,
    pub newcomer_capacity_pct: Option<f64>,
    /// The most the farm may hold: 100 − the members' share + the target's margin.
    pub farm_allowed_pct: Option<f64>,
}

/// Texts by country, from the gateway's /metrics over the run.
#[derive(Clone, Debug, Serialize)]
pub struct CountryTexts {
    /// ISO 3166 region, as the gateway labels it.
    pub country: String,
    /// Whose numbers the scenario draws from it: `bots`, `newcomers`, `both` or `other`.
    pub numbers_of: String,
    pub sent: u64,
    pub verified: u64,
    /// Texts the breaker held back (range or country paused).
    pub paused: u64,
    pub estimated_cost: f64,
}

/// SMS pumping in one run.
#[derive(Clone, Debug, Serialize)]
pub struct SmsReport {
    /// Sign-ups the pumping bots sent, and those answered 201: each one a text to a bot's
    /// number whose code is never entered.
    pub bot_sign_ups: usize,
    pub bot_texts: usize,
    /// Texts sent by country (empty when the gateway's /metrics could not be read).
    pub countries: Vec<CountryTexts>,
    /// Texts to countries only bots' numbers are in, and their estimated cost (the
    /// gateway's price table), from /metrics.
    pub bot_country_texts: Option<u64>,
    pub bot_country_cost: Option<f64>,
    /// How far the newcomers got: began, registered, got their code (it reached the
    /// outbox), entered it (a genuine sign-up).
    pub newcomers: SignUpTally,
    /// Newcomers who got their code, percent of those who began.
    pub newcomer_codes_pct: f64,
    /// `bot_texts` per genuine sign-up; None when no newcomer entered a code.
    pub bot_texts_per_sign_up: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub target: String,
    pub member_success_pct: f64,
    pub member_p99_ms: f64,
    pub member_goodput: f64,
    /// Palisade's logged-in goodput over this one's.
    pub palisade_ratio: f64,
    pub newcomers_admitted_pct: Option<f64>,
    pub bot_capacity_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub farm_capacity_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_capacity_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_texts: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_texts_per_sign_up: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newcomer_codes_pct: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub phases: Vec<(String, f64, f64)>,
    pub runs: Vec<RunReport>,
    /// Baselines that could not run, and why.
    pub skipped: Vec<(String, String)>,
    pub comparison: Vec<Comparison>,
    /// With SMS pumping and a defences-off run: how much fewer texts bots got per genuine
    /// sign-up with the defences on, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms_reduction_pct: Option<f64>,
    pub verdicts: Vec<Verdict>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }
}

/// The attack phases, as (start, end) windows.
fn attack_windows(s: &Scenario) -> Vec<(f64, f64)> {
    (0..s.phases.len()).filter(|&i| s.phases[i].attack).map(|i| s.window(i)).collect()
}

fn in_windows(t: f64, windows: &[(f64, f64)]) -> bool {
    windows.iter().any(|w| w.0 <= t && t < w.1)
}

/// The sample nearest to `t`.
fn nearest<T>(samples: &[(f64, T)], t: f64) -> Option<&T> {
    samples.iter().min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs())).map(|s| &s.1)
}

/// `family{a="x",b="y"}` as the family and its labels.
fn split_key(key: &str) -> (&str, BTreeMap<&str, &str>) {
    let Some((family, labels)) = key.split_once('{') else { return (key, BTreeMap::new()) };
    let labels = labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    (family, labels)
}

fn defences(first: &Metrics, last: &Metrics) -> Vec<DefenceRow> {
    let mut rows = Vec::new();
    for (key, value) in last {
        let delta = (value - first.get(key).copied().unwrap_or(0.0)).max(0.0) as u64;
        if delta == 0 || !key.contains('{') {
            continue;
        }
        let (family, labels) = split_key(key);
        let label = |k: &str| labels.get(k).copied().unwrap_or("").to_owned();
        let (action, reason) = match family {
            "palisade_edge_decisions_total" => {
                let action = match labels.get("action").copied() {
                    Some("allow") | None => continue,
                    Some("block") => "blocked",
                    Some("limit") => "limited",
                    Some("challenge") => "challenged",
                    Some("queue") => "queued",
                    Some(other) => other,
                };
                (action.to_owned(), label("reason"))
            }
            "palisade_admission_refused_total" => {
                ("shed".to_owned(), format!("{} ({})", label("reason"), label("class")))
            }
            "palisade_admission_admitted_total" => ("admitted".to_owned(), label("class")),
            "palisade_connections_refused_total" => ("connection refused".to_owned(), label("cap")),
            "palisade_rejections_total" => ("refused with code".to_owned(), label("reason")),
            "palisade_edge_attack_transitions_total" => ("attack mode".to_owned(), format!("to {}", label("to"))),
            _ => continue,
        };
        rows.push(DefenceRow { action, reason, count: delta });
    }
    let order = |a: &str| {
        [
            "blocked",
            "limited",
            "challenged",
            "queued",
            "shed",
            "connection refused",
            "refused with code",
            "admitted",
            "attack mode",
        ]
        .iter()
        .position(|x| *x == a)
        .unwrap_or(99)
    };
    rows.sort_by(|a, b| order(&a.action).cmp(&order(&b.action)).then(b.count.cmp(&a.count)));
    rows
}

fn transitions(metrics: &[(f64, Metrics)]) -> Vec<Transition> {
    let mut out = Vec::new();
    let mut state = 0.0;
    for (t, m) in metrics {
        let now = m.get("palisade_edge_under_attack").copied().unwrap_or(0.0);
        if now != state {
            out.push(Transition { at_s: *t, to: if now > 0.0 { "under attack".into() } else { "normal".into() } });
            state = now;
        }
    }
    out
}

/// Bots are every `user` label but the members', the newcomers' and the account
/// farm's (reported on its own).
fn is_bot_label(user: &str) -> bool {
    !matches!(user, MEMBERS_LABEL | NEWCOMERS_LABEL | FARM_LABEL)
}

fn usage_rows(s: &Scenario, usage: &[(f64, BTreeMap<String, Usage>)]) -> (Vec<UsageRow>, f64) {
    let windows = attack_windows(s);
    let capacity_s: f64 = windows.iter().map(|w| (w.1 - w.0) * s.upstream.capacity as f64).sum();
    let mut in_attack: BTreeMap<String, f64> = BTreeMap::new();
    for w in &windows {
        let empty = BTreeMap::new();
        let start = nearest(usage, w.0).unwrap_or(&empty);
        let end = nearest(usage, w.1).unwrap_or(&empty);
        for (user, u) in end {
            let before = start.get(user).map_or(0.0, |b| b.slot_seconds);
            *in_attack.entry(user.clone()).or_default() += (u.slot_seconds - before).max(0.0);
        }
    }
    let total = usage.last().map(|u| u.1.clone()).unwrap_or_default();
    let rows: Vec<UsageRow> = total
        .iter()
        .map(|(user, u)| UsageRow {
            user: user.clone(),
            requests: u.requests,
            slot_seconds: u.slot_seconds,
            attack_capacity_pct: if capacity_s > 0.0 {
                100.0 * in_attack.get(user).copied().unwrap_or(0.0) / capacity_s
            } else {
                0.0
            },
        })
        .collect();
    // An empty float sum is -0.0; + 0.0 makes it print as 0.
    let bots = rows.iter().filter(|r| is_bot_label(&r.user)).map(|r| r.attack_capacity_pct).sum::<f64>().max(0.0) + 0.0;
    (rows, bots)
}

/// The chart's lines: each user class, and every bot kind that sends requests as one
/// "bots" line (slowloris holds connections, it has no requests to count).
fn chart_line(class: &str) -> Option<&str> {
    if class == crate::scenario::BotKind::Slowloris.label() {
        None
    } else if is_bot_class(class) {
        Some("bots (all kinds)")
    } else {
        Some(class)
    }
}

/// One point per second per line: successes finishing in it, and their p99.
fn series(classes: &[String], events: &[Event], total: f64) -> Vec<Series> {
    let buckets = total.ceil().max(1.0) as usize;
    let mut lines: Vec<(String, Vec<Vec<f64>>)> = Vec::new();
    for (c, name) in classes.iter().enumerate() {
        let Some(line) = chart_line(name) else { continue };
        let index = lines.iter().position(|l| l.0 == line).unwrap_or_else(|| {
            lines.push((line.to_owned(), vec![Vec::new(); buckets]));
            lines.len() - 1
        });
        for e in events.iter().filter(|e| e.class == c && e.outcome == Outcome::Ok) {
            let done = e.at + e.latency;
            if done >= 0.0 && (done as usize) < buckets {
                lines[index].1[done as usize].push(e.latency * 1e3);
            }
        }
    }
    lines
        .into_iter()
        .map(|(class, per)| {
            let points = per
                .into_iter()
                .enumerate()
                .map(|(i, mut l)| {
                    l.sort_by(f64::total_cmp);
                    let p99 =
                        (!l.is_empty()).then(|| l[((l.len() as f64 * 0.99).ceil() as usize).clamp(1, l.len()) - 1]);
                    (i as f64 + 0.5, l.len() as f64, p99)
                })
                .collect();
            Series { class, points }
        })
        .collect()
}

/// How much the counters that `counts` picks grew between two samples.
fn grew(first: &Metrics, last: &Metrics, counts: impl Fn(&str, &BTreeMap<&str, &str>) -> bool) -> u64 {
    last.iter()
        .filter(|(key, _)| {
            let (family, labels) = split_key(key);
            counts(family, &labels)
        })
        .map(|(key, value)| (value - first.get(key).copied().unwrap_or(0.0)).max(0.0))
        .sum::<f64>() as u64
}

/// Each node's figures, from the clients' events and its own metrics, and the fleet's.
fn fleet_report(data: &RunData) -> FleetReport {
    let empty = Metrics::new();
    let mut nodes: Vec<NodeRow> = data
        .nodes
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let mine: Vec<&Event> = data.events.iter().filter(|e| e.node == Some(i)).collect();
            let count = |o: Outcome| mine.iter().filter(|e| e.outcome == o).count();
            let samples = data.node_metrics.get(i).map(Vec::as_slice).unwrap_or_default();
            let first = samples.first().map_or(&empty, |s| &s.1);
            let last = samples.last().map_or(&empty, |s| &s.1);
            NodeRow {
                node: (i + 1).to_string(),
                url: Some(url.clone()),
                requests: mine.len(),
                ok: count(Outcome::Ok),
                refused: count(Outcome::Refused),
                denied: count(Outcome::Denied),
                errors: count(Outcome::Error),
                answered: grew(first, last, |f, _| f == "palisade_requests_total"),
                edge_actions: grew(first, last, |f, l| {
                    f == "palisade_edge_decisions_total" && l.get("action").is_some_and(|a| *a != "allow")
                }),
                shared_state_calls: grew(first, last, |f, _| f == "palisade_shared_state_round_trips_total"),
                shared_state_fallbacks: grew(first, last, |f, _| f == "palisade_shared_state_fallbacks_total"),
            }
        })
        .collect();
    let mut fleet = NodeRow {
        node: "fleet".into(),
        url: None,
        requests: 0,
        ok: 0,
        refused: 0,
        denied: 0,
        errors: 0,
        answered: 0,
        edge_actions: 0,
        shared_state_calls: 0,
        shared_state_fallbacks: 0,
    };
    for n in &mut nodes {
        fleet.requests += n.requests;
        fleet.ok += n.ok;
        fleet.refused += n.refused;
        fleet.denied += n.denied;
        fleet.errors += n.errors;
        fleet.answered += n.answered;
        fleet.edge_actions += n.edge_actions;
        fleet.shared_state_calls += n.shared_state_calls;
        fleet.shared_state_fallbacks += n.shared_state_fallbacks;
    }
    let (limit_accuracy, limit_not_measured) = match &data.limit_probe {
        Some(Ok(p)) => (Some(LimitAccuracy::of(p)), None),
        Some(Err(why)) => (None, Some(why.clone())),
        None => (None, Some("the probe did not run".into())),
    };
    FleetReport { nodes, fleet, limit_accuracy, limit_not_measured }
}

/// Everything about one run.
pub fn run_report(s: &Scenario, data: &RunData) -> RunReport {
    let mut summaries = Vec::new();
    let attack = attack_windows(s);
    for (c, class) in data.classes.iter().enumerate() {
        let mine: Vec<&Event> = data.events.iter().filter(|e| e.class == c).collect();
        for (i, phase) in s.phases.iter().enumerate() {
            let (a, b) = s.window(i);
            let in_phase: Vec<&Event> = mine.iter().copied().filter(|e| a <= e.at && e.at < b).collect();
            if !in_phase.is_empty() {
                summaries.push(summarize(class, &phase.name, &in_phase, b - a));
            }
        }
        if !mine.is_empty() {
            summaries.push(summarize(class, "all", &mine, s.total_seconds()));
        }
    }
    let (defences, transitions) = match (data.metrics.first(), data.metrics.last()) {
        (Some(first), Some(last)) => (defences(&first.1, &last.1), transitions(&data.metrics)),
        _ => (Vec::new(), Vec::new()),
    };
    // A farm alone has its own share; "bots" then has nothing to say.
    let only_farm = !s.bots.is_empty() && s.bots.iter().all(|b| b.kind == BotKind::AccountFarm);
    let (upstream, bots) = if data.owns_upstream {
        let (rows, bots) = usage_rows(s, &data.usage);
        (Some(rows), (!attack.is_empty() && !only_farm).then_some(bots))
    } else {
        (None, None)
    };
    RunReport {
        target: data.kind,
        label: data.kind.label().to_owned(),
        setup_s: data.setup_s,
        summaries,
        defences,
        transitions,
        farm: farm_report(s, data, upstream.as_deref()),
        sms: sms_report(s, data),
        upstream,
        bot_capacity_pct: bots,
        solved_challenges: data.solved_challenges,
        fleet: (data.nodes.len() > 1).then(|| fleet_report(data)),
    }
}

/// One `user` label's share of the model in attack phases, when the usage is known.
fn attack_share(upstream: Option<&[UsageRow]>, label: &str) -> Option<f64> {
    upstream.map(|rows| rows.iter().find(|r| r.user == label).map_or(0.0, |r| r.attack_capacity_pct))
}

fn farm_report(s: &Scenario, data: &RunData, upstream: Option<&[UsageRow]>) -> Option<FarmReport> {
    let spec = s.bots.iter().find(|b| b.kind == BotKind::AccountFarm)?;
    let class = data.classes.iter().position(|c| c == BotKind::AccountFarm.label());
    let mine: Vec<&Event> = data.events.iter().filter(|e| Some(e.class) == class).collect();
    let member_capacity_pct = attack_share(upstream, MEMBERS_LABEL);
    let setup = data.farm.clone().unwrap_or(FarmSetup { accounts: spec.accounts, ..FarmSetup::default() });
    Some(FarmReport {
        setup,
        in_flight_per_account: spec.in_flight_per_account,
        requests: mine.iter().filter(|e| e.outcome != Outcome::Dropped).count(),
        served: mine.iter().filter(|e| e.outcome == Outcome::Ok).count(),
        farm_capacity_pct: attack_share(upstream, FARM_LABEL),
        member_capacity_pct,
        newcomer_capacity_pct: attack_share(upstream, NEWCOMERS_LABEL),
        farm_allowed_pct: member_capacity_pct.map(|m| 100.0 - m + s.targets.farm_capacity_margin_pct),
    })
}

/// Whose numbers each region's are: the pumping bots', the newcomers', or both.
fn number_owners(s: &Scenario) -> BTreeMap<String, &'static str> {
    let mut owners: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut add = |ranges: &[String], who: &'static str| {
        for region in ranges.iter().filter_map(|r| crate::phones::range_region(r)) {
            let entry = owners.entry(region).or_insert(who);
            if *entry != who {
                *entry = "both";
            }
        }
    };
    for bot in s.bots.iter().filter(|b| b.kind == BotKind::SmsPumping) {
        add(&bot.phones, "bots");
    }
    if let Some(n) = &s.newcomers {
        add(&n.phones, "newcomers");
    }
    owners
}

/// Texts by country over the run, from the first and last metric samples.
fn country_texts(s: &Scenario, first: &Metrics, last: &Metrics) -> Vec<CountryTexts> {
    let owners = number_owners(s);
    let mut by_country: BTreeMap<String, CountryTexts> = BTreeMap::new();
    for (key, value) in last {
        let (family, labels) = split_key(key);
        let Some(country) = labels.get("country") else { continue };
        let delta = (value - first.get(key).copied().unwrap_or(0.0)).max(0.0);
        let row = by_country.entry((*country).to_owned()).or_insert_with(|| CountryTexts {
            country: (*country).to_owned(),
            numbers_of: owners.get(*country).copied().unwrap_or("other").to_owned(),
            sent: 0,
            verified: 0,
            paused: 0,
            estimated_cost: 0.0,
        });
        match family {
            "palisade_sms_sent_total" => row.sent = delta.round() as u64,
            "palisade_sms_verified_total" => row.verified = delta.round() as u64,
            "palisade_sms_paused_total" => row.paused = delta.round() as u64,
            "palisade_sms_estimated_cost_total" => row.estimated_cost = delta,
            _ => {}
        }
    }
    by_country.into_values().filter(|c| c.sent + c.verified + c.paused > 0).collect()
}

fn sms_report(s: &Scenario, data: &RunData) -> Option<SmsReport> {
    if !s.bots.iter().any(|b| b.kind == BotKind::SmsPumping) {
        return None;
    }
    let class = data.classes.iter().position(|c| c == BotKind::SmsPumping.label());
    let sent: Vec<&Event> = data.events.iter().filter(|e| Some(e.class) == class && e.node.is_some()).collect();
    let bot_texts = sent.iter().filter(|e| e.status == 201).count();
    let countries = match (data.metrics.first(), data.metrics.last()) {
        (Some(first), Some(last)) => country_texts(s, &first.1, &last.1),
        _ => Vec::new(),
    };
    let bots_only: Vec<&CountryTexts> = countries.iter().filter(|c| c.numbers_of == "bots").collect();
    let measured = !data.metrics.is_empty();
    let newcomers = data.newcomer_sign_ups.unwrap_or_default();
    Some(SmsReport {
        bot_sign_ups: sent.len(),
        bot_texts,
        bot_country_texts: measured.then(|| bots_only.iter().map(|c| c.sent).sum()),
        bot_country_cost: measured.then(|| bots_only.iter().map(|c| c.estimated_cost).sum()),
        countries,
        newcomer_codes_pct: if newcomers.started == 0 {
            0.0
        } else {
            100.0 * newcomers.got_code as f64 / newcomers.started as f64
        },
        bot_texts_per_sign_up: (newcomers.verified > 0).then(|| bot_texts as f64 / newcomers.verified as f64),
        newcomers,
    })
}

/// How much fewer texts bots got per genuine sign-up with the defences on than off,
/// percent; None when either run had no genuine sign-up or bots got no text with the
/// defences off.
fn sms_reduction(on: &SmsReport, off: &SmsReport) -> Option<f64> {
    let (on, off) = (on.bot_texts_per_sign_up?, off.bot_texts_per_sign_up?);
    (off > 0.0).then(|| 100.0 * (1.0 - on / off))
}

/// The chart of one run: goodput and p99 per class over time, attack phases shaded,
/// attack-mode transitions marked.
pub fn chart_input(s: &Scenario, data: &RunData, report: &RunReport) -> ChartInput {
    ChartInput {
        title: format!("{} — {}", s.name, data.kind.label()),
        series: series(&data.classes, &data.events, s.total_seconds()),
        phases: s
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (start_s, end_s) = s.window(i);
                Span { label: p.name.clone(), start_s, end_s, attack: p.attack }
            })
            .collect(),
        markers: report.transitions.iter().map(|t| (t.at_s, t.to.clone())).collect(),
    }
}

/// Logged-in users over the attack phases (the first phase when there is none).
fn member_attack(s: &Scenario, data: &RunData) -> (ClassSummary, ClassSummary) {
    let windows = attack_windows(s);
    let members: Vec<&Event> = data.events.iter().filter(|e| e.class == 0).collect();
    let (a, b) = s.window(0);
    let quiet: Vec<&Event> = members.iter().copied().filter(|e| a <= e.at && e.at < b).collect();
    let seconds: f64 = windows.iter().map(|w| w.1 - w.0).sum();
    let attacked: Vec<&Event> = members.iter().copied().filter(|e| in_windows(e.at, &windows)).collect();
    (summarize(MEMBERS_CLASS, "quiet", &quiet, b - a), summarize(MEMBERS_CLASS, "attack", &attacked, seconds))
}

fn newcomers_pct(data: &RunData) -> Option<f64> {
    let i = data.classes.iter().position(|c| c == NEWCOMERS_CLASS)?;
    let all: Vec<&Event> = data.events.iter().filter(|e| e.class == i).collect();
    Some(summarize(NEWCOMERS_CLASS, "all", &all, 1.0).success_pct)
}

/// The whole report: every run, the verdicts (on the Palisade or external run), and the
/// baselines side by side.
pub fn build(s: &Scenario, runs: &[RunData], skipped: Vec<(String, String)>) -> Report {
    let reports: Vec<RunReport> = runs.iter().map(|d| run_report(s, d)).collect();
    let members: Vec<(ClassSummary, ClassSummary)> = runs.iter().map(|d| member_attack(s, d)).collect();
    let main = runs.iter().position(|d| matches!(d.kind, TargetKind::Palisade | TargetKind::External));
    let t = &s.targets;
    let mut verdicts = Vec::new();
    if let Some(m) = main {
        let (quiet, attack) = &members[m];
        if !attack_windows(s).is_empty() && s.members.count > 0 {
            verdicts.push(Verdict {
                target: format!("logged-in users' success in attack phases ≥ {}%", t.member_success_pct),
                measured: format!("{:.2}% ({} of {})", attack.success_pct, attack.ok, attack.requests),
                pass: attack.success_pct >= t.member_success_pct,
            });
            let ratio = attack.p99_ms / quiet.p99_ms.max(1e-9);
            verdicts.push(Verdict {
                target: format!("logged-in users' p99 in attack phases ≤ {}× the first phase's", t.member_p99_ratio),
                measured: format!("{:.0} ms vs {:.0} ms = {ratio:.2}×", attack.p99_ms, quiet.p99_ms),
                pass: ratio <= t.member_p99_ratio,
            });
        }
        if let Some(pct) = newcomers_pct(&runs[m]) {
            verdicts.push(Verdict {
                target: format!("newcomers through to their first answer ≥ {}%", t.newcomers_admitted_pct),
                measured: format!("{pct:.2}%"),
                pass: pct >= t.newcomers_admitted_pct,
            });
        }
        if let Some(fleet) = &reports[m].fleet {
            let target = format!(
                "a per-key limit across {} nodes admits ≤ {}× what it allows",
                fleet.nodes.len(),
                t.fleet_limit_ratio
            );
            verdicts.push(match &fleet.limit_accuracy {
                Some(a) => Verdict {
                    target,
                    measured: format!(
                        "{} admitted of {} sent, {:.1} allowed = {:.2}×",
                        a.admitted, a.sent, a.allowed, a.ratio
                    ),
                    pass: a.ratio <= t.fleet_limit_ratio && a.other == 0,
                },
                None => Verdict {
                    target,
                    measured: format!("not measured: {}", fleet.limit_not_measured.as_deref().unwrap_or("")),
                    pass: false,
                },
            });
        }
        if let Some(f) = &reports[m].farm
            && let (Some(farm), Some(members), Some(allowed)) =
                (f.farm_capacity_pct, f.member_capacity_pct, f.farm_allowed_pct)
        {
            verdicts.push(Verdict {
                target: format!(
                    "the account farm's share of the model's capacity in attack phases ≤ 100 − the members' share + {}",
                    t.farm_capacity_margin_pct
                ),
                measured: format!("farm {farm:.2}%, members {members:.2}%: at most {allowed:.2}%"),
                pass: farm <= allowed,
            });
        }
        if let Some(sms) = &reports[m].sms {
            let target = format!(
                "texts to bots per genuine sign-up ≥ {}% fewer than with defences off",
                t.sms_bot_texts_reduction_pct
            );
            let off = reports.iter().find(|r| r.target == TargetKind::DefencesOff).and_then(|r| r.sms.as_ref());
            let per = |r: &SmsReport| {
                r.bot_texts_per_sign_up.map_or("– (no genuine sign-up)".into(), |x| format!("{x:.2}"))
            };
            verdicts.push(match off {
                Some(off) => {
                    let reduction = sms_reduction(sms, off);
                    Verdict {
                        target,
                        measured: format!(
                            "{} vs {} = {}",
                            per(sms),
                            per(off),
                            reduction.map_or("not measurable".into(), |r| format!("{r:.1}% fewer"))
                        ),
                        pass: reduction.is_some_and(|r| r >= t.sms_bot_texts_reduction_pct),
                    }
                }
                None => Verdict {
                    target,
                    measured: format!("{} per genuine sign-up; not compared: no defences-off run", per(sms)),
                    pass: false,
                },
            });
            if s.newcomers.is_some() {
                let n = &sms.newcomers;
                verdicts.push(Verdict {
                    target: format!("newcomers whose verification code was sent ≥ {}%", t.newcomer_codes_pct),
                    measured: format!("{:.2}% ({} of {})", sms.newcomer_codes_pct, n.got_code, n.started),
                    pass: n.started > 0 && sms.newcomer_codes_pct >= t.newcomer_codes_pct,
                });
            }
        }
        if let (Some(bots), false) = (reports[m].bot_capacity_pct, s.bots.is_empty()) {
            verdicts.push(Verdict {
                target: format!("bots' share of the model's capacity in attack phases < {}%", t.bot_capacity_pct),
                measured: format!("{bots:.3}%"),
                pass: bots < t.bot_capacity_pct,
            });
        }
    }
    let main_goodput = main.map_or(0.0, |m| members[m].1.goodput);
    let comparison = runs
        .iter()
        .zip(&reports)
        .zip(&members)
        .map(|((d, r), (_, attack))| Comparison {
            target: d.kind.label().to_owned(),
            member_success_pct: attack.success_pct,
            member_p99_ms: attack.p99_ms,
            member_goodput: attack.goodput,
            palisade_ratio: main_goodput / attack.goodput.max(1e-9),
            newcomers_admitted_pct: newcomers_pct(d),
            bot_capacity_pct: r.bot_capacity_pct,
            farm_capacity_pct: r.farm.as_ref().and_then(|f| f.farm_capacity_pct),
            member_capacity_pct: r.farm.as_ref().and_then(|f| f.member_capacity_pct),
            bot_texts: r.sms.as_ref().map(|x| x.bot_texts),
            bot_texts_per_sign_up: r.sms.as_ref().and_then(|x| x.bot_texts_per_sign_up),
            newcomer_codes_pct: r.sms.as_ref().map(|x| x.newcomer_codes_pct),
        })
        .collect();
    let sms_of = |kind: TargetKind| reports.iter().find(|r| r.target == kind).and_then(|r| r.sms.as_ref());
    let sms_reduction_pct = main
        .and_then(|m| reports[m].sms.as_ref())
        .zip(sms_of(TargetKind::DefencesOff))
        .and_then(|(on, off)| sms_reduction(on, off));
    Report {
        scenario: s.name.clone(),
        description: s.description.clone(),
        phases: (0..s.phases.len()).map(|i| (s.phases[i].name.clone(), s.window(i).0, s.window(i).1)).collect(),
        runs: reports,
        skipped,
        comparison,
        sms_reduction_pct,
        verdicts,
    }
}

fn render_fleet(out: &mut String, fleet: &FleetReport) {
    let n = fleet.nodes.len();
    let _ = writeln!(
        out,
        "\n### {n} nodes\n\n{n} Palisade nodes share one Redis and one PostgreSQL; each client stays on one node, \
         clients dealt round-robin as a balancer would. The first five figures are what the drill's clients sent to the \
         node and got back, the last four the node's own /metrics over the phases.\n"
    );
    let _ = writeln!(
        out,
        "| node | requests | ok | refused 429/503 | denied 4xx | errors | answered | edge actions | shared-state calls | local fallbacks |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in fleet.nodes.iter().chain([&fleet.fleet]) {
        let name = match &r.url {
            Some(url) => format!("{} ({})", r.node, url.trim_start_matches("http://")),
            None => format!("**{}**", r.node),
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.requests,
            r.ok,
            r.refused,
            r.denied,
            r.errors,
            r.answered,
            r.edge_actions,
            r.shared_state_calls,
            r.shared_state_fallbacks
        );
    }
    match &fleet.limit_accuracy {
        Some(a) => {
            let per_node: Vec<String> = a.admitted_per_node.iter().map(usize::to_string).collect();
            let _ = write!(
                out,
                "\nCross-node limit accuracy: a key limited to {limit} requests a minute (burst {limit}) sent {sent} \
                 requests (`GET /v1/models`) round-robin over {n} nodes in {secs:.2} s: {admitted} admitted ({per}), {refused} refused; \
                 the limit allows {allowed:.1} in that time: **{ratio:.2}×** the limit. {n} independent nodes, each with \
                 the whole limit, would have admitted up to {independent:.0} ({times:.1}×).",
                limit = a.limit_per_minute,
                sent = a.sent,
                secs = a.elapsed_s,
                admitted = a.admitted,
                per = per_node.join(" + "),
                refused = a.refused,
                allowed = a.allowed,
                ratio = a.ratio,
                independent = a.independent_allowed,
                times = a.independent_allowed / a.allowed.max(1e-9),
            );
            if a.other > 0 {
                let _ = write!(out, " {} answers were neither 200 nor 429.", a.other);
            }
            let _ = writeln!(out);
        }
        None => {
            let why = fleet.limit_not_measured.as_deref().unwrap_or("");
            let _ = writeln!(out, "\nCross-node limit accuracy: not measured ({why}).");
        }
    }
}

fn render_farm(out: &mut String, farm: &FarmReport) {
    let setup = &farm.setup;
    let _ = write!(
        out,
        "\n### The account farm\n\n{} of {} farm accounts signed up through the public flow (register, the code from \
         the outbox, verify, log in), each from a /24 of its own, in {:.1} s just before the phases",
        setup.signed_up, setup.accounts, setup.seconds
    );
    if setup.failures.is_empty() {
        let _ = writeln!(out, ".");
    } else {
        let failed: Vec<String> = setup.failures.iter().map(|(why, n)| format!("{n} × {why}")).collect();
        let _ = writeln!(out, "; the others failed: {}.", failed.join(", "));
    }
    let _ = writeln!(
        out,
        "Each kept {} chat requests in flight with the same prompt (sent again as soon as answered or refused, after \
         its `Retry-After`, up to a bound): {} requests, {} answered.",
        farm.in_flight_per_account, farm.requests, farm.served
    );
    match (farm.farm_capacity_pct, farm.member_capacity_pct, farm.farm_allowed_pct) {
        (Some(f), Some(m), Some(allowed)) => {
            let _ = writeln!(
                out,
                "\nShares of the model's capacity in attack phases (slot-seconds held over capacity × the attack \
                 phases' seconds): the farm **{f:.2}%**, members {m:.2}%, newcomers {:.2}%. The farm may have only what \
                 members leave unused: at most 100 − {m:.2} + the margin = {allowed:.2}%.",
                farm.newcomer_capacity_pct.unwrap_or(0.0)
            );
        }
        _ => {
            let _ = writeln!(out, "\nShares of the model's capacity: not known (the drill does not own the upstream).");
        }
    }
}

/// The bots' countries' texts and their estimated cost, from /metrics.
fn bot_country_figures(sms: &SmsReport) -> String {
    match (sms.bot_country_texts, sms.bot_country_cost) {
        (Some(texts), Some(cost)) => format!("{texts}, {cost:.2}"),
        _ => "–".into(),
    }
}

fn render_sms(out: &mut String, sms: &SmsReport) {
    let n = &sms.newcomers;
    let _ = writeln!(
        out,
        "\n### SMS pumping\n\nBots sent {} sign-ups with numbers from premium ranges; {} were answered 201, each a \
         text to a bot's number whose code is never entered. Newcomers signing up by phone: {} began, {} registered, \
         {} got their code ({:.2}%), {} entered it (genuine sign-ups). Texts to bots per genuine sign-up: **{}**.",
        sms.bot_sign_ups,
        sms.bot_texts,
        n.started,
        n.registered,
        n.got_code,
        sms.newcomer_codes_pct,
        n.verified,
        sms.bot_texts_per_sign_up.map_or("– (no genuine sign-up)".into(), |r| format!("{r:.2}"))
    );
    if sms.countries.is_empty() {
        let _ = writeln!(out, "\nTexts by country: none counted in the gateway's /metrics.");
        return;
    }
    let _ = writeln!(out, "\nTexts by country (the gateway's /metrics, whole drill; cost from its price table):\n");
    let _ = writeln!(
        out,
        "| country | numbers of | texts sent | codes entered | held by the breaker | estimated cost |\n|---|---|---:|---:|---:|---:|"
    );
    for c in &sms.countries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.2} |",
            c.country, c.numbers_of, c.sent, c.verified, c.paused, c.estimated_cost
        );
    }
}

/// The report as Markdown: readable in a terminal, pasteable into RESULTS.md.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Drill: {}\n\n{}\n", report.scenario, report.description);
    let phases: Vec<String> = report.phases.iter().map(|(n, a, b)| format!("{n} {a:.0}–{b:.0} s")).collect();
    let _ = writeln!(out, "Phases: {}\n", phases.join(", "));
    for run in &report.runs {
        let _ = writeln!(out, "## {}\n", run.label);
        let pinned = if run.target == TargetKind::External {
            ""
        } else {
            ", and were pinned to the established trust tier (they stand for existing users with weeks of use)"
        };
        let _ = writeln!(
            out,
            "Members signed up and logged in before the clock started, in {:.1} s{pinned}.\n",
            run.setup_s
        );
        let _ = writeln!(
            out,
            "| class | phase | requests | success | p50 ms | p99 ms | goodput/s | refused 429/503 | denied 4xx | errors | not sent |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in run.summaries.iter().filter(|c| c.phase != "all") {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2}% | {:.0} | {:.0} | {:.1} | {} | {} | {} | {} |",
                c.class,
                c.phase,
                c.requests,
                c.success_pct,
                c.p50_ms,
                c.p99_ms,
                c.goodput,
                c.refused,
                c.denied,
                c.errors,
                c.dropped
            );
        }
        if let Some(fleet) = &run.fleet {
            render_fleet(&mut out, fleet);
        }
        if !run.defences.is_empty() {
            let _ = writeln!(out, "\nWhat the defences did (from the gateway's /metrics, whole drill):\n");
            let _ = writeln!(out, "| action | reason | count |\n|---|---|---:|");
            for d in &run.defences {
                let _ = writeln!(out, "| {} | {} | {} |", d.action, d.reason, d.count);
            }
        }
        if !run.transitions.is_empty() {
            let t: Vec<String> = run.transitions.iter().map(|t| format!("{} at {:.0} s", t.to, t.at_s)).collect();
            let _ = writeln!(out, "\nAttack mode: {}.", t.join(", "));
        } else if run.target == TargetKind::Palisade {
            let _ = writeln!(out, "\nAttack mode: never entered.");
        }
        if run.solved_challenges > 0 {
            let _ =
                writeln!(out, "\nProof-of-work challenges solved by the drill's clients: {}.", run.solved_challenges);
        }
        match &run.upstream {
            Some(rows) => {
                let _ = writeln!(out, "\nWho got the model (slot-seconds; share of capacity during attack phases):\n");
                let _ = writeln!(
                    out,
                    "| user label | requests | slot-seconds | attack-phase capacity |\n|---|---:|---:|---:|"
                );
                for r in rows {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {:.1} | {:.2}% |",
                        r.user, r.requests, r.slot_seconds, r.attack_capacity_pct
                    );
                }
            }
            None => {
                let _ = writeln!(out, "\nModel usage: not known (the drill does not own this gateway's upstream).");
            }
        }
        if let Some(farm) = &run.farm {
            render_farm(&mut out, farm);
        }
        if let Some(sms) = &run.sms {
            render_sms(&mut out, sms);
        }
        let _ = writeln!(out);
    }
    if report.comparison.len() > 1 || !report.skipped.is_empty() {
        let _ = writeln!(out, "## Logged-in users during the attack, side by side\n");
        let _ = writeln!(
            out,
            "| target | success | p99 ms | goodput/s | palisade's goodput vs this | newcomers through | bots' capacity share |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for c in &report.comparison {
            let _ = writeln!(
                out,
                "| {} | {:.2}% | {:.0} | {:.1} | {:.2}× | {} | {} |",
                c.target,
                c.member_success_pct,
                c.member_p99_ms,
                c.member_goodput,
                c.palisade_ratio,
                c.newcomers_admitted_pct.map_or("–".into(), |p| format!("{p:.1}%")),
                c.bot_capacity_pct.map_or("–".into(), |p| format!("{p:.2}%")),
            );
        }
        for (target, why) in &report.skipped {
            let _ = writeln!(out, "| {target} | skipped: {why} | | | | | |");
        }
        let _ = writeln!(out);
    }
    let farms: Vec<(&str, &FarmReport)> =
        report.runs.iter().filter_map(|r| r.farm.as_ref().map(|f| (r.label.as_str(), f))).collect();
    if farms.len() > 1 {
        let _ = writeln!(out, "## The account farm, side by side\n");
        let _ = writeln!(
            out,
            "| target | farm accounts | farm requests | answered | farm's capacity share | members' share | at most (100 − members + margin) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for (label, f) in farms {
            let pct = |p: Option<f64>| p.map_or("–".into(), |p| format!("{p:.2}%"));
            let _ = writeln!(
                out,
                "| {label} | {} of {} | {} | {} | {} | {} | {} |",
                f.setup.signed_up,
                f.setup.accounts,
                f.requests,
                f.served,
                pct(f.farm_capacity_pct),
                pct(f.member_capacity_pct),
                pct(f.farm_allowed_pct)
            );
        }
        let _ = writeln!(out);
    }
    let sms: Vec<(&str, &SmsReport)> =
        report.runs.iter().filter_map(|r| r.sms.as_ref().map(|x| (r.label.as_str(), x))).collect();
    if sms.len() > 1 {
        let _ = writeln!(out, "## SMS pumping, side by side\n");
        let _ = writeln!(
            out,
            "| target | bot sign-ups | texts to bots (201) | genuine sign-ups | texts to bots per genuine sign-up | newcomers' codes sent | bots' countries: texts, est. cost |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for (label, x) in sms {
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {:.2}% | {} |",
                x.bot_sign_ups,
                x.bot_texts,
                x.newcomers.verified,
                x.bot_texts_per_sign_up.map_or("–".into(), |r| format!("{r:.2}")),
                x.newcomer_codes_pct,
                bot_country_figures(x)
            );
        }
        if let Some(r) = report.sms_reduction_pct {
            let _ = writeln!(
                out,
                "\nWith the defences on, bots got {r:.1}% fewer texts per genuine sign-up than with them off."
            );
        }
        let _ = writeln!(out);
    }
    if !report.verdicts.is_empty() {
        let _ = writeln!(out, "## Targets\n");
        for v in &report.verdicts {
            let _ = writeln!(out, "- {}: {} — **{}**", v.target, v.measured, if v.pass { "PASS" } else { "FAIL" });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(class: usize, at: f64, latency: f64, outcome: Outcome) -> Event {
        Event { class, at, latency, node: Some(0), status: 200, outcome }
    }

    #[test]
    fn summaries_count_outcomes_and_percentiles_of_successes() {
        let mut events: Vec<Event> = (1..=100).map(|i| event(0, 0.0, i as f64 / 1000.0, Outcome::Ok)).collect();
        events.push(event(0, 0.0, 5.0, Outcome::Refused));
        events.push(event(0, 0.0, 0.0, Outcome::Dropped));
        let refs: Vec<&Event> = events.iter().collect();
        let s = summarize("x", "p", &refs, 10.0);
        assert_eq!((s.requests, s.ok, s.refused, s.dropped), (102, 100, 1, 1));
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.goodput, 10.0);
    }

    #[test]
    fn defences_are_deltas_by_action_and_allow_is_left_out() {
        let first = crate::run::parse_metrics(
            "palisade_edge_decisions_total{action=\"block\",reason=\"bot_score\"} 5\n\
             palisade_edge_decisions_total{action=\"allow\",reason=\"passed\"} 100\n",
        );
        let last = crate::run::parse_metrics(
            "# HELP x y\npalisade_edge_decisions_total{action=\"block\",reason=\"bot_score\"} 12\n\
             palisade_edge_decisions_total{action=\"allow\",reason=\"passed\"} 900\n\
             palisade_admission_refused_total{class=\"anonymous\",reason=\"queue_full\"} 3\n\
             palisade_requests_total{route=\"x\"} 7\n",
        );
        let rows = defences(&first, &last);
        let got: Vec<(String, String, u64)> = rows.into_iter().map(|r| (r.action, r.reason, r.count)).collect();
        assert_eq!(
            got,
            vec![("blocked".into(), "bot_score".into(), 7), ("shed".into(), "queue_full (anonymous)".into(), 3)]
        );
    }

    #[test]
    fn the_chart_merges_bot_kinds_and_leaves_out_slowloris() {
        let classes: Vec<String> = ["logged-in users", "sign-up flood", "inference flood", "slowloris"]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let events = vec![
            event(0, 0.1, 0.2, Outcome::Ok),
            event(1, 1.0, 0.1, Outcome::Ok),
            event(2, 1.2, 0.3, Outcome::Ok),
            event(2, 1.2, 0.3, Outcome::Denied),
            event(3, 0.0, 1.5, Outcome::Ok),
        ];
        let lines = series(&classes, &events, 3.0);
        let names: Vec<&str> = lines.iter().map(|l| l.class.as_str()).collect();
        assert_eq!(names, ["logged-in users", "bots (all kinds)"]);
        assert_eq!(lines[0].points[0].1, 1.0);
        assert_eq!(lines[1].points[1].1, 2.0, "both bot successes finish in second 1");
        assert_eq!(lines[1].points[1].2, Some(300.0));
        assert_eq!(lines[1].points[0], (0.5, 0.0, None));
    }

    fn fleet_run(probe: Option<Result<LimitProbe, String>>) -> RunData {
        let m = |answered: f64, calls: f64| -> Metrics {
            [
                ("palisade_requests_total{route=\"models\",status=\"200\"}".to_owned(), answered),
                ("palisade_edge_decisions_total{action=\"allow\",reason=\"passed\"}".to_owned(), answered),
                ("palisade_edge_decisions_total{action=\"limit\",reason=\"per_ip\"}".to_owned(), calls / 10.0),
                ("palisade_shared_state_round_trips_total".to_owned(), calls),
            ]
            .into_iter()
            .collect()
        };
        let on = |node: usize, outcome: Outcome| Event { node: Some(node), ..event(0, 1.0, 0.1, outcome) };
        RunData {
            kind: TargetKind::Palisade,
            classes: vec![MEMBERS_CLASS.to_owned()],
            events: vec![
                on(0, Outcome::Ok),
                on(0, Outcome::Refused),
                on(1, Outcome::Ok),
                Event { node: None, ..event(0, 1.0, 0.0, Outcome::Dropped) },
            ],
            metrics: Vec::new(),
            usage: Vec::new(),
            setup_s: 1.0,
            owns_upstream: false,
            solved_challenges: 0,
            nodes: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            node_metrics: vec![
                vec![(0.0, m(5.0, 10.0)), (9.0, m(7.0, 30.0))],
                vec![(0.0, m(0.0, 0.0)), (9.0, m(1.0, 10.0))],
            ],
            limit_probe: probe,
            newcomer_sign_ups: None,
            farm: None,
        }
    }

    #[test]
    fn each_node_is_counted_from_its_clients_and_its_own_metrics_and_the_fleet_is_their_sum() {
        let probe = LimitProbe {
            limit_per_minute: 30,
            sent: 90,
            admitted: vec![15, 15],
            refused: 60,
            other: 0,
            elapsed_s: 0.6,
        };
        let data = fleet_run(Some(Ok(probe)));
        let fleet = fleet_report(&data);
        let row = |r: &NodeRow| (r.requests, r.ok, r.refused, r.answered, r.edge_actions, r.shared_state_calls);
        assert_eq!(row(&fleet.nodes[0]), (2, 1, 1, 2, 2, 20));
        assert_eq!(row(&fleet.nodes[1]), (1, 1, 0, 1, 1, 10));
        assert_eq!(row(&fleet.fleet), (3, 2, 1, 3, 3, 30), "the dropped attempt went to no node");
        let a = fleet.limit_accuracy.as_ref().expect("measured");
        assert!((a.allowed - 30.3).abs() < 1e-9 && (a.ratio - 30.0 / 30.3).abs() < 1e-9, "{a:?}");

        let s = Scenario::parse("[upstream]\ncapacity = 2\n", "t").expect("scenario");
        let report = build(&s, &[data], Vec::new());
        let text = render(&report);
        assert!(text.contains("### 2 nodes") && text.contains("| **fleet** | 3 | 2 | 1 |"), "{text}");
        assert!(text.contains("**0.99×** the limit") && text.contains("up to 61 (2.0×)"), "{text}");
        let verdict = report.verdicts.iter().find(|v| v.target.contains("per-key limit")).expect("a verdict");
        assert!(verdict.pass, "{verdict:?}");

        let unmeasured = build(&s, &[fleet_run(Some(Err("sign-up answered 503".into())))], Vec::new());
        let verdict = unmeasured.verdicts.iter().find(|v| v.target.contains("per-key limit")).expect("a verdict");
        assert!(!verdict.pass && verdict.measured.contains("sign-up answered 503"), "{verdict:?}");
    }

    #[test]
    fn one_node_has_no_fleet_section() {
        let mut data = fleet_run(None);
        data.nodes.clear();
        data.node_metrics.clear();
        let s = Scenario::parse("[upstream]\ncapacity = 2\n", "t").expect("scenario");
        let report = build(&s, &[data], Vec::new());
        assert!(report.runs[0].fleet.is_none());
        assert!(!render(&report).contains("nodes"));
        assert!(report.verdicts.iter().all(|v| !v.target.contains("per-key limit")));
    }

    #[test]
    fn transitions_follow_the_gauge() {
        let m = |v: f64| -> Metrics { [("palisade_edge_under_attack".to_owned(), v)].into_iter().collect() };
        let t = transitions(&[(1.0, m(0.0)), (2.0, m(1.0)), (3.0, m(1.0)), (4.0, m(0.0))]);
        let got: Vec<(f64, &str)> = t.iter().map(|t| (t.at_s, t.to.as_str())).collect();
        assert_eq!(got, vec![(2.0, "under attack"), (4.0, "normal")]);
    }

    #[test]
    fn bots_capacity_share_counts_only_attack_phases_and_bot_labels() {
        let s = Scenario::parse(
            "[upstream]\ncapacity = 2\n[[phase]]\nname = \"q\"\nseconds = 10\n[[phase]]\nname = \"a\"\nseconds = 10\nattack = true\n",
            "t",
        )
        .expect("scenario");
        let u = |m: f64, b: f64| -> BTreeMap<String, Usage> {
            [
                ("drill-members".to_owned(), Usage { requests: 1, slot_seconds: m }),
                ("drill-bots".to_owned(), Usage { requests: 1, slot_seconds: b }),
            ]
            .into_iter()
            .collect()
        };
        // Bots held 5 slot-seconds before the attack and 0.2 during it, of 2 × 10.
        let (rows, bots) = usage_rows(&s, &[(0.0, u(0.0, 0.0)), (10.0, u(3.0, 5.0)), (20.0, u(9.0, 5.2))]);
        assert!((bots - 1.0).abs() < 1e-9, "{bots}");
        let members = rows.iter().find(|r| r.user == "drill-members").expect("members row");
        assert!((members.attack_capacity_pct - 30.0).abs() < 1e-9);
    }
}
