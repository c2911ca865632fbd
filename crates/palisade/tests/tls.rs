//! HTTPS on the real binary: a private CA made here signs the gateway's certificate;
//! curl, a rustls client and the OpenAI Python SDK trust only that CA. The certificate
//! is swapped on SIGHUP while a stream stays open.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType, SerialNumber};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A private certificate authority that lives for one test.
struct PrivateCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl PrivateCa {
    fn new() -> PrivateCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Palisade test CA");
        PrivateCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `localhost` and 127.0.0.1 with this serial: (cert PEM, key PEM, DER).
    fn server_cert(&self, serial: u64) -> (String, String, CertificateDer<'static>) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    /// A client certificate for `name`: (cert PEM, key PEM).
    fn client_cert(&self, name: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

/// The certificate files the gateway is configured with, in a scratch directory.
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    fn in_dir(dir: &Path) -> CertFiles {
        CertFiles { cert: dir.join("tls-cert.pem"), key: dir.join("tls-key.pem") }
    }

    /// Replace both files the way a certificate tool does: write aside, then rename.
    fn install(&self, cert_pem: &str, key_pem: &str) {
        for (path, text) in [(&self.cert, cert_pem), (&self.key, key_pem)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, path).unwrap();
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PALISADE_SERVER__TLS__CERT_FILE", self.cert.display().to_string()),
            ("PALISADE_SERVER__TLS__KEY_FILE", self.key.display().to_string()),
        ]
    }
}

/// `palisade serve` over TLS with `extra` settings, and the CA that signed its certificate.
/// Returns the certificate it serves, as DER.
fn start_tls(dir: &Path, ca: &PrivateCa, extra: &[(&str, &str)]) -> (Running, CertFiles, CertificateDer<'static>) {
    let files = CertFiles::in_dir(dir);
    let (cert, key, served) = ca.server_cert(1);
    files.install(&cert, &key);
    let mut env: Vec<(&str, String)> = files.env();
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let running = Running::start(dir, &["serve", "--listen", "127.0.0.1:0"], &env);
    assert!(running.url.starts_with("https://127.0.0.1:"), "{}", running.url);
    (running, files, served)
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A TLS connection from a rustls client that trusts only `ca`, with what it agreed on.
struct Connected {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    peer: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
}

async fn connect(port: u16, ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Connected {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
    let (_, session) = stream.get_ref();
    let peer = session.peer_certificates().unwrap()[0].clone().into_owned();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    Connected { stream, peer, alpn }
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2(connected: Connected) -> H2 {
    assert_eq!(connected.alpn.as_deref(), Some(&b"h2"[..]), "ALPN");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(connected.stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

fn get(path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(format!("https://localhost{path}"))
        .header("user-agent", "palisade-tests/1")
        .body(Full::default())
        .unwrap()
}

fn curl_available() -> bool {
    let found = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found || !testkit::in_ci(), "curl is needed for the TLS tests in CI");
    if !found {
        eprintln!("SKIPPED (no curl)");
    }
    found
}

/// curl ARGS against the gateway; (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let output = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn curl_speaks_http1_and_h2_over_tls_and_gets_hsts_and_secure_cookies() {
    if !curl_available() {
        return;
    }
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    let (palisade, _files, _) = start_tls(dir.path(), &ca, &[]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.issuer.pem()).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let healthz = format!("{}/healthz", palisade.url);

    let (code, out, err) =
        curl(&["-v", "--http2", "--cacert", ca_file, "-D", "-", "-o", "/dev/null", "-w", "%{http_version}", &healthz]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ALPN: server accepted h2") || err.contains("ALPN, server accepted to use h2"), "{err}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("strict-transport-security: max-age=63072000"), "{out}");
    assert!(out.ends_with('2'), "{out}");

    let (code, out, err) =
        curl(&["--http1.1", "--cacert", ca_file, "-D", "-", "-o", "/dev/null", "-w", "%{http_version}", &healthz]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("strict-transport-security: max-age=63072000"), "{out}");
    assert!(out.ends_with("1.1"), "{out}");

    // A refusal carries it too (a wrong method answered by the router).
    let (code, out, err) =
        curl(&["--cacert", ca_file, "-D", "-", "-o", "/dev/null", &format!("{}/v1/chat/completions", palisade.url)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/2 405"), "{out}");
    assert!(out.contains("strict-transport-security: max-age=63072000"), "{out}");

    // Cookies are Secure without `auth.cookie_secure`: TLS implies it.
    let (code, out, err) = curl(&[
        "--cacert",
        ca_file,
        "-A",
        "palisade-tests/1",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{}/auth/csrf", palisade.url),
    ]);
    assert_eq!(code, 0, "{err}");
    let cookie = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: palisade_csrf="))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(cookie.trim_end().ends_with("; Secure"), "{cookie}");

    // A client that does not trust the private CA refuses the certificate.
    let (code, _, err) = curl(&[&healthz]);
    assert_eq!(code, 60, "expected a certificate verification failure: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rustls_client_gets_h2_or_http1_by_alpn() {
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    let (palisade, _files, served) = start_tls(dir.path(), &ca, &[]);
    let port = port(&palisade.url);
    let (ok, key, stderr) = run(dir.path(), &["keys", "create", "--name", "tls"]);
    assert!(ok, "{stderr}");

    let connected = connect(port, &ca.der(), &[b"h2", b"http/1.1"]).await;
    assert_eq!(connected.peer, served);
    let mut sender = h2(connected).await;
    let mut models = get("/v1/models");
    models.headers_mut().insert("authorization", format!("Bearer {}", key.trim()).parse().unwrap());
    let response = sender.send_request(models).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["strict-transport-security"], "max-age=63072000");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("palisade-sim"), "{body:?}");

    let connected = connect(port, &ca.der(), &[b"http/1.1"]).await;
    assert_eq!(connected.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(connected.stream)).await.unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(get("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_11);
}

/// Over TLS a blocked client's refusals are answered before hyper, with HSTS like every
/// answer over TLS, and what the connection sends next still reaches hyper. Hyper's own
/// refusals would have closed the connection after 32 in a row; the front keeps it for
/// 1,024, since a new TLS connection costs this side a handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_client_over_tls_is_refused_with_hsts_then_reaches_the_health_check() {
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    let (palisade, _files, _) = start_tls(dir.path(), &ca, &[]);
    let (ok, _, err) = run(dir.path(), &["admin", "--url", &palisade.admin_url, "block", "add", "127.0.0.1/32"]);
    assert!(ok, "{err}");
    let mut connected = connect(port(&palisade.url), &ca.der(), &[b"http/1.1"]).await;
    let body = r#"{"model":"palisade-sim","messages":[{"role":"user","content":"hi"}]}"#;
    let chat = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let sent = format!(
        "{}GET /v1/models HTTP/1.1\r\nhost: localhost\r\naccept: text/html\r\n\r\n\
         GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        chat.repeat(40)
    );
    connected.stream.write_all(sent.as_bytes()).await.unwrap();
    let mut replies = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), connected.stream.read_to_end(&mut replies))
        .await
        .expect("the connection ends after the health check")
        .unwrap();
    let replies = String::from_utf8_lossy(&replies);
    let answers: Vec<&str> = replies.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 42, "every request answered on the one connection: {replies}");
    for answer in &answers[..40] {
        assert!(answer.starts_with("403 Forbidden") && answer.contains("\"code\":\"blocked\""), "{answer}");
        assert!(!answer.contains("connection: close"), "{answer}");
    }
    assert!(answers[40].starts_with("403") && answers[40].contains("<code>blocked</code>"), "{}", answers[40]);
    assert!(answers[41].starts_with("200 OK"), "{}", answers[41]);
    for answer in &answers {
        assert!(answer.contains("strict-transport-security: max-age=63072000"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_lane_speaks_tls_too() {
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    let (mut palisade, _files, served) = start_tls(dir.path(), &ca, &[("PALISADE_STATUS__LISTEN", "127.0.0.1:0")]);
    let lane = tokio::task::block_in_place(|| {
        palisade.wait_for_log(Duration::from_secs(10), |l| l["message"] == "status page lane listening")
    });
    let address = lane["address"].as_str().unwrap();
    assert!(address.starts_with("https://"), "{address}");
    let connected = connect(port(address), &ca.der(), &[b"h2"]).await;
    assert_eq!(connected.peer, served);
    let mut sender = h2(connected).await;
    let response = sender.send_request(get("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["strict-transport-security"], "max-age=63072000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_before_its_handshake() {
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    let (palisade, _files, _) = start_tls(dir.path(), &ca, &[("PALISADE_SERVER__HEADER_READ_TIMEOUT_MS", "500")]);
    let mut silent = TcpStream::connect(("127.0.0.1", port(&palisade.url))).await.unwrap();
    let started = Instant::now();
    // Generous bound: the timeout is half a second; a loaded CI machine may be slow.
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut [0u8; 64])).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the silent connection was not closed: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(400), "closed too early: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_comes_before_the_handshake() {
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    let (palisade, _files, _) = start_tls(
        dir.path(),
        &ca,
        &[("PALISADE_SHIELD__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"), ("PALISADE_SHIELD__PROXY_PROTOCOL", "true")],
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tcp = TcpStream::connect(("127.0.0.1", port(&palisade.url))).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 443\r\n").await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS after the PROXY header");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(get("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Read a streamed reply's body until its `[DONE]`, returning everything read.
async fn read_to_done(body: &mut hyper::body::Incoming, limit: Duration) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + limit;
    while !text.contains("data: [DONE]") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
            other => panic!("stream ended without [DONE] ({other:?}); read: {text}"),
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_while_a_stream_stays_open() {
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    // Ten tokens a second: a 40-token reply streams for about four seconds.
    let (mut palisade, files, first) = start_tls(dir.path(), &ca, &[("PALISADE_SIMULATOR__TOKENS_PER_S", "10")]);
    let port = port(&palisade.url);
    let (ok, key, stderr) = run(dir.path(), &["keys", "create", "--name", "tls"]);
    assert!(ok, "{stderr}");

    let connected = connect(port, &ca.der(), &[b"h2"]).await;
    assert_eq!(connected.peer, first);
    let mut streaming = h2(connected).await;
    let request = hyper::Request::post("https://localhost/v1/chat/completions")
        .header("user-agent", "palisade-tests/1")
        .header("authorization", format!("Bearer {}", key.trim()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            r#"{"model":"palisade-sim","stream":true,"max_tokens":40,"messages":[{"role":"user","content":"hello"}]}"#,
        )))
        .unwrap();
    let response = streaming.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let head = body.frame().await.unwrap().unwrap();
    assert!(head.data_ref().is_some_and(|d| d.starts_with(b"data: ")), "{head:?}");

    // A new certificate (new key, serial 2), then SIGHUP.
    let (cert, key_pem, second) = ca.server_cert(2);
    assert_ne!(first.as_ref(), second.as_ref());
    files.install(&cert, &key_pem);
    palisade.signal("HUP");
    tokio::task::block_in_place(|| {
        palisade.wait_for_log(Duration::from_secs(10), |l| l["message"] == "TLS certificate reloaded")
    });

    let connected = connect(port, &ca.der(), &[b"h2"]).await;
    assert_eq!(connected.peer, second, "a new connection gets the new certificate");
    let mut fresh = h2(connected).await;
    assert_eq!(fresh.send_request(get("/healthz")).await.unwrap().status(), 200);

    // The stream opened before the swap runs to its end on the old connection.
    let rest = read_to_done(&mut body, Duration::from_secs(30)).await;
    assert!(rest.matches("data: ").count() > 10, "{rest}");
    // The old connection still takes requests.
    assert_eq!(streaming.send_request(get("/healthz")).await.unwrap().status(), 200);

    // A broken file: the reload fails, is logged, and the second certificate stays.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    palisade.signal("HUP");
    let failed = tokio::task::block_in_place(|| {
        palisade.wait_for_log(Duration::from_secs(10), |l| {
            l["message"] == "TLS certificate reload failed; still serving the previous one"
        })
    });
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert!(failed["error"].as_str().unwrap().starts_with("server.tls.cert_file"), "{failed}");
    let connected = connect(port, &ca.der(), &[b"h2"]).await;
    assert_eq!(connected.peer, second);
    assert!(palisade.child.try_wait().unwrap().is_none(), "SIGHUP must not stop the gateway");
}

/// The OpenAI Python SDK trusts the private CA through `SSL_CERT_FILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_over_tls() {
    let Some(python) = python_with_openai() else { return };
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    let (palisade, _files, _) = start_tls(dir.path(), &ca, &[("PALISADE_PROXY__MAX_BODY_BYTES", "2048")]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.issuer.pem()).unwrap();
    let (ok, key, stderr) = run(dir.path(), &["keys", "create", "--name", "sdk"]);
    assert!(ok, "{stderr}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let url = format!("{}/v1", palisade.url);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(url).arg(key.trim()).env("SSL_CERT_FILE", ca_file).output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDK script failed: {stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["models"], serde_json::json!(["palisade-sim"]));
    assert_eq!(seen["chat"]["finish_reason"], "stop");
    assert_eq!(seen["stream"]["pieces"].as_array().unwrap().len(), 6, "{seen}");
}

#[test]
fn config_check_reads_the_certificate_files() {
    let dir = scratch_dir();
    let ca = PrivateCa::new();
    let files = CertFiles::in_dir(dir.path());
    let (cert, _, _) = ca.server_cert(1);
    let (_, other_key, _) = ca.server_cert(2);
    files.install(&cert, &other_key);
    let config = dir.path().join("tls.toml");
    let write = |cert: &Path| {
        let text = format!("[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n", cert, files.key);
        std::fs::write(&config, text).unwrap();
    };
    write(&dir.path().join("missing.pem"));
    let (ok, _, stderr) = run(dir.path(), &["config", "check", "tls.toml"]);
    assert!(!ok);
    assert!(stderr.contains("server.tls.cert_file:"), "{stderr}");

    write(&files.cert);
    let (ok, _, stderr) = run(dir.path(), &["config", "check", "tls.toml"]);
    assert!(!ok, "a key from another certificate must be refused");
    assert!(stderr.contains("server.tls.key_file:") && stderr.contains("does not fit"), "{stderr}");

    let (cert, key, _) = ca.server_cert(3);
    files.install(&cert, &key);
    let (ok, stdout, stderr) = run(dir.path(), &["config", "check", "tls.toml"]);
    assert!(ok, "{stderr}");
    assert!(stdout.ends_with(": ok\n"), "{stdout}");
}

#[test]
fn pem_from_the_test_ca_parses() {
    // Guards the helper itself: what the gateway reads is what the test wrote.
    let ca = PrivateCa::new();
    let (cert, _, der) = ca.server_cert(7);
    assert_eq!(CertificateDer::from_pem_slice(cert.as_bytes()).unwrap(), der);
}

/// `[admin.tls]` with `client_ca_file`: the admin API is refused at the handshake to a
/// client without a certificate from the operators' CA (or with one from another CA),
/// and served to `palisade admin` presenting one.
#[test]
fn the_admin_listener_requires_a_client_certificate_from_its_ca() {
    let dir = scratch_dir();
    let (server_ca, operators_ca, stranger_ca) = (PrivateCa::new(), PrivateCa::new(), PrivateCa::new());
    let files = CertFiles::in_dir(dir.path());
    let (cert, key, _) = server_ca.server_cert(7);
    files.install(&cert, &key);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let server_ca_file = write("server-ca.pem", &server_ca.pem());
    let client_ca_file = write("operators-ca.pem", &operators_ca.pem());
    let (c, k) = operators_ca.client_cert("alice");
    let (client_cert, client_key) = (write("alice.pem", &c), write("alice-key.pem", &k));
    let (c, k) = stranger_ca.client_cert("mallory");
    let (stranger_cert, stranger_key) = (write("mallory.pem", &c), write("mallory-key.pem", &k));
    let cert_file = files.cert.display().to_string();
    let key_file = files.key.display().to_string();
    let palisade = Running::start(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("PALISADE_ADMIN__TLS__CERT_FILE", &cert_file),
            ("PALISADE_ADMIN__TLS__KEY_FILE", &key_file),
            ("PALISADE_ADMIN__TLS__CLIENT_CA_FILE", &client_ca_file),
        ],
    );
    assert!(palisade.admin_url.starts_with("https://127.0.0.1:"), "{}", palisade.admin_url);
    assert!(palisade.url.starts_with("http://"), "the public listener is unchanged: {}", palisade.url);
    let admin = |extra: &[&str]| {
        let mut args = vec!["admin", "--url", palisade.admin_url.as_str(), "--ca-file", server_ca_file.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["registration", "show"]);
        run(dir.path(), &args)
    };
    // Refused at the TLS layer: no HTTP answer at all (in TLS 1.3 the client learns it
    // from the server's alert after its own handshake messages).
    let (ok, _, err) = admin(&[]);
    assert!(!ok && !err.contains("answered"), "no client certificate: {err}");
    let (ok, _, err) = admin(&["--client-cert", &stranger_cert, "--client-key", &stranger_key]);
    assert!(!ok && !err.contains("answered"), "another CA's certificate: {err}");
    let (ok, out, err) = admin(&["--client-cert", &client_cert, "--client-key", &client_key]);
    assert!(ok && out.contains("\"open\""), "{out}{err}");

    if curl_available() {
        let url = format!("{}/admin/registration", palisade.admin_url);
        let (code, _, _) = curl(&["--cacert", &server_ca_file, &url]);
        assert_ne!(code, 0, "curl without a certificate is refused");
        let token = std::fs::read_to_string(dir.path().join("palisade-data/admin.token")).unwrap();
        let bearer = format!("Authorization: Bearer {}", token.trim());
        let (code, out, err) =
            curl(&["--cacert", &server_ca_file, "--cert", &client_cert, "--key", &client_key, "-H", &bearer, &url]);
        assert!(code == 0 && out.contains("\"open\""), "{code} {out}{err}");
    }
}
