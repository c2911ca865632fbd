//! The listener: accepts connections, speaks HTTP/1.1 and HTTP/2 (h2c), tags each
//! request with an id and the client's address, records its metrics, and on
//! shutdown stops accepting and drains what is in flight within a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;
use tracing::Instrument;

use crate::Gateway;
use crate::connections::{BodyPace, PacedBody};
use crate::metrics::Route;

/// The id of one request, echoed in `x-request-id` and in every log line about it.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// The address of the peer that sent the request.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Makes request ids: a per-process random prefix and a counter, so ids are
/// unique across restarts without a random draw per request.
struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        RequestIds { prefix: nanos ^ std::process::id().rotate_left(16), next: AtomicU64::new(1) }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 25];
        let text = hex_id(&mut buf, self.prefix, n);
        HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

fn hex_id(buf: &mut [u8; 25], prefix: u32, n: u64) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..8 {
        buf[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf[8] = b'-';
    for i in 0..16 {
        buf[9 + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(buf).unwrap_or("")
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The gateway's own: `crate::router`, with the inference routes taken
    /// straight to the proxy (see [`direct`]).
    Main,
    /// The status page's lane: its router and nothing else.
    Status,
}

/// Serve `router` on `listener` until `shutdown` resolves, then drain for at
/// most the configured grace period.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    router: Router,
    lane: Lane,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let cfg = &gateway.config.server;
    let header_timeout = Duration::from_millis(cfg.header_read_timeout_ms);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(cfg.header_read_timeout_ms))
        .max_buf_size(cfg.max_header_bytes);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(cfg.max_header_bytes as u32);
    let builder = Arc::new(builder);
    let ids = Arc::new(RequestIds::new());
    let pace = cfg.body_pace();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A trusted proxy (a load balancer) carries many clients on its
        // connections: it is exempt from the per-address cap, not the total.
        let trusted = gateway.edge.is_trusted_proxy(peer.ip());
        let slot = match gateway.connections.admit(peer.ip(), !trusted) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Best effort and never waiting: a refused client gets a reason
                // if its socket buffer has room, else just the close.
                let _ = stream.try_write(refusal.response());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy_header = trusted && gateway.edge.config.proxy_protocol;
        let (builder, watcher, router, gateway, ids) =
            (builder.clone(), graceful.watcher(), router.clone(), gateway.clone(), ids.clone());
        tokio::spawn(async move {
            let (mut stream, mut peer) = (stream, peer);
            if proxy_header {
                // The client's address comes first on the connection, before any HTTP.
                match crate::edge::proxy_protocol::read_header(&mut stream, header_timeout).await {
                    Ok(Some(client)) => peer = client,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "bad or missing PROXY header; connection closed");
                        return;
                    }
                }
            }
            let service = RequestService { router, gateway, ids, peer, pace, lane };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }

    drop(listener);
    let grace = cfg.shutdown_grace();
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
    Ok(())
}

/// The per-connection service: wraps the router with the request id, the
/// client address, a tracing span and the request metrics.
#[derive(Clone)]
struct RequestService {
    router: Router,
    gateway: Arc<Gateway>,
    ids: Arc<RequestIds>,
    peer: SocketAddr,
    pace: BodyPace,
    lane: Lane,
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let id = self.ids.next();
        let route = Route::classify(request.uri().path());
        let pace = self.pace;
        let mut request = request.map(|body| Body::new(PacedBody::new(Body::new(body), pace)));
        request.extensions_mut().insert(RequestId(id.clone()));
        request.extensions_mut().insert(ClientAddr(self.peer));
        let span = tracing::info_span!("request", id = ?id, route = route.label());
        let direct = self.lane == Lane::Main && direct(request.method(), request.uri().path());
        let mut router = self.router.clone();
        let gateway = self.gateway.clone();
        Box::pin(
            async move {
                let mut response = if direct {
                    let gw = gateway.clone();
                    crate::edge::guard::screened(&gateway, request, |request| {
                        crate::proxy::forward(axum::extract::State(gw), request)
                    })
                    .await
                } else {
                    match router.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                };
                response.headers_mut().insert(X_REQUEST_ID.clone(), id);
                let status = response.status().as_u16();
                gateway.metrics.observe(route, status, started.elapsed());
                tracing::debug!(status, "answered");
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Whether a request goes straight to the inference proxy, behind the edge
/// guard but not through the router: the routes a flood and a busy API hit,
/// where the router's matching, boxing and per-request clones are about a
/// tenth of the instructions a request costs. The same methods and paths
/// `crate::router` sends to `proxy::forward` (both read `GENERATION_ROUTES`
/// and `MODELS_ROUTE`); anything else (a wrong method, a
/// trailing slash, an unknown `/v1` path) takes the router for its answer.
fn direct(method: &Method, path: &str) -> bool {
    match *method {
        Method::POST => crate::GENERATION_ROUTES.contains(&path),
        Method::GET => path == crate::MODELS_ROUTE,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_fixed_width_hex_and_distinct() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        let mut buf = [0u8; 25];
        assert_eq!(hex_id(&mut buf, 0xdeadbeef, 1), "deadbeef-0000000000000001");
    }

    #[test]
    fn only_the_proxy_routes_go_direct() {
        for path in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"] {
            assert!(direct(&Method::POST, path), "{path}");
            assert!(!direct(&Method::GET, path), "GET {path} gets the router's 405");
        }
        assert!(direct(&Method::GET, "/v1/models"));
        assert!(!direct(&Method::HEAD, "/v1/models"));
        assert!(!direct(&Method::POST, "/v1/models"));
        for path in ["/v1/chat/completions/", "/v1/unknown", "/auth/login", "/healthz", "/"] {
            assert!(!direct(&Method::POST, path), "{path}");
        }
    }
}
