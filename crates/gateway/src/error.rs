//! Every refusal a client can get, in one stable shape:
//! `{"error":{"message","type","param","code"}}` as the OpenAI API uses it, with
//! the right status code, and `Retry-After` where retrying makes sense.
//! Browsers asking for HTML get the same facts as a small readable page.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

/// Why a request was refused; also the `reason` label of `palisade_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    BodyTooLarge,
    BodyTimeout,
    InvalidJson,
    InvalidRequest,
    NotFound,
    MethodNotAllowed,
    Unauthenticated,
    NoHealthyUpstream,
    UpstreamUnavailable,
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
}

impl Reject {
    pub const ALL: [Reject; 23] = [
        Reject::BodyTooLarge,
        Reject::BodyTimeout,
        Reject::InvalidJson,
        Reject::InvalidRequest,
        Reject::NotFound,
        Reject::MethodNotAllowed,
        Reject::Unauthenticated,
        Reject::NoHealthyUpstream,
        Reject::UpstreamUnavailable,
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
    ];

    pub fn status(self) -> StatusCode {
        match self {
            Reject::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::InvalidJson | Reject::InvalidRequest => StatusCode::BAD_REQUEST,
            Reject::NotFound => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reject::Unauthenticated => StatusCode::UNAUTHORIZED,
            Reject::NoHealthyUpstream | Reject::ShuttingDown | Reject::Overloaded | Reject::QueueTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reject::AccountBusy => StatusCode::TOO_MANY_REQUESTS,
            Reject::PromptRejected | Reject::AccountFlagged => StatusCode::FORBIDDEN,
            Reject::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            // A challenge is a refusal until solved, never a 200 (see DESIGN.md).
            Reject::Blocked | Reject::ChallengeRequired | Reject::ChallengeFailed | Reject::TicketInvalid => {
                StatusCode::FORBIDDEN
            }
            Reject::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Reject::WaitingRoomFull => StatusCode::SERVICE_UNAVAILABLE,
            Reject::TicketExpired => StatusCode::GONE,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(self) -> &'static str {
        match self {
            Reject::BodyTooLarge
            | Reject::BodyTimeout
            | Reject::InvalidJson
            | Reject::InvalidRequest
            | Reject::NotFound
            | Reject::MethodNotAllowed
            | Reject::Unauthenticated => "invalid_request_error",
            Reject::AccountBusy => "rate_limit_error",
            Reject::PromptRejected | Reject::AccountFlagged => "permission_error",
            Reject::NoHealthyUpstream
            | Reject::UpstreamUnavailable
            | Reject::UpstreamTimeout
            | Reject::ShuttingDown
            | Reject::Overloaded
            | Reject::QueueTimeout
            | Reject::WaitingRoomFull => "server_error",
            Reject::Blocked | Reject::ChallengeRequired | Reject::ChallengeFailed | Reject::TicketInvalid => {
                "permission_error"
            }
            Reject::RateLimited => "rate_limit_error",
            Reject::TicketExpired => "invalid_request_error",
        }
    }

    /// The machine-readable `code`, stable across releases.
    pub fn code(self) -> &'static str {
        match self {
            Reject::BodyTooLarge => "body_too_large",
            Reject::BodyTimeout => "body_timeout",
            Reject::InvalidJson => "invalid_json",
            Reject::InvalidRequest => "invalid_request",
            Reject::NotFound => "not_found",
            Reject::MethodNotAllowed => "method_not_allowed",
            Reject::Unauthenticated => "invalid_api_key",
            Reject::NoHealthyUpstream => "no_healthy_upstream",
            Reject::UpstreamUnavailable => "upstream_unavailable",
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
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refusal with its message, ready to become a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub reject: Reject,
    pub message: Cow<'static, str>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(reject: Reject, message: impl Into<Cow<'static, str>>) -> ApiError {
        let retry_after = match reject {
            Reject::NoHealthyUpstream | Reject::ShuttingDown | Reject::UpstreamUnavailable => Some(1),
            _ => None,
        };
        ApiError { reject, message: message.into(), retry_after }
    }

    /// The same refusal as a small HTML page, for people using a browser.
    pub fn into_page(self) -> Response {
        let status = self.reject.status();
        let title = status.canonical_reason().unwrap_or("Error");
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{code} {title}</title>\
             <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
             code{{background:#f3f3f3;padding:0 .3em}}</style></head><body><h1>{title}</h1><p>{message}</p>\
             <p>Error code: <code>{reason}</code></p>{retry}</body></html>",
            code = status.as_u16(),
            message = escape_html(&self.message),
            reason = self.reject.code(),
            retry = self
                .retry_after
                .map(|s| format!("<p>Please try again in {s} second{}.</p>", if s == 1 { "" } else { "s" }))
                .unwrap_or_default(),
        );
        let mut response = (status, Html(page)).into_response();
        self.add_retry_after(response.headers_mut());
        response
    }

    /// HTML for a browser that asked for it, JSON otherwise.
    pub fn for_client(self, request_headers: &HeaderMap) -> Response {
        if wants_html(request_headers) { self.into_page() } else { self.into_response() }
    }

    fn add_retry_after(&self, headers: &mut HeaderMap) {
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.reject.kind(),
            "param": null,
            "code": self.reject.code(),
        }});
        let mut response = (self.reject.status(), Json(body)).into_response();
        self.add_retry_after(response.headers_mut());
        response.extensions_mut().insert(self.reject);
        response
    }
}

/// A browser navigation sends `Accept: text/html,...`; API clients do not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_indices_match_all() {
        for (i, reject) in Reject::ALL.iter().enumerate() {
            assert_eq!(reject.index(), i);
        }
    }

    #[test]
    fn pages_escape_the_message() {
        let page = ApiError::new(Reject::NotFound, "<script>x</script>").into_page();
        assert_eq!(page.status(), StatusCode::NOT_FOUND);
        assert_eq!(escape_html("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
