//! `GET /challenge` and `POST /challenge`: the proof-of-work flow.
//!
//! API and CLI clients: `GET /challenge` (JSON) → find a nonce such that
//! `SHA-256(seed ‖ decimal nonce)` has `difficulty` leading zero bits → `POST /challenge`
//! `{"token", "nonce"}` → a clearance token, also set as the `palisade_clearance` cookie.
//! Send it back as that cookie or in `X-Palisade-Clearance`, with the same `User-Agent`
//! and from the same subnet. Browsers get a small page that does the same in a Web Worker.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use shield::{Challenge, PowError};

use super::metrics::EdgeAction;
use super::{CLEARANCE_COOKIE, CLEARANCE_HEADER, ClientIp, audit_later, now};
use crate::Gateway;
use crate::error::{ApiError, Reject, wants_html};
use crate::server::ClientAddr;

/// How the work is defined, for clients reading the JSON.
pub const ALGORITHM: &str = "find a decimal nonce (no sign, no leading zeros) such that SHA-256(UTF-8 seed followed \
                             by the nonce) has at least `difficulty` leading zero bits";

/// The client address the guard resolved, else the peer.
fn client_ip(ip: Option<&ClientIp>, addr: Option<&ClientAddr>) -> Option<IpAddr> {
    ip.map(|c| c.0).or_else(|| addr.map(|a| a.0.ip().to_canonical()))
}

fn challenge_json(c: &Challenge) -> Value {
    json!({
        "token": c.token,
        "seed": c.seed,
        "difficulty": c.difficulty,
        "expires_at": c.expires_at.as_secs(),
        "algorithm": ALGORITHM,
        "submit": "/challenge",
    })
}

/// The 403 a request gets when it needs a clearance: JSON with a fresh challenge inside
/// for API clients, the solver page for browsers (which returns to the same URL).
pub(crate) fn challenge_response(
    gw: &Gateway,
    ip: IpAddr,
    headers: &HeaderMap,
    bot_score: u8,
    reason: &str,
    now: Duration,
) -> Response {
    let binding = gw.edge.binding(ip, headers);
    let challenge = gw.edge.challenge(&binding, bot_score, now);
    if wants_html(headers) {
        return page(&challenge, None, StatusCode::FORBIDDEN);
    }
    let body = json!({
        "error": {
            "message": format!("solve the proof-of-work challenge first ({reason}); see `challenge`, or GET /challenge"),
            "type": Reject::ChallengeRequired.kind(),
            "param": null,
            "code": Reject::ChallengeRequired.code(),
        },
        "challenge": challenge_json(&challenge),
    });
    let mut response = (StatusCode::FORBIDDEN, Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
pub struct ChallengeQuery {
    return_to: Option<String>,
}

/// `GET /challenge`: a fresh challenge (JSON, or the solver page for browsers).
pub async fn get(
    State(gw): State<Arc<Gateway>>,
    ip: Option<axum::Extension<ClientIp>>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    Query(q): Query<ChallengeQuery>,
) -> Response {
    let Some(ip) = client_ip(ip.as_deref(), addr.as_deref()) else {
        return ApiError::new(Reject::InvalidRequest, "no client address").into_response();
    };
    let now = now();
    let score = super::guard::bot_verdict(&gw.edge, ip, &headers, gw.config.auth.cookie_secure, now).score;
    let challenge = gw.edge.challenge(&gw.edge.binding(ip, &headers), score, now);
    gw.edge.metrics.record(EdgeAction::Challenge, "bot_score");
    if wants_html(&headers) {
        return page(&challenge, q.return_to.as_deref(), StatusCode::OK);
    }
    let mut response = Json(challenge_json(&challenge)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
struct Answer {
    token: String,
    /// A decimal string; a JSON number is accepted too.
    nonce: Value,
}

/// `POST /challenge` `{"token", "nonce"}`: a clearance token (and cookie) for a valid,
/// unused solution from the client the challenge was issued to.
pub async fn post(
    State(gw): State<Arc<Gateway>>,
    ip: Option<axum::Extension<ClientIp>>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ip) = client_ip(ip.as_deref(), addr.as_deref()) else {
        return ApiError::new(Reject::InvalidRequest, "no client address").into_response();
    };
    let answer: Answer = match serde_json::from_slice(&body) {
        Ok(a) if body.len() <= 4096 => a,
        _ => {
            gw.metrics.reject(Reject::InvalidRequest);
            let message = "expected a JSON body {\"token\": \"…\", \"nonce\": \"…\"} (at most 4 KiB)";
            return ApiError::new(Reject::InvalidRequest, message).into_response();
        }
    };
    let nonce = match &answer.nonce {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let now = now();
    let binding = gw.edge.binding(ip, &headers);
    match gw.edge.redeem(&answer.token, &nonce, &binding, ip, now) {
        Ok(clearance) => {
            gw.edge.metrics.record(EdgeAction::Allow, "pow_solved");
            let p = &gw.edge.config.pow;
            let ttl = Duration::from_millis(p.clearance_ttl_ms);
            let body = json!({
                "clearance": clearance,
                "expires_in_s": ttl.as_secs(),
                "budget": p.clearance_budget,
                "cookie": CLEARANCE_COOKIE,
                "header": CLEARANCE_HEADER,
            });
            let mut response = Json(body).into_response();
            let mut cookie =
                format!("{CLEARANCE_COOKIE}={clearance}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax", ttl.as_secs());
            if gw.config.auth.cookie_secure {
                cookie.push_str("; Secure");
            }
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => {
            gw.edge.metrics.record(EdgeAction::Challenge, e.code());
            if gw.edge.audit_allowed(ip, now) {
                audit_later(&gw, "shield.challenge", "failed", Some(ip), e.code().into(), None);
            }
            let (reject, retry) = match e {
                PowError::Busy { retry_after } => {
                    (Reject::WaitingRoomFull, Some(retry_after.as_secs().clamp(1, 3600) as u32))
                }
                PowError::Malformed | PowError::BadNonce => (Reject::InvalidRequest, None),
                _ => (Reject::ChallengeFailed, None),
            };
            gw.metrics.reject(reject);
            let mut error = ApiError::new(reject, format!("{e} ({}); fetch a new challenge", e.code()));
            error.retry_after = retry;
            error.into_response()
        }
    }
}

/// A `return_to` that stays on this site: a path, never `//host` or a scheme.
fn local_path(candidate: Option<&str>) -> &str {
    match candidate {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.len() <= 2048 => p,
        _ => "",
    }
}

/// JSON for embedding in a `<script>`: no `<` can close the element.
fn script_json(value: &Value) -> String {
    value.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// The interstitial: self-contained (inline style and script, a Worker from a Blob, no
/// external resource). It solves, posts the answer, and returns to `return_to` (or reloads
/// the page it was served at).
fn page(challenge: &Challenge, return_to: Option<&str>, status: StatusCode) -> Response {
    let data = script_json(&json!({
        "token": challenge.token,
        "seed": challenge.seed,
        "difficulty": challenge.difficulty,
        "back": local_path(return_to),
    }));
    let html = PAGE.replace("__DATA__", &data).replace("__DIFFICULTY__", &challenge.difficulty.to_string());
    let mut response = (status, Html(html)).into_response();
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
    fn return_to_stays_on_the_site() {
        assert_eq!(local_path(Some("/auth/me?x=1")), "/auth/me?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "");
        assert_eq!(local_path(Some("https://evil.example/")), "");
        assert_eq!(local_path(Some("/\\evil")), "");
        assert_eq!(local_path(None), "");
    }

    #[test]
    fn embedded_json_cannot_close_the_script() {
        let s = script_json(&json!({"back": "/</script><script>alert(1)</script>"}));
        assert!(!s.contains("</script"), "{s}");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["src=\"http", "href=\"http", "<link", "import(", "importScripts"] {
            assert!(!PAGE.contains(needle), "{needle}");
        }
        assert!(PAGE.contains("crypto.subtle.digest('SHA-256'"));
        assert!(PAGE.contains("new Worker(URL.createObjectURL(new Blob("));
    }
}
