//! Caps on open connections (in total, per address, and for sockets that have not
//! yet sent a request, per address and per network), the watch that closes a
//! connection that stays silent or idle ([`WatchedIo`]), and the guard that cuts
//! request bodies sent too slowly (slowloris and its body-sending cousin): all act
//! before any routing or parsing work is done.

use std::collections::HashMap;
use std::error::Error;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use shield::{Cidr, SubnetPrefixes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Why a connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
    TooManyConnections,
    TooManyFromAddress,
    /// Too many sockets from this address or its network that have sent no request.
    TooManySilent,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 3] = [
        ConnectionRefusal::TooManyConnections,
        ConnectionRefusal::TooManyFromAddress,
        ConnectionRefusal::TooManySilent,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::TooManyConnections => "total",
            ConnectionRefusal::TooManyFromAddress => "per_address",
            ConnectionRefusal::TooManySilent => "silent",
        }
    }

    /// A complete HTTP/1.1 answer written (best effort) before closing, so a
    /// client learns why instead of seeing a reset.
    pub fn response(self) -> &'static [u8] {
        match self {
            ConnectionRefusal::TooManyConnections => {
                b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 119\r\n\r\n\
{\"error\":{\"message\":\"the server has too many open connections\",\"type\":\"server_error\",\"param\":null,\"code\":\"overloaded\"}}"
            }
            ConnectionRefusal::TooManyFromAddress => {
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 136\r\n\r\n\
{\"error\":{\"message\":\"too many open connections from your address\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":\"too_many_connections\"}}"
            }
            ConnectionRefusal::TooManySilent => {
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 152\r\n\r\n\
{\"error\":{\"message\":\"too many connections from your network have sent no request\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":\"too_many_connections\"}}"
            }
        }
    }
}

/// The caps a [`ConnectionGate`] enforces.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionCaps {
    pub total: usize,
    pub per_address: u32,
    pub silent_per_address: u32,
    pub silent_per_subnet: u32,
    /// How addresses group into networks for the silent cap.
    pub prefixes: SubnetPrefixes,
}

#[derive(Default)]
struct Counts {
    /// Only addresses with a connection open: never more entries than `total`.
    per_address: HashMap<IpAddr, u32>,
    silent_by_address: HashMap<IpAddr, u32>,
    silent_by_subnet: HashMap<Cidr, u32>,
}

fn increment<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: K) {
    *map.entry(key).or_insert(0) += 1;
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// Open connections, counted.
pub struct ConnectionGate {
    caps: ConnectionCaps,
    total: AtomicUsize,
    counts: Mutex<Counts>,
    refused: [AtomicU64; ConnectionRefusal::ALL.len()],
}

/// One admitted connection; dropping it frees the place. Until [`Self::spoke`] it
/// counts as silent.
pub struct ConnectionSlot {
    gate: Arc<ConnectionGate>,
    address: IpAddr,
    subnet: Cidr,
    capped: bool,
    silent: AtomicBool,
}

impl ConnectionGate {
    pub fn new(caps: ConnectionCaps) -> ConnectionGate {
        ConnectionGate { caps, total: AtomicUsize::new(0), counts: Mutex::default(), refused: Default::default() }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count a new connection from `address`; `capped: false` exempts it from the
    /// per-address and silent caps (a trusted proxy speaking for many clients).
    pub fn admit(self: &Arc<Self>, address: IpAddr, capped: bool) -> Result<ConnectionSlot, ConnectionRefusal> {
        let address = canonical(address);
        let subnet = self.caps.prefixes.subnet_of(address);
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.caps.total {
            return Err(self.refuse(ConnectionRefusal::TooManyConnections));
        }
        let mut counts = self.counts();
        if capped {
            let at = |map: &HashMap<IpAddr, u32>| map.get(&address).copied().unwrap_or(0);
            if at(&counts.per_address) >= self.caps.per_address {
                drop(counts);
                return Err(self.refuse(ConnectionRefusal::TooManyFromAddress));
            }
            let silent_subnet = counts.silent_by_subnet.get(&subnet).copied().unwrap_or(0);
            if at(&counts.silent_by_address) >= self.caps.silent_per_address
                || silent_subnet >= self.caps.silent_per_subnet
            {
                drop(counts);
                return Err(self.refuse(ConnectionRefusal::TooManySilent));
            }
            increment(&mut counts.silent_by_address, address);
            increment(&mut counts.silent_by_subnet, subnet);
        }
        increment(&mut counts.per_address, address);
        Ok(ConnectionSlot { gate: self.clone(), address, subnet, capped, silent: AtomicBool::new(capped) })
    }

    fn refuse(&self, why: ConnectionRefusal) -> ConnectionRefusal {
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
        why
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn refused(&self, why: ConnectionRefusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }
}

impl ConnectionSlot {
    /// The connection sent a request: it no longer counts as silent.
    pub fn spoke(&self) {
        if self.silent.swap(false, Ordering::AcqRel) {
            self.release_silent();
        }
    }

    fn release_silent(&self) {
        let mut counts = self.gate.counts();
        decrement(&mut counts.silent_by_address, &self.address);
        decrement(&mut counts.silent_by_subnet, &self.subnet);
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.capped && self.silent.load(Ordering::Acquire) {
            self.release_silent();
        }
        decrement(&mut self.gate.counts().per_address, &self.address);
        self.gate.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An IPv4 client reached over an IPv6 socket counts as its IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// What the watch of one connection knows about it: when it opened, whether a request
/// has arrived, how many are in progress, and when bytes last moved.
pub struct ConnWatch {
    opened: Instant,
    served: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when bytes last moved either way.
    last_io_ms: AtomicU64,
    /// Requests the listener refused in a row on this connection.
    refused_in_a_row: AtomicU32,
    /// The front let the connection's next request through (`PASSED`, or
    /// `PASSED_ALLOW_LISTED`): the listener does not ask the turnstile again.
    preadmitted: AtomicU8,
    slot: ConnectionSlot,
}

const PASSED: u8 = 1;
const PASSED_ALLOW_LISTED: u8 = 2;

/// A request in progress on a watched connection; dropping it ends it.
pub struct RequestInProgress(Arc<ConnWatch>);

impl ConnWatch {
    pub fn new(slot: ConnectionSlot) -> Arc<ConnWatch> {
        Arc::new(ConnWatch {
            opened: Instant::now(),
            served: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_io_ms: AtomicU64::new(0),
            refused_in_a_row: AtomicU32::new(0),
            preadmitted: AtomicU8::new(0),
            slot,
        })
    }

    /// One more refusal in a row; how many now.
    pub fn refused(&self) -> u32 {
        self.refused_in_a_row.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// A request got past the listener's refusals: the run is over.
    pub fn passed(&self) {
        if self.refused_in_a_row.load(Ordering::Relaxed) != 0 {
            self.refused_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// The turnstile let the next request through before hyper saw it.
    pub fn preadmit(&self, allow_listed: bool) {
        self.preadmitted.store(if allow_listed { PASSED_ALLOW_LISTED } else { PASSED }, Ordering::Relaxed);
    }

    /// The front's verdict on this request, if it gave one: `Some(allow_listed)`.
    pub fn take_preadmitted(&self) -> Option<bool> {
        if self.preadmitted.load(Ordering::Relaxed) == 0 {
            return None;
        }
        match self.preadmitted.swap(0, Ordering::Relaxed) {
            PASSED => Some(false),
            PASSED_ALLOW_LISTED => Some(true),
            _ => None,
        }
    }

    /// A request head arrived (the connection is no longer silent).
    pub fn request(self: &Arc<Self>) -> RequestInProgress {
        if !self.served.swap(true, Ordering::AcqRel) {
            self.slot.spoke();
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestInProgress(self.clone())
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// The timeouts a [`WatchedIo`] enforces.
#[derive(Clone, Copy, Debug)]
pub struct Silence {
    /// From opening to the first request head.
    pub head: Duration,
    /// With no request in progress, between two moves of bytes.
    pub idle: Duration,
}

/// What the watch decided when its timer fired.
enum Watched {
    Open,
    /// Never sent a request: an error, so the connection is dropped.
    Silent,
    /// Idle between requests: the end of the stream, so it closes as if the client had.
    Idle,
}

pin_project_lite::pin_project! {
    /// A client's socket that closes itself when it stays silent or idle: it reads as
    /// an error when no request arrived within `head` of opening, and as the end of the
    /// stream when no request is in progress and nothing moved for `idle`. The timer
    /// is polled only when the socket has nothing to read, so an active connection
    /// costs a timestamp per read or write.
    pub struct WatchedIo<S> {
        #[pin]
        inner: S,
        watch: Arc<ConnWatch>,
        silence: Silence,
        timer: Pin<Box<Sleep>>,
    }
}

impl<S> WatchedIo<S> {
    pub fn new(inner: S, watch: Arc<ConnWatch>, silence: Silence) -> WatchedIo<S> {
        let timer = Box::pin(tokio::time::sleep_until(watch.opened + silence.head));
        WatchedIo { inner, watch, silence, timer }
    }
}

fn check(watch: &ConnWatch, silence: Silence, timer: &mut Pin<Box<Sleep>>, cx: &mut Context<'_>) -> Watched {
    loop {
        if timer.as_mut().poll(cx).is_pending() {
            return Watched::Open;
        }
        let now = Instant::now();
        let next = if !watch.served.load(Ordering::Acquire) {
            let deadline = watch.opened + silence.head;
            if now >= deadline {
                return Watched::Silent;
            }
            deadline
        } else if watch.in_flight.load(Ordering::Acquire) > 0 {
            // A request may wait a long time for its answer without a byte moving.
            now + silence.idle
        } else {
            let last = watch.opened + Duration::from_millis(watch.last_io_ms.load(Ordering::Relaxed));
            let deadline = last + silence.idle;
            if now >= deadline {
                return Watched::Idle;
            }
            deadline
        };
        timer.as_mut().reset(next);
    }
}

impl<S: AsyncRead> AsyncRead for WatchedIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.watch.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match check(this.watch, *this.silence, this.timer, cx) {
                Watched::Open => Poll::Pending,
                Watched::Silent => {
                    Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time")))
                }
                Watched::Idle => Poll::Ready(Ok(())),
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite> AsyncWrite for WatchedIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.watch.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.watch.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Limits on how a request body may arrive.
#[derive(Clone, Copy, Debug)]
pub struct BodyPace {
    /// The whole body must arrive within this time.
    pub timeout: Duration,
    /// After `grace`, the body must have averaged at least this many bytes per second.
    pub min_bytes_per_s: u64,
    pub grace: Duration,
}

/// A body that arrived too slowly; handlers answer it with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct SlowBody;

/// True when `error`, or anything it wraps, is a [`SlowBody`].
pub fn is_slow_body(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<SlowBody>() {
            return true;
        }
        current = e.source();
    }
    false
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`SlowBody`] when its sender dawdles.
    pub struct PacedBody<B = Body> {
        #[pin]
        inner: B,
        pace: BodyPace,
        // Set when the handler first reads: time the request spent queued behind
        // other work in this process is ours, not a slow sender's.
        started: Option<Instant>,
        received: u64,
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> PacedBody<B> {
    /// Generic over the body so the listener wraps hyper's own without boxing it first.
    pub fn new(inner: B, pace: BodyPace) -> PacedBody<B> {
        PacedBody { inner, pace, started: None, received: 0, deadline: None }
    }
}

impl<B> http_body::Body for PacedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let started = *this.started.get_or_insert_with(Instant::now);
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                    let elapsed = started.elapsed();
                    if elapsed > this.pace.grace
                        && (*this.received as f64) < this.pace.min_bytes_per_s as f64 * elapsed.as_secs_f64()
                    {
                        return Poll::Ready(Some(Err(Box::new(SlowBody))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // The timer is armed only when a body actually makes us wait:
                // most bodies arrive with their headers and never need it.
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + this.pace.timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(SlowBody))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn caps(total: usize, per_address: u32) -> ConnectionCaps {
        ConnectionCaps {
            total,
            per_address,
            silent_per_address: 100,
            silent_per_subnet: 100,
            prefixes: SubnetPrefixes::default(),
        }
    }

    #[test]
    fn silent_sockets_are_capped_per_address_and_network_until_they_speak() {
        let gate = Arc::new(ConnectionGate::new(ConnectionCaps {
            silent_per_address: 2,
            silent_per_subnet: 3,
            ..caps(100, 100)
        }));
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let a1 = gate.admit(a, true).unwrap();
        let _a2 = gate.admit(a, true).unwrap();
        assert_eq!(gate.admit(a, true).err(), Some(ConnectionRefusal::TooManySilent));
        let _b1 = gate.admit(b, true).unwrap();
        assert_eq!(gate.admit(b, true).err(), Some(ConnectionRefusal::TooManySilent), "the /24 is full");
        a1.spoke();
        assert!(gate.admit(b, true).is_ok(), "a socket that spoke no longer counts");
        assert!(gate.admit(a, false).is_ok(), "a trusted proxy is exempt");
        assert_eq!(gate.refused(ConnectionRefusal::TooManySilent), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_socket_closes_when_silent_then_when_idle() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let gate = Arc::new(ConnectionGate::new(caps(10, 10)));
        let silence = Silence { head: Duration::from_secs(10), idle: Duration::from_secs(60) };
        // Never a request: an error at the head deadline.
        let (client, server) = tokio::io::duplex(64);
        let watch = ConnWatch::new(gate.admit(IpAddr::from([10, 0, 0, 1]), true).unwrap());
        let mut io = WatchedIo::new(server, watch, silence);
        let started = Instant::now();
        let err = io.read(&mut [0u8; 8]).await.expect_err("silent");
        assert_eq!((err.kind(), started.elapsed()), (std::io::ErrorKind::TimedOut, Duration::from_secs(10)));
        drop(client);
        // A request, answered, then nothing: the end of the stream after `idle`.
        let (mut client, server) = tokio::io::duplex(64);
        let watch = ConnWatch::new(gate.admit(IpAddr::from([10, 0, 0, 2]), true).unwrap());
        let mut io = WatchedIo::new(server, watch.clone(), silence);
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut [0u8; 8]).await.unwrap(), 3);
        drop(watch.request());
        let idle_from = Instant::now();
        assert_eq!(io.read(&mut [0u8; 8]).await.unwrap(), 0, "idle: end of stream");
        assert_eq!(idle_from.elapsed(), Duration::from_secs(60));
        // A request in progress keeps even a quiet connection open.
        let (_client, server) = tokio::io::duplex(64);
        let watch = ConnWatch::new(gate.admit(IpAddr::from([10, 0, 0, 3]), true).unwrap());
        let mut io = WatchedIo::new(server, watch.clone(), silence);
        let _in_progress = watch.request();
        let read = tokio::time::timeout(Duration::from_secs(600), io.read(&mut [0u8; 8])).await;
        assert!(read.is_err(), "still open after ten minutes with a request in progress");
    }

    #[test]
    fn caps_total_and_per_address_and_frees_on_drop() {
        let gate = Arc::new(ConnectionGate::new(caps(3, 2)));
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let a1 = gate.admit(a, true).unwrap();
        let _a2 = gate.admit(a, true).unwrap();
        assert_eq!(gate.admit(a, true).err(), Some(ConnectionRefusal::TooManyFromAddress));
        let _b1 = gate.admit(b, true).unwrap();
        assert_eq!(gate.admit(b, true).err(), Some(ConnectionRefusal::TooManyConnections));
        assert_eq!(gate.open(), 3);
        drop(a1);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(b, true).is_ok());
        assert_eq!(gate.refused(ConnectionRefusal::TooManyFromAddress), 1);
        assert_eq!(gate.refused(ConnectionRefusal::TooManyConnections), 1);
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let gate = Arc::new(ConnectionGate::new(caps(10, 1)));
        let _v4 = gate.admit(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), true).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(gate.admit(mapped, true).err(), Some(ConnectionRefusal::TooManyFromAddress));
    }

    #[test]
    fn refusal_responses_declare_their_exact_length() {
        for why in ConnectionRefusal::ALL {
            let text = std::str::from_utf8(why.response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let declared: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
            assert_eq!(declared, body.len(), "{why:?}");
            serde_json::from_str::<serde_json::Value>(body).unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_at_the_deadline() {
        use http_body_util::BodyExt;
        let (mut tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = http_body_util::StreamBody::new(tokio_stream_shim(rx));
        let pace = BodyPace { timeout: Duration::from_secs(5), min_bytes_per_s: 0, grace: Duration::from_secs(1) };
        let body = PacedBody::new(Body::new(stream), pace);
        tx_send(&mut tx, b"partial").await;
        let started = Instant::now();
        let err = body.collect().await.expect_err("must fail");
        assert!(is_slow_body(&*err));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_trickling_below_the_minimum_rate_fails() {
        use http_body_util::BodyExt;
        let (mut tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = http_body_util::StreamBody::new(tokio_stream_shim(rx));
        let pace = BodyPace { timeout: Duration::from_secs(60), min_bytes_per_s: 100, grace: Duration::from_secs(1) };
        let body = PacedBody::new(Body::new(stream), pace);
        let sender = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tx_send(&mut tx, b"x").await;
            }
        });
        let err = body.collect().await.expect_err("must fail");
        assert!(is_slow_body(&*err));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_late_by_a_busy_server_is_not_the_senders_fault() {
        use http_body_util::BodyExt;
        let pace = BodyPace { timeout: Duration::from_secs(5), min_bytes_per_s: 1024, grace: Duration::from_secs(1) };
        let body = PacedBody::new(Body::from("{\"small\": true}"), pace);
        // The request waited behind other work before its handler read the body.
        tokio::time::advance(Duration::from_secs(10)).await;
        let bytes = body.collect().await.expect("a body that was all there must be read").to_bytes();
        assert_eq!(&bytes[..], b"{\"small\": true}");
    }

    async fn tx_send(tx: &mut tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, data: &'static [u8]) {
        let _ = tx.send(Ok(Frame::data(Bytes::from_static(data)))).await;
    }

    fn tokio_stream_shim(
        mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
