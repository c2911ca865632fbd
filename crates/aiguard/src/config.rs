//! The `[aiguard]` configuration: operator system prompts, leak-scanner thresholds and the
//! per-route action for risky input, with defaults that work with no configuration at all.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest operator system prompt accepted. The scanner's per-request memory grows with the
/// prompt (one bit per distinct n-gram), so the prompt size is what bounds it.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// Everything the AI guard needs, as it appears under `[aiguard]` in `palisade.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Operator system prompt per model name; the key `"*"` applies to models without their
    /// own entry. Prompts are injected by the gateway and never returned to clients.
    pub system_prompts: BTreeMap<String, String>,
    /// How replies are scanned for leaks of those prompts.
    pub leak: LeakConfig,
    /// How requests are scored for extraction and jailbreak attempts.
    pub input: InputConfig,
}

/// What the scanner does when a reply leaks the system prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakAction {
    /// End the reply with `finish_reason: "content_filter"` (and `data: [DONE]` when
    /// streaming). The default: once a model has started to recite its prompt, the rest of
    /// the reply is rarely worth anything.
    #[default]
    Terminate,
    /// Replace the leaked span with `[redacted]` and keep streaming.
    Redact,
}

/// Leak-scanner settings. The defaults were chosen with `examples/eval.rs`: with them every
/// verbatim and encoded leak in the evaluation set is stopped before any leaked byte is
/// released, and no benign reply is touched.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeakConfig {
    /// Terminate or redact on detection.
    pub on_leak: LeakAction,
    /// Put a per-request canary token in the system prompt and look for it in replies.
    pub canary: bool,
    /// Character n-gram size over the normalised text (lowercase letters and digits only),
    /// 4..=8. Eight bytes pack into one `u64`, which makes the lookup exact and cheap.
    pub ngram: usize,
    /// A reply that reproduces this many consecutive normalised characters of the prompt
    /// (about seven words) is a leak. Prompts shorter than this are protected by the canary
    /// only, since quoting a short prompt is indistinguishable from using it.
    pub min_run: usize,
    /// A reply that contains this fraction of the prompt's distinct n-grams is a leak even
    /// when no single run is long enough (reordered or lightly edited recitation).
    pub containment: f64,
    /// Bytes of reply text held back from the client until the scanner knows they do not
    /// start a leak. Detection needs `min_run` normalised characters (about 48 raw bytes,
    /// 64 in base64, 96 spaced out), so a hold-back of that size keeps leaked text from
    /// ever reaching the client; the price is that much extra latency on the first token.
    /// Text whose letters are spread out (an invisible character after each, full-width
    /// forms) is held back further, up to eight times this, until `min_run` letters fit.
    pub holdback: usize,
    /// Largest single SSE event or non-streamed body accepted; bigger ones end the stream.
    pub max_event_bytes: usize,
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            on_leak: LeakAction::Terminate,
            canary: true,
            ngram: 8,
            min_run: 40,
            containment: 0.5,
            holdback: 112,
            max_event_bytes: 1024 * 1024,
        }
    }
}

/// What the gateway does with a request whose input score reaches the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputAction {
    /// Write an audit event; serve the request normally.
    Log,
    /// Audit, count a strike against the caller and mark the request in metrics.
    #[default]
    Flag,
    /// Flag, then delay the request by `input.slow_ms` before forwarding it.
    Slow,
    /// Flag and refuse with 403 and a machine-readable error.
    Block,
}

/// See [`InputConfig::semantic_threshold`]. 0.81 is the lowest at which patterns OR
/// semantic flag at most 1% of the tuning split's benign prompts (hard negatives included)
/// with all-MiniLM-L6-v2: lower, the hard negatives ("what are the rules of …") start to pass it.
pub const DEFAULT_SEMANTIC_THRESHOLD: f32 = 0.81;

/// Input-scoring settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Score (0..=100) at or above which `action` applies. 50 is one strong signal (an
    /// explicit "ignore previous instructions" or "print your system prompt") or two
    /// weaker ones together; no single weak heuristic reaches it.
    pub threshold: u32,
    /// Action for routes without their own entry in `routes`.
    pub action: InputAction,
    /// Per-route action, keyed by request path (e.g. `"/v1/chat/completions"`).
    pub routes: BTreeMap<String, InputAction>,
    /// Delay applied by [`InputAction::Slow`], in milliseconds.
    pub slow_ms: u64,
    /// The optional semantic layer: a directory holding a BERT sentence encoder
    /// (`config.json`, `tokenizer.json`, `model.safetensors`), loaded at start. A request
    /// whose last user turn comes close enough to a reference attack scores `threshold`
    /// whatever its patterns said. Unset: no model, no extra cost.
    pub semantic_model: Option<PathBuf>,
    /// Cosine similarity to the nearest reference attack (0..1) at which the semantic
    /// layer flags, when the text is also closer to that attack than to any benign
    /// reference. Chosen on the tuning split at ≤ 1% false positives (eval/README.md).
    pub semantic_threshold: f32,
    /// Extra reference attacks for the semantic layer, one per line, on top of the
    /// built-in ones.
    pub semantic_examples: Option<PathBuf>,
    /// The n-gram classifier (built in, microseconds per prompt): a request whose user
    /// turns it flags scores `threshold` whatever its patterns said. On by default.
    pub ngram: bool,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            threshold: 50,
            action: InputAction::Flag,
            routes: BTreeMap::new(),
            slow_ms: 2000,
            semantic_model: None,
            semantic_threshold: DEFAULT_SEMANTIC_THRESHOLD,
            semantic_examples: None,
            ngram: true,
        }
    }
}

impl InputConfig {
    /// The action configured for `route` (its own entry, else the default `action`).
    pub fn action_for(&self, route: &str) -> InputAction {
        self.routes.get(route).copied().unwrap_or(self.action)
    }

    /// The action to take for a request on `route` with input score `score`, or `None`
    /// when the score is below the threshold.
    pub fn decide(&self, route: &str, score: u32) -> Option<InputAction> {
        (score >= self.threshold).then(|| self.action_for(route))
    }
}

/// Invalid configuration: one message per problem, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Problems, e.g. `leak.ngram: must be between 4 and 8 (got 12)`.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid aiguard configuration: {}", self.problems.join("; "))
    }
}

impl GuardConfig {
    /// The operator prompt for `model`: its own entry, else the `"*"` entry.
    pub fn prompt_for(&self, model: &str) -> Option<&str> {
        self.system_prompts.get(model).or_else(|| self.system_prompts.get("*")).map(String::as_str)
    }

    /// Checks every field; field names in the messages are relative to `[aiguard]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (model, prompt) in &self.system_prompts {
            if model.trim().is_empty() {
                problems.push("system_prompts: model name must not be empty (use \"*\" for all models)".to_owned());
            }
            if prompt.trim().is_empty() {
                problems.push(format!("system_prompts.{model}: prompt must not be empty"));
            }
            if prompt.len() > MAX_PROMPT_BYTES {
                problems.push(format!(
                    "system_prompts.{model}: prompt is {} bytes, at most {MAX_PROMPT_BYTES} allowed",
                    prompt.len()
                ));
            }
        }
        let leak = &self.leak;
        if !(4..=8).contains(&leak.ngram) {
            problems.push(format!("leak.ngram: must be between 4 and 8 (got {})", leak.ngram));
        }
        if leak.min_run < leak.ngram + 8 || leak.min_run > 1024 {
            problems.push(format!(
                "leak.min_run: must be between ngram + 8 ({}) and 1024 (got {})",
                leak.ngram + 8,
                leak.min_run
            ));
        }
        if !(leak.containment > 0.0 && leak.containment <= 1.0) {
            problems.push(format!("leak.containment: must be in (0, 1] (got {})", leak.containment));
        }
        if leak.holdback < 16 || leak.holdback > 64 * 1024 {
            problems.push(format!("leak.holdback: must be between 16 and 65536 bytes (got {})", leak.holdback));
        }
        if leak.max_event_bytes < 4096 || leak.max_event_bytes > 64 * 1024 * 1024 {
            problems.push(format!(
                "leak.max_event_bytes: must be between 4096 and 67108864 (got {})",
                leak.max_event_bytes
            ));
        }
        let input = &self.input;
        if !(1..=100).contains(&input.threshold) {
            problems.push(format!("input.threshold: must be between 1 and 100 (got {})", input.threshold));
        }
        if input.slow_ms > 60_000 {
            problems.push(format!("input.slow_ms: must be at most 60000 (got {})", input.slow_ms));
        }
        if !(input.semantic_threshold > 0.0 && input.semantic_threshold <= 1.0) {
            problems.push(format!("input.semantic_threshold: must be in (0, 1] (got {})", input.semantic_threshold));
        }
        for route in input.routes.keys() {
            if !route.starts_with('/') {
                problems.push(format!("input.routes.{route}: route must be a path starting with '/'"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError { problems }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(GuardConfig::default().validate(), Ok(()));
    }

    #[test]
    fn parses_from_json_and_rejects_unknown_fields() {
        let cfg: GuardConfig = serde_json::from_value(serde_json::json!({
            "system_prompts": {"*": "You are Acme's assistant.", "llama": "You are Llama at Acme."},
            "leak": {"on_leak": "redact", "ngram": 6},
            "input": {"threshold": 60, "routes": {"/v1/completions": "block"}}
        }))
        .expect("valid config");
        assert_eq!(cfg.leak.on_leak, LeakAction::Redact);
        assert_eq!(cfg.leak.ngram, 6);
        assert_eq!(cfg.leak.min_run, 40, "unset fields keep their default");
        assert_eq!(cfg.prompt_for("llama"), Some("You are Llama at Acme."));
        assert_eq!(cfg.prompt_for("qwen"), Some("You are Acme's assistant."));
        assert_eq!(cfg.input.action_for("/v1/completions"), InputAction::Block);
        assert_eq!(cfg.input.action_for("/v1/chat/completions"), InputAction::Flag);
        assert_eq!(cfg.input.decide("/v1/completions", 59), None);
        assert_eq!(cfg.input.decide("/v1/completions", 60), Some(InputAction::Block));

        let unknown = serde_json::from_value::<GuardConfig>(serde_json::json!({"leak": {"ngramm": 6}}));
        assert!(unknown.is_err());
    }

    #[test]
    fn validate_names_each_bad_field() {
        let mut cfg = GuardConfig::default();
        cfg.system_prompts.insert("m".into(), "  ".into());
        cfg.leak.ngram = 12;
        cfg.leak.containment = 0.0;
        cfg.leak.holdback = 1;
        cfg.input.threshold = 0;
        cfg.input.routes.insert("v1".into(), InputAction::Log);
        let err = cfg.validate().expect_err("invalid");
        let text = err.to_string();
        for field in [
            "system_prompts.m",
            "leak.ngram",
            "leak.containment",
            "leak.holdback",
            "input.threshold",
            "input.routes.v1",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
    }
}
