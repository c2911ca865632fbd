//! The reply on its way back: the upstream's body relayed frame by frame to the
//! client. [`RelayBody`] holds the upstream's in-flight slot, its connection and
//! the admission permit until the client has the last byte or has gone, enforces
//! the idle timeout, and reports time to first byte to the adaptive limit. Frames
//! already received are merged into one write, never awaited.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use admission::{Outcome, Permit};
use axum::body::Body;
use axum::http::{Response, StatusCode};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::upstream::h1::ReplyHead;
use crate::upstream::{BodyError, FailureKind, InFlight, UpstreamBody};

/// The upstream response headers a client gets; every other one stays here (it is not
/// even copied out of the reply's head). A model server's cookies, its `Server`, its own
/// rate-limit counters (about Palisade's key, not the client's), request ids and internal
/// routing headers are none of the client's business. Kept: the body's type and encoding
/// (Palisade asks for no encoding, but one sent anyway must be declared),
/// `Cache-Control`, the OpenAI processing-time and version headers SDKs read, and
/// `Retry-After` on a 429 (a 503 never reaches the client as it came). Length and
/// framing are hyper's to set. `name` is as the upstream wrote it.
pub(super) fn is_passed_to_client(name: &[u8], status: StatusCode) -> bool {
    const PASSED: [&[u8]; 5] =
        [b"content-type", b"content-encoding", b"cache-control", b"openai-processing-ms", b"openai-version"];
    if PASSED.iter().any(|passed| name.eq_ignore_ascii_case(passed)) {
        return true;
    }
    name.eq_ignore_ascii_case(b"retry-after")
        && matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
}

/// Turn an upstream reply into the client's response, streaming its body.
pub(super) fn relay(
    head: ReplyHead,
    body: UpstreamBody,
    in_flight: InFlight,
    idle: Duration,
    now_ms: u64,
    permit: Option<(Permit, Duration)>,
) -> Response<Body> {
    let body = RelayBody { inner: body, held: None, idle, idle_timer: None, now_ms, in_flight, permit };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    response
}

/// Why a relayed reply was cut short.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("the model server sent nothing for {0:?}")]
    Idle(Duration),
    #[error("the model server's reply broke off: {0}")]
    Upstream(#[from] BodyError),
}

/// The upstream's reply body on its way to the client. It holds the upstream's
/// in-flight slot and (in its body) the connection, so dropping it (the client went
/// away) releases the slot and closes the upstream connection, which stops generation
/// there. A reply read to the end gives its connection back to the upstream's pool.
struct RelayBody {
    inner: UpstreamBody,
    /// What followed the data merged into the last frame, passed on next.
    held: Option<Result<Frame<Bytes>, BodyError>>,
    idle: Duration,
    /// Set when the upstream first keeps us waiting, reset by every frame: a reply that
    /// arrives whole with its head never needs one.
    idle_timer: Option<Pin<Box<Sleep>>>,
    now_ms: u64,
    in_flight: InFlight,
    /// The admission slot and the time to first byte, reported when the reply
    /// is complete; dropped (the client went away) it counts as cancelled.
    permit: Option<(Permit, Duration)>,
}

impl RelayBody {
    fn finish(&mut self, outcome: impl FnOnce(Duration) -> Outcome) {
        if let Some((permit, ttfb)) = self.permit.take() {
            permit.finish(outcome(ttfb));
        }
    }

    /// The reply arrived whole: report it and give the connection back.
    fn complete(&mut self) {
        self.finish(|latency| Outcome::Success { latency });
        if let Some(conn) = self.inner.take_reusable() {
            self.in_flight.upstream.conns.put(conn);
        }
    }
}

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = RelayError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        let this = self.get_mut();
        match poll_coalesced(Pin::new(&mut this.inner), &mut this.held, cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() && this.held.is_none() {
                    // hyper may not poll again after the last frame.
                    this.complete();
                } else if let Some(timer) = this.idle_timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.in_flight.upstream.record_failure(FailureKind::Stream, this.now_ms);
                this.finish(|_| Outcome::Failed);
                Poll::Ready(Some(Err(RelayError::Upstream(e))))
            }
            Poll::Ready(None) => {
                this.complete();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.idle_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.in_flight.upstream.record_failure(FailureKind::Timeout, this.now_ms);
                    this.finish(|_| Outcome::Overloaded);
                    this.inner.close();
                    tracing::warn!(upstream = %this.in_flight.upstream.name, "upstream stream idle; cut");
                    return Poll::Ready(Some(Err(RelayError::Idle(this.idle))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// At most this much is merged into one frame; the rest goes in the next.
const MAX_MERGED: usize = 64 * 1024;

/// Poll `body` for everything it has ready now and merge its data frames into
/// one. Nothing waits to be merged: a lone frame is returned as soon as the body
/// has nothing more (it reads its socket before saying so), so a stream's latency
/// is unchanged while a burst of events that arrived in one read leaves in one
/// write. A trailers frame or an error that follows merged data is kept in `held`
/// and returned by the next call.
fn poll_coalesced<B>(
    mut body: Pin<&mut B>,
    held: &mut Option<Result<Frame<Bytes>, B::Error>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
where
    B: http_body::Body<Data = Bytes>,
{
    if let Some(next) = held.take() {
        return Poll::Ready(Some(next));
    }
    let mut merged = Merged::Empty;
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    merged.push(data);
                    if body.is_end_stream() || merged.len() >= MAX_MERGED {
                        break;
                    }
                }
                Err(other) if merged.is_empty() => return Poll::Ready(Some(Ok(other))),
                Err(other) => {
                    *held = Some(Ok(other));
                    break;
                }
            },
            Poll::Ready(Some(Err(e))) if merged.is_empty() => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Err(e))) => {
                *held = Some(Err(e));
                break;
            }
            Poll::Ready(None) => break,
            Poll::Pending if merged.is_empty() => return Poll::Pending,
            Poll::Pending => break,
        }
    }
    Poll::Ready(merged.into_bytes().map(|data| Ok(Frame::data(data))))
}

/// Data frames merged so far: one is passed as it is, several are copied once.
enum Merged {
    Empty,
    One(Bytes),
    Many(bytes::BytesMut),
}

impl Merged {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Merged::Empty) {
            Merged::Empty => Merged::One(data),
            Merged::One(first) => {
                let mut many = bytes::BytesMut::with_capacity((first.len() + data.len()).max(4096));
                many.extend_from_slice(&first);
                many.extend_from_slice(&data);
                Merged::Many(many)
            }
            Merged::Many(mut many) => {
                many.extend_from_slice(&data);
                Merged::Many(many)
            }
        };
    }

    fn len(&self) -> usize {
        match self {
            Merged::Empty => 0,
            Merged::One(b) => b.len(),
            Merged::Many(b) => b.len(),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Merged::Empty)
    }

    fn into_bytes(self) -> Option<Bytes> {
        match self {
            Merged::Empty => None,
            Merged::One(b) => Some(b),
            Merged::Many(b) => Some(b.freeze()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use axum::http::HeaderMap;

    use super::*;

    #[test]
    fn only_the_passed_headers_of_a_reply_remain() {
        let names = ["Set-Cookie", "content-type", "Server", "OpenAI-Version", "retry-after", "x-internal-host"];
        let passed = |status| names.iter().filter(|n| is_passed_to_client(n.as_bytes(), status)).collect::<Vec<_>>();
        assert_eq!(passed(StatusCode::OK), [&"content-type", &"OpenAI-Version"]);
        assert_eq!(passed(StatusCode::TOO_MANY_REQUESTS), [&"content-type", &"OpenAI-Version", &"retry-after"]);
    }

    /// A body that plays back a script: data, "nothing ready yet", trailers, an error.
    enum Step {
        Data(&'static str),
        Pending,
        Trailers,
        Error,
    }

    struct Script(VecDeque<Step>);

    impl http_body::Body for Script {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(s)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))),
                Some(Step::Pending) => Poll::Pending,
                Some(Step::Trailers) => Poll::Ready(Some(Ok(Frame::trailers(HeaderMap::new())))),
                Some(Step::Error) => Poll::Ready(Some(Err("broke"))),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// Every answer of `poll_coalesced` until the script ends, as text
    /// (`Pending`, `trailers`, `error`).
    fn play(steps: Vec<Step>) -> Vec<String> {
        let mut body = Script(steps.into());
        let mut held = None;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        loop {
            let answer = match poll_coalesced(Pin::new(&mut body), &mut held, &mut cx) {
                Poll::Pending => "Pending".to_owned(),
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(e))) => e.to_owned(),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => String::from_utf8(data.to_vec()).unwrap(),
                    Err(_) => "trailers".to_owned(),
                },
            };
            out.push(answer);
        }
        out
    }

    #[test]
    fn frames_already_ready_leave_as_one() {
        use Step::*;
        let out = play(vec![Data("a"), Data("b"), Data("c"), Pending, Data("d")]);
        assert_eq!(out, ["abc", "d"]);
    }

    #[test]
    fn a_lone_frame_is_passed_at_once() {
        use Step::*;
        // After "a" the body has nothing: "a" goes now, not with "b", which arrives
        // later.
        let out = play(vec![Data("a"), Pending, Pending, Data("b")]);
        assert_eq!(out, ["a", "Pending", "b"]);
    }

    #[test]
    fn trailers_and_errors_after_data_come_next() {
        use Step::*;
        assert_eq!(play(vec![Data("a"), Data("b"), Trailers]), ["ab", "trailers"]);
        assert_eq!(play(vec![Data("a"), Error]), ["a", "broke"]);
        assert_eq!(play(vec![Error]), ["broke"]);
    }

    #[test]
    fn merging_stops_at_the_cap() {
        let big: &'static str = Box::leak("x".repeat(MAX_MERGED / 2 + 1).into_boxed_str());
        let out = play(vec![Step::Data(big), Step::Data(big), Step::Data("tail")]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 2 * big.len());
        assert_eq!(out[1], "tail");
    }

    #[test]
    fn streamed_bytes_are_unchanged_however_they_are_merged() {
        let events: Vec<String> = (0..40)
            .map(|i| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"token {i}\"}}}}]}}\n\n"))
            .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
            .collect();
        let expected: String = events.concat();
        for pattern in 1..8usize {
            let mut steps = Vec::new();
            for (i, event) in events.iter().enumerate() {
                steps.push(Step::Data(Box::leak(event.clone().into_boxed_str())));
                if i % pattern == 0 {
                    steps.extend([Step::Pending, Step::Pending]);
                }
            }
            let out = play(steps);
            let joined: String = out.iter().filter(|s| *s != "Pending").map(String::as_str).collect();
            assert_eq!(joined, expected, "pattern {pattern}");
        }
    }
}
