//! Bearer secrets: session tokens, API keys and one-time verification codes. Each is
//! generated here, shown to its owner once, and stored only as a SHA-256 hash, so a
//! database leak yields nothing that can be presented back to the gateway.
//!
//! Plain SHA-256 is enough for tokens and keys because they carry 256 random bits: there
//! is nothing to guess. Verification codes are the exception; see [`VerificationCode`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Characters of a session token or API-key secret: 32 bytes in unpadded base64url.
const SECRET_CHARS: usize = 43;
const API_KEY_TAG: &str = "pal_";
const PREFIX_CHARS: usize = 8;
/// `pal_` + prefix + `_` + secret.
pub const API_KEY_LEN: usize = API_KEY_TAG.len() + PREFIX_CHARS + 1 + SECRET_CHARS;
/// Lower-case RFC 4648 base32: no `_` (the separator) and nothing that needs escaping.
const PREFIX_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the session token is malformed")]
    MalformedSession,
    #[error("the API key is malformed: keys look like pal_xxxxxxxx_ followed by 43 characters")]
    MalformedApiKey,
}

impl TokenError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedSession => "invalid_session",
            Self::MalformedApiKey => "invalid_api_key",
        }
    }
}

/// A session token as sent in the cookie. Debug output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl SessionToken {
    /// 32 fresh random bytes, base64url without padding (43 characters).
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(crate::random_bytes::<32>()))
    }

    /// Accepts exactly what [`Self::generate`] produces, so garbage cookies are refused
    /// before any store lookup.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        if is_secret(text) { Ok(Self(text.to_owned())) } else { Err(TokenError::MalformedSession) }
    }

    /// The value for the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the token text: the key the store keeps sessions under.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// A newly created API key: `pal_<8-char public prefix>_<43-char secret>`.
///
/// Store [`Self::prefix`] (the lookup id, safe to show in lists and logs) and
/// [`Self::secret_hash`]; show [`Self::as_str`] to the owner once. Prefixes carry 40
/// random bits: keep them unique in the store and generate again on a collision.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    full: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey(pal_{}_<redacted>)", self.prefix())
    }
}

impl ApiKey {
    pub fn generate() -> Self {
        let prefix: String = crate::random_bytes::<PREFIX_CHARS>()
            .iter()
            .map(|b| char::from(PREFIX_ALPHABET[usize::from(b & 31)]))
            .collect();
        let secret = URL_SAFE_NO_PAD.encode(crate::random_bytes::<32>());
        Self { full: format!("{API_KEY_TAG}{prefix}_{secret}") }
    }

    /// The whole key, to show once.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn prefix(&self) -> &str {
        &self.full[API_KEY_TAG.len()..API_KEY_TAG.len() + PREFIX_CHARS]
    }

    pub fn secret_hash(&self) -> [u8; 32] {
        hash_secret(&self.full[API_KEY_LEN - SECRET_CHARS..])
    }

    /// Splits a presented key, refusing anything not exactly in the generated format.
    pub fn parse(text: &str) -> Result<ParsedKey, TokenError> {
        let malformed = TokenError::MalformedApiKey;
        let rest = text.strip_prefix(API_KEY_TAG).ok_or(malformed.clone())?;
        if text.len() != API_KEY_LEN || !rest.is_char_boundary(PREFIX_CHARS) {
            return Err(malformed);
        }
        let (prefix, rest) = rest.split_at(PREFIX_CHARS);
        let secret = rest.strip_prefix('_').ok_or(malformed.clone())?;
        if !prefix.bytes().all(|b| PREFIX_ALPHABET.contains(&b)) || !is_secret(secret) {
            return Err(malformed);
        }
        Ok(ParsedKey { prefix: prefix.to_owned(), secret: secret.to_owned() })
    }
}

/// A presented API key, split. Look the key up by `prefix`, then [`Self::verify`] it.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub prefix: String,
    secret: String,
}

impl std::fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedKey {{ prefix: {:?}, secret: <redacted> }}", self.prefix)
    }
}

impl ParsedKey {
    pub fn secret_hash(&self) -> [u8; 32] {
        hash_secret(&self.secret)
    }

    /// Constant-time comparison with the stored [`ApiKey::secret_hash`].
    pub fn verify(&self, stored_hash: &[u8; 32]) -> bool {
        self.secret_hash().ct_eq(stored_hash).into()
    }
}

/// SHA-256 of an API-key secret (the part after the prefix).
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A 6-digit code sent by SMS or e-mail to prove control of the address.
///
/// Six digits are only 10^6 possibilities, so the stored hash hides the code from a
/// casual reader (logs, backups) but not from anyone who can run a million SHA-256s. What
/// protects the code is the caller's short expiry and cap on attempts. The hash is bound
/// to a `context` (the destination, e.g. the E.164 number, and the purpose), so a code
/// sent to one destination never verifies for another.
#[derive(Clone, PartialEq, Eq)]
pub struct VerificationCode(String);

impl std::fmt::Debug for VerificationCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerificationCode(<redacted>)")
    }
}

impl VerificationCode {
    /// Uniform over 000000–999999 (rejection sampling, no modulo bias).
    pub fn generate() -> Self {
        Self(format!("{:06}", crate::random_below(1_000_000)))
    }

    /// The digits, to send.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self, context: &str) -> [u8; 32] {
        code_hash(&self.0, context)
    }

    /// Checks what the user typed (spaces ignored) in constant time.
    pub fn verify(input: &str, context: &str, stored_hash: &[u8; 32]) -> bool {
        let typed: String = input.chars().filter(|c| !c.is_whitespace()).collect();
        if typed.len() != 6 || !typed.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        code_hash(&typed, context).ct_eq(stored_hash).into()
    }
}

fn code_hash(code: &str, context: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"palisade verification code v1\0");
    h.update((context.len() as u64).to_be_bytes());
    h.update(context.as_bytes());
    h.update(code.as_bytes());
    h.finalize().into()
}

/// True for exactly the canonical unpadded base64url text of 32 bytes.
fn is_secret(text: &str) -> bool {
    // The length check comes first so oversized input is refused without decoding; the
    // decoder then rejects non-canonical trailing bits, leaving one spelling per value.
    text.len() == SECRET_CHARS && URL_SAFE_NO_PAD.decode(text).is_ok_and(|b| b.len() == 32)
}

/// SHA-256 of a presented token (session cookie, admin token) as the store keeps
/// it. Never fails: a malformed token simply matches nothing.
pub fn hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Equality in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An invite code: 16 symbols of Crockford base32 (80 bits), easy to read out.
pub fn invite_code() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    crate::random_bytes::<16>().iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect()
}

/// base64url without padding, for opaque tokens handed to clients.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Option<Vec<u8>> {
    if text.len() > 4096 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn session_tokens_are_43_url_safe_chars_and_parse_back() {
        let t = SessionToken::generate();
        assert_eq!(t.as_str().len(), 43);
        assert!(t.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(SessionToken::parse(t.as_str()), Ok(t.clone()));
        assert_ne!(t, SessionToken::generate());
        assert_eq!(t.hash(), <[u8; 32]>::from(Sha256::digest(t.as_str().as_bytes())));
        assert_eq!(format!("{t:?}"), "SessionToken(<redacted>)");
    }

    #[test]
    fn session_parse_is_strict() {
        let t = SessionToken::generate();
        let s = t.as_str();
        for bad in
            [String::new(), s[..42].to_owned(), format!("{s}A"), format!("{}=", &s[..42]), format!("+{}", &s[1..])]
        {
            assert_eq!(SessionToken::parse(&bad), Err(TokenError::MalformedSession), "{bad}");
        }
        // 43 symbols carry 258 bits for 256: the last two must be zero, so each value has
        // one spelling. 32 zero bytes are 43 'A's; ending in 'B' sets a spare bit.
        assert!(SessionToken::parse(&"A".repeat(43)).is_ok());
        assert_eq!(SessionToken::parse(&format!("{}B", "A".repeat(42))), Err(TokenError::MalformedSession));
    }

    #[test]
    fn api_keys_have_the_documented_shape_and_verify() {
        let key = ApiKey::generate();
        let text = key.as_str();
        assert_eq!(text.len(), API_KEY_LEN);
        assert_eq!(API_KEY_LEN, 56);
        assert!(text.starts_with("pal_"));
        assert_eq!(&text[12..13], "_");
        let parsed = ApiKey::parse(text).expect("own key parses");
        assert_eq!(parsed.prefix, key.prefix());
        assert!(parsed.verify(&key.secret_hash()));
        assert!(!parsed.verify(&ApiKey::generate().secret_hash()));
        assert_eq!(parsed.secret_hash(), hash_secret(&text[13..]));
        assert!(!format!("{key:?}{parsed:?}").contains(&text[13..]), "secrets redacted");
    }

    #[test]
    fn api_key_parse_is_strict() {
        let key = ApiKey::generate();
        let t = key.as_str();
        let bad = [
            String::new(),
            t[..55].to_owned(),
            format!("{t}x"),
            t.replacen("pal_", "PAL_", 1),
            t.replacen("pal_", "sk-_", 1),
            format!("pal_ABCDEFGH{}", &t[12..]),
            format!("pal_abcdefgh-{}", &t[13..]),
            format!("pal_abcdefg\u{e9}{}", &t[13..]),
            format!(" {}", &t[..55]),
            format!("{}+{}", &t[..13], &t[14..]),
        ];
        for b in bad {
            assert_eq!(ApiKey::parse(&b), Err(TokenError::MalformedApiKey), "{b}");
        }
    }

    #[test]
    fn verification_codes_are_six_digits_bound_to_context() {
        let code = VerificationCode::generate();
        assert_eq!(code.as_str().len(), 6);
        assert!(code.as_str().bytes().all(|b| b.is_ascii_digit()));
        let stored = code.hash("+8613800138000 register");
        assert!(VerificationCode::verify(code.as_str(), "+8613800138000 register", &stored));
        let spaced = format!("{} {}", &code.as_str()[..3], &code.as_str()[3..]);
        assert!(VerificationCode::verify(&spaced, "+8613800138000 register", &stored));
        assert!(!VerificationCode::verify(code.as_str(), "+8613900139000 register", &stored));
        for bad in ["", "12345", "1234567", "12345a", "١٢٣٤٥٦"] {
            assert!(!VerificationCode::verify(bad, "+8613800138000 register", &stored), "{bad}");
        }
    }

    #[test]
    fn verification_codes_cover_the_range_evenly() {
        // 20,000 draws into 10 buckets by leading digit: each expects 2,000 with a
        // standard deviation of ~42; ±300 is >7 sigma, so this fails only on real bias.
        let mut buckets = [0u32; 10];
        for _ in 0..20_000 {
            let c = VerificationCode::generate();
            buckets[usize::from(c.as_str().as_bytes()[0] - b'0')] += 1;
        }
        assert!(buckets.iter().all(|n| (1_700..=2_300).contains(n)), "{buckets:?}");
    }

    proptest! {
        #[test]
        fn api_key_parse_never_panics(text in "\\PC{0,70}") {
            let _ = ApiKey::parse(&text);
            let _ = SessionToken::parse(&text);
        }

        #[test]
        fn generated_keys_always_parse(_seed in any::<u8>()) {
            let key = ApiKey::generate();
            let parsed = ApiKey::parse(key.as_str()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(parsed.verify(&key.secret_hash()));
        }
    }
}
