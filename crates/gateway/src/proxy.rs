//! The OpenAI-compatible inference proxy.
//!
//! A request body is read whole (bounded by `max_body_bytes`) and checked to be
//! JSON, because the model name picks the upstream and because a malformed body
//! should get a clear 400 from us, not a confusing one from a model server. The
//! reply is not buffered: its frames are passed on as they arrive, so a stream's
//! time to first token is the upstream's.
//!
//! A request is retried on another upstream only while nothing has been sent to
//! the client: after a connect error, a first-byte timeout, or a 502/503/504.

use std::borrow::Cow;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use admission::{AdmissionRequest, Outcome, Permit, Refusal, RefusalReason};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::time::{Instant, Sleep};

use crate::Gateway;
use crate::error::{ApiError, Reject};
use crate::guard::{Actor, InputVerdict, Standing};
use crate::server::{ClientAddr, RequestId};
use crate::upstream::{Conn, FailureKind, InFlight, Tried};

/// The few request fields the proxy and the guard need, read in one pass
/// borrowing from the body; the rest passes through untouched.
#[derive(Deserialize)]
struct RequestMeta<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Option<aiguard::Messages<'a>>,
    #[serde(borrow, default)]
    prompt: Option<aiguard::Prompt<'a>>,
    // Read leniently: a value of the wrong type is the upstream's to refuse.
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
}

impl RequestMeta<'_> {
    fn streamed(&self) -> bool {
        self.stream.as_ref().and_then(serde_json::Value::as_bool) == Some(true)
    }

    /// Tokens the completion may cost: what it asks for, or 256 when unset.
    fn completion_tokens(&self) -> u32 {
        let asked = |v: &Option<serde_json::Value>| v.as_ref().and_then(serde_json::Value::as_u64);
        let asked = asked(&self.max_completion_tokens).or_else(|| asked(&self.max_tokens));
        asked.map_or(256, |n| n.min(1 << 20) as u32)
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus the
/// client's credentials, which are Palisade's business and not the upstream's.
fn is_not_forwarded(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
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

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    )
}

/// Proxy one `/v1/*` request.
pub async fn forward(State(gw): State<Arc<Gateway>>, request: Request<Body>) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    // Identity first: it decides both whether the request may go on and its
    // priority class. The edge guard already found a valid caller, so take its
    // answer rather than hash the credential again; without one (edge off, no
    // or bad credentials, a store error there) ask here, so errors still surface.
    let found = match parts.extensions.remove::<crate::edge::Identity>() {
        Some(crate::edge::Identity(Some(principal))) => Some(principal),
        _ => match gw.identify(&parts.headers).await {
            Ok(found) => found,
            Err(e) => return crate::auth::account_error(&e),
        },
    };
    let principal = found.filter(|p| p.scopes.iter().any(|s| s == "inference"));
    if principal.is_none() && !gw.config.auth.allow_anonymous_inference {
        return gw.refuse(ApiError::new(
            Reject::Unauthenticated,
            "a valid API key with the `inference` scope is required: send `Authorization: Bearer pal_...` \
             (create one with `palisade keys create`); an account required to use MFA must enrol first",
        ));
    }
    let limit = gw.config.proxy.max_body_bytes;
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return gw.refuse(ApiError::new(Reject::BodyTooLarge, too_large_message(limit)));
    }
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return gw.refuse(ApiError::new(Reject::BodyTooLarge, too_large_message(limit)));
        }
        Err(e) if crate::connections::is_slow_body(&*e) => {
            return gw.refuse(ApiError::new(Reject::BodyTimeout, "the request body arrived too slowly"));
        }
        Err(_) => {
            return gw.refuse(ApiError::new(Reject::InvalidRequest, "the request body could not be read"));
        }
    };

    let meta = if parts.method == http::Method::POST {
        match serde_json::from_slice::<RequestMeta>(&body) {
            Ok(meta) => Some(meta),
            Err(e) => {
                let message = format!("the request body is not a valid JSON object: {e}");
                return gw.refuse(ApiError::new(Reject::InvalidJson, message));
            }
        }
    } else {
        None
    };
    let model = meta.as_ref().and_then(|m| m.model.as_deref().map(str::to_owned));
    let streamed = meta.as_ref().is_some_and(RequestMeta::streamed);
    let completion_tokens = meta.as_ref().map_or(0, RequestMeta::completion_tokens);

    let client = parts.extensions.get::<ClientAddr>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let who = crate::priority::fairness_key(principal.as_ref(), client);
    let standing = gw.strikes().standing(who);
    if standing == Standing::Suspended {
        return gw.refuse_for(
            ApiError::new(Reject::AccountFlagged, "this caller is suspended after repeated abuse of the API"),
            &parts.headers,
        );
    }
    let path = parts.uri.path();
    let actor = Actor(principal.as_ref().map(|p| p.user_id));
    let generates = matches!(path, "/v1/chat/completions" | "/v1/completions");
    if let (Some(meta), true) = (meta, generates) {
        let text = aiguard::RequestText { messages: meta.messages, prompt: meta.prompt };
        match gw.guard.check_input(&gw, path, &text, who, actor) {
            InputVerdict::Pass => {}
            InputVerdict::Slow(delay) => tokio::time::sleep(delay).await,
            InputVerdict::Block(reasons) => {
                let message = format!(
                    "this request looks like an attempt to extract instructions or bypass the model's rules ({})",
                    reasons.join(", ")
                );
                return gw.refuse_for(ApiError::new(Reject::PromptRejected, message), &parts.headers);
            }
        }
        let subnet = crate::priority::fairness_key(None, client);
        let account = principal.as_ref().map(|p| p.user_id);
        let estimate = token_estimate(body.len(), completion_tokens);
        gw.guard.watch_activity(&gw, who, subnet, account, &text, estimate, actor);
    }
    // Only a request that gets the operator's system prompt needs its body as
    // a tree, to be rewritten; every other one is forwarded byte for byte.
    let mut body = body;
    let mut protection = None;
    if parts.method == http::Method::POST
        && generates
        && gw.guard.protects(model.as_deref())
        && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(p) = gw.guard.protect(model.as_deref(), &mut value)
        && let Ok(bytes) = serde_json::to_vec(&value)
    {
        body = Bytes::from(bytes);
        protection = Some(p);
    }

    // The account's inference budget in tokens: the prompt's size (about four
    // bytes a token) plus what it asks to generate, charged up front. Anonymous
    // traffic is held by the edge's per-address limits and by admission instead.
    if let (Some(p), true) = (&principal, parts.method == http::Method::POST && gw.edge.enabled()) {
        let estimate = token_estimate(body.len(), completion_tokens);
        let decision = gw.edge.limits.check_tokens(p.user_id as u64, estimate, crate::edge::now());
        if !decision.allowed {
            return crate::edge::guard::rate_limited(
                &gw,
                &decision,
                &parts.headers,
                "this account has used its inference budget for now (tokens per minute); retry later",
            );
        }
    }

    // Only generation costs the model servers anything; listing models does not queue.
    let mut permit = if parts.method == http::Method::POST {
        let mut class = gw.config.priority.classify(principal.as_ref(), path);
        if standing == Standing::Throttled {
            class = class.max(admission::PriorityClass::Anonymous);
        }
        let request = AdmissionRequest { account: Some(who), ..AdmissionRequest::new(class) };
        match gw.admission.acquire(request).await {
            Ok(permit) => Some(permit),
            Err(refusal) => return gw.refuse_for(admission_refusal(&refusal), &parts.headers),
        }
    } else {
        None
    };

    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
    for (name, value) in &parts.headers {
        if !is_not_forwarded(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(id) = &request_id {
        headers.insert(HeaderName::from_static("x-request-id"), id.clone());
    }
    if parts.method == http::Method::POST {
        // The body was checked to be JSON; say so even if the client did not.
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }

    let pool = &gw.pool;
    let mut tried = Tried::default();
    let mut last: Option<Response<Body>> = None;
    let mut last_error = None;
    let first_byte_timeout = Duration::from_millis(gw.config.proxy.first_byte_timeout_ms);
    let sent = std::time::Instant::now();
    for _attempt in 0..gw.config.proxy.max_attempts {
        let Some((_, in_flight)) = pool.pick(model.as_deref(), &mut tried) else {
            break;
        };
        let upstream = in_flight.upstream.clone();
        let Ok(uri) = upstream.base.target(path_and_query) else {
            last_error = Some(ApiError::new(Reject::InvalidRequest, "the request path cannot be forwarded"));
            break;
        };
        let mut builder = http::Request::builder().method(parts.method.clone()).uri(uri);
        if let Some(h) = builder.headers_mut() {
            h.clone_from(&headers);
            h.insert(header::HOST, upstream.host.clone());
            if let Some(auth) = &upstream.authorization {
                h.insert(header::AUTHORIZATION, auth.clone());
            }
        }
        let Ok(upstream_request) = builder.body(Full::new(body.clone())) else {
            last_error = Some(ApiError::new(Reject::InvalidRequest, "the request cannot be forwarded"));
            break;
        };

        match tokio::time::timeout(first_byte_timeout, upstream.conns.send(upstream_request)).await {
            Ok(Ok((response, conn))) => {
                let status = response.status();
                let overloaded = matches!(
                    status,
                    StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                );
                if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                    // A saturated model server answering 503 is working as designed;
                    // other 5xx mean it is broken and should trip the breaker.
                    upstream.record_failure(FailureKind::ServerError, pool.now_ms());
                } else {
                    upstream.record_success();
                }
                if overloaded {
                    last = Some(relay(response, conn, in_flight, &gw, request_id.as_ref(), None));
                    continue;
                }
                let held = permit.take().map(|p| (p, sent.elapsed()));
                let reply = relay(response, conn, in_flight, &gw, request_id.as_ref(), held);
                return match protection {
                    Some(p) => crate::guard::scan_reply(gw.clone(), reply, p, streamed, who, actor).await,
                    None => reply,
                };
            }
            Ok(Err(e)) => {
                upstream.record_failure(FailureKind::Connect, pool.now_ms());
                tracing::warn!(upstream = %upstream.name, error = %e, "upstream request failed");
                last_error = Some(ApiError::new(
                    Reject::UpstreamUnavailable,
                    "the model server could not be reached; try again shortly",
                ));
            }
            Err(_) => {
                upstream.record_failure(FailureKind::Timeout, pool.now_ms());
                tracing::warn!(upstream = %upstream.name, timeout_ms = first_byte_timeout.as_millis() as u64,
                    "upstream did not answer in time");
                last_error = Some(ApiError::new(Reject::UpstreamTimeout, "the model server did not answer in time"));
            }
        }
    }
    if let Some(permit) = permit {
        // Every attempt failed: tell the limiter whether the model servers are
        // saturated (503, timeouts) or merely broken.
        let saturated =
            last.is_some() || last_error.as_ref().is_some_and(|e| matches!(e.reject, Reject::UpstreamTimeout));
        permit.finish(if saturated { Outcome::Overloaded } else { Outcome::Failed });
    }
    if let Some(reply) = last {
        return reply;
    }
    let error = last_error.unwrap_or_else(|| {
        ApiError::new(Reject::NoHealthyUpstream, "no model server is available right now; try again shortly")
    });
    gw.refuse(error)
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
    let mut error = ApiError::new(reject, message);
    error.retry_after = Some(u32::try_from(refusal.retry_after_secs()).unwrap_or(u32::MAX));
    error
}

fn too_large_message(limit: usize) -> String {
    format!("the request body is larger than the {limit}-byte limit")
}

/// Turn an upstream response into the client's response, streaming its body.
fn relay(
    response: http::Response<Incoming>,
    conn: Conn,
    in_flight: InFlight,
    gw: &Gateway,
    request_id: Option<&HeaderValue>,
    permit: Option<(Permit, Duration)>,
) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    parts.headers.retain_not(is_hop_by_hop);
    if let Some(id) = request_id {
        parts.headers.insert(HeaderName::from_static("x-request-id"), id.clone());
    }
    let idle = Duration::from_millis(gw.config.proxy.idle_timeout_ms);
    let body = RelayBody {
        inner: body,
        conn: Some(conn),
        held: None,
        idle,
        idle_timer: Box::pin(tokio::time::sleep(idle)),
        now_ms: gw.pool.now_ms(),
        in_flight,
        permit,
    };
    Response::from_parts(parts, Body::new(body))
}

/// Remove every header for which `drop` is true (a `HeaderMap` has no `retain`).
trait RetainNot {
    fn retain_not(&mut self, drop: fn(&HeaderName) -> bool);
}

impl RetainNot for HeaderMap {
    fn retain_not(&mut self, drop: fn(&HeaderName) -> bool) {
        let doomed: Vec<HeaderName> = self.keys().filter(|name| drop(name)).cloned().collect();
        for name in doomed {
            self.remove(name);
        }
    }
}

/// Why a relayed reply was cut short.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("the model server sent nothing for {0:?}")]
    Idle(Duration),
    #[error("the model server's reply broke off: {0}")]
    Upstream(#[from] hyper::Error),
}

/// The upstream's reply body on its way to the client. It holds the upstream's
/// in-flight slot and the connection, so dropping it (the client went away)
/// releases the slot and closes the upstream connection, which stops generation
/// there. A reply read to the end gives its connection back to the upstream's pool.
struct RelayBody {
    inner: Incoming,
    /// Driven here while the body waits, so what the upstream sent in one read
    /// goes to the client in one frame; `None` once finished or given back.
    conn: Option<Conn>,
    /// What followed the data merged into the last frame, passed on next.
    held: Option<Result<Frame<Bytes>, hyper::Error>>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    now_ms: u64,
    in_flight: InFlight,
    /// The admission slot and the time to first byte, reported when the reply
    /// is complete; dropped (the client went away) it counts as cancelled.
    permit: Option<(Permit, Duration)>,
}

impl RelayBody {
    fn finish(&mut self, outcome: impl FnOnce(Duration) -> Outcome) {
        if let Some((permit, ttfb)) = self.permit.take() {
            permit.finish(outcome(ttfb));
        }
    }

    /// The reply arrived whole: report it and give the connection back.
    fn complete(&mut self) {
        self.finish(|latency| Outcome::Success { latency });
        if let Some(conn) = self.conn.take() {
            self.in_flight.upstream.conns.put(conn);
        }
    }
}

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = RelayError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        let this = self.get_mut();
        let conn = &mut this.conn;
        let polled = poll_coalesced(Pin::new(&mut this.inner), &mut this.held, cx, |cx| {
            if let Some(conn) = conn.as_mut() {
                let _ = conn.drive(cx);
            }
        });
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() && this.held.is_none() {
                    // hyper may not poll again after the last frame.
                    this.complete();
                } else {
                    this.idle_timer.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.in_flight.upstream.record_failure(FailureKind::Stream, this.now_ms);
                this.finish(|_| Outcome::Failed);
                this.conn = None;
                Poll::Ready(Some(Err(RelayError::Upstream(e))))
            }
            Poll::Ready(None) => {
                this.complete();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle_timer.as_mut().poll(cx).is_ready() {
                    this.in_flight.upstream.record_failure(FailureKind::Timeout, this.now_ms);
                    this.finish(|_| Outcome::Overloaded);
                    this.conn = None;
                    tracing::warn!(upstream = %this.in_flight.upstream.name, "upstream stream idle; cut");
                    return Poll::Ready(Some(Err(RelayError::Idle(this.idle))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// At most this much is merged into one frame; the rest goes in the next.
const MAX_MERGED: usize = 64 * 1024;

/// Poll `body` for everything it has ready now and merge its data frames into
/// one, calling `drive` (which may make more ready: it moves the connection
/// the body comes from) whenever the body has nothing. Nothing waits to be
/// merged: a lone frame is returned as soon as the body and `drive` have
/// nothing more, so a stream's latency is unchanged while a burst of events
/// that arrived in one read leaves in one write. A trailers frame or an error
/// that follows merged data is kept in `held` and returned by the next call.
fn poll_coalesced<B>(
    mut body: Pin<&mut B>,
    held: &mut Option<Result<Frame<Bytes>, B::Error>>,
    cx: &mut Context<'_>,
    mut drive: impl FnMut(&mut Context<'_>),
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
where
    B: http_body::Body<Data = Bytes>,
{
    if let Some(next) = held.take() {
        return Poll::Ready(Some(next));
    }
    let mut merged = Merged::Empty;
    let mut drove = false;
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                drove = false;
                match frame.into_data() {
                    Ok(data) => {
                        merged.push(data);
                        if body.is_end_stream() || merged.len() >= MAX_MERGED {
                            break;
                        }
                    }
                    Err(other) if merged.is_empty() => return Poll::Ready(Some(Ok(other))),
                    Err(other) => {
                        *held = Some(Ok(other));
                        break;
                    }
                }
            }
            Poll::Ready(Some(Err(e))) if merged.is_empty() => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Err(e))) => {
                *held = Some(Err(e));
                break;
            }
            Poll::Ready(None) => break,
            Poll::Pending if !drove => {
                drove = true;
                drive(cx);
            }
            Poll::Pending if merged.is_empty() => return Poll::Pending,
            Poll::Pending => break,
        }
    }
    Poll::Ready(merged.into_bytes().map(|data| Ok(Frame::data(data))))
}

/// Data frames merged so far: one is passed as it is, several are copied once.
enum Merged {
    Empty,
    One(Bytes),
    Many(bytes::BytesMut),
}

impl Merged {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Merged::Empty) {
            Merged::Empty => Merged::One(data),
            Merged::One(first) => {
                let mut many = bytes::BytesMut::with_capacity((first.len() + data.len()).max(4096));
                many.extend_from_slice(&first);
                many.extend_from_slice(&data);
                Merged::Many(many)
            }
            Merged::Many(mut many) => {
                many.extend_from_slice(&data);
                Merged::Many(many)
            }
        };
    }

    fn len(&self) -> usize {
        match self {
            Merged::Empty => 0,
            Merged::One(b) => b.len(),
            Merged::Many(b) => b.len(),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Merged::Empty)
    }

    fn into_bytes(self) -> Option<Bytes> {
        match self {
            Merged::Empty => None,
            Merged::One(b) => Some(b),
            Merged::Many(b) => Some(b.freeze()),
        }
    }
}

/// `405` for a known endpoint called with the wrong method.
pub async fn method_not_allowed(gw: State<Arc<Gateway>>) -> Response<Body> {
    gw.refuse(ApiError::new(Reject::MethodNotAllowed, "this endpoint does not accept that HTTP method"))
}

/// `404` for an unknown `/v1` endpoint, in the OpenAI error shape.
pub async fn unknown_endpoint(gw: State<Arc<Gateway>>) -> Response<Body> {
    gw.refuse(ApiError::new(Reject::NotFound, "unknown API endpoint"))
}

impl Gateway {
    /// Count a refusal and turn it into a JSON response.
    pub fn refuse(&self, error: ApiError) -> Response<Body> {
        self.metrics.reject(error.reject);
        error.into_response()
    }

    /// Count a refusal and answer it as a page for browsers, JSON for the rest.
    pub fn refuse_for(&self, error: ApiError, request_headers: &HeaderMap) -> Response<Body> {
        self.metrics.reject(error.reject);
        error.for_client(request_headers)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A body that plays back a script: data, "nothing ready yet", trailers, an error.
    enum Step {
        Data(&'static str),
        Pending,
        Trailers,
        Error,
    }

    struct Script(VecDeque<Step>);

    impl http_body::Body for Script {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(s)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))),
                Some(Step::Pending) => Poll::Pending,
                Some(Step::Trailers) => Poll::Ready(Some(Ok(Frame::trailers(HeaderMap::new())))),
                Some(Step::Error) => Poll::Ready(Some(Err("broke"))),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// Every answer of `poll_coalesced` until the script ends, as text
    /// (`Pending`, `trailers`, `error`), and how often it drove the connection.
    fn play(steps: Vec<Step>) -> (Vec<String>, usize) {
        let mut body = Script(steps.into());
        let mut held = None;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut drives = 0;
        let mut out = Vec::new();
        loop {
            let answer = match poll_coalesced(Pin::new(&mut body), &mut held, &mut cx, |_| drives += 1) {
                Poll::Pending => "Pending".to_owned(),
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(e))) => e.to_owned(),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => String::from_utf8(data.to_vec()).unwrap(),
                    Err(_) => "trailers".to_owned(),
                },
            };
            out.push(answer);
        }
        (out, drives)
    }

    #[test]
    fn frames_already_ready_leave_as_one() {
        use Step::*;
        let (out, drives) = play(vec![Data("a"), Data("b"), Data("c"), Pending, Pending, Data("d")]);
        assert_eq!(out, ["abc", "d"]);
        assert_eq!(drives, 1);
    }

    #[test]
    fn a_lone_frame_is_passed_at_once() {
        use Step::*;
        // After "a" the body and the connection have nothing: "a" goes now, not
        // with "b", which arrives later.
        let (out, _) = play(vec![Data("a"), Pending, Pending, Pending, Pending, Data("b")]);
        assert_eq!(out, ["a", "Pending", "b"]);
    }

    #[test]
    fn what_driving_the_connection_makes_ready_is_merged() {
        use Step::*;
        // The first `Pending` is answered by driving the connection, after which
        // the next event is there.
        let (out, drives) = play(vec![Data("a"), Pending, Data("b"), Pending, Data("c"), Pending, Pending]);
        assert_eq!(out, ["abc"]);
        assert_eq!(drives, 3);
    }

    #[test]
    fn trailers_and_errors_after_data_come_next() {
        use Step::*;
        assert_eq!(play(vec![Data("a"), Data("b"), Trailers]).0, ["ab", "trailers"]);
        assert_eq!(play(vec![Data("a"), Error]).0, ["a", "broke"]);
        assert_eq!(play(vec![Error]).0, ["broke"]);
    }

    #[test]
    fn merging_stops_at_the_cap() {
        let big: &'static str = Box::leak("x".repeat(MAX_MERGED / 2 + 1).into_boxed_str());
        let (out, _) = play(vec![Step::Data(big), Step::Data(big), Step::Data("tail")]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 2 * big.len());
        assert_eq!(out[1], "tail");
    }

    #[test]
    fn streamed_bytes_are_unchanged_however_they_are_merged() {
        let events: Vec<String> = (0..40)
            .map(|i| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"token {i}\"}}}}]}}\n\n"))
            .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
            .collect();
        let expected: String = events.concat();
        for pattern in 1..8usize {
            let mut steps = Vec::new();
            for (i, event) in events.iter().enumerate() {
                steps.push(Step::Data(Box::leak(event.clone().into_boxed_str())));
                if i % pattern == 0 {
                    steps.extend([Step::Pending, Step::Pending]);
                }
            }
            let (out, _) = play(steps);
            let joined: String = out.iter().filter(|s| *s != "Pending").map(String::as_str).collect();
            assert_eq!(joined, expected, "pattern {pattern}");
        }
    }
}
