//! HTTP/1.1 toward a model server, without the I/O: the request head written from parts
//! rendered once, the reply head parsed with `httparse`, the reply body's framing
//! (length, chunked, or until close; RFC 9112 §6.3) decoded out of a read buffer.
//!
//! The proxy sends one kind of request (a buffered body, no `Expect`, no upgrade) and
//! reads one kind of reply, so it speaks the protocol itself: hyper's client, built for
//! every case, was about a quarter of a proxied request's instructions. Everything an
//! upstream sends is bounded here: the head, its header count, a chunk's size line, the
//! trailers.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// The longest reply head read, and the most header lines it may have.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A chunk's size line, extensions included.
const MAX_CHUNK_LINE: usize = 1024;
/// All trailer lines of a chunked reply together (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// What a model server sent that is not HTTP/1.1 as this client reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the reply head does not parse ({0})")]
    Head(httparse::Error),
    #[error("the reply head is longer than {MAX_HEAD} bytes or {MAX_HEADERS} lines")]
    HeadTooLarge,
    #[error("the reply switched protocols")]
    Upgrade,
    #[error("the reply's content-length is not one number")]
    ContentLength,
    #[error("a chunk's size line does not parse")]
    ChunkSize,
    #[error("a chunk is not followed by CRLF")]
    ChunkEnd,
    #[error("the reply's trailers are longer than {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
}

/// The request line and the headers every request to one upstream carries.
pub fn write_head(out: &mut Vec<u8>, method: &Method, prefix: &str, path_and_query: &str, fixed: &[u8]) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(fixed);
}

/// One header line.
pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The body's length (when the method carries one) and the end of the head.
pub fn end_head(out: &mut Vec<u8>, method: &Method, body_len: usize) {
    if body_len > 0 || !matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a reply's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (a reply to `HEAD`, a 204 or a 304).
    Empty,
    Length(u64),
    Chunked,
    /// Whatever comes until the upstream closes the connection.
    UntilClose,
}

/// A reply head, with only the headers the caller keeps.
#[derive(Debug)]
pub struct ReplyHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this reply's body is read.
    pub keep_alive: bool,
}

/// Parse a reply head at the start of `buf`, skipping interim (1xx) replies. `Ok(None)`:
/// more bytes are needed. Otherwise the head and how many bytes of `buf` it took. Only
/// headers for which `keep(name, status)` holds are copied out; `name` is as sent
/// (compare ignoring case).
pub fn parse_head(
    buf: &[u8],
    method: &Method,
    keep: impl Fn(&[u8], StatusCode) -> bool,
) -> Result<Option<(ReplyHead, usize)>, ProtocolError> {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        // Left uninitialised: zeroing a hundred entries costs more than parsing a short head.
        let mut table = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut reply = httparse::Response::new(&mut []);
        let len =
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut reply, rest, &mut table) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(ProtocolError::HeadTooLarge),
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::HeadTooLarge),
                Err(e) => return Err(ProtocolError::Head(e)),
            };
        if start + len > MAX_HEAD {
            return Err(ProtocolError::HeadTooLarge);
        }
        let code = reply.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| ProtocolError::Head(httparse::Error::Status))?;
        if code == 101 {
            return Err(ProtocolError::Upgrade);
        }
        if status.is_informational() {
            start += len;
            continue;
        }
        let mut headers = HeaderMap::new();
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut close = reply.version != Some(1);
        for h in reply.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_length(h.value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(ProtocolError::ContentLength);
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Only the last coding says whether the body is chunked.
                chunked = Some(last_token(h.value).eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                close |= h.value.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(b"close"));
            }
            if keep(name, status)
                && let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), header_value(h.value))
            {
                headers.append(name, value);
            }
        }
        let framing = if *method == Method::HEAD || code == 204 || code == 304 {
            Framing::Empty
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) => Framing::UntilClose,
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::UntilClose,
            }
        };
        let keep_alive = !close && framing != Framing::UntilClose;
        return Ok(Some((ReplyHead { status, headers, framing, keep_alive }, start + len)));
    }
}

/// A header value; the content types model servers send on every reply are shared, not
/// copied into an allocation of their own each time.
fn header_value(value: &[u8]) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    const COMMON: [&str; 4] = [
        "application/json",
        "text/event-stream",
        "application/json; charset=utf-8",
        "text/event-stream; charset=utf-8",
    ];
    match COMMON.iter().find(|common| common.as_bytes() == value) {
        Some(common) => Ok(HeaderValue::from_static(common)),
        None => HeaderValue::from_bytes(value),
    }
}

/// `Content-Length`: digits, or a list of the same digits (RFC 9110 §8.6).
fn parse_length(value: &[u8]) -> Result<u64, ProtocolError> {
    let mut found: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(ProtocolError::ContentLength);
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(ProtocolError::ContentLength);
        }
        found = Some(n);
    }
    found.ok_or(ProtocolError::ContentLength)
}

fn last_token(value: &[u8]) -> &[u8] {
    trim(value.rsplit(|&b| b == b',').next().unwrap_or(value))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What the decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The body is complete.
    End,
    /// Nothing more without another read.
    NeedMore,
}

/// The body's decoder: what is left of it, and where in the chunked framing it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    /// After the last chunk: trailer bytes seen so far.
    Trailers(usize),
    UntilClose,
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::ChunkSize,
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    /// Take the next piece of body out of `buf`. Data is split off the buffer, not
    /// copied; framing bytes are consumed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match *self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(_) | Decoder::ChunkData(_) if buf.is_empty() => return Ok(Decoded::NeedMore),
                Decoder::Length(left) => {
                    let n = take_len(left, buf.len());
                    let data = buf.split_to(n).freeze();
                    *self = if left == n as u64 { Decoder::Done } else { Decoder::Length(left - n as u64) };
                    return Ok(Decoded::Data(data));
                }
                Decoder::ChunkData(left) => {
                    let n = take_len(left, buf.len());
                    let data = buf.split_to(n).freeze();
                    *self = if left == n as u64 { Decoder::ChunkEnd } else { Decoder::ChunkData(left - n as u64) };
                    return Ok(Decoded::Data(data));
                }
                Decoder::ChunkSize => {
                    let Some(line) = line_end(buf, MAX_CHUNK_LINE, ProtocolError::ChunkSize)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&buf[..line])?;
                    let _ = buf.split_to(line + 2);
                    *self = if size == 0 { Decoder::Trailers(0) } else { Decoder::ChunkData(size) };
                }
                Decoder::ChunkEnd => {
                    if buf.len() < 2 {
                        return if buf.first().is_some_and(|&b| b != b'\r') {
                            Err(ProtocolError::ChunkEnd)
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::ChunkEnd);
                    }
                    let _ = buf.split_to(2);
                    *self = Decoder::ChunkSize;
                }
                Decoder::Trailers(seen) => {
                    let Some(line) = line_end(buf, MAX_TRAILERS.saturating_sub(seen), ProtocolError::TrailersTooLarge)?
                    else {
                        return Ok(Decoded::NeedMore);
                    };
                    let _ = buf.split_to(line + 2);
                    *self = if line == 0 { Decoder::Done } else { Decoder::Trailers(seen + line + 2) };
                }
                Decoder::UntilClose if buf.is_empty() => return Ok(Decoded::NeedMore),
                Decoder::UntilClose => return Ok(Decoded::Data(buf.split().freeze())),
            }
        }
    }

    /// The body is complete: nothing more will be decoded.
    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// The body's bytes still to come, when its length is known.
    pub fn remaining(&self) -> Option<u64> {
        match *self {
            Decoder::Length(n) => Some(n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }
}

fn take_len(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |left| left.min(available))
}

/// Where the CRLF ending the line at the start of `buf` is, if it has arrived within
/// `max` bytes.
fn line_end(buf: &[u8], max: usize, too_long: ProtocolError) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(ProtocolError::ChunkSize),
        Some(i) if window[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(ProtocolError::ChunkSize),
        None if window.len() > max => Err(too_long),
        None => Ok(None),
    }
}

/// A chunk size line: hex digits, then optional whitespace and extensions (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, ProtocolError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(ProtocolError::ChunkSize);
    }
    match &line[digits..] {
        [] => {}
        [b' ' | b'\t' | b';', ..] => {
            if trim(&line[digits..]).first().is_some_and(|&b| b != b';') {
                return Err(ProtocolError::ChunkSize);
            }
        }
        _ => return Err(ProtocolError::ChunkSize),
    }
    Ok(line[..digits].iter().fold(0u64, |n, &d| n * 16 + u64::from(hex_value(d))))
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &[u8], _: StatusCode) -> bool {
        true
    }

    fn head(text: &str) -> Result<Option<(ReplyHead, usize)>, ProtocolError> {
        parse_head(text.as_bytes(), &Method::POST, all)
    }

    #[test]
    fn a_request_head_is_written_with_its_length() {
        let mut out = Vec::new();
        write_head(&mut out, &Method::POST, "/base", "/v1/chat/completions?x=1", b"host: up:8000\r\n");
        write_header(&mut out, b"x-request-id", b"abc");
        end_head(&mut out, &Method::POST, 17);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /base/v1/chat/completions?x=1 HTTP/1.1\r\nhost: up:8000\r\nx-request-id: abc\r\ncontent-length: 17\r\n\r\n"
        );
        let mut get = Vec::new();
        end_head(&mut get, &Method::GET, 0);
        assert_eq!(get, b"\r\n");
        let mut post = Vec::new();
        end_head(&mut post, &Method::POST, 0);
        assert_eq!(post, b"content-length: 0\r\n\r\n");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Framing::Length(5), true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", Framing::Length(5), true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n", Framing::Chunked, true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Framing::Chunked, true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", Framing::UntilClose, false),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            ("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n", Framing::Empty, true),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive, Close\r\n\r\n",
                Framing::Length(5),
                false,
            ),
            ("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n", Framing::Length(5), false),
        ];
        for (text, framing, keep_alive) in cases {
            let (reply, len) = head(text).unwrap().unwrap();
            assert_eq!((reply.framing, reply.keep_alive, len), (framing, keep_alive, text.len()), "{text:?}");
        }
        let (reply, _) =
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", &Method::HEAD, all).unwrap().unwrap();
        assert_eq!(reply.framing, Framing::Empty);
    }

    #[test]
    fn interim_replies_are_skipped_and_only_kept_headers_copied() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nSet-Cookie: a=1\r\n\
                    content-length: 0\r\n\r\nnext";
        let keep = |name: &[u8], status: StatusCode| {
            status == StatusCode::TOO_MANY_REQUESTS && name.eq_ignore_ascii_case(b"retry-after")
        };
        let (reply, len) = parse_head(text.as_bytes(), &Method::POST, keep).unwrap().unwrap();
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(len, text.len() - 4);
        assert_eq!(reply.headers.len(), 1);
        assert_eq!(reply.headers["retry-after"], "3");
    }

    #[test]
    fn bad_heads_are_refused() {
        assert_eq!(head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n").unwrap().map(|h| h.1), None);
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"),
            Err(ProtocolError::ContentLength)
        ));
        assert!(matches!(head("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"), Err(ProtocolError::ContentLength)));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n"),
            Err(ProtocolError::ContentLength)
        ));
        assert!(matches!(head("HTTP/1.1 101 Switching\r\n\r\n"), Err(ProtocolError::Upgrade)));
        assert!(matches!(head("SSH-2.0-OpenSSH\r\n\r\n"), Err(ProtocolError::Head(_))));
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(matches!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), Err(ProtocolError::HeadTooLarge)));
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(head(&long), Err(ProtocolError::HeadTooLarge)));
    }

    /// Everything `decoder` gives for `wire` fed `step` bytes at a time.
    fn decode_all(framing: Framing, wire: &[u8], step: usize) -> (Vec<u8>, Result<bool, ProtocolError>) {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(data)) => out.extend_from_slice(&data),
                Ok(Decoded::End) => return (out, Ok(buf.is_empty() && fed == wire.len())),
                Ok(Decoded::NeedMore) if fed == wire.len() => return (out, Ok(false)),
                Ok(Decoded::NeedMore) => {
                    let next = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_however_they_arrive() {
        let wire = b"5\r\nhello\r\n1;name=value\r\n \r\n10 \r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            let (out, done) = decode_all(Framing::Chunked, wire, step);
            assert_eq!(out, b"hello 0123456789abcdef", "step {step}");
            assert_eq!(done, Ok(true), "step {step}");
        }
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (out, done) = decode_all(Framing::Length(5), b"hello", 2);
        assert_eq!((out.as_slice(), done), (&b"hello"[..], Ok(true)));
        let mut decoder = Decoder::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Data(Bytes::from_static(b"abc"))));
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
        assert_eq!(&buf[..], b"def");
    }

    #[test]
    fn broken_chunks_are_errors_not_data() {
        for (wire, error) in [
            (&b"zz\r\n"[..], ProtocolError::ChunkSize),
            (b"5\nhello", ProtocolError::ChunkSize),
            (b"5\r\nhelloX\r\n", ProtocolError::ChunkEnd),
            (b"1000000000000000\r\n", ProtocolError::ChunkSize),
            (b"5 x\r\nhello\r\n", ProtocolError::ChunkSize),
        ] {
            assert_eq!(decode_all(Framing::Chunked, wire, 64).1, Err(error), "{:?}", String::from_utf8_lossy(wire));
        }
        let endless = vec![b'1'; 2 * MAX_CHUNK_LINE];
        assert_eq!(decode_all(Framing::Chunked, &endless, 100).1, Err(ProtocolError::ChunkSize));
        let mut trailers = b"0\r\n".to_vec();
        trailers.extend(std::iter::repeat_n(b"x-t: 1\r\n".as_slice(), 4000).flatten());
        assert_eq!(decode_all(Framing::Chunked, &trailers, 500).1, Err(ProtocolError::TrailersTooLarge));
    }

    #[test]
    fn an_until_close_body_is_passed_as_it_comes() {
        let (out, done) = decode_all(Framing::UntilClose, b"anything at all", 4);
        assert_eq!(out, b"anything at all");
        assert_eq!(done, Ok(false));
    }
}
