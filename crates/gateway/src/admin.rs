//! `/admin/*`: the operator's API, behind the admin token
//! (`Authorization: Bearer <token>`, compared in constant time).
//!
//! Every change is audited with the actor `operator`. Status-page changes
//! (incidents, component overrides, maintenances) are re-rendered before the
//! answer, so the public page shows them as soon as the operator sees success.

use std::sync::Arc;
use std::time::Instant;

use accounts::operator::{Actor, OperatorRole};
use accounts::policy::RegistrationPolicy;
use accounts::service::Accounts;
use accounts::service::operators::{BOOTSTRAP_ACTOR, OPERATOR_TOKEN_TAG};
use accounts::tier::TrustTier;
use accounts::tokens;
use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use status::{ComponentStatus, Impact, IncidentStatus};
use store::{IncidentChange, IncidentRecord, NewIncident, NewMaintenance, Store, StoreError};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::abuse::{Standing, Strikes};
use crate::error::{ApiError, Reject};
use crate::request::{PathParam, QueryParam, RequestContext};
use crate::status_page::StatusBoard;
use crate::status_page::recorder::audit as audit_status;

/// The bootstrap secret, as its SHA-256 (`None`: none configured), and the accounts
/// that hold the operators.
#[derive(Clone)]
pub struct AdminGate {
    pub token: Option<[u8; 32]>,
    pub accounts: Arc<Accounts>,
}

/// What the operator's API changes: accounts and the registration switch, the
/// status page, and the AI guard's strikes.
#[derive(Clone)]
pub struct Operator {
    pub accounts: Arc<Accounts>,
    pub status: Arc<StatusBoard>,
    pub strikes: Arc<Strikes>,
}

impl Operator {
    fn store(&self) -> &Store {
        self.status.store()
    }
}

/// What an admin path needs: managing operators needs an admin, reading a viewer,
/// any other change an operator.
fn needed_role(method: &Method, path: &str) -> OperatorRole {
    let path = path.strip_prefix("/admin").unwrap_or(path);
    if path == "/operators" || path.starts_with("/operators/") {
        OperatorRole::Admin
    } else if method == Method::GET {
        OperatorRole::Viewer
    } else {
        OperatorRole::Operator
    }
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Who presented `token`. The bootstrap secret acts as an admin only while no operator
/// has enrolled; after that it may only manage operators.
async fn actor_of(gate: &AdminGate, token: &str, needed: OperatorRole) -> Result<Actor, ApiError> {
    if token.starts_with(OPERATOR_TOKEN_TAG) {
        return match gate.accounts.operator_by_token(token).await? {
            Some(id) => Ok(Actor { name: format!("operator:{}", id.name), role: id.role }),
            None => Err(ApiError::new(
                Reject::AdminUnauthorized,
                "the operator token is unknown or has expired; log in again (`palisade admin login`)",
            )),
        };
    }
    let matches = gate.token.is_some_and(|expected| tokens::constant_time_eq(&expected, &tokens::hash(token)));
    if !matches {
        return Err(ApiError::new(Reject::AdminUnauthorized, "an operator token or the bootstrap secret is required"));
    }
    if needed != OperatorRole::Admin && gate.accounts.active_operators().await? > 0 {
        return Err(ApiError::new(
            Reject::AdminForbidden,
            "operators exist: the bootstrap secret only manages operators; log in with `palisade admin login`",
        )
        .detail("bootstrap_only"));
    }
    Ok(Actor { name: BOOTSTRAP_ACTOR.to_owned(), role: OperatorRole::Admin })
}

/// Refuse any admin request without a live operator token whose role allows it (or the
/// bootstrap secret, see [`actor_of`]); hand the handler its [`Actor`].
pub async fn require_admin(State(gate): State<AdminGate>, mut request: Request, next: Next) -> Response {
    let needed = needed_role(request.method(), request.uri().path());
    let Some(token) = bearer(request.headers()) else {
        return ApiError::new(Reject::AdminUnauthorized, "an operator token or the bootstrap secret is required")
            .into_response();
    };
    let actor = match actor_of(&gate, token, needed).await {
        Ok(actor) => actor,
        Err(refusal) => return refusal.into_response(),
    };
    if !actor.role.allows(needed) {
        let message = format!("this needs the {needed} role; {} has {}", actor.name, actor.role);
        return ApiError::new(Reject::AdminForbidden, message).detail("role_required").into_response();
    }
    request.extensions_mut().insert(actor);
    next.run(request).await
}

/// `GET /admin/registration`
pub async fn get_policy(State(op): State<Operator>) -> Response {
    Json(op.accounts.policy()).into_response()
}

/// `PUT /admin/registration`: switch the policy live.
pub async fn set_policy(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let policy: RegistrationPolicy = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(Reject::InvalidInput, format!("invalid policy: {e}")).detail("invalid_policy"))?;
    op.accounts.set_policy(policy, &actor.name).await?;
    // The status page states the policy; show the change at once.
    op.status.refresh().await;
    Ok(Json(op.accounts.policy()).into_response())
}

/// `POST /admin/invites`
pub async fn create_invite(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
) -> Result<Response, ApiError> {
    let code = op.accounts.create_invite(&actor.name).await?;
    Ok((StatusCode::CREATED, Json(json!({"invite": code}))).into_response())
}

/// `POST /admin/users/{id}/mfa/reset`
pub async fn reset_mfa(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(id): PathParam<i64>,
) -> Result<Response, ApiError> {
    op.accounts.reset_mfa(id, &actor.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct RequireMfa {
    required: bool,
}

/// `PUT /admin/users/{id}/mfa/required`
pub async fn require_mfa(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(id): PathParam<i64>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: RequireMfa = parse(&body)?;
    op.accounts.require_mfa(id, body.required, &actor.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinTier {
    tier: String,
}

/// `PUT /admin/users/{id}/tier` `{"tier": "established"}`: pin an account's trust tier.
pub async fn pin_tier(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(id): PathParam<i64>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: PinTier = parse(&body)?;
    let tier: TrustTier = body.tier.parse().map_err(|e: accounts::tier::ParseTrustTierError| {
        ApiError::new(Reject::InvalidRequest, e.to_string()).param("tier")
    })?;
    op.accounts.pin_tier(id, Some(tier), &actor.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /admin/users/{id}/tier`: lift the pin; the tier follows the account's history again.
pub async fn lift_tier(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(id): PathParam<i64>,
) -> Result<Response, ApiError> {
    op.accounts.pin_tier(id, None, &actor.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /admin/users/{id}/cohort`: clear an account's cohort flag.
pub async fn clear_cohort(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(id): PathParam<i64>,
) -> Result<Response, ApiError> {
    op.accounts.clear_flag(id, &actor.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<i64>,
    action: Option<String>,
}

/// `GET /admin/audit?limit=&action=`: newest first.
pub async fn audit(State(op): State<Operator>, QueryParam(q): QueryParam<AuditQuery>) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = op.store().recent_audit(limit, q.action.as_deref()).await.map_err(store_error)?;
    let entries: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({"id": r.id, "at": r.at, "actor": r.actor, "action": r.action, "outcome": r.outcome,
                   "ip": r.ip, "reason": r.reason,
                   "detail": r.detail.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())})
        })
        .collect();
    Ok(Json(json!({"entries": entries})).into_response())
}

/// `GET /admin/flags`: callers with strikes from the AI guard, most first
/// (`caller` is an account id, or a subnet digest (≥ 2^63) for anonymous traffic), and
/// accounts flagged as one of a cohort, newest first.
pub async fn flags(State(op): State<Operator>) -> Result<Response, ApiError> {
    let cohorts = op.accounts.flagged(1000).await?;
    let list: Vec<serde_json::Value> = op
        .strikes
        .list(1000, Instant::now())
        .into_iter()
        .map(|flag| {
            let standing = match flag.standing {
                Standing::Good => "good",
                Standing::Throttled => "throttled",
                Standing::Suspended => "suspended",
            };
            serde_json::json!({"caller": flag.caller.to_string(), "strikes": flag.strikes,
                               "last_strike_s_ago": flag.last_strike_s_ago, "last_reason": flag.last_reason,
                               "standing": standing})
        })
        .collect();
    Ok(Json(serde_json::json!({"flags": list, "cohorts": cohorts})).into_response())
}

/// `DELETE /admin/flags/{caller}`: forgive a caller's strikes.
pub async fn clear_flag(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(caller): PathParam<u64>,
) -> Result<Response, ApiError> {
    if !op.strikes.clear(caller) {
        return Err(ApiError::new(Reject::NotFound, format!("caller {caller} has no strikes")));
    }
    let detail = serde_json::json!({"caller": caller.to_string()});
    op.accounts.audit(&actor.name, "guard.flag.clear", "ok", None, None, Some(detail)).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(Reject::InvalidRequest, message)
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) => ApiError::new(Reject::Conflict, format!("refused: {what} exists")),
        e => {
            tracing::error!(error = %e, "status page change failed in the store");
            ApiError::new(Reject::StoreUnavailable, "the store did not accept the change")
        }
    }
}

/// A JSON body, or a 400 naming what is wrong with it. An empty body reads as `{}`.
fn parse<T: DeserializeOwned>(body: &axum::body::Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| invalid(format!("invalid request body: {e}")))
}

fn text(field: &str, value: &str, max_chars: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max_chars {
        return Err(invalid(format!("{field} is longer than {max_chars} characters")));
    }
    Ok(value.to_owned())
}

fn incident_status(value: &str) -> Result<IncidentStatus, ApiError> {
    value.parse().map_err(|e: status::ParseEnumError| invalid(e.to_string()))
}

fn incident_impact(value: &str) -> Result<Impact, ApiError> {
    match value.parse() {
        Ok(Impact::Maintenance) | Err(_) => {
            Err(invalid(format!("unknown impact {value:?}; expected one of: none minor major critical")))
        }
        Ok(impact) => Ok(impact),
    }
}

fn known_components(op: &Operator, ids: &[String]) -> Result<Vec<String>, ApiError> {
    let known = op.status.components();
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !known.iter().any(|c| &c.id == id) {
            let names: Vec<&str> = known.iter().map(|c| c.id.as_str()).collect();
            return Err(invalid(format!("unknown component {id:?}; the page has: {}", names.join(" "))));
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

fn rfc3339(ms: i64) -> Value {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn incident_json(record: &IncidentRecord) -> Value {
    let i = &record.incident;
    json!({
        "id": i.id,
        "name": i.name,
        "status": i.status,
        "impact": i.impact,
        "component_ids": i.component_ids,
        "automatic": i.auto_key.is_some(),
        "created_at": rfc3339(i.created_at),
        "updated_at": rfc3339(i.updated_at),
        "resolved_at": i.resolved_at.map_or(Value::Null, rfc3339),
        "updates": record.updates.iter().map(|u| json!({"status": u.status, "body": u.body, "at": rfc3339(u.at)})).collect::<Vec<_>>(),
    })
}

/// Re-render the page and answer with the incident as stored.
async fn answer_incident(op: &Operator, id: i64, status: StatusCode) -> Result<Response, ApiError> {
    op.status.refresh().await;
    match op.store().incident(id).await.map_err(store_error)? {
        Some(record) => Ok((status, Json(incident_json(&record))).into_response()),
        None => Err(ApiError::new(Reject::NotFound, format!("no incident {id}"))),
    }
}

/// `GET /admin/incidents`: unresolved ones and those of the last 90 days, newest first.
pub async fn list_incidents(State(op): State<Operator>) -> Result<Response, ApiError> {
    let records = op.store().incidents_since(now_ms() - 90 * 86_400_000, 100, 100).await.map_err(store_error)?;
    Ok(Json(json!({"incidents": records.iter().map(incident_json).collect::<Vec<_>>()})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIncident {
    name: String,
    body: String,
    status: Option<String>,
    impact: Option<String>,
    #[serde(default)]
    component_ids: Vec<String>,
}

/// `POST /admin/incidents` `{name, body, status?, impact?, component_ids?}`
pub async fn open_incident(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: OpenIncident = parse(&body)?;
    let incident = NewIncident {
        name: text("name", &req.name, 200)?,
        status: incident_status(req.status.as_deref().unwrap_or("investigating"))?.as_str().to_owned(),
        impact: incident_impact(req.impact.as_deref().unwrap_or("minor"))?.as_str().to_owned(),
        body: text("body", &req.body, 10_000)?,
        component_ids: known_components(&op, &req.component_ids)?,
        auto_key: None,
    };
    let id = op.store().open_incident(&incident, now_ms()).await.map_err(store_error)?;
    let detail = json!({"id": id, "name": incident.name, "status": incident.status, "impact": incident.impact,
                        "component_ids": incident.component_ids});
    audit_status(op.store(), &actor.name, "status.incident.open", detail).await;
    answer_incident(&op, id, StatusCode::CREATED).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIncident {
    status: String,
    body: String,
    name: Option<String>,
    impact: Option<String>,
    component_ids: Option<Vec<String>>,
}

/// `POST /admin/incidents/{id}/updates` `{status, body, name?, impact?, component_ids?}`
pub async fn update_incident(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(id): PathParam<i64>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: UpdateIncident = parse(&body)?;
    let change = IncidentChange {
        status: incident_status(&req.status)?.as_str().to_owned(),
        body: text("body", &req.body, 10_000)?,
        name: req.name.as_deref().map(|n| text("name", n, 200)).transpose()?,
        impact: req.impact.as_deref().map(incident_impact).transpose()?.map(|i| i.as_str().to_owned()),
        component_ids: req.component_ids.as_deref().map(|ids| known_components(&op, ids)).transpose()?,
    };
    post_update(&op, &actor, id, change, "status.incident.update").await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResolveIncident {
    body: Option<String>,
}

/// `POST /admin/incidents/{id}/resolve` `{body?}`
pub async fn resolve_incident(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(id): PathParam<i64>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ResolveIncident = parse(&body)?;
    let body = match req.body {
        Some(b) => text("body", &b, 10_000)?,
        None => "This incident has been resolved.".to_owned(),
    };
    let change = IncidentChange { status: IncidentStatus::Resolved.as_str().to_owned(), body, ..Default::default() };
    post_update(&op, &actor, id, change, "status.incident.resolve").await
}

async fn post_update(
    op: &Operator,
    actor: &Actor,
    id: i64,
    change: IncidentChange,
    action: &str,
) -> Result<Response, ApiError> {
    if !op.store().update_incident(id, &change, now_ms()).await.map_err(store_error)? {
        return Err(ApiError::new(Reject::NotFound, format!("no incident {id}")));
    }
    let detail = json!({"id": id, "status": change.status, "name": change.name, "impact": change.impact,
                        "component_ids": change.component_ids});
    audit_status(op.store(), &actor.name, action, detail).await;
    answer_incident(op, id, StatusCode::OK).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetComponent {
    /// A component status, or `null` to clear the override.
    status: Option<String>,
}

/// `PUT /admin/components/{id}` `{status: "major_outage" | null}`: force a
/// component's status until cleared.
pub async fn set_component(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    PathParam(id): PathParam<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: SetComponent = parse(&body)?;
    if !op.status.components().iter().any(|c| c.id == id) {
        let message = format!("the page has no component {id:?}");
        return Err(ApiError::new(Reject::NotFound, message).detail("unknown_component"));
    }
    let status =
        req.status.as_deref().map(|s| s.parse::<ComponentStatus>().map_err(|e| invalid(e.to_string()))).transpose()?;
    op.store().set_component_override(&id, status.map(ComponentStatus::as_str), now_ms()).await.map_err(store_error)?;
    let action = if status.is_some() { "status.component.override" } else { "status.component.clear" };
    audit_status(
        op.store(),
        &actor.name,
        action,
        json!({"component": id, "status": status.map(ComponentStatus::as_str)}),
    )
    .await;
    op.status.refresh().await;
    Ok(Json(json!({"id": id, "override": status.map(ComponentStatus::as_str)})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleMaintenance {
    name: String,
    body: String,
    #[serde(default)]
    component_ids: Vec<String>,
    /// RFC 3339, e.g. `2025-06-01T02:00:00Z`.
    scheduled_for: String,
    scheduled_until: String,
}

/// `POST /admin/maintenances` `{name, body, component_ids, scheduled_for, scheduled_until}`
pub async fn schedule_maintenance(
    State(op): State<Operator>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ScheduleMaintenance = parse(&body)?;
    let time = |field: &str, value: &str| {
        OffsetDateTime::parse(value, &Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|e| invalid(format!("{field}: not an RFC 3339 time ({e}), e.g. 2025-06-01T02:00:00Z")))
    };
    let maintenance = NewMaintenance {
        name: text("name", &req.name, 200)?,
        body: text("body", &req.body, 10_000)?,
        component_ids: known_components(&op, &req.component_ids)?,
        scheduled_for: time("scheduled_for", &req.scheduled_for)?,
        scheduled_until: time("scheduled_until", &req.scheduled_until)?,
    };
    if maintenance.scheduled_until <= maintenance.scheduled_for {
        return Err(invalid("scheduled_until must be after scheduled_for"));
    }
    let id = op.store().create_maintenance(&maintenance, now_ms()).await.map_err(store_error)?;
    let detail = json!({"id": id, "name": maintenance.name, "component_ids": maintenance.component_ids,
                        "scheduled_for": req.scheduled_for, "scheduled_until": req.scheduled_until});
    audit_status(op.store(), &actor.name, "status.maintenance.schedule", detail).await;
    op.status.refresh().await;
    let answer = json!({"id": id, "name": maintenance.name, "component_ids": maintenance.component_ids,
                        "scheduled_for": rfc3339(maintenance.scheduled_for),
                        "scheduled_until": rfc3339(maintenance.scheduled_until)});
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorLoginBody {
    name: String,
    password: String,
    totp: Option<String>,
}

/// `POST /admin/login` `{"name", "password", "totp"}`: a short-lived operator token.
pub async fn login(
    State(gate): State<AdminGate>,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: OperatorLoginBody = parse(&body)?;
    let token =
        gate.accounts.operator_login(&body.name, &body.password, body.totp.as_deref(), Some(ctx.client.ip())).await?;
    Ok(Json(token).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    name: String,
    setup_code: String,
    password: String,
}

/// `POST /admin/operators/enroll` `{"name", "setup_code", "password"}`: the operator's
/// TOTP secret, once.
pub async fn enroll(
    State(gate): State<AdminGate>,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: EnrollBody = parse(&body)?;
    let enrollment =
        gate.accounts.enroll_operator(&body.name, &body.setup_code, &body.password, Some(ctx.client.ip())).await?;
    Ok((StatusCode::CREATED, Json(enrollment)).into_response())
}

/// `POST /admin/logout`: ends the operator token presented.
pub async fn logout(
    State(gate): State<AdminGate>,
    Extension(actor): Extension<Actor>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = bearer(&headers).filter(|t| t.starts_with(OPERATOR_TOKEN_TAG)) {
        gate.accounts.operator_logout(token, &actor.name).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/whoami`
pub async fn whoami(Extension(actor): Extension<Actor>) -> Response {
    Json(json!({"actor": actor.name, "role": actor.role})).into_response()
}

/// `GET /admin/operators`
pub async fn list_operators(State(gate): State<AdminGate>) -> Result<Response, ApiError> {
    Ok(Json(json!({"operators": gate.accounts.list_operators().await?})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOperatorBody {
    name: String,
    role: String,
}

fn role(text: &str) -> Result<OperatorRole, ApiError> {
    text.parse().map_err(|e: accounts::operator::ParseRoleError| {
        ApiError::new(Reject::InvalidRequest, e.to_string()).param("role")
    })
}

/// `POST /admin/operators` `{"name", "role"}`: the new operator's setup code, once.
pub async fn add_operator(
    State(gate): State<AdminGate>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: NewOperatorBody = parse(&body)?;
    let setup = gate.accounts.add_operator(&body.name, role(&body.role)?, &actor.name).await?;
    Ok((StatusCode::CREATED, Json(setup)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: String,
}

/// `PUT /admin/operators/{name}/role` `{"role"}`
pub async fn set_operator_role(
    State(gate): State<AdminGate>,
    Extension(actor): Extension<Actor>,
    PathParam(name): PathParam<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: RoleBody = parse(&body)?;
    gate.accounts.set_operator_role(&name, role(&body.role)?, &actor.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /admin/operators/{name}/reset`: a new setup code; the old password,
/// authenticator and tokens stop working.
pub async fn reset_operator(
    State(gate): State<AdminGate>,
    Extension(actor): Extension<Actor>,
    PathParam(name): PathParam<String>,
) -> Result<Response, ApiError> {
    Ok(Json(gate.accounts.reset_operator(&name, &actor.name).await?).into_response())
}

/// `DELETE /admin/operators/{name}`: disables the operator and ends their tokens.
pub async fn disable_operator(
    State(gate): State<AdminGate>,
    Extension(actor): Extension<Actor>,
    PathParam(name): PathParam<String>,
) -> Result<Response, ApiError> {
    gate.accounts.disable_operator(&name, &actor.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
