//! The PROXY protocol (HAProxy, versions 1 and 2): the header a load balancer writes at
//! the start of a connection to say which client it forwards. [`parse`] is a pure function
//! over the bytes seen so far; [`read_header`] applies it to an accepted socket without
//! consuming anything beyond the header. Only call it for peers in `trusted_proxies`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;
/// The largest v2 header we accept (addresses plus generous TLVs).
const V2_MAX: usize = 16 + 1024;

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes the header occupies at the start of the stream.
    pub consumed: usize,
    /// The client; `None` for a health check (`LOCAL`, `UNKNOWN`, `AF_UNSPEC`): use the peer.
    pub source: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("need more bytes")]
    Incomplete,
    #[error("not a PROXY protocol header")]
    Invalid,
}

/// Parses a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if buf.len() < V2_SIG.len() {
        return if V2_SIG.starts_with(buf) || b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
            Err(ProxyError::Incomplete)
        } else {
            Err(ProxyError::Invalid)
        };
    }
    if buf.starts_with(&V2_SIG) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Err(ProxyError::Invalid)
    }
}

fn parse_v1(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Err(ProxyError::Invalid) } else { Err(ProxyError::Incomplete) };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Invalid)?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let consumed = end + 2;
    let source = match parts.next() {
        Some("UNKNOWN") => None,
        Some(proto @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else { return Err(ProxyError::Invalid) };
            let src: IpAddr = src.parse().map_err(|_| ProxyError::Invalid)?;
            let dst: IpAddr = dst.parse().map_err(|_| ProxyError::Invalid)?;
            if src.is_ipv4() != (proto == "TCP4") || dst.is_ipv4() != (proto == "TCP4") {
                return Err(ProxyError::Invalid);
            }
            let port = |p: &str| {
                if p.is_empty() || p.len() > 5 || (p.len() > 1 && p.starts_with('0')) {
                    return Err(ProxyError::Invalid);
                }
                p.parse::<u16>().map_err(|_| ProxyError::Invalid)
            };
            let sport = port(sport)?;
            port(dport)?;
            Some(SocketAddr::new(src, sport))
        }
        _ => return Err(ProxyError::Invalid),
    };
    Ok(ProxyHeader { consumed, source })
}

fn parse_v2(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if buf.len() < 16 {
        return Err(ProxyError::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(ProxyError::Invalid);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let consumed = 16 + len;
    if consumed > V2_MAX {
        return Err(ProxyError::Invalid);
    }
    if buf.len() < consumed {
        return Err(ProxyError::Incomplete);
    }
    let body = &buf[16..consumed];
    if command == 0 {
        // LOCAL: the proxy's own connection (a health check).
        return Ok(ProxyHeader { consumed, source: None });
    }
    let source = match buf[13] >> 4 {
        0 => None,
        1 => {
            let b: &[u8; 12] = body.get(..12).and_then(|b| b.try_into().ok()).ok_or(ProxyError::Invalid)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([b[8], b[9]])))
        }
        2 => {
            let b: &[u8; 36] = body.get(..36).and_then(|b| b.try_into().ok()).ok_or(ProxyError::Invalid)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([b[32], b[33]])))
        }
        // AF_UNIX: no address to speak of.
        3 => None,
        _ => return Err(ProxyError::Invalid),
    };
    Ok(ProxyHeader { consumed, source })
}

/// Reads the PROXY header from a freshly accepted connection (peeking, so the HTTP bytes
/// behind it stay in the socket) within `timeout`. Returns the client address it names,
/// or `None` when it names none (then use the peer). An error means: close the connection.
pub async fn read_header(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<Option<SocketAddr>> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let work = async {
        let mut buf = vec![0u8; V2_MAX];
        loop {
            let seen = stream.peek(&mut buf).await?;
            if seen == 0 {
                return Err(invalid("connection closed before the PROXY header"));
            }
            match parse(&buf[..seen]) {
                Ok(header) => {
                    let mut skip = vec![0u8; header.consumed];
                    stream.read_exact(&mut skip).await?;
                    return Ok(header.source);
                }
                Err(ProxyError::Invalid) => return Err(invalid("not a PROXY protocol header")),
                Err(ProxyError::Incomplete) if seen == buf.len() => return Err(invalid("PROXY header too long")),
                Err(ProxyError::Incomplete) => {
                    // Peek returns what is buffered; wait a moment for more.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| invalid("no PROXY header in time"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIG.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v1_lines() {
        let h = parse(b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n").unwrap();
        assert_eq!(h.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(h.consumed, 45);
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().source, None);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 198.51.100.1 5 4"), Err(ProxyError::Incomplete));
        assert_eq!(parse(b"PROXY TCP4 2001:db8::1 198.51.100.1 5 4\r\n"), Err(ProxyError::Invalid));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 198.51.100.1 05 4\r\n"), Err(ProxyError::Invalid));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Invalid));
        assert_eq!(parse(b"PRO"), Err(ProxyError::Incomplete));
        assert_eq!(parse(&[b'P'; 200]), Err(ProxyError::Invalid));
    }

    #[test]
    fn v2_headers() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 1];
        body.extend_from_slice(&8080u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV, ignored
        let header = v2(1, 0x11, &body);
        let mut stream = header.clone();
        stream.extend_from_slice(b"GET /");
        let h = parse(&stream).unwrap();
        assert_eq!(h.consumed, header.len());
        assert_eq!(h.source, Some("192.0.2.1:8080".parse().unwrap()));
        let mut six = vec![0u8; 36];
        six[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        six[32..34].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(parse(&v2(1, 0x21, &six)).unwrap().source, Some("[2001:db8::7]:9".parse().unwrap()));
        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap().source, None, "LOCAL");
        assert_eq!(parse(&header[..20]), Err(ProxyError::Incomplete));
        assert_eq!(parse(&v2(1, 0x11, &[1, 2, 3])), Err(ProxyError::Invalid), "short address block");
        assert_eq!(parse(&v2(5, 0x11, &body)), Err(ProxyError::Invalid), "unknown command");
    }

    proptest! {
        #[test]
        fn never_panics_and_never_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(h) = parse(&bytes) {
                prop_assert!(h.consumed <= bytes.len());
            }
        }

        #[test]
        fn v2_prefixes_are_incomplete_then_complete(port in any::<u16>(), a in any::<[u8; 4]>(), cut in 0usize..28) {
            let mut body = a.to_vec();
            body.extend_from_slice(&[0; 4]);
            body.extend_from_slice(&port.to_be_bytes());
            body.extend_from_slice(&[0; 2]);
            let full = v2(1, 0x11, &body);
            prop_assert_eq!(parse(&full[..cut]), Err(ProxyError::Incomplete));
            let h = parse(&full).unwrap();
            prop_assert_eq!(h.source, Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)));
        }

        #[test]
        fn v1_round_trips(a in any::<[u8; 4]>(), sport in any::<u16>(), dport in any::<u16>()) {
            let src = Ipv4Addr::from(a);
            let line = format!("PROXY TCP4 {src} 10.0.0.1 {sport} {dport}\r\n");
            let h = parse(line.as_bytes()).unwrap();
            prop_assert_eq!(h.consumed, line.len());
            prop_assert_eq!(h.source, Some(SocketAddr::new(IpAddr::V4(src), sport)));
        }
    }
}
