//! What the gateway knows about one request, worked out once and carried with it:
//! its id, the resolved [`Client`], its [`Route`], and (once the edge has looked) who
//! sent it ([`Identity`]). The listener builds a [`RequestContext`]; every later stage
//! reads it instead of looking at the socket, the path or the credentials again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use accounts::service::Principal;
use axum::extract::FromRequestParts;
use http::HeaderValue;
use http::request::Parts;
use shield::Client;

use crate::error::{ApiError, Reject};

/// The id of one request, echoed in `x-request-id` and in every log line about it.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// Makes request ids: a per-process random prefix and a counter, so ids are
/// unique across restarts without a random draw per request.
pub struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        RequestIds { prefix: nanos ^ std::process::id().rotate_left(16), next: AtomicU64::new(1) }
    }

    /// The next id as a header value. Ids are cut from a per-thread block of 128 (shared
    /// like `Bytes`), not allocated one by one: each request's id is cloned into its
    /// context and its answer, and a `Bytes` of its own would cost two allocations.
    pub fn next(&self) -> HeaderValue {
        thread_local! {
            static BLOCK: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
        }
        let mut buf = [0u8; 25];
        let id = self.next_into(&mut buf);
        let shared = BLOCK.with_borrow_mut(|block| {
            if block.capacity() < id.len() {
                *block = bytes::BytesMut::with_capacity(id.len() * 128);
            }
            block.extend_from_slice(id);
            block.split_to(id.len()).freeze()
        });
        HeaderValue::from_maybe_shared(shared).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// The next id, written into `buf`: for answers written without a header map.
    pub fn next_into<'b>(&self, buf: &'b mut [u8; 25]) -> &'b [u8] {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        hex_id(buf, self.prefix, n);
        buf
    }
}

fn hex_id(buf: &mut [u8; 25], prefix: u32, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..8 {
        buf[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf[8] = b'-';
    for i in 0..16 {
        buf[9 + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Which endpoint a request is for, from its path alone (the method is the handler's
/// business). Also the `route` label of the request metrics, so it is a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    /// Any other path under `/v1/`.
    ApiOther,
    Register,
    Login,
    /// `GET /auth/register/ticket`: the waiting room.
    Ticket,
    /// Any other path under `/auth/`.
    Auth,
    Challenge,
    /// The status page and its Statuspage v2 API.
    Status,
    Admin,
    Healthz,
    Readyz,
    Metrics,
    /// Everything else: web pages, unknown paths.
    Other,
}

/// The part of the site a request is for, as the edge guards it; also the name its
/// route limits are configured under (`[[shield.limits.routes]] route = "…"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    Inference,
    Auth,
    Register,
    Login,
    Ticket,
    Challenge,
}

impl Zone {
    pub const ALL: [Zone; 6] =
        [Zone::Inference, Zone::Auth, Zone::Register, Zone::Login, Zone::Ticket, Zone::Challenge];

    /// The route-limit name.
    pub fn name(self) -> &'static str {
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

impl Route {
    pub const ALL: [Route; 16] = [
        Route::ChatCompletions,
        Route::Completions,
        Route::Embeddings,
        Route::Models,
        Route::ApiOther,
        Route::Register,
        Route::Login,
        Route::Ticket,
        Route::Auth,
        Route::Challenge,
        Route::Status,
        Route::Admin,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Other,
    ];

    pub fn of(path: &str) -> Route {
        match path {
            "/v1/chat/completions" => Route::ChatCompletions,
            "/v1/completions" => Route::Completions,
            "/v1/embeddings" => Route::Embeddings,
            "/v1/models" => Route::Models,
            "/auth/register" => Route::Register,
            "/auth/login" => Route::Login,
            "/auth/register/ticket" => Route::Ticket,
            "/challenge" => Route::Challenge,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/status" => Route::Status,
            p if p.starts_with("/v1/") => Route::ApiOther,
            p if p.starts_with("/auth/") => Route::Auth,
            p if p.starts_with("/status/") || p.starts_with("/api/v2/") => Route::Status,
            p if p == "/admin" || p.starts_with("/admin/") => Route::Admin,
            _ => Route::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Models => "models",
            Route::ApiOther => "api_other",
            Route::Register => "register",
            Route::Login => "login",
            Route::Ticket => "ticket",
            Route::Auth => "auth",
            Route::Challenge => "challenge",
            Route::Status => "status",
            Route::Admin => "admin",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }

    /// Where the edge guards this route; `None` for the operator's, the status page's
    /// and the health endpoints, which never pass it.
    pub fn zone(self) -> Option<Zone> {
        Some(match self {
            Route::ChatCompletions | Route::Completions | Route::Embeddings | Route::Models | Route::ApiOther => {
                Zone::Inference
            }
            Route::Register => Zone::Register,
            Route::Login => Zone::Login,
            Route::Ticket => Zone::Ticket,
            Route::Auth => Zone::Auth,
            Route::Challenge => Zone::Challenge,
            _ => return None,
        })
    }

    /// The OpenAI API, `/v1/*`.
    pub fn is_api(self) -> bool {
        self.zone() == Some(Zone::Inference)
    }

    /// Sent (with `POST`) to a model server and paid for in its capacity: the requests
    /// that queue for admission and count against token budgets.
    pub fn costs_model(self) -> bool {
        matches!(self, Route::ChatCompletions | Route::Completions | Route::Embeddings)
    }

    /// Carries a prompt that the model answers with text: the requests the AI guard
    /// scores, gives the system prompt and scans the reply of.
    pub fn generates_text(self) -> bool {
        matches!(self, Route::ChatCompletions | Route::Completions)
    }
}

/// Who sent a request, looked up once by the edge.
#[derive(Clone, Debug, Default)]
pub enum Identity {
    /// No API key or session was presented.
    #[default]
    Anonymous,
    /// A valid API key or live session.
    Known(Arc<Principal>),
    /// A credential was presented and could not be accepted.
    Refused(IdentityError),
}

/// Why a presented credential was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// Unknown, revoked or expired, or its account is suspended.
    Invalid,
    /// The store could not be asked.
    Unavailable,
}

impl Identity {
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        match self {
            Identity::Known(p) => Some(p),
            _ => None,
        }
    }

    pub fn account(&self) -> Option<i64> {
        self.principal().map(|p| p.user_id)
    }
}

/// Everything the listener and the edge resolved about a request.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub id: RequestId,
    pub client: Client,
    pub route: Route,
    pub identity: Identity,
    /// The client's address is on the allow list (the listener looked, see `refusal`).
    pub allow_listed: bool,
}

/// Router handlers take the context as an argument; a lane puts it in the extensions
/// before it calls a router (the direct inference path passes it by hand), so its
/// absence is a bug in the wiring, answered as such rather than with a panic.
impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(|| ApiError::new(Reject::Internal, "the request was not resolved by the listener"))
    }
}

/// `axum::extract::Path`, refusing a malformed path parameter (`/admin/users/-1x/tier`)
/// in the stable error shape: axum's own rejection is plain text.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(ApiError::new(Reject::InvalidRequest, rejection.body_text())),
        }
    }
}

/// `axum::extract::Query`, refusing a malformed query string in the stable error shape.
pub struct QueryParam<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(QueryParam(value)),
            Err(rejection) => Err(ApiError::new(Reject::InvalidRequest, rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_fixed_width_hex_and_distinct() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        let mut buf = [0u8; 25];
        hex_id(&mut buf, 0xdeadbeef, 1);
        assert_eq!(&buf, b"deadbeef-0000000000000001");
        assert_ne!(ids.next_into(&mut buf).to_owned(), ids.next_into(&mut [0u8; 25]));
    }

    #[test]
    fn routes_are_classified_by_exact_paths_and_prefixes() {
        assert_eq!(Route::of("/v1/chat/completions"), Route::ChatCompletions);
        assert_eq!(Route::of("/v1/chat/completions/x"), Route::ApiOther);
        assert_eq!(Route::of("/auth/register"), Route::Register);
        assert_eq!(Route::of("/auth/register/ticket"), Route::Ticket);
        assert_eq!(Route::of("/auth/me"), Route::Auth);
        assert_eq!(Route::of("/api/v2/summary.json"), Route::Status);
        assert_eq!(Route::of("/status/badge.svg"), Route::Status);
        assert_eq!(Route::of("/statusx"), Route::Other);
        assert_eq!(Route::of("/admin/flags"), Route::Admin);
        assert_eq!(Route::of("/administrator"), Route::Other);
        assert_eq!(Route::of("/anything"), Route::Other);
    }

    #[test]
    fn one_meaning_each_of_costing_the_model_and_generating_text() {
        let costs: Vec<_> = Route::ALL.into_iter().filter(|r| r.costs_model()).collect();
        assert_eq!(costs, [Route::ChatCompletions, Route::Completions, Route::Embeddings]);
        let text: Vec<_> = Route::ALL.into_iter().filter(|r| r.generates_text()).collect();
        assert_eq!(text, [Route::ChatCompletions, Route::Completions]);
        assert!(Route::ALL.into_iter().filter(|r| r.costs_model()).all(Route::is_api));
    }

    #[test]
    fn only_the_public_zones_pass_the_edge() {
        for route in [Route::Status, Route::Admin, Route::Healthz, Route::Readyz, Route::Metrics, Route::Other] {
            assert_eq!(route.zone(), None, "{route:?}");
        }
        let names: Vec<_> = Zone::ALL.iter().map(|z| z.name()).collect();
        assert_eq!(names, ["inference", "auth", "register", "login", "ticket", "challenge"]);
    }
}
