//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): HMAC-SHA1, 6 digits,
//! 30-second steps — the only profile every authenticator app implements — plus the
//! base32 secret encoding and the `otpauth://` URI that apps scan as a QR code.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Seconds per time step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Bytes of secret: RFC 4226 recommends 160 bits, the output size of SHA-1.
pub const SECRET_LEN: usize = 20;

/// A TOTP shared secret. Debug output is redacted; store it encrypted
/// ([`crate::crypto::PiiKeys`]), as [`Self::as_bytes`] or [`Self::to_base32`].
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret([u8; SECRET_LEN]);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the secret is not valid base32")]
    InvalidBase32,
    #[error("the secret must be {SECRET_LEN} bytes, got {0}")]
    WrongLength(usize),
}

impl TotpSecret {
    /// 20 fresh bytes from the OS generator.
    pub fn generate() -> Self {
        Self(crate::random_bytes())
    }

    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads a secret as [`Self::to_base32`] wrote it (case, spaces and padding tolerated).
    pub fn from_base32(text: &str) -> Result<Self, TotpError> {
        let bytes = base32_decode(text).ok_or(TotpError::InvalidBase32)?;
        let len = bytes.len();
        bytes.try_into().map(Self).map_err(|_| TotpError::WrongLength(len))
    }

    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// RFC 4648 base32, upper case, no padding: what authenticator apps expect.
    pub fn to_base32(&self) -> String {
        base32_encode(&self.0)
    }
}

/// The code for `unix_time` (seconds since the epoch).
pub fn code_at(secret: &TotpSecret, unix_time: u64) -> String {
    hotp(&secret.0, unix_time / STEP_SECONDS, DIGITS)
}

/// Checks a code typed by the user. Accepts the current step and one step either side
/// (clock drift and typing time), and refuses any step at or before `last_used_step` so a
/// code, once accepted, cannot be replayed. Returns the step to store as the new
/// `last_used_step`. Spaces in `code` are ignored ("123 456" as some apps show it).
pub fn verify(secret: &TotpSecret, code: &str, unix_time: u64, last_used_step: Option<u64>) -> Option<u64> {
    let typed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if typed.len() != DIGITS as usize || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = unix_time / STEP_SECONDS;
    let mut found = None;
    // All candidate steps are computed and compared without stopping early, so the time
    // taken does not depend on which step (if any) matched.
    for step in [now.checked_sub(1), Some(now), now.checked_add(1)].into_iter().flatten() {
        let expected = hotp(&secret.0, step, DIGITS);
        let fresh = last_used_step.is_none_or(|last| step > last);
        if bool::from(expected.as_bytes().ct_eq(typed.as_bytes())) && fresh && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The `otpauth://` provisioning URI (Google Authenticator key URI format). The label is
/// `ISSUER:ACCOUNT`; both parts are percent-encoded so `:`, spaces, `@` or non-ASCII
/// names cannot change how the app splits them.
pub fn provisioning_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        account = percent_encode(account),
        secret = secret.to_base32(),
    )
}

/// RFC 4226 HOTP with dynamic truncation. `digits` is a parameter so the RFC's 8-digit
/// test vectors can be checked; the public API always uses [`DIGITS`].
fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC would only
    // produce a code nobody can match.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let word = u32::from_be_bytes([digest[offset], digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    let value = (word & 0x7fff_ffff) % 10u32.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits = 0;
    for &byte in data {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_ALPHABET[usize::from((buffer >> bits) & 31)]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(BASE32_ALPHABET[usize::from((buffer << (5 - bits)) & 31)]));
    }
    out
}

/// RFC 4648 base32 decoding. Accepts lower case, spaces and trailing `=` padding (people
/// type secrets by hand); refuses other characters, impossible lengths and non-zero
/// leftover bits, so every secret has exactly one accepted spelling up to case.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let symbols: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    let end = symbols.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    let symbols = &symbols[..end];
    // 1, 3 and 6 leftover symbols cannot come from whole bytes.
    if matches!(symbols.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let mut out = Vec::with_capacity(symbols.len() * 5 / 8);
    let mut buffer: u16 = 0;
    let mut bits = 0;
    for &symbol in symbols {
        let value = match symbol.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u16::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    (buffer == 0).then_some(out)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (UTF-8 bytes).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 6238 Appendix B, SHA-1 rows: (time, 8-digit TOTP).
    const RFC6238_SHA1: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        for (time, expected) in RFC6238_SHA1 {
            assert_eq!(hotp(b"12345678901234567890", time / STEP_SECONDS, 8), expected, "T={time}");
        }
    }

    #[test]
    fn rfc4226_appendix_d_hotp_vectors() {
        let expected =
            ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp(b"12345678901234567890", counter as u64, 6), *code);
        }
    }

    #[test]
    fn six_digit_codes_are_the_low_digits_of_the_rfc_vectors() {
        let secret = TotpSecret::from_bytes(*b"12345678901234567890");
        for (time, expected8) in RFC6238_SHA1 {
            assert_eq!(code_at(&secret, time), expected8[2..], "T={time}");
        }
    }

    #[test]
    fn verify_accepts_one_step_of_drift_either_side_only() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_015;
        let step = now / STEP_SECONDS;
        assert_eq!(verify(&secret, &code_at(&secret, now), now, None), Some(step));
        assert_eq!(verify(&secret, &code_at(&secret, now - 30), now, None), Some(step - 1));
        assert_eq!(verify(&secret, &code_at(&secret, now + 30), now, None), Some(step + 1));
        // Two steps away is refused unless it happens to collide (1 in 10^6 per step).
        let far = code_at(&secret, now - 60);
        if ![now - 30, now, now + 30].iter().any(|t| code_at(&secret, *t) == far) {
            assert_eq!(verify(&secret, &far, now, None), None);
        }
    }

    #[test]
    fn verify_refuses_replay_and_older_steps() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_015;
        let code = code_at(&secret, now);
        let used = verify(&secret, &code, now, None).expect("first use");
        assert_eq!(verify(&secret, &code, now, Some(used)), None, "same code twice");
        assert_eq!(verify(&secret, &code, now + 20, Some(used)), None, "same code, later");
        let previous = code_at(&secret, now - 30);
        assert_eq!(verify(&secret, &previous, now, Some(used)), None, "older step after newer");
        let next = code_at(&secret, now + 30);
        assert_eq!(verify(&secret, &next, now + 30, Some(used)), Some(used + 1));
    }

    #[test]
    fn verify_refuses_malformed_codes() {
        let secret = TotpSecret::from_bytes(*b"12345678901234567890");
        let now = 59;
        assert_eq!(verify(&secret, "287 082", now, None), Some(1), "spaces ignored");
        for bad in ["", "28708", "2870822", "28708a", "２８７０８２", "-87082"] {
            assert_eq!(verify(&secret, bad, now, None), None, "{bad:?}");
        }
        assert_eq!(verify(&secret, "755224", 0, None), Some(0), "step 0 has no previous step");
    }

    #[test]
    fn base32_rfc4648_vectors_without_padding() {
        let cases = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base32_encode(plain.as_bytes()), encoded);
            assert_eq!(base32_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base32_decode("mzxw6ytboi======").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(base32_decode("MZXW 6YTB OI").as_deref(), Some(&b"foobar"[..]));
        for bad in ["M", "MZX", "MZXW6Y", "MZ1W", "MZ=W", "MZ"] {
            // "MZ" has non-zero leftover bits: "MY" is the only spelling of "f".
            assert_eq!(base32_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn secret_round_trips_and_debug_is_redacted() {
        let secret = TotpSecret::generate();
        let text = secret.to_base32();
        assert_eq!(text.len(), 32);
        assert_eq!(TotpSecret::from_base32(&text.to_lowercase()), Ok(secret.clone()));
        assert_eq!(TotpSecret::from_base32("MZXW6"), Err(TotpError::WrongLength(3)));
        assert_eq!(format!("{secret:?}"), "TotpSecret(<redacted>)");
    }

    #[test]
    fn provisioning_uri_is_percent_encoded() {
        let secret = TotpSecret::from_bytes(*b"12345678901234567890");
        let uri = provisioning_uri(&secret, "Palisade AI", "zoë@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Palisade%20AI:zo%C3%AB%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Palisade%20AI&algorithm=SHA1&digits=6&period=30"
        );
        let tricky = provisioning_uri(&secret, "A:B&C", "x?y#z");
        assert!(tricky.starts_with("otpauth://totp/A%3AB%26C:x%3Fy%23z?"), "{tricky}");
    }

    proptest! {
        #[test]
        fn base32_round_trips(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let encoded = base32_encode(&data);
            prop_assert!(!encoded.contains('='));
            prop_assert_eq!(base32_decode(&encoded), Some(data.clone()));
            prop_assert_eq!(base32_decode(&encoded.to_lowercase()), Some(data));
        }

        #[test]
        fn base32_decode_never_panics(text in "\\PC{0,80}") {
            let _ = base32_decode(&text);
        }

        #[test]
        fn verify_never_panics(code in "\\PC{0,12}", time in any::<u64>(), last in proptest::option::of(any::<u64>())) {
            let _ = verify(&TotpSecret::from_bytes([7; SECRET_LEN]), &code, time, last);
        }
    }
}
