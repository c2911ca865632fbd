//! schemathesis (PyPI, pinned) fuzzes the real binary from its own `/openapi.json`: no
//! answer may be a 5xx, and every answer must have a status, a content type and a body
//! the document describes. Installed into a cached virtualenv under the target
//! directory on first run; skipped without python3 only outside CI.
//!
//! Two runs: the public API on the main listener, the admin API on its own listener.
//! The gateway runs on its embedded defaults with the built-in simulated model. Its
//! limits stay on: a fuzzer from one address is refused with 429 (and anonymous
//! requests may be challenged with 403), which the document describes, so those
//! answers are checked like any other.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The whole run's wall-clock bound; schemathesis gets less (`--max-time`) and is
/// killed past this.
const WALL_CLOCK: Duration = Duration::from_secs(150);

/// One schemathesis run of the document's operations whose path matches `paths` (a
/// regex, `exclude` to leave them out instead) against `base`, sending `token`.
async fn schemathesis(
    cli: &std::path::Path,
    dir: &std::path::Path,
    spec: &str,
    base: &str,
    token: &str,
    paths: (&str, &str),
    max_time: &str,
) {
    let (filter, regex) = paths;
    // To files: a pipe nobody reads while we wait would stop a talkative run.
    let out_path = dir.join(format!("schemathesis{}.out", base.len()));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(cli)
        .current_dir(dir)
        .args(["--no-color", "run", spec, "--url", base, filter, regex])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--max-examples",
            "20",
            "--request-timeout",
            "10",
            "--max-time",
            max_time,
            "--workers",
            "1",
            "--seed",
            "20",
            "--generation-database",
            "none",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start schemathesis");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WALL_CLOCK {
            let _ = child.kill();
            panic!("schemathesis ran past {WALL_CLOCK:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = std::fs::read_to_string(&out_path).unwrap();
    eprintln!("schemathesis on {base} took {:?}", started.elapsed());
    assert!(status.success(), "schemathesis found problems on {base}:\n{output}");
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let Some(python) = python_with("schemathesis-venv", "schemathesis", SCHEMATHESIS) else { return };
    let cli = python.with_file_name("schemathesis");
    let dir = scratch_dir();
    // The built-in model answers at once: at its default 200 tokens a second, a generated
    // `max_tokens` of a few thousand takes longer than schemathesis's 10 s read timeout,
    // and whether such a request gets past the rate limits depends on the machine's speed.
    let palisade =
        Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[("PALISADE_SIMULATOR__TOKENS_PER_S", "0")]);
    let (ok, key, stderr) =
        run(dir.path(), &["keys", "create", "--name", "schemathesis", "--scopes", "inference account"]);
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    let spec = format!("{}/openapi.json", palisade.url);
    // The public API with an API key...
    let public = ("--exclude-path-regex", "^/admin");
    schemathesis(&cli, dir.path(), &spec, &palisade.url, &key, public, "90").await;
    // ...and the admin API on its own listener with the bootstrap secret, which may do
    // everything while no operator has enrolled (and none can: a setup code is needed).
    let bootstrap = std::fs::read_to_string(dir.path().join("palisade-data/admin.token")).unwrap();
    let admin = ("--include-path-regex", "^/admin");
    schemathesis(&cli, dir.path(), &spec, &palisade.admin_url, bootstrap.trim(), admin, "60").await;
    drop(palisade);
}
