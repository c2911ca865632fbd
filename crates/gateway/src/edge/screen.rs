//! The edge's checks on one request, cheapest first (see [`crate::edge`]):
//!
//! 1. block and allow lists (403 `blocked`) and
//! 2. per-address and per-subnet limits (429 `rate_limited`, with `RateLimit-*` and
//!    `Retry-After`), both run by the listener before the request has a context
//!    ([`crate::refusal`], [`Edge::admit`](super::Edge)),
//! 3. identity, once, written into the request's context for every later stage,
//! 4. per-API-key and per-account limits for identified requests,
//! 5. for anonymous requests, and for every sign-up and login (a credential proves
//!    nothing there): under attack a double charge, then the bot score and, when it
//!    says so (or for registration under attack), a proof-of-work clearance (403
//!    `challenge_required` until solved),
//! 6. per-route limits; a refused registration gets a waiting-room ticket (202).
//!
//! The client is the one the listener resolved; nothing here reads the socket or
//! `X-Forwarded-For`.

use std::sync::Arc;
use std::time::Duration;

use accounts::service::Accounts;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shield::{Action, Client};

use super::metrics::EdgeAction;
use super::shared::Refused;
use super::{CLEARANCE_HEADER, Edge, Stop};
use crate::audit::Event;
use crate::clock::now;
use crate::cookies::{CLEARANCE_COOKIE, cookie};
use crate::error::{ApiError, Reject};
use crate::request::{Identity, RequestContext, Zone};

/// What the edge's checks need: the edge itself, the account service to look up
/// credentials, and whether anonymous inference is served (and so scored).
#[derive(Clone)]
pub struct Screen {
    pub edge: Arc<Edge>,
    pub accounts: Arc<Accounts>,
    pub anonymous_inference: bool,
}

/// The edge as middleware. Applied to the whole router; passes everything outside
/// `/v1/*`, `/auth/*` and `/challenge` through untouched.
pub async fn screen(State(screen): State<Screen>, mut request: Request, next: Next) -> Response {
    let Some(ctx) = request.extensions_mut().remove::<RequestContext>() else {
        return next.run(request).await;
    };
    // The router's handlers read the context (with the identity found here) from the
    // extensions again.
    screened(&screen, ctx, request, |ctx, mut request| {
        request.extensions_mut().insert(ctx);
        next.run(request)
    })
    .await
}

/// The edge's checks around `handler`: the middleware above, and the server's direct
/// path to the inference proxy, which skips the router but not this.
pub async fn screened<F, Fut>(screen: &Screen, mut ctx: RequestContext, request: Request, handler: F) -> Response
where
    F: FnOnce(RequestContext, Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let Some(zone) = ctx.route.zone() else {
        return handler(ctx, request).await;
    };
    let client = ctx.client;
    let edge = &screen.edge;
    if !edge.enabled() {
        // No checks, but later stages still read who is asking from the context.
        ctx.identity = identify(screen, request.headers()).await;
        return handler(ctx, request).await;
    }
    let now = now();
    let is_post = request.method() == Method::POST;
    let lease = match check(screen, zone, &client, &mut ctx, request.headers(), is_post, now).await {
        Ok((verdict, lease)) => {
            edge.metrics.record(EdgeAction::Allow, verdict);
            lease
        }
        Err(stop) => return stop.into_response(),
    };
    let mut response = handler(ctx, request).await;
    if let Some(held) = lease {
        // Held until the reply's last byte is sent or the client leaves.
        response = response.map(|body| Body::new(Leased { inner: body, held }));
    }
    // Signals for the attack detector and the bot score.
    match (zone, response.status()) {
        (Zone::Register, StatusCode::CREATED) if is_post => edge.count_signup(&client, now),
        (Zone::Login, StatusCode::UNAUTHORIZED) if is_post => edge.count_login_failure(),
        _ => {}
    }
    response
}

async fn identify(screen: &Screen, headers: &HeaderMap) -> Identity {
    crate::identity::resolve(&screen.accounts, headers).await
}

/// Stages 1–6; the reason to count when the request may go on, and the account's
/// concurrent-request lease when the fleet granted one.
async fn check(
    screen: &Screen,
    zone: Zone,
    client: &Client,
    ctx: &mut RequestContext,
    headers: &HeaderMap,
    is_post: bool,
    now: Duration,
) -> Result<(&'static str, Option<HeldLease>), Stop> {
    let edge = &screen.edge;
    // 1–2. The lists and (on a single node) the per-address and per-subnet limits ran
    // in the listener (`Edge::admit`): what got here passed them.
    let allow_listed = ctx.allow_listed;

    // 2–4. In a fleet the source limits are decided fleet-wide, which takes a round trip
    // the listener's synchronous refusals cannot wait for. A caller the credential cache
    // knows is named without a lookup, so its limits ride in that same round trip; any
    // other credential is looked up only after its source passed (a flood of made-up
    // keys must not reach the store first).
    let cached = if edge.fleet().is_some() { crate::identity::cached(&screen.accounts, headers) } else { None };
    let together = cached.as_ref().and_then(Identity::principal).cloned();
    if edge.fleet().is_some() && together.is_none() {
        let source = edge.check_source(client, 1, now).await;
        if !source.allowed {
            return Err(limited(edge, Refused::Source, &source));
        }
    }

    // 3. Identity, once.
    let identity = match cached {
        Some(identity) => identity,
        None => identify(screen, headers).await,
    };
    let principal = identity.principal().cloned();
    ctx.identity = identity;

    let mut verdict = if allow_listed { "allow_listed" } else { "passed" };
    let mut lease = None;
    if let Some(p) = &principal {
        // 4. Identified: per-key and per-account limits, and for a request that will cost
        // a model, one of the account's leases on requests in flight across the fleet.
        let key = p.key_prefix.as_deref().map(|prefix| (prefix, p.rpm_limit));
        let lease_id = Some(&*ctx).filter(|c| c.route.costs_model()).and_then(|c| c.id.0.to_str().ok());
        let checked = if together.is_some() {
            edge.check_source_and_identified(client, key, p.user_id as u64, lease_id, now).await
        } else {
            edge.check_identified(key, p.user_id as u64, lease_id, now).await
        };
        match checked {
            // From here any refusal gives the lease back (by dropping it).
            Ok(taken) => lease = taken.map(|l| HeldLease { lease: Some(l), edge: edge.clone() }),
            Err((d, which)) => return Err(limited(edge, which, &d)),
        }
        verdict = "identified";
    }
    // A credential exempts a request from the bot score, except where it proves
    // nothing: anyone can sign up and log in, and a bot farm brings its own sessions.
    let scored = !allow_listed && (principal.is_none() || matches!(zone, Zone::Register | Zone::Login));
    if scored {
        // 5. Attack-mode price, bot score, clearance.
        if edge.under_attack() {
            let d = edge.check_source(client, 1, now).await;
            if !d.allowed {
                edge.metrics.record(EdgeAction::Limit, "under_attack");
                return Err(ApiError::limited("too many requests while the service is under attack", &d).into());
            }
        }
        if bot_check(screen, zone, client, headers, now).await? {
            verdict = "cleared";
        }
    }

    // 6. Route limits; registration may go to the waiting room.
    let account = principal.as_ref().map(|p| p.user_id as u64);
    if zone == Zone::Register && is_post {
        verdict = super::waiting::admit_registration(edge, client, headers, now).await?;
    } else {
        let d = edge.check_route(zone, client, account, now).await;
        if !d.allowed {
            edge.metrics.record(EdgeAction::Limit, "route_limit");
            return Err(ApiError::limited("too many requests to this endpoint", &d).into());
        }
    }
    Ok((verdict, lease))
}

/// A fleet lease, given back when dropped: a request refused after its lease was taken
/// must not hold the slot until the lease lapses.
struct HeldLease {
    lease: Option<fleet::Lease>,
    edge: Arc<Edge>,
}

impl HeldLease {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.edge.release(lease);
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.release();
    }
}

/// A reply holding a fleet lease, given back when the body is done or dropped.
struct Leased {
    inner: Body,
    held: HeldLease,
}

impl http_body::Body for Leased {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            // Over: give the lease back now rather than when hyper drops the body.
            self.held.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The refusal of a request over one of its rate limits, counted by which.
fn limited(edge: &Edge, which: Refused, d: &shield::Decision) -> Stop {
    let (reason, message) = match which {
        Refused::Source => ("source_limit", "too many requests from your address or network"),
        Refused::ApiKey => ("api_key_limit", "this API key is over its request rate"),
        Refused::Account => ("account_limit", "this account is over its request rate"),
        Refused::Concurrency => {
            ("concurrency_limit", "this account has as many requests in flight as it may; retry when one is done")
        }
    };
    edge.metrics.record(EdgeAction::Limit, reason);
    if which == Refused::Concurrency {
        // No rate to describe: a slot frees when one of the account's replies ends.
        return ApiError::new(crate::error::Reject::RateLimited, message).retry_after(Some(1)).into();
    }
    ApiError::limited(message, d).into()
}

/// Whether this zone scores anonymous requests.
fn scored(screen: &Screen, zone: Zone) -> bool {
    let policy = &screen.edge.config.challenge;
    match zone {
        Zone::Inference => policy.anonymous_inference && screen.anonymous_inference,
        Zone::Auth | Zone::Register | Zone::Login | Zone::Ticket => policy.auth,
        Zone::Challenge => false,
    }
}

/// Stage 5 for anonymous requests: go on (`true` when a clearance was spent), or the
/// refusal.
async fn bot_check(
    screen: &Screen,
    zone: Zone,
    client: &Client,
    headers: &HeaderMap,
    now: Duration,
) -> Result<bool, Stop> {
    let edge = &screen.edge;
    let register_under_attack =
        zone == Zone::Register && edge.under_attack() && edge.config.registration.clearance_under_attack;
    if !scored(screen, zone) && !register_under_attack {
        return Ok(false);
    }
    let verdict = edge.bot_verdict(client, headers, now);
    let mut action = verdict.action;
    if register_under_attack && action < Action::Challenge {
        action = Action::Challenge;
    }
    let reason =
        verdict.reasons.codes().next().unwrap_or(if register_under_attack { "attack_mode" } else { "bot_score" });
    match action {
        Action::Allow => Ok(false),
        Action::Block => {
            edge.metrics.record(EdgeAction::Block, reason);
            edge.audit_sampled(client, now, || {
                let detail = serde_json::json!({"score": verdict.score, "reasons": verdict.reasons.to_string()});
                Event::new("edge", "shield.bot_block", "refused").reason(reason).detail(detail)
            });
            Err(ApiError::new(Reject::Blocked, "this client looks automated and is blocked").into())
        }
        Action::Challenge | Action::Limit => {
            if action == Action::Limit {
                // The strict lane: a suspect pays double at its address and subnet.
                let d = edge.check_source(client, 1, now).await;
                if !d.allowed {
                    edge.metrics.record(EdgeAction::Limit, reason);
                    return Err(ApiError::limited("too many requests from this client", &d).into());
                }
            }
            let presented = headers
                .get(CLEARANCE_HEADER)
                .and_then(|v| v.to_str().ok())
                .or_else(|| cookie(headers, CLEARANCE_COOKIE));
            let failure = match presented {
                None => "no_clearance",
                Some(token) => {
                    let binding = edge.binding(client, headers);
                    match edge.spend_clearance(token, &binding, client, now).await {
                        Ok(_) => return Ok(true),
                        Err(e) => {
                            edge.audit_sampled(client, now, || {
                                Event::new("edge", "shield.clearance", "refused").reason(e.code())
                            });
                            e.code()
                        }
                    }
                }
            };
            edge.metrics.record(EdgeAction::Challenge, failure);
            Err(super::challenge::required(edge, client, headers, verdict.score, failure, now).into())
        }
    }
}
