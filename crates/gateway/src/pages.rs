//! The HTML the gateway writes itself: the readable page a browser gets for a refusal,
//! and the proof-of-work interstitial. Both are self-contained (no external resource).
//! And the security headers every HTML answer carries ([`secure_html`]).

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use shield::Challenge;

/// How the work is defined, for clients reading the JSON.
pub const ALGORITHM: &str = "find a decimal nonce (no sign, no leading zeros) such that SHA-256(UTF-8 seed followed \
                             by the nonce) has at least `difficulty` leading zero bits";

/// A challenge as API clients read it.
pub fn challenge_json(c: &Challenge) -> Value {
    json!({
        "token": c.token,
        "seed": c.seed,
        "difficulty": c.difficulty,
        "expires_at": c.expires_at.as_secs(),
        "algorithm": ALGORITHM,
        "submit": "/challenge",
    })
}

/// The refusal page's stylesheet, the whole text of its `<style>` element.
const REFUSAL_CSS: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;\
                           color:#222}code{background:#f3f3f3;padding:0 .3em}";

/// The policy of an HTML page that brings none of its own (the status page, refusal
/// pages): no script at all, the two known stylesheets by their SHA-256 (so no
/// `'unsafe-inline'`), nothing from elsewhere, and no framing by any site.
static PAGE_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let allow = |css: &str| {
        format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(accounts::tokens::hash(css)))
    };
    let policy = format!(
        "default-src 'none'; style-src {} {}; img-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        allow(status::PAGE_CSS),
        allow(REFUSAL_CSS)
    );
    HeaderValue::try_from(policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"))
});

/// Give an HTML answer the headers a browser needs to keep it safe, where it does not
/// set them itself (the web app and the challenge page bring their own policy): a
/// Content-Security-Policy that forbids framing, `nosniff`, and no `Referer` leaving
/// with the page's URL. Other answers are left as they are.
pub fn secure_html(headers: &mut HeaderMap) {
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().get(..9).is_some_and(|m| m.eq_ignore_ascii_case("text/html")));
    if !html {
        return;
    }
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, PAGE_POLICY.clone());
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// A refusal as a small page, for people using a browser.
pub fn refusal(status: StatusCode, message: &str, code: &str, retry_after: Option<u32>) -> Response {
    (status, Html(refusal_page(status, message, code, retry_after))).into_response()
}

/// The refusal page's HTML.
pub fn refusal_page(status: StatusCode, message: &str, code: &str, retry_after: Option<u32>) -> String {
    let title = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{status} {title}</title>\
         <style>{REFUSAL_CSS}</style></head><body><h1>{title}</h1><p>{message}</p>\
         <p>Error code: <code>{code}</code></p>{retry}</body></html>",
        status = status.as_u16(),
        message = escape_html(message),
        code = escape_html(code),
        retry = retry_after
            .map(|s| format!("<p>Please try again in {s} second{}.</p>", if s == 1 { "" } else { "s" }))
            .unwrap_or_default(),
    )
}

/// A `return_to` that stays on this site, judged as a browser will read it (WHATWG
/// URL), not as it looks: a browser drops ASCII tabs and newlines anywhere in a URL,
/// trims control characters and spaces at its ends, and reads `\` as `/`, so
/// `/%09/evil.example/` and `/\evil.example` are `//evil.example/`, another site. So
/// only a path of printable ASCII without spaces or `\` is accepted: it starts with one
/// `/` (never `//`), which also rules out a scheme. Anything else gives `""` (the page
/// reloads itself instead).
pub fn local_path(candidate: Option<&str>) -> &str {
    match candidate {
        Some(p) if is_same_origin_path(p) => p,
        _ => "",
    }
}

fn is_same_origin_path(p: &str) -> bool {
    p.len() <= 2048
        && p.starts_with('/')
        && !p.starts_with("//")
        && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

/// JSON for embedding in a `<script>`: no `<` can close the element.
fn script_json(value: &Value) -> String {
    value.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// The interstitial: self-contained (inline style and script, a Worker from a Blob, no
/// external resource). It solves, posts the answer, and returns to `return_to` (or reloads
/// the page it was served at). Served with 403 when it stands in for a refused request.
pub fn challenge(challenge: &Challenge, return_to: Option<&str>) -> Response {
    let data = script_json(&json!({
        "token": challenge.token,
        "seed": challenge.seed,
        "difficulty": challenge.difficulty,
        "back": local_path(return_to),
    }));
    let html = PAGE.replace("__DATA__", &data).replace("__DIFFICULTY__", &challenge.difficulty.to_string());
    let mut response = Html(html).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; worker-src blob:; connect-src 'self'; \
             style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    response
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

const PAGE: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">
<title>Checking your browser</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}
progress{width:100%}code{background:#f3f3f3;padding:0 .3em}</style></head><body>
<h1>One moment…</h1>
<p>This site is busy defending itself against automated traffic. Your browser is doing a little
work (difficulty <code>__DIFFICULTY__</code>) to show it is not a bot; this usually takes a few seconds.</p>
<p id="status">Working…</p>
<noscript><p>This check needs JavaScript. API clients: see <code>GET /challenge</code> (JSON).</p></noscript>
<script>
(function () {
  "use strict";
  var C = __DATA__;
  var status = document.getElementById("status");
  var src = [
    "self.onmessage = async function (e) {",
    "  var seed = e.data.seed, bits = e.data.difficulty, enc = new TextEncoder();",
    "  var full = bits >> 3, rest = bits & 7, batch = 256;",
    "  function ok(d) { for (var i = 0; i < full; i++) if (d[i] !== 0) return false;",
    "    return rest === 0 || (d[full] >> (8 - rest)) === 0; }",
    "  for (var base = 0; ; base += batch) {",
    "    var jobs = [];",
    "    for (var i = 0; i < batch; i++) jobs.push(crypto.subtle.digest('SHA-256', enc.encode(seed + (base + i))));",
    "    var ds = await Promise.all(jobs);",
    "    for (var j = 0; j < batch; j++) if (ok(new Uint8Array(ds[j]))) { self.postMessage({nonce: base + j}); return; }",
    "    if (base % 8192 === 0) self.postMessage({tried: base + batch});",
    "  }",
    "};"
  ].join("\n");
  if (!window.Worker || !window.crypto || !crypto.subtle) {
    status.textContent = "This browser cannot run the check (it needs Web Workers and WebCrypto over HTTPS).";
    return;
  }
  var worker = new Worker(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
  worker.onmessage = function (e) {
    if (e.data.nonce === undefined) { status.textContent = "Working… " + e.data.tried + " tries"; return; }
    status.textContent = "Done; verifying…";
    fetch("/challenge", {method: "POST", credentials: "same-origin",
      headers: {"content-type": "application/json"},
      body: JSON.stringify({token: C.token, nonce: String(e.data.nonce)})})
      .then(function (r) {
        if (r.ok) { if (C.back) { location.replace(C.back); } else { location.reload(); } }
        else { status.textContent = "The check failed; trying again…"; setTimeout(function () { location.reload(); }, 2000); }
      });
  };
  worker.postMessage({seed: C.seed, difficulty: C.difficulty});
})();
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_html_answers_get_the_page_headers() {
        for (content_type, html) in [
            (" Text/HTML; charset=utf-8", true),
            ("text/html", true),
            ("text/htm", false),
            ("application/json", false),
            ("text/plain", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
            secure_html(&mut headers);
            assert_eq!(headers.contains_key(header::X_FRAME_OPTIONS), html, "{content_type}");
        }
    }

    #[test]
    fn return_to_stays_on_the_site() {
        assert_eq!(local_path(Some("/auth/me?x=1")), "/auth/me?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "");
        assert_eq!(local_path(Some("https://evil.example/")), "");
        assert_eq!(local_path(Some("/\\evil")), "");
        assert_eq!(local_path(None), "");
        for hostile in ["/\t/evil.example:8080/", "/\n/evil", "/\r/evil", " //evil", "/ /evil", "\\/evil"] {
            assert_eq!(local_path(Some(hostile)), "", "{hostile:?}");
        }
    }

    /// What a browser does to a URL before it resolves it (WHATWG URL): drop ASCII tab
    /// and newlines anywhere and C0 controls and spaces at either end, and read `\` as `/`.
    fn as_a_browser_reads_it(value: &str) -> String {
        let trimmed = value.trim_matches(|c: char| c <= ' ');
        trimmed.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).map(|c| if c == '\\' { '/' } else { c }).collect()
    }

    fn has_scheme(value: &str) -> bool {
        let mut chars = value.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && value.split_once(':').is_some_and(|(scheme, _)| {
                scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            })
    }

    /// Pieces of hostile and ordinary `return_to` values; `/` and what a browser drops or
    /// rewrites come most often, so their combinations are tried many times.
    fn return_to() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            4 => Just("/"),
            2 => Just("\\"),
            2 => Just("\t"),
            1 => Just("\n"),
            1 => Just("\r"),
            1 => Just(" "),
            1 => Just("\u{b}"),
            1 => Just("\u{0}"),
            1 => Just("\u{a0}"),
            2 => Just("evil.example"),
            1 => Just(":"),
            1 => Just("https"),
            1 => Just("@"),
            1 => Just("%2F"),
            1 => Just("."),
            1 => Just("?x=1"),
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2048))]
        #[test]
        fn no_accepted_return_to_leaves_the_site(value in return_to()) {
            let accepted = local_path(Some(&value));
            if !accepted.is_empty() {
                let read = as_a_browser_reads_it(accepted);
                proptest::prop_assert!(read.starts_with('/'), "{value:?} -> {read:?}");
                proptest::prop_assert!(!read.starts_with("//"), "{value:?} -> {read:?}");
                proptest::prop_assert!(!has_scheme(&read), "{value:?} -> {read:?}");
                let base = url::Url::parse("https://palisade.example/challenge").unwrap();
                let target = base.join(accepted).unwrap();
                proptest::prop_assert_eq!(target.origin(), base.origin(), "{:?}", value);
            }
        }
    }

    #[test]
    fn embedded_json_cannot_close_the_script() {
        let s = script_json(&json!({"back": "/</script><script>alert(1)</script>"}));
        assert!(!s.contains("</script"), "{s}");
    }

    #[test]
    fn the_challenge_page_loads_nothing_from_elsewhere() {
        for needle in ["src=\"http", "href=\"http", "<link", "import(", "importScripts"] {
            assert!(!PAGE.contains(needle), "{needle}");
        }
        assert!(PAGE.contains("crypto.subtle.digest('SHA-256'"));
        assert!(PAGE.contains("new Worker(URL.createObjectURL(new Blob("));
    }

    #[test]
    fn refusal_pages_escape_the_message() {
        assert_eq!(escape_html("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
        let page = refusal(StatusCode::NOT_FOUND, "<script>x</script>", "not_found", Some(2));
        assert_eq!(page.status(), StatusCode::NOT_FOUND);
    }
}
