//! The official OpenAI Python SDK, a client people really use, against the real
//! binary. The SDK is installed into a cached virtualenv under the target
//! directory on first run (PyPI `openai`, pinned).

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

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
