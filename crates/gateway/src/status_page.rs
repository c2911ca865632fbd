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

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use status::Endpoint;
use tokio::sync::{Mutex, Notify, oneshot};
use tokio::task::JoinHandle;

use crate::error::{ApiError, Reject};
use crate::request::RequestContext;
pub use recorder::{Rendered, StatusSources};

/// The page's shared state: what it reports on, the rendered documents, the
/// per-client limiter, and the recorder that keeps the documents. Nothing is
/// rendered until [`StatusRecorder::start`].
pub struct StatusBoard {
    sources: StatusSources,
    rendered: RwLock<Option<Arc<Rendered>>>,
    limiter: limiter::ClientLimiter,
    recorder: Mutex<recorder::Recorder>,
    /// Wakes the recorder for an immediate re-render (e.g. under-attack mode changed).
    wake: Notify,
}

impl StatusBoard {
    pub fn new(sources: StatusSources) -> StatusBoard {
        StatusBoard {
            limiter: limiter::ClientLimiter::new(&sources.config.rate_limit),
            sources,
            rendered: RwLock::new(None),
            recorder: Mutex::new(recorder::Recorder::default()),
            wake: Notify::new(),
        }
    }

    /// The store the page's incidents and history live in.
    pub fn store(&self) -> &store::Store {
        &self.sources.store
    }

    /// The page's components, in display order.
    pub fn components(&self) -> Vec<recorder::ComponentDef> {
        self.sources.components()
    }

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
    pub async fn refresh(&self) {
        self.tick(false).await;
    }

    async fn tick(&self, sample: bool) {
        let mut recorder = self.recorder.lock().await;
        let rendered = recorder.tick(&self.sources, sample).await;
        self.publish(rendered);
    }

    /// Ask the recorder to re-render soon (it runs [`Self::refresh`]).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The running recorder. [`StatusRecorder::stop`] ends it; dropping it aborts it.
pub struct StatusRecorder {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StatusRecorder {
    /// Configure the board, render the page once (so it is there before the
    /// first request; a store that does not answer within a few seconds does
    /// not hold up serving, the page then answers 503 until the first tick),
    /// then tick every `status.tick_ms` until stopped.
    pub async fn start(board: &Arc<StatusBoard>) -> StatusRecorder {
        if tokio::time::timeout(Duration::from_secs(3), board.refresh()).await.is_err() {
            tracing::warn!("status page: the first render is waiting for the store; serving meanwhile");
        }
        let (stop, mut stopped) = oneshot::channel::<()>();
        let board = Arc::clone(board);
        let period = Duration::from_millis(board.sources.config.tick_ms.max(1));
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = interval.tick() => board.tick(true).await,
                    () = board.wake.notified() => board.refresh().await,
                }
            }
        });
        StatusRecorder { stop: Some(stop), task: Some(task) }
    }

    /// Stop ticking; waits for a tick in progress (at most a few seconds).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for StatusRecorder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The status routes with their rate limit, for any router state `S` that holds the board.
pub fn router<S>(board: Arc<StatusBoard>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/status", get(page))
        .route("/status/badge.svg", get(badge))
        .route("/status/history.atom", get(feed))
        .route("/api/v2/{*path}", get(api))
        .route_layer(middleware::from_fn_with_state(board.clone(), limit))
        .with_state(board)
}

/// The per-client token bucket in front of every status route.
async fn limit(State(board): State<Arc<StatusBoard>>, request: Request, next: Next) -> Response {
    let client = request.extensions().get::<RequestContext>().map(|c| c.client.ip());
    if let Some(ip) = client
        && let limiter::Verdict::Deny { retry_after_s } = board.limiter.check(ip, Instant::now())
    {
        let message = "too many requests for the status page; please slow down";
        return ApiError::new(Reject::RateLimited, message).retry_after(Some(retry_after_s)).into_response();
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
pub async fn page(State(board): State<Arc<StatusBoard>>) -> Response {
    match board.rendered() {
        Some(r) => serve("text/html; charset=utf-8", r.html.clone()),
        None => starting(),
    }
}

/// `GET /status/badge.svg`
pub async fn badge(State(board): State<Arc<StatusBoard>>) -> Response {
    match board.rendered() {
        Some(r) => serve("image/svg+xml", r.badge.clone()),
        None => starting(),
    }
}

/// `GET /status/history.atom`
pub async fn feed(State(board): State<Arc<StatusBoard>>) -> Response {
    match board.rendered() {
        Some(r) => serve("application/atom+xml", r.feed.clone()),
        None => starting(),
    }
}

/// `GET /api/v2/{path}`: the Statuspage v2 public API.
pub async fn api(State(board): State<Arc<StatusBoard>>, Path(path): Path<String>) -> Response {
    let Some(endpoint) = Endpoint::from_path(&path) else {
        return ApiError::new(Reject::NotFound, "no such Statuspage v2 endpoint").into_response();
    };
    match board.rendered() {
        Some(r) => serve("application/json", r.json(endpoint)),
        None => starting(),
    }
}
