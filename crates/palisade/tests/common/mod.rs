//! Run the real `palisade` binary in a scratch directory and find where it listens.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// A running `palisade` process; killed when dropped.
pub struct Running {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The admin API's own listener (`palisade serve` only; empty otherwise).
    pub admin_url: String,
    /// Every log line printed so far and later, as JSON values.
    pub logs: mpsc::Receiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
}

impl Running {
    /// Start `palisade ARGS --log-format json` in `dir` and wait for its
    /// "listening" line (the only reliable way to learn an ephemeral port).
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(BIN);
        command.current_dir(dir).args(args).args(["--log-format", "json"]);
        // Tests run side by side: each gateway's admin API on a port of its own.
        command.env("PALISADE_ADMIN__LISTEN", "127.0.0.1:0");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start palisade");
        let stdout = child.stdout.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(value) => {
                        if tx.send(value).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("non-JSON log line: {line}"),
                }
            }
        });
        let mut running = Running { child, url: String::new(), admin_url: String::new(), logs, seen: Vec::new() };
        let line = running.wait_for_log(Duration::from_secs(60), |l| {
            let message = l["message"].as_str().unwrap_or("");
            message == "listening" || message == "simulated model listening"
        });
        running.url = line["address"].as_str().expect("address in the listening line").to_owned();
        // Logged before "listening", so already seen when there is one.
        if let Some(admin) = running.seen.iter().find(|l| l["message"] == "admin API listening") {
            running.admin_url = admin["address"].as_str().unwrap_or_default().to_owned();
        }
        running
    }

    /// Wait for a log line matching `pred`, failing after `limit`.
    pub fn wait_for_log(&mut self, limit: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        if let Some(found) = self.seen.iter().find(|l| pred(l)) {
            return found.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "expected log line not seen within {limit:?}; exit status {:?}; lines: {:#?}",
                    self.child.try_wait(),
                    self.seen
                ),
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Wait for the process to exit, failing after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "palisade did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Run `palisade ARGS` to completion, returning (success, stdout, stderr).
pub fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN).current_dir(dir).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`run`] with `input` on standard input (a password, say).
pub fn run_with_input(dir: &Path, args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// An HTTP client with a named user agent: the edge challenges anonymous requests that send
/// none, and most tests are about something else.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().user_agent("palisade-tests/1").build().unwrap()
}

/// The OpenAI SDK the tests drive (PyPI, pinned).
pub const OPENAI_SDK: &str = "openai==3.57.0";

/// A Python interpreter that can `import openai`: `PALISADE_TEST_PYTHON`, or a
/// virtualenv made here. `None` (skip) only outside CI.
pub fn python_with_openai() -> Option<PathBuf> {
    if let Ok(python) = std::env::var("PALISADE_TEST_PYTHON") {
        return Some(PathBuf::from(python));
    }
    python_with("openai-venv", "openai", OPENAI_SDK)
}

/// A Python interpreter in the virtualenv `venv` (under the target directory, kept between
/// runs) that can `import module`, installing `package` from PyPI on first use. `None`
/// (skip) only outside CI.
pub fn python_with(venv: &str, module: &str, package: &str) -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(venv);
    let python = venv.join("bin/python");
    let ready = |python: &PathBuf| {
        Command::new(python).args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success())
    };
    if !ready(&python) {
        let made =
            Command::new("python3").args(["-m", "venv", venv.to_str().unwrap()]).status().is_ok_and(|s| s.success())
                && Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", package])
                    .status()
                    .is_ok_and(|s| s.success());
        if !made || !ready(&python) {
            let why = format!("cannot install {package} into {}: needs python3 with venv and PyPI", venv.display());
            assert!(!testkit::in_ci(), "{why}");
            eprintln!("SKIPPED (no {module}): {why}");
            return None;
        }
    }
    Some(python)
}
