//! `/admin/blocklist` and `/admin/attack-mode`: the operator's live switches for the edge
//! (behind the admin token like the rest of `/admin`). Every change is audited.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use shield::{Cidr, ListKind, Mode};

use accounts::operator::Actor;
use accounts::service::AccountError;
use store::ListRuleRow;

use super::{AttackSwitch, Edge};
use crate::audit::Event;
use crate::clock::now;
use crate::error::{ApiError, Reject};
use crate::status_page::StatusBoard;

/// What the edge's switches touch: the edge, and the status page that reports attack mode.
#[derive(Clone)]
pub struct EdgeSwitches {
    pub edge: Arc<Edge>,
    pub status: Arc<StatusBoard>,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Reject::InvalidBody, format!("the body is not the expected JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    #[serde(default = "block")]
    kind: ListKind,
    cidr: String,
    /// Seconds until the entry expires; absent or 0 for a permanent entry.
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    note: String,
}

fn block() -> ListKind {
    ListKind::Block
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldRule {
    #[serde(default = "block")]
    kind: ListKind,
    cidr: String,
}

fn millis(t: Duration) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// Puts the stored list entries back into the edge: at start, so an operator's entries
/// outlive a restart. Returns how many were restored.
pub async fn restore_lists(edge: &Edge, store: &store::Store) -> Result<usize, store::StoreError> {
    let now = now();
    let mut restored = 0;
    for row in store.list_rules(millis(now)).await? {
        let (Ok(kind), Ok(net)) = (row.kind.parse::<ListKind>(), row.cidr.parse::<Cidr>()) else { continue };
        let ttl = row.expires_at.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)).saturating_sub(now));
        if ttl.is_some_and(|t| t.is_zero()) {
            continue;
        }
        if edge.insert_rule(kind, net, ttl, &row.note, now).is_ok() {
            restored += 1;
        }
    }
    Ok(restored)
}

fn cidr(text: &str) -> Result<Cidr, ApiError> {
    text.parse()
        .map_err(|e: shield::CidrError| ApiError::new(Reject::InvalidInput, e.to_string()).detail("invalid_cidr"))
}

/// `GET /admin/blocklist`: live allow and block entries.
pub async fn list(State(s): State<EdgeSwitches>) -> Response {
    let entries: Vec<_> = s
        .edge
        .rules(now())
        .into_iter()
        .map(|e| json!({"kind": e.list, "cidr": e.cidr, "expires_at": e.expires_at.map(|t| t.as_secs()), "note": e.note}))
        .collect();
    Json(json!({"entries": entries})).into_response()
}

/// `POST /admin/blocklist` `{"kind": "block"|"allow", "cidr", "ttl_s", "note"}`.
pub async fn add(
    State(s): State<EdgeSwitches>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rule: NewRule = parse(&body)?;
    let net = cidr(&rule.cidr)?;
    let now = now();
    let ttl = rule.ttl_s.filter(|s| *s > 0).map(Duration::from_secs);
    if let Err(e) = s.edge.insert_rule(rule.kind, net, ttl, &rule.note, now) {
        return Err(ApiError::new(Reject::InvalidInput, e.to_string()).detail("blocklist_refused"));
    }
    // Kept in the store so it outlives a restart; an entry the store did not take is
    // taken back here too, so the operator is never told of one that will vanish.
    let row = ListRuleRow {
        kind: rule.kind.to_string(),
        cidr: net.to_string(),
        expires_at: ttl.map(|t| millis(now + t)),
        note: rule.note.clone(),
    };
    if let Err(e) = s.status.store().put_list_rule(&row, millis(now)).await {
        s.edge.remove_rule(rule.kind, net);
        return Err(ApiError::from(&AccountError::Store(e)));
    }
    s.edge.publish_rule(rule.kind, net, Some((ttl.map(|t| now + t), &rule.note))).await;
    let expires_at = ttl.map(|t| (now + t).as_secs());
    let detail = json!({"kind": rule.kind, "cidr": net, "expires_at": expires_at, "note": rule.note});
    let action = match rule.kind {
        ListKind::Block => "shield.blocklist.add",
        ListKind::Allow => "shield.allowlist.add",
    };
    s.edge.audit().record(Event::new(&actor.name, action, "ok").detail(detail.clone())).await;
    Ok((StatusCode::CREATED, Json(detail)).into_response())
}

/// `DELETE /admin/blocklist` `{"kind", "cidr"}`: 204, or 404 when no such entry.
pub async fn remove(
    State(s): State<EdgeSwitches>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rule: OldRule = parse(&body)?;
    let net = cidr(&rule.cidr)?;
    let stored = s
        .status
        .store()
        .delete_list_rule(&rule.kind.to_string(), &net.to_string())
        .await
        .map_err(|e| ApiError::from(&AccountError::Store(e)))?;
    if !s.edge.remove_rule(rule.kind, net) && !stored {
        return Err(ApiError::new(Reject::NotFound, format!("no {} entry for {net}", rule.kind)));
    }
    s.edge.publish_rule(rule.kind, net, None).await;
    let action = match rule.kind {
        ListKind::Block => "shield.blocklist.remove",
        ListKind::Allow => "shield.allowlist.remove",
    };
    let detail = json!({"kind": rule.kind, "cidr": net});
    s.edge.audit().record(Event::new(&actor.name, action, "ok").detail(detail)).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn attack_state(edge: &Edge) -> serde_json::Value {
    let (mode, forced, since, metrics) = edge.attack_state();
    json!({
        "mode": match mode { Mode::UnderAttack => "under_attack", Mode::Normal => "normal" },
        "switch": match forced { None => "auto", Some(true) => "on", Some(false) => "off" },
        "since": since.as_secs(),
        "difficulty": edge.difficulty(0),
        "metrics": metrics,
    })
}

/// `GET /admin/attack-mode`
pub async fn get_attack(State(s): State<EdgeSwitches>) -> Response {
    Json(attack_state(&s.edge)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackBody {
    mode: AttackSwitch,
}

/// `PUT /admin/attack-mode` `{"mode": "auto"|"on"|"off"}`.
pub async fn set_attack(
    State(s): State<EdgeSwitches>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: AttackBody = parse(&body)?;
    s.edge.publish_attack(body.mode).await;
    match s.edge.force(body.mode, now()) {
        Some(t) => {
            s.edge.announce(t, &actor.name).await;
            // The page states attack mode; show the change now, not at the next tick.
            s.status.wake();
        }
        None => {
            let switch = json!({"switch": body.mode});
            s.edge.audit().record(Event::new(&actor.name, "shield.attack_switch", "ok").detail(switch)).await;
        }
    }
    Ok(Json(attack_state(&s.edge)).into_response())
}
