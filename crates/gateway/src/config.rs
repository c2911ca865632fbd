//! The gateway's part of the configuration. Every field has a default that
//! makes `palisade serve` work alone; `palisade.example.toml` documents them.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validation::{InvalidField, invalid};

/// Listener settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// How long in-flight requests and streams may run after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// A connection must complete a request head (HTTP/1), or its preface and a first
    /// request (h2), within this time of opening; a request's head must arrive within
    /// it too. Past it the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in progress and nothing read or written for this
    /// long is closed (idle keep-alive and idle h2 connections).
    pub idle_timeout_ms: u64,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Open connections allowed in all; past it new ones get 503 and are closed.
    pub max_connections: usize,
    /// Open connections allowed from one client address; past it, 429 and closed.
    pub max_connections_per_address: u32,
    /// Connections from one address that have not yet sent a request; past it, 429
    /// and closed. Trusted proxies are exempt from this and the next two caps.
    pub max_silent_connections_per_address: u32,
    /// The same for one network (`shield.limits.v4_subnet_prefix` / `v6_subnet_prefix`).
    pub max_silent_connections_per_subnet: u32,
    /// A request body must arrive within this time...
    pub body_read_timeout_ms: u64,
    /// ...and, after its first second, at no less than this average rate.
    pub min_body_bytes_per_s: u64,
    /// Networks (CIDRs) whose clients may read `/metrics` and the details of `/readyz`
    /// (store errors, upstream counts). From anywhere else `/metrics` answers 404 and
    /// `/readyz` only its status. The client is the one the listener resolved (after a
    /// trusted proxy's word).
    pub metrics_allow: Vec<String>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) instead of plain HTTP. With it the
    /// gateway sends `Strict-Transport-Security` and marks cookies `Secure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_grace_ms: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_header_bytes: 64 * 1024,
            max_connections: 20_000,
            max_connections_per_address: 256,
            max_silent_connections_per_address: 64,
            max_silent_connections_per_subnet: 256,
            body_read_timeout_ms: 30_000,
            min_body_bytes_per_s: 1024,
            metrics_allow: vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()],
            tls: None,
        }
    }
}

impl ServerConfig {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// [`Self::metrics_allow`], parsed (entries that do not parse are reported by
    /// `validate` and left out here).
    pub fn metrics_networks(&self) -> Vec<shield::Cidr> {
        self.metrics_allow.iter().filter_map(|c| c.parse().ok()).collect()
    }

    pub fn body_pace(&self) -> crate::connections::BodyPace {
        crate::connections::BodyPace {
            timeout: Duration::from_millis(self.body_read_timeout_ms),
            min_bytes_per_s: self.min_body_bytes_per_s,
            grace: Duration::from_secs(1),
        }
    }
}

/// Inference proxy settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Largest request body accepted on /v1, in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// TCP connect timeout toward an upstream.
    pub connect_timeout_ms: u64,
    /// Longest wait for an upstream's response headers (time to first byte).
    pub first_byte_timeout_ms: u64,
    /// Longest silence between two chunks of a streamed reply before it is cut.
    pub idle_timeout_ms: u64,
    /// Upstreams tried for one request (a retry happens only before anything
    /// was sent to the client).
    pub max_attempts: u32,
    pub health_check: HealthCheckConfig,
    pub circuit_breaker: CircuitBreakerConfig,
    /// Ask a streamed reply for its token usage (`stream_options.include_usage`) when the
    /// client did not, so the token budget is settled against it; the usage chunk is
    /// removed before the client sees it. Off for a model server that refuses the field.
    pub ask_for_usage: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body_bytes: 4 * 1024 * 1024,
            connect_timeout_ms: 2_000,
            first_byte_timeout_ms: 60_000,
            idle_timeout_ms: 30_000,
            max_attempts: 2,
            health_check: HealthCheckConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            ask_for_usage: true,
        }
    }
}

/// Active health checks: a periodic GET to each upstream.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Path requested on each upstream; any 2xx answer counts as healthy.
    pub path: String,
    /// Consecutive failed checks before an upstream is taken out of rotation.
    pub unhealthy_after: u32,
    /// Consecutive good checks before it is put back.
    pub healthy_after: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            path: "/v1/models".to_owned(),
            unhealthy_after: 2,
            healthy_after: 1,
        }
    }
}

/// Passive protection: after `failure_threshold` consecutive failures an
/// upstream gets no traffic for `open_ms`, then one trial request.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    pub failure_threshold: u32,
    pub open_ms: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig { failure_threshold: 5, open_ms: 10_000 }
    }
}

/// One OpenAI-compatible model server.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in metrics, logs and the status page.
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:8000`; the request path (`/v1/...`) is appended.
    pub url: String,
    /// Sent as `Authorization: Bearer ...` to the upstream; clients never see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Models this upstream serves; empty means any model.
    #[serde(default)]
    pub models: Vec<String>,
}

/// Who may use the API.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Serve `/v1` to clients with neither an API key nor a session (a demo).
    pub allow_anonymous_inference: bool,
    /// Mark cookies `Secure`; set when clients reach Palisade over TLS
    /// (directly or through a TLS-terminating proxy).
    pub cookie_secure: bool,
}

/// Everything the gateway needs to run.
#[derive(Clone, Debug, Default)]
pub struct GatewayConfig {
    pub listen: Option<SocketAddr>,
    pub server: ServerConfig,
    pub proxy: ProxyConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub auth: AuthConfig,
    /// SHA-256 of the bootstrap secret (the admin token); `None`: only operators get in.
    pub admin_token_hash: Option<[u8; 32]>,
    /// The admin listener's TLS (only with [`crate::run_with_admin`]), which may
    /// require client certificates.
    pub admin_tls: Option<crate::tls::TlsConfig>,
    pub status: StatusConfig,
    /// Priority admission in front of the upstreams.
    pub admission: admission::AdmissionConfig,
    pub priority: crate::priority::PriorityConfig,
    /// System prompts, leak scanning and prompt scoring.
    pub guard: aiguard::GuardConfig,
    pub abuse: crate::abuse::AbusePolicy,
    /// The edge defence (`[shield]`).
    pub shield: crate::edge::ShieldConfig,
    /// The key that signs challenges, clearances and waiting-room tickets; `None`: a
    /// random key per process. Tokens are bound to the process either way (see
    /// `shield::epoch_key`), so none survives a restart.
    pub shield_key: Option<[u8; 32]>,
    /// `redis://…`: several nodes share limits, replay claims and switches (see
    /// `fleet`). `None`: this node alone, everything in process.
    pub shared_state: Option<String>,
    pub fleet: FleetSettings,
}

/// How a node takes part in a fleet (`[fleet]`; used only with `shared_state`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSettings {
    /// Nodes behind the balancer. While the shared state does not answer, each node
    /// enforces limit / nodes, so the fleet as a whole stays near the limit.
    pub nodes: u32,
    /// The most one call to the shared state may take before the node decides alone.
    pub timeout_ms: u64,
    /// How often switches (lists, attack mode, revocations, registration policy) are
    /// read; a change reaches every node within this plus one round trip.
    pub poll_ms: u64,
    /// Put before every key, so several fleets can share one Redis.
    pub key_prefix: String,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings { nodes: 1, timeout_ms: 75, poll_ms: 250, key_prefix: "palisade".into() }
    }
}

impl FleetSettings {
    pub fn validate(&self, out: &mut Vec<InvalidField>) {
        if self.nodes == 0 {
            out.push(invalid("fleet.nodes", "must be at least 1"));
        }
        if !(1..=5_000).contains(&self.timeout_ms) {
            out.push(invalid("fleet.timeout_ms", "must be between 1 and 5000"));
        }
        if !(10..=1_000).contains(&self.poll_ms) {
            out.push(invalid(
                "fleet.poll_ms",
                "must be between 10 and 1000 (switches must reach every node within 1 s)",
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 || self.key_prefix.contains(['{', '}']) {
            out.push(invalid("fleet.key_prefix", "must be 1 to 64 characters without braces"));
        }
    }
}

/// The public status page and the recorder that keeps it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// The page's title.
    pub name: String,
    /// The components shown, in this order: any of `web`, `api`, `login`,
    /// `registration`, and `models` (one component per upstream).
    pub components: Vec<String>,
    /// How often the recorder samples the live signals and re-renders the page.
    pub tick_ms: u64,
    /// Consecutive worse samples before a component's measured status worsens.
    pub degrade_after: u32,
    /// Consecutive better samples before it recovers.
    pub recover_after: u32,
    /// A component measured as not operational for this long gets an incident
    /// opened automatically (resolved automatically when it recovers).
    pub auto_incident_after_s: u64,
    pub signals: StatusSignals,
    pub rate_limit: StatusRateLimit,
    /// A second listener serving only the status page (and /healthz) from its
    /// own thread and runtime, so a flood on the main listener cannot delay it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            name: "Service status".to_owned(),
            components: STATUS_COMPONENTS.iter().map(|c| (*c).to_owned()).collect(),
            tick_ms: 1_000,
            degrade_after: 3,
            recover_after: 5,
            auto_incident_after_s: 300,
            signals: StatusSignals::default(),
            rate_limit: StatusRateLimit::default(),
            listen: None,
        }
    }
}

/// The built-in components, in their default order.
pub const STATUS_COMPONENTS: [&str; 5] = ["web", "api", "login", "registration", "models"];

/// When a measured signal makes a component degraded or worse. Rates are judged
/// per sample (one tick), and only over at least `min_requests` requests.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusSignals {
    pub min_requests: u64,
    /// Share of 5xx answers that makes a component degraded_performance...
    pub error_rate_degraded: f64,
    /// ...and partial_outage.
    pub error_rate_partial: f64,
    /// Share of requests shed for overload (503 refusals other than "no healthy
    /// upstream") that makes the API degraded_performance...
    pub shed_rate_degraded: f64,
    /// ...and partial_outage.
    pub shed_rate_partial: f64,
    /// 95th-percentile time to response headers above which the API is degraded.
    pub api_p95_ms: u64,
    /// The same for everything else (web pages, sign-in, the status page).
    pub web_p95_ms: u64,
}

impl Default for StatusSignals {
    fn default() -> Self {
        StatusSignals {
            min_requests: 20,
            error_rate_degraded: 0.05,
            error_rate_partial: 0.25,
            shed_rate_degraded: 0.05,
            shed_rate_partial: 0.5,
            api_p95_ms: 30_000,
            web_p95_ms: 2_000,
        }
    }
}

/// The status page's own per-client limit (`/status*`, `/api/v2/*`): a token
/// bucket per IPv4 address or IPv6 /64.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusRateLimit {
    /// Requests per second refilled per client; 0 turns the limit off.
    pub per_s: f64,
    /// Requests a client may make at once.
    pub burst: u32,
    /// Clients tracked; past this (after forgetting idle ones) new clients are
    /// served unlimited, since every answer is a copy of pre-rendered bytes.
    pub max_clients: usize,
}

impl Default for StatusRateLimit {
    fn default() -> Self {
        StatusRateLimit { per_s: 5.0, burst: 30, max_clients: 10_000 }
    }
}

impl StatusConfig {
    pub fn validate(&self, out: &mut Vec<InvalidField>) {
        for (i, c) in self.components.iter().enumerate() {
            if !STATUS_COMPONENTS.contains(&c.as_str()) {
                out.push(invalid(
                    format!("status.components[{i}]"),
                    format!("`{c}` is not one of {STATUS_COMPONENTS:?}"),
                ));
            }
            if self.components[..i].contains(c) {
                out.push(invalid(format!("status.components[{i}]"), format!("`{c}` is listed twice")));
            }
        }
        if self.tick_ms == 0 {
            out.push(invalid("status.tick_ms", "must be greater than 0"));
        }
        if self.degrade_after == 0 || self.recover_after == 0 {
            out.push(invalid("status", "degrade_after and recover_after must be at least 1"));
        }
        let s = &self.signals;
        for (field, value) in [
            ("status.signals.error_rate_degraded", s.error_rate_degraded),
            ("status.signals.error_rate_partial", s.error_rate_partial),
            ("status.signals.shed_rate_degraded", s.shed_rate_degraded),
            ("status.signals.shed_rate_partial", s.shed_rate_partial),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                out.push(invalid(field, "must be a share in (0, 1]"));
            }
        }
        if s.error_rate_partial < s.error_rate_degraded || s.shed_rate_partial < s.shed_rate_degraded {
            out.push(invalid("status.signals", "a *_partial rate must not be below its *_degraded rate"));
        }
        let r = &self.rate_limit;
        if !(r.per_s >= 0.0 && r.per_s.is_finite()) {
            out.push(invalid("status.rate_limit.per_s", "must be 0 (off) or a positive number"));
        }
        if r.burst == 0 {
            out.push(invalid("status.rate_limit.burst", "must be at least 1"));
        }
        if r.max_clients == 0 {
            out.push(invalid("status.rate_limit.max_clients", "must be at least 1"));
        }
    }
}

/// Most upstreams one pool holds (a request's tried set is a 64-bit mask).
pub const MAX_UPSTREAMS: usize = 64;

impl ServerConfig {
    pub fn validate(&self, out: &mut Vec<InvalidField>) {
        if self.header_read_timeout_ms == 0 {
            out.push(invalid("server.header_read_timeout_ms", "must be greater than 0"));
        }
        if self.max_connections == 0 {
            out.push(invalid("server.max_connections", "must be greater than 0"));
        }
        for (field, value) in [
            ("server.max_connections_per_address", self.max_connections_per_address),
            ("server.max_silent_connections_per_address", self.max_silent_connections_per_address),
            ("server.max_silent_connections_per_subnet", self.max_silent_connections_per_subnet),
        ] {
            if value == 0 {
                out.push(invalid(field, "must be greater than 0"));
            }
        }
        if self.idle_timeout_ms == 0 {
            out.push(invalid("server.idle_timeout_ms", "must be greater than 0"));
        }
        if self.body_read_timeout_ms == 0 {
            out.push(invalid("server.body_read_timeout_ms", "must be greater than 0"));
        }
        if self.max_header_bytes < 8 * 1024 {
            out.push(invalid("server.max_header_bytes", "must be at least 8192 (browsers send large cookies)"));
        }
        for (i, text) in self.metrics_allow.iter().enumerate() {
            if let Err(e) = text.parse::<shield::Cidr>() {
                out.push(invalid(format!("server.metrics_allow[{i}]"), e.to_string()));
            }
        }
        // The files are read here too, so `palisade config check` finds a wrong path
        // or a key that does not fit before a restart does.
        if let Some(Err(e)) = self.tls.as_ref().map(crate::tls::Tls::new) {
            out.push(match e {
                crate::tls::TlsError::File { field, path, problem, .. } => {
                    invalid(format!("server.tls.{field}"), format!("{}: {problem}", path.display()))
                }
                other => invalid("server.tls", other.to_string()),
            });
        }
    }
}

impl ProxyConfig {
    pub fn validate(&self, out: &mut Vec<InvalidField>) {
        if self.max_body_bytes == 0 {
            out.push(invalid("proxy.max_body_bytes", "must be greater than 0"));
        }
        for (field, value) in [
            ("proxy.connect_timeout_ms", self.connect_timeout_ms),
            ("proxy.first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("proxy.idle_timeout_ms", self.idle_timeout_ms),
            ("proxy.health_check.interval_ms", self.health_check.interval_ms),
            ("proxy.health_check.timeout_ms", self.health_check.timeout_ms),
            ("proxy.circuit_breaker.open_ms", self.circuit_breaker.open_ms),
        ] {
            if value == 0 {
                out.push(invalid(field, "must be greater than 0"));
            }
        }
        if self.max_attempts == 0 {
            out.push(invalid("proxy.max_attempts", "must be at least 1"));
        }
        if !self.health_check.path.starts_with('/') {
            out.push(invalid("proxy.health_check.path", "must start with `/`"));
        }
        if self.health_check.unhealthy_after == 0 || self.health_check.healthy_after == 0 {
            out.push(invalid("proxy.health_check", "unhealthy_after and healthy_after must be at least 1"));
        }
        if self.circuit_breaker.failure_threshold == 0 {
            out.push(invalid("proxy.circuit_breaker.failure_threshold", "must be at least 1"));
        }
    }
}
