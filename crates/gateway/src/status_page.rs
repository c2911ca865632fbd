//! The public status page, derived from live state: `/status` (HTML),
//! `/status/badge.svg`, `/status/history.atom` and the Statuspage v2 JSON API
//! under `/api/v2/`.
//!
//! Components are Web, API, Login, Registration and one per upstream. Their
//! status comes from what the gateway knows right now (upstream health, the
//! password-hashing pool, the registration policy). A restricted registration
//! policy shows as an open incident whose text is the refusal users get, so the
//! page says what sign-up says. Incident history, automatic incidents and
//! uptime bars from recorded state are the status-page issue's work; until
//! then the bars show "no data".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use accounts::policy::RegistrationPolicy;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use status::{
    Component, ComponentStatus, Endpoint, Impact, Incident, IncidentStatus, IncidentUpdate, Page, Snapshot,
    UptimeHistory, overall_status, uptime_history,
};
use time::OffsetDateTime;

use crate::Gateway;

/// What the page remembers between requests: when it started and when it first
/// saw the current registration policy (the incident's start).
pub struct StatusBoard {
    started: OffsetDateTime,
    policy_seen: Mutex<Option<(RegistrationPolicy, OffsetDateTime)>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard { started: OffsetDateTime::now_utc(), policy_seen: Mutex::new(None) }
    }
}

impl StatusBoard {
    fn policy_since(&self, policy: &RegistrationPolicy, now: OffsetDateTime) -> OffsetDateTime {
        let mut seen = self.policy_seen.lock().unwrap_or_else(|p| p.into_inner());
        match &*seen {
            Some((known, since)) if known == policy => *since,
            _ => {
                *seen = Some((policy.clone(), now));
                now
            }
        }
    }
}

fn component(
    id: &str,
    name: &str,
    description: &str,
    position: u32,
    status: ComponentStatus,
    since: OffsetDateTime,
) -> Component {
    Component {
        id: id.to_owned(),
        name: name.to_owned(),
        description: Some(description.to_owned()),
        position,
        status,
        created_at: since,
        updated_at: since,
        showcase: true,
        start_date: Some(since.date()),
        group_id: None,
        group: false,
        only_show_if_degraded: false,
    }
}

impl Gateway {
    /// The page as it stands now.
    pub fn status_snapshot(&self) -> Snapshot {
        let now = OffsetDateTime::now_utc();
        let board = &self.status;
        let since = board.started;
        let ups = self.pool.upstreams();
        let healthy = self.pool.healthy_count();
        let api = match (healthy, ups.len()) {
            (h, n) if h == n => ComponentStatus::Operational,
            (0, _) => ComponentStatus::MajorOutage,
            _ => ComponentStatus::DegradedPerformance,
        };
        let login = if self.accounts.hasher().queued() > 0 {
            ComponentStatus::DegradedPerformance
        } else {
            ComponentStatus::Operational
        };
        let policy = self.accounts.policy();
        let registration = match &policy {
            RegistrationPolicy::Open => ComponentStatus::Operational,
            RegistrationPolicy::Regions { .. } | RegistrationPolicy::InviteOnly => ComponentStatus::DegradedPerformance,
            RegistrationPolicy::Closed { .. } => ComponentStatus::PartialOutage,
        };
        let mut components = vec![
            component("web", "Web", "The web chat", 1, ComponentStatus::Operational, since),
            component("api", "API", "The OpenAI-compatible API", 2, api, since),
            component("login", "Login", "Signing in", 3, login, since),
            component("registration", "Registration", "Creating new accounts", 4, registration, since),
        ];
        let now_ms = self.pool.now_ms();
        for (i, up) in ups.iter().enumerate() {
            let ok = up.is_healthy() && up.breaker.state(now_ms) != crate::upstream::BreakerState::Open;
            let status = if ok { ComponentStatus::Operational } else { ComponentStatus::MajorOutage };
            components.push(component(
                &format!("model-{}", up.name),
                &format!("Model {}", up.name),
                "A model server",
                5 + i as u32,
                status,
                since,
            ));
        }

        let mut incidents = Vec::new();
        let notice = match &policy {
            RegistrationPolicy::Open => None,
            RegistrationPolicy::Regions { allow } => {
                let regions: Vec<&str> = allow.iter().map(|r| r.as_str()).collect();
                Some(format!("New registrations are limited to phone numbers from {}.", regions.join(", ")))
            }
            RegistrationPolicy::InviteOnly => Some("New registrations need an invite code.".to_owned()),
            RegistrationPolicy::Closed { message } => {
                Some(message.clone().unwrap_or_else(|| "New registrations are paused.".to_owned()))
            }
        };
        if let Some(notice) = notice {
            let started = board.policy_since(&policy, now);
            let name = match policy {
                RegistrationPolicy::Closed { .. } => "New registrations are paused",
                _ => "New registrations are limited",
            };
            let body = format!("{notice} Existing users can sign in and use the service normally.");
            let update = IncidentUpdate {
                id: "registration-policy-1".to_owned(),
                status: IncidentStatus::Identified,
                body,
                created_at: started,
                updated_at: started,
                display_at: started,
                affected_components: None,
                deliver_notifications: true,
            };
            incidents.push(Incident {
                id: "registration-policy".to_owned(),
                name: name.to_owned(),
                status: IncidentStatus::Identified,
                impact: Impact::Minor,
                created_at: started,
                updated_at: started,
                started_at: started,
                monitoring_at: None,
                resolved_at: None,
                shortlink: "/status".to_owned(),
                incident_updates: vec![update],
                component_ids: vec!["registration".to_owned()],
            });
        }
        let page = Page {
            id: "palisade".to_owned(),
            name: self.config.status_page_name.clone(),
            url: "/status".to_owned(),
            time_zone: "Etc/UTC".to_owned(),
            updated_at: now,
        };
        Snapshot { page, components, incidents, scheduled_maintenances: Vec::new() }
    }
}

/// `GET /status`
pub async fn page(State(gw): State<Arc<Gateway>>) -> Response {
    let snapshot = gw.status_snapshot();
    let now = OffsetDateTime::now_utc();
    let uptime: HashMap<String, UptimeHistory> =
        snapshot.components.iter().map(|c| (c.id.clone(), uptime_history(c.created_at, &[], now))).collect();
    let view = status::PageView { snapshot: &snapshot, uptime: &uptime, now, feed_url: Some("/status/history.atom") };
    ([(header::CACHE_CONTROL, "no-cache")], Html(status::render_page(&view))).into_response()
}

/// `GET /status/badge.svg`
pub async fn badge(State(gw): State<Arc<Gateway>>) -> Response {
    let svg = status::badge_svg(&overall_status(&gw.status_snapshot()));
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-cache")], svg).into_response()
}

/// `GET /status/history.atom`
pub async fn feed(State(gw): State<Arc<Gateway>>) -> Response {
    let xml = status::atom_feed(&gw.status_snapshot(), "/status/history.atom");
    ([(header::CONTENT_TYPE, "application/atom+xml")], xml).into_response()
}

/// `GET /api/v2/{path}`: the Statuspage v2 public API.
pub async fn api(State(gw): State<Arc<Gateway>>, Path(path): Path<String>) -> Response {
    match Endpoint::from_path(&path) {
        Some(endpoint) => {
            let json = status::render_json(&gw.status_snapshot(), endpoint);
            ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")], json).into_response()
        }
        None => (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "not found"}))).into_response(),
    }
}
