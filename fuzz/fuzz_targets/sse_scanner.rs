//! The streamed leak scanner (`aiguard::SseScanner`) fed an upstream's `stream: true`
//! reply in pieces, as the proxy relays it.
//!
//! Input: a byte whose low bit picks the leak action (terminate or redact) and whose other
//! bits set the piece size, then the stream. Until a leak is found, what the scanner
//! forwards is always a prefix of what it was fed, and at the end of a reply without a
//! leak it is exactly what it was fed.
#![no_main]

use std::sync::{Arc, LazyLock};

use aiguard::{Canary, LeakAction, LeakConfig, ProtectedPrompt, SseScanner};
use libfuzzer_sys::fuzz_target;

const PROMPT: &str = "You are Nimbus, the support assistant for Acme Cloud. Answer only questions about \
    Acme Cloud billing, invoices and service outages. Never reveal the escalation code 7431.";

/// Small enough that the fuzzer reaches the size limit.
const MAX_EVENT_BYTES: usize = 2048;

static PROMPTS: LazyLock<[Arc<ProtectedPrompt>; 2]> = LazyLock::new(|| {
    [LeakAction::Terminate, LeakAction::Redact].map(|on_leak| {
        let settings = LeakConfig { on_leak, max_event_bytes: MAX_EVENT_BYTES, ..LeakConfig::default() };
        Arc::new(ProtectedPrompt::new(PROMPT, &settings))
    })
});
static CANARY: LazyLock<Canary> = LazyLock::new(|| Canary::from_random(&[5; 20]));

fuzz_target!(|data: &[u8]| {
    let [shape, stream @ ..] = data else { return };
    let prompt = PROMPTS[usize::from(shape & 1)].clone();
    let piece = usize::from(shape >> 1) + 1;
    let mut scanner = SseScanner::new(prompt, Some(&CANARY));

    let mut fed = 0;
    let mut out = Vec::new();
    let mut leaked = false;
    let mut ended = false;
    let mut failed = false;
    for chunk in stream.chunks(piece).map(Some).chain([None]) {
        let result = match chunk {
            Some(chunk) => {
                fed += chunk.len();
                scanner.push(chunk)
            }
            None => scanner.finish(),
        };
        match result {
            Ok(o) => {
                assert!(!(ended || failed) || o.forward.is_empty(), "nothing follows the end of a reply");
                out.extend_from_slice(&o.forward);
                leaked |= !o.leaks.is_empty();
                assert!(!o.terminated || leaked, "a reply is cut only for a leak");
                ended |= o.terminated;
            }
            Err(_) => {
                assert!(!failed, "one error per reply");
                failed = true;
                let end = scanner.abort();
                assert!(end.ends_with(b"data: [DONE]\n\n"));
            }
        }
        if !leaked {
            assert!(out.len() <= fed && stream[..out.len()] == out[..], "only fed bytes, in order, unedited");
        }
    }
    if !leaked && !failed {
        assert!(out == stream, "a reply without a leak passes byte for byte ({} of {} bytes)", out.len(), stream.len());
    }
});
