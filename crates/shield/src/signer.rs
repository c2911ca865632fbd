//! HMAC-SHA256 sealing of the small stateless tokens the shield hands to clients
//! (proof-of-work challenges, clearances, waiting-room tickets and passes).
//!
//! A token is unpadded base64url of `payload ‖ HMAC-SHA256(key, purpose label ‖ payload)`.
//! The purpose label keeps token kinds apart: a clearance can never be presented as a
//! challenge, even though both are signed with the same key. Every gateway node must hold
//! the same key; during a rotation, nodes sign with the new key and still accept the old one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const TAG_BYTES: usize = 32;

/// What a token is for; part of the MAC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    PowChallenge,
    Clearance,
    WaitingTicket,
    AdmissionPass,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::PowChallenge => b"palisade/shield/pow-challenge/v1",
            Self::Clearance => b"palisade/shield/clearance/v1",
            Self::WaitingTicket => b"palisade/shield/waiting-ticket/v1",
            Self::AdmissionPass => b"palisade/shield/admission-pass/v1",
        }
    }
}

/// Why a token was refused. Callers fold these into their own error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    #[error("malformed token")]
    Malformed,
    #[error("token signature does not verify")]
    Forged,
}

/// Signs and checks tokens with a 32-byte secret (and optionally the previous one).
#[derive(Clone)]
pub struct Signer {
    current: Hmac<Sha256>,
    previous: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

fn keyed(key: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail; the fallback only keeps the
    // function total.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

impl Signer {
    pub fn new(key: [u8; 32]) -> Self {
        Self { current: keyed(&key), previous: None }
    }

    /// Also accept tokens signed with `key` (the key being rotated out).
    pub fn with_previous(mut self, key: [u8; 32]) -> Self {
        self.previous = Some(keyed(&key));
        self
    }

    fn tag(mac: &Hmac<Sha256>, purpose: Purpose, payload: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = mac.clone();
        mac.update(purpose.label());
        mac.update(&[0]);
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    pub(crate) fn seal<const N: usize>(&self, purpose: Purpose, payload: &[u8; N]) -> String {
        let mut raw = Vec::with_capacity(N + TAG_BYTES);
        raw.extend_from_slice(payload);
        raw.extend_from_slice(&Self::tag(&self.current, purpose, payload));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The payload of a token sealed for `purpose`, checked in constant time.
    pub(crate) fn open<const N: usize>(&self, purpose: Purpose, token: &str) -> Result<[u8; N], SealError> {
        // Exact length first: oversized input is refused before any decoding work.
        if Some(token.len()) != base64::encoded_len(N + TAG_BYTES, false) {
            return Err(SealError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| SealError::Malformed)?;
        let (payload, tag) = raw.split_at_checked(N).ok_or(SealError::Malformed)?;
        let payload: [u8; N] = payload.try_into().map_err(|_| SealError::Malformed)?;
        let ok = |mac: &Hmac<Sha256>| bool::from(Self::tag(mac, purpose, &payload).ct_eq(tag));
        if ok(&self.current) || self.previous.as_ref().is_some_and(ok) { Ok(payload) } else { Err(SealError::Forged) }
    }
}

/// The key that signs one epoch's tokens: `key` bound to `epoch`. A gateway that
/// forgets what was redeemed and spent when it restarts (its replay guard and ledger
/// live in memory) starts a new epoch, so nothing issued before can be presented again
/// (a redeemed challenge, a spent clearance, a used pass). Nodes that share their
/// replay state (a fleet) share the epoch too.
pub fn epoch_key(key: &[u8; 32], epoch: u64) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(b"palisade/shield/epoch/v1");
    mac.update(&epoch.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// A random epoch, for a gateway whose replay state lives in its own memory.
pub fn fresh_epoch() -> u64 {
    u64::from_be_bytes(random_bytes())
}

/// `N` fresh bytes from the operating system's CSPRNG.
///
/// Panics if the OS generator fails. On the platforms we ship (Linux `getrandom(2)`) that
/// only happens on a broken kernel, and there is nothing safe to fall back to: a predictable
/// challenge seed or token id would be worse than stopping. (Same policy as `accounts`.)
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(err) = getrandom::fill(&mut buf) {
        panic!("operating system random generator failed: {err}");
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_epoch_cannot_open_a_token() {
        let (a, b) = (Signer::new(epoch_key(&[7; 32], 1)), Signer::new(epoch_key(&[7; 32], 2)));
        let t = a.seal(Purpose::Clearance, &[1, 2, 3]);
        assert_eq!(a.open::<3>(Purpose::Clearance, &t), Ok([1, 2, 3]));
        assert_eq!(b.open::<3>(Purpose::Clearance, &t), Err(SealError::Forged));
    }

    #[test]
    fn seal_open_round_trip_and_purposes_are_separate() {
        let s = Signer::new([7; 32]);
        let t = s.seal(Purpose::Clearance, &[1, 2, 3]);
        assert_eq!(s.open::<3>(Purpose::Clearance, &t), Ok([1, 2, 3]));
        assert_eq!(s.open::<3>(Purpose::PowChallenge, &t), Err(SealError::Forged));
        assert_eq!(s.open::<4>(Purpose::Clearance, &t), Err(SealError::Malformed));
        assert_eq!(Signer::new([8; 32]).open::<3>(Purpose::Clearance, &t), Err(SealError::Forged));
        assert_eq!(
            s.open::<3>(Purpose::Clearance, &t.replace(|c: char| c.is_alphanumeric(), "!")),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn rotation_accepts_the_previous_key() {
        let old = Signer::new([1; 32]);
        let t = old.seal(Purpose::WaitingTicket, &[9; 5]);
        let new = Signer::new([2; 32]).with_previous([1; 32]);
        assert_eq!(new.open::<5>(Purpose::WaitingTicket, &t), Ok([9; 5]));
        assert_eq!(format!("{new:?}"), "Signer(<redacted>)");
    }
}
