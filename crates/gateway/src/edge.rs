//! The edge: the first thing a request to `/v1/*`, `/auth/*` or `/challenge` meets
//! after the listener has resolved its client. It wires the pure logic of the `shield`
//! crate to HTTP, cheapest check first (see [`screen`] for the order): lists, address
//! and subnet limits, identity, per-key and per-account limits, the bot score and
//! proof-of-work clearance for anonymous requests, route limits and the waiting room.
//!
//! [`Edge`] holds the state (fixed-size tables, the block list, the attack detector and
//! the waiting room); [`screen`] is the middleware; `challenge`, `waiting` and `admin`
//! are the endpoints; [`run_detector`] is the once-a-second attack-mode task.

pub mod admin;
pub mod challenge;
pub mod config;
pub mod metrics;
pub mod screen;
pub mod shared;
pub mod waiting;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use shield::{
    AttackDetector, BlockEntry, BlockList, BlockListError, BoundedTable, Challenge, Cidr, ClearanceError,
    ClearanceLedger, Client, ClientBinding, Counters, DecayingCount, EdgeLimits, Gcra, Key, LimiterTable, ListKind,
    Mode, PowError, PowIssuer, ReplayGuard, RouteId, TimingTracker, Transition, Verdict, WaitingRoom,
};

pub use config::ShieldConfig;
use metrics::EdgeMetrics;
use shared::{Refused, SharedLimits};

use crate::audit::{AuditLog, Event};
use crate::clock::now;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::refusal::{Admit, Turnstile};
use crate::request::Zone;

pub const CLEARANCE_HEADER: &str = "x-palisade-clearance";
/// A solved proof of work sent with the one request it pays for: `<token> <nonce>`.
pub const PROOF_HEADER: &str = "x-palisade-proof";
pub const PASS_HEADER: &str = "x-palisade-pass";

/// How long a failed challenge counts against an address in the bot score.
const FAILURE_HALF_LIFE: Duration = Duration::from_secs(600);
/// Sign-ups per subnet are counted with this half-life, read as "per hour".
const SIGNUP_HALF_LIFE: Duration = Duration::from_secs(3600);

/// The operator's attack-mode switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackSwitch {
    /// The detector decides.
    Auto,
    On,
    Off,
}

impl AttackSwitch {
    pub fn as_str(self) -> &'static str {
        match self {
            AttackSwitch::Auto => "auto",
            AttackSwitch::On => "on",
            AttackSwitch::Off => "off",
        }
    }

    pub fn parse(text: &str) -> Option<AttackSwitch> {
        [AttackSwitch::Auto, AttackSwitch::On, AttackSwitch::Off].into_iter().find(|s| s.as_str() == text)
    }
}

/// The edge's shared state. All methods take `&self`.
pub struct Edge {
    pub config: ShieldConfig,
    /// Clients reach the gateway over TLS (`auth.cookie_secure`): a bot-score signal,
    /// and the clearance cookie is `Secure`.
    https: bool,
    blocklist: RwLock<BlockList>,
    pub limits: EdgeLimits,
    /// Per-API-key limits for keys with their own `rpm_limit`.
    key_limits: LimiterTable,
    issuer: PowIssuer,
    /// Redeemed challenges and admission passes.
    replay: ReplayGuard,
    ledger: ClearanceLedger,
    timing: BoundedTable<TimingTracker>,
    failures: BoundedTable<DecayingCount>,
    signup_meter: BoundedTable<DecayingCount>,
    /// Per-request events are sampled into it; operator changes recorded.
    audit: Arc<AuditLog>,
    room: Mutex<WaitingRoom>,
    detector: Mutex<AttackDetector>,
    under_attack: AtomicBool,
    /// When the current attack began (Unix ms, wall clock), 0 outside attack mode: accounts
    /// created near it lose their member tier.
    attack_since: AtomicI64,
    routes: [Vec<RouteId>; Zone::ALL.len()],
    signups: AtomicU64,
    login_failures: AtomicU64,
    pub metrics: EdgeMetrics,
    /// With `shared_state`: the limits decided fleet-wide (`limits` then holds this
    /// node's share, for when the fleet does not answer).
    shared: Option<SharedLimits>,
}

impl Edge {
    /// Builds every table (all memory is allocated here). `key` signs challenges,
    /// clearances, tickets and passes; every node must share it. Tokens are bound to
    /// `epoch` (see [`shield::epoch_key`]): the replay guard and the clearance ledger
    /// live in this process's memory, so a restart must not let what they remembered
    /// be presented again.
    pub fn new(
        config: &ShieldConfig,
        key: [u8; 32],
        epoch: u64,
        https: bool,
        audit: Arc<AuditLog>,
    ) -> Result<Edge, shield::ConfigError> {
        let key = shield::epoch_key(&key, epoch);
        let shield = config.rules();
        shield.validate()?;
        let limits = EdgeLimits::new(&shield.limits)?;
        let routes = Zone::ALL.map(|zone| limits.route_ids(zone.name()));
        let pow = &shield.pow;
        Ok(Edge {
            https,
            blocklist: RwLock::new(BlockList::new(shield.blocklist.max_entries)),
            key_limits: LimiterTable::new(shield.limits.api_key_entries),
            issuer: PowIssuer::new(key).with_challenge_ttl(Duration::from_millis(pow.challenge_ttl_ms)),
            replay: ReplayGuard::new(pow.replay_capacity),
            ledger: ClearanceLedger::new(pow.clearance_entries),
            timing: BoundedTable::new(shield.limits.ip_entries),
            failures: BoundedTable::new(shield.limits.ip_entries),
            signup_meter: BoundedTable::new(shield.limits.subnet_entries),
            audit,
            // Tickets are bound to `epoch` as well: one queue's across a fleet (which shares
            // it), a fresh one on a restarted single node (whose queue died with it).
            room: Mutex::new(WaitingRoom::with_epoch(shield.waiting_room.clone(), key, epoch)),
            detector: Mutex::new(AttackDetector::new(shield.attack.clone())),
            under_attack: AtomicBool::new(false),
            attack_since: AtomicI64::new(0),
            routes,
            signups: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
            metrics: EdgeMetrics::default(),
            limits,
            config: config.clone(),
            shared: None,
        })
    }

    /// Decides the address, subnet, key and account limits fleet-wide. Build the edge
    /// with this node's share of the limits (see [`shared::share`]) for the fallback.
    pub fn with_shared(mut self, shared: SharedLimits) -> Edge {
        self.shared = Some(shared);
        self
    }

    /// The shared state, when configured.
    pub fn fleet(&self) -> Option<&Arc<fleet::Fleet>> {
        self.shared.as_ref().map(SharedLimits::fleet)
    }

    /// The shared limits when they are configured and answering; else the caller decides
    /// locally (and that is counted).
    fn shared_up(&self) -> Option<&SharedLimits> {
        let shared = self.shared.as_ref()?;
        if shared.fleet().is_up() {
            Some(shared)
        } else {
            shared.fleet().count_fallback();
            None
        }
    }

    /// The address's and the subnet's limits (`cost` 2 for the double charge).
    pub async fn check_source(&self, client: &Client, cost: u32, now: Duration) -> shield::Decision {
        if let Some(shared) = self.shared_up() {
            match shared.check_source(client, cost).await {
                Ok(d) => return d,
                Err(_) => shared.fleet().count_fallback(),
            }
        }
        let mut d = self.limits.check_source(client, now);
        for _ in 1..cost {
            if !d.allowed {
                break;
            }
            d = self.limits.check_source(client, now);
        }
        d
    }

    /// The source's limits, then a known caller's, in one round trip to the shared state
    /// (a caller the credential cache already knew: no lookup was needed to name it).
    /// `lease`: also take one of the account's fleet-wide concurrent-request leases,
    /// returned when taken (give it back with [`Edge::release`] when the reply is over).
    pub async fn check_source_and_identified(
        &self,
        client: &Client,
        key: Option<(&str, Option<u32>)>,
        account: u64,
        lease: Option<&str>,
        now: Duration,
    ) -> Result<Option<fleet::Lease>, (shield::Decision, Refused)> {
        if let Some(decided) = self.shared_identified(Some(client), key, account, lease, now).await {
            return decided;
        }
        let source = self.check_source(client, 1, now).await;
        if !source.allowed {
            return Err((source, Refused::Source));
        }
        self.check_identified(key, account, lease, now).await
    }

    /// The caller's limits (after the source's, with `client`) decided by the fleet, or
    /// `None` when the node must decide alone (no shared state, or it failed: counted).
    async fn shared_identified(
        &self,
        client: Option<&Client>,
        key: Option<(&str, Option<u32>)>,
        account: u64,
        lease: Option<&str>,
        now: Duration,
    ) -> Option<Result<Option<fleet::Lease>, (shield::Decision, Refused)>> {
        let shared = self.shared_up()?;
        let bare = key.map(|(prefix, rpm)| (prefix.strip_prefix("pal_").unwrap_or(prefix), rpm));
        let lease = lease.map(|id| shared.lease(account, id.to_owned()));
        let decided = match client {
            Some(client) => shared.check_source_then_identified(client, bare, account, lease.as_ref(), now).await,
            None => shared.check_identified(bare, account, lease.as_ref(), now).await,
        };
        match decided {
            Ok((_, None)) => Some(Ok(lease)),
            Ok((d, Some(which))) => Some(Err((d, which))),
            Err(_) => {
                shared.fleet().count_fallback();
                None
            }
        }
    }

    /// The per-key limit (when the request carries a key) and the per-account limit; in a
    /// fleet, with `lease`, a concurrent-request lease as well. While the fleet is away
    /// no lease is taken: admission's per-account limit holds on each node.
    pub async fn check_identified(
        &self,
        key: Option<(&str, Option<u32>)>,
        account: u64,
        lease: Option<&str>,
        now: Duration,
    ) -> Result<Option<fleet::Lease>, (shield::Decision, Refused)> {
        if let Some(decided) = self.shared_identified(None, key, account, lease, now).await {
            return decided;
        }
        if let Some((prefix, rpm)) = key {
            // The local table holds this node's share; so must a key's own limit.
            let nodes = self.shared.as_ref().map_or(1, SharedLimits::nodes);
            let d = self.check_key(prefix, rpm.map(|n| n.div_ceil(nodes).max(1)), now);
            if !d.allowed {
                return Err((d, Refused::ApiKey));
            }
        }
        let d = self.limits.check_account(account, now);
        if d.allowed { Ok(None) } else { Err((d, Refused::Account)) }
    }

    /// Reserves `tokens` of the account's inference budget: fleet-wide when shared (see
    /// [`shared`] for how), else on this node. Returns the decision and whether the fleet
    /// holds the reservation (settle it with [`Edge::settle_tokens`]).
    pub fn spend_tokens(&self, account: u64, tokens: u32, now: Duration) -> (shield::Decision, bool) {
        match self.shared_up() {
            Some(shared) => (shared.spend_tokens(account, tokens, now), true),
            None => (self.limits.check_tokens(account, tokens, now), false),
        }
    }

    /// Draws `tokens` more for a reply already reserved `in_fleet` or not (a stream past
    /// its reservation), from the same budget.
    pub fn draw_tokens(&self, account: u64, tokens: u32, in_fleet: bool, now: Duration) -> shield::Decision {
        match self.shared.as_ref().filter(|_| in_fleet) {
            Some(shared) => shared.spend_tokens(account, tokens, now),
            None => self.limits.check_tokens(account, tokens, now),
        }
    }

    /// Settles what [`Edge::spend_tokens`] reserved (`in_fleet`: where) to `used`. In the
    /// fleet, for a refund that matters, the receiver hears when every node would see it.
    pub fn settle_tokens(
        &self,
        account: u64,
        charged: u32,
        used: u32,
        in_fleet: bool,
        now: Duration,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        match self.shared.as_ref().filter(|_| in_fleet) {
            Some(shared) => shared.settle_tokens(account, charged, used, now),
            None => {
                self.limits.settle_tokens(account, charged, used, now);
                None
            }
        }
    }

    /// Charges `cost` more requests to the account's rate (fleet-wide when shared).
    pub fn charge_account(&self, account: u64, cost: u32, now: Duration) -> shield::Decision {
        match self.shared_up() {
            Some(shared) => shared.charge_account(account, cost, now),
            None => self.limits.charge_account(account, cost, now),
        }
    }

    /// Gives a lease back in the background (the reply is over or the client left).
    pub fn release(&self, lease: fleet::Lease) {
        let Some(fleet) = self.fleet().cloned() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            // Not given back, it lapses by itself (`shared::LEASE_TTL`).
            let _ = fleet.release(&lease).await;
        });
    }

    /// Claims a one-time id (a redeemed challenge's seed, a used pass) here and, when
    /// shared, across the fleet. Claimed locally too, so an outage of the shared state
    /// still refuses replays on this node.
    async fn claim_once(
        &self,
        kind: &str,
        id: &[u8; 16],
        expires_at: Duration,
        now: Duration,
    ) -> Result<(), shield::ReplayError> {
        self.replay.claim(id, expires_at, now)?;
        if let Some(shared) = self.shared_up() {
            match shared.fleet().claim_once(kind, id, expires_at.saturating_sub(now)).await {
                Ok(true) => {}
                Ok(false) => return Err(shield::ReplayError::Replayed),
                Err(_) => shared.fleet().count_fallback(),
            }
        }
        Ok(())
    }

    /// Tells the fleet about a list change made here (`None`: removed). Without shared
    /// state, or when it fails (logged), the change holds on this node only.
    pub async fn publish_rule(&self, list: ListKind, cidr: Cidr, entry: Option<(Option<Duration>, &str)>) {
        let Some(fleet) = self.fleet() else { return };
        let (field, value) = match entry {
            Some((expires_at, note)) => {
                let (f, v) = shared::encode_rule(list, cidr, expires_at, note);
                (f, Some(v))
            }
            None => (shared::encode_rule(list, cidr, None, "").0, None),
        };
        if let Err(error) = fleet.put_list_rule(&field, value.as_deref()).await {
            tracing::warn!(%error, "a list change holds on this node only: the shared state did not take it");
        }
    }

    /// Tells the fleet about the operator's attack-mode switch set here.
    pub async fn publish_attack(&self, switch: AttackSwitch) {
        let Some(fleet) = self.fleet() else { return };
        if let Err(error) = fleet.set_attack_override(switch.as_str()).await {
            tracing::warn!(%error, "the attack-mode switch holds on this node only: the shared state did not take it");
        }
    }

    /// Replaces both lists with `entries` (another node changed them).
    pub fn replace_rules(&self, entries: &[BlockEntry], now: Duration) {
        let mut list = BlockList::new(self.config.rules().blocklist.max_entries);
        for e in entries {
            if let Err(error) = list.insert(e.list, e.cidr, e.expires_at, &e.note, now) {
                tracing::warn!(%error, cidr = %e.cidr, "a shared list entry was not applied");
            }
        }
        *self.write_list() = list;
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// True while the gateway is in attack mode (automatic or forced).
    pub fn under_attack(&self) -> bool {
        self.under_attack.load(Ordering::Relaxed)
    }

    /// When the current attack began (Unix ms), if the gateway is in attack mode.
    pub fn attack_since(&self) -> Option<i64> {
        Some(self.attack_since.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Notes the detector's mode, and when an attack began.
    fn note_mode(&self, mode: Mode) {
        let on = mode == Mode::UnderAttack;
        let was = self.under_attack.swap(on, Ordering::Relaxed);
        if on && !was {
            let since = i64::try_from(crate::clock::now().as_millis()).unwrap_or(i64::MAX);
            self.attack_since.store(since, Ordering::Relaxed);
        } else if !on {
            self.attack_since.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the clearance cookie is marked `Secure`.
    pub fn https(&self) -> bool {
        self.https
    }

    /// What a challenge, clearance or ticket is bound to: the client's subnet and agent.
    pub fn binding(&self, client: &Client, headers: &HeaderMap) -> ClientBinding {
        let ua = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        ClientBinding::for_client(client, ua)
    }

    fn read_list(&self) -> std::sync::RwLockReadGuard<'_, BlockList> {
        self.blocklist.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_list(&self) -> std::sync::RwLockWriteGuard<'_, BlockList> {
        self.blocklist.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn lookup(&self, client: &Client, now: Duration) -> Verdict {
        self.read_list().lookup(client.ip(), now)
    }

    /// Adds or replaces a block or allow entry, live.
    pub fn insert_rule(
        &self,
        list: ListKind,
        cidr: Cidr,
        ttl: Option<Duration>,
        note: &str,
        now: Duration,
    ) -> Result<(), BlockListError> {
        let expires_at = ttl.map(|t| now.saturating_add(t));
        self.write_list().insert(list, cidr, expires_at, note, now)
    }

    pub fn remove_rule(&self, list: ListKind, cidr: Cidr) -> bool {
        self.write_list().remove(list, cidr)
    }

    /// Live entries of both lists.
    pub fn rules(&self, now: Duration) -> Vec<BlockEntry> {
        let list = self.read_list();
        let mut out = list.list(ListKind::Allow, now);
        out.extend(list.list(ListKind::Block, now));
        out
    }

    /// Current proof-of-work difficulty for a client with this bot score.
    pub fn difficulty(&self, bot_score: u8) -> u8 {
        self.config.pow.difficulty(self.under_attack(), bot_score)
    }

    pub fn challenge(&self, binding: &ClientBinding, bot_score: u8, now: Duration) -> Challenge {
        self.issuer.challenge(binding, self.difficulty(bot_score), now)
    }

    /// A challenge of `difficulty` bits whatever the bot score: the price of a text to a
    /// number range whose codes are seldom entered (see `auth::register`).
    pub fn challenge_at(&self, binding: &ClientBinding, difficulty: u8, now: Duration) -> Challenge {
        self.issuer.challenge(binding, difficulty, now)
    }

    /// Checks a proof of work sent with the request it pays for (`<token> <nonce>`, see
    /// [`PROOF_HEADER`]) rather than redeemed for a clearance: a solution of at least
    /// `difficulty` bits, used once (fleet-wide when shared, and never also as a clearance).
    pub async fn prove(
        &self,
        proof: &str,
        difficulty: u8,
        binding: &ClientBinding,
        client: &Client,
        now: Duration,
    ) -> Result<(), PowError> {
        let result = match proof.trim().split_once(' ') {
            None => Err(PowError::Malformed),
            Some((token, nonce)) => match self.issuer.verify(token, nonce.trim(), binding, now) {
                Ok(solved) if solved.difficulty < difficulty => Err(PowError::InsufficientWork),
                Ok(solved) => {
                    self.claim_once("pow", &solved.seed, solved.expires_at, now).await.map_err(PowError::from)
                }
                Err(e) => Err(e),
            },
        };
        if result.is_err() {
            self.failed_challenge(client, now);
        }
        result
    }

    /// Checks a solution (once, fleet-wide when shared) and returns a fresh clearance token.
    pub async fn redeem(
        &self,
        token: &str,
        nonce: &str,
        binding: &ClientBinding,
        client: &Client,
        now: Duration,
    ) -> Result<String, PowError> {
        let redeemed = match self.issuer.verify(token, nonce, binding, now) {
            Ok(solved) => self.claim_once("pow", &solved.seed, solved.expires_at, now).await.map_err(PowError::from),
            Err(e) => Err(e),
        };
        match redeemed {
            Ok(()) => {
                let p = &self.config.pow;
                Ok(self.issuer.issue_clearance(
                    binding,
                    Duration::from_millis(p.clearance_ttl_ms),
                    p.clearance_budget,
                    now,
                ))
            }
            Err(e) => {
                self.failed_challenge(client, now);
                Err(e)
            }
        }
    }

    /// Checks a clearance and spends one request of its budget (fleet-wide when shared:
    /// a clearance is good for its budget in the whole fleet, not on each node); returns
    /// what remains.
    pub async fn spend_clearance(
        &self,
        token: &str,
        binding: &ClientBinding,
        client: &Client,
        now: Duration,
    ) -> Result<u32, ClearanceError> {
        let result = match self.issuer.check_clearance(token, binding, now) {
            Ok(c) => self.spend_budget(&c, now).await,
            Err(e) => Err(e),
        };
        if matches!(result, Err(ClearanceError::Forged | ClearanceError::Malformed | ClearanceError::WrongClient)) {
            self.failed_challenge(client, now);
        }
        result
    }

    async fn spend_budget(&self, clearance: &shield::Clearance, now: Duration) -> Result<u32, ClearanceError> {
        if let Some(shared) = self.shared_up() {
            let ttl = clearance.expires_at.saturating_sub(now);
            match shared.fleet().spend_once("clearance", &clearance.id.to_be_bytes(), clearance.budget, ttl).await {
                Ok(Some(left)) => return Ok(left),
                Ok(None) => return Err(ClearanceError::BudgetSpent),
                Err(_) => shared.fleet().count_fallback(),
            }
        }
        self.ledger.spend(clearance, now)
    }

    fn failed_challenge(&self, client: &Client, now: Duration) {
        self.failures.update(Key::ip(client.ip()), now, |c| c.add(1.0, now, FAILURE_HALF_LIFE));
    }

    /// Claims an admission pass id so a pass lets one registration through.
    pub async fn claim_pass(
        &self,
        id: &[u8; 16],
        expires_at: Duration,
        now: Duration,
    ) -> Result<(), shield::ReplayError> {
        self.claim_once("pass", id, expires_at, now).await
    }

    pub(crate) fn room(&self) -> std::sync::MutexGuard<'_, WaitingRoom> {
        self.room.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn detector(&self) -> std::sync::MutexGuard<'_, AttackDetector> {
        self.detector.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mode, the operator's override if any, and when the mode began.
    pub fn attack_state(&self) -> (Mode, Option<bool>, Duration, [shield::MetricState; 4]) {
        let d = self.detector();
        (d.mode(), d.forced(), d.since(), d.metrics())
    }

    /// The operator's switch; returns the transition it caused, if any.
    pub fn force(&self, switch: AttackSwitch, now: Duration) -> Option<Transition> {
        let force = match switch {
            AttackSwitch::Auto => None,
            AttackSwitch::On => Some(true),
            AttackSwitch::Off => Some(false),
        };
        let mut d = self.detector();
        let t = d.force(force, now);
        self.note_mode(d.mode());
        t
    }

    /// One detector tick with the events counted since the last.
    pub fn observe(&self, counts: Counters, now: Duration) -> Option<Transition> {
        // With the edge off nothing acts on attack mode, so the detector must not
        // announce one (the status page would tell users of a defence that is off).
        if !self.enabled() {
            return None;
        }
        let mut d = self.detector();
        let t = d.observe(counts, now);
        self.note_mode(d.mode());
        t
    }

    /// Every configured limit for `zone` (fleet-wide when shared); the tightest decision.
    pub async fn check_route(
        &self,
        zone: Zone,
        client: &Client,
        account: Option<u64>,
        now: Duration,
    ) -> shield::Decision {
        // Most zones have no route limit: nothing to ask the fleet, no fallback to count.
        if self.routes[zone as usize].is_empty() {
            return shield::Decision::unlimited();
        }
        if let Some(shared) = self.shared_up() {
            match shared.check_route(zone.name(), client, account).await {
                Some(Ok(d)) => return d,
                None => return shield::Decision::unlimited(),
                Some(Err(_)) => shared.fleet().count_fallback(),
            }
        }
        let mut decision = shield::Decision::unlimited();
        for id in &self.routes[zone as usize] {
            decision = decision.tightest(self.limits.check_route(*id, client, account, now));
            if !decision.allowed {
                break;
            }
        }
        decision
    }

    /// The per-key limit: the key's own `rpm_limit` when it has one, else `limits.per_api_key`.
    pub fn check_key(&self, prefix: &str, rpm_limit: Option<u32>, now: Duration) -> shield::Decision {
        let key = Key::api_key_prefix(prefix.strip_prefix("pal_").unwrap_or(prefix));
        match rpm_limit.and_then(|n| Gcra::per_period(n, Duration::from_secs(60), n).ok()) {
            Some(own) => self.key_limits.check(key, &own, now, 1),
            None => self.limits.check_api_key(key, now),
        }
    }

    /// Writes a per-request event about `client` to the audit log, sampled: at most
    /// one per address a minute and a few a second in all.
    fn audit_sampled(&self, client: &Client, now: Duration, make: impl FnOnce() -> Event) {
        self.audit.sample(Key::ip(client.ip()), now, || make().ip(client.ip()));
    }

    fn timing_of(&self, client: &Client, now: Duration) -> shield::TimingStats {
        self.timing.update(Key::ip(client.ip()), now, |t| {
            t.observe(now);
            t.stats()
        })
    }

    fn failures_of(&self, client: &Client, now: Duration) -> u32 {
        self.failures.get(Key::ip(client.ip())).map_or(0, |c| c.value(now, FAILURE_HALF_LIFE).round() as u32)
    }

    fn signups_of(&self, client: &Client, now: Duration) -> f32 {
        self.signup_meter.get(Key::subnet(client.subnet())).map_or(0.0, |c| c.value(now, SIGNUP_HALF_LIFE))
    }

    fn count_signup(&self, client: &Client, now: Duration) {
        self.signups.fetch_add(1, Ordering::Relaxed);
        self.signup_meter.update(Key::subnet(client.subnet()), now, |c| c.add(1.0, now, SIGNUP_HALF_LIFE));
    }

    fn count_login_failure(&self) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the edge's gauges and counters in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        self.metrics.render(out);
        out.push_str("# HELP palisade_edge_under_attack 1 while the gateway is in attack mode.\n");
        out.push_str("# TYPE palisade_edge_under_attack gauge\n");
        let _ = writeln!(out, "palisade_edge_under_attack {}", u8::from(self.under_attack()));
        {
            let list = self.read_list();
            out.push_str(
                "# HELP palisade_edge_list_entries Block and allow list entries (expired ones until purged).\n",
            );
            out.push_str("# TYPE palisade_edge_list_entries gauge\n");
            for kind in [ListKind::Allow, ListKind::Block] {
                let _ = writeln!(out, "palisade_edge_list_entries{{list=\"{kind}\"}} {}", list.len(kind));
            }
        }
        out.push_str("# HELP palisade_edge_waiting Registration waiting-room tickets ahead of admission.\n");
        out.push_str("# TYPE palisade_edge_waiting gauge\n");
        let _ = writeln!(out, "palisade_edge_waiting {}", self.room().waiting());
        out.push_str("# HELP palisade_edge_limiter_entries Entries held per limiter table (fixed capacity).\n");
        out.push_str("# TYPE palisade_edge_limiter_entries gauge\n");
        out.push_str("# HELP palisade_edge_limiter_evictions_total Entries evicted while still in debt.\n");
        out.push_str("# TYPE palisade_edge_limiter_evictions_total counter\n");
        for s in self.limits.stats() {
            let _ = writeln!(out, "palisade_edge_limiter_entries{{table=\"{}\"}} {}", s.name, s.entries);
            let _ = writeln!(out, "palisade_edge_limiter_evictions_total{{table=\"{}\"}} {}", s.name, s.evictions);
        }
        if let Some(fleet) = self.fleet() {
            out.push_str("# HELP palisade_shared_state_up 1 while the shared state (Redis) answers; 0: limits are local shares.\n");
            out.push_str("# TYPE palisade_shared_state_up gauge\n");
            let _ = writeln!(out, "palisade_shared_state_up {}", u8::from(fleet.is_up()));
            out.push_str("# HELP palisade_shared_state_fallbacks_total Decisions taken locally because the shared state failed or was down.\n");
            out.push_str("# TYPE palisade_shared_state_fallbacks_total counter\n");
            let _ = writeln!(out, "palisade_shared_state_fallbacks_total {}", fleet.fallbacks());
            out.push_str("# HELP palisade_shared_state_outages_total Times the shared state stopped answering.\n");
            out.push_str("# TYPE palisade_shared_state_outages_total counter\n");
            let _ = writeln!(out, "palisade_shared_state_outages_total {}", fleet.outages());
            out.push_str(
                "# HELP palisade_shared_state_round_trips_total Calls to the shared state (one round trip each).\n",
            );
            out.push_str("# TYPE palisade_shared_state_round_trips_total counter\n");
            let _ = writeln!(out, "palisade_shared_state_round_trips_total {}", fleet.round_trips());
            out.push_str("# HELP palisade_shared_state_lease_releases_total Of those, leases given back after a reply (off the request's path).\n");
            out.push_str("# TYPE palisade_shared_state_lease_releases_total counter\n");
            let _ = writeln!(out, "palisade_shared_state_lease_releases_total {}", fleet.releases());
            out.push_str("# HELP palisade_shared_state_budget_updates_total Of those, token and request budgets decided here and charged or settled in the fleet beside a request (off its path).\n");
            out.push_str("# TYPE palisade_shared_state_budget_updates_total counter\n");
            let _ = writeln!(out, "palisade_shared_state_budget_updates_total {}", fleet.updates());
        }
        let (_, _, _, rates) = self.attack_state();
        out.push_str("# HELP palisade_edge_attack_rate Recent rate per second the attack detector watches.\n");
        out.push_str("# TYPE palisade_edge_attack_rate gauge\n");
        out.push_str("# HELP palisade_edge_attack_baseline Normal rate per second (slow average).\n");
        out.push_str("# TYPE palisade_edge_attack_baseline gauge\n");
        for m in rates {
            let _ = writeln!(out, "palisade_edge_attack_rate{{metric=\"{}\"}} {:.3}", m.metric.code(), m.rate);
            let _ = writeln!(out, "palisade_edge_attack_baseline{{metric=\"{}\"}} {:.3}", m.metric.code(), m.baseline);
        }
    }
}

impl Edge {
    /// Logs, counts and audits a change of attack mode.
    pub async fn announce(&self, t: Transition, actor: &str) {
        let (to, index) = match t.to {
            Mode::UnderAttack => ("under_attack", 0),
            Mode::Normal => ("normal", 1),
        };
        self.metrics.transitions[index].fetch_add(1, Ordering::Relaxed);
        let detail = match t.cause {
            shield::Cause::RateExceeded { metric, rate, threshold } => {
                serde_json::json!({"metric": metric.code(), "rate_per_s": rate, "threshold_per_s": threshold})
            }
            shield::Cause::Calm { held } => serde_json::json!({"calm_for_s": held.as_secs()}),
            shield::Cause::Operator => serde_json::json!({}),
        };
        tracing::warn!(mode = to, cause = t.cause.code(), %detail, "attack mode changed");
        self.audit.record(Event::new(actor, "shield.attack_mode", to).reason(t.cause.code()).detail(detail)).await;
    }

    /// The bot score for this request (the per-source meters are updated).
    pub fn bot_verdict(&self, client: &Client, headers: &HeaderMap, now: Duration) -> shield::BotVerdict {
        let pairs = headers.iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap_or("")));
        let mut signals = shield::RequestSignals::from_headers(pairs, self.https);
        signals.timing = Some(self.timing_of(client, now));
        signals.failed_challenges = self.failures_of(client, now);
        signals.subnet_signups_per_hour = self.signups_of(client, now);
        shield::score(&signals, &self.config.bot)
    }

    /// The audit log, for the operator's switches.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }
}

/// Why the edge did not hand a request on: a refusal, or an answer of its own (a
/// waiting-room ticket).
pub enum Stop {
    Refused(ApiError),
    Answered(Box<axum::response::Response>),
}

impl From<ApiError> for Stop {
    fn from(error: ApiError) -> Stop {
        Stop::Refused(error)
    }
}

impl IntoResponse for Stop {
    fn into_response(self) -> axum::response::Response {
        match self {
            Stop::Refused(error) => error.into_response(),
            Stop::Answered(response) => *response,
        }
    }
}

/// The attack detector's clock: once a second, feed it the request, sign-up,
/// login-failure and shed counts since the last tick; purge expired list entries once a
/// minute. `on_change` hears every transition (the status page re-renders). Runs until
/// aborted.
pub async fn run_detector(edge: Arc<Edge>, metrics: Arc<Metrics>, on_change: impl Fn()) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let totals = || {
        let (requests, shed) = metrics.totals();
        Counters {
            requests,
            signups: edge.signups.load(Ordering::Relaxed),
            login_failures: edge.login_failures.load(Ordering::Relaxed),
            shed,
        }
    };
    let mut last = totals();
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let current = totals();
        let delta = Counters {
            requests: current.requests.saturating_sub(last.requests),
            signups: current.signups.saturating_sub(last.signups),
            login_failures: current.login_failures.saturating_sub(last.login_failures),
            shed: current.shed.saturating_sub(last.shed),
        };
        last = current;
        let delta = fleet_wide(&edge, delta).await;
        let now = now();
        if let Some(t) = edge.observe(delta, now) {
            edge.announce(t, "detector").await;
            on_change();
        }
        if ticks.is_multiple_of(60) {
            edge.write_list().purge_expired(now);
        }
    }
}

/// In a fleet, the detector watches the whole fleet's rates: this node's second added to
/// the fleet's, the fleet's previous second read back (so every node switches together,
/// and an attack spread thin over many nodes is seen whole). While the shared state is
/// away, this node's counts times the node count stand in for the fleet's.
async fn fleet_wide(edge: &Edge, delta: Counters) -> Counters {
    let Some(shared) = edge.shared.as_ref() else { return delta };
    let counts = [delta.requests, delta.signups, delta.login_failures, delta.shed];
    if shared.fleet().is_up()
        && let Ok([requests, signups, login_failures, shed]) = shared.fleet().sum_signals(counts).await
    {
        return Counters { requests, signups, login_failures, shed };
    }
    let n = u64::from(shared.nodes());
    Counters {
        requests: delta.requests * n,
        signups: delta.signups * n,
        login_failures: delta.login_failures * n,
        shed: delta.shed * n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(tweak: impl FnOnce(&mut ShieldConfig)) -> Edge {
        let mut c = ShieldConfig::default();
        tweak(&mut c);
        Edge::new(&c, [7; 32], 1, false, crate::audit::tests::log()).expect("valid")
    }

    #[test]
    fn only_an_enabled_edge_detects_attacks() {
        let flood = Counters { requests: 5_000, ..Counters::default() };
        for enabled in [true, false] {
            let e = edge(|c| c.enabled = enabled);
            let entered = (1..=10u64).filter_map(|s| e.observe(flood, Duration::from_secs(s))).count();
            assert_eq!((entered, e.under_attack()), if enabled { (1, true) } else { (0, false) }, "enabled: {enabled}");
        }
    }

    #[test]
    fn forced_mode_raises_difficulty_and_auto_hands_back() {
        let e = edge(|_| {});
        let base = e.difficulty(0);
        let t = e.force(AttackSwitch::On, Duration::from_secs(10)).expect("a transition");
        assert_eq!(t.to, Mode::UnderAttack);
        assert!(e.under_attack());
        assert!(e.difficulty(0) > base);
        assert!(e.force(AttackSwitch::Auto, Duration::from_secs(11)).is_none());
        assert!(e.under_attack(), "auto keeps the mode until the detector sees calm");
        assert!(e.force(AttackSwitch::Off, Duration::from_secs(12)).is_some());
        assert!(!e.under_attack());
    }

    #[test]
    fn keys_with_their_own_rpm_are_limited_apart() {
        let e = edge(|_| {});
        let now = Duration::from_secs(100);
        assert!(e.check_key("pal_aaaa", Some(1), now).allowed);
        assert!(!e.check_key("pal_aaaa", Some(1), now).allowed);
        assert!(e.check_key("pal_bbbb", Some(1), now).allowed);
        assert!(e.check_key("pal_cccc", None, now).allowed);
    }

    #[tokio::test]
    async fn a_solved_challenge_buys_a_budgeted_clearance_once() {
        let e = edge(|c| {
            c.pow.base_difficulty = 4;
            c.pow.clearance_budget = 2;
        });
        let ip = Client::new("192.0.2.1".parse().unwrap(), shield::SubnetPrefixes::default());
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", "test".parse().unwrap());
        let binding = e.binding(&ip, &headers);
        let now = Duration::from_secs(1_000);
        let c = e.challenge(&binding, 0, now);
        let nonce = shield::solve(&c.seed, c.difficulty).unwrap().to_string();
        let clearance = e.redeem(&c.token, &nonce, &binding, &ip, now).await.expect("solved");
        assert_eq!(e.redeem(&c.token, &nonce, &binding, &ip, now).await, Err(PowError::Replayed));
        assert_eq!(e.spend_clearance(&clearance, &binding, &ip, now).await, Ok(1));
        assert_eq!(e.spend_clearance(&clearance, &binding, &ip, now).await, Ok(0));
        assert_eq!(e.spend_clearance(&clearance, &binding, &ip, now).await, Err(ClearanceError::BudgetSpent));
        assert!(e.failures_of(&ip, now) >= 1, "the replay counted as a failure");
    }
}

/// The edge's first two stages, cheapest first, for the listener to run before a
/// request has a context (see [`crate::refusal`]).
impl Turnstile for Edge {
    fn admit(&self, client: &Client, _zone: Zone, now: Duration) -> Admit {
        if !self.enabled() {
            return Admit::Pass { allow_listed: false };
        }
        let allow_listed = match self.lookup(client, now) {
            Verdict::Blocked { rule, .. } => {
                self.metrics.record(metrics::EdgeAction::Block, "blocklist");
                self.audit_sampled(client, now, || {
                    Event::new("edge", "shield.block", "refused")
                        .reason("blocklist")
                        .detail(serde_json::json!({"rule": rule.to_string()}))
                });
                return Admit::Blocked;
            }
            Verdict::Allowed { .. } => true,
            Verdict::Unlisted => false,
        };
        // In a fleet the source limits are shared, so the screen decides them (async).
        if self.shared.is_none() {
            let source = self.limits.check_source(client, now);
            if !source.allowed {
                self.metrics.record(metrics::EdgeAction::Limit, "source_limit");
                return Admit::Limited(source);
            }
        }
        Admit::Pass { allow_listed }
    }
}
