//! Per-request canary tokens and the injection of the operator system prompt into an
//! OpenAI chat request.

use std::fmt;

use serde_json::Value;

/// Alphabet of the random part: lowercase RFC 4648 base32. Letters and digits only, so the
/// token survives the scanner's normalisation (which drops everything else) unchanged.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// 20 base32 characters are 100 random bits: unguessable, and long enough that no reply
/// contains them by chance.
const RANDOM_CHARS: usize = 20;

/// Consonants and vowels of the name-shaped canary: 4 + 2 bits a syllable.
const CONSONANTS: &[u8; 16] = b"bdfgkmnprstvzhjw";
const VOWELS: &[u8; 4] = b"aeou";

/// Two random markers placed in the system prompt of one request, of different shapes so
/// that one survives where the other does not:
/// - a token (`cnry-` and 20 base32 characters) at the top, which a verbatim recitation
///   says first;
/// - a made-up name of two words (`Kavetomu Risadobe`) at the end, which a model keeps
///   like any proper noun when it translates, paraphrases, reorders or spells out its
///   prompt, and which a recitation that starts from the end or runs backwards says first.
///
/// If either shows up in the reply (in any case, with or without separators, in leetspeak
/// or look-alike letters, rot13'd, reversed, the name's words swapped, or inside any
/// encoding the scanner decodes), the model is reciting its prompt.
#[derive(Clone, PartialEq, Eq)]
pub struct Canary {
    token: String,
    name: String,
}

/// The operating system's random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("random generator failed: {0}")]
pub struct CanaryError(getrandom::Error);

impl Canary {
    /// A fresh token such as `cnry-q3x7m2kd5p0...` from the OS CSPRNG.
    pub fn generate() -> Result<Self, CanaryError> {
        let mut bytes = [0u8; RANDOM_CHARS];
        getrandom::fill(&mut bytes).map_err(CanaryError)?;
        Ok(Self::from_random(&bytes))
    }

    /// Deterministic constructor for tests and benchmarks: the low five bits of each byte
    /// pick a token character; the high three bits, 60 in all, pick the name's syllables.
    pub fn from_random(bytes: &[u8; RANDOM_CHARS]) -> Self {
        let mut token = String::with_capacity(5 + RANDOM_CHARS);
        token.push_str("cnry-");
        token.extend(bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])));
        let mut bits = bytes.iter().fold(0u64, |acc, b| (acc << 3) | u64::from(b >> 5));
        let mut name = String::with_capacity(18);
        for word in 0..2 {
            if word == 1 {
                name.push(' ');
            }
            for syllable in 0..4 {
                let c = char::from(CONSONANTS[(bits & 15) as usize]);
                let v = char::from(VOWELS[((bits >> 4) & 3) as usize]);
                bits >>= 6;
                name.push(if syllable == 0 { c.to_ascii_uppercase() } else { c });
                name.push(v);
            }
        }
        Self { token, name }
    }

    /// The token as placed at the top of the prompt.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// The name-shaped marker placed at the end of the prompt.
    pub fn name(&self) -> &str {
        &self.name
    }
}

// The token is a secret for the life of the request: keep it out of logs by default.
impl fmt::Debug for Canary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Canary(..)")
    }
}

/// The system message text the gateway sends upstream: the canary token on its own line
/// ahead of the operator prompt, in an HTML comment the way Rebuff marks its canary words,
/// and the canary name in one after it. Ahead, because "repeat everything above"
/// recitations start at the top, so the token is the first thing a leaking reply says;
/// after, so a recitation from the end, backwards or reordered meets the name first.
pub fn inject(system_prompt: &str, canary: &Canary) -> String {
    format!("<!-- {} -->\n{system_prompt}\n<!-- {} -->", canary.as_str(), canary.name())
}

/// Why a request body could not carry the system prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The body is not a JSON object with a `messages` array.
    #[error("request body has no \"messages\" array")]
    NoMessages,
}

/// Puts the operator prompt first in a chat request (`/v1/chat/completions`).
///
/// If the client's first message is a `system` message, the operator prompt is merged into
/// it (operator text first, a blank line, then the client's text); otherwise a new system
/// message is inserted at position 0. Merging rather than stacking a second system message
/// matters because several chat templates (Mistral, Gemma, some Llama variants) reject or
/// silently drop a system message that is not the first message. Either way the operator
/// text comes first and nothing the client sends can remove it: this runs on the parsed
/// body after the client is done with it. Client `developer` messages and later `system`
/// messages are left where they are; input scoring looks at them.
pub fn inject_system_prompt(body: &mut Value, prompt: &str) -> Result<(), InjectError> {
    let messages = body.get_mut("messages").and_then(Value::as_array_mut).ok_or(InjectError::NoMessages)?;
    if let Some(first) = messages.first_mut()
        && first.get("role").and_then(Value::as_str) == Some("system")
        && let Some(obj) = first.as_object_mut()
    {
        let merged = match obj.get_mut("content") {
            Some(Value::String(text)) => Value::String(format!("{prompt}\n\n{text}")),
            Some(Value::Array(parts)) => {
                let mut parts = std::mem::take(parts);
                parts.insert(0, serde_json::json!({"type": "text", "text": format!("{prompt}\n\n")}));
                Value::Array(parts)
            }
            // null, missing or a type no server accepts: the operator prompt replaces it.
            _ => Value::String(prompt.to_owned()),
        };
        obj.insert("content".to_owned(), merged);
        return Ok(());
    }
    messages.insert(0, serde_json::json!({"role": "system", "content": prompt}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_canaries_differ_and_use_the_alphabet() {
        let a = Canary::generate().expect("os rng");
        let b = Canary::generate().expect("os rng");
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 25);
        assert!(a.as_str()[5..].bytes().all(|c| ALPHABET.contains(&c)));
        assert_eq!(format!("{a:?}"), "Canary(..)", "debug output must not leak the token");
        assert_ne!(a.name(), b.name());
        assert_eq!(a.name().len(), 17);
        assert!(a.name().split(' ').all(|w| w.len() == 8 && w.starts_with(|c: char| c.is_ascii_uppercase())));
    }

    #[test]
    fn inject_puts_canary_first() {
        let c = Canary::from_random(&[1; 20]);
        let text = inject("You are Acme's assistant.", &c);
        assert!(text.starts_with("<!-- cnry-bbbb"));
        assert!(text.contains("\nYou are Acme's assistant.\n<!-- "));
        assert!(text.ends_with(&format!("<!-- {} -->", c.name())));
    }

    #[test]
    fn system_prompt_is_inserted_first() {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        inject_system_prompt(&mut body, "OP").expect("has messages");
        assert_eq!(body["messages"][0], json!({"role": "system", "content": "OP"}));
        assert_eq!(body["messages"][1]["content"], "hi");
    }

    #[test]
    fn client_system_message_is_merged_after_operator_text() {
        let mut body =
            json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]});
        inject_system_prompt(&mut body, "OP").expect("has messages");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
        assert_eq!(body["messages"][0]["content"], "OP\n\nbe brief");

        let mut parts = json!({"messages": [{"role": "system", "content": [{"type": "text", "text": "x"}]}]});
        inject_system_prompt(&mut parts, "OP").expect("has messages");
        assert_eq!(parts["messages"][0]["content"][0]["text"], "OP\n\n");
        assert_eq!(parts["messages"][0]["content"][1]["text"], "x");

        let mut null = json!({"messages": [{"role": "system", "content": null}]});
        inject_system_prompt(&mut null, "OP").expect("has messages");
        assert_eq!(null["messages"][0]["content"], "OP");
    }

    #[test]
    fn developer_message_gets_a_system_message_before_it() {
        let mut body = json!({"messages": [{"role": "developer", "content": "d"}]});
        inject_system_prompt(&mut body, "OP").expect("has messages");
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["role"], "developer");
    }

    #[test]
    fn bodies_without_messages_are_refused() {
        assert_eq!(inject_system_prompt(&mut json!({"prompt": "x"}), "OP"), Err(InjectError::NoMessages));
        assert_eq!(inject_system_prompt(&mut json!([1]), "OP"), Err(InjectError::NoMessages));
        assert_eq!(inject_system_prompt(&mut json!({"messages": "x"}), "OP"), Err(InjectError::NoMessages));
    }
}
