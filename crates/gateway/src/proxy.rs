//! The OpenAI-compatible inference proxy, as named phases over one request:
//!
//! 1. [`Proxy::caller`]: who is asking (from the context the edge filled), whether
//!    they may use `/v1` at all, and their class and trust tier;
//! 2. [`read_body`]: the body, bounded by `max_body_bytes` and paced, then read as
//!    JSON (the model name picks the upstream, and a malformed body should get a
//!    clear 400 from us, not a confusing one from a model server);
//! 3. [`Proxy::screen`]: strikes, the AI guard's verdict on the prompt, the activity
//!    signals, and the operator's system prompt;
//! 4. [`Proxy::budget`]: the account's token budget (and the larger share of its
//!    request rate a less trusted tier pays);
//! 5. [`Proxy::admit`]: a slot toward the upstreams from priority admission;
//! 6. [`Proxy::dispatch`]: an upstream, retried on another only while nothing has
//!    been sent to the client (a connect error, a first-byte timeout, a 502/503/504);
//! 7. the reply relayed frame by frame ([`relay`]), through the leak scanner when a
//!    system prompt was given. Nothing is buffered: a stream's time to first token
//!    is the upstream's.
//!
//! Each phase returns `Result<_, ApiError>`; `?` is the only way out.

pub mod models;
mod relay;
mod usage;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accounts::service::{Accounts, Principal};
use accounts::tier::{TierReason, TrustTier};
use admission::{Admission, AdmissionRequest, Outcome, Permit, PriorityClass, Refusal, RefusalReason};
use axum::body::Body;
use axum::extract::State;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use crate::abuse::Standing;
use crate::audit::Actor;
use crate::config::ProxyConfig;
use crate::edge::Edge;
use crate::error::{ApiError, Reject};
use crate::guard::{AiGuard, Caller, InputVerdict, Protection};
use crate::metrics::Metrics;
use crate::priority::{Placement, PriorityConfig, fairness_key};
use crate::request::{Identity, IdentityError, RequestContext};
use crate::upstream::{ConnError, FailureKind, Outgoing, Tried, Upstream, UpstreamPool, WriteHeaders, h1};

/// The parts the proxy works with.
pub struct Proxy {
    pub config: ProxyConfig,
    pub pool: Arc<UpstreamPool>,
    pub admission: Arc<Admission>,
    /// The token budgets live with the edge's limits.
    pub edge: Arc<Edge>,
    pub guard: Arc<AiGuard>,
    pub priority: PriorityConfig,
    pub anonymous_inference: bool,
    /// Where a day of an account's use is recorded, for its trust tier.
    pub accounts: Arc<Accounts>,
    pub metrics: Arc<Metrics>,
    /// Accounts made together that saturate their limits alike.
    pub cohorts: crate::abuse::cohort::CohortWatch,
}

/// The few request fields the proxy and the guard need, read in one pass
/// borrowing from the body; the rest passes through untouched.
#[derive(Deserialize)]
struct RequestMeta<'a> {
    #[serde(borrow, default)]
    model: Option<BodyStr<'a>>,
    #[serde(borrow, default)]
    messages: Option<aiguard::Messages<'a>>,
    #[serde(borrow, default)]
    prompt: Option<aiguard::Prompt<'a>>,
    // Read leniently: a value of the wrong type is the upstream's to refuse.
    #[serde(default)]
    stream: Option<serde_json::Value>,
    // Only whether it is there (even as `null`): a stream that did not ask for its usage
    // is asked for it (see `usage`), which must not add a second member of that name.
    #[serde(default, rename = "stream_options", deserialize_with = "present")]
    has_stream_options: bool,
    // Read as any value, then checked here: the budget is charged from them.
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
}

impl RequestMeta<'_> {
    fn streamed(&self) -> bool {
        self.stream.as_ref().and_then(serde_json::Value::as_bool) == Some(true)
    }

    /// Tokens the completion may cost: what it asks for, or 256 when unset. A limit
    /// that is not a whole number of tokens is refused here, not charged as a guess.
    fn completion_tokens(&self) -> Result<u32, ApiError> {
        let completion = token_limit("max_completion_tokens", self.max_completion_tokens.as_ref())?;
        let max = token_limit("max_tokens", self.max_tokens.as_ref())?;
        Ok(completion.or(max).map_or(256, |n| n.min(1 << 20) as u32))
    }
}

/// A string borrowed from the body unless it has escapes. A `Cow` field is borrowed only
/// when it is the field's whole type, so an `Option<Cow<str>>` would always be copied.
#[derive(Deserialize)]
struct BodyStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// Any value: the member is there.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// A `max_tokens`-like field: unset (or `null`), or a whole number of tokens.
fn token_limit(field: &'static str, value: Option<&serde_json::Value>) -> Result<Option<u64>, ApiError> {
    use serde_json::Value;
    let what = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) => return Ok(Some(n)),
            None if n.as_i64().is_some() => "a negative number",
            None => "a fraction",
        },
        Some(Value::String(_)) => "a string",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    };
    let message = format!("`{field}` must be a whole number of tokens (0 or more), not {what}");
    Err(ApiError::new(Reject::InvalidType, message).param(field))
}

/// Client headers never forwarded: those that describe one hop (RFC 9110 §7.6.1); the
/// client's credentials and Palisade's own headers (`X-Palisade-Clearance`, `-Pass`),
/// which are Palisade's business and not the upstream's; whatever a client claims about
/// where it comes from (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`: the upstream gets
/// the address the listener resolved instead); and `Accept-Encoding`, so replies come
/// back uncompressed and the leak scanner reads what the client will read.
fn is_not_forwarded(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-palisade-")
        || name.starts_with("x-forwarded-")
        || matches!(name, "forwarded" | "x-real-ip" | "accept-encoding")
        || matches!(
            name,
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "host"
                | "content-length"
                | "authorization"
                | "cookie"
        )
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Who one request is, as the proxy's phases use it.
struct Asker {
    principal: Option<Arc<Principal>>,
    caller: Caller,
    standing: Standing,
}

/// What the body says about the request, once parsed.
struct Asked<'a> {
    /// Borrowed from the request body.
    model: Option<Cow<'a, str>>,
    streamed: bool,
    has_stream_options: bool,
    completion_tokens: u32,
}

/// A request screened and ready to be sent.
struct Outbound {
    body: Bytes,
    protection: Option<Protection>,
    /// The prompt's fingerprint, for cohorts (see `abuse::cohort`).
    prompt: Option<u64>,
}

/// `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` (the document
/// describes the other two in `openapi.rs`: one function, one path).
#[utoipa::path(
    post, path = "/v1/chat/completions", tag = "inference",
    security(("api_key" = []), ("session" = []), ()),
    request_body = crate::schema::ChatCompletionRequest,
    responses(
        (status = 200, description = "The model server's answer; with `stream: true`, server-sent events",
            content((crate::schema::ModelReply = "application/json"), (crate::schema::StreamEvent = "text/event-stream"))),
        crate::schema::E400, crate::schema::E401, crate::schema::E403, crate::schema::E404, crate::schema::E405, crate::schema::E408, crate::schema::E413, crate::schema::E429, crate::schema::E502, crate::schema::E503, crate::schema::E504,
    )
)]
pub async fn forward(State(proxy): State<Arc<Proxy>>, request: Request<Body>) -> Response<Body> {
    match context(request) {
        Ok((ctx, request)) => forward_in(&proxy, ctx, request).await,
        Err(e) => e.into_response(),
    }
}

/// [`forward`] for the listener's direct path, which hands over the context itself.
pub async fn forward_in(proxy: &Proxy, ctx: RequestContext, request: Request<Body>) -> Response<Body> {
    proxy.generate(ctx, request).await.unwrap_or_else(IntoResponse::into_response)
}

impl Proxy {
    async fn generate(&self, ctx: RequestContext, request: Request<Body>) -> Result<Response<Body>, ApiError> {
        let (parts, body) = request.into_parts();
        // The clocks are read once for the request's decisions before it is sent: each
        // read costs about as much as a limiter's check.
        let (wall, mono) = (crate::clock::now(), Instant::now());
        let asker = self.caller(&ctx, mono)?;
        let placement = self.place(&ctx, asker.principal.as_deref(), parts.uri.path(), wall);
        let body = read_body(body, &parts.headers, self.config.max_body_bytes).await?;
        // Checked as UTF-8 once, whole: read from bytes, serde checks each string of the
        // body on its own, a third of the parse of a short chat request. A body that is
        // not UTF-8 is read from bytes for serde's own message.
        let meta = match std::str::from_utf8(&body) {
            Ok(text) => serde_json::from_str::<RequestMeta>(text),
            Err(_) => serde_json::from_slice::<RequestMeta>(&body),
        }
        .map_err(|e| ApiError::new(Reject::InvalidJson, format!("the request body is not a valid JSON object: {e}")))?;
        let asked = Asked {
            model: meta.model.as_ref().map(|m| m.0.clone()),
            streamed: meta.streamed(),
            has_stream_options: meta.has_stream_options,
            completion_tokens: meta.completion_tokens()?,
        };
        let path = parts.uri.path();
        let mut outbound = self.screen(&ctx, path, &asker, meta, &asked, &body, mono).await?;
        let prompt = outbound.prompt;
        let reservation = self
            .budget(&asker, placement, &asked, &outbound, wall)
            .inspect_err(|e| self.watch_cohort(&ctx, &asker, placement, prompt, e))?;
        // A stream reports what it cost only when asked: ask, and hide the answer again.
        let strip = reservation.is_some()
            && asked.streamed
            && self.config.ask_for_usage
            && ctx.route.generates_text()
            && usage::ask_for_usage(&outbound.body, asked.has_stream_options)
                .map(|asked_for| outbound.body = asked_for)
                .is_some();
        let sent = self.send(&parts, &ctx, &asker, placement, &asked, outbound, wall).await;
        let reply = match (sent, reservation) {
            (Ok(reply), Some(r)) => usage::meter(reply, self.edge.clone(), r, asked.streamed, strip),
            (Ok(reply), None) => reply,
            (Err(e), r) => {
                // Nothing was generated: the estimate goes back.
                if let Some(r) = r {
                    r.settle(&self.edge, 0);
                }
                self.watch_cohort(&ctx, &asker, placement, prompt, &e);
                return Err(e);
            }
        };
        Ok(reply)
    }

    /// Phases 5–7: admitted, dispatched, and the reply relayed (through the leak scan
    /// when the operator's system prompt went with it).
    async fn send(
        &self,
        parts: &http::request::Parts,
        ctx: &RequestContext,
        asker: &Asker,
        placement: Placement,
        asked: &Asked<'_>,
        outbound: Outbound,
        now: Duration,
    ) -> Result<Response<Body>, ApiError> {
        let permit = self.admit(asker, placement, now).await?;
        let path = target_path(&parts.uri);
        let headers = UpstreamHeaders { client: &parts.headers, ctx, json: true };
        let reply = self
            .dispatch(http::Method::POST, &path, &headers, &outbound.body, asked.model.as_deref(), Some(permit))
            .await?;
        Ok(match outbound.protection {
            Some(p) => crate::guard::scan_reply(self.guard.clone(), reply, p, asked.streamed, asker.caller).await,
            None => reply,
        })
    }

    /// Phase 1: the caller, from the identity the edge looked up. A refused credential
    /// is anonymous where anonymous inference is served, and a 401 elsewhere.
    fn caller(&self, ctx: &RequestContext, now: Instant) -> Result<Asker, ApiError> {
        let principal = match &ctx.identity {
            Identity::Known(p) => Some(p.clone()),
            Identity::Refused(IdentityError::Unavailable) => {
                return Err(ApiError::credentials_unavailable());
            }
            Identity::Anonymous | Identity::Refused(IdentityError::Invalid) => None,
        };
        let principal = principal.filter(|p| p.has_scope("inference"));
        if principal.is_none() && !self.anonymous_inference {
            return Err(ApiError::new(
                Reject::Unauthenticated,
                "a valid API key with the `inference` scope is required: send `Authorization: Bearer pal_...` \
                 (create one with `palisade keys create`); an account required to use MFA must enrol first",
            ));
        }
        let who = fairness_key(principal.as_deref(), &ctx.client);
        let standing = self.guard.strikes().standing(who, now);
        if standing == Standing::Suspended {
            return Err(ApiError::new(
                Reject::AccountFlagged,
                "this caller is suspended after repeated abuse of the API",
            ));
        }
        let caller = Caller { who, actor: Actor(principal.as_ref().map(|p| p.user_id)) };
        Ok(Asker { principal, caller, standing })
    }

    /// Phase 1 for generation: the request's class and trust tier, counted; an account demoted out of the member
    /// class is sampled into the audit log (once a minute per account).
    fn place(&self, ctx: &RequestContext, principal: Option<&Principal>, path: &str, now: Duration) -> Placement {
        let now_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        let placement = self.priority.place(principal, path, now_ms, self.edge.attack_since());
        if let (Some((tier, reason)), Some(p)) = (placement.trust, principal) {
            self.metrics.tier_decision(tier, reason);
            if matches!(reason, TierReason::CreatedNearAttack | TierReason::Cohort) {
                let (user, ip) = (p.user_id, ctx.client.ip());
                self.edge.audit().sample(shield::Key::account(user as u64), now, || {
                    crate::audit::Event::new(format!("user:{user}"), "tier.demoted", "newcomer")
                        .ip(ip)
                        .reason(reason.as_str())
                        .detail(serde_json::json!({"user": user, "tier": tier.as_str()}))
                });
            }
        }
        placement
    }

    /// A request refused by one of its account's own limits (rate, tokens, requests in
    /// flight) counts toward a cohort; an account that has earned or been given a tier
    /// of its own is not watched. A cohort found is flagged in the background.
    fn watch_cohort(
        &self,
        ctx: &RequestContext,
        asker: &Asker,
        placement: Placement,
        prompt: Option<u64>,
        refusal: &ApiError,
    ) {
        let Some(p) = &asker.principal else { return };
        let own_limit = matches!(refusal.reject, Reject::RateLimited | Reject::AccountBusy);
        let earned = matches!(placement.trust, Some((TrustTier::Established, _)) | Some((_, TierReason::Pinned)))
            || p.tenure.flagged;
        if !own_limit || earned || !self.cohorts.enabled() {
            return;
        }
        let network = crate::abuse::cohort::network(ctx.client.ip());
        let found = self.cohorts.saturated(p.user_id, p.tenure.created_at, network, prompt, Instant::now());
        for cohort in found {
            tracing::warn!(
                accounts = cohort.accounts.len(),
                reason = cohort.reason,
                "a cohort of accounts was flagged"
            );
            let accounts = self.accounts.clone();
            tokio::spawn(async move {
                if let Err(e) = accounts.flag_cohort(&cohort.accounts, cohort.reason, "cohort-detector").await {
                    tracing::warn!(error = %e, "a cohort could not be flagged");
                }
            });
        }
    }

    /// Phase 3: the guard's verdict, the activity signals, and the system prompt.
    async fn screen(
        &self,
        ctx: &RequestContext,
        path: &str,
        asker: &Asker,
        meta: RequestMeta<'_>,
        asked: &Asked<'_>,
        body: &Bytes,
        now: Instant,
    ) -> Result<Outbound, ApiError> {
        let mut outbound = Outbound { body: body.clone(), protection: None, prompt: None };
        if !ctx.route.generates_text() {
            return Ok(outbound);
        }
        let text = aiguard::RequestText { messages: meta.messages, prompt: meta.prompt };
        let semantic = self.guard.semantic_score(&text).await;
        match self.guard.check_input(path, &text, semantic.as_ref(), asker.caller, now) {
            InputVerdict::Pass => {}
            InputVerdict::Slow(delay) => tokio::time::sleep(delay).await,
            InputVerdict::Block(reasons) => {
                let message = format!(
                    "this request looks like an attempt to extract instructions or bypass the model's rules ({})",
                    reasons.join(", ")
                );
                return Err(ApiError::new(Reject::PromptRejected, message));
            }
        }
        let estimate = token_estimate(body.len(), asked.completion_tokens);
        // One fingerprint for the activity signals and, on a refusal, the cohorts.
        outbound.prompt = text.last_user_text().map(crate::abuse::activity::fingerprint);
        self.guard.watch_activity(asker.caller, ctx.client.subnet_digest(), outbound.prompt, estimate, now);
        // Only a request that gets the operator's system prompt needs its body as a
        // tree, to be rewritten; every other one is forwarded byte for byte.
        let model = asked.model.as_deref();
        if self.guard.protects(model)
            && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(p) = self.guard.protect(model, &mut value)
            && let Ok(bytes) = serde_json::to_vec(&value)
        {
            outbound.body = Bytes::from(bytes);
            outbound.protection = Some(p);
        }
        Ok(outbound)
    }

    /// Phase 4: the account's inference budget in tokens: the prompt's size (about
    /// four bytes a token) plus what it asks to generate, charged up front. Anonymous
    /// traffic is held by the edge's per-address limits and by admission instead.
    fn budget(
        &self,
        asker: &Asker,
        placement: Placement,
        asked: &Asked<'_>,
        outbound: &Outbound,
        now: Duration,
    ) -> Result<Option<usage::Reservation>, ApiError> {
        let Some(p) = &asker.principal else { return Ok(None) };
        if !self.edge.enabled() {
            return Ok(None);
        }
        // A tier with a fraction of the budget pays the inverse for every token and request,
        // so one limit table serves every tier.
        let cost = placement.budget_cost(&self.priority.tier_limits);
        let extra_requests = (cost.round() as u32).saturating_sub(1);
        if extra_requests > 0 {
            let decision = self.edge.charge_account(p.user_id as u64, extra_requests, now);
            if !decision.allowed {
                let message = "this account is over its request rate (a recent account gets a smaller share)";
                return Err(ApiError::limited(message, &decision));
            }
        }
        let estimate = token_estimate(outbound.body.len(), asked.completion_tokens);
        let charged = (f64::from(estimate) * cost).ceil().min(f64::from(u32::MAX)) as u32;
        let (decision, in_fleet) = self.edge.spend_tokens(p.user_id as u64, charged, now);
        if !decision.allowed && charged > decision.limit {
            // Waiting would never help: say so with a 400 instead of a 429 without end.
            let message = format!(
                "this request may cost {estimate} tokens (its prompt plus max_tokens {}), more than this account's \
                 whole budget of {} tokens; ask for fewer max_tokens",
                asked.completion_tokens, decision.limit
            );
            return Err(ApiError::new(Reject::ExceedsTokenBudget, message).param("max_tokens"));
        }
        if !decision.allowed {
            let message = "this account has used its inference budget for now (tokens per minute); retry later";
            return Err(ApiError::limited(message, &decision));
        }
        Ok(Some(usage::Reservation {
            account: p.user_id as u64,
            charged,
            completion: asked.completion_tokens,
            cost,
            in_fleet,
        }))
    }

    /// Phase 5: a slot toward the upstreams, by priority class and trust tier. A day of
    /// the account's use is recorded (in the background) once it is admitted.
    async fn admit(&self, asker: &Asker, placement: Placement, now: Duration) -> Result<Permit, ApiError> {
        let Placement { mut class, tier, .. } = placement;
        if asker.standing == Standing::Throttled {
            class = class.max(PriorityClass::Anonymous);
        }
        let request = AdmissionRequest {
            account: Some(asker.caller.who),
            tier,
            max_in_flight: placement.max_in_flight(&self.priority.tier_limits),
            ..AdmissionRequest::new(class)
        };
        let permit = self.admission.acquire(request).await.map_err(|refusal| admission_refusal(&refusal))?;
        if let Some(p) = &asker.principal {
            let now = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
            if self.accounts.first_use_today(p.user_id, now) {
                let (accounts, user) = (self.accounts.clone(), p.user_id);
                tokio::spawn(async move {
                    if let Err(e) = accounts.record_use(user, now).await {
                        tracing::warn!(error = %e, "a day of use could not be recorded");
                    }
                });
            }
        }
        Ok(permit)
    }

    /// Phase 6: an upstream answers, or every one tried failed. The reply is relayed
    /// (phase 7) holding `permit` until its last byte.
    async fn dispatch(
        &self,
        method: http::Method,
        path_and_query: &PathAndQuery,
        headers: &UpstreamHeaders<'_>,
        body: &Bytes,
        model: Option<&str>,
        mut permit: Option<Permit>,
    ) -> Result<Response<Body>, ApiError> {
        let pool = &self.pool;
        let mut tried = Tried::default();
        let mut last_error = None;
        // Whether the last attempt found the model servers saturated (an overload
        // answer, a timeout) rather than broken, for the adaptive limit.
        let mut saturated = false;
        let first_byte_timeout = Duration::from_millis(self.config.first_byte_timeout_ms);
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let sent = std::time::Instant::now();
        for _attempt in 0..self.config.max_attempts {
            let Some((_, in_flight)) = pool.pick(model, &mut tried) else {
                break;
            };
            let upstream = in_flight.upstream.clone();
            let outgoing = Outgoing { method: &method, path_and_query: path_and_query.as_str(), headers, body };
            let send = upstream.conns.send(&outgoing, relay::is_passed_to_client);
            match tokio::time::timeout(first_byte_timeout, send).await {
                Ok(Ok((head, reply))) => {
                    let status = head.status;
                    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                        // A saturated model server answering 503 is working as designed;
                        // other 5xx mean it is broken and should trip the breaker.
                        upstream.record_failure(FailureKind::ServerError, pool.now_ms());
                    } else {
                        upstream.record_success();
                    }
                    if status.is_server_error() {
                        // Its error page can hold tracebacks and internal addresses: it
                        // goes to our log, and the client gets our own error. An overload
                        // answer is tried on another upstream; any other is final.
                        let reply = relay::relay(head, reply, in_flight, idle, pool.now_ms(), None);
                        last_error = Some(upstream_failure(&upstream, reply).await);
                        saturated = matches!(
                            status,
                            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                        );
                        if saturated {
                            continue;
                        }
                        break;
                    }
                    let held = permit.take().map(|p| (p, sent.elapsed()));
                    return Ok(relay::relay(head, reply, in_flight, idle, pool.now_ms(), held));
                }
                Ok(Err(e)) => {
                    saturated = false;
                    upstream.record_failure(FailureKind::Connect, pool.now_ms());
                    tracing::warn!(upstream = %upstream.name, error = %e, "upstream request failed");
                    last_error = Some(match e {
                        ConnError::Protocol(_) => ApiError::new(
                            Reject::UpstreamError,
                            "the model server's answer could not be read; try again shortly",
                        ),
                        _ => ApiError::new(
                            Reject::UpstreamUnavailable,
                            "the model server could not be reached; try again shortly",
                        ),
                    });
                }
                Err(_) => {
                    saturated = true;
                    upstream.record_failure(FailureKind::Timeout, pool.now_ms());
                    tracing::warn!(upstream = %upstream.name, timeout_ms = first_byte_timeout.as_millis() as u64,
                        "upstream did not answer in time");
                    last_error =
                        Some(ApiError::new(Reject::UpstreamTimeout, "the model server did not answer in time"));
                }
            }
        }
        if let Some(permit) = permit {
            // Every attempt failed: tell the limiter whether the model servers are
            // saturated (503, timeouts) or merely broken.
            permit.finish(if saturated { Outcome::Overloaded } else { Outcome::Failed });
        }
        Err(last_error.unwrap_or_else(|| {
            ApiError::new(Reject::NoHealthyUpstream, "no model server is available right now; try again shortly")
        }))
    }
}

/// At most this much of a model server's error answer is logged.
const LOGGED_ERROR_BYTES: usize = 512;

/// A model server's 5xx answer as the client gets it: Palisade's own error, with the
/// upstream's `Retry-After` (bounded) for an overload. The upstream's body goes to the
/// log, bounded, with its API key and any bearer token blanked out.
async fn upstream_failure(upstream: &Upstream, reply: Response<Body>) -> ApiError {
    let status = reply.status();
    let retry_after = reply
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(1, |s| s.clamp(1, 60));
    let secret = upstream.authorization.as_ref().and_then(|v| v.to_str().ok()).map(|v| v.trim_start_matches("Bearer "));
    // The body may never end; the log waits for it only briefly.
    let body = read_prefix(reply.into_body(), LOGGED_ERROR_BYTES + secret.map_or(0, str::len)).await;
    tracing::warn!(
        upstream = %upstream.name,
        status = status.as_u16(),
        body = %log_excerpt(&body, secret),
        "the model server failed a request; the client got Palisade's own error"
    );
    match status {
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::new(Reject::Overloaded, "the model servers are at capacity; try again shortly")
                .retry_after(Some(retry_after))
        }
        StatusCode::GATEWAY_TIMEOUT => {
            ApiError::new(Reject::UpstreamTimeout, "the model server did not answer in time").retry_after(Some(1))
        }
        _ => ApiError::new(Reject::UpstreamError, "the model server failed to answer this request; try again shortly"),
    }
}

/// Up to `limit` bytes of `body`, or what came within two seconds.
async fn read_prefix(body: Body, limit: usize) -> Vec<u8> {
    let mut body = body;
    let mut out = Vec::new();
    let read = async {
        while out.len() < limit {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data[..data.len().min(limit - out.len())]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    out
}

/// What is logged of an upstream's error body: at most [`LOGGED_ERROR_BYTES`], on one
/// line, with `secret` (the upstream's API key) and any bearer token blanked out.
fn log_excerpt(body: &[u8], secret: Option<&str>) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    // Blank the token after every "Bearer " (any case; lower-casing ASCII keeps offsets).
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(at) = lower[from..].find("bearer ") {
        let token = from + at + "bearer ".len();
        out.push_str(&text[from..token]);
        let len = text[token..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';'))
            .unwrap_or(text.len() - token);
        if len > 0 {
            out.push_str("[redacted]");
        }
        from = token + len;
    }
    let rest = &text[from..];
    out.push_str(rest);
    let mut end = out.len().min(LOGGED_ERROR_BYTES);
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The context the listener and the edge filled, taken out of a request that came
/// through a router; always there.
fn context(mut request: Request<Body>) -> Result<(RequestContext, Request<Body>), ApiError> {
    let ctx = request
        .extensions_mut()
        .remove::<RequestContext>()
        .ok_or_else(|| ApiError::new(Reject::Internal, "the request was not resolved by the listener"))?;
    Ok((ctx, request))
}

/// Phase 2: the whole body, bounded and paced.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::new(Reject::BodyTooLarge, too_large_message(limit)));
    }
    // Collected by hand: a body in one frame (nearly every request) is kept as it came,
    // without the list of frames `collect` builds for it.
    let mut body = Limited::new(body, limit);
    let (mut whole, mut joined) = (None::<Bytes>, bytes::BytesMut::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(Reject::BodyTooLarge, too_large_message(limit))
            } else if crate::connections::is_slow_body(&*e) {
                ApiError::new(Reject::BodyTimeout, "the request body arrived too slowly")
            } else {
                ApiError::new(Reject::InvalidRequest, "the request body could not be read")
            }
        })?;
        let Ok(data) = frame.into_data() else { continue };
        match whole.take() {
            None if joined.is_empty() => whole = Some(data),
            earlier => {
                joined.extend_from_slice(earlier.as_deref().unwrap_or_default());
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(whole.unwrap_or_else(|| joined.freeze()))
}

/// The client's headers as the upstream gets them: none of [`is_not_forwarded`], the
/// request id, the client's address as the listener resolved it (`X-Forwarded-For`),
/// and (for a body checked to be JSON) its type. Written straight into each attempt's
/// request, not kept in a map of their own to be copied from.
struct UpstreamHeaders<'a> {
    client: &'a HeaderMap,
    ctx: &'a RequestContext,
    json: bool,
}

impl WriteHeaders for UpstreamHeaders<'_> {
    fn write_headers(&self, out: &mut Vec<u8>) {
        for (name, value) in self.client {
            let replaced = *name == X_REQUEST_ID || (self.json && *name == header::CONTENT_TYPE);
            if !is_not_forwarded(name) && !replaced {
                h1::write_header(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        h1::write_header(out, X_REQUEST_ID.as_str().as_bytes(), self.ctx.id.0.as_bytes());
        write_address(out, self.ctx.client.ip());
        if self.json {
            // The body was checked to be JSON; say so even if the client did not.
            h1::write_header(out, b"content-type", b"application/json");
        }
    }
}

/// The client's path and query, to be sent on (shared with the request, not copied).
fn target_path(uri: &http::Uri) -> PathAndQuery {
    uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// The `X-Forwarded-For` line. IPv4, the usual case, is written by hand: through
/// `Display` and the formatter it cost 1,300 instructions, a sixtieth of the request.
fn write_address(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    // The longest address text is 45 bytes (an IPv6 address ending in an IPv4 one).
    let mut text = [0u8; 45];
    let len = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(octet).as_bytes();
                text[len..len + digits.len()].copy_from_slice(digits);
                len += digits.len();
            }
            len
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            let _ = write!(cursor, "{v6}");
            cursor.position() as usize
        }
    };
    h1::write_header(out, X_FORWARDED_FOR.as_str().as_bytes(), &text[..len]);
}

/// Tokens a request may cost: its body's bytes / 4 (about four bytes a
/// token of prompt) plus the completion it asks for.
fn token_estimate(body_len: usize, completion_tokens: u32) -> u32 {
    u32::try_from(body_len / 4).unwrap_or(u32::MAX).saturating_add(completion_tokens)
}

/// An admission refusal as the client sees it.
fn admission_refusal(refusal: &Refusal) -> ApiError {
    let (reject, message) = match refusal.reason() {
        RefusalReason::AccountLimit => (
            Reject::AccountBusy,
            "this account already has as many requests in flight as it may; wait for one to finish",
        ),
        RefusalReason::TimedOut => (Reject::QueueTimeout, "no model capacity became free in time; try again shortly"),
        RefusalReason::QueueFull | RefusalReason::WouldTimeOut | RefusalReason::Displaced => {
            (Reject::Overloaded, "the service is at capacity for requests like this one; try again shortly")
        }
    };
    ApiError::new(reject, message).retry_after(Some(u32::try_from(refusal.retry_after_secs()).unwrap_or(u32::MAX)))
}

fn too_large_message(limit: usize) -> String {
    format!("the request body is larger than the {limit}-byte limit")
}

/// `405` for a known endpoint called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(Reject::MethodNotAllowed, "this endpoint does not accept that HTTP method")
}

/// `404` for an unknown `/v1` endpoint, in the OpenAI error shape.
pub async fn unknown_endpoint() -> ApiError {
    ApiError::new(Reject::NotFound, "unknown API endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_name_is_borrowed_from_the_body_unless_it_has_escapes() {
        let plain = br#"{"model":"palisade-sim","messages":[]}"#;
        let meta: RequestMeta = serde_json::from_slice(plain).unwrap();
        assert!(matches!(meta.model, Some(BodyStr(Cow::Borrowed("palisade-sim")))));
        let escaped = br#"{"model":"palisade\u002dsim"}"#;
        let meta: RequestMeta = serde_json::from_slice(escaped).unwrap();
        assert_eq!(meta.model.unwrap().0, "palisade-sim");
        let meta: RequestMeta = serde_json::from_slice(br#"{"model":null}"#).unwrap();
        assert!(meta.model.is_none());
        assert!(
            serde_json::from_slice::<RequestMeta>(br#"{"model":7}"#).is_err(),
            "a model that is not a string is a 400"
        );
    }

    #[test]
    fn an_address_header_reads_as_the_address_does() {
        for ip in
            ["0.0.0.0", "1.2.3.4", "10.0.0.255", "127.0.0.1", "192.168.100.9", "255.255.255.255", "::1", "2001:db8::7"]
        {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut line = Vec::new();
            write_address(&mut line, ip);
            assert_eq!(String::from_utf8(line).unwrap(), format!("x-forwarded-for: {ip}\r\n"));
        }
    }
}
