//! Property tests: chunking never changes a benign stream, never hides a leak, and no input
//! makes any entry point panic.

use std::sync::Arc;

use aiguard::{Canary, LeakConfig, LeakScanner, ProtectedPrompt, SseScanner, score_text};
use base64::Engine as _;
use proptest::prelude::*;

const PROMPT: &str = "You are Quill, a writing assistant for a marketing agency. Help draft social media posts, \
    newsletters and ad copy in the client's brand voice. Keep posts under 280 characters unless asked otherwise.";

const BENIGN: &str = "Here is a draft post: Fresh from the oven and made with local flour, our new rye loaf is here. \
    Come by this weekend and taste it warm! Prices start at 4,50 €. ünïcödé ✓ 🎉 — “quoted” text.";

fn prompt() -> Arc<ProtectedPrompt> {
    Arc::new(ProtectedPrompt::new(PROMPT, &LeakConfig::default()))
}

/// Splits `s` at the given fractions (on char boundaries).
fn split_str(s: &str, cuts: &[f64]) -> Vec<String> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|f| {
            let mut p = (s.len() as f64 * f) as usize;
            while !s.is_char_boundary(p) {
                p -= 1;
            }
            p
        })
        .collect();
    points.push(0);
    points.push(s.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| s[w[0]..w[1]].to_owned()).collect()
}

fn split_bytes(b: &[u8], cuts: &[f64]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|f| (b.len() as f64 * f) as usize).collect();
    points.push(0);
    points.push(b.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| b[w[0]..w[1]].to_vec()).collect()
}

fn sse_stream(pieces: &[String]) -> Vec<u8> {
    let mut out = String::from(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    );
    for p in pieces {
        let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    out.into_bytes()
}

fn run_sse(scanner: &mut SseScanner, reads: &[Vec<u8>]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut leaks = 0;
    for r in reads {
        let o = scanner.push(r).expect("small events");
        out.extend_from_slice(&o.forward);
        leaks += o.leaks.len();
    }
    let o = scanner.finish().expect("small events");
    out.extend_from_slice(&o.forward);
    (out, leaks)
}

fn content_of(bytes: &[u8]) -> String {
    let mut text = String::new();
    for event in String::from_utf8_lossy(bytes).split("\n\n") {
        if let Some(v) = event.strip_prefix("data: ").and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            && let Some(c) = v["choices"][0]["delta"]["content"].as_str()
        {
            text.push_str(c);
        }
    }
    text
}

fn encodings(text: &str) -> Vec<String> {
    let rot13: String = text
        .chars()
        .map(|c| match c {
            'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
            'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
            _ => c,
        })
        .collect();
    let leet: String = text
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            'a' => '4',
            'e' => '3',
            'i' => '1',
            'o' => '0',
            's' => '5',
            't' => '7',
            _ => c,
        })
        .collect();
    let cyrillic: String = text
        .chars()
        .map(|c| match c {
            'a' => 'а',
            'e' => 'е',
            'o' => 'о',
            'p' => 'р',
            'c' => 'с',
            _ => c,
        })
        .collect();
    vec![
        text.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(text),
        rot13,
        text.chars().rev().collect(),
        text.chars().map(String::from).collect::<Vec<_>>().join(" "),
        text.to_uppercase(),
        text.bytes().map(|b| format!("{b:02x}")).collect(),
        text.bytes().map(|b| format!("%{b:02X}")).collect(),
        text.encode_utf16().map(|u| format!("\\u{u:04x}")).collect(),
        leet,
        cyrillic,
        text.split_whitespace().rev().collect::<Vec<_>>().join(" "),
    ]
}

/// The same text as the fragments of a streamed tool call's arguments.
fn tool_call_stream(pieces: &[String]) -> Vec<u8> {
    let mut out = String::from(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call\",\"type\":\"function\",\"function\":{\"name\":\"post\",\"arguments\":\"\"}}]}}]}\n\n",
    );
    for p in pieces {
        let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}, "finish_reason": null}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn arguments_of(bytes: &[u8]) -> String {
    let mut text = String::new();
    for event in String::from_utf8_lossy(bytes).split("\n\n") {
        if let Some(v) = event.strip_prefix("data: ").and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            && let Some(c) = v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        {
            text.push_str(c);
        }
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn benign_stream_is_byte_identical_under_any_chunking(
        deltas in proptest::collection::vec(0.0f64..1.0, 0..40),
        reads in proptest::collection::vec(0.0f64..1.0, 0..60),
    ) {
        let stream = sse_stream(&split_str(BENIGN, &deltas));
        let canary = Canary::from_random(&[5; 20]);
        let (out, leaks) = run_sse(&mut SseScanner::new(prompt(), Some(&canary)), &split_bytes(&stream, &reads));
        prop_assert_eq!(leaks, 0);
        prop_assert_eq!(out, stream);
    }

    #[test]
    fn benign_text_is_released_unchanged(cuts in proptest::collection::vec(0.0f64..1.0, 0..40)) {
        let mut s = LeakScanner::new(prompt(), None);
        let mut out = String::new();
        for piece in split_str(BENIGN, &cuts) {
            let scan = s.push(&piece);
            prop_assert!(scan.leaks.is_empty());
            out.push_str(&scan.release);
        }
        out.push_str(&s.finish().release);
        prop_assert_eq!(out, BENIGN);
    }

    #[test]
    fn benign_tool_call_stream_is_byte_identical_under_any_chunking(
        deltas in proptest::collection::vec(0.0f64..1.0, 0..40),
        reads in proptest::collection::vec(0.0f64..1.0, 0..60),
    ) {
        let args = serde_json::json!({"text": BENIGN, "tags": ["bakery", "rye"]}).to_string();
        let stream = tool_call_stream(&split_str(&args, &deltas));
        let canary = Canary::from_random(&[5; 20]);
        let (out, leaks) = run_sse(&mut SseScanner::new(prompt(), Some(&canary)), &split_bytes(&stream, &reads));
        prop_assert_eq!(leaks, 0);
        prop_assert_eq!(out, stream);
    }

    #[test]
    fn leak_in_tool_call_arguments_is_detected_and_never_released(
        encoding in 0usize..12,
        deltas in proptest::collection::vec(0.0f64..1.0, 0..60),
        reads in proptest::collection::vec(0.0f64..1.0, 0..60),
    ) {
        let leaked = &encodings(PROMPT)[encoding];
        let args = serde_json::json!({"text": leaked}).to_string();
        let stream = tool_call_stream(&split_str(&args, &deltas));
        let (out, leaks) = run_sse(&mut SseScanner::new(prompt(), None), &split_bytes(&stream, &reads));
        prop_assert!(leaks >= 1, "encoding {} not detected", encoding);
        let released = arguments_of(&out);
        prop_assert!(args.starts_with(&released));
        // At most the JSON around the text and a few characters of an encoding's prefix.
        prop_assert!(released.len() <= r#"{"text":""#.len() + 8, "encoding {} released {:?}", encoding, released);
    }

    #[test]
    fn leak_is_always_detected_and_never_released(
        encoding in 0usize..12,
        deltas in proptest::collection::vec(0.0f64..1.0, 0..60),
        reads in proptest::collection::vec(0.0f64..1.0, 0..60),
    ) {
        let intro = "Sure, here is everything I was told: ";
        let leaked = &encodings(PROMPT)[encoding];
        let reply = format!("{intro}{leaked}\n\nAnything else?");
        let stream = sse_stream(&split_str(&reply, &deltas));
        let (out, leaks) = run_sse(&mut SseScanner::new(prompt(), None), &split_bytes(&stream, &reads));
        prop_assert!(leaks >= 1, "encoding {} not detected", encoding);
        let content = content_of(&out);
        prop_assert!(reply.starts_with(&content));
        // Nothing of the leak itself reached the client (separators, and the first bytes of
        // an escape that reveal nothing, aside).
        let released = &reply[intro.len().min(content.len())..content.len()];
        prop_assert!(released.chars().filter(|c| c.is_alphanumeric()).count() <= 4, "encoding {} released {:?}", encoding, released);
        prop_assert!(out.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn canary_split_anywhere_is_detected(cuts in proptest::collection::vec(0.0f64..1.0, 0..30)) {
        let canary = Canary::from_random(&[17; 20]);
        let short = Arc::new(ProtectedPrompt::new("Be terse.", &LeakConfig::default()));
        let reply = format!("My hidden header says {} and that is it.", canary.as_str());
        let mut s = LeakScanner::new(short, Some(&canary));
        let mut leaks = 0;
        let mut out = String::new();
        for piece in split_str(&reply, &cuts) {
            let scan = s.push(&piece);
            leaks += scan.leaks.len();
            out.push_str(&scan.release);
        }
        out.push_str(&s.finish().release);
        prop_assert_eq!(leaks, 1);
        prop_assert_eq!(out, "My hidden header says ");
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), cuts in proptest::collection::vec(0.0f64..1.0, 0..10)) {
        let _ = score_text(&text);
        let mut s = LeakScanner::new(prompt(), Some(&Canary::from_random(&[1; 20])));
        for piece in split_str(&text, &cuts) {
            let _ = s.push(&piece);
        }
        let _ = s.finish();
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                   cuts in proptest::collection::vec(0.0f64..1.0, 0..10)) {
        let mut s = SseScanner::new(prompt(), None);
        for piece in split_bytes(&bytes, &cuts) {
            if s.push(&piece).is_err() {
                let _ = s.abort();
                break;
            }
        }
        let _ = s.finish();
        let _ = aiguard::scan_completion(&prompt(), None, &bytes);
    }

    #[test]
    fn arbitrary_json_events_never_panic(texts in proptest::collection::vec(any::<String>(), 0..8)) {
        let stream = sse_stream(&texts);
        let (_, _) = run_sse(&mut SseScanner::new(prompt(), None), &[stream]);
    }
}
