//! Token budgets settled against what the model server says a reply cost.
//!
//! The budget phase charges an estimate before admission (about four bytes a token of
//! prompt, plus `max_tokens`): a request that could not be paid for never reaches a
//! model. When the reply is complete its `usage` says what it really cost, and the
//! difference is given back (or, rarely, charged on top). A streamed request carries
//! `usage` only in a last chunk the client must ask for, so one that did not ask is sent
//! with `stream_options.include_usage` and that chunk is taken out again before the
//! client sees it. A reply that never says (the client went away, an upstream that
//! does not report usage) keeps the estimate: the budget errs against the spender.
//!
//! A stream that goes on past what was reserved for it (no `max_tokens` was given, or the
//! model server ignored it) draws on the budget as it goes, a slice at a time; when the
//! budget has nothing left the stream is cut cleanly: a last event says why, then
//! `[DONE]`, and the upstream connection is closed so the model stops generating.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::Frame;
use serde::Deserialize;

use crate::edge::Edge;

/// Whole replies larger than this are relayed without being read for their usage.
const MAX_WHOLE_REPLY: usize = 4 << 20;
/// A streamed reply's event longer than this is passed on unread.
const MAX_EVENT: usize = 64 << 10;
/// A stream past its reservation draws this many more tokens from the budget at a time.
const SLICE: u32 = 64;
/// The last event of a stream cut because the account's budget ran out.
const CUT: &[u8] = b"data: {\"error\":{\"type\":\"rate_limit_error\",\"code\":\"token_budget_exhausted\",\"message\":\"this account's inference budget ran out during this reply; the reply was cut here. Retry later.\",\"param\":null}}\n\ndata: [DONE]\n\n";

/// What the budget phase charged, to be settled when the reply says what it cost.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reservation {
    pub account: u64,
    /// Tokens charged, already multiplied by `cost`.
    pub charged: u32,
    /// Of the estimate, the tokens the completion may take (`max_tokens`, or the default).
    pub completion: u32,
    /// What a token costs this account (its tier's share of the budget, inverted).
    pub cost: f64,
    /// Whether the fleet's budget holds it (else this node's).
    pub in_fleet: bool,
}

impl Reservation {
    /// Gives back or charges the difference between the estimate and `used` tokens; in a
    /// fleet, the receiver hears when the other nodes would see it.
    pub fn settle(self, edge: &Edge, used: u64) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let actual = (used as f64 * self.cost).ceil().min(f64::from(u32::MAX)) as u32;
        edge.metrics.settled_tokens(self.charged, actual);
        edge.settle_tokens(self.account, self.charged, actual, self.in_fleet, crate::clock::now())
    }
}

/// The request body with `"stream_options":{"include_usage":true}` added, or `None`
/// when the client already asked (or the body is not a JSON object). `has_options`:
/// whether the body has a `stream_options` member at all (only then is it parsed).
pub(super) fn ask_for_usage(body: &Bytes, has_options: bool) -> Option<Bytes> {
    if has_options {
        let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let options = value.get_mut("stream_options")?;
        if options.get("include_usage").and_then(serde_json::Value::as_bool) == Some(true) {
            return None;
        }
        options.as_object_mut()?.insert("include_usage".into(), true.into());
        return serde_json::to_vec(&value).ok().map(Bytes::from);
    }
    // No member of that name: add it in front, without parsing the rest again.
    let open = body.iter().position(|b| !b.is_ascii_whitespace()).filter(|&i| body[i] == b'{')?;
    let rest = &body[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let member: &[u8] = if empty {
        br#""stream_options":{"include_usage":true}"#
    } else {
        br#""stream_options":{"include_usage":true},"#
    };
    let mut out = BytesMut::with_capacity(body.len() + member.len());
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(member);
    out.extend_from_slice(rest);
    Some(out.freeze())
}

#[derive(Debug, Deserialize, PartialEq)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl Usage {
    fn tokens(&self) -> u64 {
        self.total_tokens.unwrap_or(self.prompt_tokens + self.completion_tokens.unwrap_or(0))
    }
}

#[derive(Deserialize)]
struct Reported {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
}

/// `response` with its body read for `usage` on its way to the client; `strip`: take
/// out the usage-only chunk of a stream (the client did not ask for it).
pub(super) fn meter(
    response: Response<Body>,
    edge: Arc<Edge>,
    reservation: Reservation,
    streamed: bool,
    strip: bool,
) -> Response<Body> {
    if !response.status().is_success() {
        // Nothing was generated: the whole estimate goes back (not waited for: a client
        // retrying at once on another node may find it still spent for a moment).
        let _ = reservation.settle(&edge, 0);
        return response;
    }
    let (mut parts, body) = response.into_parts();
    if strip {
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    let mode = if streamed {
        Mode::Stream { pending: BytesMut::new(), strip }
    } else {
        Mode::Whole { first: None, rest: Vec::new(), len: 0 }
    };
    let metered = Metered {
        inner: body,
        mode,
        edge,
        reservation: Some(reservation),
        generated: 0,
        allowed: reservation.completion,
        cut: false,
        settling: None,
        held: None,
    };
    Response::from_parts(parts, Body::new(metered))
}

enum Mode {
    /// The reply's frames so far (shared, not copied) and their length. Most replies
    /// come in one frame, which needs no list.
    Whole { first: Option<Bytes>, rest: Vec<Bytes>, len: usize },
    /// What followed the last complete event.
    Stream { pending: BytesMut, strip: bool },
}

struct Metered {
    inner: Body,
    mode: Mode,
    edge: Arc<Edge>,
    /// Taken when settled.
    reservation: Option<Reservation>,
    /// Content events streamed so far (about a token each).
    generated: u64,
    /// Tokens of completion paid for so far: the reservation's, then slices.
    allowed: u32,
    /// The budget ran out and the cut was sent: nothing more follows.
    cut: bool,
    /// The fleet's word that the settlement is in, awaited before the frame that
    /// followed it (`held`, `None` for the end) goes out: a client whose next request
    /// reaches another node must find its tokens given back. Bounded by [`HOLD_AT_MOST`].
    settling: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    held: Option<Option<Bytes>>,
}

/// The longest the end of a reply waits for the fleet to have its settlement.
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(250);

impl Metered {
    fn settle(&mut self, used: u64) {
        if let Some(r) = self.reservation.take()
            && let Some(heard) = r.settle(&self.edge, used)
        {
            self.settling = Some(Box::pin(async move {
                let _ = tokio::time::timeout(HOLD_AT_MOST, heard).await;
            }));
        }
    }

    /// `frame` now, or after the settlement just made is in the fleet.
    fn send(&mut self, frame: Option<Bytes>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(settling) = self.settling.as_mut() {
            if settling.as_mut().poll(cx).is_pending() {
                self.held = Some(frame);
                return Poll::Pending;
            }
            self.settling = None;
        }
        Poll::Ready(frame.map(|b| Ok(Frame::data(b))))
    }

    /// The whole reply has arrived: read its usage.
    fn finish_whole(&mut self) {
        let Mode::Whole { first, rest, len } = &mut self.mode else { return };
        if *len > MAX_WHOLE_REPLY {
            return;
        }
        let Some(first) = first.take() else { return };
        let used = if rest.is_empty() {
            whole_reply_usage(&first)
        } else {
            let mut whole = BytesMut::with_capacity(*len);
            whole.extend_from_slice(&first);
            for f in rest.drain(..) {
                whole.extend_from_slice(&f);
            }
            whole_reply_usage(&whole)
        };
        if let Some(tokens) = used {
            self.settle(tokens);
        }
    }

    /// The complete events in `pending`, with the usage read and (when stripping) the
    /// usage-only chunk taken out; the incomplete rest stays in `pending`.
    fn complete_events(&mut self, last: bool) -> Option<Bytes> {
        let Mode::Stream { pending, strip } = &mut self.mode else { return None };
        let strip = *strip;
        let end = if last { pending.len() } else { last_boundary(pending).unwrap_or(0) };
        let end = if end == 0 && pending.len() > MAX_EVENT { pending.len() } else { end };
        if end == 0 {
            return None;
        }
        let mut events = pending.split_to(end).freeze();
        let mut out = BytesMut::new();
        let mut used = None;
        while !events.is_empty() {
            let len = next_event(&events);
            let event = events.split_to(len);
            if carries_content(&event) {
                self.generated += 1;
                if self.generated > u64::from(self.allowed) && !self.draw_more() {
                    // Out of budget: this event and the rest of the reply are not sent.
                    out.extend_from_slice(CUT);
                    self.cut = true;
                    self.inner = Body::empty();
                    return Some(out.freeze());
                }
            }
            match read_event(&event) {
                Some((tokens, usage_only)) => {
                    used = Some(tokens);
                    if !(strip && usage_only) {
                        out.extend_from_slice(&event);
                    }
                }
                None => out.extend_from_slice(&event),
            }
        }
        if let Some(tokens) = used {
            self.settle(tokens);
        }
        (!out.is_empty()).then(|| out.freeze())
    }
}

impl Metered {
    /// Draws one more slice of completion from the account's budget; `false` when the
    /// budget has none left (the stream is cut).
    fn draw_more(&mut self) -> bool {
        let Some(r) = self.reservation.as_mut() else { return true };
        let charge = (f64::from(SLICE) * r.cost).ceil().min(f64::from(u32::MAX)) as u32;
        if !self.edge.draw_tokens(r.account, charge, r.in_fleet, crate::clock::now()).allowed {
            return false;
        }
        r.charged = r.charged.saturating_add(charge);
        self.allowed = self.allowed.saturating_add(SLICE);
        true
    }
}

/// Whether a streamed event carries generated text (a non-empty `content` or `text`).
fn carries_content(event: &[u8]) -> bool {
    [&b"\"content\":\""[..], b"\"text\":\""].iter().any(|key| {
        event.windows(key.len()).position(|w| w == *key).is_some_and(|at| event.get(at + key.len()) != Some(&b'"'))
    })
}

/// The end of the last complete event in `buf` (just past its blank line).
fn last_boundary(buf: &[u8]) -> Option<usize> {
    (1..buf.len()).rev().find_map(|i| match (buf[i - 1], buf[i]) {
        (b'\n', b'\n') => Some(i + 1),
        (b'\r', b'\n') if i >= 3 && &buf[i - 3..i - 1] == b"\r\n" => Some(i + 1),
        _ => None,
    })
}

/// The length of the first event in `buf`, its blank line included (all of `buf` when
/// it has none).
fn next_event(buf: &[u8]) -> usize {
    (1..buf.len())
        .find_map(|i| match (buf[i - 1], buf[i]) {
            (b'\n', b'\n') => Some(i + 1),
            (b'\r', b'\n') if i >= 3 && &buf[i - 3..i - 1] == b"\r\n" => Some(i + 1),
            _ => None,
        })
        .unwrap_or(buf.len())
}

/// An event's reported usage, if it carries one, and whether it carries nothing else.
fn read_event(event: &[u8]) -> Option<(u64, bool)> {
    if !contains(event, b"\"usage\"") {
        return None;
    }
    let text = std::str::from_utf8(event).ok()?;
    let data = text.lines().find_map(|l| l.strip_prefix("data:"))?.trim();
    let reported: Reported = serde_json::from_str(data).ok()?;
    let usage = reported.usage?;
    Some((usage.tokens(), reported.choices.is_none_or(|c| c.is_empty())))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The tokens a whole reply's `usage` reports.
fn whole_reply_usage(reply: &[u8]) -> Option<u64> {
    if let Some(usage) = trailing_usage(reply) {
        return Some(usage.tokens());
    }
    serde_json::from_slice::<Reported>(reply).ok()?.usage.map(|u| u.tokens())
}

/// The `usage` of a reply whose last member it is, read without parsing the rest: the
/// `choices` before it hold all the generated text, and model servers put `usage` last.
/// `None` when the reply does not end that way (it is then parsed whole).
///
/// The bytes `"usage"`, not after a backslash and followed by `:`, can only be that key:
/// inside a JSON string every quote is escaped, and a string value is not followed by `:`.
/// And when what lies between the key and the reply's closing brace is one JSON value, the
/// key belongs to the outermost object: a nested member's value would be followed by its
/// own object's `}`.
fn trailing_usage(reply: &[u8]) -> Option<Usage> {
    let end = reply.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if reply[end] != b'}' || reply.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    // Nearly always the reply ends `"usage":{…}}` with a flat object: its `{` is the last
    // one, and the key is right before it. A key named `usage` inside it is refused by
    // `flat_usage`, so this finds the key the search below would.
    if let Some(open) = memchr::memrchr(b'{', &reply[..end]) {
        let before = reply[..open].trim_ascii_end();
        if let Some(before) = before.strip_suffix(b":").map(<[u8]>::trim_ascii_end)
            && before.ends_with(b"\"usage\"")
            && before.len() > 7
            && before[before.len() - 8] != b'\\'
            && let Some(usage) = flat_usage(&reply[open..end])
        {
            return Some(usage);
        }
    }
    // Built once: building the searcher cost more than a short reply's search.
    static KEY: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(b"\"usage\""));
    let key = KEY.rfind(&reply[..end])?;
    if key > 0 && reply[key - 1] == b'\\' {
        return None;
    }
    let after = &reply[key + b"\"usage\"".len()..end];
    let colon = after.iter().position(|b| !b.is_ascii_whitespace())?;
    if after[colon] != b':' {
        return None;
    }
    let value = &after[colon + 1..];
    flat_usage(value).or_else(|| serde_json::from_slice::<Usage>(value).ok())
}

/// `usage` as model servers send it, a flat object of whole numbers, read by hand: serde
/// spent 1,700 instructions a reply on these three numbers. `None` for anything else
/// (nested details, `null`, escapes, a repeated key, a number serde would refuse), which
/// serde then reads: where this answers, serde would answer the same (a property test
/// holds the two together).
fn flat_usage(text: &[u8]) -> Option<Usage> {
    let mut at = Cursor { text, at: 0 };
    at.space();
    at.expect(b'{')?;
    at.space();
    // prompt, completion, total: each may come once.
    let mut fields: [Option<u64>; 3] = [None; 3];
    if at.peek() == Some(b'}') {
        at.at += 1;
    } else {
        loop {
            let slot = at.known_key();
            // Another `usage` inside would be the key `trailing_usage` meant.
            if slot.is_none() && at.key()? == b"usage" {
                return None;
            }
            at.space();
            at.expect(b':')?;
            at.space();
            let n = at.number()?;
            if let Some(slot) = slot
                && fields[slot].replace(n).is_some()
            {
                return None;
            }
            at.space();
            match at.next()? {
                b',' => at.space(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    let [prompt, completion_tokens, total_tokens] = fields;
    let usage = Usage { prompt_tokens: prompt.unwrap_or(0), completion_tokens, total_tokens };
    at.space();
    (at.at == text.len()).then_some(usage)
}

struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// JSON's whitespace (not `is_ascii_whitespace`'s, which has form feed too).
    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// One of the three keys, quotes included, taken whole: the slot it fills. Compared
    /// as bytes with the closing quote, so `"prompt_tokens_details"` is not taken.
    fn known_key(&mut self) -> Option<usize> {
        const KEYS: [&[u8]; 3] = [b"\"prompt_tokens\"", b"\"completion_tokens\"", b"\"total_tokens\""];
        let rest = &self.text[self.at..];
        let slot = KEYS.iter().position(|k| rest.starts_with(k))?;
        self.at += KEYS[slot].len();
        Some(slot)
    }

    /// Any other key of printable ASCII without escapes.
    fn key(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let rest = &self.text[self.at..];
        let key = &rest[..memchr::memchr(b'"', rest)?];
        if !key.iter().all(|&b| matches!(b, 0x20..=0x7e) && b != b'\\') {
            return None;
        }
        self.at += key.len() + 1;
        Some(key)
    }

    /// A whole number as JSON writes it (no sign, no leading zero), up to 19 digits.
    fn number(&mut self) -> Option<u64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.held.take() {
            return this.send(frame, cx);
        }
        loop {
            if this.cut {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.finish_whole();
                    let rest = this.complete_events(true);
                    return this.send(rest, cx);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    match &mut this.mode {
                        Mode::Whole { first, rest, len } => {
                            *len += data.len();
                            if *len <= MAX_WHOLE_REPLY {
                                if first.is_none() {
                                    *first = Some(data.clone());
                                } else {
                                    rest.push(data.clone());
                                }
                            }
                            if this.inner.is_end_stream() {
                                this.finish_whole();
                            }
                            return this.send(Some(data), cx);
                        }
                        Mode::Stream { pending, .. } => {
                            pending.extend_from_slice(&data);
                            let last = this.inner.is_end_stream();
                            if let Some(out) = this.complete_events(last) {
                                return this.send(Some(out), cx);
                            }
                            if last {
                                return this.send(None, cx);
                            }
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.held.is_some() {
            return false;
        }
        if self.cut {
            return true;
        }
        let drained = match &self.mode {
            Mode::Whole { .. } => true,
            Mode::Stream { pending, .. } => pending.is_empty(),
        };
        drained && self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::*;

    #[test]
    fn a_flat_usage_is_read_by_hand_and_anything_else_left_to_serde() {
        let read = |text: &str| flat_usage(text.as_bytes());
        let usage = |p, c, t| Some(Usage { prompt_tokens: p, completion_tokens: c, total_tokens: t });
        assert_eq!(read(r#"{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}"#), usage(5, Some(7), Some(12)));
        assert_eq!(read(" {\n \"completion_tokens\" : 3 , \"other\": 9 }\r\n"), usage(0, Some(3), None));
        assert_eq!(read("{}"), usage(0, None, None));
        for left_to_serde in [
            r#"{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":0}}"#,
            r#"{"prompt_tokens":null}"#,
            r#"{"prompt_tokens":5,"prompt_tokens":6}"#,
            r#"{"prompt_\u0074okens":5}"#,
            r#"{"prompt_tokens":05}"#,
            r#"{"prompt_tokens":5.0}"#,
            r#"{"prompt_tokens":-5}"#,
            r#"{"prompt_tokens":5,}"#,
            r#"{"prompt_tokens":5} x"#,
            "{\"prompt_tokens\":5}\u{c}",
        ] {
            assert_eq!(read(left_to_serde), None, "{left_to_serde}");
        }
    }

    /// Near-JSON objects built from pieces that are and are not valid where they stand,
    /// mostly valid ones, so that whole objects (repeated keys among them) come out often.
    fn object() -> impl Strategy<Value = String> {
        fn pick(valid: &[&'static str], invalid: &[&'static str]) -> impl Strategy<Value = &'static str> + Clone {
            prop_oneof![6 => prop::sample::select(valid.to_vec()), 1 => prop::sample::select(invalid.to_vec())]
        }
        let key = pick(
            &["\"prompt_tokens\"", "\"completion_tokens\"", "\"total_tokens\"", "\"x\""],
            &["\"prompt_tokens_details\"", "\"total_\\u0074okens\"", "prompt_tokens", "\"é\""],
        );
        let value = pick(
            &["0", "7", "42", "9999999999999999999"],
            &["01", "-1", "1.5", "1e2", "null", "{}", "\"s\"", "18446744073709551615", "18446744073709551616", ""],
        );
        let space = pick(&["", " ", "\n", "\t", "\r"], &["\u{c}"]);
        let member = (space.clone(), key, space.clone(), value, space.clone())
            .prop_map(|(a, k, b, v, c)| format!("{a}{k}{b}:{v}{c}"));
        (
            space.clone(),
            prop::collection::vec(member, 0..5),
            pick(&[","], &[";", ",,"]),
            space,
            pick(&["}"], &["", "}}"]),
        )
            .prop_map(|(lead, members, comma, tail, close)| format!("{lead}{{{}{close}{tail}", members.join(comma)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn where_the_hand_reader_answers_serde_answers_the_same(text in object()) {
            if let Some(by_hand) = flat_usage(text.as_bytes()) {
                let by_serde = serde_json::from_slice::<Usage>(text.as_bytes());
                prop_assert_eq!(by_serde.ok(), Some(by_hand), "{}", text);
            }
        }
    }

    #[test]
    fn the_generated_objects_reach_the_hand_readers_answers() {
        // Not vacuous: the generator above reaches the hand reader's answers too.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let answered = (0..2000)
            .filter(|_| flat_usage(object().new_tree(&mut runner).unwrap().current().as_bytes()).is_some())
            .count();
        assert!(answered > 400, "{answered} of 2000");
    }

    #[test]
    fn usage_is_asked_for_without_reparsing_and_kept_when_asked_already() {
        let body = Bytes::from_static(br#" {"model":"m","stream":true}"#);
        let asked = ask_for_usage(&body, false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&asked).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        let empty = ask_for_usage(&Bytes::from_static(b"{ }"), false).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&empty).is_ok(), "{empty:?}");
        let already = Bytes::from_static(br#"{"stream_options":{"include_usage":true}}"#);
        assert_eq!(ask_for_usage(&already, true), None);
        let off = Bytes::from_static(br#"{"stream_options":{"include_usage":false}}"#);
        let on: serde_json::Value = serde_json::from_slice(&ask_for_usage(&off, true).unwrap()).unwrap();
        assert_eq!(on["stream_options"]["include_usage"], true);
        assert_eq!(ask_for_usage(&Bytes::from_static(b"[1]"), false), None);
    }

    #[test]
    fn events_split_at_blank_lines_of_either_kind() {
        assert_eq!(last_boundary(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(last_boundary(b"data: a\r\n\r\ndata: b\r\n\r\n"), Some(22));
        assert_eq!(last_boundary(b"data: a\n"), None);
        assert_eq!(next_event(b"data: a\n\ndata: b\n\n"), 9);
    }

    #[test]
    fn content_events_are_told_from_the_rest() {
        assert!(carries_content(br#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#));
        assert!(carries_content(br#"data: {"choices":[{"text":" there"}]}"#));
        assert!(!carries_content(br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#));
        assert!(!carries_content(b"data: [DONE]"));
        let cut = std::str::from_utf8(CUT).unwrap();
        let first = cut.lines().next().unwrap().strip_prefix("data: ").unwrap();
        let error: serde_json::Value = serde_json::from_str(first).unwrap();
        assert_eq!(error["error"]["code"], "token_budget_exhausted");
    }

    #[test]
    fn a_whole_reply_usage_is_read_from_its_end_only_when_it_is_the_outermost_last_member() {
        let reply = br#"{"id":"x","choices":[{"message":{"content":"say \"usage\": {} and \\"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}
"#;
        assert_eq!(trailing_usage(reply).map(|u| u.tokens()), Some(7));
        assert_eq!(whole_reply_usage(reply), Some(7));
        // Not last (llama.cpp adds `timings` after it): parsed whole, same answer.
        let not_last = br#"{"usage":{"total_tokens":9},"choices":[],"timings":{"usage":1}}"#;
        assert!(trailing_usage(not_last).is_none());
        assert_eq!(whole_reply_usage(not_last), Some(9));
        // A `usage` nested in a choice is not the reply's: neither path reads it.
        let nested = br#"{"choices":[{"usage":{"total_tokens":5}}]}"#;
        assert!(trailing_usage(nested).is_none());
        assert_eq!(whole_reply_usage(nested), None);
        let nested_last = br#"{"choices":[],"x":{"usage":{"total_tokens":5}}}"#;
        assert!(trailing_usage(nested_last).is_none());
        assert_eq!(whole_reply_usage(nested_last), None);
        // A key that only ends in `usage` is not `usage`.
        let escaped = br#"{"choices":[],"x\"usage":{"total_tokens":5}}"#;
        assert!(trailing_usage(escaped).is_none());
        assert_eq!(whole_reply_usage(escaped), None);
        // A key `usage` inside the usage object: the object is left to serde whole.
        let inner = br#"{"choices":[],"usage":{"usage":5,"total_tokens":7}}"#;
        assert!(trailing_usage(inner).is_none());
        assert_eq!(whole_reply_usage(inner), Some(7));
        // Spaces around the colon, and after the last brace.
        assert_eq!(whole_reply_usage(b"{\"choices\":[],\"usage\" : {\"total_tokens\":8} }\n"), Some(8));
        // The word in generated text, and a `usage` that is null or absent.
        assert_eq!(whole_reply_usage(br#"{"choices":[{"text":"\"usage\":{\"total_tokens\":5}}"}]}"#), None);
        assert_eq!(whole_reply_usage(br#"{"choices":[],"usage":null}"#), None);
        assert_eq!(whole_reply_usage(b"not json"), None);
    }

    #[test]
    fn the_usage_chunk_is_read_and_recognised() {
        let usage_only =
            br#"data: {"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}

"#;
        assert_eq!(read_event(usage_only), Some((42, true)));
        let with_choice = br#"data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":2,"completion_tokens":3}}

"#;
        assert_eq!(read_event(with_choice), Some((5, false)));
        assert_eq!(read_event(br#"data: {"choices":[],"usage":null}"#), None);
        assert_eq!(read_event(b"data: [DONE]\n\n"), None);
    }
}
