//! `/admin/*`: the operator's API, behind the admin token
//! (`Authorization: Bearer <token>`, compared in constant time).

use std::sync::Arc;

use accounts::policy::RegistrationPolicy;
use accounts::tokens;
use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::Gateway;
use crate::auth::account_error;

/// Refuse any admin request without the right token.
pub async fn require_admin(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| tokens::hash(t.trim()));
    let allowed = match (&gw.config.admin_token_hash, presented) {
        (Some(expected), Some(presented)) => tokens::constant_time_eq(expected, &presented),
        _ => false,
    };
    if !allowed {
        let body = json!({"error": {"message": "admin token required", "type": "authentication_error", "param": null, "code": "admin_unauthorized"}});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    next.run(request).await
}

/// `GET /admin/registration`
pub async fn get_policy(State(gw): State<Arc<Gateway>>) -> Response {
    Json(gw.accounts.policy()).into_response()
}

/// `PUT /admin/registration`: switch the policy live.
pub async fn set_policy(State(gw): State<Arc<Gateway>>, body: axum::body::Bytes) -> Response {
    let policy: RegistrationPolicy = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            let body = json!({"error": {"message": format!("invalid policy: {e}"), "type": "invalid_request_error", "param": null, "code": "invalid_policy"}});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    match gw.accounts.set_policy(policy, "operator").await {
        Ok(()) => Json(gw.accounts.policy()).into_response(),
        Err(e) => account_error(&e),
    }
}

/// `POST /admin/invites`
pub async fn create_invite(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.accounts.create_invite("operator").await {
        Ok(code) => (StatusCode::CREATED, Json(json!({"invite": code}))).into_response(),
        Err(e) => account_error(&e),
    }
}

/// `POST /admin/users/{id}/mfa/reset`
pub async fn reset_mfa(State(gw): State<Arc<Gateway>>, Path(id): Path<i64>) -> Response {
    match gw.accounts.reset_mfa(id, "operator").await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => account_error(&e),
    }
}

#[derive(Deserialize)]
pub struct RequireMfa {
    required: bool,
}

/// `PUT /admin/users/{id}/mfa/required`
pub async fn require_mfa(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<i64>,
    Json(body): Json<RequireMfa>,
) -> Response {
    match gw.accounts.require_mfa(id, body.required, "operator").await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => account_error(&e),
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<i64>,
    action: Option<String>,
}

/// `GET /admin/audit?limit=&action=`: newest first.
pub async fn audit(State(gw): State<Arc<Gateway>>, Query(q): Query<AuditQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match gw.store.recent_audit(limit, q.action.as_deref()).await {
        Ok(rows) => {
            let entries: Vec<_> = rows
                .into_iter()
                .map(|r| {
                    json!({"id": r.id, "at": r.at, "actor": r.actor, "action": r.action, "outcome": r.outcome,
                           "ip": r.ip, "reason": r.reason,
                           "detail": r.detail.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())})
                })
                .collect();
            Json(json!({"entries": entries})).into_response()
        }
        Err(e) => account_error(&e.into()),
    }
}

/// `GET /admin/flags`: callers with strikes from the AI guard, most first.
/// `caller` is an account id, or a subnet digest (≥ 2^63) for anonymous traffic.
pub async fn flags(State(gw): State<Arc<Gateway>>) -> Response {
    let list: Vec<serde_json::Value> = gw
        .strikes()
        .list(1000)
        .into_iter()
        .map(|(caller, strikes, last_s)| {
            let standing = match gw.strikes().standing(caller) {
                crate::guard::Standing::Good => "good",
                crate::guard::Standing::Throttled => "throttled",
                crate::guard::Standing::Suspended => "suspended",
            };
            serde_json::json!({"caller": caller.to_string(), "strikes": strikes, "last_strike_s_ago": last_s, "standing": standing})
        })
        .collect();
    Json(serde_json::json!({"flags": list})).into_response()
}

/// `DELETE /admin/flags/{caller}`: forgive a caller's strikes.
pub async fn clear_flag(State(gw): State<Arc<Gateway>>, Path(caller): Path<u64>) -> Response {
    if gw.strikes().clear(caller) {
        gw.accounts
            .record(
                "operator",
                "guard.flag.clear",
                "ok",
                None,
                None,
                Some(serde_json::json!({"caller": caller.to_string()})),
            )
            .await;
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}
