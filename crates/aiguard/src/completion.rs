//! Leak scanning of a non-streamed reply (`stream: false`): the whole JSON body at once.

use std::sync::Arc;

use serde_json::Value;

use crate::canary::Canary;
use crate::config::LeakAction;
use crate::detector::Leak;
use crate::detector::{CanaryNeedles, Detector};
use crate::leak::{REDACTION_MARKER, render};
use crate::prompt::ProtectedPrompt;

/// The verdict on a non-streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// No leak: forward the original body untouched.
    Unchanged,
    /// Forward `body` instead: leaked text cut (terminate: `finish_reason` becomes
    /// `"content_filter"`) or replaced with `[redacted]`.
    Rewritten { body: Vec<u8>, leaks: Vec<Leak> },
}

/// The reply body could not be scanned; do not forward it.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reply body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// JSON pointers (relative to a choice) of every text a client receives in a
/// non-streamed reply, tool calls included.
fn text_paths(choice: &Value) -> Vec<String> {
    let mut paths: Vec<String> = [
        "/message/content",
        "/message/reasoning_content",
        "/message/reasoning",
        "/message/refusal",
        "/message/function_call/name",
        "/message/function_call/arguments",
        "/text",
    ]
    .map(str::to_owned)
    .into();
    let calls = choice.pointer("/message/tool_calls").and_then(Value::as_array).map_or(0, Vec::len);
    for i in 0..calls {
        paths.push(format!("/message/tool_calls/{i}/function/name"));
        paths.push(format!("/message/tool_calls/{i}/function/arguments"));
    }
    paths
}

/// The tokens of a choice's `logprobs`, concatenated: `content[].token` and
/// `refusal[].token` (chat) or `tokens[]` (completions).
fn logprob_text(choice: &Value) -> Option<String> {
    let lp = choice.get("logprobs")?;
    let mut text = String::new();
    for list in ["content", "refusal"] {
        for t in lp.get(list).and_then(Value::as_array).into_iter().flatten() {
            text.push_str(t.get("token").and_then(Value::as_str).unwrap_or_default());
        }
    }
    for t in lp.get("tokens").and_then(Value::as_array).into_iter().flatten() {
        text.push_str(t.as_str().unwrap_or_default());
    }
    (!text.is_empty()).then_some(text)
}

/// Scans every text of every choice of a chat or completions reply: `message.content`,
/// `reasoning_content` / `reasoning`, `refusal`, tool and function call names and
/// arguments, legacy `text`, and the tokens of `logprobs` (dropped whole on a leak).
pub fn scan_completion(
    prompt: &Arc<ProtectedPrompt>,
    canary: Option<&Canary>,
    body: &[u8],
) -> Result<Completion, ScanError> {
    let mut value: Value = serde_json::from_slice(body)?;
    let needles = canary.map(|c| Arc::new(CanaryNeedles::new(c)));
    let mut leaks = Vec::new();
    let Some(choices) = value.get_mut("choices").and_then(Value::as_array_mut) else {
        return Ok(Completion::Unchanged);
    };
    for (pos, choice) in choices.iter_mut().enumerate() {
        let index = choice.get("index").and_then(Value::as_u64).and_then(|i| u32::try_from(i).ok());
        let index = index.unwrap_or(pos as u32);
        let mut terminated = false;
        for path in text_paths(choice) {
            let Some(Value::String(text)) = choice.pointer_mut(&path) else {
                continue;
            };
            let mut det = Detector::new(prompt.clone(), needles.clone(), index);
            if path.ends_with("/arguments") {
                det = det.reading_json();
            }
            let before = leaks.len();
            det.feed(text, &mut leaks);
            det.finish();
            if leaks.len() == before {
                continue;
            }
            let marker = (det.action() == LeakAction::Redact).then_some(REDACTION_MARKER);
            let mut new = String::with_capacity(text.len());
            render(text, 0, det.regions(), marker, &mut new);
            *text = new;
            terminated |= det.is_tripped();
        }
        if let Some(tokens) = logprob_text(choice) {
            let mut det = Detector::new(prompt.clone(), needles.clone(), index);
            let before = leaks.len();
            det.feed(&tokens, &mut leaks);
            det.finish();
            if leaks.len() > before {
                choice["logprobs"] = Value::Null;
                terminated |= det.is_tripped();
            }
        }
        if terminated && let Some(obj) = choice.as_object_mut() {
            obj.insert("finish_reason".to_owned(), Value::from("content_filter"));
        }
    }
    if leaks.is_empty() {
        return Ok(Completion::Unchanged);
    }
    Ok(Completion::Rewritten { body: serde_json::to_vec(&value)?, leaks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeakConfig;
    use serde_json::json;

    const PROMPT: &str = "You are Nimbus, the support assistant for Acme Cloud. Answer only questions about \
        Acme Cloud billing, invoices and service outages. Never discuss competitors or internal pricing formulas.";

    fn prompt(action: LeakAction) -> Arc<ProtectedPrompt> {
        Arc::new(ProtectedPrompt::new(PROMPT, &LeakConfig { on_leak: action, ..LeakConfig::default() }))
    }

    #[test]
    fn benign_reply_is_unchanged() {
        let body =
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Your invoice is ready."}}]});
        let out = scan_completion(&prompt(LeakAction::Terminate), None, body.to_string().as_bytes()).expect("json");
        assert_eq!(out, Completion::Unchanged);
    }

    #[test]
    fn leaking_reply_is_cut_with_content_filter() {
        let body = json!({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant",
            "content": format!("My prompt: {PROMPT}")}, "finish_reason": "stop"}]});
        let out = scan_completion(&prompt(LeakAction::Terminate), None, body.to_string().as_bytes()).expect("json");
        let Completion::Rewritten { body, leaks } = out else { panic!("expected a rewrite") };
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["choices"][0]["message"]["content"], "My prompt: ");
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(v["id"], "x");
        assert_eq!(leaks.len(), 1);
    }

    #[test]
    fn redact_mode_keeps_the_rest() {
        let body =
            json!({"choices": [{"text": format!("My prompt: {PROMPT} And that is all I can share with you today.")}]});
        let out = scan_completion(&prompt(LeakAction::Redact), None, body.to_string().as_bytes()).expect("json");
        let Completion::Rewritten { body, .. } = out else { panic!("expected a rewrite") };
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["choices"][0]["text"], "My prompt: [redacted] And that is all I can share with you today.");
    }

    #[test]
    fn every_field_a_client_reads_is_scanned() {
        let leak = format!("Sure: {PROMPT}");
        let args = serde_json::to_string(&json!({"note": leak})).expect("json");
        let cases = [
            json!({"choices": [{"message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "save", "arguments": args}}]}}]}),
            json!({"choices": [{"message": {"role": "assistant", "function_call": {"name": "f", "arguments": args}}}]}),
            json!({"choices": [{"message": {"role": "assistant", "refusal": leak}}]}),
            json!({"choices": [{"message": {"role": "assistant", "reasoning_content": leak, "content": "ok"}}]}),
            json!({"choices": [{"message": {"role": "assistant", "content": "ok"},
                "logprobs": {"content": leak.split_inclusive(' ').map(|t| json!({"token": t, "logprob": -0.1})).collect::<Vec<_>>()}}]}),
            json!({"choices": [{"text": "ok", "logprobs": {"tokens": leak.split_inclusive(' ').collect::<Vec<_>>()}}]}),
        ];
        for body in cases {
            let out = scan_completion(&prompt(LeakAction::Terminate), None, body.to_string().as_bytes()).expect("json");
            let Completion::Rewritten { body: new, leaks } = out else { panic!("not caught: {body}") };
            assert!(!leaks.is_empty());
            let text = String::from_utf8_lossy(&new);
            assert!(!text.contains("Nimbus") && !text.contains("competitors"), "{text}");
            assert!(text.contains("content_filter"), "{text}");
        }
        let benign = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get_invoice", "arguments": "{\"month\": \"March\"}"}}]}}]});
        let out = scan_completion(&prompt(LeakAction::Terminate), None, benign.to_string().as_bytes()).expect("json");
        assert_eq!(out, Completion::Unchanged);
    }

    #[test]
    fn a_prompt_of_short_lines_recited_in_arguments_is_cut_where_it_starts() {
        let lines = crate::sse::tests::LINES;
        let prompt = Arc::new(ProtectedPrompt::new(lines, &LeakConfig::default()));
        let half: String = lines.chars().take(lines.len() / 2).collect();
        for recited in [lines, half.as_str()] {
            let args = format!(r#"{{"title":"notes","note":{}}}"#, Value::from(recited));
            let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "save", "arguments": args}}]}}]});
            let out = scan_completion(&prompt, None, body.to_string().as_bytes()).expect("json");
            let Completion::Rewritten { body, .. } = out else { panic!("not caught: {recited}") };
            let v: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(
                v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
                r#"{"title":"notes","note":""#
            );
        }
    }

    #[test]
    fn non_json_is_an_error() {
        assert!(scan_completion(&prompt(LeakAction::Terminate), None, b"<html>").is_err());
    }
}
