//! Helpers for the gateway's integration tests: the real router on an ephemeral
//! loopback port, in front of simulated or scripted upstreams.

#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accounts::crypto::PiiKeys;
use accounts::notify::Notifier;
use accounts::service::{Accounts, AccountsConfig};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use drill::sim::{self, SimConfig, SimStats};
use gateway::config::UpstreamConfig;
use gateway::{Gateway, GatewayConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub struct TestServer {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn serve_router(router: Router) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    TestServer { url, stop: Some(stop) }
}

/// A simulated model server on an ephemeral port.
pub struct Sim {
    pub server: TestServer,
    pub stats: Arc<SimStats>,
}

pub async fn spawn_sim(cfg: SimConfig) -> Sim {
    let (router, stats) = sim::router(cfg);
    Sim { server: serve_router(router).await, stats }
}

/// A fast simulated model: no time to first token, no delay between tokens.
pub fn instant_sim() -> SimConfig {
    SimConfig { ttft: Duration::ZERO, tokens_per_s: 0, ..SimConfig::default() }
}

pub fn upstream(name: &str, url: &str) -> UpstreamConfig {
    UpstreamConfig { name: name.to_owned(), url: url.to_owned(), api_key: None, models: Vec::new() }
}

/// An address where nothing listens.
pub async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

pub struct TestGateway {
    pub url: String,
    /// Where `/admin` answers: `url`, unless the gateway runs an admin listener of its
    /// own ([`spawn_with_admin_listener`]).
    pub admin_url: String,
    pub gateway: Arc<Gateway>,
    /// Where one-time codes are delivered (the outbox notifier's file).
    pub outbox: std::path::PathBuf,
    _dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    /// Stop accepting and drain; resolves when the server has returned.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// The real gateway (router, listener, health checks) on an ephemeral port,
/// serving `/v1` anonymously (the proxy tests are not about accounts).
pub async fn spawn_gateway(upstreams: Vec<UpstreamConfig>, tweak: impl FnOnce(&mut GatewayConfig)) -> TestGateway {
    spawn_gateway_on(None, upstreams, |c| {
        c.auth.allow_anonymous_inference = true;
        tweak(c)
    })
    .await
}

/// The real gateway with accounts on `store_url` (default: a fresh SQLite file).
pub async fn spawn_gateway_on(
    store_url: Option<&str>,
    upstreams: Vec<UpstreamConfig>,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> TestGateway {
    spawn_node(store_url, PiiKeys::generate(), test_accounts(), upstreams, tweak).await
}

/// The account service's settings in tests: two hashing threads.
pub fn test_accounts() -> AccountsConfig {
    AccountsConfig { hash_threads: 2, ..AccountsConfig::default() }
}

/// [`spawn_gateway_on`] with the given personal-data keys: the nodes of one fleet share
/// them, as they share the store (a blind index must mean the same on every node).
pub async fn spawn_node(
    store_url: Option<&str>,
    keys: PiiKeys,
    accounts_config: AccountsConfig,
    upstreams: Vec<UpstreamConfig>,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> TestGateway {
    let mut config = GatewayConfig { upstreams, ..GatewayConfig::default() };
    config.admin_token_hash = Some(accounts::tokens::hash(ADMIN_TOKEN));
    tweak(&mut config);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let url = match store_url {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", dir.path().join("palisade.db").display()),
    };
    let store = Store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let accounts = Accounts::new(store, keys, Notifier::outbox(outbox.clone()), accounts_config).await.unwrap();
    serve_gateway(config, accounts, outbox, dir, false).await
}

/// The real gateway as `palisade serve` runs it: `/admin` on a listener of its own
/// (accounts on a fresh SQLite store, the bootstrap secret [`ADMIN_TOKEN`]).
pub async fn spawn_with_admin_listener(tweak: impl FnOnce(&mut GatewayConfig)) -> TestGateway {
    let mut config = GatewayConfig::default();
    config.admin_token_hash = Some(accounts::tokens::hash(ADMIN_TOKEN));
    tweak(&mut config);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = fresh_store(&dir).await;
    let outbox = dir.path().join("outbox.jsonl");
    let notifier = Notifier::outbox(outbox.clone());
    let accounts = Accounts::new(store, PiiKeys::generate(), notifier, test_accounts()).await.unwrap();
    serve_gateway(config, accounts, outbox, dir, true).await
}

/// A fresh SQLite store in `dir`, migrated.
pub async fn fresh_store(dir: &tempfile::TempDir) -> Store {
    let store = Store::open(&format!("sqlite://{}", dir.path().join("palisade.db").display())).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// For tests about accounts rather than the edge: no per-route limits (the defaults allow
/// ten registrations and ten logins a minute, fewer than such a test makes).
pub fn without_route_limits(config: &mut GatewayConfig) {
    config.shield.limits.routes.clear();
}

/// The real gateway around an account service the test built itself (without route
/// limits, see [`without_route_limits`]).
pub async fn spawn_gateway_with(
    accounts: Accounts,
    upstreams: Vec<UpstreamConfig>,
    dir: Arc<tempfile::TempDir>,
) -> TestGateway {
    let mut config = GatewayConfig { upstreams, ..GatewayConfig::default() };
    config.admin_token_hash = Some(accounts::tokens::hash(ADMIN_TOKEN));
    without_route_limits(&mut config);
    let outbox = dir.path().join("outbox.jsonl");
    serve_gateway(config, accounts, outbox, dir, false).await
}

/// Serve `accounts` behind a gateway on ephemeral ports; with `admin_listener`, `/admin`
/// on a listener of its own (`run_with_admin`), else on the main one (`run`).
async fn serve_gateway(
    config: GatewayConfig,
    accounts: Accounts,
    outbox: std::path::PathBuf,
    dir: Arc<tempfile::TempDir>,
    admin_listener: bool,
) -> TestGateway {
    let gateway = Gateway::new(config, Arc::new(accounts)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let admin = if admin_listener { Some(TcpListener::bind("127.0.0.1:0").await.unwrap()) } else { None };
    let admin_url = match &admin {
        Some(admin) => {
            let scheme = if gateway.admin_tls().is_some() { "https" } else { "http" };
            format!("{scheme}://{}", admin.local_addr().unwrap())
        }
        None => url.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(gateway::run_with_admin(gateway.clone(), listener, admin, async {
        let _ = stopped.await;
    }));
    TestGateway { url, admin_url, gateway, outbox, _dir: dir, stop: Some(stop), done: Some(done) }
}

/// An upstream whose streamed replies the test writes chunk by chunk, and which
/// records the headers it received.
pub struct ScriptedUpstream {
    pub server: TestServer,
    pub chunks: mpsc::Receiver<mpsc::Sender<Bytes>>,
    pub seen_headers: Arc<Mutex<Vec<HeaderMap>>>,
}

pub async fn scripted_upstream() -> ScriptedUpstream {
    let (streams_tx, streams_rx) = mpsc::channel::<mpsc::Sender<Bytes>>(16);
    let seen_headers: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let seen = seen_headers.clone();
    let router = Router::new()
        .route("/v1/models", get(|| async { axum::Json(serde_json::json!({"object": "list", "data": []})) }))
        .route(
            "/v1/chat/completions",
            post(move |headers: HeaderMap| {
                let streams_tx = streams_tx.clone();
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(headers);
                    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
                    streams_tx.send(tx).await.unwrap();
                    let body = futures_util::stream::poll_fn(move |cx| {
                        rx.poll_recv(cx).map(|c| c.map(Ok::<Bytes, std::convert::Infallible>))
                    });
                    axum::response::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Body::from_stream(body))
                        .unwrap()
                }
            }),
        );
    ScriptedUpstream { server: serve_router(router).await, chunks: streams_rx, seen_headers }
}

/// Poll `check` until it holds, failing after `limit`. For effects another task
/// produces; the limit is generous because CI machines are slow and shared.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll the async `check` until it gives a value, failing after `limit`.
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "palisade-sim",
        "stream": stream,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hello"}]
    })
}

/// The user agent test clients send: a named client, so the edge's bot score (which
/// challenges requests without one) leaves tests about something else alone.
pub const TEST_AGENT: &str = "palisade-tests/1";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().user_agent(TEST_AGENT).timeout(Duration::from_secs(30)).build().unwrap()
}

pub const CN_PHONE: &str = "+86 138 0013 8000";
pub const CN_PHONE_2: &str = "+86 139 1234 5678";
pub const US_PHONE: &str = "+1 650 253 0000";
pub const PASSWORD: &str = "correct horse battery staple";

/// The last code `outbox` (a gateway's outbox file) delivered to `user_id`.
pub fn code_in(outbox: &std::path::Path, user_id: i64) -> String {
    let text = std::fs::read_to_string(outbox).unwrap();
    let line = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["user_id"] == user_id)
        .last()
        .expect("a message for the user");
    line["text"].as_str().unwrap().chars().filter(char::is_ascii_digit).take(6).collect()
}

/// A gateway with accounts (no route limits) and a browser-like client keeping cookies.
pub struct Site {
    pub gw: TestGateway,
    pub http: reqwest::Client,
    _sim: Sim,
}

impl Site {
    pub async fn new() -> Site {
        Site::on(None).await
    }

    pub async fn on(store_url: Option<&str>) -> Site {
        let sim = spawn_sim(instant_sim()).await;
        let gw = spawn_gateway_on(store_url, vec![upstream("sim", &sim.server.url)], without_route_limits).await;
        let http = reqwest::Client::builder()
            .user_agent(TEST_AGENT)
            .cookie_store(true)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Site { gw, http, _sim: sim }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(self.url(path)).json(&body).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = client().request(method, self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The last code the outbox delivered to `user_id`.
    pub fn code_for(&self, user_id: i64) -> String {
        code_in(&self.gw.outbox, user_id)
    }

    /// Register, verify and return the user id.
    pub async fn member(&self, phone: &str) -> i64 {
        let (status, body) = self.post("/auth/register", json!({"phone": phone, "password": PASSWORD})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let user_id = body["user_id"].as_i64().unwrap();
        let (status, body) =
            self.post("/auth/verify", json!({"user_id": user_id, "code": self.code_for(user_id)})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        user_id
    }

    /// Log in (cookies kept by the client) and return the CSRF token.
    pub async fn login(&self, phone: &str) -> String {
        let (status, body) = self.post("/auth/login", json!({"phone": phone, "password": PASSWORD})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["csrf_token"].as_str().unwrap().to_owned()
    }
}

/// An upstream that answers every generation request with one canned reply (status,
/// headers, body) and records the headers it received; `GET /v1/models` (the health
/// check) always answers 200.
pub struct CannedUpstream {
    pub server: TestServer,
    pub seen_headers: Arc<Mutex<Vec<HeaderMap>>>,
}

pub async fn canned_upstream(status: u16, headers: &[(&str, &str)], body: &str) -> CannedUpstream {
    let seen_headers: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let seen = seen_headers.clone();
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let body = body.to_owned();
    let reply = move |request_headers: HeaderMap| {
        let (seen, headers, body) = (seen.clone(), headers.clone(), body.clone());
        async move {
            seen.lock().unwrap().push(request_headers);
            let mut response = axum::response::Response::builder().status(status);
            for (name, value) in &headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
    };
    let router = Router::new()
        .route("/v1/models", get(|| async { axum::Json(serde_json::json!({"object": "list", "data": []})) }))
        .fallback(reply);
    CannedUpstream { server: serve_router(router).await, seen_headers }
}

/// A client whose connections come from `source` (a loopback address: a botnet of one
/// machine) with user agent `agent`.
pub fn client_from(source: &str, agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .user_agent(agent)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An `/admin` call with the admin token: its status and JSON body (null if none).
pub async fn admin_call_json(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut r = client().request(method, format!("{}{path}", gw.admin_url)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}
