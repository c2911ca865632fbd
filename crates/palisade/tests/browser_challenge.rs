//! The proof-of-work interstitial in a real browser: Debian's Chromium, driven by
//! playwright-core (from npm, installed on first run under the target directory),
//! loads the page; its Web Worker solves the challenge with WebCrypto, posts the
//! answer, gets the clearance cookie and returns to where it was sent from.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const PLAYWRIGHT: &str = "playwright-core@1.64.1";

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// A directory whose node_modules holds playwright-core; `None` (skip) only outside CI.
fn playwright() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("playwright");
    let ready = |dir: &Path| dir.join("node_modules/playwright-core/package.json").exists();
    if !ready(&dir) {
        let _ = std::fs::create_dir_all(&dir);
        let installed = Command::new("npm")
            .current_dir(&dir)
            .args(["install", "--silent", "--no-audit", "--no-fund", PLAYWRIGHT])
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !ready(&dir) {
            let why = format!("cannot install {PLAYWRIGHT} into {} (needs node and npm)", dir.display());
            assert!(!testkit::in_ci(), "{why}");
            eprintln!("SKIPPED (no playwright): {why}");
            return None;
        }
    }
    Some(dir)
}

#[tokio::test]
async fn a_real_browser_solves_the_challenge_and_gets_its_clearance() {
    let Some(browser) = chromium() else {
        assert!(!testkit::in_ci(), "chromium is not installed (apt-get install -y chromium)");
        eprintln!("SKIPPED (no chromium)");
        return;
    };
    let Some(modules) = playwright() else { return };
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser_challenge.js");
    let output = Command::new("node")
        .current_dir(&modules)
        .env("NODE_PATH", modules.join("node_modules"))
        .arg(&script)
        .args([palisade.url.as_str(), browser.to_str().unwrap()])
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    // A challenge is a refusal until solved, never a 200 to anything but the page itself.
    assert!(stdout.contains("challenge 200"), "{stdout}");
    assert!(stdout.contains("arrived /status clearance=true httponly=true"), "{stdout}{stderr}");
}
