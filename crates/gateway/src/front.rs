//! The listener's own HTTP/1.1 server for a connection whose client is its socket's
//! address (no trusted proxy speaking for others), plain or, after the handshake, over
//! TLS when ALPN did not choose HTTP/2. Request heads are read with `httparse` into a
//! borrowed table and the [`Turnstile`] is asked first: under a flood most requests are
//! refused, and a refusal is written from bytes rendered at start
//! ([`Prerendered::write_wire`]). A request let through, or one outside the edge's
//! zones, is served here too when it is plain HTTP/1.1 with its whole body at hand
//! (`Content-Length`, at most [`MAX_SERVED_BODY`]): its head becomes an
//! `http::Request` whose header values are slices of the bytes read, the listener's
//! service answers it, and the response is written as hyper would write it
//! ([`wire`]). Hyper's connection machinery (its dispatcher, body channel and
//! encoder) cost more instructions than the rest of a refusal; serving the plain
//! request here took a proxied request from 48.2k to 43.9k instructions
//! (`bench/proxy-instructions.sh`, bench/RESULTS.md).
//!
//! Anything else (HTTP/2, HTTP/1.0, a chunked body, `Expect`, an upgrade, a longer or
//! slower body, a head that does not parse or is too long) hands the connection to
//! hyper with every byte read and not answered; it never comes back, so hyper never
//! shares the socket with it. Every answer written here was complete on the socket
//! before hyper reads a byte, which keeps pipelined answers in order. The bytes read
//! and not answered reach hyper through [`Replayed`], on top of the plain socket or of
//! the TLS stream they were decrypted from.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use shield::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::connections::ConnWatch;
use crate::metrics::Metrics;
use crate::refusal::{self, Admit, Prerendered, Turnstile, WireRequest};
use crate::request::{RequestIds, Route};

mod wire;

use wire::MAX_HEADERS;

/// Body bytes of a refused request read and dropped to keep its connection; a
/// longer body closes the connection after the answer instead.
const MAX_SKIPPED_BODY: u64 = 64 * 1024;

/// The longest request body the front reads whole and serves; a longer one goes to
/// hyper, which hands it to the handler as it arrives. A chat request is a few KB.
pub const MAX_SERVED_BODY: u64 = 256 * 1024;

/// Response bytes gathered before they are written, when the body has more at once.
const WRITE_BATCH: usize = 64 * 1024;

/// What the front leaves of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Screened {
    /// Serve it with hyper, which reads these bytes first.
    Hyper(Bytes),
    /// Closed: the client left, stalled, or was refused too often.
    Closed,
}

/// One connection's front: what it needs to decide and answer.
pub struct Front<'a> {
    pub turnstile: &'a dyn Turnstile,
    pub refusals: &'a Prerendered,
    pub metrics: &'a Metrics,
    pub ids: &'a RequestIds,
    pub watch: &'a Arc<ConnWatch>,
    pub client: Client,
    /// The longest request head hyper accepts; a longer one goes to hyper to refuse.
    pub max_head: usize,
    /// How long one request head (or a refused request's body) may take to arrive.
    pub header_timeout: Duration,
    /// Over TLS: refusals carry `Strict-Transport-Security`, as hyper's answers do.
    pub hsts: bool,
    /// How long the body of a request served here may take to follow its head; a
    /// slower one goes to hyper, whose paced body judges it.
    pub body_wait: Duration,
    /// How long one write of a response may wait for the client to take it.
    pub write_timeout: Duration,
    /// The listener's shutdown: the connection closes after the answer in progress,
    /// and at once when it is between requests.
    pub stop: &'a Stop,
}

/// The listener's shutdown as the front's connections see it: a flag, and the waker of
/// each connection, registered once. Waiting between requests then costs an atomic
/// exchange, where a `watch` channel's waiter took a lock each time (a tenth of a
/// refusal's instructions).
#[derive(Default)]
pub struct Stop {
    stopping: AtomicBool,
    /// Every connection's waker, as long as the connection lives; dead ones are
    /// dropped as the list grows.
    waiters: std::sync::Mutex<Vec<std::sync::Weak<AtomicWaker>>>,
}

impl Stop {
    /// Wake every connection waiting between requests: they close.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for waiter in waiters.iter().filter_map(std::sync::Weak::upgrade) {
            waiter.wake();
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// A connection's waiter, listed for [`Stop::stop`].
    fn waiter(&self) -> Arc<AtomicWaker> {
        let waiter = Arc::new(AtomicWaker::new());
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters.len() == waiters.capacity() {
            waiters.retain(|w| w.strong_count() > 0);
        }
        waiters.push(Arc::downgrade(&waiter));
        waiter
    }

    /// Resolves once the listener is shutting down.
    fn wait<'w>(&'w self, waiter: &'w AtomicWaker) -> impl Future<Output = ()> + 'w {
        std::future::poll_fn(move |cx| {
            waiter.register(cx.waker());
            if self.is_stopping() { Poll::Ready(()) } else { Poll::Pending }
        })
    }
}

/// A stream whose first reads return `prefix`, then the stream's own: how the bytes the
/// front read and did not answer reach hyper.
pub struct Replayed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Replayed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Replayed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What one complete or partial head in the buffer came to.
enum Step {
    /// Not a whole head yet.
    Partial,
    /// Hyper's to answer, from this head on.
    Hyper,
    /// Answered in `out`: drop `consumed` bytes, then `body` more.
    Refused { consumed: usize, body: u64, close: bool },
    /// Let through, and served here once its `body` bytes after the head's `consumed`
    /// are read.
    Serve { consumed: usize, body: usize, close: bool, head_only: bool },
}

/// What the body of a response being written had next.
enum Next {
    /// Nothing more for now: write what was gathered.
    Write,
    /// The end, gathered.
    End,
    /// The body failed, or overran the length it declared: the connection ends.
    Broken,
}

impl Front<'_> {
    /// Serve the connection until it closes, or until it is hyper's. `serve` answers a
    /// request let through (the listener's service: context, dispatch, metrics).
    pub async fn run<S, F, Fut>(&self, io: &mut S, serve: F) -> Screened
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Fn(Request<Body>) -> Fut,
        Fut: Future<Output = Result<Response<Body>, Infallible>>,
    {
        let mut buf = BytesMut::with_capacity(4096);
        let mut out = Vec::new();
        let mut date = DateCache::default();
        let mut skip = 0u64;
        let waiter = self.stop.waiter();
        // Set while a head or a refused body is on its way: when it must have arrived.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let mut next = None;
            let mut served = None;
            loop {
                if skip > 0 {
                    let n = usize::try_from(skip).unwrap_or(usize::MAX).min(buf.len());
                    buf.advance(n);
                    skip -= n as u64;
                    if skip > 0 {
                        break;
                    }
                }
                if buf.is_empty() {
                    break;
                }
                match self.step(&buf, &mut out, &mut date) {
                    Step::Partial => {
                        if buf.len() > self.max_head {
                            next = Some(Screened::Hyper(Bytes::new()));
                        }
                        break;
                    }
                    Step::Hyper => {
                        next = Some(Screened::Hyper(Bytes::new()));
                        break;
                    }
                    Step::Refused { consumed, body, close } => {
                        buf.advance(consumed);
                        skip = body;
                        if close {
                            next = Some(Screened::Closed);
                            break;
                        }
                    }
                    Step::Serve { consumed, body, close, head_only } => {
                        served = Some((consumed, body, close, head_only));
                        break;
                    }
                }
            }
            if !out.is_empty() {
                // A client that sends and never reads fills its socket's buffer: it gets
                // as long to take its answers as it had to send a head.
                if !self.write(io, &out, self.header_timeout).await {
                    return Screened::Closed;
                }
                out.clear();
            }
            match next {
                Some(Screened::Hyper(_)) => return Screened::Hyper(buf.freeze()),
                Some(Screened::Closed) => {
                    let _ = io.shutdown().await;
                    return Screened::Closed;
                }
                None => {}
            }
            if let Some((consumed, body, close, head_only)) = served {
                // The body follows its head closely or goes to hyper, which paces it.
                let whole = consumed + body;
                let until = tokio::time::Instant::now() + self.body_wait;
                while buf.len() < whole {
                    buf.reserve(whole - buf.len());
                    match tokio::time::timeout_at(until, io.read_buf(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => return Screened::Closed,
                        Ok(Ok(_)) => {}
                        Err(_) => return Screened::Hyper(buf.freeze()),
                    }
                }
                deadline = None;
                let head = buf.split_to(consumed).freeze();
                let payload = buf.split_to(body).freeze();
                let Some(request) = wire::request(&head, &payload) else {
                    // Rare: a head `http` refuses. Hyper answers it as it would have.
                    return Screened::Hyper([&head[..], &payload, &buf].concat().into());
                };
                // While it is served, a client that hangs up ends it, as under hyper; what
                // it sends meanwhile (a pipelined request) waits in the buffer.
                let Some(Ok(response)) = until_gone(io, &mut buf, self.max_head, serve(request)).await else {
                    return Screened::Closed;
                };
                let close = close || self.stop.is_stopping();
                if !self.respond(io, &mut buf, &mut out, response, head_only, close, &mut date).await || close {
                    let _ = io.shutdown().await;
                    return Screened::Closed;
                }
                continue;
            }
            let read = if buf.is_empty() && skip == 0 {
                // Between requests the connection's own idle watch applies, and a
                // shutdown ends it.
                deadline = None;
                buf.reserve(4096);
                tokio::select! {
                    biased;
                    read = io.read_buf(&mut buf) => read,
                    () = self.stop.wait(&waiter) => {
                        let _ = io.shutdown().await;
                        return Screened::Closed;
                    }
                }
            } else {
                let at = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.header_timeout);
                match tokio::time::timeout_at(at, io.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => return Screened::Closed,
                }
            };
            match read {
                Ok(0) | Err(_) => return Screened::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Write `bytes` within `limit`, flushed (over TLS they may wait in the session's
    /// buffer); `false` when the client did not take them.
    async fn write<S: AsyncWrite + Unpin>(&self, io: &mut S, bytes: &[u8], limit: Duration) -> bool {
        let sent = async {
            io.write_all(bytes).await?;
            io.flush().await
        };
        matches!(tokio::time::timeout(limit, sent).await, Ok(Ok(())))
    }

    /// Write `response` whole: its head, then its body as it comes, each write holding
    /// what the body had ready. `false` when the connection cannot go on (the client
    /// left or stopped reading, the body failed).
    #[allow(clippy::too_many_arguments)]
    async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut S,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
        response: Response<Body>,
        head_only: bool,
        close: bool,
        date: &mut DateCache,
    ) -> bool {
        let (parts, mut body) = response.into_parts();
        let close = close || wire::closes(&parts.headers);
        let size = http_body::Body::size_hint(&body);
        let now = crate::clock::now();
        let framing = wire::head(out, parts.status, &parts.headers, &size, head_only, close, date.at(now));
        drop(parts);
        // A response on its way counts as a request in progress for the idle watch: a
        // stream may pause longer than a connection may idle.
        let _streaming = self.watch.request();
        let mut left = match framing {
            wire::Framing::Length(n) => n,
            _ => 0,
        };
        let mut ended = framing == wire::Framing::None;
        loop {
            if ended {
                let written = self.write(io, out, self.write_timeout).await;
                out.clear();
                return written && !close;
            }
            let gathered = std::future::poll_fn(|cx| {
                loop {
                    match http_body::Body::poll_frame(Pin::new(&mut body), cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data()
                                && !wire::data(out, framing, &mut left, &data)
                            {
                                return Poll::Ready(Next::Broken);
                            }
                            if out.len() >= WRITE_BATCH {
                                return Poll::Ready(Next::Write);
                            }
                        }
                        Poll::Ready(Some(Err(_))) => return Poll::Ready(Next::Broken),
                        Poll::Ready(None) => {
                            let whole = wire::end(out, framing, left);
                            return Poll::Ready(if whole { Next::End } else { Next::Broken });
                        }
                        Poll::Pending if out.is_empty() => return Poll::Pending,
                        Poll::Pending => return Poll::Ready(Next::Write),
                    }
                }
            });
            match until_gone(io, buf, self.max_head, gathered).await {
                None | Some(Next::Broken) => {
                    // Cut short: what was gathered goes out, and the connection ends, so
                    // the client sees a reply broken off, not a whole one.
                    let _ = self.write(io, out, self.write_timeout).await;
                    out.clear();
                    return false;
                }
                Some(Next::End) => ended = true,
                Some(Next::Write) => {
                    if !self.write(io, out, self.write_timeout).await {
                        out.clear();
                        return false;
                    }
                    out.clear();
                }
            }
        }
    }

    /// Look at the head at the start of `buf`; answer it into `out` if the turnstile
    /// refuses it.
    fn step(&self, buf: &[u8], out: &mut Vec<u8>, date: &mut DateCache) -> Step {
        // Left uninitialised: zeroing the table cost more than parsing a short head.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let consumed = match request.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Step::Partial,
            // HTTP/2's preface, too many headers, or not HTTP: hyper answers it.
            Err(_) => return Step::Hyper,
        };
        let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
            return Step::Hyper;
        };
        // An absolute-form or `*` target: rare, and hyper's to interpret.
        if !target.starts_with('/') || method == "CONNECT" {
            return Step::Hyper;
        }
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        let route = Route::of(path);
        let Some(head) = Head::read(request.headers, version) else { return Step::Hyper };
        let head_only = method == "HEAD";
        let serve = |head: &Head| match head.served_body {
            Some(body) => Step::Serve { consumed, body, close: head.asks_close, head_only },
            None => Step::Hyper,
        };
        let Some(zone) = route.zone() else { return serve(&head) };

        let started = Instant::now();
        let now = crate::clock::now();
        let admit = self.turnstile.admit(&self.client, zone, now);
        if let Admit::Pass { allow_listed } = admit {
            self.watch.preadmit(allow_listed);
            return serve(&head);
        }
        let answered = self.watch.request();
        let close = head.close || self.watch.refused() >= refusal::MAX_FRONT_REFUSALS_IN_A_ROW;
        let mut id = [0u8; 25];
        let wire = WireRequest {
            html: head.html,
            head_only,
            close,
            date: date.at(now),
            id: self.ids.next_into(&mut id),
            hsts: self.hsts,
        };
        let Some(reject) = self.refusals.write_wire(out, &admit, wire) else { return Step::Hyper };
        self.metrics.refused_reject(reject);
        self.metrics.observe(route, reject.status().as_u16(), started.elapsed());
        drop(answered);
        Step::Refused { consumed, body: if close { 0 } else { head.body }, close }
    }
}

/// `work`, unless the client hangs up first (`None`). Bytes it sends meanwhile are kept
/// in `buf`, up to `limit`; past that the socket is not read until `work` is done.
async fn until_gone<S: AsyncRead + Unpin, T>(
    io: &mut S,
    buf: &mut BytesMut,
    limit: usize,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    loop {
        if buf.len() >= limit {
            return Some(work.await);
        }
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            read = io.read_buf(buf) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// What a refusal needs from a request's header lines.
struct Head {
    /// Body bytes that follow the head.
    body: u64,
    /// The connection ends after the answer.
    close: bool,
    /// The client asked for HTML, judged as [`crate::error::wants_html`] judges it.
    html: bool,
    /// The request said `connection: close`.
    asks_close: bool,
    /// The body's length when the front may serve the request itself: plain HTTP/1.1,
    /// a body of known length up to [`MAX_SERVED_BODY`], nothing to negotiate.
    served_body: Option<usize>,
}

impl Head {
    /// `None` for a head hyper must judge: conflicting or malformed lengths.
    fn read(headers: &[httparse::Header<'_>], version: u8) -> Option<Head> {
        let mut head = Head { body: 0, close: false, html: false, asks_close: false, served_body: None };
        let mut length: Option<u64> = None;
        let mut accept_seen = false;
        // HTTP/1.0's keep-alive, a chunked body, `Expect` and upgrades are hyper's.
        let mut plain = version == 1;
        // HTTP/1.0 closes unless it asks to stay.
        let mut keep_alive = version != 0;
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(h.value).ok()?.trim();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n: u64 = value.parse().ok()?;
                if length.is_some_and(|l| l != n) {
                    return None;
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") || name.eq_ignore_ascii_case("expect") {
                // A chunked body is not skipped here, and a client waiting for
                // `100 Continue` may never send the body it announced.
                head.close = true;
                plain = false;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                        head.asks_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        plain = false;
                    }
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                plain = false;
            } else if name.eq_ignore_ascii_case("accept") && !accept_seen {
                accept_seen = true;
                head.html = std::str::from_utf8(h.value).is_ok_and(|v| v.contains("text/html"));
            }
        }
        head.body = length.unwrap_or(0);
        if plain && head.body <= MAX_SERVED_BODY {
            head.served_body = usize::try_from(head.body).ok();
        }
        if head.body > MAX_SKIPPED_BODY || !keep_alive {
            head.close = true;
        }
        Some(head)
    }
}

/// The `date` value, formatted once a second.
#[derive(Default)]
struct DateCache {
    second: u64,
    text: [u8; 29],
}

impl DateCache {
    /// `now`: time since the Unix epoch, as [`crate::clock::now`] gives it.
    fn at(&mut self, now: Duration) -> &[u8] {
        let second = now.as_secs();
        if second != self.second || self.text[0] == 0 {
            self.second = second;
            let date = httpdate::HttpDate::from(UNIX_EPOCH + now);
            let mut cursor = std::io::Cursor::new(&mut self.text[..]);
            let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{date}"));
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::{ConnectionCaps, ConnectionGate};
    use crate::request::Zone;
    use shield::SubnetPrefixes;
    use std::sync::atomic::AtomicU32;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Refuses everything but the first `passes` requests: blocked, or limited.
    struct Fixed {
        limited: bool,
        passes: AtomicU32,
    }

    impl Turnstile for Fixed {
        fn admit(&self, _: &Client, _: Zone, _: Duration) -> Admit {
            if self.passes.load(Ordering::Relaxed) > 0 {
                self.passes.fetch_sub(1, Ordering::Relaxed);
                return Admit::Pass { allow_listed: false };
            }
            if self.limited { Admit::Limited(refusal::tests::limited()) } else { Admit::Blocked }
        }
    }

    struct Rig {
        turnstile: Fixed,
        refusals: Prerendered,
        metrics: Metrics,
        ids: RequestIds,
        watch: Arc<ConnWatch>,
        stop: Stop,
    }

    impl Rig {
        fn new(limited: bool, passes: u32) -> Rig {
            let gate = Arc::new(ConnectionGate::new(ConnectionCaps {
                total: 10,
                per_address: 10,
                silent_per_address: 10,
                silent_per_subnet: 10,
                prefixes: SubnetPrefixes::default(),
            }));
            let slot = gate.admit("127.0.0.9".parse().unwrap(), true).unwrap();
            Rig {
                turnstile: Fixed { limited, passes: AtomicU32::new(passes) },
                refusals: Prerendered::new(),
                metrics: Metrics::default(),
                ids: RequestIds::new(),
                watch: ConnWatch::new(slot),
                stop: Stop::default(),
            }
        }

        fn front(&self) -> Front<'_> {
            Front {
                turnstile: &self.turnstile,
                refusals: &self.refusals,
                metrics: &self.metrics,
                ids: &self.ids,
                watch: &self.watch,
                client: Client::new("127.0.0.9".parse().unwrap(), SubnetPrefixes::default()),
                max_head: 1024,
                header_timeout: Duration::from_secs(5),
                hsts: false,
                body_wait: Duration::from_secs(1),
                write_timeout: Duration::from_secs(5),
                stop: &self.stop,
            }
        }

        /// What the listener's service would do, as far as the front can tell: take the
        /// turnstile's verdict and answer with the request's method, path and body.
        async fn serve(&self, request: Request<Body>) -> Result<Response<Body>, Infallible> {
            let preadmitted = self.watch.take_preadmitted();
            let (parts, body) = request.into_parts();
            let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
            let text = format!("{} {} {:?} {}", parts.method, parts.uri, preadmitted, String::from_utf8_lossy(&body));
            Ok(Response::new(Body::from(text)))
        }

        /// Writes `sent` (then closes the writing side if `eof`), runs the front, and
        /// returns what it decided and every byte the client read.
        async fn run(&self, sent: &[&[u8]], eof: bool) -> (Screened, String) {
            self.run_with(sent, eof, |request| self.serve(request)).await
        }

        async fn run_with<F, Fut>(&self, sent: &[&[u8]], eof: bool, serve: F) -> (Screened, String)
        where
            F: Fn(Request<Body>) -> Fut,
            Fut: Future<Output = Result<Response<Body>, Infallible>>,
        {
            let (mut client, mut server): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 20);
            let front = self.front();
            let sent: Vec<Vec<u8>> = sent.iter().map(|s| s.to_vec()).collect();
            let writer = async move {
                for part in sent {
                    client.write_all(&part).await.unwrap();
                    tokio::task::yield_now().await;
                }
                if eof {
                    client.shutdown().await.unwrap();
                }
                client
            };
            let (screened, mut client) = tokio::join!(front.run(&mut server, serve), writer);
            drop(server);
            let mut read = String::new();
            client.read_to_string(&mut read).await.unwrap();
            (screened, read)
        }
    }

    const GET: &[u8] = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";

    fn answers(read: &str) -> Vec<&str> {
        read.split("HTTP/1.1 ").skip(1).collect()
    }

    #[tokio::test]
    async fn replayed_bytes_are_read_first_and_writes_pass_through() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut replayed = Replayed::new(Bytes::from_static(b"GET / HTTP/1.1\r\n"), server);
        client.write_all(b"host: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let mut piece = [0u8; 5]; // smaller than the replayed bytes
        while got.len() < 27 {
            let n = replayed.read(&mut piece).await.unwrap();
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        replayed.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        replayed.flush().await.unwrap();
        let mut back = [0u8; 17];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"HTTP/1.1 200 OK\r\n");
    }

    #[tokio::test]
    async fn pipelined_refusals_are_answered_in_order_and_the_client_may_leave() {
        let rig = Rig::new(false, 0);
        let sent = [GET, GET, b"HEAD /v1/models HTTP/1.1\r\naccept: text/html\r\n\r\n"].concat();
        let (screened, read) = rig.run(&[&sent], true).await;
        assert_eq!(screened, Screened::Closed);
        let answers = answers(&read);
        assert_eq!(answers.len(), 3, "{read}");
        assert!(answers[0].starts_with("403 Forbidden\r\n") && answers[0].contains("\"code\":\"blocked\""));
        assert!(answers[1].contains("x-request-id: "));
        assert!(answers[2].contains("content-type: text/html"), "the browser's HEAD gets the page's head");
        assert!(answers[2].ends_with("\r\n\r\n"), "and no body: {}", answers[2]);
        assert!(!read.contains("connection: close"));
        assert_eq!(rig.metrics.rejected(crate::error::Reject::Blocked), 3);
    }

    #[tokio::test]
    async fn a_refused_body_is_skipped_and_a_head_may_come_in_pieces() {
        let rig = Rig::new(true, 0);
        let post = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 11\r\n\r\n{\"a\":\"b\"}\r\n";
        let (screened, read) = rig.run(&[&post[..20], &post[20..60], &post[60..], &GET[..5], &GET[5..]], true).await;
        assert_eq!(screened, Screened::Closed);
        let answers = answers(&read);
        assert_eq!(answers.len(), 2, "{read}");
        for a in answers {
            assert!(a.starts_with("429 Too Many Requests\r\n"), "{a}");
            assert!(a.contains("retry-after: ") && a.contains("ratelimit-policy: 1;w=3600\r\n"), "{a}");
        }
    }

    #[tokio::test]
    async fn a_request_let_through_is_served_here_and_so_is_one_outside_the_zones() {
        let rig = Rig::new(false, 1);
        let post = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        let health = b"GET /healthz?x HTTP/1.1\r\n\r\n";
        let sent = [&post[..], GET, health].concat();
        let (screened, read) = rig.run(&[&sent[..30], &sent[30..]], true).await;
        assert_eq!(screened, Screened::Closed, "the client left");
        let answers = answers(&read);
        assert_eq!(answers.len(), 3, "{read}");
        assert!(answers[0].starts_with("200 OK\r\n"), "{}", answers[0]);
        assert!(answers[0].contains("\r\ncontent-length: 45\r\n"), "{}", answers[0]);
        assert!(answers[0].ends_with("\r\n\r\nPOST /v1/chat/completions Some(false) {\"a\":1}"), "{}", answers[0]);
        assert!(answers[1].starts_with("403 Forbidden\r\n"), "the next one is asked again: {}", answers[1]);
        assert!(answers[2].ends_with("GET /healthz?x None "), "served without the turnstile: {}", answers[2]);
        assert_eq!(rig.metrics.rejected(crate::error::Reject::Blocked), 1);
    }

    #[tokio::test]
    async fn a_streamed_response_goes_out_in_chunks_as_it_comes_and_head_gets_no_body() {
        let rig = Rig::new(false, 0);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let rx = std::sync::Mutex::new(Some(rx));
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let front = rig.front();
        let serve = |request: Request<Body>| {
            let rx = rx.lock().unwrap().take();
            async move {
                if request.method() == "HEAD" {
                    return Ok(Response::new(Body::from("not sent")));
                }
                let frames = futures_util::stream::unfold(rx.unwrap(), |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, Infallible>(http_body::Frame::data(b)), rx))
                });
                Ok(Response::new(Body::new(http_body_util::StreamBody::new(frames))))
            }
        };
        let talk = async {
            client.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
            let mut got = Vec::new();
            tx.send(Bytes::from_static(b"first")).await.unwrap();
            while !got.ends_with(b"5\r\nfirst\r\n") {
                let mut piece = [0u8; 256];
                let n = client.read(&mut piece).await.unwrap();
                got.extend_from_slice(&piece[..n]);
            }
            let text = String::from_utf8(got.clone()).unwrap();
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("transfer-encoding: chunked\r\n"),
                "{text}"
            );
            tx.send(Bytes::from_static(b"second")).await.unwrap();
            drop(tx);
            client.write_all(b"HEAD /healthz HTTP/1.1\r\nconnection: close\r\n\r\n").await.unwrap();
            let mut rest = String::new();
            client.read_to_string(&mut rest).await.unwrap();
            rest
        };
        let (screened, rest) = tokio::join!(front.run(&mut server, serve), talk);
        assert_eq!(screened, Screened::Closed);
        let (second, head) = rest.split_once("HTTP/1.1 ").unwrap();
        assert_eq!(second, "6\r\nsecond\r\n0\r\n\r\n");
        assert!(head.contains("content-length: 8\r\n") && head.contains("connection: close\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body after HEAD: {head}");
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_while_served_ends_the_work() {
        let rig = Rig::new(false, 0);
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let serve = |_| {
            let flag = Flag(dropped.clone());
            async move {
                let _flag = flag;
                std::future::pending::<Result<Response<Body>, Infallible>>().await
            }
        };
        let (screened, read) = rig.run_with(&[b"GET /healthz HTTP/1.1\r\n\r\n"], true, serve).await;
        assert_eq!(screened, Screened::Closed);
        assert!(read.is_empty());
        assert!(dropped.load(Ordering::Relaxed), "the work was dropped when the client left");
    }

    #[tokio::test]
    async fn a_shutdown_closes_an_idle_connection_and_the_answer_in_progress_says_close() {
        let rig = Rig::new(false, 0);
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let front = rig.front();
        let serve = |request: Request<Body>| {
            // The listener starts to shut down while the second request is served.
            if request.uri().query() == Some("stop") {
                rig.stop.stop();
            }
            async { Ok(Response::new(Body::from("ok"))) }
        };
        let talk = async {
            client.write_all(b"GET /healthz HTTP/1.1\r\n\r\nGET /healthz?stop HTTP/1.1\r\n\r\n").await.unwrap();
            let mut read = String::new();
            client.read_to_string(&mut read).await.unwrap();
            read
        };
        let (screened, read) = tokio::join!(front.run(&mut server, serve), talk);
        assert_eq!(screened, Screened::Closed);
        let answers = answers(&read);
        assert_eq!(answers.len(), 2, "{read}");
        assert!(!answers[0].contains("connection: close"));
        assert!(answers[1].contains("connection: close\r\n"), "{}", answers[1]);

        let rig = Rig::new(false, 0);
        let (_client, mut server) = tokio::io::duplex(1 << 16);
        let front = rig.front();
        rig.stop.stop();
        assert_eq!(front.run(&mut server, |r| rig.serve(r)).await, Screened::Closed, "closed between requests");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_lags_behind_its_head_goes_to_hyper_with_what_came() {
        let rig = Rig::new(false, 1);
        let (mut client, mut server) = tokio::io::duplex(4096);
        let sent = b"POST /v1/completions HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc";
        client.write_all(sent).await.unwrap();
        let front = rig.front();
        let started = tokio::time::Instant::now();
        assert_eq!(front.run(&mut server, |r| rig.serve(r)).await, Screened::Hyper(Bytes::from_static(sent)));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(rig.watch.take_preadmitted(), Some(false), "hyper does not ask the turnstile again");
    }

    #[tokio::test]
    async fn what_the_front_does_not_handle_goes_to_hyper_untouched() {
        let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let two_lengths: &[u8] = b"POST /v1/completions HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab";
        let absolute: &[u8] = b"GET http://x/v1/models HTTP/1.1\r\n\r\n";
        let long = [&b"GET /v1/models HTTP/1.1\r\nx: "[..], &[b'a'; 2000]].concat();
        let not_a_uri: &[u8] = b"GET /healthz\xff HTTP/1.1\r\n\r\n";
        for sent in [preface, two_lengths, absolute, &long, not_a_uri] {
            let rig = Rig::new(false, 0);
            let (screened, read) = rig.run(&[sent], false).await;
            assert_eq!(screened, Screened::Hyper(Bytes::copy_from_slice(sent)));
            assert!(read.is_empty());
        }
        // Let through, but not plain enough to serve here.
        let big = format!("POST /v1/completions HTTP/1.1\r\ncontent-length: {}\r\n\r\n", MAX_SERVED_BODY + 1);
        for sent in [
            &b"GET /v1/models HTTP/1.0\r\n\r\n"[..],
            b"POST /v1/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /v1/completions HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
            b"GET /v1/models HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nupgrade: h2c\r\n\r\n",
            big.as_bytes(),
        ] {
            let rig = Rig::new(false, 1);
            let (screened, read) = rig.run(&[sent], false).await;
            assert_eq!(screened, Screened::Hyper(Bytes::copy_from_slice(sent)), "{}", String::from_utf8_lossy(sent));
            assert!(read.is_empty());
        }
    }

    #[tokio::test]
    async fn a_closing_request_an_unskippable_body_and_a_long_run_end_the_connection() {
        for (sent, answered) in [
            (&b"GET /v1/models HTTP/1.1\r\nconnection: close\r\n\r\n"[..], 1),
            (b"GET /v1/models HTTP/1.0\r\n\r\n", 1),
            (b"POST /v1/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1),
            (b"POST /v1/completions HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n", 1),
            (b"POST /v1/completions HTTP/1.1\r\ncontent-length: 1000000\r\n\r\n", 1),
        ] {
            let rig = Rig::new(false, 0);
            let (screened, read) = rig.run(&[sent, GET], false).await;
            assert_eq!(screened, Screened::Closed);
            assert_eq!(answers(&read).len(), answered, "{read}");
            assert!(read.contains("connection: close\r\n"), "{read}");
        }
        let rig = Rig::new(false, 0);
        let flood = GET.repeat(refusal::MAX_FRONT_REFUSALS_IN_A_ROW as usize + 8);
        let (screened, read) = rig.run(&[&flood], false).await;
        assert_eq!(screened, Screened::Closed);
        let answers = answers(&read);
        assert_eq!(answers.len(), refusal::MAX_FRONT_REFUSALS_IN_A_ROW as usize);
        assert!(answers.last().unwrap().contains("connection: close\r\n"));
        assert!(!answers[answers.len() - 2].contains("connection: close\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_stalls_half_way_is_closed_after_the_header_timeout() {
        let rig = Rig::new(false, 0);
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"GET /v1/mod").await.unwrap();
        let front = rig.front();
        let started = tokio::time::Instant::now();
        assert_eq!(front.run(&mut server, |r| rig.serve(r)).await, Screened::Closed);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(client);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever arrives, in whatever pieces: the front ends, and what it hands to
        /// hyper is exactly the unanswered end of what was sent.
        #[test]
        fn any_bytes_end_in_a_close_or_an_untouched_rest(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(GET.to_vec()),
                    proptest::strategy::Just(b"POST /auth/login HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc".to_vec()),
                    proptest::strategy::Just(b"GET /status HTTP/1.1\r\n\r\n".to_vec()),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                ],
                0..8,
            ),
            cut in 0usize..200,
        ) {
            let sent = parts.concat();
            let cut = cut.min(sent.len());
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            let (screened, read) = runtime.block_on(async {
                let rig = Rig::new(false, 0);
                rig.run(&[&sent[..cut], &sent[cut..]], true).await
            });
            if let Screened::Hyper(rest) = screened {
                proptest::prop_assert!(sent.ends_with(&rest));
            }
            proptest::prop_assert!(answers(&read).len() <= refusal::MAX_FRONT_REFUSALS_IN_A_ROW as usize);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_its_refusals_is_closed_after_the_header_timeout() {
        let rig = Rig::new(false, 0);
        // Room for a few requests but not for their answers.
        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(&GET.repeat(6)).await.unwrap();
        let front = rig.front();
        let started = tokio::time::Instant::now();
        assert_eq!(front.run(&mut server, |r| rig.serve(r)).await, Screened::Closed);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(client);
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let mut date = DateCache::default();
        let text = std::str::from_utf8(date.at(crate::clock::now())).unwrap().to_owned();
        assert!(text.ends_with(" GMT") && text.len() == 29, "{text}");
        assert!(httpdate::parse_http_date(&text).is_ok());
    }
}
