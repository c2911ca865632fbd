//! The refusals the listener answers itself, before a request has a context: an
//! address on the block list and a client over its per-address or per-subnet limit.
//! Under a flood these outnumber the requests served, so each is an atomic or two, a
//! table lookup and bytes rendered once at start: no JSON built, no page formatted,
//! no number printed, no router, no audit entry beyond the edge's sampled one.
//!
//! The edge decides ([`Turnstile`], implemented by `Edge`); this module only turns
//! its decision into the same response [`ApiError::render`] would give, as a hyper
//! response for the listener and as HTTP/1.1 bytes for [`crate::front`], which
//! `tests::prerendered_matches_the_rendered_refusal` and
//! `tests::the_wire_form_matches_the_rendered_refusal` hold it to.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, header};
use bytes::Bytes;
use shield::{Client, Decision};

use crate::error::{ApiError, LimitHeaders, Reject};
use crate::pages;
use crate::request::Zone;

/// The edge's cheapest checks, for the listener to run first.
pub trait Turnstile: Send + Sync + 'static {
    /// The block and allow lists, then the per-address and per-subnet limits.
    fn admit(&self, client: &Client, zone: Zone, now: Duration) -> Admit;
}

/// What the turnstile decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// On to the edge's other checks; `allow_listed` spares it the bot score.
    Pass {
        allow_listed: bool,
    },
    Blocked,
    Limited(Decision),
}

impl Admit {
    /// The refusal and, for a limit, the decision behind it; `None` for a pass.
    fn refusal(&self) -> Option<(Reject, Option<&Decision>)> {
        match self {
            Admit::Pass { .. } => None,
            Admit::Blocked => Some((Reject::Blocked, None)),
            Admit::Limited(d) => Some((Reject::RateLimited, Some(d))),
        }
    }
}

pub const BLOCKED_MESSAGE: &str = "requests from your network are blocked";
pub const LIMITED_MESSAGE: &str = "too many requests from your address or network";

/// After this many refusals in a row on a connection hyper serves, the listener closes
/// it after answering: a client that keeps hammering pays for a new connection, which
/// starts in the front, where its refusals cost a fraction of hyper's.
pub const MAX_REFUSALS_IN_A_ROW: u32 = 32;

/// The same for a connection still in the front. Its refusals are cheap there, and a
/// new connection costs this side a handshake and an accept as well, so it closes
/// later: the place is given back, without making every 32nd refusal the dearest.
pub const MAX_FRONT_REFUSALS_IN_A_ROW: u32 = 1024;

/// `Strict-Transport-Security` on every answer over TLS: two years.
pub const HSTS: &str = "max-age=63072000";

/// Numbers up to this are headers without an allocation.
const SMALL_NUMBERS: usize = 4096;

/// The two refusals, rendered once as JSON and as a page, as hyper responses and as
/// the HTTP/1.1 bytes the [`crate::front`] writes itself.
pub struct Prerendered {
    blocked_json: Bytes,
    blocked_html: Bytes,
    limited_json: Bytes,
    limited_html: Bytes,
    /// Indexed by [`wire_index`].
    wire: [Wire; 4],
    numbers: Vec<HeaderValue>,
    /// `RateLimit-Policy` values seen, at most a few (one per configured limit).
    policies: [OnceLock<(u32, u32, HeaderValue)>; 4],
}

impl Default for Prerendered {
    fn default() -> Self {
        Prerendered::new()
    }
}

impl Prerendered {
    pub fn new() -> Prerendered {
        let digits: &'static str =
            Box::leak((0..SMALL_NUMBERS).map(|n| n.to_string()).collect::<String>().into_boxed_str());
        let mut numbers = Vec::with_capacity(SMALL_NUMBERS);
        let mut at = 0;
        for n in 0..SMALL_NUMBERS {
            let len = n.to_string().len();
            numbers.push(HeaderValue::from_static(&digits[at..at + len]));
            at += len;
        }
        let blocked = ApiError::new(Reject::Blocked, BLOCKED_MESSAGE);
        let limited = ApiError::new(Reject::RateLimited, LIMITED_MESSAGE);
        let mut pre = Prerendered {
            blocked_json: Bytes::from(blocked.json_body()),
            blocked_html: Bytes::from(pages::refusal_page(Reject::Blocked.status(), BLOCKED_MESSAGE, "blocked", None)),
            limited_json: Bytes::from(limited.json_body()),
            limited_html: Bytes::from(pages::refusal_page(
                Reject::RateLimited.status(),
                LIMITED_MESSAGE,
                "rate_limited",
                None,
            )),
            wire: Default::default(),
            numbers,
            policies: Default::default(),
        };
        // The wire form is the hyper response's own status, headers and body, so the
        // two cannot drift apart; only the per-request headers are left out.
        for reject in [Reject::Blocked, Reject::RateLimited] {
            for html in [false, true] {
                let (base, body) = pre.base(reject, html);
                pre.wire[wire_index(reject, html)] = Wire::of(&base, body);
            }
        }
        pre
    }

    /// A refusal's status, fixed headers and body: everything but the per-request values.
    fn base(&self, reject: Reject, html: bool) -> (Response<Body>, &Bytes) {
        let body = match (reject, html) {
            (Reject::Blocked, false) => &self.blocked_json,
            (Reject::Blocked, true) => &self.blocked_html,
            (_, false) => &self.limited_json,
            (_, true) => &self.limited_html,
        };
        let mut response = Response::new(Body::from(body.clone()));
        *response.status_mut() = reject.status();
        let headers = response.headers_mut();
        headers.reserve(12);
        let content_type = if html { "text/html; charset=utf-8" } else { "application/json" };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if html {
            pages::secure_html(headers);
        }
        (response, body)
    }

    /// Append a refusal as HTTP/1.1 bytes to `out`: the fixed part rendered at start,
    /// then this request's `date`, `x-request-id`, limit values and `connection`. No
    /// allocation once `out` has grown to a response's size. `None` for a pass.
    pub fn write_wire(&self, out: &mut Vec<u8>, admit: &Admit, wire: WireRequest<'_>) -> Option<Reject> {
        let (reject, limit) = admit.refusal()?;
        let form = &self.wire[wire_index(reject, wire.html)];
        out.extend_from_slice(&form.head);
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(wire.date);
        out.extend_from_slice(b"\r\nx-request-id: ");
        out.extend_from_slice(wire.id);
        out.extend_from_slice(b"\r\n");
        if wire.hsts {
            out.extend_from_slice(b"strict-transport-security: ");
            out.extend_from_slice(HSTS.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(d) = limit {
            let mut n = itoa::Buffer::new();
            if let Some(l) = LimitHeaders::of(d) {
                for (name, value) in [
                    (&b"ratelimit-limit: "[..], l.limit),
                    (b"ratelimit-remaining: ", l.remaining),
                    (b"ratelimit-reset: ", l.reset_s),
                ] {
                    out.extend_from_slice(name);
                    out.extend_from_slice(n.format(value).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"ratelimit-policy: ");
                out.extend_from_slice(n.format(l.limit).as_bytes());
                out.extend_from_slice(b";w=");
                out.extend_from_slice(n.format(l.window_s).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            if let Some(seconds) = d.retry_after_secs() {
                out.extend_from_slice(b"retry-after: ");
                out.extend_from_slice(n.format(seconds).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        if wire.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(&form.length);
        if !wire.head_only {
            out.extend_from_slice(&form.body);
        }
        Some(reject)
    }

    /// The response for a refusal (`None` for [`Admit::Pass`]).
    pub fn response(&self, admit: &Admit, html: bool) -> Option<(Reject, Response<Body>)> {
        let (reject, limit) = admit.refusal()?;
        let (mut response, _) = self.base(reject, html);
        if let Some(d) = limit {
            let headers = response.headers_mut();
            if let Some(l) = LimitHeaders::of(d) {
                self.write_limit(headers, &l);
            }
            if let Some(seconds) = d.retry_after_secs() {
                headers.insert(header::RETRY_AFTER, self.number(seconds));
            }
        }
        Some((reject, response))
    }

    fn write_limit(&self, headers: &mut HeaderMap, l: &LimitHeaders) {
        static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
        static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
        static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
        static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
        headers.insert(LIMIT.clone(), self.number(u64::from(l.limit)));
        headers.insert(REMAINING.clone(), self.number(u64::from(l.remaining)));
        headers.insert(RESET.clone(), self.number(u64::from(l.reset_s)));
        headers.insert(POLICY.clone(), self.policy(l.limit, l.window_s));
    }

    fn number(&self, n: u64) -> HeaderValue {
        match usize::try_from(n).ok().and_then(|i| self.numbers.get(i)) {
            Some(v) => v.clone(),
            None => HeaderValue::from(n),
        }
    }

    fn policy(&self, limit: u32, window_s: u32) -> HeaderValue {
        for slot in &self.policies {
            let (l, w, v) = slot.get_or_init(|| (limit, window_s, LimitHeaders::policy_value(limit, window_s)));
            if (*l, *w) == (limit, window_s) {
                return v.clone();
            }
        }
        LimitHeaders::policy_value(limit, window_s)
    }
}

/// What a request tells the wire form of its refusal.
#[derive(Clone, Copy, Debug)]
pub struct WireRequest<'a> {
    /// The client asked for HTML (a browser): the page, not JSON.
    pub html: bool,
    /// A `HEAD` request: the head only.
    pub head_only: bool,
    /// Say `connection: close` (the connection ends after this answer).
    pub close: bool,
    /// The `date` value (IMF-fixdate).
    pub date: &'a [u8],
    pub id: &'a [u8],
    /// Add `Strict-Transport-Security` (the connection is TLS).
    pub hsts: bool,
}

/// One refusal as bytes: the status line and fixed headers, then `content-length` and
/// the blank line, then the body.
#[derive(Default)]
struct Wire {
    head: Bytes,
    length: Bytes,
    body: Bytes,
}

impl Wire {
    fn of(response: &Response<Body>, body: &Bytes) -> Wire {
        let status = response.status();
        let mut head =
            format!("HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or("")).into_bytes();
        for (name, value) in response.headers() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        let length = format!("content-length: {}\r\n\r\n", body.len()).into_bytes();
        Wire { head: Bytes::from(head), length: Bytes::from(length), body: body.clone() }
    }
}

fn wire_index(reject: Reject, html: bool) -> usize {
    usize::from(reject != Reject::Blocked) * 2 + usize::from(html)
}

/// Whether the answer to a refusal should also close the connection (HTTP/1 only:
/// HTTP/2 has no `Connection` header; its streams are cheap to refuse).
pub fn close_after(refusals_in_a_row: u32, version: axum::http::Version) -> bool {
    refusals_in_a_row >= MAX_REFUSALS_IN_A_ROW
        && matches!(version, axum::http::Version::HTTP_11 | axum::http::Version::HTTP_10)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::StatusCode;
    use http_body_util::BodyExt;
    use shield::Gcra;

    async fn parts(response: Response<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    /// A per-address limit of one an hour, spent.
    pub(crate) fn limited() -> Decision {
        let gcra = Gcra::per_period(1, Duration::from_secs(3600), 1).unwrap();
        let mut tat = 0;
        let now = Duration::from_secs(5);
        assert!(gcra.check(&mut tat, now, 1).allowed);
        let refused = gcra.check(&mut tat, now, 1);
        assert!(!refused.allowed);
        refused
    }

    /// Each refusal the listener answers itself, with the error that renders it slowly.
    fn cases() -> [(Admit, ApiError); 2] {
        [
            (Admit::Blocked, ApiError::new(Reject::Blocked, BLOCKED_MESSAGE)),
            (Admit::Limited(limited()), ApiError::limited(LIMITED_MESSAGE, &limited())),
        ]
    }

    /// What `ApiError::render` and the listener's security headers make of `error`.
    async fn rendered(error: ApiError, html: bool) -> (StatusCode, HeaderMap, Bytes) {
        let mut slow = error.render(html);
        pages::secure_html(slow.headers_mut());
        parts(slow).await
    }

    #[tokio::test]
    async fn prerendered_matches_the_rendered_refusal() {
        let pre = Prerendered::new();
        for html in [false, true] {
            for (admit, error) in cases() {
                let (_, quick) = pre.response(&admit, html).unwrap();
                let (qs, qh, qb) = parts(quick).await;
                let (ss, sh, sb) = rendered(error, html).await;
                assert_eq!(qs, ss);
                if html {
                    // The page leaves the wait to `Retry-After`, the same for every client.
                    assert!(String::from_utf8_lossy(&qb).contains("Error code: <code>"));
                } else {
                    assert_eq!(qb, sb);
                }
                for name in sh.keys() {
                    if name != header::CONTENT_LENGTH {
                        assert_eq!(qh.get(name), sh.get(name), "{name} (html: {html})");
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn the_wire_form_matches_the_rendered_refusal() {
        let pre = Prerendered::new();
        for (html, hsts) in [(false, false), (true, false), (false, true)] {
            for (admit, error) in cases() {
                let mut out = Vec::new();
                let request = WireRequest {
                    html,
                    head_only: false,
                    close: true,
                    date: b"Mon, 07 Dec 2026 04:00:00 GMT",
                    id: b"0000002a-000000000000002a",
                    hsts,
                };
                assert_eq!(pre.write_wire(&mut out, &admit, request), Some(error.reject));
                let mut lines = [httparse::EMPTY_HEADER; 32];
                let mut wire = httparse::Response::new(&mut lines);
                let httparse::Status::Complete(head) = wire.parse(&out).unwrap() else { panic!("a whole head") };
                let body = &out[head..];
                let value = |name: &str| {
                    wire.headers.iter().find(|h| h.name == name).map(|h| std::str::from_utf8(h.value).unwrap())
                };
                let (status, headers, slow_body) = rendered(error, html).await;
                assert_eq!(wire.code, Some(status.as_u16()));
                assert_eq!(wire.reason, status.canonical_reason());
                if !html {
                    assert_eq!(body, &slow_body[..]);
                }
                assert_eq!(value("content-length"), Some(body.len().to_string().as_str()));
                for (name, expected) in &headers {
                    if name != header::CONTENT_LENGTH {
                        assert_eq!(value(name.as_str()), expected.to_str().ok(), "{name} (html: {html})");
                    }
                }
                assert_eq!(value("strict-transport-security"), hsts.then_some(HSTS));
                let own = ["content-length", "date", "x-request-id", "connection", "strict-transport-security"];
                for line in wire.headers.iter() {
                    assert!(
                        headers.contains_key(line.name) || own.contains(&line.name),
                        "{} only on the wire",
                        line.name
                    );
                }
                assert_eq!(value("date"), Some("Mon, 07 Dec 2026 04:00:00 GMT"));
                assert_eq!(value("connection"), Some("close"));
            }
        }
    }

    #[test]
    fn numbers_beyond_the_table_still_print() {
        let pre = Prerendered::new();
        assert_eq!(pre.number(0), "0");
        assert_eq!(pre.number(4095), "4095");
        assert_eq!(pre.number(86_400), "86400");
        for n in 0..6 {
            assert_eq!(pre.policy(n, 60), format!("{n};w=60"));
        }
    }
}
