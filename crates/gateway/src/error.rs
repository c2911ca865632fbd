//! Every refusal a client can get, in one stable shape:
//! `{"error":{"message","type","param","code"}}` as the OpenAI API uses it, with
//! the right status code, and `Retry-After` where retrying makes sense. Browsers
//! asking for HTML get the same facts as a small readable page.
//!
//! A handler or stage refuses by returning an [`ApiError`]. Turning it into a
//! response only marks the response; the listener renders it (JSON or page, as the
//! request asked) and counts it in `palisade_rejections_total`, in one place
//! (`server::finish`), so no refusal can skip the count or pick its own shape.

use std::borrow::Cow;

use accounts::service::AccountError;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shield::{Challenge, Decision};

use crate::pages;

/// Why a request was refused. Its [`code`](Reject::code) is the `reason` label of
/// `palisade_rejections_total` and, unless an [`ApiError`] names a finer one, the
/// JSON `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    BodyTooLarge,
    BodyTimeout,
    InvalidJson,
    InvalidRequest,
    /// A request field of the wrong type (`max_tokens` as a string, say); `param` names it.
    InvalidType,
    /// A request that could never fit the account's whole token budget, however long
    /// it waited (its `max_tokens` is too large).
    ExceedsTokenBudget,
    NotFound,
    MethodNotAllowed,
    /// `/v1` without a usable API key or session.
    Unauthenticated,
    NoHealthyUpstream,
    UpstreamUnavailable,
    /// The model server failed the request (a 5xx of its own); its body stays in our log.
    UpstreamError,
    UpstreamTimeout,
    ShuttingDown,
    /// Admission: the account already has its share of requests in flight.
    AccountBusy,
    /// Admission: no capacity for this request's class now, and waiting would not help.
    Overloaded,
    /// Admission: the wait for capacity passed the request's deadline.
    QueueTimeout,
    /// The AI guard refused the prompt (extraction or jailbreak attempt).
    PromptRejected,
    /// The caller collected too many strikes.
    AccountFlagged,
    /// The client's address is on the block list, or its bot score says block.
    Blocked,
    /// Over a rate limit (address, subnet, account, API key or route).
    RateLimited,
    /// A proof-of-work clearance is needed first (see `GET /challenge`).
    ChallengeRequired,
    /// A submitted proof-of-work answer was forged, expired, replayed or wrong.
    ChallengeFailed,
    /// The registration waiting room has no room left.
    WaitingRoomFull,
    /// A waiting-room ticket or admission pass that is forged or not this client's.
    TicketInvalid,
    /// A waiting-room ticket that was abandoned or outlived the room: join again.
    TicketExpired,
    /// A state-changing request without the CSRF token.
    CsrfFailed,
    /// `/admin` without the admin token.
    AdminUnauthorized,
    /// An operator whose role does not allow the admin action, or the bootstrap secret
    /// once operators exist (the JSON `code` says which).
    AdminForbidden,
    /// An API key without the scope the endpoint needs.
    InsufficientScope,
    /// A body that is not the JSON (or form) the endpoint expects.
    InvalidBody,
    /// A field the account flows refused (the JSON `code` names which rule).
    InvalidInput,
    /// A password the policy refuses (the JSON `code` names why).
    WeakPassword,
    /// The registration policy refused the sign-up (the JSON `code` names the rule).
    RegistrationRefused,
    AlreadyRegistered,
    InvalidCredentials,
    MfaRequired,
    InvalidCode,
    TooManyAttempts,
    AccountSuspended,
    /// The password-hashing pool is full.
    Busy,
    /// A session was needed (`/auth/*`).
    SignInRequired,
    NotificationFailed,
    /// A body in a media type the endpoint does not take.
    UnsupportedMediaType,
    /// A state-changing request a browser says came from another site.
    CrossOrigin,
    /// The change clashes with what is stored.
    Conflict,
    /// The store did not answer or accept the change.
    StoreUnavailable,
    Internal,
}

impl Reject {
    pub const ALL: [Reject; 48] = [
        Reject::BodyTooLarge,
        Reject::BodyTimeout,
        Reject::InvalidJson,
        Reject::InvalidRequest,
        Reject::InvalidType,
        Reject::ExceedsTokenBudget,
        Reject::NotFound,
        Reject::MethodNotAllowed,
        Reject::Unauthenticated,
        Reject::NoHealthyUpstream,
        Reject::UpstreamUnavailable,
        Reject::UpstreamError,
        Reject::UpstreamTimeout,
        Reject::ShuttingDown,
        Reject::AccountBusy,
        Reject::Overloaded,
        Reject::QueueTimeout,
        Reject::PromptRejected,
        Reject::AccountFlagged,
        Reject::Blocked,
        Reject::RateLimited,
        Reject::ChallengeRequired,
        Reject::ChallengeFailed,
        Reject::WaitingRoomFull,
        Reject::TicketInvalid,
        Reject::TicketExpired,
        Reject::CsrfFailed,
        Reject::AdminUnauthorized,
        Reject::AdminForbidden,
        Reject::InsufficientScope,
        Reject::InvalidBody,
        Reject::InvalidInput,
        Reject::WeakPassword,
        Reject::RegistrationRefused,
        Reject::AlreadyRegistered,
        Reject::InvalidCredentials,
        Reject::MfaRequired,
        Reject::InvalidCode,
        Reject::TooManyAttempts,
        Reject::AccountSuspended,
        Reject::Busy,
        Reject::SignInRequired,
        Reject::NotificationFailed,
        Reject::UnsupportedMediaType,
        Reject::CrossOrigin,
        Reject::Conflict,
        Reject::StoreUnavailable,
        Reject::Internal,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            Reject::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::InvalidJson
            | Reject::InvalidRequest
            | Reject::InvalidType
            | Reject::ExceedsTokenBudget
            | Reject::InvalidBody
            | Reject::InvalidInput
            | Reject::WeakPassword
            | Reject::InvalidCode => StatusCode::BAD_REQUEST,
            Reject::NotFound => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reject::Unauthenticated
            | Reject::AdminUnauthorized
            | Reject::InvalidCredentials
            | Reject::MfaRequired
            | Reject::SignInRequired => StatusCode::UNAUTHORIZED,
            Reject::NoHealthyUpstream
            | Reject::ShuttingDown
            | Reject::Overloaded
            | Reject::QueueTimeout
            | Reject::WaitingRoomFull
            | Reject::Busy
            | Reject::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reject::AccountBusy | Reject::RateLimited | Reject::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Reject::UpstreamUnavailable | Reject::UpstreamError | Reject::NotificationFailed => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            // A challenge is a refusal until solved, never a 200 (see DESIGN.md).
            Reject::PromptRejected
            | Reject::AccountFlagged
            | Reject::Blocked
            | Reject::ChallengeRequired
            | Reject::ChallengeFailed
            | Reject::TicketInvalid
            | Reject::CsrfFailed
            | Reject::InsufficientScope
            | Reject::AdminForbidden
            | Reject::RegistrationRefused
            | Reject::AccountSuspended
            | Reject::CrossOrigin => StatusCode::FORBIDDEN,
            Reject::AlreadyRegistered | Reject::Conflict => StatusCode::CONFLICT,
            Reject::TicketExpired => StatusCode::GONE,
            Reject::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reject::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED if self != Reject::Unauthenticated => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The machine-readable `code`, stable across releases.
    pub fn code(self) -> &'static str {
        match self {
            Reject::BodyTooLarge => "body_too_large",
            Reject::BodyTimeout => "body_timeout",
            Reject::InvalidJson => "invalid_json",
            Reject::InvalidRequest => "invalid_request",
            Reject::InvalidType => "invalid_type",
            Reject::ExceedsTokenBudget => "exceeds_token_budget",
            Reject::NotFound => "not_found",
            Reject::MethodNotAllowed => "method_not_allowed",
            Reject::Unauthenticated => "invalid_api_key",
            Reject::NoHealthyUpstream => "no_healthy_upstream",
            Reject::UpstreamUnavailable => "upstream_unavailable",
            Reject::UpstreamError => "upstream_error",
            Reject::UpstreamTimeout => "upstream_timeout",
            Reject::ShuttingDown => "shutting_down",
            Reject::AccountBusy => "too_many_concurrent_requests",
            Reject::Overloaded => "overloaded",
            Reject::QueueTimeout => "queue_timeout",
            Reject::PromptRejected => "prompt_rejected",
            Reject::AccountFlagged => "account_flagged",
            Reject::Blocked => "blocked",
            Reject::RateLimited => "rate_limited",
            Reject::ChallengeRequired => "challenge_required",
            Reject::ChallengeFailed => "challenge_failed",
            Reject::WaitingRoomFull => "waiting_room_full",
            Reject::TicketInvalid => "ticket_invalid",
            Reject::TicketExpired => "ticket_expired",
            Reject::CsrfFailed => "csrf_failed",
            Reject::AdminUnauthorized => "admin_unauthorized",
            Reject::AdminForbidden => "admin_forbidden",
            Reject::InsufficientScope => "insufficient_scope",
            Reject::InvalidBody => "invalid_body",
            Reject::InvalidInput => "invalid_input",
            Reject::WeakPassword => "weak_password",
            Reject::RegistrationRefused => "registration_refused",
            Reject::AlreadyRegistered => "already_registered",
            Reject::InvalidCredentials => "invalid_credentials",
            Reject::MfaRequired => "mfa_required",
            Reject::InvalidCode => "invalid_code",
            Reject::TooManyAttempts => "too_many_attempts",
            Reject::AccountSuspended => "account_suspended",
            Reject::Busy => "busy",
            Reject::SignInRequired => "unauthenticated",
            Reject::NotificationFailed => "notification_failed",
            Reject::UnsupportedMediaType => "unsupported_media_type",
            Reject::CrossOrigin => "cross_origin",
            Reject::Conflict => "conflict",
            Reject::StoreUnavailable => "store_unavailable",
            Reject::Internal => "internal_error",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refusal with its message, ready to be rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub reject: Reject,
    /// A finer JSON `code` than the reject's own (which rule refused a password, say).
    pub detail: Option<&'static str>,
    /// The request field at fault, as the JSON `param` (OpenAI SDKs show it).
    pub param: Option<&'static str>,
    pub message: Cow<'static, str>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u32>,
    /// The limit that refused, for the `RateLimit-*` headers.
    pub limit: Option<LimitHeaders>,
    /// A fresh proof-of-work challenge, inside the JSON or as the solver page.
    pub challenge: Option<Box<Challenge>>,
}

impl ApiError {
    pub fn new(reject: Reject, message: impl Into<Cow<'static, str>>) -> ApiError {
        let retry_after = match reject {
            Reject::NoHealthyUpstream
            | Reject::ShuttingDown
            | Reject::UpstreamUnavailable
            | Reject::UpstreamError
            | Reject::Busy
            | Reject::StoreUnavailable => Some(1),
            _ => None,
        };
        ApiError {
            reject,
            detail: None,
            param: None,
            message: message.into(),
            retry_after,
            limit: None,
            challenge: None,
        }
    }

    pub fn retry_after(mut self, seconds: Option<u32>) -> ApiError {
        self.retry_after = seconds;
        self
    }

    pub fn detail(mut self, code: &'static str) -> ApiError {
        self.detail = Some(code);
        self
    }

    pub fn param(mut self, field: &'static str) -> ApiError {
        self.param = Some(field);
        self
    }

    /// A 429 from a limiter: its `RateLimit-*` headers and its `Retry-After`.
    pub fn limited(message: impl Into<Cow<'static, str>>, decision: &Decision) -> ApiError {
        let mut error = ApiError::new(Reject::RateLimited, message);
        error.limit = LimitHeaders::of(decision);
        error.retry_after = decision.retry_after_secs().map(|s| u32::try_from(s).unwrap_or(u32::MAX));
        error
    }

    /// A 503 for a credential that could not be checked: the store is unreachable and
    /// this node did not know the credential lately.
    pub fn credentials_unavailable() -> ApiError {
        ApiError::new(Reject::StoreUnavailable, "credentials could not be checked; try again shortly")
            .retry_after(Some(1))
    }

    /// A 403 `challenge_required` carrying the challenge to solve.
    pub fn challenge(message: impl Into<Cow<'static, str>>, challenge: Challenge) -> ApiError {
        let mut error = ApiError::new(Reject::ChallengeRequired, message);
        error.challenge = Some(Box::new(challenge));
        error
    }

    /// The JSON `code`.
    pub fn code(&self) -> &'static str {
        self.detail.unwrap_or(self.reject.code())
    }

    /// The JSON body, OpenAI's error shape (with the challenge beside it, if any).
    pub fn json_body(&self) -> String {
        let mut body = json!({"error": {
            "message": self.message,
            "type": self.reject.kind(),
            "param": self.param,
            "code": self.code(),
        }});
        if let Some(c) = &self.challenge {
            body["challenge"] = pages::challenge_json(c);
        }
        body.to_string()
    }

    /// The response, as a page for a browser (`html`) or as JSON.
    pub fn render(self, html: bool) -> Response {
        let status = self.reject.status();
        let mut response = match (&self.challenge, html) {
            (Some(challenge), true) => pages::challenge(challenge, None),
            (_, true) => pages::refusal(status, &self.message, self.code(), self.retry_after),
            (_, false) => json_response(self.json_body()),
        };
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if let Some(l) = &self.limit {
            l.write(headers);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.challenge.is_some() {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        response
    }
}

/// The `RateLimit-*` values of the limit that refused (draft-ietf-httpapi-ratelimit-headers),
/// in whole seconds: kept small, since every 429 carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitHeaders {
    pub limit: u32,
    pub remaining: u32,
    pub reset_s: u32,
    pub window_s: u32,
}

impl LimitHeaders {
    /// `None` for a decision without a limit.
    pub fn of(d: &Decision) -> Option<LimitHeaders> {
        let secs =
            |t: std::time::Duration| u32::try_from(t.as_secs() + u64::from(t.subsec_nanos() > 0)).unwrap_or(u32::MAX);
        (d.limit != u32::MAX).then(|| LimitHeaders {
            limit: d.limit,
            remaining: d.remaining,
            reset_s: secs(d.reset_after),
            window_s: secs(d.window).max(1),
        })
    }

    fn write(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset_s));
        headers.insert("ratelimit-policy", LimitHeaders::policy_value(self.limit, self.window_s));
    }

    /// `RateLimit-Policy`: the limit and its window in seconds.
    pub fn policy_value(limit: u32, window_s: u32) -> HeaderValue {
        HeaderValue::try_from(format!("{limit};w={window_s}")).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

fn json_response(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An [`ApiError`] waiting in a response's extensions for the listener to render.
#[derive(Clone, Debug)]
pub struct Unrendered(pub Box<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self.reject.status();
        response.extensions_mut().insert(Unrendered(Box::new(self)));
        response
    }
}

impl From<&AccountError> for ApiError {
    fn from(e: &AccountError) -> ApiError {
        let (reject, detail) = match e {
            AccountError::Invalid { code, .. } => (Reject::InvalidInput, Some(*code)),
            AccountError::WeakPassword(why) => (Reject::WeakPassword, Some(why.code())),
            AccountError::Refused(why) => (Reject::RegistrationRefused, Some(why.code())),
            AccountError::AlreadyRegistered => (Reject::AlreadyRegistered, None),
            AccountError::InvalidCredentials => (Reject::InvalidCredentials, None),
            AccountError::MfaRequired => (Reject::MfaRequired, None),
            AccountError::InvalidCode => (Reject::InvalidCode, None),
            AccountError::TooManyAttempts { .. } => (Reject::TooManyAttempts, None),
            AccountError::Suspended => (Reject::AccountSuspended, None),
            AccountError::Busy => (Reject::Busy, None),
            AccountError::Unauthenticated => (Reject::SignInRequired, None),
            AccountError::NotFound => (Reject::NotFound, None),
            AccountError::Notify(_) => (Reject::NotificationFailed, None),
            AccountError::Store(s) if s.is_unavailable() => (Reject::StoreUnavailable, None),
            AccountError::Store(_) | AccountError::Crypto(_) | AccountError::Internal(_) => (Reject::Internal, None),
        };
        let message = if reject == Reject::Internal {
            tracing::error!(error = %e, "account operation failed");
            Cow::Borrowed("internal error; the operator has the details in the log")
        } else if reject == Reject::NotificationFailed {
            // Why (a TLS or connection failure toward the operator's provider) is the
            // operator's to read, in the log the account service wrote; not a stranger's.
            Cow::Borrowed("the verification code could not be sent just now; try again in a few minutes")
        } else if reject == Reject::StoreUnavailable {
            tracing::warn!(error = %e, "account operation refused: the store is unreachable");
            Cow::Borrowed("accounts are unavailable for a moment (nothing was changed); try again shortly")
        } else {
            Cow::Owned(e.to_string())
        };
        let mut error = ApiError::new(reject, message);
        error.detail = detail;
        if let AccountError::TooManyAttempts { retry_after } = e {
            error.retry_after = Some(u32::try_from(retry_after.as_secs().max(1)).unwrap_or(u32::MAX));
        }
        error
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> ApiError {
        ApiError::from(&e)
    }
}

/// A browser navigation sends `Accept: text/html,...`; API clients do not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_indices_match_all_and_codes_are_distinct() {
        let mut codes = std::collections::HashSet::new();
        for (i, reject) in Reject::ALL.iter().enumerate() {
            assert_eq!(reject.index(), i);
            assert!(codes.insert(reject.code()), "{} twice", reject.code());
        }
    }

    #[test]
    fn deferred_until_rendered_then_json_or_a_page() {
        let response = ApiError::new(Reject::NotFound, "<script>x</script>").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let Unrendered(error) = response.extensions().get::<Unrendered>().cloned().expect("marked");
        let page = error.clone().render(true);
        assert_eq!(page.status(), StatusCode::NOT_FOUND);
        assert!(page.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        let json = error.render(false);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn account_errors_keep_their_codes_and_statuses() {
        let weak = ApiError::from(&AccountError::Invalid { code: "too_long", message: "x".into() });
        assert_eq!((weak.reject.status(), weak.code()), (StatusCode::BAD_REQUEST, "too_long"));
        let throttled = ApiError::from(&AccountError::TooManyAttempts { retry_after: std::time::Duration::ZERO });
        assert_eq!((throttled.code(), throttled.retry_after), ("too_many_attempts", Some(1)));
        assert_eq!(ApiError::from(&AccountError::Unauthenticated).code(), "unauthenticated");
        assert_eq!(Reject::InvalidCredentials.kind(), "authentication_error");
        assert_eq!(Reject::Unauthenticated.kind(), "invalid_request_error");
    }
}
