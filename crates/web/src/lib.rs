//! The web assistant: sign-up (with the proof-of-work step and the waiting room),
//! login with a second factor, a chat with streamed replies and the account page,
//! served at `/` by `palisade serve` itself.
//!
//! The app is plain HTML, CSS and JavaScript under `assets/`, embedded in the binary.
//! It talks only to this origin (`/auth/*`, `/challenge`, `/v1/*`): no build step, no
//! CDN, nothing fetched from elsewhere. Conversations stay in the browser; the server
//! keeps no chat content.
//!
//! Every asset is served under two names: a content-hashed one
//! (`/app/app.1a2b3c4d5e6f7a8b.js`, cached for a year as `immutable`), which is the one
//! the page links to, and its plain name (`/app/app.js`, revalidated by `ETag`). The
//! page itself is always revalidated, so a new binary takes effect on the next load.
//! Every response carries [`CONTENT_SECURITY_POLICY`] and the other headers of
//! [`SECURITY_HEADERS`].

use std::sync::OnceLock;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The whole app, page and assets, in bytes (uncompressed): it must stay small enough
/// to load quickly on a phone. Enforced by a test.
pub const BUDGET_BYTES: usize = 100 * 1024;

/// Scripts, styles, workers and connections from this origin only; no inline code,
/// no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; worker-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Headers on every response of the app.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()"),
];

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// The assets the page links to, in the order its scripts run.
const ASSETS: [Asset; 8] = [
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../assets/app.css") },
    Asset { name: "i18n.js", content_type: JS, body: include_bytes!("../assets/i18n.js") },
    Asset { name: "markdown.js", content_type: JS, body: include_bytes!("../assets/markdown.js") },
    Asset { name: "qr.js", content_type: JS, body: include_bytes!("../assets/qr.js") },
    Asset { name: "api.js", content_type: JS, body: include_bytes!("../assets/api.js") },
    Asset { name: "app.js", content_type: JS, body: include_bytes!("../assets/app.js") },
    Asset { name: "pow.js", content_type: JS, body: include_bytes!("../assets/pow.js") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_bytes!("../assets/icon.svg") },
];

/// The page, with `{{name}}` where the hashed path of asset `name` goes.
const INDEX: &str = include_str!("../assets/index.html");

/// The routes of the app: `GET /` (the page) and `GET /app/{file}` (its assets).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(page)).route("/app/{file}", get(asset)).layer(axum::middleware::map_response(secure))
}

/// The page and every asset, hashed once per process.
struct Site {
    index: Bytes,
    index_etag: HeaderValue,
    /// `(hashed file name, asset, ETag)`, in [`ASSETS`] order.
    assets: Vec<(String, &'static Asset, HeaderValue)>,
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let assets: Vec<_> = ASSETS
            .iter()
            .map(|a| {
                let hash = fnv1a(a.body);
                let hashed = match a.name.rsplit_once('.') {
                    Some((stem, ext)) => format!("{stem}.{hash:016x}.{ext}"),
                    None => format!("{}.{hash:016x}", a.name),
                };
                (hashed, a, etag(hash))
            })
            .collect();
        let mut index = INDEX.to_owned();
        for (hashed, a, _) in &assets {
            index = index.replace(&format!("{{{{{}}}}}", a.name), &format!("/app/{hashed}"));
        }
        let index_etag = etag(fnv1a(index.as_bytes()));
        Site { index: Bytes::from(index), index_etag, assets }
    })
}

/// FNV-1a, 64 bits: a cache key for the file names, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn etag(hash: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{hash:016x}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

const REVALIDATE: &str = "no-cache";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

async fn page(headers: HeaderMap) -> Response {
    let site = site();
    respond(&headers, site.index.clone(), "text/html; charset=utf-8", &site.index_etag, REVALIDATE)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let site = site();
    let found = site.assets.iter().find_map(|(hashed, a, tag)| {
        if *hashed == file {
            Some((*a, tag, IMMUTABLE))
        } else if a.name == file {
            Some((*a, tag, REVALIDATE))
        } else {
            None
        }
    });
    match found {
        Some((a, tag, cache)) => respond(&headers, Bytes::from_static(a.body), a.content_type, tag, cache),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such file\n")
            .into_response(),
    }
}

/// 200 with the body, or 304 when the client already holds this version.
fn respond(
    headers: &HeaderMap,
    body: Bytes,
    content_type: &'static str,
    tag: &HeaderValue,
    cache: &'static str,
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == tag.to_str().unwrap_or("")));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, tag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower_service::Service;

    fn total_bytes() -> usize {
        INDEX.len() + ASSETS.iter().map(|a| a.body.len()).sum::<usize>()
    }

    #[test]
    fn the_whole_app_fits_the_budget() {
        let total = total_bytes();
        assert!(total <= BUDGET_BYTES, "the app is {total} bytes, over its budget of {BUDGET_BYTES}");
    }

    #[test]
    fn the_page_links_every_asset_by_its_hashed_name() {
        let index = std::str::from_utf8(&site().index).unwrap();
        assert!(!index.contains("{{"), "a placeholder was left: {index}");
        for (hashed, a, _) in &site().assets {
            assert!(index.contains(&format!("/app/{hashed}")), "{} is not linked", a.name);
            assert_ne!(*hashed, a.name);
        }
    }

    #[test]
    fn nothing_is_inline_or_from_elsewhere() {
        let index = INDEX.to_ascii_lowercase();
        assert!(!index.contains(" style="), "inline style attribute");
        assert!(!index.contains("<style"), "inline style element");
        for (i, _) in index.match_indices("<script") {
            let tag = &index[i..i + index[i..].find('>').unwrap()];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        for attribute in [" onclick=", " onload=", " onerror=", " onsubmit=", "javascript:"] {
            assert!(!index.contains(attribute), "{attribute} in the page");
        }
        for a in ASSETS.iter().map(|a| (a.name, a.body)).chain([("index.html", INDEX.as_bytes())]) {
            // An SVG file must name its XML namespace; that is not a fetch.
            let text = std::str::from_utf8(a.1).unwrap().replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
            for needle in ["http://", "https://", "@import", "url(", "importScripts"] {
                assert!(!text.contains(needle), "{} contains {needle}", a.0);
            }
        }
    }

    /// Reply text is rendered by building DOM nodes; no script may parse HTML strings.
    #[test]
    fn no_script_parses_html_or_evaluates_strings() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for needle in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "DOMParser",
                "createContextualFragment",
            ] {
                assert!(!text.contains(needle), "{} uses {needle}", a.name);
            }
        }
    }

    fn asset_text(name: &str) -> &'static str {
        let asset = ASSETS.iter().find(|a| a.name == name).unwrap();
        std::str::from_utf8(asset.body).unwrap()
    }

    /// The keys of one language's table in i18n.js: `key: '…'` at the start of an entry.
    fn keys(table: &str) -> std::collections::BTreeSet<&str> {
        table
            .split([',', '{', '\n'])
            .filter_map(|entry| entry.trim().split_once(": '").or_else(|| entry.trim().split_once(": \"")))
            .map(|(key, _)| key)
            .filter(|key| !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .collect()
    }

    #[test]
    fn both_languages_have_every_string_the_views_use() {
        let i18n = asset_text("i18n.js");
        let (en, zh) = i18n.split_once("\n    zh: {").unwrap();
        let (en, zh) = (keys(en), keys(zh));
        assert!(en.len() > 100, "{en:?}");
        assert_eq!(en.symmetric_difference(&zh).collect::<Vec<_>>(), Vec::<&&str>::new(), "keys in one language only");
        // Refusals are explained by kind: a title `e_KIND_t` and a text `e_KIND`.
        for key in en.iter().filter(|k| k.starts_with("e_")) {
            let pair = key.strip_suffix("_t").map_or_else(|| format!("{key}_t"), str::to_owned);
            assert!(en.contains(pair.as_str()) || *key == "e_generic_t", "{key} has no {pair}");
        }
        for script in ["app.js", "api.js"] {
            let text = asset_text(script);
            for (at, _) in text.match_indices("t('") {
                if text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let end = at + 3 + text[at + 3..].find('\'').unwrap();
                let key = &text[at + 3..end];
                if !text[end + 1..].starts_with([')', ',']) {
                    continue; // built at run time, like 'e_' + kind + '_t': checked below
                }
                assert!(en.contains(key), "{script} uses t('{key}'), which i18n.js lacks");
            }
        }
    }

    #[test]
    fn the_policy_allows_no_inline_code() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
    }

    async fn get(path: &str, if_none_match: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
        let mut app: Router = router();
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let response = app.call(request.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    fn assert_secure(headers: &HeaderMap) {
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
        }
    }

    #[tokio::test]
    async fn the_page_is_revalidated_and_carries_the_security_headers() {
        let (status, headers, body) = get("/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], REVALIDATE);
        assert_secure(&headers);
        assert!(body.starts_with(b"<!doctype html>"));
        let tag = headers[header::ETAG].to_str().unwrap().to_owned();
        let (status, headers, body) = get("/", Some(&tag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_secure(&headers);
    }

    #[tokio::test]
    async fn hashed_assets_are_immutable_and_plain_names_revalidate() {
        for (hashed, a, _) in &site().assets {
            let (status, headers, body) = get(&format!("/app/{hashed}"), None).await;
            assert_eq!(status, StatusCode::OK, "{hashed}");
            assert_eq!(headers[header::CONTENT_TYPE], a.content_type);
            assert_eq!(headers[header::CACHE_CONTROL], IMMUTABLE);
            assert_eq!(&body[..], a.body);
            assert_secure(&headers);
            let (status, headers, _) = get(&format!("/app/{}", a.name), None).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[header::CACHE_CONTROL], REVALIDATE);
            let tag = headers[header::ETAG].to_str().unwrap().to_owned();
            assert_eq!(get(&format!("/app/{}", a.name), Some(&tag)).await.0, StatusCode::NOT_MODIFIED);
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404_with_the_same_headers() {
        let (status, headers, _) = get("/app/nope.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_secure(&headers);
    }
}
