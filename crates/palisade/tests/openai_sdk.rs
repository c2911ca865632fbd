//! The official OpenAI Python SDK, a client people really use, against the real
//! binary. The SDK is installed into a cached virtualenv under the target
//! directory on first run (PyPI `openai`, pinned).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

const OPENAI_SDK: &str = "openai==3.57.0";

/// A Python interpreter that can `import openai`: `PALISADE_TEST_PYTHON`, or a
/// virtualenv made here. `None` (skip) only outside CI.
fn python_with_openai() -> Option<PathBuf> {
    if let Ok(python) = std::env::var("PALISADE_TEST_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openai-venv");
    let python = venv.join("bin/python");
    let ready = |python: &PathBuf| {
        Command::new(python).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success())
    };
    if !ready(&python) {
        let made =
            Command::new("python3").args(["-m", "venv", venv.to_str().unwrap()]).status().is_ok_and(|s| s.success())
                && Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", OPENAI_SDK])
                    .status()
                    .is_ok_and(|s| s.success());
        if !made || !ready(&python) {
            let why = format!(
                "cannot install the OpenAI SDK ({OPENAI_SDK}) into {}: needs python3 with venv and PyPI",
                venv.display()
            );
            assert!(!testkit::in_ci(), "{why}");
            eprintln!("SKIPPED (no OpenAI SDK): {why}");
            return None;
        }
    }
    Some(python)
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_through_palisade() {
    let Some(python) = python_with_openai() else { return };
    let dir = scratch_dir();
    let palisade = Running::start(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("PALISADE_PROXY__MAX_BODY_BYTES", "2048")],
    );
    let (ok, key, stderr) = run(dir.path(), &["keys", "create", "--name", "sdk"]);
    assert!(ok, "{stderr}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let url = format!("{}/v1", palisade.url);
    let key = key.trim().to_owned();
    let output =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(url).arg(key).output().unwrap())
            .await
            .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDK script failed: {stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(seen["bad_key"]["status"], 401, "{seen}");
    assert_eq!(seen["bad_key"]["code"], "invalid_api_key");
    assert_eq!(seen["models"], serde_json::json!(["palisade-sim"]));
    assert!(!seen["chat"]["content"].as_str().unwrap().is_empty());
    assert_eq!(seen["chat"]["finish_reason"], "stop");
    assert_eq!(seen["chat"]["completion_tokens"], 6);
    assert_eq!(seen["stream"]["pieces"].as_array().unwrap().len(), 6, "{seen}");
    assert_eq!(seen["stream"]["usage"], 6);
    assert_eq!(seen["embedding_len"], 8);
    assert_eq!(seen["oversized"]["status"], 413, "{seen}");
    assert_eq!(seen["oversized"]["code"], "body_too_large");
    assert_eq!(seen["oversized"]["type"], "invalid_request_error");
}
