//! Every refusal takes one path: whatever refused it (the edge, `/auth`, CSRF, the
//! operator's API, the proxy, the status page), the client gets the one error shape
//! and `palisade_rejections_total` counts it under the code the client read.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn from(source: &str, agent: &str) -> reqwest::Client {
    client_from(source, agent)
}

/// Sends `request`, checks the error shape, and returns the code.
async fn refused(request: reqwest::RequestBuilder, want: StatusCode) -> String {
    let r = request.send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, want, "{body}");
    let error = &body["error"];
    for field in ["message", "type", "code"] {
        assert!(error[field].is_string(), "`{field}` missing from {body}");
    }
    error["code"].as_str().unwrap().to_owned()
}

fn counted(metrics: &str, code: &str) -> u64 {
    let series = format!("palisade_rejections_total{{reason=\"{code}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn every_refusal_a_client_reads_is_counted_under_its_code() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        c.auth.allow_anonymous_inference = false;
        c.status.rate_limit.per_s = 0.01;
        c.status.rate_limit.burst = 1;
    })
    .await;
    let url = |path: &str| format!("{}{path}", gw.url);
    let http = client();
    let mut codes = Vec::new();

    // The router and the proxy.
    codes.push(refused(http.get(url("/nowhere")), StatusCode::NOT_FOUND).await);
    codes.push(refused(http.get(url("/v1/chat/completions")), StatusCode::METHOD_NOT_ALLOWED).await);
    codes.push(refused(http.post(url("/v1/chat/completions")).json(&chat_body(false)), StatusCode::UNAUTHORIZED).await);
    // `/auth`: bodies, CSRF, credentials, the login back-off, sessions, passwords.
    let login = |email: &str| http.post(url("/auth/login")).json(&json!({"email": email, "password": "wrong-wrong-1"}));
    codes.push(
        refused(
            http.post(url("/auth/login")).header("content-type", "application/json").body("{"),
            StatusCode::BAD_REQUEST,
        )
        .await,
    );
    codes.push(
        refused(
            http.post(url("/auth/register"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("email=a%40example.com&password=correct+horse+battery+staple"),
            StatusCode::FORBIDDEN,
        )
        .await,
    );
    codes.push(refused(http.post(url("/auth/login")).json(&json!({"password": "x"})), StatusCode::BAD_REQUEST).await);
    codes.push(refused(login("stuffed@example.com"), StatusCode::UNAUTHORIZED).await);
    let mut throttled = None;
    for _ in 0..10 {
        let r = login("stuffed@example.com").send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(r.json::<Value>().await.unwrap()["error"]["code"].as_str().unwrap().to_owned());
            break;
        }
    }
    codes.push(throttled.expect("the login back-off refuses at last"));
    codes.push(refused(http.get(url("/auth/me")), StatusCode::UNAUTHORIZED).await);
    codes.push(
        refused(
            http.post(url("/auth/register")).json(&json!({"email": "b@example.com", "password": "short"})),
            StatusCode::BAD_REQUEST,
        )
        .await,
    );
    // The operator's API.
    codes.push(refused(http.get(url("/admin/flags")), StatusCode::UNAUTHORIZED).await);
    codes.push(
        refused(
            http.post(url("/admin/blocklist")).bearer_auth(ADMIN_TOKEN).json(&json!({"cidr": "not a network"})),
            StatusCode::BAD_REQUEST,
        )
        .await,
    );
    // The edge: lists, the bot score, the challenge endpoint.
    let r = http
        .post(url("/admin/blocklist"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"kind": "block", "cidr": "127.0.0.9/32"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    codes.push(refused(from("127.0.0.9", TEST_AGENT).get(url("/auth/me")), StatusCode::FORBIDDEN).await);
    codes.push(
        refused(
            from("127.0.0.10", "curl/8.5.0").post(url("/auth/register")).json(&json!({"email": "c@example.com"})),
            StatusCode::FORBIDDEN,
        )
        .await,
    );
    codes.push(refused(http.post(url("/challenge")).body("nonsense"), StatusCode::BAD_REQUEST).await);
    // The status page's own limit and its API.
    assert_eq!(http.get(url("/status")).send().await.unwrap().status(), StatusCode::OK);
    codes.push(refused(http.get(url("/status")), StatusCode::TOO_MANY_REQUESTS).await);

    let metrics = client().get(url("/metrics")).send().await.unwrap().text().await.unwrap();
    for code in [
        "not_found",
        "method_not_allowed",
        "invalid_api_key",
        "invalid_body",
        "csrf_failed",
        "identifier_required",
        "invalid_credentials",
        "too_many_attempts",
        "unauthenticated",
        "too_short",
        "admin_unauthorized",
        "invalid_cidr",
        "blocked",
        "challenge_required",
        "invalid_request",
        "rate_limited",
    ] {
        assert!(codes.iter().any(|c| c == code), "{code} was not provoked: {codes:?}");
    }
    for code in &codes {
        assert!(counted(&metrics, code) >= 1, "{code} is not in palisade_rejections_total:\n{metrics}");
    }
}
