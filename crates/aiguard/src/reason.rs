//! Why input scored high: a stable reason code per kind of evidence, shared by the
//! pattern scorer and the multilingual concepts.

use serde::Serialize;

/// Why input scored high. Names are stable (audit events and metrics use them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// "Ignore all previous instructions", "forget your rules", "new instructions:".
    IgnoreInstructions,
    /// Asks for the system prompt, initial instructions or configuration.
    RevealSystemPrompt,
    /// "Repeat the words above", "output everything from the beginning of this conversation".
    RepeatAbove,
    /// Dictates the start of the answer ("start your response with 'Sure, here is'").
    PrefixInjection,
    /// "You are now …", "stay in character", "your new persona".
    RolePlayOverride,
    /// DAN and its relatives ("do anything now", STAN, AIM, "jailbreak").
    DanJailbreak,
    /// "Developer mode enabled" and other fake modes.
    DeveloperMode,
    /// "No restrictions", "unfiltered", "not bound by the content policy".
    NoRestrictions,
    /// "Never refuse", "no warnings or disclaimers".
    RefusalSuppression,
    /// Asks for two answers (a normal one and an unfiltered one).
    DualResponse,
    /// Claims authority ("I am your developer", "OpenAI has authorized this").
    AuthorityClaim,
    /// Chat-template tokens or fake system headers (`<|im_start|>`, `[INST]`, `### System`).
    FakeDelimiter,
    /// A base64 or hex run that decodes to text.
    EncodedPayload,
    /// Zero-width characters, look-alike letters, spaced-out or leetspeak keywords.
    Obfuscation,
    /// A fake policy or configuration file ("<interaction-config>", "blocked strings",
    /// "allowed modes") that tells the model what it may say.
    PolicyFormat,
    /// A wall of stacked constraints and rules meant to drown the system prompt.
    CognitiveOverload,
    /// The semantic layer: close in meaning to a reference attack. Not in `ALL`, which
    /// indexes the pattern scorer's reasons.
    SemanticMatch,
    /// The n-gram classifier: the request's vocabulary as a whole reads like the attacks it
    /// was trained on. Not in `ALL` either.
    NgramClassifier,
}

impl ReasonCode {
    pub(crate) const ALL: [ReasonCode; 16] = [
        Self::IgnoreInstructions,
        Self::RevealSystemPrompt,
        Self::RepeatAbove,
        Self::PrefixInjection,
        Self::RolePlayOverride,
        Self::DanJailbreak,
        Self::DeveloperMode,
        Self::NoRestrictions,
        Self::RefusalSuppression,
        Self::DualResponse,
        Self::AuthorityClaim,
        Self::FakeDelimiter,
        Self::EncodedPayload,
        Self::Obfuscation,
        Self::PolicyFormat,
        Self::CognitiveOverload,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IgnoreInstructions => "ignore_instructions",
            Self::RevealSystemPrompt => "reveal_system_prompt",
            Self::RepeatAbove => "repeat_above",
            Self::PrefixInjection => "prefix_injection",
            Self::RolePlayOverride => "role_play_override",
            Self::DanJailbreak => "dan_jailbreak",
            Self::DeveloperMode => "developer_mode",
            Self::NoRestrictions => "no_restrictions",
            Self::RefusalSuppression => "refusal_suppression",
            Self::DualResponse => "dual_response",
            Self::AuthorityClaim => "authority_claim",
            Self::FakeDelimiter => "fake_delimiter",
            Self::EncodedPayload => "encoded_payload",
            Self::Obfuscation => "obfuscation",
            Self::PolicyFormat => "policy_format",
            Self::CognitiveOverload => "cognitive_overload",
            Self::SemanticMatch => "semantic_match",
            Self::NgramClassifier => "ngram_classifier",
        }
    }
}
