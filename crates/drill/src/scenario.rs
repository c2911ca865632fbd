//! A drill scenario: a TOML file users copy and edit (see `bench/scenarios/`).
//!
//! Every field has a default, so a scenario names only what it changes; unknown
//! fields are errors, so a typo is not silently ignored. [`Scenario::validate`]
//! checks the bounds that keep a drill finite and on loopback.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::phones;

/// Most nodes a drill starts: each is a process on this machine.
pub const MAX_NODES: usize = 16;

/// The default attack scenario, shipped in the binary.
pub const ATTACK: &str = include_str!("../../../bench/scenarios/attack.toml");
/// The flash-crowd scenario: real newcomers only.
pub const FLASH_CROWD: &str = include_str!("../../../bench/scenarios/flash-crowd.toml");
/// An account farm's verified accounts against the members, with a flash crowd.
pub const ACCOUNT_FARM: &str = include_str!("../../../bench/scenarios/account-farm.toml");
/// SMS pumping: sign-ups to premium number ranges that never enter their codes.
pub const SMS_PUMPING: &str = include_str!("../../../bench/scenarios/sms-pumping.toml");

/// The scenarios shipped in the binary, by name.
pub const BUILT_IN: [(&str, &str); 4] =
    [("attack", ATTACK), ("flash-crowd", FLASH_CROWD), ("account-farm", ACCOUNT_FARM), ("sms-pumping", SMS_PUMPING)];

/// Most accounts an account farm signs up (each from a /24 of its own).
pub const MAX_FARM_ACCOUNTS: usize = 5_000;

/// Most requests a drill may start, whatever the scenario says.
pub const MAX_REQUESTS_CEILING: u64 = 2_000_000;
/// Longest drill, setup excluded.
pub const MAX_SECONDS: f64 = 1800.0;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: invalid scenario: {}", .problems.join("; "))]
    Invalid { path: String, problems: Vec<String> },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub upstream: UpstreamSpec,
    #[serde(rename = "phase")]
    pub phases: Vec<PhaseSpec>,
    pub members: MembersSpec,
    pub newcomers: Option<NewcomersSpec>,
    #[serde(rename = "bots")]
    pub bots: Vec<BotSpec>,
    pub gateway: GatewaySpec,
    pub baselines: BaselinesSpec,
    pub limits: LimitsSpec,
    pub targets: TargetsSpec,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "drill".into(),
            description: String::new(),
            upstream: UpstreamSpec::default(),
            phases: vec![PhaseSpec { name: "quiet".into(), seconds: 10.0, attack: false }],
            members: MembersSpec::default(),
            newcomers: None,
            bots: Vec::new(),
            gateway: GatewaySpec::default(),
            baselines: BaselinesSpec::default(),
            limits: LimitsSpec::default(),
            targets: TargetsSpec::default(),
        }
    }
}

/// The simulated model: C concurrent replies, each `ttft_ms` plus `max_tokens` at
/// `tokens_per_s`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSpec {
    pub capacity: usize,
    pub ttft_ms: u64,
    pub tokens_per_s: u32,
    /// Tokens every drill request asks for.
    pub max_tokens: u32,
    /// Requests the model queues past its capacity before answering 503.
    pub queue: usize,
}

impl Default for UpstreamSpec {
    fn default() -> Self {
        UpstreamSpec { capacity: 8, ttft_ms: 100, tokens_per_s: 100, max_tokens: 10, queue: 1024 }
    }
}

impl UpstreamSpec {
    /// Seconds one reply holds a slot.
    pub fn service_s(&self) -> f64 {
        let per_token = if self.tokens_per_s == 0 { 0.0 } else { 1.0 / f64::from(self.tokens_per_s) };
        self.ttft_ms as f64 / 1000.0 + f64::from(self.max_tokens.saturating_sub(1)) * per_token
    }

    /// Replies per second at full capacity.
    pub fn capacity_rps(&self) -> f64 {
        self.capacity as f64 / self.service_s().max(1e-3)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub name: String,
    pub seconds: f64,
    /// Shaded on the chart; bots with no `phases` run in these.
    #[serde(default)]
    pub attack: bool,
}

/// Logged-in users: registered, verified and logged in before the first phase, each
/// from its own /24 (as real users are), chatting throughout with their session.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembersSpec {
    pub count: usize,
    /// Chat requests per second from all of them, as a share of the model's capacity.
    pub chat_load: f64,
    /// Fresh logins per second (a member signing in again on another device).
    pub logins_per_s: f64,
}

impl Default for MembersSpec {
    fn default() -> Self {
        MembersSpec { count: 20, chat_load: 0.5, logins_per_s: 0.5 }
    }
}

/// Real newcomers: each one registers, verifies, logs in and chats once, behaving as a
/// browser does (solves challenges, waits in the waiting room, honours Retry-After).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewcomersSpec {
    pub count: usize,
    /// The phase in which they arrive, spread evenly over it.
    pub arrive_in: String,
    /// /24 networks they come from (a carrier NAT puts many behind one).
    #[serde(default = "default_newcomer_subnets")]
    pub subnets: usize,
    /// Sign up with a phone number instead of an e-mail address: number ranges written
    /// with an `x` for each digit that varies (`"+44 7400 1xxxxx"`), taken in turn, every
    /// number a valid one of its region. Empty: e-mail addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
}

fn default_newcomer_subnets() -> usize {
    16
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum BotKind {
    /// `POST /auth/register` with made-up addresses.
    SignupFlood,
    /// `POST /auth/login` with the members' real addresses and leaked-password guesses.
    CredentialStuffing,
    /// `POST /v1/chat/completions` with made-up API keys (or none).
    InferenceFlood,
    /// Connections that send their request head a few bytes at a time.
    Slowloris,
    /// Sign-ups from bots that solve the proof-of-work challenge.
    PowSolvers,
    /// Verified accounts, signed up through the public flow just before the attack (one
    /// /24 each), each keeping `in_flight_per_account` chat requests in flight with the
    /// same prompt: one is sent again as soon as the last is answered or refused.
    AccountFarm,
    /// Sign-ups with phone numbers from premium ranges (`phones`) whose codes are never
    /// entered: toll fraud, paid per text. They pay the edge's proof-of-work (every text
    /// earns them money) but do not wait in the waiting room.
    SmsPumping,
}

impl BotKind {
    pub fn label(self) -> &'static str {
        match self {
            BotKind::SignupFlood => "sign-up flood",
            BotKind::CredentialStuffing => "credential stuffing",
            BotKind::InferenceFlood => "inference flood",
            BotKind::Slowloris => "slowloris",
            BotKind::PowSolvers => "pow-solving bots",
            BotKind::AccountFarm => "account farm",
            BotKind::SmsPumping => "sms pumping",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BotSpec {
    pub kind: BotKind,
    /// Source addresses, spread over `subnets` /24 networks of 127.0.0.0/8 (not for an
    /// account farm: each of its accounts has a /24 of its own).
    #[serde(default)]
    pub sources: usize,
    #[serde(default = "default_bot_subnets")]
    pub subnets: usize,
    /// Requests (or, for slowloris, new connections) started per second (not for an
    /// account farm, which keeps its requests in flight instead).
    #[serde(default)]
    pub rate: f64,
    /// Phases it runs in; default: every phase marked `attack`.
    #[serde(default)]
    pub phases: Vec<String>,
    /// Send a browser's headers (better bots do); otherwise a scripting client's.
    #[serde(default)]
    pub browser_like: bool,
    /// Inference flood only: send a made-up `Authorization: Bearer` key.
    #[serde(default = "yes")]
    pub fake_keys: bool,
    /// Account farm only: accounts it signs up, verifies and logs in before the phases.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub accounts: usize,
    /// Account farm only: chat requests each account keeps in flight.
    #[serde(default = "default_in_flight_per_account")]
    pub in_flight_per_account: usize,
    /// Account farm only: the longest `Retry-After` honoured before sending again, in
    /// seconds (a longer one is cut to this).
    #[serde(default = "default_max_retry_after_s")]
    pub max_retry_after_s: f64,
    /// SMS pumping only: the number ranges signed up, as for newcomers (`x` for each
    /// digit that varies), taken in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    /// SMS pumping only: solve the proof of work the gateway asks before it texts a range
    /// whose codes are rarely entered (`sms_proof_required`), as a genuine browser does.
    #[serde(default, skip_serializing_if = "is_false")]
    pub solves_proof: bool,
}

fn default_bot_subnets() -> usize {
    64
}

fn default_in_flight_per_account() -> usize {
    3
}

fn default_max_retry_after_s() -> f64 {
    5.0
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

/// How the gateway under test runs: `PALISADE_*` variables on top of the drill's own
/// (upstream, data directory, logging), and on how many nodes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySpec {
    pub env: BTreeMap<String, String>,
    /// Palisade nodes sharing one Redis and one PostgreSQL, traffic spread over them as
    /// a balancer would (`--nodes` overrides it). The baselines run on one node.
    pub nodes: usize,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        GatewaySpec { env: BTreeMap::new(), nodes: 1 }
    }
}

/// The same traffic against what an operator would otherwise run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselinesSpec {
    /// Palisade as a plain proxy: edge guard, admission, and the texts' breaker and
    /// budgets off.
    pub defences_off: bool,
    /// nginx `limit_req`/`limit_conn` in front of that plain proxy.
    pub nginx: bool,
    /// nginx's per-address request rate (`limit_req_zone ... rate=`), per second.
    pub nginx_rate_per_s: u32,
    pub nginx_burst: u32,
    /// nginx's per-address connection cap (`limit_conn`).
    pub nginx_conn_per_ip: u32,
}

impl Default for BaselinesSpec {
    fn default() -> Self {
        BaselinesSpec { defences_off: true, nginx: true, nginx_rate_per_s: 10, nginx_burst: 20, nginx_conn_per_ip: 16 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSpec {
    /// Requests started in one run (one target), all traffic together.
    pub max_requests: u64,
    /// Requests of one traffic kind in flight; past it a scheduled one is dropped.
    pub max_in_flight: usize,
    pub request_timeout_s: f64,
    /// After the last phase, how long to wait for replies still in flight.
    pub drain_s: f64,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec { max_requests: 400_000, max_in_flight: 2048, request_timeout_s: 30.0, drain_s: 10.0 }
    }
}

/// What the drill must show; the report says PASS or FAIL for each.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetsSpec {
    /// Logged-in users' success in attack phases, percent.
    pub member_success_pct: f64,
    /// Logged-in users' p99 in attack phases over their p99 in the first phase.
    pub member_p99_ratio: f64,
    /// Newcomers through to their first answer by the end, percent.
    pub newcomers_admitted_pct: f64,
    /// Upstream capacity (slot-time) bots obtain during attack phases, percent.
    pub bot_capacity_pct: f64,
    /// With several nodes: what a per-key limit admits across all of them, over what
    /// the limit allows (1.0 is exact; independent nodes would reach the node count).
    pub fleet_limit_ratio: f64,
    /// With an account farm: its share of the model's capacity (slot-time) in attack
    /// phases may be at most 100 − the members' share + this many points, i.e. the farm
    /// gets only what the members leave unused.
    pub farm_capacity_margin_pct: f64,
    /// With SMS pumping: how much texts to bots per genuine sign-up must fall against
    /// the defences-off run, percent.
    pub sms_bot_texts_reduction_pct: f64,
    /// With SMS pumping: newcomers whose verification code was sent, percent.
    pub newcomer_codes_pct: f64,
}

impl Default for TargetsSpec {
    fn default() -> Self {
        TargetsSpec {
            member_success_pct: 99.0,
            member_p99_ratio: 2.0,
            newcomers_admitted_pct: 95.0,
            bot_capacity_pct: 1.0,
            fleet_limit_ratio: 1.05,
            farm_capacity_margin_pct: 5.0,
            sms_bot_texts_reduction_pct: 90.0,
            newcomer_codes_pct: 99.0,
        }
    }
}

impl Scenario {
    /// A built-in scenario by name, or a file.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some((name, text)) = BUILT_IN.iter().find(|(name, _)| *name == name_or_path) {
            return Scenario::parse(text, &format!("{name} (built in)"));
        }
        let text = std::fs::read_to_string(Path::new(name_or_path))
            .map_err(|source| ScenarioError::Read { path: name_or_path.to_owned(), source })?;
        Scenario::parse(&text, name_or_path)
    }

    pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let problems = scenario.problems();
        if problems.is_empty() { Ok(scenario) } else { Err(ScenarioError::Invalid { path: path.to_owned(), problems }) }
    }

    /// Every problem at once, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                out.push(what);
            }
        };
        check(!self.phases.is_empty(), "at least one [[phase]] is needed".into());
        for (i, p) in self.phases.iter().enumerate() {
            check(p.seconds > 0.0 && p.seconds.is_finite(), format!("phase[{i}].seconds must be > 0"));
            check(!p.name.is_empty(), format!("phase[{i}].name must not be empty"));
        }
        check(self.total_seconds() <= MAX_SECONDS, format!("the phases last more than {MAX_SECONDS} s in all"));
        let u = &self.upstream;
        check((1..=4096).contains(&u.capacity), "upstream.capacity must be 1..=4096".into());
        check((1..=4096).contains(&u.max_tokens), "upstream.max_tokens must be 1..=4096".into());
        check(self.members.count <= 250 * 200, "members.count must be at most 50000".into());
        check(self.members.chat_load >= 0.0, "members.chat_load must be ≥ 0".into());
        check(self.members.logins_per_s >= 0.0, "members.logins_per_s must be ≥ 0".into());
        if let Some(n) = &self.newcomers {
            check(self.phase(&n.arrive_in).is_some(), format!("newcomers.arrive_in: no phase named {:?}", n.arrive_in));
            check((1..=200).contains(&n.subnets), "newcomers.subnets must be 1..=200".into());
            check(n.count <= 50_000, "newcomers.count must be at most 50000".into());
            for problem in phones::problems(&n.phones, n.count as u64) {
                check(false, format!("newcomers.phones{problem}"));
            }
        }
        for (i, b) in self.bots.iter().enumerate() {
            if b.kind == BotKind::AccountFarm {
                check(
                    (1..=MAX_FARM_ACCOUNTS).contains(&b.accounts),
                    format!("bots[{i}].accounts must be 1..={MAX_FARM_ACCOUNTS}"),
                );
                check(
                    (1..=16).contains(&b.in_flight_per_account),
                    format!("bots[{i}].in_flight_per_account must be 1..=16"),
                );
                check(
                    (0.0..=60.0).contains(&b.max_retry_after_s),
                    format!("bots[{i}].max_retry_after_s must be in [0, 60]"),
                );
                let max = self.limits.max_in_flight;
                check(
                    b.accounts.saturating_mul(b.in_flight_per_account) <= max,
                    format!("bots[{i}]: accounts × in_flight_per_account must be at most limits.max_in_flight ({max})"),
                );
                let unused = "an account farm keeps in_flight_per_account requests in flight from one /24 per account";
                check(b.sources == 0, format!("bots[{i}].sources: not used ({unused})"));
                check(b.rate == 0.0, format!("bots[{i}].rate: not used ({unused})"));
            } else {
                check(b.sources >= 1 && b.sources <= 65_000, format!("bots[{i}].sources must be 1..=65000"));
                check((1..=250).contains(&b.subnets), format!("bots[{i}].subnets must be 1..=250"));
                check(b.rate > 0.0 && b.rate <= 50_000.0, format!("bots[{i}].rate must be in (0, 50000]"));
                check(b.accounts == 0, format!("bots[{i}].accounts: only for kind = \"account_farm\""));
            }
            if b.kind == BotKind::SmsPumping {
                check(!b.phones.is_empty(), format!("bots[{i}].phones: list the number ranges it signs up"));
                // Bots may run out of fresh numbers and reuse them (the gateway's
                // per-number budget then answers), so only the templates are checked.
                for problem in phones::problems(&b.phones, 0) {
                    check(false, format!("bots[{i}].phones{problem}"));
                }
            } else {
                check(b.phones.is_empty(), format!("bots[{i}].phones: only for kind = \"sms_pumping\""));
                check(!b.solves_proof, format!("bots[{i}].solves_proof: only for kind = \"sms_pumping\""));
            }
            for p in &b.phases {
                check(self.phase(p).is_some(), format!("bots[{i}].phases: no phase named {p:?}"));
            }
        }
        let farms = self.bots.iter().filter(|b| b.kind == BotKind::AccountFarm).count();
        check(farms <= 1, "at most one [[bots]] of kind = \"account_farm\"".into());
        check(
            self.targets.farm_capacity_margin_pct.is_finite(),
            "targets.farm_capacity_margin_pct must be a number".into(),
        );
        check((1..=MAX_NODES).contains(&self.gateway.nodes), format!("gateway.nodes must be 1..={}", MAX_NODES));
        check(self.targets.fleet_limit_ratio > 0.0, "targets.fleet_limit_ratio must be > 0".into());
        for key in self.gateway.env.keys() {
            check(key.starts_with("PALISADE_"), format!("gateway.env.{key}: only PALISADE_* variables"));
        }
        let l = &self.limits;
        check(l.max_requests >= 1 && l.max_requests <= MAX_REQUESTS_CEILING, "limits.max_requests out of range".into());
        check(l.max_in_flight >= 1 && l.max_in_flight <= 20_000, "limits.max_in_flight must be 1..=20000".into());
        check(
            l.request_timeout_s > 0.0 && l.request_timeout_s <= 300.0,
            "limits.request_timeout_s must be (0, 300]".into(),
        );
        check(l.drain_s >= 0.0 && l.drain_s <= 300.0, "limits.drain_s must be [0, 300]".into());
        out
    }

    pub fn phase(&self, name: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.name == name)
    }

    pub fn total_seconds(&self) -> f64 {
        self.phases.iter().map(|p| p.seconds).sum()
    }

    /// Start and end (seconds since the first phase began) of phase `i`.
    pub fn window(&self, i: usize) -> (f64, f64) {
        // A float sum starts at -0.0; + 0.0 makes an empty one print as 0.
        let start = self.phases[..i].iter().map(|p| p.seconds).sum::<f64>() + 0.0;
        (start, start + self.phases[i].seconds)
    }

    /// The phases a bot runs in.
    pub fn bot_phases(&self, bot: &BotSpec) -> Vec<usize> {
        if bot.phases.is_empty() {
            (0..self.phases.len()).filter(|&i| self.phases[i].attack).collect()
        } else {
            bot.phases.iter().filter_map(|p| self.phase(p)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse_and_validate() {
        for (name, _) in BUILT_IN {
            let s = Scenario::load(name).unwrap_or_else(|e| panic!("{e}"));
            assert!(s.total_seconds() > 0.0, "{name}");
            assert_eq!(s.gateway.nodes, 1, "{name} runs on one node unless told");
        }
        let attack = Scenario::load("attack").expect("attack");
        assert!(attack.phases.iter().any(|p| p.attack));
        let kinds: Vec<BotKind> = attack.bots.iter().map(|b| b.kind).collect();
        for kind in [
            BotKind::SignupFlood,
            BotKind::CredentialStuffing,
            BotKind::InferenceFlood,
            BotKind::Slowloris,
            BotKind::PowSolvers,
        ] {
            assert!(kinds.contains(&kind), "the attack scenario lacks {kind:?}");
        }
        let crowd = Scenario::load("flash-crowd").expect("flash-crowd");
        assert!(crowd.bots.is_empty() && crowd.newcomers.is_some());

        // Ten farm accounts per member, in the same run as a flash crowd of newcomers.
        let farm = Scenario::load("account-farm").expect("account-farm");
        let spec = farm.bots.iter().find(|b| b.kind == BotKind::AccountFarm).expect("a farm");
        assert_eq!(spec.accounts, 10 * farm.members.count);
        assert!((2..=4).contains(&spec.in_flight_per_account));
        assert!(farm.newcomers.is_some() && farm.baselines.defences_off);

        // Bots on premium ranges of other countries than the newcomers' ordinary ones.
        let sms = Scenario::load("sms-pumping").expect("sms-pumping");
        let pumping = sms.bots.iter().find(|b| b.kind == BotKind::SmsPumping).expect("pumping bots");
        let newcomers = sms.newcomers.as_ref().expect("newcomers");
        let regions = |ranges: &[String]| -> std::collections::BTreeSet<String> {
            ranges.iter().map(|r| crate::phones::range_region(r).expect("valid")).collect()
        };
        let (bots, people) = (regions(&pumping.phones), regions(&newcomers.phones));
        assert!((2..=3).contains(&bots.len()) && bots.is_disjoint(&people), "{bots:?} {people:?}");
        assert!(!pumping.solves_proof && sms.baselines.defences_off && !sms.baselines.nginx);
        assert!(
            crate::phones::capacity(&pumping.phones) as f64 >= pumping.rate * sms.total_seconds(),
            "every bot sign-up has a number of its own"
        );
    }

    #[test]
    fn kind_specific_fields_are_checked() {
        let farm = "[[phase]]\nname = \"a\"\nseconds = 1\nattack = true\n[[bots]]\nkind = \"account_farm\"\n\
                    rate = 3\nin_flight_per_account = 0\n";
        let e = Scenario::parse(farm, "f.toml").unwrap_err().to_string();
        for field in ["bots[0].accounts", "bots[0].in_flight_per_account", "bots[0].rate: not used"] {
            assert!(e.contains(field), "{field} missing from: {e}");
        }
        let many = "[[bots]]\nkind = \"account_farm\"\naccounts = 1000\nin_flight_per_account = 4\n";
        let e = Scenario::parse(many, "m.toml").unwrap_err().to_string();
        assert!(e.contains("at most limits.max_in_flight (2048)"), "{e}");
        let sms = "[[bots]]\nkind = \"sms_pumping\"\nsources = 1\nrate = 1\nphones = [\"+44 7400 1\"]\n\
                   [[bots]]\nkind = \"signup_flood\"\nsources = 1\nrate = 1\nsolves_proof = true\n";
        let e = Scenario::parse(sms, "s.toml").unwrap_err().to_string();
        for field in ["bots[0].phones[0]", "bots[1].solves_proof"] {
            assert!(e.contains(field), "{field} missing from: {e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = Scenario::parse("[members]\ncount = 1\ncolour = 3\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("colour") && e.starts_with("x.toml"), "{e}");
        let text = "[[phase]]\nname = \"a\"\nseconds = 0\n[[bots]]\nkind = \"slowloris\"\nsources = 10\nrate = 1\n\
                    phases = [\"b\"]\n[gateway]\nnodes = 0\n[gateway.env]\nRUST_LOG = \"debug\"\n";
        let e = Scenario::parse(text, "y.toml").unwrap_err().to_string();
        for field in ["phase[0].seconds", "bots[0].phases", "gateway.env.RUST_LOG", "gateway.nodes"] {
            assert!(e.contains(field), "{field} missing from: {e}");
        }
    }

    #[test]
    fn newcomers_phone_ranges_are_checked() {
        let text = "[newcomers]\ncount = 20\narrive_in = \"quiet\"\nphones = [\"+44 7400 12345x\", \"+44 7400\"]\n";
        let e = Scenario::parse(text, "n.toml").unwrap_err().to_string();
        assert!(e.contains("newcomers.phones[1]"), "{e}");
        let text = "[newcomers]\ncount = 20\narrive_in = \"quiet\"\nphones = [\"+44 7400 12345x\"]\n";
        let e = Scenario::parse(text, "n.toml").unwrap_err().to_string();
        assert!(e.contains("newcomers.phones: 10 distinct numbers"), "{e}");
    }

    #[test]
    fn windows_follow_the_phases_and_bots_default_to_attack_phases() {
        let s = Scenario::load("attack").expect("attack");
        let (start, end) = s.window(1);
        assert_eq!(start, s.phases[0].seconds);
        assert_eq!(end, s.phases[0].seconds + s.phases[1].seconds);
        let bot = BotSpec {
            kind: BotKind::SignupFlood,
            sources: 1,
            subnets: 1,
            rate: 1.0,
            phases: vec![],
            browser_like: false,
            fake_keys: true,
            accounts: 0,
            in_flight_per_account: 3,
            max_retry_after_s: 5.0,
            phones: Vec::new(),
            solves_proof: false,
        };
        let attack_phases: Vec<usize> = (0..s.phases.len()).filter(|&i| s.phases[i].attack).collect();
        assert_eq!(s.bot_phases(&bot), attack_phases);
    }
}
