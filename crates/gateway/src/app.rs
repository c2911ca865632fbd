//! The composition root: [`Gateway`] builds every part once, hands each handler and
//! part the sub-state it uses (through axum's `FromRef`), lays out the routes in the
//! order a request meets them, and runs the listeners. Nothing else in the crate
//! imports this module; parts never see the whole gateway.

use std::sync::Arc;
use std::time::Duration;

use accounts::service::Accounts;
use admission::Admission;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Request};
use axum::http::{Method, Response};
use axum::routing::{any, delete, get, post, put};
use fleet::{Fleet, FleetConfig};
use store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_service::Service;

use crate::admin::{self, AdminGate, Operator};
use crate::audit::AuditLog;
use crate::auth::{self, AuthState};
use crate::client::{ClientResolver, TrustedProxies};
use crate::config::GatewayConfig;
use crate::connections::{ConnectionCaps, ConnectionGate};
use crate::cookies::CookiePolicy;
use crate::edge::admin::EdgeSwitches;
use crate::edge::screen::{Screen, screened};
use crate::edge::shared::SharedLimits;
use crate::edge::{self, AttackSwitch, Edge};
use crate::fleet_sync;
use crate::guard::AiGuard;
use crate::health::{self, Telemetry};
use crate::metrics::Metrics;
use crate::openapi;
use crate::proxy::{self, Proxy};
use crate::refusal::Prerendered;
use crate::request::{RequestContext, Route};
use crate::server::{self, Dispatch, Listener};
use crate::status_page::{self, StatusBoard, StatusRecorder, StatusSources};
use crate::tls::Tls;
use crate::upstream::UpstreamPool;

/// What went wrong building the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid upstream: {0}")]
    Upstream(String),
    #[error("invalid admission settings: {0}")]
    Admission(String),
    #[error("invalid guard settings: {0}")]
    Guard(String),
    #[error("invalid shield configuration: shield.{0}")]
    Shield(shield::ConfigError),
    #[error("{0}")]
    SharedState(#[from] fleet::FleetError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "shared_state needs a shield key every node shares (the same key file or PALISADE_SHIELD_KEY on every node)"
    )]
    SharedKeyMissing,
}

/// Every part of the gateway, built once per process.
pub struct Gateway {
    config: GatewayConfig,
    accounts: Arc<Accounts>,
    pool: Arc<UpstreamPool>,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    edge: Arc<Edge>,
    guard: Arc<AiGuard>,
    status: Arc<StatusBoard>,
    proxy: Arc<Proxy>,
    listener: Arc<Listener>,
    admin_tls: Option<Arc<Tls>>,
    /// `server.metrics_allow`, parsed once.
    detail_networks: Arc<[shield::Cidr]>,
    /// With `shared_state`: a digest of the shield key, which every node must share.
    shield_fingerprint: String,
}

impl Gateway {
    pub fn new(mut config: GatewayConfig, accounts: Arc<Accounts>) -> Result<Arc<Gateway>, GatewayError> {
        let tls = config.server.tls.as_ref().map(Tls::new).transpose()?.map(Arc::new);
        let admin_tls = config.admin_tls.as_ref().map(Tls::admin).transpose()?.map(Arc::new);
        // Clients reach a TLS listener over TLS: its cookies need never travel in clear.
        config.auth.cookie_secure |= tls.is_some();
        let pool = Arc::new(UpstreamPool::new(&config.proxy, &config.upstreams).map_err(GatewayError::Upstream)?);
        let admission =
            Arc::new(Admission::new(config.admission.clone()).map_err(|e| GatewayError::Admission(e.to_string()))?);
        let metrics = Arc::new(Metrics::default());
        let audit = Arc::new(AuditLog::new(accounts.clone()));
        let key = match (config.shield_key, &config.shared_state) {
            (Some(key), _) => key,
            (None, None) => accounts::tokens::hash(accounts::tokens::SessionToken::generate().as_str()),
            (None, Some(_)) => return Err(GatewayError::SharedKeyMissing),
        };
        let shield_fingerprint = fingerprint(&key);
        let edge = Arc::new(build_edge(&config, key, audit.clone())?);
        if let Some(fleet) = edge.fleet() {
            accounts.share_logins(fleet.clone());
        }
        let guard = Arc::new(
            AiGuard::new(config.guard.clone(), config.abuse.clone(), metrics.clone(), audit, edge.fleet().is_some())
                .map_err(|e| GatewayError::Guard(e.to_string()))?,
        );
        let status = Arc::new(StatusBoard::new(StatusSources {
            config: config.status.clone(),
            store: accounts.store().clone(),
            metrics: metrics.clone(),
            pool: pool.clone(),
            accounts: accounts.clone(),
            edge: edge.clone(),
        }));
        let proxy = Arc::new(Proxy {
            config: config.proxy.clone(),
            pool: pool.clone(),
            admission: admission.clone(),
            edge: edge.clone(),
            guard: guard.clone(),
            priority: config.priority.clone(),
            anonymous_inference: config.auth.allow_anonymous_inference,
            accounts: accounts.clone(),
            metrics: metrics.clone(),
            cohorts: crate::abuse::cohort::CohortWatch::new(config.abuse.cohorts()),
        });
        let listener = Arc::new(Listener {
            config: config.server.clone(),
            connections: Arc::new(ConnectionGate::new(ConnectionCaps {
                total: config.server.max_connections,
                per_address: config.server.max_connections_per_address,
                silent_per_address: config.server.max_silent_connections_per_address,
                silent_per_subnet: config.server.max_silent_connections_per_subnet,
                prefixes: config.shield.limits.prefixes(),
            })),
            metrics: metrics.clone(),
            clients: ClientResolver::new(TrustedProxies::new(config.shield.trusted()), config.shield.limits.prefixes()),
            proxy_protocol: config.shield.proxy_protocol,
            turnstile: Some(edge.clone()),
            refusals: Arc::new(Prerendered::new()),
            tls,
        });
        let detail_networks = config.server.metrics_networks().into();
        Ok(Arc::new(Gateway {
            config,
            accounts,
            pool,
            admission,
            metrics,
            edge,
            guard,
            status,
            proxy,
            listener,
            admin_tls,
            detail_networks,
            shield_fingerprint,
        }))
    }

    /// With `shared_state`: checks that this node signs with the fleet's shield key (the
    /// first node to start sets it). A node with another key is refused: its challenges
    /// and clearances would be refused by every other node. Redis being away is no
    /// reason to refuse to start; the node runs on its local shares meanwhile.
    pub async fn join_fleet(&self) -> Result<(), GatewayError> {
        let Some(fleet) = self.edge.fleet() else { return Ok(()) };
        if let Err(error) = fleet.connect().await {
            tracing::warn!(%error, "shared state unreachable at start: limits are local shares until it answers");
            return Ok(());
        }
        match fleet.check_shield_key(&self.shield_fingerprint).await {
            Ok(()) => Ok(()),
            Err(e @ fleet::FleetError::ShieldKeyMismatch) => Err(e.into()),
            Err(error) => {
                tracing::warn!(%error, "shared state unreachable at start: limits are local shares until it answers");
                Ok(())
            }
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The shared state, with `shared_state`.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.edge.fleet()
    }

    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    pub fn store(&self) -> &Store {
        self.accounts.store()
    }

    pub fn pool(&self) -> &Arc<UpstreamPool> {
        &self.pool
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The admin listener's TLS, when `admin_tls` is set: [`Tls::reload`] swaps its certificate.
    pub fn admin_tls(&self) -> Option<&Tls> {
        self.admin_tls.as_deref()
    }

    /// The listener's TLS, when `server.tls` is set: [`Tls::reload`] swaps its certificate.
    pub fn tls(&self) -> Option<&Tls> {
        self.listener.tls.as_deref()
    }

    pub fn connections(&self) -> &ConnectionGate {
        &self.listener.connections
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// True while the edge is in attack mode (automatic or forced by the operator).
    pub fn under_attack(&self) -> bool {
        self.edge.under_attack()
    }

    /// Force under-attack mode on or off (the edge's switch, as `palisade admin
    /// attack` sets it) and re-render the status page now.
    pub fn set_under_attack(&self, on: bool) {
        let switch = if on { AttackSwitch::On } else { AttackSwitch::Off };
        self.edge.force(switch, crate::clock::now());
        self.status.wake();
    }

    /// Start the background work (health checks, the attack detector). Abort the handle
    /// to stop it all.
    pub fn start_background(&self) -> JoinHandle<()> {
        let checks = self.pool.clone().run_health_checks();
        let status = self.status.clone();
        let wake = status.clone();
        let detector = edge::run_detector(self.edge.clone(), self.metrics.clone(), move || status.wake());
        let texts_changed = self.status.clone();
        let texts = auth::run_texts_review(self.accounts.clone(), move || texts_changed.wake());
        let fleet = self.edge.fleet().cloned().map(|fleet| {
            let every = Duration::from_millis(self.config.fleet.poll_ms);
            let sync = fleet_sync::run(
                fleet.clone(),
                self.edge.clone(),
                self.accounts.clone(),
                self.guard.strikes().clone(),
                every,
                move || wake.wake(),
            );
            async move {
                tokio::join!(fleet.run_probe(every), fleet.run_updates(), sync);
            }
        });
        tokio::spawn(async move {
            match fleet {
                Some(fleet) => {
                    tokio::join!(checks, detector, texts, fleet);
                }
                None => {
                    tokio::join!(checks, detector, texts);
                }
            }
        })
    }

    fn screen(&self) -> Screen {
        Screen {
            edge: self.edge.clone(),
            accounts: self.accounts.clone(),
            anonymous_inference: self.config.auth.allow_anonymous_inference,
        }
    }
}

/// The edge, alone or as one node of a fleet. With `shared_state` the local tables hold
/// this node's share of every limit (the fallback, and the route limits), the shared
/// limits the whole, and tokens are signed with a fixed epoch: what the replay guard
/// remembers lives in Redis, so a restarted node must accept its fleet's tokens.
fn build_edge(config: &GatewayConfig, key: [u8; 32], audit: Arc<AuditLog>) -> Result<Edge, GatewayError> {
    let https = config.auth.cookie_secure;
    let Some(url) = &config.shared_state else {
        return Edge::new(&config.shield, key, shield::fresh_epoch(), https, audit).map_err(GatewayError::Shield);
    };
    let settings = &config.fleet;
    let fleet = Arc::new(Fleet::new(&FleetConfig {
        url: url.clone(),
        prefix: settings.key_prefix.clone(),
        timeout: Duration::from_millis(settings.timeout_ms),
    })?);
    let mut local = config.shield.clone();
    local.limits = edge::shared::share(&config.shield.limits, settings.nodes);
    let shared = SharedLimits::new(fleet, &config.shield.limits, settings.nodes)
        .map_err(|e| GatewayError::Shield(shield::ConfigError { field: "limits".into(), problem: e.to_string() }))?;
    Ok(Edge::new(&local, key, 0, https, audit).map_err(GatewayError::Shield)?.with_shared(shared))
}

/// A digest of the shield key that says nothing about the key.
fn fingerprint(key: &[u8; 32]) -> String {
    let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let digest = accounts::tokens::hash(&format!("palisade fleet shield key {text}"));
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The router's state: the gateway, from which each handler takes only its part.
#[derive(Clone)]
pub struct AppState(Arc<Gateway>);

impl FromRef<AppState> for AuthState {
    fn from_ref(s: &AppState) -> AuthState {
        AuthState { accounts: s.0.accounts.clone(), cookies: CookiePolicy { secure: s.0.config.auth.cookie_secure } }
    }
}

impl FromRef<AppState> for AdminGate {
    fn from_ref(s: &AppState) -> AdminGate {
        AdminGate { token: s.0.config.admin_token_hash, accounts: s.0.accounts.clone() }
    }
}

impl FromRef<AppState> for Operator {
    fn from_ref(s: &AppState) -> Operator {
        Operator { accounts: s.0.accounts.clone(), status: s.0.status.clone(), strikes: s.0.guard.strikes().clone() }
    }
}

impl FromRef<AppState> for Telemetry {
    fn from_ref(s: &AppState) -> Telemetry {
        let g = &s.0;
        Telemetry {
            store: g.store().clone(),
            metrics: g.metrics.clone(),
            pool: g.pool.clone(),
            accounts: g.accounts.clone(),
            admission: g.admission.clone(),
            connections: g.listener.connections.clone(),
            edge: g.edge.clone(),
            detail_networks: g.detail_networks.clone(),
        }
    }
}

impl FromRef<AppState> for EdgeSwitches {
    fn from_ref(s: &AppState) -> EdgeSwitches {
        EdgeSwitches { edge: s.0.edge.clone(), status: s.0.status.clone() }
    }
}

impl FromRef<AppState> for Arc<Edge> {
    fn from_ref(s: &AppState) -> Arc<Edge> {
        s.0.edge.clone()
    }
}

impl FromRef<AppState> for Arc<Proxy> {
    fn from_ref(s: &AppState) -> Arc<Proxy> {
        s.0.proxy.clone()
    }
}

/// All routes, in the order a request meets them: the edge (as a layer over all of
/// them), then the route.
/// With `admin`, `/admin` too (when no admin listener of its own serves it).
pub fn router(gateway: &Arc<Gateway>, admin: bool) -> Router {
    let post_only = || post(proxy::forward).fallback(proxy::method_not_allowed);
    let document = openapi::document();
    let generation = Route::ALL
        .into_iter()
        .filter(|r| r.costs_model())
        .filter_map(api_path)
        .fold(Router::new(), |r, path| r.route(path, post_only()));
    let generation = if admin { generation.nest("/admin", admin_router(gateway)) } else { generation };
    generation
        .route("/v1/models", get(proxy::models::list_models).fallback(proxy::method_not_allowed))
        .route("/v1/{*rest}", any(proxy::unknown_endpoint))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(status_page::router(gateway.status.clone()))
        .merge(auth_router())
        .route("/auth/register/ticket", get(edge::waiting::poll))
        .route("/challenge", get(edge::challenge::get).post(edge::challenge::post))
        .route("/openapi.json", get(move || std::future::ready(openapi::serve(document.clone()))))
        .merge(web::router())
        .fallback(health::not_found)
        // A known path with the wrong method answers in the error shape too (axum's own 405 has no body).
        .method_not_allowed_fallback(proxy::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(gateway.screen(), edge::screen::screen))
        .with_state(AppState(gateway.clone()))
}

/// `/auth/*`, refusing state changes that come from another site.
fn auth_router() -> Router<AppState> {
    Router::new()
        .route("/auth/csrf", get(auth::csrf))
        .route("/auth/register", post(auth::register))
        .route("/auth/verify", post(auth::verify))
        .route("/auth/verify/resend", post(auth::resend))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/auth/sessions", get(auth::sessions))
        .route("/auth/sessions/{id}", delete(auth::revoke_session))
        .route("/auth/keys", get(auth::list_keys).post(auth::create_key))
        .route("/auth/keys/{prefix}", delete(auth::revoke_key))
        .route("/auth/mfa/totp", post(auth::start_totp).delete(auth::remove_totp))
        .route("/auth/mfa/totp/confirm", post(auth::confirm_totp))
        .route("/auth/password", post(auth::change_password))
        .route("/auth/password/reset", post(auth::request_password_reset))
        .route("/auth/password/reset/confirm", post(auth::reset_password))
        .route_layer(axum::middleware::from_fn(auth::same_origin))
}

/// The path a proxied route is served at.
fn api_path(route: Route) -> Option<&'static str> {
    match route {
        Route::ChatCompletions => Some("/v1/chat/completions"),
        Route::Completions => Some("/v1/completions"),
        Route::Embeddings => Some("/v1/embeddings"),
        Route::Models => Some("/v1/models"),
        _ => None,
    }
}

fn admin_router(gateway: &Gateway) -> Router<AppState> {
    let gate = AdminGate { token: gateway.config.admin_token_hash, accounts: gateway.accounts.clone() };
    Router::new()
        .route("/registration", get(admin::get_policy).put(admin::set_policy))
        .route("/invites", post(admin::create_invite))
        .route("/users/{id}/mfa/reset", post(admin::reset_mfa))
        .route("/users/{id}/tier", put(admin::pin_tier).delete(admin::lift_tier))
        .route("/users/{id}/cohort", delete(admin::clear_cohort))
        .route("/users/{id}/mfa/required", put(admin::require_mfa))
        .route("/audit", get(admin::audit))
        .route("/flags", get(admin::flags))
        .route("/flags/{caller}", delete(admin::clear_flag))
        .route("/incidents", get(admin::list_incidents).post(admin::open_incident))
        .route("/incidents/{id}/updates", post(admin::update_incident))
        .route("/incidents/{id}/resolve", post(admin::resolve_incident))
        .route("/components/{id}", put(admin::set_component))
        .route("/maintenances", post(admin::schedule_maintenance))
        .route("/blocklist", get(edge::admin::list).post(edge::admin::add).delete(edge::admin::remove))
        .route("/attack-mode", get(edge::admin::get_attack).put(edge::admin::set_attack))
        .route("/whoami", get(admin::whoami))
        .route("/logout", post(admin::logout))
        .route("/operators", get(admin::list_operators).post(admin::add_operator))
        .route("/operators/{name}", delete(admin::disable_operator))
        .route("/operators/{name}/role", put(admin::set_operator_role))
        .route("/operators/{name}/reset", post(admin::reset_operator))
        .route_layer(axum::middleware::from_fn_with_state(gate, admin::require_admin))
        // The two ways in: neither needs a token, both count failures per operator name.
        .route("/login", post(admin::login))
        .route("/operators/enroll", post(admin::enroll))
}

/// The main listener's lane: the routes a flood and a busy API hit (`POST` to a
/// generation route, `GET /v1/models`) go straight to the proxy behind the edge,
/// skipping the router, whose matching and boxing cost about a tenth of a request's
/// instructions; everything else (a wrong method, a trailing slash, an unknown
/// `/v1` path) takes the router for its answer.
#[derive(Clone)]
struct MainLane {
    router: Router,
    screen: Screen,
    proxy: Arc<Proxy>,
}

impl Dispatch for MainLane {
    async fn dispatch(&self, ctx: RequestContext, request: Request<Body>) -> Response<Body> {
        match (request.method(), ctx.route) {
            (&Method::POST, route) if route.costs_model() => {
                screened(&self.screen, ctx, request, |ctx, r| proxy::forward_in(&self.proxy, ctx, r)).await
            }
            (&Method::GET, Route::Models) => {
                screened(&self.screen, ctx, request, |ctx, r| proxy::models::list_in(&self.proxy, ctx, r)).await
            }
            _ => routed(&self.router, ctx, request).await,
        }
    }
}

/// `request` through `router`, its context where the router's handlers and middleware
/// read it: in the extensions.
async fn routed(router: &Router, ctx: RequestContext, mut request: Request<Body>) -> Response<Body> {
    request.extensions_mut().insert(ctx);
    match router.clone().call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A lane that is one router and nothing else: the status page's, the admin API's.
#[derive(Clone)]
struct RouterOnly(Router);

impl Dispatch for RouterOnly {
    async fn dispatch(&self, ctx: RequestContext, request: Request<Body>) -> Response<Body> {
        routed(&self.0, ctx, request).await
    }
}

/// Build the router and serve it on `listener` until `shutdown` resolves,
/// with health checks and the status recorder running meanwhile. `/admin` is served
/// there too: for an embedded gateway and tests; `palisade serve` uses [`run_with_admin`].
pub async fn run(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    run_with_admin(gateway, listener, None, shutdown).await
}

/// [`run`], with the admin API on `admin` instead of the main listener: an address of
/// its own (loopback by default), outside the edge's limits and attack mode (an
/// operator must get in during a flood), over TLS with `admin_tls`.
pub async fn run_with_admin(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    match crate::edge::admin::restore_lists(&gateway.edge, gateway.store()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "block and allow list entries restored from the store"),
        Err(error) => tracing::warn!(%error, "stored list entries could not be read; serving without them"),
    }
    let background = gateway.start_background();
    let recorder = StatusRecorder::start(&gateway.status).await;
    let lane = match gateway.config.status.listen {
        Some(address) => Some(StatusLane::start(&gateway, address)?),
        None => None,
    };
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = admin.map(|socket| {
        let parts = admin_listener(&gateway);
        let lane = RouterOnly(
            Router::new()
                .nest("/admin", admin_router(&gateway))
                .fallback(health::not_found)
                .method_not_allowed_fallback(proxy::method_not_allowed)
                .with_state(AppState(gateway.clone())),
        );
        tokio::spawn(server::serve(parts, socket, lane, async {
            let _ = admin_stopped.await;
        }))
    });
    let main = MainLane {
        router: router(&gateway, admin_task.is_none()),
        screen: gateway.screen(),
        proxy: gateway.proxy.clone(),
    };
    let result = server::serve(gateway.listener.clone(), listener, main, shutdown).await;
    let _ = admin_stop.send(());
    if let Some(task) = admin_task {
        match task.await {
            Ok(Err(error)) => tracing::warn!(%error, "admin listener ended with an error"),
            Err(error) => tracing::warn!(%error, "admin listener task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(lane) = lane {
        lane.stop();
    }
    recorder.stop().await;
    background.abort();
    result
}

/// The status page's own listener on its own OS thread and single-threaded
/// runtime: the kernel schedules it apart from the main runtime, so its answers
/// (copies of pre-rendered bytes) do not queue behind a flood's connections.
struct StatusLane {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl StatusLane {
    fn start(gateway: &Gateway, address: std::net::SocketAddr) -> std::io::Result<StatusLane> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let scheme = if gateway.tls().is_some() { "https" } else { "http" };
        tracing::info!(address = %format!("{scheme}://{}", listener.local_addr()?), "status page lane listening");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let routes = status_page::router(gateway.status.clone())
            .route("/healthz", get(health::healthz))
            .fallback(health::not_found);
        let parts = gateway.listener.clone();
        let thread = std::thread::Builder::new().name("status-lane".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => return tracing::error!(error = %e, "status lane runtime could not start"),
            };
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return tracing::error!(error = %e, "status lane listener unusable"),
                };
                let stopped = async {
                    let _ = stopped.await;
                };
                if let Err(e) = server::serve(parts, listener, RouterOnly(routes), stopped).await {
                    tracing::error!(error = %e, "status lane stopped");
                }
            });
        })?;
        Ok(StatusLane { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The admin listener's own parts: its own connection caps and TLS, no PROXY header and
/// no trusted proxies (operators connect directly), no turnstile.
fn admin_listener(gateway: &Gateway) -> Arc<Listener> {
    let config = &gateway.config;
    Arc::new(Listener {
        config: config.server.clone(),
        connections: Arc::new(ConnectionGate::new(ConnectionCaps {
            total: 256,
            per_address: 64,
            silent_per_address: config.server.max_silent_connections_per_address,
            silent_per_subnet: config.server.max_silent_connections_per_subnet,
            prefixes: config.shield.limits.prefixes(),
        })),
        metrics: gateway.metrics.clone(),
        clients: ClientResolver::new(TrustedProxies::new(Vec::new()), config.shield.limits.prefixes()),
        proxy_protocol: false,
        turnstile: None,
        refusals: gateway.listener.refusals.clone(),
        tls: gateway.admin_tls.clone(),
    })
}
