//! The PROXY protocol parser (`gateway::proxy_protocol::parse`) over the first bytes of a
//! connection from a trusted load balancer.
#![no_main]

use gateway::proxy_protocol::{ProxyError, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse(data) else { return };
    // A header lies inside what was read, and is not empty.
    assert!(header.consumed > 0 && header.consumed <= data.len(), "{header:?} from {} bytes", data.len());
    let own = &data[..header.consumed];
    // The bytes after the header (the HTTP request) change nothing...
    assert_eq!(parse(own), Ok(header));
    let mut more = own.to_vec();
    more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(parse(&more), Ok(header));
    // ...and every strict prefix of it asks for more bytes rather than failing or passing.
    for cut in 0..header.consumed {
        assert_eq!(parse(&own[..cut]), Err(ProxyError::Incomplete), "prefix of {cut} bytes");
    }
});
