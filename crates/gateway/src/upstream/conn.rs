//! HTTP/1.1 connections to one upstream, each driven by the request that holds it.
//!
//! A pooled client runs every connection as its own task and hands the reply
//! body over a one-slot channel, so a streamed reply crosses tasks once per
//! server-sent event and is written to the client one event at a time. Here the
//! proxy polls the connection itself: when the reply body has nothing ready it
//! drives the connection inline, which decodes whatever the last socket read
//! brought, so every event already received can go out in one write (see
//! `proxy::RelayBody`). An idle connection waits in the pool undriven; it is
//! checked for a close when taken out.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// Why a request could not be sent to the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connect to {0} failed: {1}")]
    Connect(String, std::io::Error),
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("request failed: {0}")]
    Request(hyper::Error),
}

/// One connection: the handle that sends requests and the state machine that
/// moves bytes, polled by whoever is using the connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    /// Boxed once per connection: hyper's connection state is most of a kilobyte, and a
    /// `Conn` is moved several times a request (out of the pool, through the reply,
    /// back in), each move a copy of everything inline.
    driver: Pin<Box<Driver>>,
    /// The driver finished: the connection is closed (or broke) and is never reused.
    done: bool,
}

impl Conn {
    /// Move bytes on the connection: read and decode what has arrived, write
    /// what is queued. `Ready` means the connection is finished.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        match self.driver.as_mut().poll(cx) {
            Poll::Ready(_) => {
                self.done = true;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether it can carry another request, after one undriven poll to let it
    /// notice a close by the upstream and finish the last exchange.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx).is_pending() && self.sender.is_ready()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections to one upstream, most recently used last.
pub struct ConnPool {
    address: String,
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

impl ConnPool {
    /// `address` is `host:port`.
    pub fn new(address: String, connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> ConnPool {
        ConnPool { address, connect_timeout, idle_timeout, max_idle, idle: Mutex::new(VecDeque::new()) }
    }

    /// Send `request` (origin-form URI, `Host` set) and wait for the reply's
    /// head, driving the connection meanwhile. The connection comes back with
    /// the reply: drive it while reading the body, then give it to [`Self::put`].
    pub async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<(Response<Incoming>, Conn), ConnError> {
        // A pooled connection the upstream closed just as it was taken hands the
        // request back unsent: try the next one, then a fresh connection.
        loop {
            let (mut conn, fresh) = match self.take() {
                Some(conn) => (conn, false),
                None => (self.connect().await?, true),
            };
            let mut reply = std::pin::pin!(conn.sender.try_send_request(request));
            let result = std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = reply.as_mut().poll(cx) {
                    return Poll::Ready(result);
                }
                if conn.drive(cx).is_ready() {
                    // The connection ended; the reply future now holds its error.
                    return reply.as_mut().poll(cx);
                }
                Poll::Pending
            })
            .await;
            match result {
                Ok(response) => return Ok((response, conn)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(ConnError::Request(e.into_error())),
                },
            }
        }
    }

    /// Return a connection whose last reply was read to the end.
    pub fn put(&self, mut conn: Conn) {
        if !conn.reusable() {
            return;
        }
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
            if conn.reusable() {
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
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ConnError::Connect(self.address.clone(), e)),
            Err(_) => return Err(ConnError::ConnectTimeout(self.address.clone())),
        };
        let _ = stream.set_nodelay(true);
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await.map_err(ConnError::Handshake)?;
        Ok(Conn { sender, driver: Box::pin(driver), done: false })
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server answering each request on a connection with `reply`, counting
    /// connections; closes a connection after `per_conn` replies.
    /// A server answering `per_conn` requests a connection with `reply`, then
    /// closing it: its address, the connections it accepted, and a permit per
    /// connection it closed.
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

    fn request(address: &str) -> Request<Full<Bytes>> {
        Request::builder().uri("/x").header("host", address).body(Full::new(Bytes::new())).unwrap()
    }

    async fn body_of(response: Response<Incoming>, conn: &mut Conn) -> Bytes {
        let mut body = std::pin::pin!(response.into_body());
        let mut out = Vec::new();
        std::future::poll_fn(|cx| {
            loop {
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(frame)) => out.extend_from_slice(&frame.unwrap().into_data().unwrap()),
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => {
                        if conn.drive(cx).is_pending() {
                            if let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(cx) {
                                out.extend_from_slice(&frame.unwrap().into_data().unwrap());
                                continue;
                            }
                            if body.is_end_stream() {
                                return Poll::Ready(());
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
        })
        .await;
        Bytes::from(out)
    }

    #[tokio::test]
    async fn reuses_a_connection_whose_reply_was_read() {
        let (address, accepted, _) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 100).await;
        let pool = ConnPool::new(address.clone(), Duration::from_secs(1), Duration::from_secs(60), 8);
        for _ in 0..3 {
            let (response, mut conn) = pool.send(request(&address)).await.unwrap();
            assert_eq!(body_of(response, &mut conn).await, "ok");
            pool.put(conn);
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        // One reply per connection, then the server closes it.
        let (address, accepted, closed) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 1).await;
        let pool = ConnPool::new(address.clone(), Duration::from_secs(1), Duration::from_secs(60), 8);
        for _ in 0..3 {
            let (response, mut conn) = pool.send(request(&address)).await.unwrap();
            assert_eq!(body_of(response, &mut conn).await, "ok");
            pool.put(conn);
            // The server has closed it before the next request takes the
            // connection (on loopback its FIN is queued by the time close returns).
            closed.acquire().await.unwrap().forget();
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_expire_and_are_bounded() {
        let (address, _, _) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 100).await;
        let pool = ConnPool::new(address.clone(), Duration::from_secs(1), Duration::from_millis(1), 1);
        let mut conns = Vec::new();
        for _ in 0..2 {
            let (response, mut conn) = pool.send(request(&address)).await.unwrap();
            assert_eq!(body_of(response, &mut conn).await, "ok");
            conns.push(conn);
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
        let pool = ConnPool::new(address.clone(), Duration::from_secs(1), Duration::from_secs(60), 8);
        let error = pool.send(request(&address)).await.err().unwrap();
        assert!(error.to_string().contains(&address), "{error}");
    }
}
