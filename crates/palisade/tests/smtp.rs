//! E-mail codes delivered over SMTP to a real SMTP server (aiosmtpd from PyPI, installed
//! into a cached virtualenv under the target directory on first run): a sign-up by e-mail
//! gets its code in a real message, and the code verifies the account. Text messages and
//! the outbox are untouched.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const AIOSMTPD: &str = "aiosmtpd==1.4.6";

/// A Python interpreter that can `import aiosmtpd`; `None` (skip) only outside CI.
fn python_with_aiosmtpd() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smtp-venv");
    let python = venv.join("bin/python");
    let ready = |python: &PathBuf| {
        Command::new(python).args(["-c", "import aiosmtpd"]).output().is_ok_and(|o| o.status.success())
    };
    if !ready(&python) {
        let made =
            Command::new("python3").args(["-m", "venv", venv.to_str().unwrap()]).status().is_ok_and(|s| s.success())
                && Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", AIOSMTPD])
                    .status()
                    .is_ok_and(|s| s.success());
        if !made || !ready(&python) {
            let why = format!("cannot install {AIOSMTPD} into {}: needs python3 with venv and PyPI", venv.display());
            assert!(!testkit::in_ci(), "{why}");
            eprintln!("SKIPPED (no aiosmtpd): {why}");
            return None;
        }
    }
    Some(python)
}

/// The SMTP server, killed when dropped.
struct SmtpSink {
    child: Child,
    port: u16,
    messages: PathBuf,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sink(python: &PathBuf, dir: &std::path::Path) -> SmtpSink {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let messages = dir.join("smtp.jsonl");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .arg(&messages)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server started");
    SmtpSink { child, port, messages }
}

#[tokio::test]
async fn an_email_sign_up_gets_its_code_over_smtp_and_the_code_verifies() {
    let Some(python) = python_with_aiosmtpd() else { return };
    let dir = scratch_dir();
    let sink = start_sink(&python, dir.path());
    let smtp_url = format!("smtp://127.0.0.1:{}", sink.port);
    let palisade = Running::start(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("PALISADE_NOTIFY__SMTP_URL", smtp_url.as_str()),
            ("PALISADE_NOTIFY__SMTP_FROM", "Palisade <no-reply@palisade.test>"),
        ],
    );
    let c = http();
    let body = json!({"email": "alice@example.com", "password": "correct horse battery staple"});
    let r = c.post(format!("{}/auth/register", palisade.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let user_id = r.json::<Value>().await.unwrap()["user_id"].as_i64().unwrap();

    // The message is in the SMTP server's hands by the time sign-up answered.
    let started = Instant::now();
    let message: Value = loop {
        if let Some(line) =
            std::fs::read_to_string(&sink.messages).ok().and_then(|t| t.lines().next().map(str::to_owned))
        {
            break serde_json::from_str(&line).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no message reached the SMTP server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(message["to"], json!(["alice@example.com"]));
    assert_eq!(message["from"], "no-reply@palisade.test");
    let data = message["data"].as_str().unwrap();
    assert!(data.contains("Subject: Your Palisade code is"), "{data}");
    let code: String = data.split("code is ").nth(1).unwrap().chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(code.len(), 6, "{data}");

    let r = c
        .post(format!("{}/auth/verify", palisade.url))
        .json(&json!({"user_id": user_id, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let outbox = std::fs::read_to_string(dir.path().join("palisade-data/outbox.jsonl")).unwrap_or_default();
    assert!(!outbox.contains(&code), "the e-mail went over SMTP, not to the outbox");
}
