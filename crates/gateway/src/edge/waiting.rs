//! The registration waiting room over HTTP.
//!
//! When the `register` route limit refuses a sign-up (or anyone is already waiting, so the
//! queue stays fair), `POST /auth/register` answers **202 Accepted** with a ticket instead
//! of an error: `{"status": "waiting", "ticket", "position", "eta_s", "poll_after_s"}`.
//! The client polls `GET /auth/register/ticket?ticket=…` (same user agent, same subnet)
//! until it answers `{"status": "admitted", "pass"}`, then repeats its registration with
//! `X-Palisade-Pass: <pass>`, which skips the route limit once. An abandoned ticket answers
//! 410 `ticket_expired` (join again); a forged or foreign one 403 `ticket_invalid`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleet::{RoomAnswer, RoomRules};
use serde::Deserialize;
use serde_json::json;
use shield::{Client, ClientBinding, Ticket, WaitingRoomError, WaitingStatus};

use super::metrics::EdgeAction;
use super::{Edge, PASS_HEADER, Stop};
use crate::clock::now;
use crate::error::{ApiError, Reject};
use crate::request::{QueryParam, RequestContext, Zone};

fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn room_error(edge: &Edge, e: WaitingRoomError) -> ApiError {
    edge.metrics.record(EdgeAction::Block, e.code());
    let (reject, message, retry) = match e {
        WaitingRoomError::Full { retry_after } => {
            (Reject::WaitingRoomFull, "the waiting room is full; try again later".to_owned(), Some(retry_after))
        }
        WaitingRoomError::PassExpired => {
            (Reject::TicketExpired, "the admission pass has expired; join the waiting room again".to_owned(), None)
        }
        other => (Reject::TicketInvalid, format!("{other} ({})", other.code()), None),
    };
    ApiError::new(reject, message).retry_after(retry.map(|r| secs_up(r).clamp(1, 3600) as u32))
}

/// The route-limit stage for `POST /auth/register`: the reason to record when the
/// sign-up may go on, or the answer (a ticket, a refusal).
pub(crate) async fn admit_registration(
    edge: &Edge,
    client: &Client,
    headers: &HeaderMap,
    now: Duration,
) -> Result<&'static str, Stop> {
    let binding = edge.binding(client, headers);
    if let Some(pass) = headers.get(PASS_HEADER).and_then(|v| v.to_str().ok()) {
        let checked = edge.room().check_pass(pass, &binding, now);
        let pass = checked.map_err(|e| room_error(edge, e))?;
        if edge.claim_pass(&pass.id, pass.expires_at, now).await.is_err() {
            edge.metrics.record(EdgeAction::Block, "pass_replayed");
            let message = "this admission pass was already used; join the waiting room again";
            return Err(ApiError::new(Reject::TicketInvalid, message).into());
        }
        return Ok("admission_pass");
    }
    let someone_waits = someone_waits(edge, now).await;
    if !someone_waits {
        let d = edge.check_route(Zone::Register, client, None, now).await;
        if d.allowed {
            return Ok("passed");
        }
        if !edge.config.registration.waiting_room {
            edge.metrics.record(EdgeAction::Limit, "route_limit");
            return Err(ApiError::limited("too many registrations; try again later", &d).into());
        }
    }
    let joined = join(edge, &binding, now).await;
    let ticket = joined.map_err(|e| room_error(edge, e))?;
    edge.metrics.record(EdgeAction::Queue, "waiting_room_joined");
    let body = json!({
        "status": "waiting",
        "ticket": ticket.token,
        "position": ticket.position,
        "eta_s": ticket.eta.map(secs_up),
        "poll_after_s": secs_up(ticket.poll_after),
        "poll": "/auth/register/ticket",
    });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs_up(ticket.poll_after).max(1)));
    Err(Stop::Answered(Box::new(response)))
}

// In a fleet the queue is the shared state's (`fleet::room`), one for every node; this
// node only signs and checks the tickets and passes. While the shared state is away each
// node falls back to its own queue (a ticket from the shared one then reads as expired).

fn rules(edge: &Edge) -> RoomRules {
    let room = edge.room();
    let c = room.config();
    RoomRules {
        capacity: c.capacity as u64,
        admit_per_sec: c.admit_per_sec,
        admit_burst: c.admit_burst,
        poll_ttl_ms: c.poll_ttl_ms,
    }
}

async fn someone_waits(edge: &Edge, now: Duration) -> bool {
    if let Some(shared) = edge.shared_up() {
        match shared.fleet().room_waiting(&rules(edge)).await {
            Ok(waiting) => return waiting > 0,
            Err(_) => shared.fleet().count_fallback(),
        }
    }
    !edge.room().is_empty(now)
}

async fn join(edge: &Edge, binding: &ClientBinding, now: Duration) -> Result<Ticket, WaitingRoomError> {
    if let Some(shared) = edge.shared_up() {
        match shared.fleet().room_join(&rules(edge)).await {
            Ok(RoomAnswer::Full) => return Err(edge.room().full()),
            Ok(RoomAnswer::Joined { seq, position, credit }) => {
                let room = edge.room();
                let token = room.seal_ticket(seq, binding, now);
                let WaitingStatus::Waiting { eta, poll_after, .. } = room.waiting_status(position, credit) else {
                    unreachable!("waiting_status answers Waiting")
                };
                return Ok(Ticket { token, position, eta, poll_after });
            }
            Ok(_) | Err(_) => shared.fleet().count_fallback(),
        }
    }
    edge.room().join(binding, now)
}

async fn poll_ticket(
    edge: &Edge,
    ticket: &str,
    binding: &ClientBinding,
    now: Duration,
) -> Result<WaitingStatus, WaitingRoomError> {
    if let Some(shared) = edge.shared_up() {
        let Some(seq) = edge.room().open_ticket(ticket, binding)? else { return Ok(WaitingStatus::Expired) };
        match shared.fleet().room_poll(seq, &rules(edge)).await {
            Ok(RoomAnswer::Admitted) => {
                return Ok(WaitingStatus::Admitted { pass: edge.room().pass_for(seq, binding, now) });
            }
            Ok(RoomAnswer::Expired) => return Ok(WaitingStatus::Expired),
            Ok(RoomAnswer::Waiting { position, credit }) => return Ok(edge.room().waiting_status(position, credit)),
            Ok(_) | Err(_) => shared.fleet().count_fallback(),
        }
    }
    edge.room().poll(ticket, binding, now)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    ticket: Option<String>,
}

/// `GET /auth/register/ticket?ticket=…`: where the ticket stands.
#[utoipa::path(
    get, path = "/auth/register/ticket", tag = "auth",
    params(TicketQuery),
    responses(
        (status = 200, description = "Still waiting (with `Retry-After`), or admitted with a pass", body = crate::schema::TicketStatus),
        crate::schema::E400, crate::schema::E403, crate::schema::E410, crate::schema::E429, crate::schema::E503,
    )
)]
pub async fn poll(
    State(edge): State<Arc<Edge>>,
    ctx: RequestContext,
    headers: HeaderMap,
    QueryParam(q): QueryParam<TicketQuery>,
) -> Result<Response, ApiError> {
    let Some(ticket) = q.ticket else {
        return Err(ApiError::new(Reject::InvalidRequest, "pass the ticket as ?ticket=…"));
    };
    let now = now();
    let binding = edge.binding(&ctx.client, &headers);
    let status = poll_ticket(&edge, &ticket, &binding, now).await;
    match status {
        Ok(WaitingStatus::Waiting { position, eta, poll_after }) => {
            edge.metrics.record(EdgeAction::Queue, "ticket_waiting");
            let body = json!({"status": "waiting", "position": position, "eta_s": eta.map(secs_up),
                              "poll_after_s": secs_up(poll_after)});
            let mut response = Json(body).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs_up(poll_after).max(1)));
            Ok(response)
        }
        Ok(WaitingStatus::Admitted { pass }) => {
            edge.metrics.record(EdgeAction::Allow, "ticket_admitted");
            Ok(Json(json!({"status": "admitted", "pass": pass, "header": PASS_HEADER})).into_response())
        }
        Ok(WaitingStatus::Expired) => {
            edge.metrics.record(EdgeAction::Block, "ticket_expired");
            Err(ApiError::new(Reject::TicketExpired, "this ticket has expired; register again to rejoin the queue"))
        }
        Err(e) => Err(room_error(&edge, e)),
    }
}
