//! PostgreSQL going away under a running gateway: callers the node knew keep being
//! served from memory for a bounded time, everything that needs the store answers a
//! clean 503 `store_unavailable` with `Retry-After`, never a 500. Skipped (loudly)
//! without PostgreSQL, failed under `CI=true`.

mod common;

use std::time::Duration;

use accounts::service::AccountsConfig;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn with_the_store_gone_known_callers_are_served_and_everything_else_answers_503() {
    let Some(db) = testkit::postgres::fresh_postgres().await else { return };
    let sim = spawn_sim(instant_sim()).await;
    let accounts = AccountsConfig { credential_cache_s: 1, credential_grace_s: 600, ..test_accounts() };
    let keys = accounts::crypto::PiiKeys::generate();
    let gw =
        spawn_node(Some(&db.url), keys, accounts, vec![upstream("sim", &sim.server.url)], without_route_limits).await;
    let service = gw.gateway.accounts().service_user().await.unwrap();
    let (_, known) = gw.gateway.accounts().create_key(service, "known", "inference", None, "test").await.unwrap();
    let (_, unseen) = gw.gateway.accounts().create_key(service, "unseen", "inference", None, "test").await.unwrap();
    let http = client();
    let chat = |key: &str| {
        http.post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(key).json(&chat_body(false)).send()
    };
    assert_eq!(chat(&known).await.unwrap().status(), StatusCode::OK, "the node now knows this key");

    db.take_down().await;
    // Past the credential cache's second: only the grace keeps the key working now.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..3 {
        let r = chat(&known).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }

    let r = chat(&unseen).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");

    for (path, body) in [
        ("/auth/register", json!({"phone": CN_PHONE, "password": PASSWORD})),
        ("/auth/login", json!({"phone": CN_PHONE, "password": PASSWORD})),
    ] {
        let r = http.post(format!("{}{path}", gw.url)).json(&body).send().await.unwrap();
        let status = r.status();
        let retry = r.headers().get("retry-after").cloned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{path}: {body}");
        assert!(retry.is_some(), "{path}");
    }
}
