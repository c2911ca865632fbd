//! Palisade's HTTP front: the listener, the routers in request order, and the
//! OpenAI-compatible inference proxy.
//!
//! [`Gateway`] holds the shared state; [`router`] builds the routes; [`serve`]
//! runs them on a listener until shutdown.

pub mod activity;
pub mod admin;
pub mod auth;
pub mod config;
pub mod connections;
pub mod edge;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod priority;
pub mod proxy;
pub mod server;
pub mod status_page;
pub mod upstream;

mod health;

use std::sync::Arc;

use accounts::service::Accounts;
use axum::Router;
use axum::routing::{any, delete, get, post, put};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::GatewayConfig;
pub use server::{Lane, serve};
use store::Store;
use upstream::UpstreamPool;

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
    Edge(shield::ConfigError),
}

/// The gateway's shared state, one per process.
pub struct Gateway {
    pub config: GatewayConfig,
    pub pool: Arc<UpstreamPool>,
    pub metrics: metrics::Metrics,
    pub store: Store,
    pub accounts: Arc<Accounts>,
    pub status: status_page::StatusBoard,
    pub connections: Arc<connections::ConnectionGate>,
    pub admission: admission::Admission,
    pub guard: guard::GuardState,
    pub edge: edge::Edge,
}

impl Gateway {
    pub fn new(config: GatewayConfig, accounts: Arc<Accounts>) -> Result<Arc<Gateway>, GatewayError> {
        let pool = UpstreamPool::new(&config.proxy, &config.upstreams).map_err(GatewayError::Upstream)?;
        let store = accounts.store().clone();
        let admission =
            admission::Admission::new(config.admission.clone()).map_err(|e| GatewayError::Admission(e.to_string()))?;
        let key = config
            .edge_key
            .unwrap_or_else(|| accounts::tokens::hash(accounts::tokens::SessionToken::generate().as_str()));
        let edge = edge::Edge::new(&config.edge, key).map_err(GatewayError::Edge)?;
        Ok(Arc::new(Gateway {
            edge,
            pool: Arc::new(pool),
            metrics: metrics::Metrics::default(),
            store,
            accounts,
            status: Default::default(),
            connections: Arc::new(connections::ConnectionGate::new(
                config.server.max_connections,
                config.server.max_connections_per_address,
            )),
            admission,
            guard: guard::GuardState::new(config.guard.clone(), config.abuse.clone())
                .map_err(|e| GatewayError::Guard(e.to_string()))?,
            config,
        }))
    }

    pub fn strikes(&self) -> &guard::Strikes {
        &self.guard.strikes
    }

    fn accounts_session_ttl(&self) -> u64 {
        self.accounts.config().session_ttl_s
    }

    /// True while the edge is in attack mode (automatic or forced by the operator).
    pub fn under_attack(&self) -> bool {
        self.edge.under_attack()
    }

    /// Start the background work (health checks, the attack detector). Abort the handle
    /// to stop it all.
    pub fn start_background(self: &Arc<Self>) -> JoinHandle<()> {
        let checks = self.pool.clone().run_health_checks();
        let detector = edge::run_detector(self.clone());
        tokio::spawn(async move {
            tokio::join!(checks, detector);
        })
    }
}

/// All routes, in the order a request meets them.
/// The generation endpoints: `POST` only, forwarded by the proxy. The router
/// and the server's direct path (`server::direct`) both read them from here.
pub(crate) const GENERATION_ROUTES: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];
/// The model list: `GET`, forwarded by the proxy.
pub(crate) const MODELS_ROUTE: &str = "/v1/models";

pub fn router(gateway: Arc<Gateway>) -> Router {
    let post_only = || post(proxy::forward).fallback(proxy::method_not_allowed);
    let generation = GENERATION_ROUTES.iter().fold(Router::new(), |r, path| r.route(path, post_only()));
    generation
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(MODELS_ROUTE, get(proxy::forward).fallback(proxy::method_not_allowed))
        .route("/v1/{*rest}", any(proxy::unknown_endpoint))
        .merge(status_page::router(gateway.clone()))
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
        .route("/auth/mfa/totp", post(auth::start_totp))
        .route("/auth/mfa/totp/confirm", post(auth::confirm_totp))
        .route("/auth/register/ticket", get(edge::waiting::poll))
        .route("/challenge", get(edge::challenge::get).post(edge::challenge::post))
        .nest("/admin", admin_router(gateway.clone()))
        .merge(web::router())
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), edge::guard))
        .with_state(gateway)
}

fn admin_router(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/registration", get(admin::get_policy).put(admin::set_policy))
        .route("/invites", post(admin::create_invite))
        .route("/users/{id}/mfa/reset", post(admin::reset_mfa))
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
        .route_layer(axum::middleware::from_fn_with_state(gateway, admin::require_admin))
}

/// Build the router and serve it on `listener` until `shutdown` resolves,
/// with health checks and the status recorder running meanwhile.
pub async fn run(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let checks = gateway.start_background();
    let recorder = status_page::StatusRecorder::start(&gateway).await;
    let lane = match gateway.config.status.listen {
        Some(address) => Some(StatusLane::start(gateway.clone(), address)?),
        None => None,
    };
    let result = serve(gateway.clone(), listener, router(gateway), Lane::Main, shutdown).await;
    if let Some(lane) = lane {
        lane.stop();
    }
    recorder.stop().await;
    checks.abort();
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
    fn start(gateway: Arc<Gateway>, address: std::net::SocketAddr) -> std::io::Result<StatusLane> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        tracing::info!(address = %format!("http://{}", listener.local_addr()?), "status page lane listening");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
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
                let routes = status_page::router(gateway.clone())
                    .route("/healthz", get(health::healthz))
                    .fallback(health::not_found)
                    .with_state(gateway.clone());
                let stopped = async {
                    let _ = stopped.await;
                };
                if let Err(e) = serve(gateway, listener, routes, Lane::Status, stopped).await {
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
