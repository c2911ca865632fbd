//! The edge middleware: see the module documentation of [`crate::edge`] for the order.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shield::{Action, BotVerdict, Decision, RequestSignals, Verdict};

use super::metrics::EdgeAction;
use super::{CLEARANCE_COOKIE, CLEARANCE_HEADER, ClientIp, Edge, Identity, audit_later, now};
use crate::Gateway;
use crate::auth::{SESSION_COOKIE, cookie};
use crate::error::{ApiError, Reject};
use crate::server::ClientAddr;

/// Which part of the site a request is for; also its route-limit name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Zone {
    Inference,
    Auth,
    Register,
    Login,
    Ticket,
    Challenge,
}

impl Zone {
    pub(crate) fn of(path: &str) -> Option<Zone> {
        Some(match path {
            "/auth/register" => Zone::Register,
            "/auth/login" => Zone::Login,
            "/auth/register/ticket" => Zone::Ticket,
            "/challenge" => Zone::Challenge,
            p if p.starts_with("/v1/") => Zone::Inference,
            p if p.starts_with("/auth/") => Zone::Auth,
            _ => return None,
        })
    }

    pub(crate) fn route(self) -> &'static str {
        match self {
            Zone::Inference => "inference",
            Zone::Auth => "auth",
            Zone::Register => "register",
            Zone::Login => "login",
            Zone::Ticket => "ticket",
            Zone::Challenge => "challenge",
        }
    }
}

/// The edge guard. Applied to the whole router; passes through everything outside
/// `/v1/*`, `/auth/*` and `/challenge` untouched.
pub async fn guard(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    screened(&gw, request, |request| next.run(request)).await
}

/// The edge's checks around `handler`: the middleware above, and the server's
/// direct path to the inference proxy (`server::direct`), which skips the
/// router but not this.
pub(crate) async fn screened<F, Fut>(gw: &Arc<Gateway>, mut request: Request, handler: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let edge = &gw.edge;
    let Some(zone) = Zone::of(request.uri().path()).filter(|_| edge.enabled()) else {
        return handler(request).await;
    };
    let Some(peer) = request.extensions().get::<ClientAddr>().map(|a| a.0.ip()) else {
        return handler(request).await;
    };
    let now = now();
    let ip = edge.client_ip(peer, request.headers());
    request.extensions_mut().insert(ClientIp(ip));

    // 1. Block and allow lists.
    let allow_listed = match edge.lookup(ip, now) {
        Verdict::Blocked { rule, .. } => {
            edge.metrics.record(EdgeAction::Block, "blocklist");
            if edge.audit_allowed(ip, now) {
                audit_later(gw, "shield.block", "refused", Some(ip), "blocklist".into(), Some(rule_detail(rule)));
            }
            let error = ApiError::new(Reject::Blocked, "requests from your network are blocked");
            return refuse(gw, error, request.headers());
        }
        Verdict::Allowed { .. } => true,
        Verdict::Unlisted => false,
    };

    // 2. Per-address and per-subnet limits.
    let source = edge.limits.check_source(ip, now);
    if !source.allowed {
        edge.metrics.record(EdgeAction::Limit, "source_limit");
        return rate_limited(gw, &source, request.headers(), "too many requests from your address or network");
    }

    // 3. Identity, once.
    let principal =
        if has_credentials(request.headers()) { gw.identify(request.headers()).await.ok().flatten() } else { None };

    let mut verdict_reason = if allow_listed { "allow_listed" } else { "passed" };
    if let Some(p) = &principal {
        // 4. Identified: per-key and per-account limits; never scored or challenged.
        if let Some(prefix) = &p.key_prefix {
            let d = edge.check_key(prefix, p.rpm_limit, now);
            if !d.allowed {
                edge.metrics.record(EdgeAction::Limit, "api_key_limit");
                return rate_limited(gw, &d, request.headers(), "this API key is over its request rate");
            }
        }
        let d = edge.limits.check_account(p.user_id as u64, now);
        if !d.allowed {
            edge.metrics.record(EdgeAction::Limit, "account_limit");
            return rate_limited(gw, &d, request.headers(), "this account is over its request rate");
        }
        verdict_reason = "identified";
    } else if !allow_listed {
        // 5. Anonymous: attack-mode price, bot score, clearance.
        if edge.under_attack() {
            let d = edge.limits.check_source(ip, now);
            if !d.allowed {
                edge.metrics.record(EdgeAction::Limit, "under_attack");
                return rate_limited(gw, &d, request.headers(), "too many requests while the service is under attack");
            }
        }
        match bot_check(gw, zone, ip, request.headers(), now) {
            Ok(true) => verdict_reason = "cleared",
            Ok(false) => {}
            Err(refusal) => return refusal,
        }
    }

    // 6. Route limits; registration may go to the waiting room.
    let account = principal.as_ref().map(|p| p.user_id as u64);
    if zone == Zone::Register && request.method() == Method::POST {
        match super::waiting::admit_registration(gw, ip, request.headers(), now) {
            Ok(reason) => verdict_reason = reason,
            Err(response) => return response,
        }
    } else {
        let d = edge.check_route(zone.route(), ip, account, now);
        if !d.allowed {
            edge.metrics.record(EdgeAction::Limit, "route_limit");
            return rate_limited(gw, &d, request.headers(), "too many requests to this endpoint");
        }
    }
    edge.metrics.record(EdgeAction::Allow, verdict_reason);

    let is_post = request.method() == Method::POST;
    // Handed on only now, so the checks above borrow it instead of a copy.
    request.extensions_mut().insert(Identity(principal));
    let response = handler(request).await;
    // 7. Signals for the attack detector and the bot score.
    match (zone, response.status()) {
        (Zone::Register, StatusCode::CREATED) if is_post => edge.count_signup(ip, now),
        (Zone::Login, StatusCode::UNAUTHORIZED) if is_post => edge.count_login_failure(),
        _ => {}
    }
    response
}

fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(axum::http::header::AUTHORIZATION) || cookie(headers, SESSION_COOKIE).is_some()
}

fn rule_detail(rule: shield::Cidr) -> serde_json::Value {
    serde_json::json!({"rule": rule.to_string()})
}

/// Whether this zone scores anonymous requests.
fn scored(gw: &Gateway, zone: Zone) -> bool {
    let policy = &gw.edge.config.challenge;
    match zone {
        Zone::Inference => policy.anonymous_inference && gw.config.auth.allow_anonymous_inference,
        Zone::Auth | Zone::Register | Zone::Login | Zone::Ticket => policy.auth,
        Zone::Challenge => false,
    }
}

/// The bot score for this request (the per-source meters are updated).
pub(crate) fn bot_verdict(edge: &Edge, ip: IpAddr, headers: &HeaderMap, https: bool, now: Duration) -> BotVerdict {
    let pairs = headers.iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap_or("")));
    let mut signals = RequestSignals::from_headers(pairs, https);
    signals.timing = Some(edge.timing_of(ip, now));
    signals.failed_challenges = edge.failures_of(ip, now);
    signals.subnet_signups_per_hour = edge.signups_of(ip, now);
    shield::score(&signals, &edge.config.bot)
}

/// Stage 5 for anonymous requests: go on (`true` when a clearance was spent), or the
/// refusal.
fn bot_check(gw: &Gateway, zone: Zone, ip: IpAddr, headers: &HeaderMap, now: Duration) -> Result<bool, Response> {
    let edge = &gw.edge;
    let register_under_attack =
        zone == Zone::Register && edge.under_attack() && edge.config.registration.clearance_under_attack;
    if !scored(gw, zone) && !register_under_attack {
        return Ok(false);
    }
    let verdict = bot_verdict(edge, ip, headers, gw.config.auth.cookie_secure, now);
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
            if edge.audit_allowed(ip, now) {
                let detail = serde_json::json!({"score": verdict.score, "reasons": verdict.reasons.to_string()});
                audit_later(gw, "shield.bot_block", "refused", Some(ip), reason.into(), Some(detail));
            }
            Err(refuse(gw, ApiError::new(Reject::Blocked, "this client looks automated and is blocked"), headers))
        }
        Action::Challenge | Action::Limit => {
            if action == Action::Limit {
                // The strict lane: a suspect pays double at its address and subnet.
                let d = edge.limits.check_source(ip, now);
                if !d.allowed {
                    edge.metrics.record(EdgeAction::Limit, reason);
                    return Err(rate_limited(gw, &d, headers, "too many requests from this client"));
                }
            }
            let presented = headers
                .get(CLEARANCE_HEADER)
                .and_then(|v| v.to_str().ok())
                .or_else(|| cookie(headers, CLEARANCE_COOKIE));
            let failure = match presented {
                None => "no_clearance",
                Some(token) => {
                    let binding = edge.binding(ip, headers);
                    match edge.spend_clearance(token, &binding, ip, now) {
                        Ok(_) => return Ok(true),
                        Err(e) => {
                            if edge.audit_allowed(ip, now) {
                                audit_later(gw, "shield.clearance", "refused", Some(ip), e.code().into(), None);
                            }
                            e.code()
                        }
                    }
                }
            };
            edge.metrics.record(EdgeAction::Challenge, failure);
            gw.metrics.reject(Reject::ChallengeRequired);
            Err(super::challenge::challenge_response(gw, ip, headers, verdict.score, failure, now))
        }
    }
}

/// A 403/404-style refusal: counted, JSON or a page.
pub(crate) fn refuse(gw: &Gateway, error: ApiError, headers: &HeaderMap) -> Response {
    gw.metrics.reject(error.reject);
    error.for_client(headers)
}

/// 429 with `RateLimit-*` and `Retry-After`.
pub(crate) fn rate_limited(gw: &Gateway, d: &Decision, headers: &HeaderMap, message: &'static str) -> Response {
    gw.metrics.reject(Reject::RateLimited);
    let mut error = ApiError::new(Reject::RateLimited, message);
    error.retry_after = None;
    let mut response = error.for_client(headers);
    for (name, value) in d.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response.into_response()
}
