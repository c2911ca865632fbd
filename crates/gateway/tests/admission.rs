//! Priority admission seen from clients: members are served while an anonymous
//! flood waits or is refused, refusals carry the documented shape, and the
//! counts show in /metrics.

mod common;

use std::time::{Duration, Instant};

use admission::PriorityClass;
use common::*;
use drill::sim::SimConfig;
use gateway::GatewayConfig;

/// A model that can generate two replies at a time, each taking 300 ms.
fn slow_sim() -> SimConfig {
    SimConfig {
        capacity: 2,
        queue: 256,
        queue_timeout: Duration::from_secs(30),
        ttft: Duration::from_millis(300),
        tokens_per_s: 0,
        ..SimConfig::default()
    }
}

/// Admission with a fixed limit equal to the model's capacity, so the test
/// does not depend on how fast the adaptive limit learns.
fn fixed_limit(c: &mut GatewayConfig) {
    c.admission.limit.initial = 2;
    c.admission.limit.min = 2;
    c.admission.limit.max = 2;
    c.admission.per_account_max_in_flight = 1000;
    c.admission.account_share = 1.0;
}

#[tokio::test]
async fn members_are_served_promptly_while_an_anonymous_flood_waits() {
    let sim = spawn_sim(slow_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        fixed_limit(c);
        // The flood's 40 connections open at once, before any has sent its request;
        // the cap on such silent sockets per address is not what this test is about.
        c.server.max_silent_connections_per_address = 64;
        // Nor is the bot score's timing signal: the flood's requests arrive at
        // machine-regular intervals or not, depending on the machine, and when they do
        // the score asks them for proof of work (a 403; CI saw one).
        c.shield.bot.machine_timing = 0;
    })
    .await;
    let accounts = &gw.gateway.accounts();
    let user = accounts.service_user().await.unwrap();
    let (_, key) = accounts.create_key(user, "member", "inference", None, "test").await.unwrap();

    // The flood: 40 anonymous requests at once, 20 times what the model can take.
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let url = format!("{}/v1/chat/completions", gw.url);
            tokio::spawn(async move { client().post(url).json(&chat_body(false)).send().await.map(|r| r.status()) })
        })
        .collect();
    eventually(Duration::from_secs(10), "the flood queues", || {
        gw.gateway.admission().snapshot().queued[PriorityClass::Anonymous] > 0
    })
    .await;

    // A member's requests go past the queued flood into the half of the
    // capacity anonymous traffic may not hold.
    let c = client();
    for _ in 0..4 {
        let started = Instant::now();
        let response = c
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(&key)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // Served in about one generation time (300 ms); behind the flood it
        // would take 40 × 300 ms. The bound is generous for slow CI machines.
        assert!(started.elapsed() < Duration::from_secs(3), "member waited {:?}", started.elapsed());
    }
    let snapshot = gw.gateway.admission().snapshot();
    assert!(snapshot.admitted[PriorityClass::Member] >= 4);
    assert!(snapshot.in_flight[PriorityClass::Anonymous] <= 1, "anonymous holds at most half of 2");

    let mut refused = 0;
    for request in flood {
        let status = request.await.unwrap().unwrap();
        assert!(status == 200 || status == 503, "flood request got {status}");
        refused += usize::from(status == 503);
    }
    // 40 requests of 300 ms through one slot need 12 s, past anonymous traffic's
    // 10 s wait limit: some must have been refused (at once, when the
    // estimated wait was too long).
    assert!(refused > 0);
    let metrics = c.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("palisade_admission_admitted_total{class=\"member\"}"), "{metrics}");
    assert!(metrics.contains("palisade_admission_refused_total{class=\"anonymous\",reason=\"would_time_out\"}"));
}

/// A gateway whose clients may have one request in flight each, with one
/// anonymous request already admitted and waiting on the slow model.
async fn one_request_in_flight_with_a_cap_of_one()
-> (Sim, TestGateway, String, tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>) {
    let sim = spawn_sim(slow_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        fixed_limit(c);
        c.admission.per_account_max_in_flight = 1;
    })
    .await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let first = tokio::spawn(client().post(&url).json(&chat_body(false)).send());
    eventually(Duration::from_secs(10), "the first request is admitted", || {
        gw.gateway.admission().snapshot().in_flight[PriorityClass::Anonymous] == 1
    })
    .await;
    (sim, gw, url, first)
}

#[tokio::test]
async fn one_client_over_its_concurrency_cap_gets_429_with_retry_after() {
    let (_sim, _gw, url, first) = one_request_in_flight_with_a_cap_of_one().await;
    let second = client().post(&url).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(second.status(), 429);
    assert!(second.headers().get("retry-after").is_some());
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_concurrent_requests");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn a_browser_refused_by_admission_gets_a_readable_page() {
    let (_sim, _gw, url, first) = one_request_in_flight_with_a_cap_of_one().await;
    let page = client().post(&url).header("accept", "text/html").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(page.status(), 429);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("too_many_concurrent_requests"));
    first.await.unwrap().unwrap();
}
