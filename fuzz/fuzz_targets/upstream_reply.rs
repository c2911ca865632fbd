//! A model server's reply as the proxy's own HTTP/1.1 client reads it
//! (`gateway::upstream::h1`): the head, then the body's framing. A model server is
//! trusted to serve, not to be well-formed.
#![no_main]

use bytes::BytesMut;
use gateway::upstream::h1::{Decoded, Decoder, MAX_HEAD, ProtocolError, parse_head};
use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;

/// The body bytes and how decoding ended, fed `step` bytes a read.
fn decode(decoder: Decoder, wire: &[u8], step: usize) -> (Vec<u8>, Result<bool, ProtocolError>) {
    let mut decoder = decoder;
    let (mut buf, mut out, mut fed) = (BytesMut::new(), Vec::new(), 0);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(data)) => {
                assert!(!data.is_empty(), "an empty data frame");
                out.extend_from_slice(&data);
            }
            Ok(Decoded::End) => return (out, Ok(true)),
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

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let all = |_: &[u8], _: StatusCode| true;
    let Ok(Some((head, len))) = parse_head(data, &Method::POST, all) else { return };
    assert!(len > 0 && len <= data.len() && len <= MAX_HEAD, "head of {len} bytes from {}", data.len());
    // Every strict prefix of a head asks for more bytes (or is refused), never parses
    // as another head.
    for cut in [len / 2, len - 1] {
        assert!(!matches!(parse_head(&data[..cut], &Method::POST, all), Ok(Some(_))), "prefix of {cut} bytes");
    }
    let body = &data[len..];
    let whole = decode(Decoder::new(head.framing), body, body.len().max(1));
    let pieces = decode(Decoder::new(head.framing), body, step);
    // However the bytes arrive, the same body comes out, and never more than was sent.
    assert_eq!(whole, pieces, "step {step}");
    assert!(whole.0.len() <= body.len());
});
