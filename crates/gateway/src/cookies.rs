//! The gateway's cookies: their names, reading one from a request, and writing one
//! with the attributes every Palisade cookie shares (`Path=/`, `SameSite=Lax`, and
//! `Secure` when clients reach Palisade over TLS).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

pub const SESSION_COOKIE: &str = "palisade_session";
pub const CSRF_COOKIE: &str = "palisade_csrf";
pub const CLEARANCE_COOKIE: &str = "palisade_clearance";

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// How cookies are written.
#[derive(Clone, Copy, Debug, Default)]
pub struct CookiePolicy {
    /// Mark cookies `Secure` (the `auth.cookie_secure` setting).
    pub secure: bool,
}

impl CookiePolicy {
    /// A `Set-Cookie` value; `http_only` hides it from scripts.
    pub fn set(self, name: &str, value: &str, max_age: Duration, http_only: bool) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path=/; Max-Age={}; SameSite=Lax", max_age.as_secs());
        if http_only {
            cookie.push_str("; HttpOnly");
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_cookie_among_several_headers() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; palisade_session=abc"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn secure_cookies_say_so() {
        let set = CookiePolicy { secure: true }.set("x", "y", Duration::from_secs(5), true);
        assert_eq!(set, "x=y; Path=/; Max-Age=5; SameSite=Lax; HttpOnly; Secure");
    }
}
