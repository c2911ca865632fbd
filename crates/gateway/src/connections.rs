//! Caps on open connections, in total and per client address, and the guard
//! that cuts request bodies sent too slowly (slowloris and its body-sending
//! cousin): both are refused before any routing or parsing work is done.

use std::collections::HashMap;
use std::error::Error;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
    TooManyConnections,
    TooManyFromAddress,
}

impl ConnectionRefusal {
    pub fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::TooManyConnections => "total",
            ConnectionRefusal::TooManyFromAddress => "per_address",
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
        }
    }
}

/// Open connections, counted. The per-address map only holds addresses with a
/// connection open, so it never has more than `max_total` entries.
pub struct ConnectionGate {
    max_total: usize,
    max_per_address: u32,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, u32>>,
    refused: [AtomicU64; 2],
}

/// One admitted connection; dropping it frees the place.
pub struct ConnectionSlot {
    gate: Arc<ConnectionGate>,
    address: IpAddr,
}

impl ConnectionGate {
    pub fn new(max_total: usize, max_per_address: u32) -> ConnectionGate {
        ConnectionGate {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            refused: Default::default(),
        }
    }

    /// Count a new connection from `address`; `per_address: false` exempts it
    /// from the per-address cap (a trusted proxy speaking for many clients).
    pub fn admit(self: &Arc<Self>, address: IpAddr, per_address: bool) -> Result<ConnectionSlot, ConnectionRefusal> {
        let address = canonical(address);
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.refused[0].fetch_add(1, Ordering::Relaxed);
            return Err(ConnectionRefusal::TooManyConnections);
        }
        let mut per = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let count = per.entry(address).or_insert(0);
        if per_address && *count >= self.max_per_address {
            drop(per);
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.refused[1].fetch_add(1, Ordering::Relaxed);
            return Err(ConnectionRefusal::TooManyFromAddress);
        }
        *count += 1;
        Ok(ConnectionSlot { gate: self.clone(), address })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn refused(&self, why: ConnectionRefusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per = self.gate.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                per.remove(&self.address);
            }
        }
        drop(per);
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
    pub struct PacedBody {
        #[pin]
        inner: Body,
        pace: BodyPace,
        // Set when the handler first reads: time the request spent queued behind
        // other work in this process is ours, not a slow sender's.
        started: Option<Instant>,
        received: u64,
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl PacedBody {
    pub fn new(inner: Body, pace: BodyPace) -> PacedBody {
        PacedBody { inner, pace, started: None, received: 0, deadline: None }
    }
}

impl http_body::Body for PacedBody {
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
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
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

    #[test]
    fn caps_total_and_per_address_and_frees_on_drop() {
        let gate = Arc::new(ConnectionGate::new(3, 2));
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
        let gate = Arc::new(ConnectionGate::new(10, 1));
        let _v4 = gate.admit(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), true).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(gate.admit(mapped, true).err(), Some(ConnectionRefusal::TooManyFromAddress));
    }

    #[test]
    fn refusal_responses_declare_their_exact_length() {
        for why in [ConnectionRefusal::TooManyConnections, ConnectionRefusal::TooManyFromAddress] {
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
