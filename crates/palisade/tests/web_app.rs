//! The web assistant in a real browser: Debian's Chromium, driven by playwright-core
//! (from npm, installed on first run under the target directory, with axe-core and
//! jsQR), against the real `palisade serve`. Each test starts its own gateway with the
//! settings its story needs and runs one scenario of `web_app.js`; screenshots of every
//! page, at phone and desktop sizes, go to `target/tmp/web-screenshots/`.
//!
//! The built-in simulated model streams slowly here (`tokens_per_s`), so a reply
//! visibly arrives word by word and can be stopped halfway; proof-of-work difficulty is
//! lowered so a challenge costs a browser a second or two, not more.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

const PACKAGES: [&str; 3] = ["playwright-core@1.64.1", "axe-core@4.14.1", "jsqr@1.4.0"];
/// Longest a scenario may run, browser included; the script stops itself earlier.
const SCENARIO_LIMIT: Duration = Duration::from_secs(300);

/// One browser at a time: the machines have two cores.
static BROWSER: Mutex<()> = Mutex::new(());

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// A directory whose node_modules holds the test's npm packages; `None` (skip) only
/// outside CI.
fn node_modules() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-app-node");
    let ready = |dir: &Path| {
        PACKAGES.iter().all(|p| {
            let name = &p[..p.rfind('@').unwrap_or(p.len())];
            dir.join("node_modules").join(name).join("package.json").exists()
        })
    };
    if !ready(&dir) {
        let _ = std::fs::create_dir_all(&dir);
        let installed = Command::new("npm")
            .current_dir(&dir)
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .args(PACKAGES)
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !ready(&dir) {
            let why = format!("cannot install {PACKAGES:?} into {} (needs node and npm)", dir.display());
            assert!(!testkit::in_ci(), "{why}");
            eprintln!("SKIPPED (no npm packages): {why}");
            return None;
        }
    }
    Some(dir)
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots")
}

/// Settings every scenario shares: a slow, observable stream and cheap challenges.
const COMMON: [(&str, &str); 4] = [
    ("PALISADE_SIMULATOR__TOKENS_PER_S", "6"),
    ("PALISADE_SIMULATOR__TTFT_MS", "100"),
    ("PALISADE_SHIELD__POW__BASE_DIFFICULTY", "12"),
    ("PALISADE_SHIELD__POW__UNDER_ATTACK_DIFFICULTY", "16"),
];

/// Start a gateway with `env` and run `scenario` of web_app.js against it in Chromium
/// (or, for `qr`, in Node alone). Skips only outside CI when a tool is missing.
fn run_scenario(scenario: &str, env: &[(&str, &str)]) {
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(browser) = chromium() else {
        assert!(!testkit::in_ci(), "chromium is not installed (apt-get install -y chromium)");
        eprintln!("SKIPPED (no chromium)");
        return;
    };
    let Some(modules) = node_modules() else { return };
    let dir = scratch_dir();
    let mut all_env: Vec<(&str, &str)> = COMMON.to_vec();
    all_env.extend_from_slice(env);
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &all_env);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web_app.js");
    let assets = workspace_root().join("crates/web/assets");
    let started = Instant::now();
    let mut child = Command::new("node")
        .current_dir(&modules)
        .env("NODE_PATH", modules.join("node_modules"))
        .env("PALISADE_ADMIN_URL", &palisade.admin_url)
        .arg(&script)
        .args([scenario, palisade.url.as_str(), browser.to_str().unwrap()])
        .arg(dir.path().join("palisade-data"))
        .arg(screenshots())
        .arg(assets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    // Read both pipes while it runs, so a chatty run cannot block on a full pipe.
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        if let Some(status) = child.try_wait().expect("node's status") {
            break status;
        }
        if started.elapsed() > SCENARIO_LIMIT {
            let _ = child.kill();
            break child.wait().expect("node stopped");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(status.success(), "the {scenario} scenario failed ({status}):\n{stdout}{stderr}");
    println!("{stdout}{stderr}");
    println!("{scenario}: {:.1} s; screenshots in {}", started.elapsed().as_secs_f64(), screenshots().display());
}

#[test]
fn the_page_s_qr_encoder_round_trips_through_a_decoder() {
    run_scenario("qr", &[]);
}

/// Register → verify with the outboxed code → log in → enrol TOTP (QR decoded, code
/// computed) → log out → log in with TOTP → a streamed reply, copy, regenerate → stop a
/// reply and see the upstream freed → create, use and revoke an API key → change the
/// password → reload and find the conversation → rename, delete, clear all → Chinese →
/// log in with a recovery code.
#[test]
fn a_visitor_signs_up_enrols_totp_and_chats_with_streamed_replies() {
    run_scenario("journey", &[]);
}

/// The operator limits registration to CN numbers, closes it with a message, and turns
/// attack mode on while a member chats: the member keeps chatting, an outsider reads the
/// restriction, and a newcomer under attack does the proof-of-work step.
#[test]
fn operator_switches_mid_session_keep_members_chatting() {
    run_scenario("switches", &[]);
}

/// One sign-up slot per ten minutes: the second visitor gets a waiting-room ticket, sees
/// their place and time left, and lands on the verification step by itself.
#[test]
fn a_queued_visitor_is_admitted_and_lands_on_verification() {
    run_scenario(
        "waiting",
        &[
            (
                "PALISADE_SHIELD__LIMITS__ROUTES",
                r#"[{route="register",per="subnet",rate={count=1,period_ms=600000,burst=1}}]"#,
            ),
            ("PALISADE_SHIELD__WAITING_ROOM__ADMIT_PER_SEC", "0.2"),
            ("PALISADE_SHIELD__WAITING_ROOM__ADMIT_BURST", "1"),
            ("PALISADE_SHIELD__WAITING_ROOM__POLL_INTERVAL_MS", "1000"),
        ],
    );
}

/// Sign-up, verification, login, a chat message and an API key by keyboard alone; the
/// Chinese pages for a browser that asks for them. (axe-core checks every page of every
/// scenario; this one adds the keyboard.)
#[test]
fn every_flow_works_by_keyboard_and_in_chinese() {
    run_scenario("keyboard", &[]);
}

/// Every refusal is a readable message: the login throttle's 429 with its countdown,
/// and the chat's content filter, shedding, rate limit, suspension and prompt refusal.
#[test]
fn every_refusal_is_a_readable_message() {
    run_scenario("refusals", &[]);
}

/// The wiring, without a browser: `/` is the app, its assets are hashed and immutable,
/// and every answer carries the security headers.
#[tokio::test]
async fn the_front_page_is_the_app_with_its_security_headers() {
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let client = http();
    let page = client.get(format!("{}/", palisade.url)).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(html.contains("<main id=\"main\""), "{html}");
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/app/"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(assets.len(), 8, "{assets:?}");
    for path in assets.iter().copied().chain(["/", "/app/app.js"]) {
        let r = client.get(format!("{}{path}", palisade.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer", "{path}");
        let cache = r.headers()["cache-control"].to_str().unwrap();
        if path == "/" || path == "/app/app.js" {
            assert_eq!(cache, "no-cache", "{path}");
        } else {
            assert!(cache.contains("immutable"), "{path}: {cache}");
        }
    }
    let missing = client.get(format!("{}/app/missing.js", palisade.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("content-security-policy"));
}
