//! The refusals the listener answers itself, before a request has a context: an
//! address on the block list and a client over its per-address or per-subnet limit.
//! Under a flood these outnumber the requests served, so each is an atomic or two, a
//! table lookup and bytes rendered once at start: no JSON built, no page formatted,
//! no number printed, no router, no audit entry beyond the edge's sampled one.
//!
//! The edge decides ([`Turnstile`], implemented by `Edge`); this module only turns
//! its decision into the same response [`ApiError::render`] would give, which
//! `tests::prerendered_matches_the_rendered_refusal` holds it to.

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

pub const BLOCKED_MESSAGE: &str = "requests from your network are blocked";
pub const LIMITED_MESSAGE: &str = "too many requests from your address or network";

/// After this many refusals in a row on one connection, the listener closes it after
/// answering: a client that keeps hammering pays for a new connection, and stops
/// holding one of ours between its refusals.
pub const MAX_REFUSALS_IN_A_ROW: u32 = 32;

/// Numbers up to this are headers without an allocation.
const SMALL_NUMBERS: usize = 4096;

/// The two refusals, rendered once as JSON and as a page.
pub struct Prerendered {
    blocked_json: Bytes,
    blocked_html: Bytes,
    limited_json: Bytes,
    limited_html: Bytes,
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
        Prerendered {
            blocked_json: Bytes::from(blocked.json_body()),
            blocked_html: Bytes::from(pages::refusal_page(Reject::Blocked.status(), BLOCKED_MESSAGE, "blocked", None)),
            limited_json: Bytes::from(limited.json_body()),
            limited_html: Bytes::from(pages::refusal_page(
                Reject::RateLimited.status(),
                LIMITED_MESSAGE,
                "rate_limited",
                None,
            )),
            numbers,
            policies: Default::default(),
        }
    }

    /// The response for a refusal (`None` for [`Admit::Pass`]).
    pub fn response(&self, admit: &Admit, html: bool) -> Option<(Reject, Response<Body>)> {
        let (reject, body, limit) = match admit {
            Admit::Pass { .. } => return None,
            Admit::Blocked => (Reject::Blocked, if html { &self.blocked_html } else { &self.blocked_json }, None),
            Admit::Limited(d) => {
                (Reject::RateLimited, if html { &self.limited_html } else { &self.limited_json }, Some(d))
            }
        };
        let mut response = Response::new(Body::from(body.clone()));
        *response.status_mut() = reject.status();
        let headers = response.headers_mut();
        headers.reserve(12);
        let content_type = if html { "text/html; charset=utf-8" } else { "application/json" };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(d) = limit {
            if let Some(l) = LimitHeaders::of(d) {
                self.write_limit(headers, &l);
            }
            if let Some(seconds) = d.retry_after_secs() {
                headers.insert(header::RETRY_AFTER, self.number(seconds));
            }
        }
        if html {
            pages::secure_html(headers);
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

/// Whether the answer to a refusal should also close the connection (HTTP/1 only:
/// HTTP/2 has no `Connection` header; its streams are cheap to refuse).
pub fn close_after(refusals_in_a_row: u32, version: axum::http::Version) -> bool {
    refusals_in_a_row >= MAX_REFUSALS_IN_A_ROW
        && matches!(version, axum::http::Version::HTTP_11 | axum::http::Version::HTTP_10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use http_body_util::BodyExt;
    use shield::Gcra;

    async fn parts(response: Response<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    fn limited() -> Decision {
        let gcra = Gcra::per_period(1, Duration::from_secs(3600), 1).unwrap();
        let mut tat = 0;
        let now = Duration::from_secs(5);
        assert!(gcra.check(&mut tat, now, 1).allowed);
        let refused = gcra.check(&mut tat, now, 1);
        assert!(!refused.allowed);
        refused
    }

    #[tokio::test]
    async fn prerendered_matches_the_rendered_refusal() {
        let pre = Prerendered::new();
        for html in [false, true] {
            let cases = [
                (Admit::Blocked, ApiError::new(Reject::Blocked, BLOCKED_MESSAGE)),
                (Admit::Limited(limited()), ApiError::limited(LIMITED_MESSAGE, &limited())),
            ];
            for (admit, error) in cases {
                let (_, quick) = pre.response(&admit, html).unwrap();
                let mut slow = error.render(html);
                pages::secure_html(slow.headers_mut());
                let (qs, qh, qb) = parts(quick).await;
                let (ss, sh, sb) = parts(slow).await;
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
