//! HTTP/1.1 on the wire for the requests the front serves itself: a head it has read
//! becomes an `http::Request` (its header values slices of the bytes read, not
//! copies), and a response becomes a status line, header lines and a body framed by
//! length or in chunks, as hyper would write them.

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use bytes::Bytes;
use http_body::SizeHint;

/// Header lines a head may have to be answered or served by the front; one with more
/// goes to hyper, whose own limits apply.
pub(super) const MAX_HEADERS: usize = 64;

/// The request whose head is `head` (complete, as `httparse` parsed it once already) and
/// whose body is `body`. `None` for what `http` does not accept and `httparse` did (a
/// target with characters a URI may not hold): hyper is left to answer it.
pub(super) fn request(head: &Bytes, body: &Bytes) -> Option<Request<Body>> {
    let mut table = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, &mut table) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri = Uri::from_maybe_shared(head.slice_ref(parsed.path?.as_bytes())).ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(Body::from(body.clone()));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

/// How a response's body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body bytes: a HEAD request, or a status that has none.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// True when the response's own `connection` header closes the connection.
pub(super) fn closes(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")))
}

/// Append the response head to `out` and say how its body follows. A length the
/// response declares is kept; else a body of known size gets `content-length`, any
/// other is chunked. `close`: the connection ends after this response, and says so.
pub(super) fn head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    size: &SizeHint,
    head_only: bool,
    close: bool,
    date: &[u8],
) -> Framing {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut length, mut chunked, mut dated, mut says_close) = (None, false, false, false);
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            length = std::str::from_utf8(value.as_bytes()).ok().and_then(|v| v.trim().parse::<u64>().ok());
        } else if name == TRANSFER_ENCODING {
            chunked = true;
        } else if name == DATE {
            dated = true;
        } else if name == CONNECTION {
            says_close = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = size.exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else if head_only {
        Framing::None
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if close && !says_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if head_only { Framing::None } else { framing }
}

/// Append one piece of the body as `framing` wants it. `left`: the bytes a declared
/// length still allows; `false` when this piece would overrun it.
pub(super) fn data(out: &mut Vec<u8>, framing: Framing, left: &mut u64, data: &[u8]) -> bool {
    if data.is_empty() {
        return true;
    }
    match framing {
        Framing::None => true,
        Framing::Length(_) => {
            let Some(rest) = left.checked_sub(data.len() as u64) else { return false };
            *left = rest;
            out.extend_from_slice(data);
            true
        }
        Framing::Chunked => {
            let mut hex = [0u8; 16];
            let mut n = data.len();
            let mut i = hex.len();
            loop {
                i -= 1;
                hex[i] = b"0123456789abcdef"[n & 15];
                n >>= 4;
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(&hex[i..]);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            true
        }
    }
}

/// The end of the body: the last chunk, or whether a declared length was met.
pub(super) fn end(out: &mut Vec<u8>, framing: Framing, left: u64) -> bool {
    match framing {
        Framing::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            true
        }
        Framing::Length(_) => left == 0,
        Framing::None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_head_becomes_a_request_whose_values_share_the_bytes_read() {
        let head = Bytes::from_static(
            b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: a\r\nX-Custom: v\r\nx-custom: w\r\n\r\n",
        );
        let request = request(&head, &Bytes::from_static(b"{}")).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), "/v1/chat/completions");
        assert_eq!(request.uri().query(), Some("x=1"));
        let values: Vec<_> = request.headers().get_all("x-custom").iter().collect();
        assert_eq!(values, ["v", "w"]);
        let host = request.headers()["host"].as_bytes().as_ptr();
        assert!(head.as_ptr_range().contains(&host), "a slice of the head, not a copy");
        assert_eq!(request.into_body().collect().await.unwrap().to_bytes(), "{}");
        assert!(super::request(&Bytes::from_static(b"GET /caf\xff HTTP/1.1\r\n\r\n"), &Bytes::new()).is_none());
    }

    fn written(
        status: StatusCode,
        headers: &[(&str, &str)],
        size: SizeHint,
        head_only: bool,
        close: bool,
    ) -> (String, Framing) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let mut out = Vec::new();
        let framing = head(&mut out, status, &map, &size, head_only, close, b"Mon, 07 Dec 2026 22:00:00 GMT");
        (String::from_utf8(out).unwrap(), framing)
    }

    #[test]
    fn a_head_is_framed_by_length_or_in_chunks() {
        let (text, framing) =
            written(StatusCode::OK, &[("content-type", "application/json")], SizeHint::with_exact(12), false, false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: Mon, 07 Dec 2026 22:00:00 GMT\r\ncontent-length: 12\r\n\r\n"
        );
        assert_eq!(framing, Framing::Length(12));
        let (text, framing) = written(StatusCode::OK, &[], SizeHint::new(), false, true);
        assert!(text.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"), "{text}");
        assert_eq!(framing, Framing::Chunked);
        let (text, framing) = written(StatusCode::OK, &[("content-length", "3")], SizeHint::new(), true, false);
        assert!(text.contains("content-length: 3\r\n") && !text.contains("chunked"), "{text}");
        assert_eq!(framing, Framing::None, "HEAD: the length, no body");
        let (text, framing) =
            written(StatusCode::NO_CONTENT, &[("connection", "close")], SizeHint::with_exact(0), false, true);
        assert_eq!(text.matches("connection").count(), 1, "{text}");
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, Framing::None);
        let (text, _) = written(StatusCode::from_u16(599).unwrap(), &[], SizeHint::with_exact(0), false, false);
        assert!(text.starts_with("HTTP/1.1 599 \r\n"), "{text}");
    }

    #[test]
    fn chunks_and_lengths_are_kept() {
        let mut out = Vec::new();
        let mut left = 0;
        assert!(data(&mut out, Framing::Chunked, &mut left, &[b'x'; 300]));
        assert!(data(&mut out, Framing::Chunked, &mut left, b""));
        assert!(end(&mut out, Framing::Chunked, left));
        assert_eq!(out, [&b"12c\r\n"[..], &[b'x'; 300], b"\r\n0\r\n\r\n"].concat());
        let mut out = Vec::new();
        let mut left = 4;
        assert!(data(&mut out, Framing::Length(4), &mut left, b"abc"));
        assert!(!end(&mut out, Framing::Length(4), left), "one byte short");
        assert!(!data(&mut out, Framing::Length(4), &mut left, b"de"), "one byte over");
        assert!(closes(&{
            let mut h = HeaderMap::new();
            h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Close"));
            h
        }));
    }
}
