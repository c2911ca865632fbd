//! The `palisade` binary as a user runs it.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

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
    let warning = palisade.wait_for_log(Duration::from_secs(5), |l| l["level"] == "WARN");
    assert!(
        warning["message"].as_str().unwrap().contains("SIMULATED"),
        "{warning}"
    );

    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/readyz", palisade.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = c
        .post(format!("{}/v1/chat/completions", palisade.url))
        .json(&chat(false, 4))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");

    palisade.signal("TERM");
    let status = palisade.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_stream() {
    let dir = scratch_dir();
    // 100 tokens at 200 tokens/s: the stream outlives the signal by about half a second.
    let mut palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", palisade.url))
        .json(&chat(true, 100))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    palisade.signal("TERM");
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("stream cut during drain")).unwrap());
    }
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        text.matches("\"content\":").count(),
        101,
        "role chunk + 100 tokens"
    );
    assert!(palisade.wait_exit(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn environment_configures_listen_address_and_upstreams() {
    let dir = scratch_dir();
    let sim = Running::start(
        dir.path(),
        &[
            "sim-upstream",
            "--listen",
            "127.0.0.1:0",
            "--ttft-ms",
            "0",
            "--model",
            "env-model",
        ],
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
        ],
    );
    assert!(dir.path().join("state/palisade.db").exists());
    let r: Value = reqwest::get(format!("{}/v1/models", palisade.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    assert!(
        stderr.contains("bad.toml: proxy.max_body_bytes: invalid type"),
        "{stderr}"
    );

    std::fs::write(
        &bad,
        "[[upstreams]]\nname = \"a\"\nurl = \"ftp://x\"\n[proxy]\nmax_attempts = 0\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(dir.path(), &["config", "check", "bad.toml"]);
    assert!(!ok);
    assert!(stderr.contains("upstreams[0].url:"), "{stderr}");
    assert!(
        stderr.contains("proxy.max_attempts: must be at least 1"),
        "{stderr}"
    );

    let (ok, _, stderr) = run(dir.path(), &["config", "check", "missing.toml"]);
    assert!(!ok);
    assert!(stderr.contains("cannot read missing.toml"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_config_with_the_field_name() {
    let dir = scratch_dir();
    std::fs::write(
        dir.path().join("p.toml"),
        "[server]\nmax_header_bytes = 10\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(dir.path(), &["serve", "--config", "p.toml"]);
    assert!(!ok);
    assert!(stderr.contains("server.max_header_bytes"), "{stderr}");
}

#[tokio::test]
async fn sim_upstream_serves_the_openai_api() {
    let dir = scratch_dir();
    let sim = Running::start(
        dir.path(),
        &[
            "sim-upstream",
            "--listen",
            "127.0.0.1:0",
            "--ttft-ms",
            "0",
            "--tokens-per-s",
            "0",
            "--echo-system-prompt",
        ],
        &[],
    );
    let body = json!({"messages": [{"role": "system", "content": "You are a secret keeper."}, {"role": "user", "content": "hi"}]});
    let r: Value = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", sim.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["choices"][0]["message"]["content"],
        "You are a secret keeper."
    );
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);
}
