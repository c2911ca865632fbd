//! Trust tiers against an account farm, measured the way issue 17 measured the hole at
//! small scale: 20 established members chatting at about one request a second each, on a
//! model that generates 8 replies at a time, while 150 accounts verified minutes before
//! the attack (each from its own /24, named by a trusted proxy's `X-Forwarded-For`) keep
//! requests in flight. Members must keep being served; the farm gets what they leave.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use admission::PriorityClass;
use common::*;
use drill::sim::SimConfig;
use gateway::GatewayConfig;
use serde_json::json;
use store::{NewUser, UserStatus};

const DAY_MS: i64 = 86_400_000;
const CAPACITY: u32 = 8;
const MEMBERS: usize = 20;
const FARM: usize = 150;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn verified(created_at: i64) -> (NewUser, i64) {
    let user = NewUser {
        phone_enc: None,
        phone_idx: None,
        phone_region: None,
        email_enc: None,
        email_idx: None,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
        status: UserStatus::Active,
    };
    (user, created_at)
}

/// A verified account with an API key, created at `created_at` and used on `used_days`
/// distinct days before now.
async fn account(gw: &TestGateway, created_at: i64, used_days: i64) -> String {
    let accounts = gw.gateway.accounts();
    let (user, at) = verified(created_at);
    let id = accounts.store().create_user(&user, at).await.unwrap();
    for day in 0..used_days {
        accounts.store().record_use(id, created_at + (day + 1) * DAY_MS).await.unwrap();
    }
    accounts.create_key(id, "chat", "inference", None, "test").await.unwrap().1
}

fn config(c: &mut GatewayConfig) {
    without_route_limits(c);
    // A limit fixed at the model's capacity: the test is about who gets the slots, not
    // about how fast the adaptive limit learns them.
    c.admission.limit.initial = CAPACITY;
    c.admission.limit.min = CAPACITY;
    c.admission.limit.max = CAPACITY;
    // Every client comes through one loopback peer, the "load balancer".
    c.shield.trusted_proxies = vec!["127.0.0.1/32".into()];
    c.server.max_connections_per_address = 4096;
    c.server.max_silent_connections_per_address = 4096;
    c.server.max_silent_connections_per_subnet = 4096;
    c.server.max_connections = 8192;
}

/// One chat request; `Ok(latency)` when served.
async fn chat(http: &reqwest::Client, url: &str, key: &str, from: &str, user: &str) -> Result<Duration, u16> {
    let started = Instant::now();
    let body = json!({
        "model": "palisade-sim", "max_tokens": 5, "user": user,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let response = http.post(url).bearer_auth(key).header("x-forwarded-for", from).json(&body).send().await;
    match response {
        Ok(r) if r.status() == 200 => {
            r.bytes().await.map_err(|_| 0u16)?;
            Ok(started.elapsed())
        }
        Ok(r) => Err(r.status().as_u16()),
        Err(_) => Err(0),
    }
}

/// Each member sends `per_member` requests a second apart, starting staggered; the results.
async fn members_chat(url: &str, keys: &[String], per_member: usize) -> Vec<Result<Duration, u16>> {
    let tasks: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (url, key) = (url.to_owned(), key.clone());
            tokio::spawn(async move {
                let http = client();
                let from = format!("198.18.{i}.10");
                tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut sent = Vec::new();
                for _ in 0..per_member {
                    tick.tick().await;
                    let (http, url, key, from) = (http.clone(), url.clone(), key.clone(), from.clone());
                    sent.push(tokio::spawn(async move { chat(&http, &url, &key, &from, "member").await }));
                }
                let mut results = Vec::new();
                for request in sent {
                    results.push(request.await.unwrap());
                }
                results
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn p99(results: &[Result<Duration, u16>]) -> Duration {
    let mut served: Vec<Duration> = results.iter().filter_map(|r| r.ok()).collect();
    served.sort();
    served.get((served.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default()
}

fn success(results: &[Result<Duration, u16>]) -> f64 {
    results.iter().filter(|r| r.is_ok()).count() as f64 / results.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_members_keep_their_service_while_a_fresh_account_farm_floods() {
    let sim = spawn_sim(SimConfig {
        capacity: CAPACITY as usize,
        queue: 1024,
        queue_timeout: Duration::from_secs(30),
        ttft: Duration::from_millis(200),
        tokens_per_s: 0,
        ..SimConfig::default()
    })
    .await;
    let gw = spawn_gateway_on(None, vec![upstream("sim", &sim.server.url)], config).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let now = now_ms();
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        members.push(account(&gw, now - 90 * DAY_MS, 10).await);
    }
    // The farm: verified through the store minutes before the attack (the sign-up flow
    // itself is tested elsewhere; what matters here is what a verified account gets).
    let mut farm = Vec::new();
    for _ in 0..FARM {
        farm.push(account(&gw, now - 5 * 60_000, 0).await);
    }

    let quiet = members_chat(&url, &members, 3).await;
    assert_eq!(success(&quiet), 1.0, "quiet phase: {quiet:?}");
    let quiet_p99 = p99(&quiet);

    gw.gateway.set_under_attack(true);
    let stop = Arc::new(AtomicBool::new(false));
    let farm_served = Arc::new(AtomicU64::new(0));
    let farm_refused = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = farm
        .iter()
        .enumerate()
        .flat_map(|(i, key)| (0..2).map(move |_| (i, key.clone())))
        .map(|(i, key)| {
            let (url, stop, served, refused) = (url.clone(), stop.clone(), farm_served.clone(), farm_refused.clone());
            tokio::spawn(async move {
                let http = client();
                let from = format!("10.{}.{}.7", i / 250, i % 250);
                while !stop.load(Ordering::Relaxed) {
                    match chat(&http, &url, &key, &from, "farm").await {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            // A refused bot comes back soon; not so soon that the test
                            // measures the loopback instead of the gateway.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            0
                        }
                    };
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(20), "the farm holds slots", || {
        gw.gateway.admission().snapshot().in_flight[PriorityClass::Newcomer] > 0
    })
    .await;
    let usage_before = sim.stats.usage();
    let attack_started = Instant::now();
    let attack = members_chat(&url, &members, 10).await;
    let attack_time = attack_started.elapsed().as_secs_f64();
    let usage_after = sim.stats.usage();
    let snapshot = gw.gateway.admission().snapshot();
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.abort();
    }
    let (farm_served, farm_refused) = (farm_served.load(Ordering::Relaxed), farm_refused.load(Ordering::Relaxed));

    let slot_seconds = |who: &str| {
        usage_after.get(who).map_or(0.0, |u| u.slot_seconds) - usage_before.get(who).map_or(0.0, |u| u.slot_seconds)
    };
    let (member_time, farm_time) = (slot_seconds("member"), slot_seconds("farm"));
    let capacity_time = f64::from(CAPACITY) * attack_time;
    let attack_p99 = p99(&attack);
    eprintln!(
        "members: quiet p99 {quiet_p99:?}; attack success {:.1}% p99 {attack_p99:?} over {} requests; \
         model time: members {:.1}% farm {:.1}% of {capacity_time:.0} slot-s; farm served {farm_served} refused {farm_refused}",
        success(&attack) * 100.0,
        attack.len(),
        100.0 * member_time / capacity_time,
        100.0 * farm_time / capacity_time,
    );
    assert!(success(&attack) >= 0.99, "members' success under attack: {attack:?}");
    // The target is p99 within twice the quiet one; a shared CI machine gets a
    // quarter of a second of slack on top (the quiet p99 is about one generation, 200 ms).
    assert!(
        attack_p99 <= quiet_p99 * 2 + Duration::from_millis(250),
        "members' p99 {attack_p99:?} against {quiet_p99:?} in the quiet phase"
    );
    // The farm is served, but only from what members leave: its tier's share of the
    // newcomer class is 2 of the 8 slots, so it holds at most a quarter of the model.
    assert!(farm_time > 0.0, "the farm gets leftover capacity");
    assert!(farm_time <= 0.25 * capacity_time + 1.0, "farm held {farm_time:.1} of {capacity_time:.1} slot-s");
    assert_eq!(snapshot.refused(PriorityClass::Member, admission::RefusalReason::WouldTimeOut), 0);

    let metrics = client().get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("palisade_tier_decisions_total{tier=\"established\",reason=\"tenure\"}"), "{metrics}");
    assert!(metrics.contains("palisade_tier_decisions_total{tier=\"newcomer\",reason=\"created_near_attack\"}"));
    assert!(metrics.contains("palisade_admission_tier_admitted_total{tier=\"established\"}"));
    let store = gw.gateway.accounts().store().clone();
    eventually_async(Duration::from_secs(10), "demotions are audited", || {
        let store = store.clone();
        async move { !store.recent_audit(10, Some("tier.")).await.unwrap().is_empty() }
    })
    .await;
}

async fn eventually_async<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_call(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, body) = admin_call_json(gw, method, path, body).await;
    (status.as_u16(), body)
}

async fn decisions(gw: &TestGateway, tier: &str, reason: &str) -> u64 {
    let metrics = client().get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    let series = format!("palisade_tier_decisions_total{{tier=\"{tier}\",reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn the_operator_pins_lifts_and_flags_tiers_and_every_change_is_audited() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway_on(None, vec![upstream("sim", &sim.server.url)], without_route_limits).await;
    let accounts = gw.gateway.accounts();
    let (user, at) = verified(now_ms() - 60_000);
    let id = accounts.store().create_user(&user, at).await.unwrap();
    let key = accounts.create_key(id, "chat", "inference", None, "test").await.unwrap().1;
    let url = format!("{}/v1/chat/completions", gw.url);
    let http = client();
    gw.gateway.set_under_attack(true);
    chat(&http, &url, &key, "203.0.113.1", "x").await.unwrap();
    assert_eq!(decisions(&gw, "newcomer", "created_near_attack").await, 1);
    let store = accounts.store().clone();
    eventually_async(Duration::from_secs(10), "the day of use is recorded", || {
        let store = store.clone();
        async move { store.user(id).await.unwrap().unwrap().used_days == 1 }
    })
    .await;

    let path = format!("/admin/users/{id}/tier");
    let (status, body) = admin_call(&gw, reqwest::Method::PUT, &path, Some(json!({"tier": "gold"}))).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("tier")), "{body}");
    let (status, _) =
        admin_call(&gw, reqwest::Method::PUT, "/admin/users/999999/tier", Some(json!({"tier": "recent"}))).await;
    assert_eq!(status, 404);
    let (status, _) = admin_call(&gw, reqwest::Method::PUT, &path, Some(json!({"tier": "established"}))).await;
    assert_eq!(status, 204);
    chat(&http, &url, &key, "203.0.113.1", "x").await.unwrap();
    assert_eq!(decisions(&gw, "established", "pinned").await, 1, "a pin takes effect at once");
    let (status, _) = admin_call(&gw, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    chat(&http, &url, &key, "203.0.113.1", "x").await.unwrap();
    assert_eq!(decisions(&gw, "newcomer", "created_near_attack").await, 2, "lifted");

    gw.gateway.set_under_attack(false);
    assert_eq!(accounts.flag_cohort(&[id], "cohort:test", "operator").await.unwrap(), 1);
    chat(&http, &url, &key, "203.0.113.1", "x").await.unwrap();
    assert_eq!(decisions(&gw, "newcomer", "cohort").await, 1);
    let (_, flags) = admin_call(&gw, reqwest::Method::GET, "/admin/flags", None).await;
    assert_eq!(flags["cohorts"][0]["user_id"], id, "{flags}");
    assert_eq!(flags["cohorts"][0]["reason"], "cohort:test");
    let (status, _) = admin_call(&gw, reqwest::Method::DELETE, &format!("/admin/users/{id}/cohort"), None).await;
    assert_eq!(status, 204);
    chat(&http, &url, &key, "203.0.113.1", "x").await.unwrap();
    assert_eq!(decisions(&gw, "recent", "young").await, 1, "back to its age's tier");

    let used = accounts.store().user(id).await.unwrap().unwrap();
    assert_eq!(used.used_days, 1, "one day counted however many requests");
    assert!(used.first_used_at.is_some());
    let audit = accounts.store().recent_audit(20, Some("account.")).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["account.cohort.clear", "account.cohort.flag", "account.tier.lift", "account.tier.pin"]);
}

/// `per_account` chat requests at once from each of `keys`, account `i` calling from
/// `from(i)` with `prompt(i)`; how many were refused by the account's own limits.
async fn saturate(
    url: &str,
    keys: &[String],
    per_account: usize,
    from: impl Fn(usize) -> String,
    prompt: impl Fn(usize) -> String,
) -> usize {
    let http = client();
    let mut sent = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        for _ in 0..per_account {
            let body =
                json!({"model": "palisade-sim", "max_tokens": 5, "messages": [{"role": "user", "content": prompt(i)}]});
            let request = http.post(url).bearer_auth(key).header("x-forwarded-for", from(i)).json(&body).send();
            sent.push(tokio::spawn(request));
        }
    }
    let mut refused = 0;
    for request in sent {
        if request.await.unwrap().is_ok_and(|r| r.status() == 429) {
            refused += 1;
        }
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_accounts_saturating_their_limits_alike_are_flagged_as_a_cohort_and_listed() {
    let sim = spawn_sim(SimConfig { ttft: Duration::from_millis(300), tokens_per_s: 0, ..SimConfig::default() }).await;
    let gw = spawn_gateway_on(None, vec![upstream("sim", &sim.server.url)], config).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let now = now_ms();
    // Ten accounts made minutes apart, each on a network of its own (a /16 apart), all
    // asking the same thing, more at once than a recent account may.
    let mut farm = Vec::new();
    for i in 0..10 {
        farm.push(account(&gw, now - 600_000 + i * 1000, 0).await);
    }
    // And ten like them that vary their prompts: busy, but not alike.
    let mut busy = Vec::new();
    for i in 0..10 {
        busy.push(account(&gw, now - 600_000 + i * 1000, 0).await);
    }
    let refused = saturate(
        &url,
        &busy,
        4,
        |i| format!("10.{}.7.1", 100 + i),
        |i| {
            format!(
                "question number {i} about {}",
                ["rust", "tea", "maps", "jazz", "moss", "kites", "owls", "salt", "glass", "rain"][i]
            )
        },
    )
    .await;
    assert!(refused >= 10, "each account ran into its limit: {refused} refusals");
    let refused =
        saturate(&url, &farm, 4, |i| format!("10.{}.7.1", i + 1), |_| "write a long poem about harvest".into()).await;
    assert!(refused >= 10, "each account ran into its limit: {refused} refusals");

    let flagged = until_flagged(&gw, 10).await;
    assert!(flagged.iter().all(|f| f["reason"] == "cohort_prompt"), "{flagged:?}");
    let (_, audit) = admin_call(&gw, reqwest::Method::GET, "/admin/audit?action=account.cohort.flag", None).await;
    assert_eq!(audit["entries"][0]["actor"], "cohort-detector", "{audit}");
    // The accounts with prompts of their own were left alone: exactly the farm is flagged.
    let (_, flags) = admin_call(&gw, reqwest::Method::GET, "/admin/flags", None).await;
    assert_eq!(flags["cohorts"].as_array().unwrap().len(), 10, "{flags}");
    // A flagged account is placed in the newcomer tier from its next request.
    let before = decisions(&gw, "newcomer", "cohort").await;
    chat(&client(), &url, &farm[0], "10.1.7.1", "x").await.unwrap();
    assert_eq!(decisions(&gw, "newcomer", "cohort").await, before + 1);
}

async fn until_flagged(gw: &TestGateway, n: usize) -> Vec<serde_json::Value> {
    until(Duration::from_secs(10), &format!("{n} accounts flagged"), || async {
        let (_, flags) = admin_call(gw, reqwest::Method::GET, "/admin/flags", None).await;
        let cohorts = flags["cohorts"].as_array().cloned().unwrap_or_default();
        (cohorts.len() >= n).then_some(cohorts)
    })
    .await
}
