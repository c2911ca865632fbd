//! E-mail codes delivered over SMTP to a real SMTP server (aiosmtpd from PyPI, installed
//! into a cached virtualenv under the target directory on first run): a sign-up by e-mail
//! gets its code in a real message, and the code verifies the account. Text messages and
//! the outbox are untouched. The same over STARTTLS and smtps:// against a server whose
//! certificate a private CA (made here with rcgen) issued, trusted through
//! `notify.smtp_ca_file`; without that file the sign-up fails cleanly and nothing is sent.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const AIOSMTPD: &str = "aiosmtpd==1.4.6";

/// A Python interpreter that can `import aiosmtpd`; `None` (skip) only outside CI.
fn python_with_aiosmtpd() -> Option<PathBuf> {
    python_with("smtp-venv", "aiosmtpd", AIOSMTPD)
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

/// How the SMTP server takes connections.
#[derive(Clone, Copy)]
enum SinkTls<'a> {
    Plain,
    /// STARTTLS offered and required before `MAIL`.
    StartTls(&'a PrivateCa),
    /// TLS from the first byte.
    Smtps(&'a PrivateCa),
}

fn start_sink(python: &PathBuf, dir: &std::path::Path, tls: SinkTls<'_>) -> SmtpSink {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let messages = dir.join("smtp.jsonl");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
    let mut command = Command::new(python);
    command.arg(script).arg(port.to_string()).arg(&messages);
    match tls {
        SinkTls::Plain => {}
        SinkTls::StartTls(ca) => {
            command.arg("--starttls").arg(&ca.server_cert).arg(&ca.server_key);
        }
        SinkTls::Smtps(ca) => {
            command.arg("--smtps").arg(&ca.server_cert).arg(&ca.server_key);
        }
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server started");
    SmtpSink { child, port, messages }
}

/// A private CA and a server certificate it issued for `127.0.0.1` and `localhost`, as PEM
/// files; the CA is nowhere else, so only a client given `ca` trusts the server.
struct PrivateCa {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn private_ca(dir: &Path) -> PrivateCa {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Palisade test mail CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let server = params.signed_by(&key, &issuer).unwrap();
    let ca = PrivateCa {
        ca: dir.join("mail-ca.pem"),
        server_cert: dir.join("mail-server.pem"),
        server_key: dir.join("mail-server.key"),
    };
    std::fs::write(&ca.ca, issuer.pem()).unwrap();
    std::fs::write(&ca.server_cert, server.pem()).unwrap();
    std::fs::write(&ca.server_key, key.serialize_pem()).unwrap();
    ca
}

fn start_palisade(dir: &Path, smtp_url: &str, ca_file: Option<&Path>) -> Running {
    let mut env = vec![
        ("PALISADE_NOTIFY__SMTP_URL", smtp_url.to_owned()),
        ("PALISADE_NOTIFY__SMTP_FROM", "Palisade <no-reply@palisade.test>".to_owned()),
    ];
    if let Some(ca) = ca_file {
        env.push(("PALISADE_NOTIFY__SMTP_CA_FILE", ca.to_str().unwrap().to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Running::start(dir, &["serve", "--listen", "127.0.0.1:0"], &env)
}

/// Sign up alice by e-mail, read her message from the SMTP server, and verify the account
/// with its code; returns the message as the server recorded it.
async fn sign_up_by_email_and_verify(palisade: &Running, sink: &SmtpSink, dir: &Path) -> Value {
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
    let outbox = std::fs::read_to_string(dir.join("palisade-data/outbox.jsonl")).unwrap_or_default();
    assert!(!outbox.contains(&code), "the e-mail went over SMTP, not to the outbox");
    message
}

#[tokio::test]
async fn an_email_sign_up_gets_its_code_over_smtp_and_the_code_verifies() {
    let Some(python) = python_with_aiosmtpd() else { return };
    let dir = scratch_dir();
    let sink = start_sink(&python, dir.path(), SinkTls::Plain);
    let palisade = start_palisade(dir.path(), &format!("smtp://127.0.0.1:{}", sink.port), None);
    let message = sign_up_by_email_and_verify(&palisade, &sink, dir.path()).await;
    assert_eq!(message["tls"], false);
}

/// The case: a relay that requires STARTTLS, with a certificate from the
/// operator's own CA.
#[tokio::test]
async fn starttls_to_a_relay_with_a_private_ca_delivers_the_code() {
    let Some(python) = python_with_aiosmtpd() else { return };
    let dir = scratch_dir();
    let ca = private_ca(dir.path());
    let sink = start_sink(&python, dir.path(), SinkTls::StartTls(&ca));
    let url = format!("smtp://127.0.0.1:{}?tls=required", sink.port);
    let palisade = start_palisade(dir.path(), &url, Some(&ca.ca));
    let message = sign_up_by_email_and_verify(&palisade, &sink, dir.path()).await;
    assert_eq!(message["tls"], true, "the message came after STARTTLS");
}

#[tokio::test]
async fn smtps_to_a_relay_with_a_private_ca_delivers_the_code() {
    let Some(python) = python_with_aiosmtpd() else { return };
    let dir = scratch_dir();
    let ca = private_ca(dir.path());
    let sink = start_sink(&python, dir.path(), SinkTls::Smtps(&ca));
    // By name this time: the certificate names localhost too.
    let url = format!("smtps://localhost:{}", sink.port);
    let palisade = start_palisade(dir.path(), &url, Some(&ca.ca));
    let message = sign_up_by_email_and_verify(&palisade, &sink, dir.path()).await;
    assert_eq!(message["tls"], true);
}

/// Without the CA the relay's certificate is not trusted: the sign-up is answered with the
/// stable `notification_failed` error (the cause only in the operator's log), nothing
/// reaches the server, the gateway keeps serving, and neither the answer nor the log
/// repeats the URL's password.
#[tokio::test]
async fn starttls_without_the_ca_fails_the_sign_up_cleanly_and_sends_nothing() {
    let Some(python) = python_with_aiosmtpd() else { return };
    let dir = scratch_dir();
    let ca = private_ca(dir.path());
    let sink = start_sink(&python, dir.path(), SinkTls::StartTls(&ca));
    let url = format!("smtp://palisade:hunter2@127.0.0.1:{}?tls=required", sink.port);
    let mut palisade = start_palisade(dir.path(), &url, None);

    let c = http();
    let body = json!({"email": "alice@example.com", "password": "correct horse battery staple"});
    let r = c.post(format!("{}/auth/register", palisade.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["error"]["code"], "notification_failed", "{text}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("the verification code could not be sent"), "{message}");
    assert!(!message.contains("certificate"), "the cause is the operator's, in the log: {message}");
    assert!(!text.contains("hunter2"), "{text}");

    let logged =
        palisade.wait_for_log(Duration::from_secs(10), |l| l["message"] == "a verification code could not be sent");
    assert!(logged.to_string().contains("certificate"), "{logged}");
    assert!(!logged.to_string().contains("hunter2"), "{logged}");
    assert!(!logged.to_string().contains("alice"), "{logged}");

    // The refusal happened before the answer: the server holds no message.
    assert!(!sink.messages.exists(), "a message was delivered without a trusted certificate");
    assert!(palisade.child.try_wait().unwrap().is_none(), "the gateway exited");
    let r = c.get(format!("{}/healthz", palisade.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let later: Vec<Value> = palisade.logs.try_iter().collect();
    let logs = palisade.seen.iter().chain(&later).map(Value::to_string).collect::<String>();
    assert!(!logs.contains("hunter2"), "the log repeats the SMTP password");
}

/// `palisade serve` with `notify.smtp_ca_file` set, expected to refuse to start; its stderr.
fn serve_refuses(dir: &Path, smtp_url: &str, ca_file: &Path) -> String {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PALISADE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("PALISADE_NOTIFY__SMTP_URL", smtp_url)
        .env("PALISADE_NOTIFY__SMTP_FROM", "Palisade <no-reply@palisade.test>")
        .env("PALISADE_NOTIFY__SMTP_CA_FILE", ca_file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("palisade serve started with {}", ca_file.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    stderr
}

/// A CA file that cannot be used is a start-up error naming the field (no SMTP server needed).
#[test]
fn an_unusable_ca_file_stops_the_start_and_names_the_field() {
    let dir = scratch_dir();
    let url = "smtp://palisade:hunter2@127.0.0.1:1?tls=required";
    let stderr = serve_refuses(dir.path(), url, &dir.path().join("missing.pem"));
    assert!(stderr.contains("notify.smtp_ca_file: cannot read "), "{stderr}");
    let key_only = dir.path().join("key-only.pem");
    std::fs::write(&key_only, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let stderr = serve_refuses(dir.path(), url, &key_only);
    assert!(stderr.contains("notify.smtp_ca_file: holds no certificate"), "{stderr}");
    let ca = private_ca(dir.path());
    let stderr = serve_refuses(dir.path(), "smtp://palisade:hunter2@127.0.0.1:1", &ca.ca);
    assert!(stderr.contains("notify.smtp_ca_file: is only used with TLS"), "{stderr}");
}
