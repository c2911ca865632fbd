//! `/admin/blocklist` and `/admin/attack-mode`: the operator's live switches for the edge
//! (behind the admin token like the rest of `/admin`). Every change is audited.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use shield::{Cidr, ListKind, Mode};

use super::{AttackSwitch, announce, now};
use crate::Gateway;

fn bad_request(code: &str, message: String) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| bad_request("invalid_body", format!("the body is not the expected JSON: {e}")))
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

fn cidr(text: &str) -> Result<Cidr, Response> {
    text.parse().map_err(|e: shield::CidrError| bad_request("invalid_cidr", e.to_string()))
}

/// `GET /admin/blocklist`: live allow and block entries.
pub async fn list(State(gw): State<Arc<Gateway>>) -> Response {
    let entries: Vec<_> = gw
        .edge
        .rules(now())
        .into_iter()
        .map(|e| json!({"kind": e.list, "cidr": e.cidr, "expires_at": e.expires_at.map(|t| t.as_secs()), "note": e.note}))
        .collect();
    Json(json!({"entries": entries})).into_response()
}

/// `POST /admin/blocklist` `{"kind": "block"|"allow", "cidr", "ttl_s", "note"}`.
pub async fn add(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let rule: NewRule = match parse(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let net = match cidr(&rule.cidr) {
        Ok(c) => c,
        Err(response) => return response,
    };
    let now = now();
    let ttl = rule.ttl_s.filter(|s| *s > 0).map(Duration::from_secs);
    if let Err(e) = gw.edge.insert_rule(rule.kind, net, ttl, &rule.note, now) {
        return bad_request("blocklist_refused", e.to_string());
    }
    let expires_at = ttl.map(|t| (now + t).as_secs());
    let detail = json!({"kind": rule.kind, "cidr": net, "expires_at": expires_at, "note": rule.note});
    let action = match rule.kind {
        ListKind::Block => "shield.blocklist.add",
        ListKind::Allow => "shield.allowlist.add",
    };
    gw.accounts.audit("operator", action, "ok", None, None, Some(detail.clone())).await;
    (StatusCode::CREATED, Json(detail)).into_response()
}

/// `DELETE /admin/blocklist` `{"kind", "cidr"}`: 204, or 404 when no such entry.
pub async fn remove(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let rule: OldRule = match parse(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let net = match cidr(&rule.cidr) {
        Ok(c) => c,
        Err(response) => return response,
    };
    if !gw.edge.remove_rule(rule.kind, net) {
        let body = json!({"error": {"message": format!("no {} entry for {net}", rule.kind),
                          "type": "invalid_request_error", "param": null, "code": "not_found"}});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    let action = match rule.kind {
        ListKind::Block => "shield.blocklist.remove",
        ListKind::Allow => "shield.allowlist.remove",
    };
    let detail = json!({"kind": rule.kind, "cidr": net});
    gw.accounts.audit("operator", action, "ok", None, None, Some(detail)).await;
    StatusCode::NO_CONTENT.into_response()
}

fn attack_state(gw: &Gateway) -> serde_json::Value {
    let (mode, forced, since, metrics) = gw.edge.attack_state();
    json!({
        "mode": match mode { Mode::UnderAttack => "under_attack", Mode::Normal => "normal" },
        "switch": match forced { None => "auto", Some(true) => "on", Some(false) => "off" },
        "since": since.as_secs(),
        "difficulty": gw.edge.difficulty(0),
        "metrics": metrics,
    })
}

/// `GET /admin/attack-mode`
pub async fn get_attack(State(gw): State<Arc<Gateway>>) -> Response {
    Json(attack_state(&gw)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackBody {
    mode: AttackSwitch,
}

/// `PUT /admin/attack-mode` `{"mode": "auto"|"on"|"off"}`.
pub async fn set_attack(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let body: AttackBody = match parse(&body) {
        Ok(b) => b,
        Err(response) => return response,
    };
    match gw.edge.force(body.mode, now()) {
        Some(t) => announce(&gw, t, "operator").await,
        None => {
            let switch = json!({"switch": body.mode});
            gw.accounts.audit("operator", "shield.attack_switch", "ok", None, None, Some(switch)).await;
        }
    }
    Json(attack_state(&gw)).into_response()
}
