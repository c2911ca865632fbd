//! The status recorder: a background task that, every `status.tick_ms`,
//!
//! 1. samples the live signals (request metrics, upstream health, the hashing
//!    queue) and smooths each component's measured status with [`Hysteresis`];
//! 2. adds the switches: the registration policy, under-attack mode, active
//!    maintenance, and the operator's overrides (which win over everything);
//! 3. records every change of a component's status in the store (the 90-day
//!    uptime bars are computed from that log);
//! 4. opens an incident for a component measured as not operational for longer
//!    than `status.auto_incident_after_s` and resolves it when the component
//!    recovers; keeps an incident open, in words users understand, while
//!    registration is restricted or the gateway is under attack;
//! 5. renders every document of the page into the [`StatusBoard`].
//!
//! Operator changes run steps 2–5 at once ([`StatusBoard::refresh`]), without a
//! sample, so the hysteresis counts only real intervals. A store failure never
//! stops the page: the last known incidents are kept and the error is logged
//! at most once a minute.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use accounts::policy::RegistrationPolicy;
use axum::body::Bytes;
use status::{
    Component, ComponentStatus, Endpoint, Impact, Incident, IncidentStatus, MaintenanceStatus, Page, PageView,
    ScheduledMaintenance, Snapshot, StatusChange, Update, UptimeHistory, overall_status, uptime_history,
};
use store::{
    AuditEntry, IncidentChange, IncidentRecord, MaintenanceRow, NewIncident, StatusChangeRow, Store, StoreError,
};
use time::OffsetDateTime;

use super::hysteresis::{Hysteresis, Thresholds};
use super::signals::{self, SignalReader};
use crate::config::StatusConfig;
use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::upstream::{BreakerState, Upstream, UpstreamPool};

/// Everything the page reports on, read each tick.
pub struct StatusSources {
    pub config: StatusConfig,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub pool: Arc<UpstreamPool>,
    pub accounts: Arc<accounts::service::Accounts>,
    pub edge: Arc<Edge>,
}

/// Every document of the page, rendered once per tick.
#[derive(Debug)]
pub struct Rendered {
    pub html: Bytes,
    pub badge: Bytes,
    pub feed: Bytes,
    /// One per [`Endpoint`], in [`Endpoint::ALL`] order.
    pub json: Vec<Bytes>,
}

impl Rendered {
    pub fn json(&self, endpoint: Endpoint) -> Bytes {
        let index = Endpoint::ALL.iter().position(|e| *e == endpoint).unwrap_or(0);
        self.json.get(index).cloned().unwrap_or_default()
    }
}

/// How far back the store is read: the 90 days of the uptime bars, and a day more.
const HISTORY_MS: i64 = (status::HISTORY_DAYS as i64 + 1) * DAY_MS;
const DAY_MS: i64 = 86_400_000;
/// Completed maintenance stays on the page (and in the JSON) this long.
const MAINTENANCE_KEPT_MS: i64 = 14 * DAY_MS;
const MAX_CHANGES: i64 = 50_000;
const MAX_INCIDENTS: i64 = 200;
const MAX_UPDATES_PER_INCIDENT: i64 = 50;
const MAX_MAINTENANCES: i64 = 50;
const STORE_WARNING_EVERY: Duration = Duration::from_secs(60);
const FEED_URL: &str = "/status/history.atom";

/// The `auto_key` of the incident kept open while under attack.
pub const ATTACK_KEY: &str = "under_attack";
/// The `auto_key` of the incident kept open while registration is restricted.
pub const REGISTRATION_KEY: &str = "registration";
/// Posted when under-attack mode is switched on.
pub const ATTACK_NOTICE: &str =
    "We are mitigating a large-scale malicious attack; existing users may see degraded performance.";
const ATTACK_OVER: &str = "The attack has been mitigated and the service is operating normally again.";
/// The `auto_key` of the incident kept open while the SMS breaker holds texts.
pub const TEXTS_KEY: &str = "sms_breaker";
/// Posted when texts to some numbers are held (SMS pumping).
pub const TEXTS_NOTICE: &str = "Verification codes by text to some number ranges need an extra check in the browser or \
     are paused, because their codes are not being entered (a sign of fraudulent sign-ups). Sign-up by e-mail and by \
     other numbers works normally; existing users are not affected.";
const TEXTS_OVER: &str = "Verification codes by text are being sent normally again.";

/// The `auto_key` of a component's automatic incident.
pub fn component_key(id: &str) -> String {
    format!("component:{id}")
}

/// What a component reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Web,
    Api,
    Login,
    Registration,
    /// The upstream at this index of the pool.
    Model(usize),
}

/// One component of the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentDef {
    pub id: String,
    pub name: String,
    pub description: &'static str,
    pub kind: Kind,
}

/// `model-<name>`, with anything but letters, digits, `-`, `_` and `.` replaced,
/// so ids stay single words in URLs and in the store.
fn model_id(name: &str) -> String {
    let slug: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    format!("model-{slug}")
}

impl StatusSources {
    /// The page's components, in display order, as `status.components` picks them.
    pub fn components(&self) -> Vec<ComponentDef> {
        let mut defs = Vec::new();
        let simple = |id: &str, name: &str, description: &'static str, kind| ComponentDef {
            id: id.to_owned(),
            name: name.to_owned(),
            description,
            kind,
        };
        for choice in &self.config.components {
            match choice.as_str() {
                "web" => defs.push(simple("web", "Web", "The web chat", Kind::Web)),
                "api" => defs.push(simple("api", "API", "The OpenAI-compatible API", Kind::Api)),
                "login" => defs.push(simple("login", "Login", "Signing in", Kind::Login)),
                "registration" => {
                    defs.push(simple("registration", "Registration", "Creating new accounts", Kind::Registration))
                }
                "models" => {
                    for (i, up) in self.pool.upstreams().iter().enumerate() {
                        defs.push(ComponentDef {
                            id: model_id(&up.name),
                            name: format!("Model {}", up.name),
                            description: "A model server",
                            kind: Kind::Model(i),
                        });
                    }
                }
                _ => {} // refused by config validation
            }
        }
        defs
    }
}

/// How the registration policy shows on the page.
fn registration_status(policy: &RegistrationPolicy) -> ComponentStatus {
    match policy {
        RegistrationPolicy::Open => ComponentStatus::Operational,
        RegistrationPolicy::Regions { .. } | RegistrationPolicy::InviteOnly { .. } => {
            ComponentStatus::DegradedPerformance
        }
        RegistrationPolicy::Closed { .. } => ComponentStatus::PartialOutage,
    }
}

/// The incident name and text for a restricted policy: what sign-up itself says,
/// with the operator's message.
fn registration_notice(policy: &RegistrationPolicy) -> Option<(&'static str, String)> {
    let with = |rule: String, message: &Option<String>| match message {
        Some(m) => format!("{rule} {m}"),
        None => rule,
    };
    let notice = match policy {
        RegistrationPolicy::Open => return None,
        RegistrationPolicy::Regions { allow, message } => {
            let regions: Vec<&str> = allow.iter().map(|r| r.as_str()).collect();
            with(format!("New registrations are limited to phone numbers from {}.", regions.join(", ")), message)
        }
        RegistrationPolicy::InviteOnly { message } => {
            with("New registrations need an invite code.".to_owned(), message)
        }
        RegistrationPolicy::Closed { message } => {
            message.clone().unwrap_or_else(|| "New registrations are paused.".to_owned())
        }
    };
    let name = match policy {
        RegistrationPolicy::Closed { .. } => "New registrations are paused",
        _ => "New registrations are limited",
    };
    Some((name, format!("{notice} Existing users can sign in and use the service normally.")))
}

fn trouble_words(status: ComponentStatus) -> (&'static str, Impact) {
    match status {
        ComponentStatus::MajorOutage => ("a major outage", Impact::Critical),
        ComponentStatus::PartialOutage => ("a partial outage", Impact::Major),
        _ => ("degraded performance", Impact::Minor),
    }
}

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn instant(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn upstream_ok(up: &Upstream, now_ms: u64) -> bool {
    up.is_healthy() && up.breaker.state(now_ms) != BreakerState::Open
}

/// A component measured as not operational since `since_ms`; `reported` is the
/// status its automatic incident last announced (`None`: no incident yet).
#[derive(Clone, Copy, Debug)]
struct Trouble {
    since_ms: i64,
    reported: Option<ComponentStatus>,
}

/// The recorder's memory between ticks.
#[derive(Default)]
pub struct Recorder {
    reader: SignalReader,
    measured: HashMap<String, Hysteresis>,
    /// The status last recorded in the store, per component.
    recorded: HashMap<String, ComponentStatus>,
    trouble: HashMap<String, Trouble>,
    /// The recorded log from the start of the window (with the state carried into it).
    history: Vec<StatusChangeRow>,
    loaded: bool,
    pruned_on: Option<time::Date>,
    last_policy: Option<RegistrationPolicy>,
    last_attack: Option<bool>,
    last_texts: Option<bool>,
    incidents: Vec<IncidentRecord>,
    maintenances: Vec<MaintenanceRow>,
    overrides: HashMap<String, ComponentStatus>,
    warned_at: Option<Instant>,
    /// This process's name for the recording lease (made at the first tick).
    holder: String,
}

/// The lease naming the one node of a fleet that records the page.
const RECORDING_LEASE: &str = "status_recorder";

impl Recorder {
    /// On a node that does not record: the statuses the recording node last wrote, so
    /// every node serves the same page (this node's own view where nothing is written yet).
    fn shown(&self, defs: &[ComponentDef], own: &[ComponentStatus]) -> Vec<ComponentStatus> {
        defs.iter().zip(own).map(|(def, status)| self.recorded.get(&def.id).copied().unwrap_or(*status)).collect()
    }

    /// Whether this node records the page now: it holds the store's recording lease
    /// (renewed every tick; another node takes it over within a few ticks of this one
    /// stopping). Alone on its store a node always holds it.
    async fn lead(&mut self, store: &Store, now_ms: i64, tick_ms: u64) -> bool {
        if self.holder.is_empty() {
            self.holder = accounts::tokens::SessionToken::generate().as_str()[..16].to_owned();
        }
        let ttl = i64::try_from(tick_ms.saturating_mul(3).max(3_000)).unwrap_or(i64::MAX);
        match store.claim_lease(RECORDING_LEASE, &self.holder, now_ms, ttl).await {
            Ok(leading) => leading,
            Err(e) => {
                self.warn("claiming the recording lease", &e);
                false
            }
        }
    }

    /// One round; `sample` takes a sample of the live signals first.
    pub(crate) async fn tick(&mut self, src: &StatusSources, sample: bool) -> Rendered {
        let now = OffsetDateTime::now_utc();
        let now_ms = millis(now);
        let defs = src.components();
        let leading = self.lead(&src.store, now_ms, src.config.tick_ms).await;
        if !leading || !self.loaded {
            // A node that does not record reads what the recording node wrote.
            self.loaded = false;
            self.load(&src.store, now_ms).await;
        }
        self.prune(now);
        if sample {
            self.measure(src, &defs);
        }
        self.read_store(&src.store, now_ms).await;
        let statuses = self.statuses(src, &defs, now_ms);
        if !leading {
            let shown = self.shown(&defs, &statuses);
            return self.render(src, &defs, &shown, now);
        }
        self.record(&src.store, &defs, &statuses, now_ms).await;
        let mut changed = self.component_incidents(&src.store, src.config.auto_incident_after_s, &defs, now_ms).await;
        changed |= self.registration_incident(src, now_ms).await;
        changed |= self.attack_incident(src, now_ms).await;
        changed |= self.texts_incident(src, now_ms).await;
        if changed {
            self.read_store(&src.store, now_ms).await;
        }
        self.render(src, &defs, &statuses, now)
    }

    fn warn(&mut self, what: &str, error: &StoreError) {
        if self.warned_at.is_none_or(|t| t.elapsed() >= STORE_WARNING_EVERY) {
            self.warned_at = Some(Instant::now());
            tracing::warn!(error = %error, "status page: {what} failed; showing what is known");
        }
    }

    async fn load(&mut self, store: &Store, now_ms: i64) {
        let last = match store.last_status_changes(i64::MAX).await {
            Ok(last) => last,
            Err(e) => return self.warn("reading the status history", &e),
        };
        match store.status_changes_since(now_ms - HISTORY_MS, MAX_CHANGES).await {
            Ok(history) => self.history = history,
            Err(e) => return self.warn("reading the status history", &e),
        }
        self.recorded = last.into_iter().filter_map(|c| Some((c.component_id, c.status.parse().ok()?))).collect();
        self.loaded = true;
    }

    /// Once a day, forget changes older than the window except each
    /// component's last one before it.
    fn prune(&mut self, now: OffsetDateTime) {
        if self.pruned_on == Some(now.date()) {
            return;
        }
        self.pruned_on = Some(now.date());
        let start = millis(now) - HISTORY_MS;
        let mut carried: HashMap<String, StatusChangeRow> = HashMap::new();
        let mut kept = Vec::with_capacity(self.history.len());
        for change in self.history.drain(..) {
            if change.at < start {
                carried.insert(change.component_id.clone(), change);
            } else {
                kept.push(change);
            }
        }
        let mut carried: Vec<StatusChangeRow> = carried.into_values().collect();
        carried.sort_by_key(|c| c.at);
        carried.append(&mut kept);
        self.history = carried;
    }

    fn measure(&mut self, src: &StatusSources, defs: &[ComponentDef]) {
        let mut sample = self.reader.read(&src.metrics);
        let upstreams = src.pool.upstreams();
        let pool_now = src.pool.now_ms();
        sample.upstreams_total = upstreams.len();
        sample.upstreams_healthy = upstreams.iter().filter(|u| upstream_ok(u, pool_now)).count();
        sample.hashing_queued = src.accounts.hasher().queued();
        let cfg = &src.config;
        let thresholds = Thresholds { degrade_after: cfg.degrade_after, recover_after: cfg.recover_after };
        for def in defs {
            let raw = match def.kind {
                Kind::Web => signals::web_status(&sample, &cfg.signals),
                Kind::Api => signals::api_status(&sample, &cfg.signals),
                Kind::Login => signals::login_status(&sample),
                Kind::Registration => ComponentStatus::Operational,
                Kind::Model(i) => match upstreams.get(i) {
                    Some(up) if upstream_ok(up, pool_now) => ComponentStatus::Operational,
                    _ => ComponentStatus::MajorOutage,
                },
            };
            self.measured
                .entry(def.id.clone())
                .or_insert_with(|| Hysteresis::new(ComponentStatus::Operational))
                .step(raw, thresholds);
        }
    }

    fn measured(&self, id: &str) -> ComponentStatus {
        self.measured.get(id).map_or(ComponentStatus::Operational, Hysteresis::current)
    }

    async fn read_store(&mut self, store: &Store, now_ms: i64) {
        match store.incidents_since(now_ms - HISTORY_MS, MAX_INCIDENTS, MAX_UPDATES_PER_INCIDENT).await {
            Ok(incidents) => self.incidents = incidents,
            Err(e) => self.warn("reading incidents", &e),
        }
        match store.maintenances_since(now_ms - MAINTENANCE_KEPT_MS, MAX_MAINTENANCES).await {
            Ok(maintenances) => self.maintenances = maintenances,
            Err(e) => self.warn("reading maintenances", &e),
        }
        match store.component_overrides().await {
            Ok(overrides) => {
                self.overrides = overrides.into_iter().filter_map(|(id, s)| Some((id, s.parse().ok()?))).collect();
            }
            Err(e) => self.warn("reading component overrides", &e),
        }
    }

    /// Each component's status as shown: the override if any, else the worst of
    /// the measured status and what the switches impose.
    fn statuses(&self, src: &StatusSources, defs: &[ComponentDef], now_ms: i64) -> Vec<ComponentStatus> {
        // Without the fleet's shared state each node enforces only its share of every
        // limit: users may be refused a little early, and the public should hear of it.
        let degraded = src.edge.under_attack() || src.edge.fleet().is_some_and(|f| !f.is_up());
        let policy = src.accounts.policy();
        let held = src.accounts.texts_held();
        let texts_held = held.paused + held.proof > 0;
        let in_maintenance: HashSet<&str> = self
            .maintenances
            .iter()
            .filter(|m| m.scheduled_for <= now_ms && now_ms < m.scheduled_until)
            .flat_map(|m| m.component_ids.iter().map(String::as_str))
            .collect();
        defs.iter()
            .map(|def| {
                if let Some(forced) = self.overrides.get(&def.id) {
                    return *forced;
                }
                let mut status = self.measured(&def.id);
                match def.kind {
                    Kind::Registration => {
                        status = status.max(registration_status(&policy));
                        if texts_held {
                            status = status.max(ComponentStatus::DegradedPerformance);
                        }
                    }
                    Kind::Web | Kind::Api if degraded => status = status.max(ComponentStatus::DegradedPerformance),
                    _ => {}
                }
                if in_maintenance.contains(def.id.as_str()) {
                    status = status.max(ComponentStatus::UnderMaintenance);
                }
                status
            })
            .collect()
    }

    async fn record(&mut self, store: &Store, defs: &[ComponentDef], statuses: &[ComponentStatus], now_ms: i64) {
        if !self.loaded {
            return; // what was recorded before is unknown; recording now could repeat it
        }
        for (def, status) in defs.iter().zip(statuses) {
            if self.recorded.get(&def.id) == Some(status) {
                continue;
            }
            match store.record_status_change(&def.id, status.as_str(), now_ms).await {
                Ok(()) => {
                    self.recorded.insert(def.id.clone(), *status);
                    self.history.push(StatusChangeRow {
                        component_id: def.id.clone(),
                        status: status.as_str().to_owned(),
                        at: now_ms,
                    });
                }
                Err(e) => return self.warn("recording a status change", &e),
            }
        }
    }

    fn open_incident(&self, auto_key: &str) -> Option<&IncidentRecord> {
        self.incidents
            .iter()
            .find(|r| r.incident.auto_key.as_deref() == Some(auto_key) && r.incident.resolved_at.is_none())
    }

    /// Open or resolve the automatic incident of each component. Returns whether
    /// anything was written.
    async fn component_incidents(&mut self, store: &Store, after_s: u64, defs: &[ComponentDef], now_ms: i64) -> bool {
        let after_ms = i64::try_from(after_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut changed = false;
        for def in defs {
            let key = component_key(&def.id);
            let open = self.open_incident(&key).map(|r| r.incident.id);
            let measured = self.measured(&def.id);
            if measured == ComponentStatus::Operational {
                self.trouble.remove(&def.id);
                if let Some(id) = open {
                    let change = IncidentChange {
                        status: IncidentStatus::Resolved.as_str().to_owned(),
                        body: format!("{} is operating normally again. This incident has been resolved.", def.name),
                        ..IncidentChange::default()
                    };
                    changed |= self.post(store, id, &change, now_ms, "status.incident.auto_resolve").await;
                }
                continue;
            }
            let mut trouble =
                *self.trouble.entry(def.id.clone()).or_insert(Trouble { since_ms: now_ms, reported: None });
            if open.is_some() && trouble.reported.is_none() {
                // Opened before a restart, or by another node: adopt it.
                trouble.reported = Some(measured);
            }
            let (what, impact) = trouble_words(measured);
            match (open, trouble.reported) {
                (None, None) if now_ms - trouble.since_ms >= after_ms => {
                    let incident = NewIncident {
                        name: format!("{}: {what}", def.name),
                        status: IncidentStatus::Investigating.as_str().to_owned(),
                        impact: impact.as_str().to_owned(),
                        body: format!(
                            "We are investigating {what} of {}. We will post an update as soon as we know more.",
                            def.name
                        ),
                        component_ids: vec![def.id.clone()],
                        auto_key: Some(key),
                    };
                    changed |= self.open(store, &incident, now_ms).await;
                    trouble.reported = Some(measured);
                }
                (Some(id), Some(reported)) if measured > reported => {
                    let change = IncidentChange {
                        status: IncidentStatus::Investigating.as_str().to_owned(),
                        body: format!("{} is now seeing {what}.", def.name),
                        name: Some(format!("{}: {what}", def.name)),
                        impact: Some(impact.as_str().to_owned()),
                        component_ids: None,
                    };
                    if self.post(store, id, &change, now_ms, "status.incident.auto_update").await {
                        changed = true;
                        trouble.reported = Some(measured);
                    }
                }
                // The operator resolved it while the trouble lasts: leave it be
                // until the component recovers.
                _ => {}
            }
            self.trouble.insert(def.id.clone(), trouble);
        }
        changed
    }

    /// Keep the registration notice in step with the policy.
    async fn registration_incident(&mut self, src: &StatusSources, now_ms: i64) -> bool {
        let policy = src.accounts.policy();
        let first_look = self.last_policy.is_none();
        let policy_changed = self.last_policy.as_ref() != Some(&policy);
        let open = self.open_incident(REGISTRATION_KEY).cloned();
        let (done, changed) = match (registration_notice(&policy), open) {
            (None, None) => (true, false),
            (None, Some(record)) => {
                let change = IncidentChange {
                    status: IncidentStatus::Resolved.as_str().to_owned(),
                    body: "New registrations are open again.".to_owned(),
                    ..IncidentChange::default()
                };
                let ok =
                    self.post(&src.store, record.incident.id, &change, now_ms, "status.incident.auto_resolve").await;
                (ok, ok)
            }
            (Some((name, body)), None) if first_look || policy_changed => {
                let incident = NewIncident {
                    name: name.to_owned(),
                    status: IncidentStatus::Identified.as_str().to_owned(),
                    impact: Impact::Minor.as_str().to_owned(),
                    body,
                    component_ids: vec!["registration".to_owned()],
                    auto_key: Some(REGISTRATION_KEY.to_owned()),
                };
                let ok = self.open(&src.store, &incident, now_ms).await;
                (ok, ok)
            }
            (Some((name, body)), Some(record))
                if (first_look && !record.updates.iter().any(|u| u.body == body))
                    || (!first_look && policy_changed) =>
            {
                let change = IncidentChange {
                    status: IncidentStatus::Identified.as_str().to_owned(),
                    body,
                    name: Some(name.to_owned()),
                    ..IncidentChange::default()
                };
                let ok =
                    self.post(&src.store, record.incident.id, &change, now_ms, "status.incident.auto_update").await;
                (ok, ok)
            }
            _ => (true, false),
        };
        if done {
            self.last_policy = Some(policy);
        }
        changed
    }

    /// Open the attack notice when under-attack mode comes on, resolve it when it goes off.
    async fn attack_incident(&mut self, src: &StatusSources, now_ms: i64) -> bool {
        let attack = src.edge.under_attack();
        let opening = NewIncident {
            name: "Large-scale malicious attack".to_owned(),
            status: IncidentStatus::Identified.as_str().to_owned(),
            impact: Impact::Minor.as_str().to_owned(),
            body: ATTACK_NOTICE.to_owned(),
            component_ids: vec!["web".to_owned(), "api".to_owned()],
            auto_key: Some(ATTACK_KEY.to_owned()),
        };
        let (done, changed) = self.notice(&src.store, now_ms, attack, self.last_attack, &opening, ATTACK_OVER).await;
        if done {
            self.last_attack = Some(attack);
        }
        changed
    }

    /// Open the texts notice while the SMS breaker holds texts to some numbers (SMS
    /// pumping), resolve it when they all go out again.
    async fn texts_incident(&mut self, src: &StatusSources, now_ms: i64) -> bool {
        let held = src.accounts.texts_held();
        let holding = held.paused + held.proof > 0;
        let opening = NewIncident {
            name: "Sign-up texts limited for some numbers".to_owned(),
            status: IncidentStatus::Identified.as_str().to_owned(),
            impact: Impact::Minor.as_str().to_owned(),
            body: TEXTS_NOTICE.to_owned(),
            component_ids: vec!["registration".to_owned()],
            auto_key: Some(TEXTS_KEY.to_owned()),
        };
        let (done, changed) = self.notice(&src.store, now_ms, holding, self.last_texts, &opening, TEXTS_OVER).await;
        if done {
            self.last_texts = Some(holding);
        }
        changed
    }

    /// An automatic notice that is open while `on`: opened when it comes on (not again on
    /// a restart that finds it open), resolved with `over` when it goes off. Whether the
    /// store is up to date with `on`, and whether it changed.
    async fn notice(
        &mut self,
        store: &Store,
        now_ms: i64,
        on: bool,
        last: Option<bool>,
        opening: &NewIncident,
        over: &str,
    ) -> (bool, bool) {
        let key = opening.auto_key.as_deref().unwrap_or_default();
        let open = self.open_incident(key).map(|r| r.incident.id);
        match (on, open) {
            (true, None) if last != Some(true) => {
                let ok = self.open(store, opening, now_ms).await;
                (ok, ok)
            }
            (false, Some(id)) => {
                let change = IncidentChange {
                    status: IncidentStatus::Resolved.as_str().to_owned(),
                    body: over.to_owned(),
                    ..IncidentChange::default()
                };
                let ok = self.post(store, id, &change, now_ms, "status.incident.auto_resolve").await;
                (ok, ok)
            }
            _ => (true, false),
        }
    }

    /// Open an automatic incident; `true` when the store now holds one for its
    /// cause (also when another node opened it first).
    async fn open(&mut self, store: &Store, incident: &NewIncident, now_ms: i64) -> bool {
        match store.open_incident(incident, now_ms).await {
            Ok(id) => {
                let detail = serde_json::json!({"id": id, "name": incident.name, "cause": incident.auto_key});
                audit(store, "status-recorder", "status.incident.auto_open", detail).await;
                true
            }
            Err(StoreError::Conflict(_)) => true,
            Err(e) => {
                self.warn("opening an automatic incident", &e);
                false
            }
        }
    }

    async fn post(&mut self, store: &Store, id: i64, change: &IncidentChange, now_ms: i64, action: &str) -> bool {
        match store.update_incident(id, change, now_ms).await {
            Ok(found) => {
                if found {
                    audit(store, "status-recorder", action, serde_json::json!({"id": id, "status": change.status}))
                        .await;
                }
                found
            }
            Err(e) => {
                self.warn("updating an automatic incident", &e);
                false
            }
        }
    }

    fn render(
        &self,
        src: &StatusSources,
        defs: &[ComponentDef],
        statuses: &[ComponentStatus],
        now: OffsetDateTime,
    ) -> Rendered {
        let mut logs: HashMap<&str, Vec<StatusChange>> = HashMap::new();
        for change in &self.history {
            if let Ok(status) = change.status.parse() {
                logs.entry(change.component_id.as_str())
                    .or_default()
                    .push(StatusChange { at: instant(change.at), status });
            }
        }
        let mut uptime: HashMap<String, UptimeHistory> = HashMap::new();
        let mut components = Vec::with_capacity(defs.len());
        for (i, (def, status)) in defs.iter().zip(statuses).enumerate() {
            let log = logs.get(def.id.as_str()).map_or(&[][..], Vec::as_slice);
            let since = log.iter().map(|c| c.at).min().unwrap_or(now);
            let changed = log.iter().map(|c| c.at).max().unwrap_or(now);
            uptime.insert(def.id.clone(), uptime_history(since, log, now));
            components.push(Component {
                id: def.id.clone(),
                name: def.name.clone(),
                description: Some(def.description.to_owned()),
                position: i as u32 + 1,
                status: *status,
                created_at: since,
                updated_at: changed,
                showcase: true,
                start_date: None,
                group_id: None,
                group: false,
                only_show_if_degraded: false,
            });
        }
        let snapshot = Snapshot {
            page: Page {
                id: "palisade".to_owned(),
                name: src.config.name.clone(),
                url: "/status".to_owned(),
                time_zone: "Etc/UTC".to_owned(),
                updated_at: now,
            },
            components,
            incidents: self.incidents.iter().map(to_incident).collect(),
            scheduled_maintenances: self.maintenances.iter().map(|m| to_maintenance(m, now)).collect(),
        };
        let view = PageView { snapshot: &snapshot, uptime: &uptime, now, feed_url: Some(FEED_URL) };
        Rendered {
            html: Bytes::from(status::render_page(&view)),
            badge: Bytes::from(status::badge_svg(&overall_status(&snapshot))),
            feed: Bytes::from(status::atom_feed(&snapshot, FEED_URL)),
            json: Endpoint::ALL.iter().map(|e| Bytes::from(status::render_json(&snapshot, *e))).collect(),
        }
    }
}

/// A stored incident as the page shows it.
pub fn to_incident(record: &IncidentRecord) -> Incident {
    let i = &record.incident;
    let created = instant(i.created_at);
    Incident {
        id: i.id.to_string(),
        name: i.name.clone(),
        status: i.status.parse().unwrap_or(IncidentStatus::Investigating),
        impact: i.impact.parse().unwrap_or(Impact::Minor),
        created_at: created,
        updated_at: instant(i.updated_at),
        started_at: created,
        monitoring_at: i.monitoring_at.map(instant),
        resolved_at: i.resolved_at.map(instant),
        shortlink: "/status".to_owned(),
        incident_updates: record
            .updates
            .iter()
            .map(|u| {
                let at = instant(u.at);
                Update {
                    id: u.id.to_string(),
                    status: u.status.parse().unwrap_or(IncidentStatus::Investigating),
                    body: u.body.clone(),
                    created_at: at,
                    updated_at: at,
                    display_at: at,
                    affected_components: None,
                    deliver_notifications: true,
                }
            })
            .collect(),
        component_ids: i.component_ids.clone(),
    }
}

/// A stored maintenance as the page shows it: its status follows the clock,
/// with the updates Statuspage posts when the window opens and closes.
pub fn to_maintenance(m: &MaintenanceRow, now: OffsetDateTime) -> ScheduledMaintenance {
    let (from, until, created) = (instant(m.scheduled_for), instant(m.scheduled_until), instant(m.created_at));
    let update = |status, body: &str, at| Update {
        id: format!("{}-{}", m.id, MaintenanceStatus::as_str(status)),
        status,
        body: body.to_owned(),
        created_at: at,
        updated_at: at,
        display_at: at,
        affected_components: None,
        deliver_notifications: true,
    };
    let mut updates = vec![update(MaintenanceStatus::Scheduled, &m.body, created)];
    let status = if now < from {
        MaintenanceStatus::Scheduled
    } else if now < until {
        updates.push(update(MaintenanceStatus::InProgress, "Scheduled maintenance is currently in progress.", from));
        MaintenanceStatus::InProgress
    } else {
        updates.push(update(MaintenanceStatus::InProgress, "Scheduled maintenance is currently in progress.", from));
        updates.push(update(MaintenanceStatus::Completed, "The scheduled maintenance has been completed.", until));
        MaintenanceStatus::Completed
    };
    let updated = updates.iter().map(|u| u.display_at).max().unwrap_or(created);
    ScheduledMaintenance {
        id: m.id.to_string(),
        name: m.name.clone(),
        status,
        impact: Impact::Maintenance,
        created_at: created,
        updated_at: updated,
        started_at: from,
        monitoring_at: None,
        resolved_at: (status == MaintenanceStatus::Completed).then_some(until),
        shortlink: "/status".to_owned(),
        scheduled_for: from,
        scheduled_until: until,
        incident_updates: updates,
        component_ids: m.component_ids.clone(),
    }
}

/// Append a status-page event to the audit log; a failure is logged, not returned.
pub(crate) async fn audit(store: &Store, actor: &str, action: &str, detail: serde_json::Value) {
    let entry = AuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        outcome: "ok".to_owned(),
        ip: None,
        reason: None,
        detail: Some(detail),
    };
    if let Err(e) = store.append_audit(&entry, millis(OffsetDateTime::now_utc())).await {
        tracing::error!(error = %e, action, "audit entry could not be written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_single_words() {
        assert_eq!(model_id("vllm-a"), "model-vllm-a");
        assert_eq!(model_id("gpu box #2"), "model-gpu-box--2");
    }

    #[test]
    fn registration_notices_say_what_sign_up_says() {
        assert_eq!(registration_notice(&RegistrationPolicy::Open), None);
        let (name, body) = registration_notice(&RegistrationPolicy::InviteOnly { message: None }).unwrap();
        assert_eq!(name, "New registrations are limited");
        assert!(body.starts_with("New registrations need an invite code.") && body.contains("Existing users"));
        let invite = RegistrationPolicy::InviteOnly { message: Some("Invites on Monday.".into()) };
        assert!(
            registration_notice(&invite)
                .unwrap()
                .1
                .starts_with("New registrations need an invite code. Invites on Monday.")
        );
        let regions = RegistrationPolicy::Regions {
            allow: vec![accounts::policy::Region::new("CN").unwrap()],
            message: Some("Launch week.".into()),
        };
        let (_, body) = registration_notice(&regions).unwrap();
        assert!(body.starts_with("New registrations are limited to phone numbers from CN. Launch week."), "{body}");
        let closed = RegistrationPolicy::Closed { message: Some("Back soon.".into()) };
        assert_eq!(registration_notice(&closed).unwrap().0, "New registrations are paused");
        assert!(registration_notice(&closed).unwrap().1.starts_with("Back soon."));
    }

    #[test]
    fn maintenance_status_follows_the_clock() {
        let m = MaintenanceRow {
            id: 7,
            name: "Database upgrade".into(),
            body: "We will upgrade the database.".into(),
            component_ids: vec!["api".into()],
            scheduled_for: 2 * DAY_MS,
            scheduled_until: 3 * DAY_MS,
            created_at: DAY_MS,
        };
        let before = to_maintenance(&m, instant(DAY_MS + 1));
        assert_eq!((before.status, before.incident_updates.len()), (MaintenanceStatus::Scheduled, 1));
        let during = to_maintenance(&m, instant(2 * DAY_MS + 1));
        assert_eq!((during.status, during.incident_updates.len()), (MaintenanceStatus::InProgress, 2));
        let after = to_maintenance(&m, instant(3 * DAY_MS));
        assert_eq!(after.status, MaintenanceStatus::Completed);
        assert_eq!(after.resolved_at, Some(instant(3 * DAY_MS)));
        assert_eq!(after.incident_updates.last().unwrap().status, MaintenanceStatus::Completed);
    }
}
