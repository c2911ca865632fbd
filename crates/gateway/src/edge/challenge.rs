//! `GET /challenge` and `POST /challenge`: the proof-of-work flow.
//!
//! API and CLI clients: `GET /challenge` (JSON) → find a nonce such that
//! `SHA-256(seed ‖ decimal nonce)` has `difficulty` leading zero bits → `POST /challenge`
//! `{"token", "nonce"}` → a clearance token, also set as the `palisade_clearance` cookie.
//! Send it back as that cookie or in `X-Palisade-Clearance`, with the same `User-Agent`
//! and from the same subnet. Browsers get a small page that does the same in a Web Worker.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use shield::{Client, PowError};

use super::metrics::EdgeAction;
use super::{CLEARANCE_HEADER, Edge};
use crate::audit::Event;
use crate::clock::now;
use crate::cookies::{CLEARANCE_COOKIE, CookiePolicy};
use crate::error::{ApiError, Reject, wants_html};
use crate::pages;
use crate::request::{QueryParam, RequestContext};

/// The 403 a request gets when it needs a clearance, with a fresh challenge inside: the
/// JSON for API clients, the solver page for browsers (which returns to the same URL).
pub(crate) fn required(
    edge: &Edge,
    client: &Client,
    headers: &HeaderMap,
    bot_score: u8,
    reason: &str,
    now: Duration,
) -> ApiError {
    let binding = edge.binding(client, headers);
    let challenge = edge.challenge(&binding, bot_score, now);
    let message = format!("solve the proof-of-work challenge first ({reason}); see `challenge`, or GET /challenge");
    ApiError::challenge(message, challenge)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChallengeQuery {
    return_to: Option<String>,
}

/// `GET /challenge`: a fresh challenge (JSON, or the solver page for browsers).
#[utoipa::path(
    get, path = "/challenge", tag = "edge",
    params(ChallengeQuery),
    responses(
        (status = 200, description = "A fresh challenge (a browser asking for HTML gets the solver page)", body = crate::schema::Challenge),
        crate::schema::E403, crate::schema::E429, crate::schema::E503,
    )
)]
pub async fn get(
    State(edge): State<Arc<Edge>>,
    ctx: RequestContext,
    headers: HeaderMap,
    QueryParam(q): QueryParam<ChallengeQuery>,
) -> Response {
    let now = now();
    let score = edge.bot_verdict(&ctx.client, &headers, now).score;
    let challenge = edge.challenge(&edge.binding(&ctx.client, &headers), score, now);
    edge.metrics.record(EdgeAction::Challenge, "bot_score");
    if wants_html(&headers) {
        return pages::challenge(&challenge, q.return_to.as_deref());
    }
    let mut response = Json(pages::challenge_json(&challenge)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
struct Answer {
    token: String,
    /// A decimal string; a JSON number is accepted too.
    nonce: Value,
}

/// `POST /challenge` `{"token", "nonce"}`: a clearance token (and cookie) for a valid,
/// unused solution from the client the challenge was issued to.
#[utoipa::path(
    post, path = "/challenge", tag = "edge",
    request_body = crate::schema::ChallengeAnswer,
    responses(
        (status = 200, description = "A clearance, also set as a cookie", body = crate::schema::Clearance),
        crate::schema::E400, crate::schema::E403, crate::schema::E429, crate::schema::E503,
    )
)]
pub async fn post(
    State(edge): State<Arc<Edge>>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let client = ctx.client;
    let answer: Answer = match serde_json::from_slice(&body) {
        Ok(a) if body.len() <= 4096 => a,
        _ => {
            let message = "expected a JSON body {\"token\": \"…\", \"nonce\": \"…\"} (at most 4 KiB)";
            return Err(ApiError::new(Reject::InvalidRequest, message));
        }
    };
    let nonce = match &answer.nonce {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let now = now();
    let binding = edge.binding(&client, &headers);
    match edge.redeem(&answer.token, &nonce, &binding, &client, now).await {
        Ok(clearance) => {
            edge.metrics.record(EdgeAction::Allow, "pow_solved");
            let p = &edge.config.pow;
            let ttl = Duration::from_millis(p.clearance_ttl_ms);
            let body = json!({
                "clearance": clearance,
                "expires_in_s": ttl.as_secs(),
                "budget": p.clearance_budget,
                "cookie": CLEARANCE_COOKIE,
                "header": CLEARANCE_HEADER,
            });
            let mut response = Json(body).into_response();
            let cookie = CookiePolicy { secure: edge.https() }.set(CLEARANCE_COOKIE, &clearance, ttl, true);
            response.headers_mut().append(header::SET_COOKIE, cookie);
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(e) => {
            edge.metrics.record(EdgeAction::Challenge, e.code());
            edge.audit_sampled(&client, now, || Event::new("edge", "shield.challenge", "failed").reason(e.code()));
            let (reject, retry) = match e {
                PowError::Busy { retry_after } => {
                    (Reject::WaitingRoomFull, Some(retry_after.as_secs().clamp(1, 3600) as u32))
                }
                PowError::Malformed | PowError::BadNonce => (Reject::InvalidRequest, None),
                _ => (Reject::ChallengeFailed, None),
            };
            Err(ApiError::new(reject, format!("{e} ({}); fetch a new challenge", e.code())).retry_after(retry))
        }
    }
}
