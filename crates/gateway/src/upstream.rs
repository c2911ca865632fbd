//! The pool of model servers: least-outstanding-requests balancing, active
//! health checks, and a circuit breaker per upstream.

mod breaker;
pub mod conn;
pub mod h1;

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use breaker::{BreakerState, CircuitBreaker};
pub use conn::{BodyError, Conn, ConnError, ConnPool, Outgoing, UpstreamBody, WriteHeaders};

use crate::config::{HealthCheckConfig, MAX_UPSTREAMS, ProxyConfig, UpstreamConfig};
use crate::validation::{InvalidField, invalid};

/// The HTTP client shared by the proxy and the health checks.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long an unused connection to an upstream is kept, and how many are kept.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_IDLE_CONNECTIONS: usize = 1024;

/// An upstream's base URL, split once at start so each request only joins paths.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    scheme: Scheme,
    authority: Authority,
    /// Path before `/v1/...`, without a trailing slash (often empty).
    prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let uri: Uri = url.parse().map_err(|e| format!("`{url}` is not a URL ({e})"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| format!("`{url}` has no scheme; write http://HOST:PORT"))?;
        if scheme == Scheme::HTTPS {
            return Err("https upstreams are not supported yet; reach the model server over http on a \
                        private network or through a local TLS-terminating proxy"
                .to_owned());
        }
        if scheme != Scheme::HTTP {
            return Err(format!("`{url}`: only http:// upstreams are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| format!("`{url}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!("`{url}` must not have a query string"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(BaseUrl { scheme, authority, prefix })
    }

    /// The `Host` header for requests to this upstream: the host, and the port
    /// unless it is http's default.
    pub fn host_header(&self) -> Option<HeaderValue> {
        let host = match self.authority.port_u16() {
            Some(port) if port != 80 => format!("{}:{port}", self.authority.host()),
            _ => self.authority.host().to_owned(),
        };
        HeaderValue::try_from(host).ok()
    }

    /// Where to connect: `host:port`.
    fn address(&self) -> String {
        format!("{}:{}", self.authority.host(), self.authority.port_u16().unwrap_or(80))
    }

    /// The upstream URI for a client's path and query (`/v1/chat/completions?x`).
    pub fn join(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let mut full = String::with_capacity(self.prefix.len() + path_and_query.len());
        full.push_str(&self.prefix);
        full.push_str(path_and_query);
        Uri::builder().scheme(self.scheme.clone()).authority(self.authority.clone()).path_and_query(full).build()
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

/// Why an upstream request failed, for metrics and the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Connect,
    Timeout,
    ServerError,
    Stream,
}

impl FailureKind {
    const ALL: [FailureKind; 4] =
        [FailureKind::Connect, FailureKind::Timeout, FailureKind::ServerError, FailureKind::Stream];

    fn label(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::ServerError => "server_error",
            FailureKind::Stream => "stream",
        }
    }
}

/// One model server and what the gateway knows about it right now.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub base: BaseUrl,
    /// Pre-built `Authorization` header for the upstream's own API key.
    pub authorization: Option<HeaderValue>,
    /// Connections for proxied requests (health checks use the pool's client).
    pub conns: ConnPool,
    models: Vec<String>,
    in_flight: AtomicU32,
    requests: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    healthy: AtomicBool,
    check_failures: AtomicU32,
    check_successes: AtomicU32,
    pub breaker: CircuitBreaker,
}

impl Upstream {
    fn new(cfg: &UpstreamConfig, proxy: &ProxyConfig) -> Result<Upstream, String> {
        let authorization = match &cfg.api_key {
            Some(key) => {
                let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    format!("upstream `{}`: api_key contains characters not allowed in a header", cfg.name)
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let base = BaseUrl::parse(&cfg.url)?;
        let host =
            base.host_header().ok_or_else(|| format!("upstream `{}`: the host is not a valid header", cfg.name))?;
        let mut fixed = Vec::new();
        h1::write_header(&mut fixed, b"host", host.as_bytes());
        if let Some(auth) = &authorization {
            h1::write_header(&mut fixed, b"authorization", auth.as_bytes());
        }
        let conns = ConnPool::new(conn::PoolConfig {
            address: base.address(),
            prefix: base.prefix.clone(),
            fixed,
            connect_timeout: Duration::from_millis(proxy.connect_timeout_ms),
            idle_timeout: IDLE_CONNECTION_TIMEOUT,
            max_idle: MAX_IDLE_CONNECTIONS,
        });
        Ok(Upstream {
            name: cfg.name.clone(),
            base,
            authorization,
            conns,
            models: cfg.models.clone(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: Default::default(),
            // Optimistic until the first check says otherwise, so a fresh gateway
            // serves at once; the first check runs immediately at start.
            healthy: AtomicBool::new(true),
            check_failures: AtomicU32::new(0),
            check_successes: AtomicU32::new(0),
            breaker: CircuitBreaker::new(proxy.circuit_breaker.failure_threshold, proxy.circuit_breaker.open_ms),
        })
    }

    pub fn serves(&self, model: Option<&str>) -> bool {
        match model {
            Some(model) if !self.models.is_empty() => self.models.iter().any(|m| m == model),
            _ => true,
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn record_failure(&self, kind: FailureKind, now_ms: u64) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.breaker.on_failure(now_ms);
    }

    pub fn record_success(&self) {
        self.breaker.on_success();
    }

    fn record_check(&self, ok: bool, cfg: &HealthCheckConfig) {
        if ok {
            self.check_failures.store(0, Ordering::Relaxed);
            let run = self.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
            if run >= cfg.healthy_after && !self.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(upstream = %self.name, "upstream healthy again");
            }
        } else {
            self.check_successes.store(0, Ordering::Relaxed);
            let run = self.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if run >= cfg.unhealthy_after && self.healthy.swap(false, Ordering::Relaxed) {
                tracing::warn!(upstream = %self.name, "upstream failed its health checks; taken out of rotation");
            }
        }
    }
}

/// Counts a request against its upstream's outstanding requests until dropped,
/// which is when the reply's last byte has been sent or the client went away.
#[derive(Debug)]
pub struct InFlight {
    pub upstream: Arc<Upstream>,
}

impl InFlight {
    fn new(upstream: Arc<Upstream>) -> InFlight {
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        upstream.requests.fetch_add(1, Ordering::Relaxed);
        InFlight { upstream }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A set of upstream indices already tried for one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried(u64);

impl Tried {
    pub fn insert(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
}

/// The upstream pool.
pub struct UpstreamPool {
    upstreams: Vec<Arc<Upstream>>,
    pub client: HttpClient,
    next: AtomicUsize,
    epoch: Instant,
    health: HealthCheckConfig,
}

impl UpstreamPool {
    pub fn new(cfg: &ProxyConfig, upstreams: &[UpstreamConfig]) -> Result<UpstreamPool, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
            .build(connector);
        let upstreams = upstreams.iter().map(|u| Upstream::new(u, cfg).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        Ok(UpstreamPool {
            upstreams,
            client,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            health: cfg.health_check.clone(),
        })
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Milliseconds since the pool was built, never 0 (the breaker's clock).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Choose the healthy, breaker-closed upstream serving `model` with the fewest
    /// outstanding requests, skipping those already `tried`. Ties rotate, so equal
    /// upstreams share the load.
    pub fn pick(&self, model: Option<&str>, tried: &mut Tried) -> Option<(usize, InFlight)> {
        let n = self.upstreams.len();
        if n == 0 {
            return None;
        }
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        loop {
            let mut best: Option<(usize, u32)> = None;
            for offset in 0..n {
                let index = (start + offset) % n;
                let up = &self.upstreams[index];
                if tried.contains(index) || !up.is_healthy() || !up.serves(model) {
                    continue;
                }
                if up.breaker.state(now) == BreakerState::Open {
                    continue;
                }
                let load = up.in_flight();
                if best.is_none_or(|(_, least)| load < least) {
                    best = Some((index, load));
                }
            }
            let (index, _) = best?;
            tried.insert(index);
            let up = &self.upstreams[index];
            // Half-open upstreams admit one trial; if another request took it, look again.
            if up.breaker.try_acquire(now) {
                return Some((index, InFlight::new(up.clone())));
            }
        }
    }

    pub fn healthy_count(&self) -> usize {
        let now = self.now_ms();
        self.upstreams.iter().filter(|u| u.is_healthy() && u.breaker.state(now) != BreakerState::Open).count()
    }

    /// Check every upstream once, concurrently.
    pub async fn check_all(&self) {
        let checks = self.upstreams.iter().map(|up| async move {
            let ok = self.check_one(up).await;
            up.record_check(ok, &self.health);
        });
        futures_util::future::join_all(checks).await;
    }

    async fn check_one(&self, up: &Upstream) -> bool {
        let Ok(uri) = up.base.join(&self.health.path) else {
            return false;
        };
        let mut request = Request::builder().method(Method::GET).uri(uri);
        if let Some(auth) = &up.authorization {
            request = request.header(http::header::AUTHORIZATION, auth.clone());
        }
        let Ok(request) = request.body(Full::new(Bytes::new())) else {
            return false;
        };
        let timeout = Duration::from_millis(self.health.timeout_ms);
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response.status().is_success(),
            _ => false,
        }
    }

    /// Run health checks forever at the configured interval; the first at once.
    pub async fn run_health_checks(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.health.interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.check_all().await;
        }
    }

    /// Append the upstream series to `out`, in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let now = self.now_ms();
        out.push_str("# HELP palisade_upstream_in_flight Requests outstanding at each upstream.\n");
        out.push_str("# TYPE palisade_upstream_in_flight gauge\n");
        for up in &self.upstreams {
            let _ = writeln!(out, "palisade_upstream_in_flight{{upstream=\"{}\"}} {}", up.name, up.in_flight());
        }
        out.push_str("# HELP palisade_upstream_requests_total Requests sent to each upstream.\n");
        out.push_str("# TYPE palisade_upstream_requests_total counter\n");
        for up in &self.upstreams {
            let n = up.requests.load(Ordering::Relaxed);
            let _ = writeln!(out, "palisade_upstream_requests_total{{upstream=\"{}\"}} {n}", up.name);
        }
        out.push_str("# HELP palisade_upstream_errors_total Failed upstream requests, by kind.\n");
        out.push_str("# TYPE palisade_upstream_errors_total counter\n");
        for up in &self.upstreams {
            for kind in FailureKind::ALL {
                let n = up.failures[kind as usize].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "palisade_upstream_errors_total{{upstream=\"{}\",kind=\"{}\"}} {n}",
                    up.name,
                    kind.label()
                );
            }
        }
        out.push_str(
            "# HELP palisade_upstream_healthy 1 when the upstream passes health checks and its breaker is not open.\n",
        );
        out.push_str("# TYPE palisade_upstream_healthy gauge\n");
        for up in &self.upstreams {
            let healthy = up.is_healthy() && up.breaker.state(now) != BreakerState::Open;
            let _ = writeln!(out, "palisade_upstream_healthy{{upstream=\"{}\"}} {}", up.name, u8::from(healthy));
        }
    }
}

/// Check the upstream list: unique names, parseable http URLs, at most [`MAX_UPSTREAMS`].
pub fn validate_upstreams(upstreams: &[UpstreamConfig], out: &mut Vec<InvalidField>) {
    if upstreams.len() > MAX_UPSTREAMS {
        out.push(invalid("upstreams", format!("at most {MAX_UPSTREAMS} upstreams are supported")));
    }
    for (i, up) in upstreams.iter().enumerate() {
        if up.name.trim().is_empty() {
            out.push(invalid(format!("upstreams[{i}].name"), "must not be empty"));
        }
        if upstreams[..i].iter().any(|other| other.name == up.name) {
            out.push(invalid(format!("upstreams[{i}].name"), format!("`{}` is used twice", up.name)));
        }
        if let Err(reason) = BaseUrl::parse(&up.url) {
            out.push(invalid(format!("upstreams[{i}].url"), reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> UpstreamPool {
        let ups: Vec<UpstreamConfig> = (0..n)
            .map(|i| UpstreamConfig {
                name: format!("u{i}"),
                url: format!("http://127.0.0.1:{}", 1000 + i),
                api_key: None,
                models: vec![],
            })
            .collect();
        UpstreamPool::new(&ProxyConfig::default(), &ups).unwrap()
    }

    #[test]
    fn joins_paths_under_a_prefix() {
        let base = BaseUrl::parse("http://h:8000/openai/").unwrap();
        assert_eq!(base.join("/v1/models?x=1").unwrap().to_string(), "http://h:8000/openai/v1/models?x=1");
        assert!(BaseUrl::parse("https://h").unwrap_err().contains("https"));
        assert!(BaseUrl::parse("h:80").is_err());
        assert!(BaseUrl::parse("ftp://h").is_err());
    }

    #[test]
    fn the_request_line_is_the_clients_path_under_the_prefix() {
        for (url, line) in [
            ("http://h:8000", "POST /v1/chat/completions?x=1 HTTP/1.1\r\n"),
            ("http://h:8000/openai/", "POST /openai/v1/chat/completions?x=1 HTTP/1.1\r\n"),
        ] {
            let base = BaseUrl::parse(url).unwrap();
            let mut out = Vec::new();
            h1::write_head(&mut out, &Method::POST, &base.prefix, "/v1/chat/completions?x=1", b"");
            assert_eq!(String::from_utf8(out).unwrap(), line);
        }
    }

    #[test]
    fn picks_least_outstanding_and_skips_tried() {
        let p = pool(3);
        let mut tried = Tried::default();
        let (a, _ga) = p.pick(None, &mut tried).unwrap();
        let (b, _gb) = p.pick(None, &mut tried).unwrap();
        let (c, gc) = p.pick(None, &mut tried).unwrap();
        assert_eq!([a, b, c].iter().collect::<std::collections::HashSet<_>>().len(), 3);
        assert!(p.pick(None, &mut tried).is_none(), "all tried");
        drop(gc);
        // c is now the only one with nothing outstanding.
        let mut fresh = Tried::default();
        for _ in 0..5 {
            let (i, _g) = p.pick(None, &mut fresh.clone()).unwrap();
            assert_eq!(i, c);
        }
        fresh.insert(c);
        assert_ne!(p.pick(None, &mut fresh).unwrap().0, c);
    }

    #[test]
    fn skips_open_breakers_and_unhealthy() {
        let p = pool(2);
        let now = p.now_ms();
        for _ in 0..10 {
            p.upstreams[0].record_failure(FailureKind::Connect, now);
        }
        p.upstreams[1].healthy.store(false, Ordering::Relaxed);
        assert!(p.pick(None, &mut Tried::default()).is_none());
        assert_eq!(p.healthy_count(), 0);
        p.upstreams[1].healthy.store(true, Ordering::Relaxed);
        assert_eq!(p.pick(None, &mut Tried::default()).unwrap().0, 1);
    }

    #[test]
    fn routes_by_model_when_listed() {
        let cfgs = vec![
            UpstreamConfig {
                name: "a".into(),
                url: "http://127.0.0.1:1".into(),
                api_key: None,
                models: vec!["m1".into()],
            },
            UpstreamConfig { name: "b".into(), url: "http://127.0.0.1:2".into(), api_key: None, models: vec![] },
        ];
        let p = UpstreamPool::new(&ProxyConfig::default(), &cfgs).unwrap();
        for _ in 0..4 {
            assert_eq!(p.pick(Some("m2"), &mut Tried::default()).unwrap().0, 1);
        }
    }
}
