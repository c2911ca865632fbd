//! Reading a cookie from a request's `Cookie` headers (`gateway::cookies::cookie`), and
//! reading back what `CookiePolicy::set` writes.
#![no_main]

use std::time::Duration;

use gateway::cookies::{CookiePolicy, cookie};
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line names the cookie; each further line is one `Cookie` header.
    let mut lines = data.split(|&b| b == b'\n');
    let name = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(header::COOKIE, value);
        }
    }
    if let Some(value) = cookie(&headers, &name) {
        assert!(!value.contains(';'), "a value ends at `;`: {value:?}");
        let pair = format!("{name}={value}");
        let found = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains(&pair));
        assert!(found, "{pair:?} is in no header");
    }

    // What Palisade writes, it reads back: a cookie name (an RFC 6265 token) and a value
    // free of separators round-trip through `Set-Cookie` → `Cookie`.
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let value = name.split_once('=').map_or("v", |(_, v)| v);
    let name = name.split_once('=').map_or(name.as_str(), |(n, _)| n);
    if token(name) && value.bytes().all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b)) {
        for secure in [false, true] {
            let set = CookiePolicy { secure }.set(name, value, Duration::from_secs(60), true);
            let mut sent = HeaderMap::new();
            // A browser sends back only `name=value`; the attributes after it must not
            // confuse a reader that is given the whole line either.
            sent.append(header::COOKIE, set.clone());
            assert_eq!(cookie(&sent, name), Some(value), "{set:?}");
        }
    }
});
