//! The listener's own defences, seen from the client: connection caps and
//! bodies sent too slowly.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test]
async fn connections_past_the_per_address_cap_get_429_and_are_closed() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        c.server.max_connections_per_address = 2;
    })
    .await;
    let _a = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let _b = TcpStream::connect(addr(&gw.url)).await.unwrap();
    eventually(Duration::from_secs(5), "two connections counted", || gw.gateway.connections().open() == 2).await;
    let mut third = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let reply = read_all(&mut third).await;
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    assert!(reply.contains("\"code\":\"too_many_connections\""), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("retry-after: 1"));

    // Closing one frees its place: a normal request succeeds again.
    drop(_a);
    eventually(Duration::from_secs(5), "place freed", || gw.gateway.connections().open() == 1).await;
    // One client, one connection: a second would be the address's third.
    let c = client();
    let status = c.get(format!("{}/healthz", gw.url)).send().await.unwrap().status();
    assert_eq!(status, 200);
    let metrics = c.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("palisade_connections_refused_total{cap=\"per_address\"} 1"), "{metrics}");
}

#[tokio::test]
async fn connections_past_the_total_cap_get_503() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        c.server.max_connections = 1;
    })
    .await;
    let _held = TcpStream::connect(addr(&gw.url)).await.unwrap();
    eventually(Duration::from_secs(5), "one connection counted", || gw.gateway.connections().open() == 1).await;
    let mut next = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let reply = read_all(&mut next).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("\"type\":\"server_error\""), "{reply}");
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_without_reaching_the_model() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        c.server.body_read_timeout_ms = 600;
    })
    .await;
    let mut stream = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nuser-agent: palisade-tests/1\r\ncontent-type: application/json\r\n\
                content-length: 1000\r\n\r\n{\"model\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    // ...and nothing more: the gateway must give up at the deadline, not wait forever.
    let reply = read_all(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"body_timeout\""), "{reply}");
    assert_eq!(sim.stats.snapshot().served, 0);
}

// ---- The edge guard: lists, limits, challenges, waiting room, attack mode ----

use std::net::IpAddr;

use gateway::GatewayConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A client whose requests come from `source` (any 127.0.0.0/8 address works on loopback).
fn from(source: &str) -> reqwest::Client {
    from_as(source, TEST_AGENT)
}

fn from_as(source: &str, agent: &str) -> reqwest::Client {
    client_from(source, agent)
}

async fn admin(gw: &TestGateway, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    admin_call_json(gw, method, path, body).await
}

async fn status_of(c: &reqwest::Client, url: String) -> StatusCode {
    c.get(url).send().await.unwrap().status()
}

/// Polls an HTTP condition until it holds (for effects of time passing, like expiry).
async fn eventually_status(c: &reqwest::Client, url: &str, want: StatusCode, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status_of(c, url.to_owned()).await != want {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn edge_gateway(tweak: impl FnOnce(&mut GatewayConfig)) -> (TestGateway, Sim) {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], tweak).await;
    (gw, sim)
}

async fn metrics(gw: &TestGateway) -> String {
    client().get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_blocked_address_gets_403_until_its_entry_expires_and_allow_entries_override() {
    let (gw, _sim) = edge_gateway(|_| {}).await;
    let models = format!("{}/v1/models", gw.url);
    let (status, entry) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/blocklist",
        Some(json!({"kind": "block", "cidr": "127.0.0.2", "ttl_s": 1, "note": "test"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");

    let blocked = from("127.0.0.2");
    let r = blocked.get(&models).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "blocked", "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let page = blocked.get(&models).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    assert!(page.text().await.unwrap().contains("<code>blocked</code>"));
    assert_eq!(status_of(&from("127.0.0.3"), models.clone()).await, StatusCode::OK, "others unaffected");
    // Health, metrics and the status page stay reachable for everyone.
    assert_eq!(status_of(&blocked, format!("{}/healthz", gw.url)).await, StatusCode::OK);
    assert_eq!(status_of(&blocked, format!("{}/status", gw.url)).await, StatusCode::OK);

    // The one-second entry expires by itself.
    eventually_status(&blocked, &models, StatusCode::OK, "the block entry expires").await;

    // A block on the network, an allow entry for one host in it.
    for body in [json!({"cidr": "127.0.0.0/24"}), json!({"kind": "allow", "cidr": "127.0.0.7/32", "note": "office"})] {
        let (status, answer) = admin(&gw, reqwest::Method::POST, "/admin/blocklist", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    assert_eq!(status_of(&from("127.0.0.7"), models.clone()).await, StatusCode::OK, "allow wins");
    assert_eq!(status_of(&from("127.0.0.8"), models.clone()).await, StatusCode::FORBIDDEN);
    let (_, listing) = admin(&gw, reqwest::Method::GET, "/admin/blocklist", None).await;
    let cidrs: Vec<&str> = listing["entries"].as_array().unwrap().iter().map(|e| e["cidr"].as_str().unwrap()).collect();
    assert_eq!(cidrs, ["127.0.0.7/32", "127.0.0.0/24"], "{listing}");
    let (status, _) =
        admin(&gw, reqwest::Method::DELETE, "/admin/blocklist", Some(json!({"kind": "block", "cidr": "127.0.0.0/24"})))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(status_of(&from("127.0.0.8"), models.clone()).await, StatusCode::OK, "removed live");
    let (status, answer) =
        admin(&gw, reqwest::Method::POST, "/admin/blocklist", Some(json!({"cidr": "10.0.0.1/8"}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_cidr")));

    let text = metrics(&gw).await;
    assert!(text.contains("palisade_edge_decisions_total{action=\"block\",reason=\"blocklist\"}"), "{text}");
    assert!(text.contains("palisade_rejections_total{reason=\"blocked\"}"), "{text}");
    let (_, audit) = admin(&gw, reqwest::Method::GET, "/admin/audit?action=shield.", None).await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["shield.blocklist.add", "shield.allowlist.add", "shield.blocklist.remove", "shield.block"] {
        assert!(actions.contains(&action), "{action} not audited: {actions:?}");
    }
}

#[tokio::test]
async fn a_blocked_client_on_one_connection_is_refused_then_still_reaches_the_health_check() {
    let (gw, _sim) = edge_gateway(|_| {}).await;
    let (status, _) =
        admin(&gw, reqwest::Method::POST, "/admin/blocklist", Some(json!({"cidr": "127.0.0.12/32"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.12:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr(&gw.url).parse().unwrap()).await.unwrap();
    // Pipelined on one connection: a chat request with its body, a browser's request,
    // then the health check, which is outside the edge's zones.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let host = addr(&gw.url);
    let sent = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}\
         GET /v1/models HTTP/1.1\r\nhost: {host}\r\naccept: text/html\r\n\r\n\
         GET /healthz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(sent.as_bytes()).await.unwrap();
    let replies = read_all(&mut stream).await;
    let answers: Vec<&str> = replies.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{replies}");
    assert!(answers[0].starts_with("403 Forbidden") && answers[0].contains("\"code\":\"blocked\""), "{}", answers[0]);
    assert!(answers[0].contains("x-request-id: ") && answers[0].contains("date: "), "{}", answers[0]);
    assert!(answers[1].starts_with("403") && answers[1].contains("<code>blocked</code>"), "{}", answers[1]);
    assert!(answers[1].contains("content-security-policy: "), "{}", answers[1]);
    assert!(answers[2].starts_with("200 OK"), "{}", answers[2]);
    let text = metrics(&gw).await;
    assert!(text.contains("palisade_rejections_total{reason=\"blocked\"} 2"), "{text}");
}

#[tokio::test]
async fn over_the_per_address_limit_answers_429_with_rate_limit_headers() {
    let (gw, _sim) = edge_gateway(|c| {
        c.shield.limits.per_ip = shield::RateConfig::new(1, 60_000, 2);
    })
    .await;
    let models = format!("{}/v1/models", gw.url);
    let c = from("127.0.0.5");
    assert_eq!(status_of(&c, models.clone()).await, StatusCode::OK);
    assert_eq!(status_of(&c, models.clone()).await, StatusCode::OK);
    let r = c.get(&models).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = r.headers();
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let retry: u64 = header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((50..=60).contains(&retry), "one token a minute, the burst of two spent: {retry}");
    assert_eq!(header("ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header("ratelimit-remaining").as_deref(), Some("0"));
    assert!(header("ratelimit-reset").is_some());
    assert_eq!(header("ratelimit-policy").as_deref(), Some("2;w=120"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["type"].as_str()),
        (Some("rate_limited"), Some("rate_limit_error"))
    );
    assert_eq!(status_of(&from("127.0.0.6"), models).await, StatusCode::OK, "another address has its own budget");
    assert!(metrics(&gw).await.contains("palisade_edge_decisions_total{action=\"limit\",reason=\"source_limit\"} 1"));
}

/// Sends `first`, then `more` copies of a plain `GET /v1/models`, at once on one
/// keep-alive connection from `source`, and returns the answers read until the gateway
/// closes it.
async fn hammer(gw: &TestGateway, source: &str, first: &str, more: usize) -> Vec<String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr(&gw.url).parse().unwrap()).await.unwrap();
    let request = format!("GET /v1/models HTTP/1.1\r\nhost: {}\r\nuser-agent: {TEST_AGENT}\r\n\r\n", addr(&gw.url));
    let first = first.replace("{host}", addr(&gw.url));
    stream.write_all(format!("{first}{}", request.repeat(more)).as_bytes()).await.unwrap();
    let replies = read_all(&mut stream).await;
    replies.split("HTTP/1.1 ").skip(1).map(str::to_owned).collect()
}

#[tokio::test]
async fn a_client_that_keeps_hammering_after_refusals_loses_its_connection() {
    let (gw, _sim) = edge_gateway(|c| {
        c.shield.limits.per_ip = shield::RateConfig::new(1, 3_600_000, 1);
    })
    .await;
    // A connection the listener's own HTTP/1.1 server keeps (the front): one request
    // served, then refusals, each a few thousand instructions, so the connection is
    // closed after many of them.
    let front = gateway::refusal::MAX_FRONT_REFUSALS_IN_A_ROW as usize;
    let plain = format!("GET /v1/models HTTP/1.1\r\nhost: {{host}}\r\nuser-agent: {TEST_AGENT}\r\n\r\n");
    let answers = hammer(&gw, "127.0.0.8", &plain, front + 8).await;
    assert!(answers[0].starts_with("200"), "{}", answers[0]);
    let refused = &answers[1..];
    assert_eq!(refused.len(), front, "closed after {front} refusals in a row, not {}", refused.len());
    assert!(refused.iter().all(|a| a.starts_with("429") && a.contains("\"code\":\"rate_limited\"")));
    assert!(refused[front - 1].to_ascii_lowercase().contains("connection: close"));
    assert!(!refused[front - 2].to_ascii_lowercase().contains("connection: close"));

    // A connection hyper serves (its first request is HTTP/1.0, which the front leaves
    // to hyper): refusals cost more there, and it is closed after 32.
    let old = format!(
        "GET /v1/models HTTP/1.0\r\nhost: {{host}}\r\nconnection: keep-alive\r\nuser-agent: {TEST_AGENT}\r\n\r\n"
    );
    let refused = hammer(&gw, "127.0.44.9", &old, 40).await;
    assert_eq!(refused.len(), 32, "hyper closes after 32 refusals in a row, not {}", refused.len());
    assert!(refused.iter().all(|a| a.starts_with("429")), "the HTTP/1.0 answer is not counted: {refused:?}");
    assert!(refused[31].to_ascii_lowercase().contains("connection: close"));
    assert!(!refused[30].to_ascii_lowercase().contains("connection: close"));
    let total = front + 32;
    assert!(metrics(&gw).await.contains(&format!("palisade_rejections_total{{reason=\"rate_limited\"}} {total}")));
}

#[tokio::test]
async fn a_key_over_its_own_rpm_is_limited_while_another_key_is_served() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway_on(None, vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let accounts = &gw.gateway.accounts();
    let user = accounts.service_user().await.unwrap();
    let (_, slow) = accounts.create_key(user, "slow", "inference", Some(2), "test").await.unwrap();
    let (_, fast) = accounts.create_key(user, "fast", "inference", None, "test").await.unwrap();
    let c = client();
    let call = |key: &str| c.get(format!("{}/v1/models", gw.url)).bearer_auth(key).send();
    assert_eq!(call(&slow).await.unwrap().status(), StatusCode::OK);
    assert_eq!(call(&slow).await.unwrap().status(), StatusCode::OK);
    let r = call(&slow).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["ratelimit-limit"], "2");
    for _ in 0..5 {
        assert_eq!(call(&fast).await.unwrap().status(), StatusCode::OK, "the other key is served");
    }
    assert!(metrics(&gw).await.contains("palisade_edge_decisions_total{action=\"limit\",reason=\"api_key_limit\"} 1"));
}

#[tokio::test]
async fn x_forwarded_for_is_honoured_only_from_a_trusted_peer() {
    let (gw, _sim) = edge_gateway(|c| c.shield.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let (status, _) =
        admin(&gw, reqwest::Method::POST, "/admin/blocklist", Some(json!({"cidr": "198.51.100.0/24"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let models = format!("{}/v1/models", gw.url);
    let forwarded = |c: reqwest::Client, xff: &'static str| {
        let url = models.clone();
        async move { c.get(url).header("x-forwarded-for", xff).send().await.unwrap().status() }
    };
    assert_eq!(forwarded(from("127.0.0.1"), "198.51.100.7").await, StatusCode::FORBIDDEN, "trusted proxy");
    assert_eq!(forwarded(from("127.0.0.2"), "198.51.100.7").await, StatusCode::OK, "anyone else is ignored");
    // A forged entry to the left of the real client changes nothing.
    assert_eq!(forwarded(from("127.0.0.1"), "203.0.113.1, 198.51.100.7").await, StatusCode::FORBIDDEN);
    assert_eq!(forwarded(from("127.0.0.1"), "198.51.100.7, 203.0.113.1").await, StatusCode::OK);
}

/// Fetches a challenge as `c` from a challenged route and solves it.
async fn solve_from(c: &reqwest::Client, url: &str) -> (String, String) {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "challenge_required", "{body}");
    let challenge = &body["challenge"];
    let nonce = shield::solve(challenge["seed"].as_str().unwrap(), challenge["difficulty"].as_u64().unwrap() as u8)
        .unwrap()
        .to_string();
    (challenge["token"].as_str().unwrap().to_owned(), nonce)
}

async fn submit(c: &reqwest::Client, gw: &TestGateway, token: &str, nonce: &str) -> (StatusCode, Value) {
    let r =
        c.post(format!("{}/challenge", gw.url)).json(&json!({"token": token, "nonce": nonce})).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

fn low_difficulty(c: &mut GatewayConfig) {
    c.shield.pow.base_difficulty = 6;
    c.shield.pow.under_attack_difficulty = 10;
    c.shield.pow.score_points_per_bit = 0;
}

#[tokio::test]
async fn a_scripted_client_must_solve_a_challenge_and_its_clearance_is_bound_and_single_use() {
    let (gw, _sim) = edge_gateway(|c| {
        low_difficulty(c);
        c.shield.pow.clearance_budget = 3;
    })
    .await;
    let csrf = format!("{}/auth/csrf", gw.url);
    let bot = from_as("127.0.0.9", "python-requests/2.32");
    assert_eq!(status_of(&from("127.0.0.9"), csrf.clone()).await, StatusCode::OK, "a named client is not challenged");
    let page = bot.get(&csrf).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let html = page.text().await.unwrap();
    assert!(html.contains("crypto.subtle.digest('SHA-256'") && !html.contains("src=\"http"), "{html}");

    let (token, nonce) = solve_from(&bot, &csrf).await;
    // A forged token and a wrong nonce are refused; the real answer passes once.
    let mut forged = token.clone();
    forged.replace_range(0..1, if forged.starts_with('A') { "B" } else { "A" });
    let (status, body) = submit(&bot, &gw, &forged, &nonce).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("challenge_failed")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("pow_forged"), "{body}");
    let (status, body) = submit(&from_as("127.0.0.9", "curl/8.5"), &gw, &token, &nonce).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("pow_wrong_client"), "{status} {body}");
    let (status, cleared) = submit(&bot, &gw, &token, &nonce).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    let (status, body) = submit(&bot, &gw, &token, &nonce).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"].as_str().unwrap().contains("pow_replayed"), "{body}");

    let clearance = cleared["clearance"].as_str().unwrap();
    let with = |c: &reqwest::Client, token: &str| c.get(&csrf).header("x-palisade-clearance", token.to_owned()).send();
    assert_eq!(with(&bot, clearance).await.unwrap().status(), StatusCode::OK);
    // Bound to the user agent and the subnet; a forged clearance is worthless.
    assert_eq!(with(&from_as("127.0.0.9", "curl/8.5"), clearance).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(
        with(&from_as("127.0.1.9", "python-requests/2.32"), clearance).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let mut fake = clearance.to_owned();
    fake.replace_range(2..3, if &fake[2..3] == "x" { "y" } else { "x" });
    let r = with(&bot, &fake).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("clearance_forged"));
    // The budget: three requests in all.
    assert_eq!(with(&bot, clearance).await.unwrap().status(), StatusCode::OK);
    assert_eq!(with(&bot, clearance).await.unwrap().status(), StatusCode::OK);
    let r = with(&bot, clearance).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("clearance_budget_spent"));

    // Browsers and cookie-keeping clients get it as a cookie.
    let jar = reqwest::Client::builder()
        .local_address("127.0.0.10".parse::<IpAddr>().unwrap())
        .user_agent("python-requests/2.32")
        .cookie_store(true)
        .build()
        .unwrap();
    let (token, nonce) = solve_from(&jar, &csrf).await;
    let r =
        jar.post(format!("{}/challenge", gw.url)).json(&json!({"token": token, "nonce": nonce})).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("palisade_clearance=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax")
    );
    assert_eq!(status_of(&jar, csrf.clone()).await, StatusCode::OK);

    let text = metrics(&gw).await;
    assert!(text.contains("palisade_edge_decisions_total{action=\"challenge\",reason=\"pow_replayed\"} 1"), "{text}");
    assert!(text.contains("palisade_edge_decisions_total{action=\"allow\",reason=\"cleared\"}"), "{text}");
}

#[tokio::test]
async fn expired_challenges_and_clearances_are_refused() {
    let (gw, _sim) = edge_gateway(|c| {
        low_difficulty(c);
        c.shield.pow.challenge_ttl_ms = 1_000;
        c.shield.pow.clearance_ttl_ms = 1_000;
    })
    .await;
    let csrf = format!("{}/auth/csrf", gw.url);
    let bot = from_as("127.0.0.11", "Go-http-client/1.1");
    let (first, first_nonce) = solve_from(&bot, &csrf).await;
    let (second, second_nonce) = solve_from(&bot, &csrf).await;
    let (status, cleared) = submit(&bot, &gw, &first, &first_nonce).await;
    assert_eq!(status, StatusCode::OK);
    let clearance = cleared["clearance"].as_str().unwrap().to_owned();
    // Both lifetimes are one second; wait them out (the clock is the wall clock).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body) = submit(&bot, &gw, &second, &second_nonce).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"].as_str().unwrap().contains("pow_expired"), "{body}");
    let r = bot.get(&csrf).header("x-palisade-clearance", clearance).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("clearance_expired"));
}

fn registration(n: u32) -> Value {
    json!({"email": format!("newcomer{n}@example.com"), "password": "correct horse battery staple"})
}

#[tokio::test]
async fn registrations_past_the_limit_wait_in_line_and_the_pass_admits_once() {
    let (gw, _sim) = edge_gateway(|c| {
        c.shield.limits.routes[0].rate = shield::RateConfig::new(1, 3_600_000, 1);
        c.shield.waiting_room.admit_per_sec = 1.0;
        c.shield.waiting_room.admit_burst = 1;
        c.shield.waiting_room.poll_interval_ms = 100;
    })
    .await;
    let c = from("127.0.0.20");
    let register = format!("{}/auth/register", gw.url);
    let r = c.post(&register).json(&registration(1)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = c.post(&register).json(&registration(2)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "a ticket instead of an error");
    assert!(r.headers().contains_key("retry-after"));
    let ticket: Value = r.json().await.unwrap();
    assert_eq!((ticket["status"].as_str(), ticket["position"].as_u64()), (Some("waiting"), Some(1)), "{ticket}");
    assert!(ticket["eta_s"].as_u64().is_some_and(|eta| eta <= 2), "{ticket}");
    let token = ticket["ticket"].as_str().unwrap().to_owned();
    let poll = |c: &reqwest::Client, ticket: &str| {
        // Tickets are base64url: safe in a query string as they are.
        c.get(format!("{}/auth/register/ticket?ticket={ticket}", gw.url)).send()
    };
    // Someone else arriving now queues behind, even though they never hit the limit.
    let other = from("127.0.3.1");
    let r = other.post(&register).json(&registration(3)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "fair: while anyone waits, newcomers join");
    assert_eq!(r.json::<Value>().await.unwrap()["position"], 2);

    // Forged and foreign tickets are refused.
    let r = poll(&c, &format!("{}x", &token[..token.len() - 1])).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = poll(&from_as("127.0.0.20", "another-agent"), &token).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "ticket_invalid");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let pass = loop {
        let answer: Value = poll(&c, &token).await.unwrap().json().await.unwrap();
        if answer["status"] == "admitted" {
            break answer["pass"].as_str().unwrap().to_owned();
        }
        assert_eq!(answer["status"], "waiting", "{answer}");
        assert!(tokio::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let with_pass = |n: u32| c.post(&register).header("x-palisade-pass", pass.clone()).json(&registration(n)).send();
    assert_eq!(with_pass(2).await.unwrap().status(), StatusCode::CREATED, "the pass skips the limit");
    let r = with_pass(4).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "once");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "ticket_invalid");
    let text = metrics(&gw).await;
    assert!(
        text.contains("palisade_edge_decisions_total{action=\"queue\",reason=\"waiting_room_joined\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn forced_attack_mode_raises_difficulty_and_puts_registration_behind_a_challenge() {
    let (gw, _sim) = edge_gateway(low_difficulty).await;
    let challenge = |c: reqwest::Client| {
        let url = format!("{}/challenge", gw.url);
        async move { c.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let person = from("127.0.0.30");
    assert_eq!(challenge(person.clone()).await["difficulty"], 6);
    let register = format!("{}/auth/register", gw.url);
    assert_eq!(person.post(&register).json(&registration(1)).send().await.unwrap().status(), StatusCode::CREATED);

    let (status, state) = admin(&gw, reqwest::Method::PUT, "/admin/attack-mode", Some(json!({"mode": "on"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((state["mode"].as_str(), state["switch"].as_str()), (Some("under_attack"), Some("on")), "{state}");
    assert!(gw.gateway.under_attack());
    let c = challenge(person.clone()).await;
    assert_eq!(c["difficulty"], 10, "{c}");

    // A well-behaved client must now solve before registering.
    let r = person.post(&register).json(&registration(2)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "challenge_required");
    assert_eq!(body["challenge"]["difficulty"], 10);
    let nonce = shield::solve(body["challenge"]["seed"].as_str().unwrap(), 10).unwrap();
    let (status, cleared) =
        submit(&person, &gw, body["challenge"]["token"].as_str().unwrap(), &nonce.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let r = person
        .post(&register)
        .header("x-palisade-clearance", cleared["clearance"].as_str().unwrap())
        .json(&registration(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let text = metrics(&gw).await;
    assert!(text.contains("palisade_edge_under_attack 1"), "{text}");
    let (_, state) = admin(&gw, reqwest::Method::PUT, "/admin/attack-mode", Some(json!({"mode": "off"}))).await;
    assert_eq!(state["mode"], "normal");
    assert_eq!(challenge(person).await["difficulty"], 6);
    let (_, audit) = admin(&gw, reqwest::Method::GET, "/admin/audit?action=shield.attack_mode", None).await;
    let outcomes: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["normal", "under_attack"], "newest first: {audit}");
    let (status, _) = admin(&gw, reqwest::Method::PUT, "/admin/attack-mode", Some(json!({"mode": "maybe"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_session_or_key_does_not_exempt_sign_up_or_login_from_the_bot_score() {
    let (gw, _sim) = edge_gateway(low_difficulty).await;
    // The attacker's own account: signed up, never verified, with a session and a key.
    let user_id = gw
        .gateway
        .accounts()
        .register(serde_json::from_value(registration(9)).unwrap(), None, accounts::sms::TextProof::Absent)
        .await
        .unwrap()
        .user_id;
    let login = json!({"email": "newcomer9@example.com", "password": "correct horse battery staple"});
    let session =
        gw.gateway.accounts().login(serde_json::from_value(login.clone()).unwrap(), None).await.unwrap().token;
    let (_, key) = gw.gateway.accounts().create_key(user_id, "bot", "inference account", None, "test").await.unwrap();
    let cookie = format!("palisade_session={session}");
    let register = format!("{}/auth/register", gw.url);
    let code = |r: reqwest::Response| async move { r.json::<Value>().await.unwrap()["error"]["code"].clone() };

    admin(&gw, reqwest::Method::PUT, "/admin/attack-mode", Some(json!({"mode": "on"}))).await;
    let bot = from("127.0.0.31");
    let with_session = bot.post(&register).header("cookie", &cookie).json(&registration(10)).send().await.unwrap();
    assert_eq!(with_session.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(with_session).await, "challenge_required");
    let with_key = bot.post(&register).bearer_auth(&key).json(&registration(11)).send().await.unwrap();
    assert_eq!(with_key.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(with_key).await, "challenge_required");
    admin(&gw, reqwest::Method::PUT, "/admin/attack-mode", Some(json!({"mode": "off"}))).await;

    // A scripted login is scored the same with a session as without one.
    let curl = from_as("127.0.0.32", "curl/8.5.0");
    let r = curl.post(format!("{}/auth/login", gw.url)).header("cookie", &cookie).json(&login).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(r).await, "challenge_required");
    // Elsewhere a valid session is still never challenged.
    let me = curl.get(format!("{}/auth/me", gw.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_account_past_its_token_budget_gets_429_with_rate_limit_headers() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway_on(None, vec![upstream("sim", &sim.server.url)], |c| {
        // 300 tokens a minute: one request asking for 200 fits, a second does not.
        c.shield.limits.account_tokens = shield::RateConfig::new(300, 60_000, 300);
    })
    .await;
    let accounts = &gw.gateway.accounts();
    let user = accounts.service_user().await.unwrap();
    let (_, key) = accounts.create_key(user, "budget", "inference", None, "test").await.unwrap();
    let body = json!({"model": "palisade-sim", "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}]});
    let url = format!("{}/v1/chat/completions", gw.url);
    let first = client().post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = client().post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
    assert!(second.headers().contains_key("ratelimit-remaining"), "{:?}", second.headers());
    let error: Value = second.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limited");
    assert!(error["error"]["message"].as_str().unwrap().contains("tokens per minute"));
}

#[tokio::test]
async fn a_trusted_load_balancer_names_the_client_with_the_proxy_protocol() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        // The balancer is 127.0.0.2; the test's own admin calls come from 127.0.0.1.
        c.shield.trusted_proxies = vec!["127.0.0.2/32".into()];
        c.shield.proxy_protocol = true;
    })
    .await;
    // Block the client the load balancer speaks for, not the balancer itself.
    let r = client()
        .post(format!("{}/admin/blocklist", gw.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"kind": "block", "cidr": "203.0.113.7/32"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let request = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                   user-agent: palisade-tests/1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let balancer = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(addr(&gw.url).parse().unwrap()).await.unwrap()
    };
    let mut blocked = balancer().await;
    blocked.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n").await.unwrap();
    blocked.write_all(request.as_bytes()).await.unwrap();
    let reply = read_all(&mut blocked).await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("\"code\":\"blocked\""), "{reply}");

    let mut other = balancer().await;
    other.write_all(b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 80\r\n").await.unwrap();
    other.write_all(request.as_bytes()).await.unwrap();
    let reply = read_all(&mut other).await;
    assert!(!reply.contains("\"code\":\"blocked\""), "{reply}");
    assert!(reply.starts_with("HTTP/1.1 "), "{reply}");

    // Without the header the balancer's connection is not HTTP to us: closed.
    let mut bare = balancer().await;
    bare.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_all(&mut bare).await, "");
}

#[tokio::test]
async fn an_operators_block_entry_outlives_a_restart_and_its_removal_does_too() {
    let db = testkit::postgres::fresh_sqlite();
    let sim = spawn_sim(instant_sim()).await;
    let start = || {
        spawn_gateway_on(Some(&db.url), vec![upstream("sim", &sim.server.url)], |c| {
            c.auth.allow_anonymous_inference = true
        })
    };
    let models = |gw: &TestGateway, source: &str| {
        let url = format!("{}/v1/models", gw.url);
        let c = client_from(source, TEST_AGENT);
        async move { c.get(url).send().await.unwrap().status() }
    };
    let first = start().await;
    let entry = json!({"cidr": "127.0.70.0/24", "note": "flood from one network"});
    let (status, _) = admin_call_json(&first, Method::POST, "/admin/blocklist", Some(entry)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(models(&first, "127.0.70.5").await, StatusCode::FORBIDDEN);
    first.shutdown().await;

    let second = start().await;
    assert_eq!(models(&second, "127.0.70.5").await, StatusCode::FORBIDDEN, "still blocked after the restart");
    assert_eq!(models(&second, "127.0.71.5").await, StatusCode::OK);
    let (_, listed) = admin_call_json(&second, Method::GET, "/admin/blocklist", None).await;
    assert_eq!(listed["entries"][0]["note"], "flood from one network", "{listed}");
    let gone = json!({"kind": "block", "cidr": "127.0.70.0/24"});
    let (status, _) = admin_call_json(&second, Method::DELETE, "/admin/blocklist", Some(gone)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    second.shutdown().await;

    let third = start().await;
    assert_eq!(models(&third, "127.0.70.5").await, StatusCode::OK, "the removal outlived the restart too");
}
