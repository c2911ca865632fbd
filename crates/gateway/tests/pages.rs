//! The HTML a browser gets from the gateway itself: the proof-of-work page, the status
//! page and refusal pages, as served by the real listener.

mod common;

use common::*;
use serde_json::Value;

/// The data the challenge page's script runs on (`var C = {...};`).
fn embedded_data(page: &str) -> Value {
    let start = page.find("var C = ").expect("the page embeds its data") + "var C = ".len();
    let end = start + page[start..].find(";\n").expect("the data ends its statement");
    serde_json::from_str(&page[start..end]).unwrap_or_else(|e| panic!("{e}: {}", &page[start..end]))
}

async fn challenge_page(gw: &TestGateway, return_to: &str) -> String {
    let url = url::Url::parse_with_params(&format!("{}/challenge", gw.url), [("return_to", return_to)]).unwrap();
    let r = client().get(url).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 200, "{return_to:?}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn the_challenge_page_returns_only_to_a_path_on_this_site() {
    let gw = spawn_gateway(Vec::new(), |_| {}).await;
    assert_eq!(embedded_data(&challenge_page(&gw, "/auth/me?x=1").await)["back"], "/auth/me?x=1");
    // What a browser would read as another host once it drops tabs and newlines and
    // reads `\` as `/` (WHATWG URL), and the plain ways off the site.
    let hostile = [
        "/\t/evil.example:8080/",
        "/\n/evil.example/",
        "/\r/evil.example/",
        "/\r\n/evil.example/",
        "\t//evil.example/",
        " //evil.example/",
        "/\\evil.example/",
        "\\/evil.example/",
        "\\\\evil.example/",
        "//evil.example/",
        "///evil.example/",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\u{0}/evil.example/",
        "/\u{b}/evil.example/",
        "/ /evil.example/",
        "/\u{a0}/evil.example/",
        "/\u{3000}/evil.example/",
    ];
    for value in hostile {
        let page = challenge_page(&gw, value).await;
        assert_eq!(embedded_data(&page)["back"], "", "{value:?} was accepted");
    }
}

fn assert_secure(what: &str, headers: &reqwest::header::HeaderMap) {
    let csp = headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: CSP {csp:?}");
    assert!(csp.contains("default-src 'none'"), "{what}: CSP {csp:?}");
    assert!(!csp.contains("script-src") || what == "challenge page", "{what} runs no script: {csp:?}");
    assert_eq!(headers.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{what}");
    assert!(headers.get("referrer-policy").is_some(), "{what}: no Referrer-Policy");
}

#[tokio::test]
async fn every_html_page_carries_the_security_headers() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let c = client();
    let browse = |path: &str| c.get(format!("{}{path}", gw.url)).header("accept", "text/html").send();

    let status = browse("/status").await.unwrap();
    assert_eq!(status.status(), 200);
    assert!(status.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_secure("status page", status.headers());
    // The page's one stylesheet is allowed by its hash, not by 'unsafe-inline'.
    let csp = status.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("style-src 'sha256-") && !csp.contains("unsafe-inline"), "{csp}");

    let missing = browse("/nowhere").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_secure("404 page", missing.headers());
    let refused = c.get(format!("{}/v1/chat/completions", gw.url)).header("accept", "text/html").send().await.unwrap();
    assert_eq!(refused.status(), 405);
    assert_secure("405 page", refused.headers());

    let challenge = browse("/challenge").await.unwrap();
    assert_secure("challenge page", challenge.headers());

    // The web app sets its own, stricter policy; it is left as it is.
    let app = browse("/").await.unwrap();
    assert_eq!(app.headers()["content-security-policy"], web::CONTENT_SECURITY_POLICY);
}
