//! `kill -9` during a sign-up storm: whatever the process was doing, every account in
//! the store has its code and its audit entry (sign-up is one transaction), and every
//! sign-up a client was told succeeded is there. On SQLite and on PostgreSQL.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use store::{CodePurpose, Store};

async fn storm(database_url: &str) {
    let dir = scratch_dir();
    let mut palisade = Running::start(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("PALISADE_DATABASE_URL", database_url), ("PALISADE_SHIELD__LIMITS__ROUTES", "[]")],
    );
    let url = palisade.url.clone();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..16u32 {
        let (url, acknowledged, done) = (url.clone(), acknowledged.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let source: std::net::IpAddr = format!("127.0.{}.{}", c / 200 + 10, c % 200 + 1).parse().unwrap();
            let http = reqwest::Client::builder()
                .user_agent("palisade-tests/1")
                .local_address(source)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            for n in 0..40u32 {
                let body =
                    json!({"email": format!("storm-{c}-{n}@example.com"), "password": "correct horse battery staple"});
                let Ok(r) = http.post(format!("{url}/auth/register")).json(&body).send().await else { return };
                if r.status() == 201
                    && let Ok(v) = r.json::<Value>().await
                    && let Some(id) = v["user_id"].as_i64()
                {
                    acknowledged.lock().unwrap().push(id);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Kill in the middle of the storm, once some sign-ups are through.
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < 30 {
        assert!(Instant::now() < deadline, "the storm did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    palisade.signal("KILL");
    palisade.wait_exit(Duration::from_secs(10));
    for client in clients {
        let _ = client.await;
    }

    let store = Store::open(database_url).await.unwrap();
    let users = store.users_after(0, 100_000).await.unwrap();
    let audited: HashSet<String> = store
        .recent_audit(100_000, Some("auth.register"))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome == "ok")
        .map(|e| e.actor)
        .collect();
    let ids: HashSet<i64> = users.iter().map(|u| u.id).collect();
    for id in acknowledged.lock().unwrap().iter() {
        assert!(ids.contains(id), "sign-up {id} was acknowledged but is not in the store");
    }
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    for user in &users {
        assert!(audited.contains(&format!("user:{}", user.id)), "account {} has no audit entry", user.id);
        let code = store.attempt_verification_code(user.id, CodePurpose::Verify, now).await.unwrap();
        assert!(code.is_some(), "account {} has no code", user.id);
    }
    assert!(users.len() >= 30, "{} accounts", users.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_a_sign_up_storm_leaves_every_account_whole_on_sqlite() {
    let dir = scratch_dir();
    let url = format!("sqlite://{}", dir.path().join("storm.db").display());
    storm(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_a_sign_up_storm_leaves_every_account_whole_on_postgres() {
    let Some(db) = testkit::postgres::fresh_postgres().await else { return };
    storm(&db.url).await;
}
