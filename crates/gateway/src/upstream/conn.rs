//! Keep-alive HTTP/1.1 connections to one upstream, spoken by [`super::h1`].
//!
//! A reply's body reads its own connection: whatever one socket read brought is decoded
//! at once, so every server-sent event already received can go out in one write (see
//! `proxy::relay`). An idle connection waits in the pool unread; when taken out it is
//! checked for a close by the upstream as far as the runtime has seen (no system call),
//! and a close it had not seen yet costs the request a resend on a fresh connection. A
//! connection is given back only by a body read to its end on a connection that may carry
//! another request; any other drop closes it, which is how a client that went away stops
//! generation upstream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::h1::{self, Decoded, Decoder, ProtocolError, ReplyHead};

/// Room made in the read buffer when less than [`MIN_READ_ROOM`] is left. Not before each
/// read: a reply's body is split off the buffer and still on its way to the client when
/// the connection carries its next request, so making room then would allocate a new
/// buffer per request; a short reply takes a few hundred bytes of what is left.
const READ_CHUNK: usize = 16 * 1024;
const MIN_READ_ROOM: usize = 4 * 1024;
/// A reused connection that answers a request with a close, and no byte of a reply,
/// sooner than this after the request went out was closed by the upstream as the request
/// crossed it: the request is sent again. A later close is the upstream failing the
/// request (a crash mid-generation, say), which is not repeated: it may have cost tokens.
const RESEND_WITHIN: Duration = Duration::from_secs(1);
/// A request body up to this size goes out in the same write as its head.
const INLINE_BODY: usize = 16 * 1024;
/// A write buffer grown past this by a large request is not kept with the connection.
const KEPT_WRITE_BUFFER: usize = 64 * 1024;

/// Why a request could not be sent to the upstream, or its reply head not read.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connect to {0} failed: {1}")]
    Connect(String, std::io::Error),
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("the connection to the model server failed: {0}")]
    Io(std::io::Error),
    #[error("the model server closed the connection without replying")]
    Closed,
    #[error("the model server's reply is not HTTP/1.1 as expected: {0}")]
    Protocol(#[from] ProtocolError),
}

impl ConnError {
    /// The upstream closed or reset the connection.
    fn is_close(&self) -> bool {
        match self {
            ConnError::Closed => true,
            ConnError::Io(e) => {
                matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
            }
            _ => false,
        }
    }
}

/// Why a reply's body broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the connection to the model server failed: {0}")]
    Io(std::io::Error),
    #[error("the model server closed the connection before the reply's end")]
    Closed,
    #[error("the reply's body is not HTTP/1.1 as expected: {0}")]
    Protocol(#[from] ProtocolError),
}

/// The client's part of a request's head, written into each attempt's request.
pub trait WriteHeaders {
    /// Header lines (`name: value\r\n`), without `Host`, `Authorization`, the length or
    /// the blank line.
    fn write_headers(&self, out: &mut Vec<u8>);
}

/// A request as the proxy sends it: the upstream adds its own path prefix, `Host`,
/// `Authorization` and the body's length.
pub struct Outgoing<'a, H> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub headers: &'a H,
    pub body: &'a Bytes,
}

/// One connection and its buffers, kept with it from request to request.
pub struct Conn {
    io: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
}

impl Conn {
    /// Whether an idle connection can carry another request: nothing arrived on it and
    /// the upstream has not closed it (as far as the socket has been told). Costs no
    /// system call when the reply's last read was short (see [`poll_read`]) and nothing
    /// happened on the socket since: tokio then knows it unreadable and answers for it.
    fn is_idle_and_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self.io.try_read(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            // A close, or bytes nobody asked for.
            Ok(_) => false,
        }
    }

    async fn write_request<H: WriteHeaders>(&mut self, pool: &ConnPool, out: &Outgoing<'_, H>) -> std::io::Result<()> {
        self.write.clear();
        h1::write_head(&mut self.write, out.method, &pool.prefix, out.path_and_query, &pool.fixed);
        out.headers.write_headers(&mut self.write);
        h1::end_head(&mut self.write, out.method, out.body.len());
        let inline = out.body.len() <= INLINE_BODY;
        if inline {
            self.write.extend_from_slice(out.body);
        }
        let mut written = self.io.write_all(&self.write).await;
        if written.is_ok() && !inline {
            written = self.io.write_all(out.body).await;
        }
        if self.write.capacity() > KEPT_WRITE_BUFFER {
            self.write = Vec::new();
        }
        written
    }

    async fn read_head(
        &mut self,
        method: &Method,
        keep: impl Fn(&[u8], StatusCode) -> bool,
    ) -> Result<ReplyHead, ConnError> {
        loop {
            if !self.read.is_empty()
                && let Some((head, len)) = h1::parse_head(&self.read, method, &keep)?
            {
                self.read.advance(len);
                return Ok(head);
            }
            match std::future::poll_fn(|cx| poll_read(&mut self.io, cx, &mut self.read)).await {
                Ok(0) => return Err(ConnError::Closed),
                Ok(_) => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }
}

/// Read what the socket has into `buf`, making room when little is left. Through tokio's
/// `AsyncRead`, not `try_read_buf`: a read that fills less than the room it was given shows
/// the socket drained, and tokio then forgets its readiness, so the pool's check when the
/// connection is next taken needs no read of its own (one system call a request fewer).
fn poll_read(io: &mut TcpStream, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// A reply's body, read from its connection as the client asks for it.
pub struct UpstreamBody {
    /// `None` once it broke: a broken connection is never reused.
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
}

impl UpstreamBody {
    /// The connection, if the body was read to its end and the connection may carry
    /// another request.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        let clean = self.conn.as_ref().is_some_and(|c| c.read.is_empty());
        if self.decoder.is_done() && self.keep_alive && clean { self.conn.take() } else { None }
    }

    /// Close the connection now (the reply was cut short).
    pub fn close(&mut self) {
        self.conn = None;
    }

    fn broke(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.read) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => return this.broke(e.into()),
            }
            match ready!(poll_read(&mut conn.io, cx, &mut conn.read)) {
                // The close is the end (such a reply was never keep-alive).
                Ok(0) if this.decoder == Decoder::UntilClose => {
                    this.decoder = Decoder::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.broke(BodyError::Closed),
                Ok(_) => {}
                Err(e) => return this.broke(BodyError::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.remaining().map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections to one upstream, most recently used last, and what every
/// request to it carries.
pub struct ConnPool {
    address: String,
    /// The upstream's path before `/v1/...`, without a trailing slash (often empty).
    prefix: String,
    /// `Host` and the upstream's own `Authorization`, as header lines.
    fixed: Vec<u8>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<VecDeque<Idle>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool").field("address", &self.address).finish_non_exhaustive()
    }
}

/// Where and how a pool connects, and what its requests carry.
pub struct PoolConfig {
    /// `host:port`.
    pub address: String,
    pub prefix: String,
    /// Header lines every request carries (`Host`, the upstream's `Authorization`).
    pub fixed: Vec<u8>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

impl ConnPool {
    pub fn new(config: PoolConfig) -> ConnPool {
        let PoolConfig { address, prefix, fixed, connect_timeout, idle_timeout, max_idle } = config;
        ConnPool { address, prefix, fixed, connect_timeout, idle_timeout, max_idle, idle: Mutex::new(VecDeque::new()) }
    }

    /// Send a request and read the reply's head; the body reads the rest. Only the reply
    /// headers for which `keep(name, status)` holds are copied out.
    pub async fn send<H: WriteHeaders>(
        &self,
        out: &Outgoing<'_, H>,
        keep: impl Fn(&[u8], StatusCode) -> bool,
    ) -> Result<(ReplyHead, UpstreamBody), ConnError> {
        // A pooled connection the upstream closed just as it was taken (its close not yet
        // seen here) fails the write, or answers the request at once with a close and not
        // one byte of a reply (see RESEND_WITHIN): try the next one, then a fresh
        // connection. Browsers resend in this case too. A fresh connection's failure is the
        // answer.
        loop {
            let (mut conn, fresh) = match self.take() {
                Some(conn) => (conn, false),
                None => (self.connect().await?, true),
            };
            match conn.write_request(self, out).await {
                Ok(()) => {}
                Err(_) if !fresh => continue,
                Err(e) => return Err(ConnError::Io(e)),
            }
            let sent = Instant::now();
            match conn.read_head(out.method, &keep).await {
                Ok(head) => {
                    let body = UpstreamBody {
                        conn: Some(conn),
                        decoder: Decoder::new(head.framing),
                        keep_alive: head.keep_alive,
                    };
                    return Ok((head, body));
                }
                Err(e) if !fresh && conn.read.is_empty() && e.is_close() && sent.elapsed() < RESEND_WITHIN => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Return a connection whose last reply was read to the end.
    pub fn put(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        self.expire(&mut idle, now);
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    }

    fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                self.expire(&mut idle, now);
                idle.pop_back()?
            };
            let mut conn = candidate.conn;
            if conn.is_idle_and_open() {
                return Some(conn);
            }
        }
    }

    /// Drop connections idle past the timeout (the oldest are at the front).
    fn expire(&self, idle: &mut VecDeque<Idle>, now: Instant) {
        while idle.front().is_some_and(|i| now.duration_since(i.since) >= self.idle_timeout) {
            idle.pop_front();
        }
    }

    async fn connect(&self) -> Result<Conn, ConnError> {
        let io = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ConnError::Connect(self.address.clone(), e)),
            Err(_) => return Err(ConnError::ConnectTimeout(self.address.clone())),
        };
        let _ = io.set_nodelay(true);
        Ok(Conn { io, read: BytesMut::new(), write: Vec::new() })
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server answering `per_conn` requests a connection with `reply`, then closing
    /// it: its address, the connections it accepted, a permit per connection it closed,
    /// and every request's bytes as received.
    async fn server(
        reply: &'static [u8],
        per_conn: usize,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, std::sync::Arc<tokio::sync::Semaphore>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let (count, closes) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let closes = closes.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..per_conn {
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            let n = socket.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            seen.extend_from_slice(&buf[..n]);
                        }
                        socket.write_all(reply).await.unwrap();
                    }
                    drop(socket);
                    closes.add_permits(1);
                });
            }
        });
        (address, accepted, closed)
    }

    struct NoHeaders;

    impl WriteHeaders for NoHeaders {
        fn write_headers(&self, _: &mut Vec<u8>) {}
    }

    fn pool(address: &str, idle_timeout: Duration, max_idle: usize) -> ConnPool {
        ConnPool::new(PoolConfig {
            address: address.to_owned(),
            prefix: String::new(),
            fixed: format!("host: {address}\r\n").into_bytes(),
            connect_timeout: Duration::from_secs(1),
            idle_timeout,
            max_idle,
        })
    }

    async fn get(pool: &ConnPool) -> Result<(ReplyHead, UpstreamBody), ConnError> {
        let body = Bytes::new();
        let out = Outgoing { method: &Method::GET, path_and_query: "/x", headers: &NoHeaders, body: &body };
        pool.send(&out, |_, _| true).await
    }

    /// The body's bytes, and its connection if it may be reused.
    async fn read(mut body: UpstreamBody) -> (Bytes, Option<Conn>) {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        let conn = body.take_reusable();
        (Bytes::from(out), conn)
    }

    #[tokio::test]
    async fn reuses_a_connection_whose_reply_was_read() {
        let (address, accepted, _) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 100).await;
        let pool = pool(&address, Duration::from_secs(60), 8);
        for _ in 0..3 {
            let (head, body) = get(&pool).await.unwrap();
            assert_eq!(head.status, StatusCode::OK);
            let (data, conn) = read(body).await;
            assert_eq!(data, "ok");
            pool.put(conn.expect("reusable"));
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_chunked_reply_is_read_and_its_connection_reused() {
        let reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (address, accepted, _) = server(reply, 100).await;
        let pool = pool(&address, Duration::from_secs(60), 8);
        for _ in 0..2 {
            let (_, body) = get(&pool).await.unwrap();
            let (data, conn) = read(body).await;
            assert_eq!(data, "abcde");
            pool.put(conn.expect("reusable"));
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_reply_that_ends_at_close_is_read_whole_and_not_reused() {
        let (address, _, _) = server(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 1).await;
        let pool = pool(&address, Duration::from_secs(60), 8);
        let (_, body) = get(&pool).await.unwrap();
        let (data, conn) = read(body).await;
        assert_eq!(data, "until the end");
        assert!(conn.is_none());
    }

    #[tokio::test]
    async fn a_reply_cut_short_is_an_error() {
        let (address, _, _) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nonly", 1).await;
        let pool = pool(&address, Duration::from_secs(60), 8);
        let (_, mut body) = get(&pool).await.unwrap();
        let mut errors = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                errors.push(e.to_string());
            }
        }
        assert_eq!(errors, ["the model server closed the connection before the reply's end"]);
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        // One reply per connection, then the server closes it.
        let (address, accepted, closed) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 1).await;
        let pool = pool(&address, Duration::from_secs(60), 8);
        for _ in 0..3 {
            let (_, body) = get(&pool).await.unwrap();
            let (data, conn) = read(body).await;
            assert_eq!(data, "ok");
            pool.put(conn.expect("reusable as far as the reply said"));
            // The server has closed it before the next request takes the
            // connection (on loopback its FIN is queued by the time close returns).
            closed.acquire().await.unwrap().forget();
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_close_not_yet_seen_when_the_connection_is_taken_costs_a_resend_not_an_error() {
        // A server on a thread of its own answers one request a connection and closes the
        // first one when told, after it went back to the pool. The test waits for that
        // close blocking the runtime's only thread, so the runtime has read no event of it
        // when the connection is taken again: only the request sent on it finds the close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for (i, stream) in listener.incoming().take(2).enumerate() {
                let mut stream = stream.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "a request");
                    seen.extend_from_slice(&buf[..n]);
                }
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
                if i == 0 {
                    close_rx.recv().unwrap();
                    drop(stream);
                    closed_tx.send(()).unwrap();
                } else {
                    // Kept open until the test is done with it.
                    let _ = stream.read(&mut buf);
                }
            }
        });
        let pool = pool(&address, Duration::from_secs(60), 8);
        let (_, body) = get(&pool).await.unwrap();
        let (data, conn) = read(body).await;
        assert_eq!(data, "ok");
        pool.put(conn.expect("reusable as far as the reply said"));
        close_tx.send(()).unwrap();
        closed_rx.recv().unwrap();
        let (head, body) = get(&pool).await.expect("sent again on a fresh connection, not a 502");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(read(body).await.0, "ok");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_the_upstream_failed_after_taking_it_up_is_not_sent_again() {
        // The second request on the connection is read, and after longer than a close
        // crossing it would take, the connection is closed with no reply.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for i in 0.. {
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        if i == 1 {
                            tokio::time::sleep(RESEND_WITHIN + Duration::from_millis(100)).await;
                            return;
                        }
                        socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                    }
                });
            }
        });
        let pool = pool(&address, Duration::from_secs(60), 8);
        let (_, body) = get(&pool).await.unwrap();
        let (_, conn) = read(body).await;
        pool.put(conn.expect("reusable"));
        let error = get(&pool).await.err().expect("the upstream's failure is the answer");
        assert_eq!(error.to_string(), "the model server closed the connection without replying");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "not sent again");
    }

    #[tokio::test]
    async fn idle_connections_expire_and_are_bounded() {
        let (address, _, _) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 100).await;
        let pool = pool(&address, Duration::from_millis(1), 1);
        let mut conns = Vec::new();
        for _ in 0..2 {
            let (_, body) = get(&pool).await.unwrap();
            let (data, conn) = read(body).await;
            assert_eq!(data, "ok");
            conns.push(conn.unwrap());
        }
        for conn in conns {
            pool.put(conn);
            assert_eq!(pool.idle_count(), 1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn connect_errors_name_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = pool(&address, Duration::from_secs(60), 8);
        let error = get(&pool).await.err().unwrap();
        assert!(error.to_string().contains(&address), "{error}");
    }

    #[tokio::test]
    async fn a_request_goes_out_with_the_upstreams_own_headers_and_its_length() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let received = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.ends_with(b"{}") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            String::from_utf8(seen).unwrap()
        });
        struct One;
        impl WriteHeaders for One {
            fn write_headers(&self, out: &mut Vec<u8>) {
                h1::write_header(out, b"x-request-id", b"r1");
            }
        }
        let pool = ConnPool::new(PoolConfig {
            address: address.clone(),
            prefix: "/base".to_owned(),
            fixed: b"host: model\r\nauthorization: Bearer k\r\n".to_vec(),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_idle: 8,
        });
        let body = Bytes::from_static(b"{}");
        let out =
            Outgoing { method: &Method::POST, path_and_query: "/v1/chat/completions", headers: &One, body: &body };
        let (head, body) = pool.send(&out, |_, _| true).await.unwrap();
        assert_eq!(head.status, StatusCode::NO_CONTENT);
        assert!(read(body).await.1.is_some());
        assert_eq!(
            received.await.unwrap(),
            "POST /base/v1/chat/completions HTTP/1.1\r\nhost: model\r\nauthorization: Bearer k\r\n\
             x-request-id: r1\r\ncontent-length: 2\r\n\r\n{}"
        );
    }
}
