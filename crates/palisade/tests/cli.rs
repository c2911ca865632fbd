//! The `palisade` binary as a user runs it.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Serve /v1 without keys, for tests about something else.
const ANONYMOUS: (&str, &str) = ("PALISADE_AUTH__ALLOW_ANONYMOUS_INFERENCE", "true");

fn chat(stream: bool, max_tokens: u32) -> Value {
    json!({"model": "palisade-sim", "stream": stream, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn serve_works_on_embedded_defaults_and_stops_on_sigterm() {
    let dir = scratch_dir();
    let mut palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    // The quick start's promises: a SQLite database under ./palisade-data, the
    // simulated model announced loudly, and a working API.
    assert!(dir.path().join("palisade-data/palisade.db").exists());
    let warning = palisade.wait_for_log(Duration::from_secs(5), |l| {
        l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains("SIMULATED"))
    });
    assert!(warning["message"].as_str().unwrap().contains("SIMULATED"), "{warning}");

    let c = http();
    let r = c.get(format!("{}/readyz", palisade.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // /v1 needs a key; `palisade keys create` makes one against the same store.
    let r = c.post(format!("{}/v1/chat/completions", palisade.url)).json(&chat(false, 4)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (ok, key, stderr) = run(dir.path(), &["keys", "create", "--name", "quickstart"]);
    assert!(ok, "{stderr}");
    let key = key.trim();
    assert!(key.starts_with("pal_"), "{key}");
    let r: Value = c
        .post(format!("{}/v1/chat/completions", palisade.url))
        .bearer_auth(key)
        .json(&chat(false, 4))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["choices"][0]["message"]["role"], "assistant", "{r}");
    let (ok, listing, _) = run(dir.path(), &["keys", "list"]);
    assert!(ok && listing.contains("quickstart") && !listing.contains(&key[13..]), "{listing}");

    palisade.signal("TERM");
    let status = palisade.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_stream() {
    let dir = scratch_dir();
    // 100 tokens at 200 tokens/s: the stream outlives the signal by about half a second.
    let mut palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[ANONYMOUS]);
    let response =
        http().post(format!("{}/v1/chat/completions", palisade.url)).json(&chat(true, 100)).send().await.unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    palisade.signal("TERM");
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("stream cut during drain")).unwrap());
    }
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(text.matches("\"content\":").count(), 101, "role chunk + 100 tokens");
    assert!(palisade.wait_exit(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn environment_configures_listen_address_and_upstreams() {
    let dir = scratch_dir();
    let sim = Running::start(
        dir.path(),
        &["sim-upstream", "--listen", "127.0.0.1:0", "--ttft-ms", "0", "--model", "env-model"],
        &[],
    );
    let upstreams = format!("[{{name = \"sim\", url = \"{}\"}}]", sim.url);
    let palisade = Running::start(
        dir.path(),
        &["serve"],
        &[
            ("PALISADE_LISTEN", "127.0.0.1:0"),
            ("PALISADE_UPSTREAMS", &upstreams),
            ("PALISADE_DATA_DIR", "state"),
            ANONYMOUS,
        ],
    );
    assert!(dir.path().join("state/palisade.db").exists());
    let r: Value = http().get(format!("{}/v1/models", palisade.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["data"][0]["id"], "env-model");
}

#[test]
fn config_check_accepts_the_example_and_names_bad_fields() {
    let dir = scratch_dir();
    let example = workspace_root().join("palisade.example.toml");
    let (ok, stdout, _) = run(dir.path(), &["config", "check", example.to_str().unwrap()]);
    assert!(ok);
    assert!(stdout.ends_with(": ok\n"), "{stdout}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[proxy]\nmax_body_bytes = \"lots\"\n").unwrap();
    let (ok, _, stderr) = run(dir.path(), &["config", "check", "bad.toml"]);
    assert!(!ok);
    assert!(stderr.contains("bad.toml: proxy.max_body_bytes: invalid type"), "{stderr}");

    std::fs::write(&bad, "[[upstreams]]\nname = \"a\"\nurl = \"ftp://x\"\n[proxy]\nmax_attempts = 0\n").unwrap();
    let (ok, _, stderr) = run(dir.path(), &["config", "check", "bad.toml"]);
    assert!(!ok);
    assert!(stderr.contains("upstreams[0].url:"), "{stderr}");
    assert!(stderr.contains("proxy.max_attempts: must be at least 1"), "{stderr}");

    let (ok, _, stderr) = run(dir.path(), &["config", "check", "missing.toml"]);
    assert!(!ok);
    assert!(stderr.contains("cannot read missing.toml"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_config_with_the_field_name() {
    let dir = scratch_dir();
    std::fs::write(dir.path().join("p.toml"), "[server]\nmax_header_bytes = 10\n").unwrap();
    let (ok, _, stderr) = run(dir.path(), &["serve", "--config", "p.toml"]);
    assert!(!ok);
    assert!(stderr.contains("server.max_header_bytes"), "{stderr}");
}

#[tokio::test]
async fn sim_upstream_serves_the_openai_api() {
    let dir = scratch_dir();
    let sim = Running::start(
        dir.path(),
        &["sim-upstream", "--listen", "127.0.0.1:0", "--ttft-ms", "0", "--tokens-per-s", "0", "--echo-system-prompt"],
        &[],
    );
    let body = json!({"messages": [{"role": "system", "content": "You are a secret keeper."}, {"role": "user", "content": "hi"}]});
    let r: Value =
        http().post(format!("{}/v1/chat/completions", sim.url)).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["choices"][0]["message"]["content"], "You are a secret keeper.");
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_operator_switches_registration_live_from_the_cli() {
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    assert!(dir.path().join("palisade-data/admin.token").exists());
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--url", palisade.admin_url.as_str()];
        all.extend_from_slice(args);
        run(dir.path(), &all)
    };
    let (ok, out, err) = admin(&["registration", "regions", "cn"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"CN\""), "{out}");
    let register = |phone: &str| {
        let body = json!({"phone": phone, "password": "correct horse battery staple"});
        http().post(format!("{}/auth/register", palisade.url)).json(&body).send()
    };
    let r = register("+1 650 253 0000").await.unwrap();
    assert_eq!(r.status(), 403);
    let r = register("+86 138 0013 8000").await.unwrap();
    assert_eq!(r.status(), 201);
    let user = r.json::<Value>().await.unwrap()["user_id"].as_i64().unwrap().to_string();
    let (ok, _, err) = admin(&["tier", "pin", &user, "established"]);
    assert!(ok, "{err}");
    let (ok, _, err) = admin(&["tier", "lift", &user]);
    assert!(ok, "{err}");
    let (ok, out, _) = admin(&["audit", "--action", "account.tier."]);
    assert!(ok && out.contains("account.tier.pin") && out.contains("account.tier.lift"), "{out}");
    let (ok, out, err) = admin(&["flags"]);
    assert!(ok && out.contains("\"cohorts\""), "{out}{err}");

    let (ok, _, err) = admin(&["registration", "closed", "--message", "Paused during an attack."]);
    assert!(ok, "{err}");
    let r: Value = register("+86 139 1234 5678").await.unwrap().json().await.unwrap();
    assert!(r["error"]["message"].as_str().unwrap().contains("Paused during an attack."), "{r}");
    let (ok, out, _) = admin(&["audit", "--action", "registration."]);
    assert!(ok && out.contains("registration.policy"), "{out}");
    let (ok, out, _) = admin(&["invite"]);
    assert!(ok && out.contains("invite"), "{out}");

    let (ok, _, err) = run(
        dir.path(),
        &["admin", "--url", &palisade.admin_url, "--token", "wrong-token-wrong-token!!", "registration", "show"],
    );
    assert!(!ok && err.contains("401"), "{err}");
}

/// The message a refused sign-up reads.
async fn refusal(url: &str, phone: &str) -> String {
    let body = json!({"phone": phone, "password": "correct horse battery staple"});
    let r = http().post(format!("{url}/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403);
    r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_owned()
}

/// Wait until an unresolved incident on the status page says `needle` (the recorder
/// sees a switch on its next tick).
async fn incident_saying(url: &str, needle: &str) {
    let url = format!("{url}/api/v2/incidents/unresolved.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let doc: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
        if doc.to_string().contains(needle) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no incident says {needle:?}: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_operators_message_reaches_refused_visitors_and_the_status_page_in_every_mode() {
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--url", palisade.admin_url.as_str()];
        all.extend_from_slice(args);
        run(dir.path(), &all)
    };
    let url = palisade.url.as_str();
    let (ok, out, err) = admin(&["registration", "regions", "CN", "--message", "Launch week: mainland China only."]);
    assert!(ok, "{err}");
    assert!(out.contains("Launch week"), "{out}");
    let message = refusal(url, "+1 650 253 0000").await;
    assert!(message.contains("CN") && message.contains("Launch week: mainland China only."), "{message}");
    incident_saying(url, "Launch week: mainland China only.").await;

    let (ok, _, err) = admin(&["registration", "invite-only", "--message", "Invitations go out on Monday."]);
    assert!(ok, "{err}");
    let message = refusal(url, "+86 138 0013 8000").await;
    assert!(message.contains("invitation") && message.contains("Invitations go out on Monday."), "{message}");
    incident_saying(url, "Invitations go out on Monday.").await;

    let (ok, _, err) = admin(&["registration", "closed", "--message", "Paused during an attack."]);
    assert!(ok, "{err}");
    assert!(refusal(url, "+86 139 1234 5678").await.contains("Paused during an attack."));
    incident_saying(url, "Paused during an attack.").await;
    // Without --message, each mode keeps its own explanation.
    let (ok, _, err) = admin(&["registration", "regions", "CN"]);
    assert!(ok, "{err}");
    assert!(refusal(url, "+1 650 253 0000").await.ends_with("from: CN"));
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_its_files_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    // A sign-up writes its code to the outbox.
    let body = json!({"phone": "+86 138 0013 8000", "password": "correct horse battery staple"});
    let r = http().post(format!("{}/auth/register", palisade.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let data = dir.path().join("palisade-data");
    let mode = |name: &str| std::fs::metadata(data.join(name)).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode("").unwrap(), 0o700, "the data directory");
    for file in ["palisade.db", "palisade.db-wal", "pii.key", "admin.token", "shield.key", "outbox.jsonl"] {
        assert_eq!(mode(file).unwrap_or_else(|e| panic!("{file}: {e}")), 0o600, "{file}");
    }
}

#[tokio::test]
async fn the_operator_runs_the_status_page_from_the_cli() {
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--url", palisade.admin_url.as_str()];
        all.extend_from_slice(args);
        run(dir.path(), &all)
    };
    let summary = || async {
        let url = format!("{}/api/v2/summary.json", palisade.url);
        reqwest::Client::new().get(url).send().await.unwrap().json::<Value>().await.unwrap()
    };

    let (ok, out, err) = admin(&[
        "incident",
        "open",
        "--name",
        "Slow chat replies",
        "--impact",
        "major",
        "--component",
        "api",
        "--message",
        "We are looking into it.",
    ]);
    assert!(ok, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"].as_i64().unwrap();
    assert_eq!(summary().await["incidents"][0]["name"], "Slow chat replies");

    let (ok, _, err) =
        admin(&["incident", "update", &id.to_string(), "--status", "monitoring", "--message", "Fixed; watching."]);
    assert!(ok, "{err}");
    assert_eq!(summary().await["incidents"][0]["status"], "monitoring");
    let (ok, _, err) = admin(&["incident", "resolve", &id.to_string(), "--message", "All good."]);
    assert!(ok, "{err}");
    assert!(summary().await["incidents"].as_array().unwrap().is_empty());
    let (ok, out, _) = admin(&["incident", "list"]);
    assert!(ok && out.contains("All good.") && out.contains("Fixed; watching."), "{out}");

    let (ok, _, err) = admin(&["component", "set", "login", "major_outage"]);
    assert!(ok, "{err}");
    let login = |s: &Value| s["components"].as_array().unwrap().iter().find(|c| c["id"] == "login").unwrap().clone();
    assert_eq!(login(&summary().await)["status"], "major_outage");
    let (ok, _, err) = admin(&["component", "set", "login", "--clear"]);
    assert!(ok, "{err}");
    assert_eq!(login(&summary().await)["status"], "operational");

    let (ok, _, err) = admin(&["component", "set", "login", "broken"]);
    assert!(!ok && err.contains("possible values"), "clap names the statuses: {err}");
    let (ok, _, err) = admin(&["incident", "resolve", "999"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, _) = admin(&["audit", "--action", "status."]);
    assert!(ok && out.contains("status.incident.open") && out.contains("status.component.clear"), "{out}");
}

#[tokio::test]
async fn keys_rotate_reencrypts_while_the_gateway_keeps_serving() {
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let c = http();
    let body = json!({"phone": "+86 138 0013 8000", "password": "correct horse battery staple"});
    let r: Value =
        c.post(format!("{}/auth/register", palisade.url)).json(&body).send().await.unwrap().json().await.unwrap();
    let user_id = r["user_id"].as_i64().unwrap();
    let key_file = dir.path().join("palisade-data/pii.key");
    let before = std::fs::read_to_string(&key_file).unwrap();

    let (ok, out, err) = run(dir.path(), &["keys", "rotate"]);
    assert!(ok, "{err}");
    assert!(out.contains("re-encrypted 1 account"), "{out}");
    assert_ne!(std::fs::read_to_string(&key_file).unwrap(), before);

    // The running gateway decrypts the re-encrypted number (to resend a code)
    // without a restart.
    let r =
        c.post(format!("{}/auth/verify/resend", palisade.url)).json(&json!({"user_id": user_id})).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let outbox = std::fs::read_to_string(dir.path().join("palisade-data/outbox.jsonl")).unwrap();
    assert_eq!(outbox.lines().count(), 2);
    assert!(outbox.contains("+86*******8000"), "{outbox}");
}

#[tokio::test]
async fn keys_carry_their_own_rate_budget_and_the_pii_key_can_come_from_the_environment() {
    let dir = scratch_dir();
    let (ok, _, err) = run(dir.path(), &["keys", "create", "--name", "batch", "--rpm", "60"]);
    assert!(ok, "{err}");
    let (_, listing, _) = run(dir.path(), &["keys", "list"]);
    let row = listing.lines().find(|l| l.contains("batch")).unwrap();
    assert!(row.split_whitespace().any(|w| w == "60"), "{listing}");

    // The key file made by the first run, as one environment value.
    let material = std::fs::read_to_string(dir.path().join("palisade-data/pii.key")).unwrap();
    let material: Vec<&str> = material.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    let other = scratch_dir();
    let palisade = Running::start(
        other.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("PALISADE_PII__KEY", &material.join(";"))],
    );
    let body = json!({"email": "someone@example.com", "password": "correct horse battery staple"});
    let r = http().post(format!("{}/auth/register", palisade.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        !other.path().join("palisade-data/pii.key").exists(),
        "no key file when the key comes from the environment"
    );
}

#[tokio::test]
async fn the_operator_blocks_addresses_and_switches_attack_mode_from_the_cli() {
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    assert!(dir.path().join("palisade-data/shield.key").exists(), "signing key generated on first start");
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--url", palisade.admin_url.as_str()];
        all.extend_from_slice(args);
        run(dir.path(), &all)
    };
    let from = |source: &str| {
        reqwest::Client::builder()
            .local_address(source.parse::<std::net::IpAddr>().unwrap())
            .user_agent("palisade-tests/1")
            .build()
            .unwrap()
    };
    let models = format!("{}/v1/models", palisade.url);
    let (ok, _, err) = admin(&["block", "add", "127.0.0.2", "--ttl", "1h", "--note", "scraper"]);
    assert!(ok, "{err}");
    let (ok, listing, _) = admin(&["block", "list"]);
    assert!(ok && listing.contains("127.0.0.2/32") && listing.contains("scraper"), "{listing}");
    let r = from("127.0.0.2").get(&models).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "blocked");
    assert_eq!(from("127.0.0.3").get(&models).send().await.unwrap().status(), 401, "others reach the API");
    let (ok, _, err) = admin(&["allow", "add", "127.0.0.2"]);
    assert!(ok, "{err}");
    assert_eq!(from("127.0.0.2").get(&models).send().await.unwrap().status(), 401, "allow wins");
    let (ok, _, err) = admin(&["allow", "remove", "127.0.0.2"]);
    assert!(ok, "{err}");
    let (ok, _, err) = admin(&["block", "remove", "127.0.0.2/32"]);
    assert!(ok, "{err}");
    assert_eq!(from("127.0.0.2").get(&models).send().await.unwrap().status(), 401);
    let (ok, _, err) = admin(&["block", "add", "10.0.0.1/8"]);
    assert!(!ok && err.contains("host bits"), "{err}");
    let (ok, _, err) = admin(&["block", "add", "10.0.0.0/8", "--ttl", "soon"]);
    assert!(!ok && err.contains("soon"), "{err}");

    let (ok, out, err) = admin(&["attack", "on"]);
    assert!(ok && out.contains("\"under_attack\""), "{out}{err}");
    let (ok, out, _) = admin(&["attack", "show"]);
    assert!(ok && out.contains("\"switch\": \"on\""), "{out}");
    let (ok, out, _) = admin(&["attack", "off"]);
    assert!(ok && out.contains("\"normal\""), "{out}");
    let (ok, out, _) = admin(&["attack", "auto"]);
    assert!(ok && out.contains("\"switch\": \"auto\""), "{out}");
    let (ok, out, _) = admin(&["audit", "--action", "shield."]);
    assert!(ok && out.contains("shield.blocklist.add") && out.contains("shield.attack_mode"), "{out}");

    // Nobody has strikes yet; clearing an unknown caller is an error.
    let (ok, out, err) = admin(&["flags"]);
    assert!(ok && out.contains("\"flags\": []"), "{out}{err}");
    let (ok, _, err) = admin(&["flags", "clear", "42"]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[tokio::test]
async fn pow_solve_prints_a_clearance_that_passes_the_challenge() {
    let dir = scratch_dir();
    let palisade = Running::start(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("PALISADE_SHIELD__POW__BASE_DIFFICULTY", "10"), ("PALISADE_SHIELD__POW__SCORE_POINTS_PER_BIT", "0")],
    );
    let agent = "python-requests/2.32";
    let csrf = format!("{}/auth/csrf", palisade.url);
    let c = reqwest::Client::builder().user_agent(agent).build().unwrap();
    let r = c.get(&csrf).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["challenge"]["difficulty"], 10, "{body}");

    let (ok, out, err) = run(dir.path(), &["pow", "solve", "--url", &palisade.url, "--user-agent", agent]);
    assert!(ok, "{err}");
    assert!(err.contains("solved difficulty 10"), "{err}");
    let clearance = out.trim();
    let r = c.get(&csrf).header("x-palisade-clearance", clearance).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Bound to the agent it was solved for.
    let other = http().get(&csrf).header("user-agent", "curl/8.5").header("x-palisade-clearance", clearance);
    assert_eq!(other.send().await.unwrap().status(), 403);

    let (ok, _, err) = run(dir.path(), &["pow", "solve", "--url", "http://127.0.0.1:1"]);
    assert!(!ok && err.contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn the_operator_verifies_and_exports_the_audit_log_and_finds_an_edit() {
    let dir = scratch_dir();
    let mut palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let (ok, _, stderr) = run(dir.path(), &["keys", "create", "--name", "audited"]);
    assert!(ok, "{stderr}");
    let body = json!({"phone": "+86 138 0013 8000", "password": "correct horse battery staple"});
    let r = http().post(format!("{}/auth/register", palisade.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // Stopping signs the chain's end.
    palisade.signal("TERM");
    assert!(palisade.wait_exit(Duration::from_secs(30)).success());

    let (ok, out, err) = run(dir.path(), &["audit", "verify"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("chain intact"), "{out}");
    assert!(out.contains("1 signed checkpoints checked"), "{out}");

    let export = dir.path().join("audit.jsonl");
    let (ok, _, err) = run(dir.path(), &["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(ok, "{err}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&export).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(lines.iter().any(|l| l["action"] == "key.create"), "{lines:?}");
    assert!(lines.iter().all(|l| l["hash"].as_str().is_some_and(|h| h.len() == 64)));
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);

    // Someone edits an entry in the database file itself.
    let db = dir.path().join("palisade-data/palisade.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes.windows(10).position(|w| w == b"key.create").expect("the entry is in the file");
    bytes[at + 5] = b'C';
    std::fs::write(&db, bytes).unwrap();
    let (ok, out, _) = run(dir.path(), &["audit", "verify"]);
    assert!(!ok, "a broken chain exits non-zero: {out}");
    assert!(out.contains("CHAIN BROKEN") && out.contains("was edited"), "{out}");
}

/// The operator's whole way in, as a person does it with the CLI: the bootstrap secret
/// adds them, they enroll (password on standard input, the authenticator secret back),
/// log in with a code from the app, work, and log out; the bootstrap secret is then
/// refused anything but managing operators.
#[test]
fn an_operator_enrolls_logs_in_with_a_code_and_is_audited_by_name() {
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    assert!(palisade.admin_url.starts_with("http://127.0.0.1:"), "{}", palisade.admin_url);
    assert_ne!(palisade.admin_url, palisade.url, "the admin API has an address of its own");
    let base = ["admin", "--url", palisade.admin_url.as_str()];
    let admin = |args: &[&str], input: &str| {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        run_with_input(dir.path(), &all, input)
    };

    let (ok, out, err) = admin(&["operator", "add", "alice", "--role", "admin"], "");
    assert!(ok, "{out}{err}");
    let setup: Value = serde_json::from_str(&out).unwrap();
    let code = setup["setup_code"].as_str().unwrap();
    let password = "a long and private passphrase 9\n";
    let (ok, out, err) = admin(&["operator", "enroll", "alice", "--setup-code", code], password);
    assert!(ok, "{out}{err}");
    let enrolled: Value = serde_json::from_str(&out).unwrap();
    let secret = accounts::totp::TotpSecret::from_base32(enrolled["totp_secret"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();

    let (ok, out, err) = admin(&["login", "alice", "--code", "000000"], password);
    assert!(!ok && err.contains("400"), "a wrong code: {out}{err}");
    let totp = accounts::totp::code_at(&secret, now);
    let (ok, out, err) = admin(&["login", "alice", "--code", &totp], password);
    assert!(ok && out.contains("logged in as alice (admin)"), "{out}{err}");
    assert!(dir.path().join("palisade-data/operator.token").exists());

    let (ok, out, err) = admin(&["whoami"], "");
    assert!(ok && out.contains("operator:alice"), "{out}{err}");
    let (ok, out, err) = admin(&["attack", "on"], "");
    assert!(ok, "{out}{err}");
    let (ok, out, err) = admin(&["audit", "--action", "shield."], "");
    assert!(ok && out.contains("operator:alice"), "audited by name: {out}{err}");

    let (ok, out, err) = admin(&["logout"], "");
    assert!(ok, "{out}{err}");
    assert!(!dir.path().join("palisade-data/operator.token").exists(), "the saved token is gone");
    // Back on the bootstrap secret, which now only manages operators.
    let (ok, _, err) = admin(&["attack", "show"], "");
    assert!(!ok && err.contains("403") && err.contains("palisade admin login"), "{err}");
    let (ok, out, err) = admin(&["operator", "list"], "");
    assert!(ok && out.contains("alice"), "{out}{err}");
}
