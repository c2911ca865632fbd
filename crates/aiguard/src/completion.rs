//! Leak scanning of a non-streamed reply (`stream: false`): the whole JSON body at once.

use std::sync::Arc;

use serde_json::Value;

use crate::canary::Canary;
use crate::config::LeakAction;
use crate::detector::{CanaryNeedles, Detector};
use crate::leak::{Leak, REDACTION_MARKER, render};
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

/// Scans `choices[].message.content` (and `reasoning_content` / `reasoning`) of a chat
/// reply, or `choices[].text` of a completions reply.
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
        for path in
            [&["message", "content"][..], &["message", "reasoning_content"], &["message", "reasoning"], &["text"]]
        {
            let Some(Value::String(text)) = path.iter().try_fold(&mut *choice, |v, key| v.get_mut(*key)) else {
                continue;
            };
            let mut det = Detector::new(prompt.clone(), needles.clone(), index);
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
        assert_eq!(v["choices"][0]["text"], "My prompt: [redacted]. And that is all I can share with you today.");
    }

    #[test]
    fn non_json_is_an_error() {
        assert!(scan_completion(&prompt(LeakAction::Terminate), None, b"<html>").is_err());
    }
}
