//! A chat or completions request body as the AI guard reads it: `aiguard::RequestText`
//! borrowed straight from the bytes, then scored (`score_texts`) and its last user turn
//! taken (`last_user_text`). Checked against the same reading through a
//! `serde_json::Value` (`score_request`), which builds the whole tree.
#![no_main]

use aiguard::{RequestText, score_request, score_texts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = serde_json::from_slice::<RequestText>(data);
    let tree = serde_json::from_slice::<serde_json::Value>(data);
    let Ok(text) = text else { return };
    // Lenient about types, never about syntax: what it reads is JSON. Three exceptions,
    // pinned in aiguard's `request.rs` tests: serde_json checks UTF-8 and the surrogate
    // pairs of `\u` escapes only in the strings it reads, and a `Value` cannot hold a
    // number beyond f64 (still valid JSON).
    let tree = match tree {
        Ok(tree) => tree,
        Err(e)
            if std::str::from_utf8(data).is_err()
                || e.to_string().starts_with("number out of range")
                // "lone leading surrogate in hex escape", "unexpected end of hex escape"
                || e.to_string().contains("hex escape") =>
        {
            return;
        }
        Err(e) => panic!("a body the guard reads is valid JSON: {e}"),
    };
    let score = score_texts(&text);
    assert_eq!(score, score_request(&tree), "both readings score alike");
    if let Some(last) = text.last_user_text() {
        assert!(holds(&tree, last), "{last:?} is a string of the body");
    }
});

/// Whether `value` has the string `text` somewhere inside.
fn holds(value: &serde_json::Value, text: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s == text,
        serde_json::Value::Array(items) => items.iter().any(|v| holds(v, text)),
        serde_json::Value::Object(map) => map.values().any(|v| holds(v, text)),
        _ => false,
    }
}
