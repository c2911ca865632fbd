//! The public status page: `/status` (HTML), `/status/badge.svg`,
//! `/status/history.atom` and the Statuspage v2 JSON API under `/api/v2/`.
//!
//! It is its own cheap lane. The [`recorder`] renders every document after each
//! tick (and at once after an operator's change) into a [`Rendered`] set of
//! byte buffers; handlers hand out a copy of those bytes and never touch the
//! store, an upstream or a renderer. A small per-client token bucket
//! ([`limiter`]) answers `429` with `Retry-After` to anyone polling too fast.
//!
//! Components are Web, API, Login, Registration and one per upstream
//! (`status.components` picks and orders them). Their statuses come from live
//! signals with hysteresis, the registration policy, under-attack mode, active
//! maintenance and operator overrides; changes are recorded in the store and
//! become the 90-day uptime bars.

pub mod hysteresis;
pub mod limiter;
pub mod recorder;
pub mod signals;

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use status::Endpoint;
use tokio::sync::{Mutex, Notify};

use crate::Gateway;
use crate::error::{ApiError, Reject};
use crate::server::ClientAddr;
pub use recorder::StatusRecorder;

/// Every document of the page, rendered once per tick.
#[derive(Debug)]
pub struct Rendered {
    pub html: Bytes,
    pub badge: Bytes,
    pub feed: Bytes,
    /// One per [`Endpoint`], in [`Endpoint::ALL`] order.
    pub json: Vec<Bytes>,
}

impl Rendered {
    pub fn json(&self, endpoint: Endpoint) -> Bytes {
        let index = Endpoint::ALL.iter().position(|e| *e == endpoint).unwrap_or(0);
        self.json.get(index).cloned().unwrap_or_default()
    }
}

/// The page's shared state: the rendered documents, the per-client limiter,
/// and the recorder that keeps both. Empty until [`StatusRecorder::start`].
#[derive(Default)]
pub struct StatusBoard {
    rendered: RwLock<Option<Arc<Rendered>>>,
    limiter: OnceLock<limiter::ClientLimiter>,
    recorder: Mutex<recorder::Recorder>,
    /// Wakes the recorder for an immediate re-render (e.g. under-attack mode changed).
    wake: Notify,
}

impl StatusBoard {
    /// The documents as last rendered; `None` before the first render.
    pub fn rendered(&self) -> Option<Arc<Rendered>> {
        self.rendered.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self, rendered: Rendered) {
        *self.rendered.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(rendered));
    }

    /// Re-derive every status, apply the automatic incidents and re-render now,
    /// without taking a sample of the live signals. Operator changes call this so
    /// the page shows them at once.
    pub async fn refresh(&self, gw: &Gateway) {
        let mut recorder = self.recorder.lock().await;
        recorder.tick(gw, self, false).await;
    }

    /// Ask the recorder to re-render soon (it runs [`Self::refresh`]).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Gateway {
    /// Force under-attack mode on or off (the edge's switch, as `palisade admin
    /// attack` sets it) and re-render the page now. While it is on, Web and API
    /// show degraded performance and an incident tells users what is going on;
    /// leaving it resolves the incident.
    pub fn set_under_attack(&self, on: bool) {
        let switch = if on { crate::edge::AttackSwitch::On } else { crate::edge::AttackSwitch::Off };
        self.edge.force(switch, crate::edge::now());
        self.status.wake();
    }
}

/// The status routes with their rate limit.
pub fn router(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/status", get(page))
        .route("/status/badge.svg", get(badge))
        .route("/status/history.atom", get(feed))
        .route("/api/v2/{*path}", get(api))
        .route_layer(middleware::from_fn_with_state(gateway, limit))
}

/// The per-client token bucket in front of every status route.
async fn limit(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    if let (Some(ip), Some(limiter)) = (client, gw.status.limiter.get())
        && let limiter::Verdict::Deny { retry_after_s } = limiter.check(ip, Instant::now())
    {
        gw.metrics.reject(Reject::RateLimited);
        let error = ApiError {
            reject: Reject::RateLimited,
            message: "too many requests for the status page; please slow down".into(),
            retry_after: Some(retry_after_s),
        };
        return error.for_client(request.headers());
    }
    next.run(request).await
}

static CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=5");

fn serve(content_type: &'static str, bytes: Bytes) -> Response {
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, CACHE_CONTROL.clone());
    response
}

fn starting() -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, "The status page is starting.").into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `GET /status`
pub async fn page(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.status.rendered() {
        Some(r) => serve("text/html; charset=utf-8", r.html.clone()),
        None => starting(),
    }
}

/// `GET /status/badge.svg`
pub async fn badge(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.status.rendered() {
        Some(r) => serve("image/svg+xml", r.badge.clone()),
        None => starting(),
    }
}

/// `GET /status/history.atom`
pub async fn feed(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.status.rendered() {
        Some(r) => serve("application/atom+xml", r.feed.clone()),
        None => starting(),
    }
}

/// `GET /api/v2/{path}`: the Statuspage v2 public API.
pub async fn api(State(gw): State<Arc<Gateway>>, Path(path): Path<String>) -> Response {
    let Some(endpoint) = Endpoint::from_path(&path) else {
        return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "not found"}))).into_response();
    };
    match gw.status.rendered() {
        Some(r) => serve("application/json", r.json(endpoint)),
        None => starting(),
    }
}
