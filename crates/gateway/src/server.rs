//! The listener: accepts connections, reads a trusted proxy's PROXY header, completes
//! the TLS handshake when TLS is on, speaks HTTP/1.1 (its own, in [`crate::front`], or
//! hyper's) and HTTP/2 (h2c, or h2 by ALPN), resolves
//! each request's context once (id, client, route), hands it to the lane's
//! [`Dispatch`], renders and counts refusals (one place for all of them), records
//! the request metrics, and on shutdown stops accepting and drains what is in
//! flight within a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use bytes::Bytes;
use futures_util::future::{self, Either};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::client::ClientResolver;
use crate::config::ServerConfig;
use crate::connections::{BodyPace, ConnWatch, ConnectionGate, PacedBody, Silence, WatchedIo};
use crate::error::{Unrendered, wants_html};
use crate::front::{Front, Replayed, Screened};
use crate::metrics::Metrics;
use crate::pages;
use crate::refusal::{self, Admit, Prerendered, Turnstile};
use crate::request::{Identity, RequestContext, RequestId, RequestIds, Route};
use crate::tls::Tls;

/// Where the listener hands each request, with its [`RequestContext`] beside it, and
/// gets the response back.
pub trait Dispatch: Clone + Send + Sync + 'static {
    /// `ctx` travels beside the request, not in its extensions: on the inference path
    /// nothing else would fill them, and a first extension costs three allocations. A lane
    /// that hands the request to a router puts it there (see `RequestContext`'s extractor).
    fn dispatch(&self, ctx: RequestContext, request: Request<Body>) -> impl Future<Output = Response<Body>> + Send;
}

/// The listener's own parts: its settings, the connection caps, who may speak for a
/// client, and the request metrics it records for every answer.
pub struct Listener {
    pub config: ServerConfig,
    pub connections: Arc<ConnectionGate>,
    pub metrics: Arc<Metrics>,
    pub clients: ClientResolver,
    /// Expect a PROXY protocol header from trusted proxies.
    pub proxy_protocol: bool,
    /// The edge's cheapest refusals, run here before a request has a context.
    pub turnstile: Option<Arc<dyn Turnstile>>,
    /// Rendered once per process and shared by its listeners.
    pub refusals: Arc<Prerendered>,
    /// Serve HTTPS: the handshake follows the PROXY header, if any, and must finish
    /// within the header-read timeout.
    pub tls: Option<Arc<Tls>>,
}

/// Sent on every answer over TLS: browsers use HTTPS for this host for two years.
static HSTS: HeaderValue = HeaderValue::from_static(refusal::HSTS);

/// Serve `dispatch` on `socket` until `shutdown` resolves, then drain for at
/// most the configured grace period.
pub async fn serve<D: Dispatch>(
    parts: Arc<Listener>,
    socket: TcpListener,
    dispatch: D,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let cfg = &parts.config;
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
    let silence = Silence { head: header_timeout, idle: Duration::from_millis(cfg.idle_timeout_ms) };
    let graceful = GracefulShutdown::new();
    // The front's connections are not hyper's to drain: they learn of it here.
    let stop = Arc::new(crate::front::Stop::default());
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
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
        // connections: it is exempt from the per-address and silent caps, not the total.
        let trusted = parts.clients.is_trusted(peer.ip());
        let slot = match parts.connections.admit(peer.ip(), !trusted) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Best effort and never waiting: a refused client gets a reason
                // if its socket buffer has room, else just the close.
                let _ = stream.try_write(refusal.response());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy_header = trusted && parts.proxy_protocol;
        let (builder, watcher, dispatch, parts, ids, stop) =
            (builder.clone(), graceful.watcher(), dispatch.clone(), parts.clone(), ids.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut stream, mut peer) = (stream, peer);
            if proxy_header {
                // The client's address comes first on the connection, before any HTTP.
                match crate::proxy_protocol::read_header(&mut stream, header_timeout).await {
                    Ok(Some(client)) => peer = client,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "bad or missing PROXY header; connection closed");
                        return;
                    }
                }
            }
            let watch = ConnWatch::new(slot);
            let io = WatchedIo::new(stream, watch.clone(), silence);
            let service = RequestService { dispatch, parts, ids, peer, pace, watch, stop };
            let Some(tls) = service.parts.tls.clone() else {
                return serve_screened(&builder, watcher, io, service, false, false).await;
            };
            // The silence timer in `WatchedIo` would end a stalled handshake too; this
            // says why in the log.
            match tokio::time::timeout(header_timeout, tls.acceptor().accept(io)).await {
                Ok(Ok(io)) => {
                    // HTTP/2 multiplexes requests the front does not read.
                    let h2 = io.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
                    serve_screened(&builder, watcher, io, service, true, h2).await
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed; connection closed"),
                Err(_) => {
                    tracing::debug!("TLS handshake not finished within the header-read timeout; connection closed")
                }
            }
        });
    }

    drop(socket);
    stop.stop();
    let grace = cfg.shutdown_grace();
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
    Ok(())
}

/// Serve HTTP on `io` (plain, or TLS after the handshake) once its front, if it has one,
/// has answered the refusals at its start; what the front read and did not answer is
/// read again first.
async fn serve_screened<I, D>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    mut io: I,
    service: RequestService<D>,
    tls: bool,
    h2: bool,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    D: Dispatch,
{
    let mut rest = Bytes::new();
    if !h2 && let Some(front) = service.front(tls) {
        match front.run(&mut io, |request| service.answer(request, |body| body)).await {
            Screened::Hyper(read) => rest = read,
            Screened::Closed => return,
        }
    }
    serve_connection(builder, watcher, TokioIo::new(Replayed::new(rest, io)), service).await
}

/// Serve HTTP on one connection (plain or TLS) until it closes or the drain ends it.
async fn serve_connection<I, D>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    service: RequestService<D>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    D: Dispatch,
{
    let connection = builder.serve_connection_with_upgrades(io, service).into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The per-connection service: the request's context, a tracing span, the lane's
/// dispatch, then the refusal rendering and the request metrics.
#[derive(Clone)]
struct RequestService<D> {
    dispatch: D,
    parts: Arc<Listener>,
    ids: Arc<RequestIds>,
    peer: SocketAddr,
    pace: BodyPace,
    watch: Arc<ConnWatch>,
    stop: Arc<crate::front::Stop>,
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl<D> RequestService<D> {
    /// The connection's front (see `front`), when its client is named by its socket and
    /// the edge has a turnstile. Behind a trusted proxy, whose requests name their clients
    /// in headers, hyper reads every request. `hsts`: the connection is TLS.
    fn front(&self, hsts: bool) -> Option<Front<'_>> {
        let parts = &*self.parts;
        let turnstile = parts.turnstile.as_deref()?;
        if parts.clients.is_trusted(self.peer.ip()) {
            return None;
        }
        Some(Front {
            turnstile,
            refusals: &parts.refusals,
            metrics: &parts.metrics,
            ids: &self.ids,
            watch: &self.watch,
            client: parts.clients.resolve(self.peer.ip(), &axum::http::HeaderMap::new()),
            max_head: parts.config.max_header_bytes,
            header_timeout: Duration::from_millis(parts.config.header_read_timeout_ms),
            hsts,
            body_wait: self.pace.grace,
            write_timeout: Duration::from_millis(parts.config.idle_timeout_ms),
            stop: &self.stop,
        })
    }
}

type Answer = Result<Response<Body>, Infallible>;

type AnswerFuture = Either<future::Ready<Answer>, std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>>;

impl<D: Dispatch> hyper::service::Service<Request<Incoming>> for RequestService<D> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = AnswerFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let pace = self.pace;
        self.answer(request, |body| Body::new(PacedBody::new(body, pace)))
    }
}

impl<D: Dispatch> RequestService<D> {
    /// One request, read by hyper or by the front: `body` makes the dispatched body of
    /// the one read, only once the request is past the listener's refusals.
    fn answer<B>(&self, request: Request<B>, body: impl FnOnce(B) -> Body) -> AnswerFuture {
        let started = Instant::now();
        let in_progress = self.watch.request();
        let id = self.ids.next();
        let route = Route::of(request.uri().path());
        let client = self.parts.clients.resolve(self.peer.ip(), request.headers());
        let html = wants_html(request.headers());
        let mut allow_listed = false;
        if let (Some(zone), Some(turnstile)) = (route.zone(), &self.parts.turnstile) {
            let admit = match self.watch.take_preadmitted() {
                Some(allow_listed) => Admit::Pass { allow_listed },
                None => turnstile.admit(&client, zone, crate::clock::now()),
            };
            if let Some((reject, mut response)) = self.parts.refusals.response(&admit, html) {
                // Answered from bytes rendered at start: see `refusal`.
                self.parts.metrics.refused_reject(reject);
                let headers = response.headers_mut();
                headers.insert(X_REQUEST_ID.clone(), id);
                if self.parts.tls.is_some() {
                    headers.insert(header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
                }
                if refusal::close_after(self.watch.refused(), request.version()) {
                    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                self.parts.metrics.observe(route, reject.status().as_u16(), started.elapsed());
                drop(in_progress);
                return Either::Left(future::ready(Ok(response)));
            }
            allow_listed = matches!(admit, Admit::Pass { allow_listed: true });
        }
        self.watch.passed();
        let request = request.map(body);
        let ctx =
            RequestContext { id: RequestId(id.clone()), client, route, identity: Identity::Anonymous, allow_listed };
        let span = tracing::info_span!("request", id = ?id, route = route.label());
        let dispatch = self.dispatch.clone();
        let parts = self.parts.clone();
        Either::Right(Box::pin(
            async move {
                let response = dispatch.dispatch(ctx, request).await;
                let mut response = finish(response, html, &parts.metrics);
                response.headers_mut().insert(X_REQUEST_ID.clone(), id);
                if parts.tls.is_some() {
                    response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
                }
                let status = response.status().as_u16();
                parts.metrics.observe(route, status, started.elapsed());
                tracing::debug!(status, "answered");
                drop(in_progress);
                Ok(response)
            }
            .instrument(span),
        ))
    }
}

/// The one place a refusal becomes what the client reads: a page for a browser
/// that asked for HTML, JSON for everyone else; and the one place it is counted.
/// Every HTML answer, refusal or not, leaves with the security headers.
fn finish(mut response: Response<Body>, html: bool, metrics: &Metrics) -> Response<Body> {
    let mut response = match response.extensions_mut().remove::<Unrendered>() {
        Some(Unrendered(error)) => {
            metrics.refused(&error);
            error.render(html)
        }
        None => response,
    };
    pages::secure_html(response.headers_mut());
    response
}
