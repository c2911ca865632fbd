//! The public status page as visitors, status aggregators and the operator see
//! it: incidents the operator opens, updates and resolves; components forced
//! down; automatic incidents when an upstream fails and recovers; under-attack
//! mode; maintenance; the page's own rate limit; the served JSON against
//! recorded Statuspage responses; and the HTML page in a real browser.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode as AxumStatus;
use axum::routing::get;
use common::*;
use gateway::GatewayConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Generous: CI machines are slow and shared; the checks are polls, not sleeps.
const PATIENCE: Duration = Duration::from_secs(30);

/// A recorder fast enough for tests: 50 ms ticks, two samples to move, automatic
/// incidents after one second, upstream health checked every 50 ms; no status
/// rate limit, since the tests poll.
fn quick(c: &mut GatewayConfig) {
    c.status.rate_limit.per_s = 0.0;
    c.status.tick_ms = 50;
    c.status.degrade_after = 2;
    c.status.recover_after = 2;
    c.status.auto_incident_after_s = 1;
    c.proxy.health_check.interval_ms = 50;
    c.proxy.health_check.timeout_ms = 1_000;
    c.proxy.health_check.unhealthy_after = 1;
    c.proxy.health_check.healthy_after = 1;
}

async fn get_json(base: &str, path: &str) -> Value {
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

async fn admin(base: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = client().request(method, format!("{base}{path}")).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Poll `check` until it returns `Some`, failing after [`PATIENCE`].
async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    common::until(PATIENCE, what, check).await
}

fn component<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["components"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("{id} in {doc}"))
}

fn incidents(doc: &Value) -> &Vec<Value> {
    doc["incidents"].as_array().unwrap()
}

fn bodies(incident: &Value) -> Vec<&str> {
    incident["incident_updates"].as_array().unwrap().iter().map(|u| u["body"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn an_operator_incident_is_published_updated_resolved_and_kept_across_a_restart() {
    let sim = spawn_sim(instant_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("status.db").display());
    let gw = spawn_gateway_on(Some(&db), vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let base = gw.url.clone();

    let open = json!({"name": "Slow chat replies", "impact": "major", "component_ids": ["api"],
                      "body": "We are looking into slow replies."});
    let (status, incident) = admin(&base, Method::POST, "/admin/incidents", Some(open)).await;
    assert_eq!(status, StatusCode::CREATED, "{incident}");
    let id = incident["id"].as_i64().unwrap();
    assert_eq!((incident["status"].as_str(), incident["automatic"].as_bool()), (Some("investigating"), Some(false)));

    // Shown at once: the admin answer comes after the page was re-rendered.
    let unresolved = get_json(&base, "/api/v2/incidents/unresolved.json").await;
    assert_eq!(incidents(&unresolved).len(), 1, "{unresolved}");
    let shown = &incidents(&unresolved)[0];
    assert_eq!((shown["id"].as_str(), shown["impact"].as_str()), (Some(id.to_string().as_str()), Some("major")));
    assert_eq!(shown["components"][0]["id"], "api");
    let summary = get_json(&base, "/api/v2/summary.json").await;
    assert_eq!(summary["status"]["indicator"], "major", "{summary}");

    let update = json!({"status": "monitoring", "body": "A fix is out; we are watching."});
    let (status, _) = admin(&base, Method::POST, &format!("/admin/incidents/{id}/updates"), Some(update)).await;
    assert_eq!(status, StatusCode::OK);
    let unresolved = get_json(&base, "/api/v2/incidents/unresolved.json").await;
    assert_eq!(incidents(&unresolved)[0]["status"], "monitoring");
    assert!(incidents(&unresolved)[0]["monitoring_at"].is_string());

    let (status, resolved) = admin(
        &base,
        Method::POST,
        &format!("/admin/incidents/{id}/resolve"),
        Some(json!({"body": "Replies are fast again."})),
    )
    .await;
    assert_eq!((status, resolved["status"].as_str()), (StatusCode::OK, Some("resolved")));
    assert!(incidents(&get_json(&base, "/api/v2/incidents/unresolved.json").await).is_empty());
    let all = get_json(&base, "/api/v2/incidents.json").await;
    let expected = ["Replies are fast again.", "A fix is out; we are watching.", "We are looking into slow replies."];
    assert_eq!(bodies(&incidents(&all)[0]), expected, "updates newest first, as Statuspage lists them");
    assert!(incidents(&all)[0]["resolved_at"].is_string());

    let (_, audit) = admin(&base, Method::GET, "/admin/audit?action=status.incident.", None).await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["status.incident.resolve", "status.incident.update", "status.incident.open"]);

    // A restart on the same database keeps the incident and its updates.
    gw.shutdown().await;
    let gw = spawn_gateway_on(Some(&db), vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let all = get_json(&gw.url, "/api/v2/incidents.json").await;
    assert_eq!(incidents(&all).len(), 1, "{all}");
    assert_eq!(bodies(&incidents(&all)[0]), expected);
    let feed = client().get(format!("{}/status/history.atom", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(feed.contains("Slow chat replies"));
}

#[tokio::test]
async fn a_forced_component_shows_in_components_json_and_the_badge() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let badge = || async {
        let r = client().get(format!("{}/status/badge.svg", gw.url)).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        r.text().await.unwrap()
    };
    assert!(badge().await.contains(">operational<"));

    let (status, body) =
        admin(&gw.url, Method::PUT, "/admin/components/api", Some(json!({"status": "major_outage"}))).await;
    assert_eq!((status, body["override"].as_str()), (StatusCode::OK, Some("major_outage")));
    let components = get_json(&gw.url, "/api/v2/components.json").await;
    assert_eq!(component(&components, "api")["status"], "major_outage");
    assert_eq!(component(&components, "web")["status"], "operational");
    assert!(badge().await.contains(">partial outage<"), "one of several components down");

    let (status, _) = admin(&gw.url, Method::PUT, "/admin/components/api", Some(json!({"status": null}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(component(&get_json(&gw.url, "/api/v2/components.json").await, "api")["status"], "operational");
    assert!(badge().await.contains(">operational<"));

    let (_, audit) = admin(&gw.url, Method::GET, "/admin/audit?action=status.component.", None).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "{audit}");
}

/// An upstream whose health check answers 200 or 503 as the test says.
async fn switchable_upstream() -> (TestServer, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let router = Router::new().route(
        "/v1/models",
        get(move || {
            let up = flag.load(Ordering::Relaxed);
            async move {
                if up {
                    (AxumStatus::OK, axum::Json(json!({"object": "list", "data": []})))
                } else {
                    (AxumStatus::SERVICE_UNAVAILABLE, axum::Json(json!({"error": "down"})))
                }
            }
        }),
    );
    (serve_router(router).await, up)
}

#[tokio::test]
async fn an_upstream_going_down_opens_an_incident_that_resolves_when_it_returns() {
    let (server, up) = switchable_upstream().await;
    let gw = spawn_gateway(vec![upstream("gpu-a", &server.url)], quick).await;
    let base = gw.url.clone();
    assert!(incidents(&get_json(&base, "/api/v2/incidents.json").await).is_empty());

    up.store(false, Ordering::Relaxed);
    let incident = until("an automatic incident for the model", || async {
        let doc = get_json(&base, "/api/v2/incidents/unresolved.json").await;
        incidents(&doc)
            .iter()
            .find(|i| i["components"].as_array().unwrap().iter().any(|c| c["id"] == "model-gpu-a"))
            .cloned()
    })
    .await;
    assert_eq!((incident["status"].as_str(), incident["impact"].as_str()), (Some("investigating"), Some("critical")));
    assert_eq!(incident["name"], "Model gpu-a: a major outage");
    let components = get_json(&base, "/api/v2/components.json").await;
    assert_eq!(component(&components, "model-gpu-a")["status"], "major_outage");
    assert_eq!(component(&components, "api")["status"], "major_outage", "the only upstream is down");

    // The uptime bar of today holds the outage and names the incident.
    let html = client().get(format!("{base}/status")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("· Model gpu-a: a major outage</title>"), "{html}");
    assert!(!html.contains("· 100.00% uptime · Model gpu-a"), "today had downtime");

    up.store(true, Ordering::Relaxed);
    let resolved = until("the automatic incident to resolve", || async {
        let doc = get_json(&base, "/api/v2/incidents.json").await;
        let id = incident["id"].clone();
        incidents(&doc).iter().find(|i| i["id"] == id && i["status"] == "resolved").cloned()
    })
    .await;
    assert!(bodies(&resolved)[0].contains("operating normally again"), "{resolved}");
    assert!(resolved["resolved_at"].is_string());
    let components = get_json(&base, "/api/v2/components.json").await;
    assert_eq!(component(&components, "model-gpu-a")["status"], "operational");
    let (_, audit) = admin(&base, Method::GET, "/admin/audit?action=status.incident.auto_", None).await;
    assert!(audit["entries"].as_array().unwrap().len() >= 2, "{audit}");
}

#[tokio::test]
async fn under_attack_mode_degrades_web_and_api_and_tells_users() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], quick).await;
    let base = gw.url.clone();

    gw.gateway.set_under_attack(true);
    let summary = until("the attack notice", || async {
        let doc = get_json(&base, "/api/v2/summary.json").await;
        (!incidents(&doc).is_empty()).then_some(doc)
    })
    .await;
    assert_eq!(component(&summary, "web")["status"], "degraded_performance");
    assert_eq!(component(&summary, "api")["status"], "degraded_performance");
    assert_eq!(component(&summary, "login")["status"], "operational");
    let notice = &incidents(&summary)[0];
    assert_eq!(
        bodies(notice),
        ["We are mitigating a large-scale malicious attack; existing users may see degraded performance."]
    );

    gw.gateway.set_under_attack(false);
    let all = until("the attack notice to resolve", || async {
        let doc = get_json(&base, "/api/v2/incidents.json").await;
        (incidents(&doc)[0]["status"] == "resolved").then_some(doc)
    })
    .await;
    assert_eq!(bodies(&incidents(&all)[0]).len(), 2);
    let components = get_json(&base, "/api/v2/components.json").await;
    assert_eq!(component(&components, "web")["status"], "operational");
}

#[tokio::test]
async fn scheduled_maintenance_is_listed_and_puts_components_under_maintenance() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let now = time::OffsetDateTime::now_utc();
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let body = json!({"name": "Database upgrade", "body": "Sign-in may be slow.", "component_ids": ["login"],
                      "scheduled_for": rfc(now - time::Duration::minutes(5)),
                      "scheduled_until": rfc(now + time::Duration::hours(1))});
    let (status, answer) = admin(&gw.url, Method::POST, "/admin/maintenances", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let later = json!({"name": "Model swap", "body": "New weights.", "component_ids": ["api"],
                       "scheduled_for": rfc(now + time::Duration::days(2)),
                       "scheduled_until": rfc(now + time::Duration::days(2) + time::Duration::hours(1))});
    assert_eq!(admin(&gw.url, Method::POST, "/admin/maintenances", Some(later)).await.0, StatusCode::CREATED);

    let active = get_json(&gw.url, "/api/v2/scheduled-maintenances/active.json").await;
    let active = active["scheduled_maintenances"].as_array().unwrap();
    assert_eq!((active.len(), active[0]["name"].as_str()), (1, Some("Database upgrade")));
    assert_eq!(active[0]["status"], "in_progress");
    let upcoming = get_json(&gw.url, "/api/v2/scheduled-maintenances/upcoming.json").await;
    assert_eq!(upcoming["scheduled_maintenances"][0]["name"], "Model swap");
    let components = get_json(&gw.url, "/api/v2/components.json").await;
    assert_eq!(component(&components, "login")["status"], "under_maintenance");
    let status = get_json(&gw.url, "/api/v2/status.json").await;
    assert_eq!(status["status"]["indicator"], "maintenance");

    let backwards = json!({"name": "x", "body": "y", "scheduled_for": rfc(now), "scheduled_until": rfc(now)});
    assert_eq!(admin(&gw.url, Method::POST, "/admin/maintenances", Some(backwards)).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_status_page_has_its_own_rate_limit() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        c.status.rate_limit.per_s = 0.5;
        c.status.rate_limit.burst = 3;
    })
    .await;
    for path in ["/status", "/api/v2/summary.json", "/status/badge.svg"] {
        let r = client().get(format!("{}{path}", gw.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = client().get(format!("{}/api/v2/status.json", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u32 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let page = client().get(format!("{}/status", gw.url)).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(page.text().await.unwrap().contains("Please try again in"));
    // Other routes are not this limit's business.
    assert_eq!(client().get(format!("{}/healthz", gw.url)).send().await.unwrap().status(), StatusCode::OK);
    let metrics = client().get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("palisade_rejections_total{reason=\"rate_limited\"} 2"), "{metrics}");
}

#[tokio::test]
async fn operator_mistakes_get_clear_errors() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let base = gw.url.as_str();
    let cases = [
        (Method::POST, "/admin/incidents", json!({"name": "x", "body": "y", "component_ids": ["moon"]}), 400, "moon"),
        (Method::POST, "/admin/incidents", json!({"name": "x", "body": "y", "impact": "huge"}), 400, "impact"),
        (Method::POST, "/admin/incidents", json!({"name": " ", "body": "y"}), 400, "name"),
        (Method::POST, "/admin/incidents", json!({"name": "x"}), 400, "body"),
        (Method::POST, "/admin/incidents/999/updates", json!({"status": "monitoring", "body": "b"}), 404, "999"),
        (Method::POST, "/admin/incidents/1/updates", json!({"status": "fixed", "body": "b"}), 400, "fixed"),
        (Method::POST, "/admin/incidents/999/resolve", json!({}), 404, "999"),
        (Method::PUT, "/admin/components/moon", json!({"status": "major_outage"}), 404, "moon"),
        (Method::PUT, "/admin/components/api", json!({"status": "down"}), 400, "down"),
    ];
    for (method, path, body, code, mentions) in cases {
        let (status, answer) = admin(base, method, path, Some(body.clone())).await;
        assert_eq!(status.as_u16(), code, "{path} {body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(mentions), "{path} {body}: {message:?} should mention {mentions:?}");
    }
    let r = client().post(format!("{base}/admin/incidents")).json(&json!({"name": "x", "body": "y"})).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED, "the admin token is required");
    assert!(incidents(&get_json(base, "/api/v2/incidents.json").await).is_empty());
}

/// The recorded Statuspage responses the status crate's shape tests use.
fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../status/tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Object keys that differ between `expected` and `actual`, recursively
/// (arrays: their first elements).
fn key_diff(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let mut ek: Vec<&String> = e.keys().collect();
            let mut ak: Vec<&String> = a.keys().collect();
            ek.sort();
            ak.sort();
            if ek != ak {
                out.push(format!("{path}: {ek:?} != {ak:?}"));
            }
            for (k, v) in e {
                if let Some(w) = a.get(k) {
                    key_diff(v, w, &format!("{path}.{k}"), out);
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let (Some(e), Some(a)) = (e.first(), a.first()) {
                key_diff(e, a, &format!("{path}[0]"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn served_json_has_the_fields_of_recorded_statuspage_responses() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let open = json!({"name": "Errors", "body": "Investigating.", "component_ids": ["api"]});
    admin(&gw.url, Method::POST, "/admin/incidents", Some(open)).await;
    let now = time::OffsetDateTime::now_utc();
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let window = json!({"name": "Upgrade", "body": "Planned.", "component_ids": ["api"],
                        "scheduled_for": rfc(now + time::Duration::hours(1)),
                        "scheduled_until": rfc(now + time::Duration::hours(2))});
    admin(&gw.url, Method::POST, "/admin/maintenances", Some(window)).await;

    for (document, fixture_name) in [
        ("summary.json", "summary.json"),
        ("incidents.json", "incidents.json"),
        ("scheduled-maintenances.json", "scheduled-maintenances.json"),
    ] {
        let served = get_json(&gw.url, &format!("/api/v2/{document}")).await;
        let mut diff = Vec::new();
        key_diff(&fixture(fixture_name), &served, "$", &mut diff);
        assert!(diff.is_empty(), "{document}:\n{}", diff.join("\n"));
    }
}

/// Chromium as Debian installs it, if present.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((be(16), be(20)))
}

#[tokio::test]
async fn chromium_renders_the_page_on_a_phone_and_a_desktop() {
    let Some(chromium) = chromium() else {
        assert!(!testkit::in_ci(), "chromium is missing under CI=true (apt-get install chromium)");
        eprintln!(
            "SKIPPED chromium_renders_the_page_on_a_phone_and_a_desktop: no chromium on PATH (apt-get install chromium)"
        );
        return;
    };
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let open = json!({"name": "Slow chat replies", "impact": "minor", "component_ids": ["api", "web"],
                      "body": "Replies take longer than usual while we add capacity."});
    assert_eq!(admin(&gw.url, Method::POST, "/admin/incidents", Some(open)).await.0, StatusCode::CREATED);

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    for (label, width, height) in [("phone", 390u32, 844u32), ("desktop", 1280, 900)] {
        let shot = out.join(format!("status-{label}.png"));
        let _ = std::fs::remove_file(&shot);
        let profile = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(&chromium);
        command
            .arg("--headless")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--hide-scrollbars")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("--window-size={width},{height}"))
            // Console messages, among them any Content-Security-Policy violation.
            .arg("--enable-logging=stderr")
            .arg("--v=0")
            .arg(format!("{}/status", gw.url))
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let run = tokio::time::timeout(Duration::from_secs(120), command.output()).await;
        let output = run.expect("chromium finished within 120 s").expect("chromium started");
        let png = std::fs::read(&shot).unwrap_or_else(|e| {
            panic!(
                "{label}: no screenshot at {} ({e}); chromium said:\n{}",
                shot.display(),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert_eq!(png_size(&png), Some((width, height)), "{label}: {}", shot.display());
        // A blank page compresses to a few hundred bytes; the status page with its
        // banner, incident and 90-day bars is far more.
        assert!(png.len() > 10_000, "{label}: only {} bytes", png.len());
        // The page is served with a strict policy; its stylesheet must be the one it allows.
        let said = String::from_utf8_lossy(&output.stderr);
        let blocked: Vec<&str> = said.lines().filter(|l| l.contains("Content Security Policy")).collect();
        assert!(blocked.is_empty(), "{label}: the page's policy blocked part of it:\n{}", blocked.join("\n"));
        println!("status page screenshot ({label}, {width}x{height}): {}", shot.display());
    }
}

#[tokio::test]
async fn the_status_lane_serves_the_page_on_its_own_listener_and_nothing_else() {
    let sim = spawn_sim(instant_sim()).await;
    // A free port for the lane (the lane binds it itself).
    let lane = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| c.status.listen = Some(lane)).await;
    let base = format!("http://{lane}");
    let c = client();
    let mut ready = false;
    for _ in 0..200 {
        if c.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "the status lane never answered");
    let page = c.get(format!("{base}/status")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let summary: serde_json::Value =
        c.get(format!("{base}/api/v2/summary.json")).send().await.unwrap().json().await.unwrap();
    assert!(summary["components"].is_array(), "{summary}");
    // The lane is the status page only: no API, no admin.
    assert_eq!(c.get(format!("{base}/v1/models")).send().await.unwrap().status(), 404);
    let chat = c.post(format!("{base}/v1/chat/completions")).body(r#"{"messages":[]}"#).send().await.unwrap();
    assert_eq!(chat.status(), 404);
    assert_eq!(c.get(format!("{base}/admin/flags")).send().await.unwrap().status(), 404);
    // The main listener still serves the page too.
    assert_eq!(c.get(format!("{}/status", gw.url)).send().await.unwrap().status(), 200);
    gw.shutdown().await;
}
