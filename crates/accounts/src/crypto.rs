//! Encryption at rest for personal data (phone numbers, e-mail addresses, TOTP secrets)
//! and blind indexes so encrypted values can still be looked up by equality.
//!
//! Cipher: XChaCha20-Poly1305. Its 192-bit nonce can be drawn at random for every
//! encryption with no practical risk of repeating (AES-GCM's 96-bit random nonce is
//! limited to about 2^32 messages per key before a repeat, which loses both
//! confidentiality and integrity), and it is constant-time in software on CPUs without
//! AES instructions.
//!
//! Blob layout: `version (1) | key id (u32 BE) | nonce (24) | ciphertext + tag (16)`.
//! The AAD is the 5-byte header followed by the field name, so a blob copied to another
//! column, or relabelled with another key id, fails to decrypt.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 5;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encrypted value is too short or truncated")]
    Truncated,
    #[error("encrypted value has unknown format version {0}")]
    UnknownVersion(u8),
    #[error("encrypted value names key id {0}, which is not loaded")]
    UnknownKey(u32),
    /// Wrong key, wrong field, or the blob was altered. Deliberately not more specific.
    #[error("encrypted value failed authentication")]
    Authentication,
    #[error("PII key material, entry {entry}: {problem}")]
    KeyMaterial { entry: String, problem: &'static str },
    #[error("PII key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The AEAD keys (by id; the highest id is current) and the blind-index key.
///
/// Debug output shows key ids only.
#[derive(Clone)]
pub struct PiiKeys {
    keys: BTreeMap<u32, [u8; KEY_LEN]>,
    current: u32,
    /// Never rotated: a blind index is looked up by recomputing it from the value, so a
    /// new key would make every stored index unfindable until all rows were rewritten
    /// (and rows can only be rewritten after being found).
    blind_index_key: [u8; KEY_LEN],
}

impl fmt::Debug for PiiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiKeys")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .field("blind_index_key", &"<redacted>")
            .finish()
    }
}

impl PiiKeys {
    /// Fresh key material: AEAD key id 1 and a blind-index key.
    pub fn generate() -> Self {
        Self { keys: BTreeMap::from([(1, crate::random_bytes())]), current: 1, blind_index_key: crate::random_bytes() }
    }

    /// Loads the key file at `path`, or creates it (mode 0600, parent must exist) with
    /// fresh keys. The flag is `true` when the file was created: the caller should log
    /// that loudly, because data encrypted under a lost file cannot be recovered.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), CryptoError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::parse(&text)?, false)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let keys = Self::generate();
                keys.write_new(path)?;
                Ok((keys, true))
            }
            Err(source) => Err(CryptoError::Io { path: path.to_owned(), source }),
        }
    }

    /// Reads key material from an environment variable: the same `name = base64` entries
    /// as the file, separated by `;` or newlines, e.g.
    /// `blind_index=…;key.1=…;key.2=…`.
    pub fn from_env_value(value: &str) -> Result<Self, CryptoError> {
        Self::parse(value)
    }

    /// Writes the key file (e.g. after [`Self::rotate`]): a temporary file with mode 0600
    /// renamed over `path`, so a crash leaves the old file or the new one, never half.
    pub fn save(&self, path: &Path) -> Result<(), CryptoError> {
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        self.write_new(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|source| CryptoError::Io { path: path.to_owned(), source })
    }

    /// Adds a new AEAD key and makes it current. Old keys stay for decryption; re-encrypt
    /// rows for which [`Self::needs_rotation`] is true, then (optionally) drop old keys
    /// from the file by hand. Returns the new key id.
    pub fn rotate(&mut self) -> u32 {
        let id = self.current.saturating_add(1);
        self.keys.insert(id, crate::random_bytes());
        self.current = id;
        id
    }

    /// Id of the key new blobs are encrypted under.
    pub fn current_key_id(&self) -> u32 {
        self.current
    }

    /// Encrypts `plaintext` for column `field` under the current key with a random nonce.
    pub fn encrypt(&self, field: &str, plaintext: &[u8]) -> Vec<u8> {
        let header = header(self.current);
        let nonce: [u8; NONCE_LEN] = crate::random_bytes();
        let aad = aad(&header, field);
        let cipher = XChaCha20Poly1305::new((&self.keys[&self.current]).into());
        // Encryption fails only for messages beyond ~256 GiB, far past any PII field.
        let sealed = match cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad }) {
            Ok(sealed) => sealed,
            Err(_) => panic!("XChaCha20-Poly1305 refused a {}-byte message", plaintext.len()),
        };
        let mut blob = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
        blob.extend_from_slice(&header);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        blob
    }

    /// Decrypts a blob made by [`Self::encrypt`] for the same `field`, under whichever
    /// loaded key it names.
    pub fn decrypt(&self, field: &str, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key_id = parse_header(blob)?;
        let key = self.keys.get(&key_id).ok_or(CryptoError::UnknownKey(key_id))?;
        let (header, rest) = blob.split_at(HEADER_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Truncated)?;
        let aad = aad(header, field);
        XChaCha20Poly1305::new(key.into())
            .decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| CryptoError::Authentication)
    }

    /// True when `blob` is not under the current key (or is unreadable), i.e. the row
    /// should be re-encrypted.
    pub fn needs_rotation(&self, blob: &[u8]) -> bool {
        parse_header(blob).map_or(true, |id| id != self.current)
    }

    /// A digest naming the blind-index key without revealing it: every process sharing
    /// a database must show the same one, or accounts written by one are not found by
    /// the other.
    pub fn index_fingerprint(&self) -> String {
        self.blind_index("palisade key fingerprint", "v1")[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Keyed, deterministic index of a normalised value (e.g. `Email::normalized`,
    /// `Phone::e164`), for equality lookups and uniqueness without storing plaintext.
    /// The field name is mixed in, so equal values in two columns index differently.
    pub fn blind_index(&self, field: &str, normalized_value: &str) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.blind_index_key) else {
            unreachable!("HMAC accepts keys of any length")
        };
        // Length prefix: ("ab", "c") and ("a", "bc") must not collide.
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
        mac.update(normalized_value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn parse(text: &str) -> Result<Self, CryptoError> {
        let mut keys = BTreeMap::new();
        let mut blind_index_key = None;
        for entry in text.split(['\n', ';']).map(str::trim) {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let (name, value) =
                entry.split_once('=').ok_or_else(|| bad(entry_name(entry), "expected `name = base64`"))?;
            let name = name.trim();
            // Decide what the entry is before decoding it, so that a value pasted where a
            // name belongs is never echoed back in an error message.
            let slot = if name == "blind_index" {
                None
            } else if let Some(id) = name.strip_prefix("key.") {
                let id = id.parse::<u32>().ok().filter(|id| *id > 0);
                Some(id.ok_or_else(|| bad(entry_name(name), "key id must be a positive integer"))?)
            } else {
                return Err(bad(entry_name(name), "unknown entry (expected `blind_index` or `key.N`)"));
            };
            let key = decode_key(name, value.trim())?;
            let duplicate = match slot {
                None => blind_index_key.replace(key).is_some(),
                Some(id) => keys.insert(id, key).is_some(),
            };
            if duplicate {
                return Err(bad(name, "appears twice"));
            }
        }
        let blind_index_key = blind_index_key.ok_or_else(|| bad("blind_index", "missing"))?;
        let current = *keys.keys().next_back().ok_or_else(|| bad("key.1", "no `key.N` entry"))?;
        Ok(Self { keys, current, blind_index_key })
    }

    fn to_text(&self) -> String {
        let mut text = String::from(
            "# Palisade PII key material. Keep it secret (mode 0600) and backed up: data\n\
             # encrypted under a lost key cannot be recovered. The highest key.N is current.\n",
        );
        text.push_str(&format!("blind_index = {}\n", BASE64.encode(self.blind_index_key)));
        for (id, key) in &self.keys {
            text.push_str(&format!("key.{id} = {}\n", BASE64.encode(key)));
        }
        text
    }

    /// Creates `path` exclusively with mode 0600 from the start (never world-readable,
    /// not even for an instant) and writes the key material.
    fn write_new(&self, path: &Path) -> Result<(), CryptoError> {
        let io = |source| CryptoError::Io { path: path.to_owned(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        file.write_all(self.to_text().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

fn header(key_id: u32) -> [u8; HEADER_LEN] {
    let id = key_id.to_be_bytes();
    [VERSION, id[0], id[1], id[2], id[3]]
}

fn parse_header(blob: &[u8]) -> Result<u32, CryptoError> {
    if blob.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Truncated);
    }
    if blob[0] != VERSION {
        return Err(CryptoError::UnknownVersion(blob[0]));
    }
    Ok(u32::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]))
}

fn aad(header: &[u8], field: &str) -> Vec<u8> {
    [header, field.as_bytes()].concat()
}

fn decode_key(name: &str, value: &str) -> Result<[u8; KEY_LEN], CryptoError> {
    let bytes = BASE64.decode(value).map_err(|_| bad(name, "value is not valid base64"))?;
    bytes.try_into().map_err(|_| bad(name, "key must be exactly 32 bytes"))
}

/// The part of a malformed entry that may be shown: never the value, which may be a key.
fn entry_name(entry: &str) -> &str {
    let name = entry.split(char::is_whitespace).next().unwrap_or("");
    if name.len() > 20 { "(unnamed entry)" } else { name }
}

fn bad(entry: &str, problem: &'static str) -> CryptoError {
    CryptoError::KeyMaterial { entry: entry.to_owned(), problem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let keys = PiiKeys::generate();
        let blob = keys.encrypt("phone", b"+8613800138000");
        assert_eq!(blob.len(), HEADER_LEN + NONCE_LEN + 14 + TAG_LEN);
        assert_eq!(keys.decrypt("phone", &blob).expect("decrypts"), b"+8613800138000");
        assert_ne!(keys.encrypt("phone", b"x"), keys.encrypt("phone", b"x"), "random nonce");
    }

    #[test]
    fn wrong_field_fails() {
        let keys = PiiKeys::generate();
        let blob = keys.encrypt("phone", b"+8613800138000");
        assert!(matches!(keys.decrypt("email", &blob), Err(CryptoError::Authentication)));
    }

    #[test]
    fn any_tampering_fails() {
        let keys = PiiKeys::generate();
        let blob = keys.encrypt("email", b"a@example.com");
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(keys.decrypt("email", &bad).is_err(), "flipped byte {i}");
        }
        assert!(matches!(keys.decrypt("email", &blob[..blob.len() - 1]), Err(CryptoError::Authentication)));
        assert!(matches!(keys.decrypt("email", &blob[..20]), Err(CryptoError::Truncated)));
        assert!(matches!(keys.decrypt("email", &[]), Err(CryptoError::Truncated)));
    }

    #[test]
    fn a_different_key_set_cannot_read() {
        let blob = PiiKeys::generate().encrypt("email", b"a@example.com");
        assert!(matches!(PiiKeys::generate().decrypt("email", &blob), Err(CryptoError::Authentication)));
    }

    #[test]
    fn rotation_keeps_old_blobs_readable_and_uses_the_new_key() {
        let mut keys = PiiKeys::generate();
        let old = keys.encrypt("totp", b"secret");
        assert!(!keys.needs_rotation(&old));
        let index_before = keys.blind_index("email", "a@example.com");
        assert_eq!(keys.rotate(), 2);
        assert_eq!(keys.current_key_id(), 2);
        assert!(keys.needs_rotation(&old));
        assert_eq!(keys.decrypt("totp", &old).expect("old blob"), b"secret");
        let new = keys.encrypt("totp", b"secret");
        assert_eq!(&new[..HEADER_LEN], &[VERSION, 0, 0, 0, 2]);
        assert!(!keys.needs_rotation(&new));
        assert_eq!(keys.blind_index("email", "a@example.com"), index_before, "blind index unchanged");
        // A key set that lacks key 2 says so instead of a generic failure.
        let mut without = keys.clone();
        without.keys.remove(&2);
        assert!(matches!(without.decrypt("totp", &new), Err(CryptoError::UnknownKey(2))));
        assert!(keys.needs_rotation(b"garbage"));
    }

    #[test]
    fn blind_index_is_deterministic_and_field_separated() {
        let keys = PiiKeys::generate();
        let a = keys.blind_index("email", "a@example.com");
        assert_eq!(a, keys.blind_index("email", "a@example.com"));
        assert_ne!(a, keys.blind_index("phone", "a@example.com"));
        assert_ne!(a, keys.blind_index("email", "b@example.com"));
        assert_ne!(keys.blind_index("ab", "c"), keys.blind_index("a", "bc"));
        assert_ne!(a, PiiKeys::generate().blind_index("email", "a@example.com"), "keyed");
    }

    #[test]
    fn debug_never_shows_key_material() {
        let keys = PiiKeys::generate();
        let debug = format!("{keys:?}");
        assert_eq!(debug, "PiiKeys { key_ids: [1], current: 1, blind_index_key: \"<redacted>\" }");
        assert!(!debug.contains(&BASE64.encode(keys.blind_index_key)));
    }

    #[test]
    fn load_or_generate_creates_a_private_file_then_reads_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pii.keys");
        let (first, generated) = PiiKeys::load_or_generate(&path).expect("create");
        assert!(generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let blob = first.encrypt("phone", b"+33123456789");
        let (second, generated) = PiiKeys::load_or_generate(&path).expect("load");
        assert!(!generated);
        assert_eq!(second.decrypt("phone", &blob).expect("same keys"), b"+33123456789");
    }

    #[test]
    fn rotated_keys_survive_save_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pii.keys");
        let (mut keys, _) = PiiKeys::load_or_generate(&path).expect("create");
        let old = keys.encrypt("email", b"old");
        keys.rotate();
        keys.save(&path).expect("save");
        let (loaded, generated) = PiiKeys::load_or_generate(&path).expect("load");
        assert!(!generated);
        assert_eq!(loaded.current_key_id(), 2);
        assert_eq!(loaded.decrypt("email", &old).expect("old"), b"old");
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn env_value_uses_the_same_entries() {
        let keys = PiiKeys::generate();
        let env = keys.to_text().replace('\n', ";");
        let parsed = PiiKeys::from_env_value(&env).expect("parses");
        let blob = keys.encrypt("email", b"x");
        assert_eq!(parsed.decrypt("email", &blob).expect("same"), b"x");
        assert_eq!(parsed.blind_index("f", "v"), keys.blind_index("f", "v"));
    }

    #[test]
    fn malformed_key_material_names_the_entry_but_not_the_value() {
        let k = BASE64.encode([7u8; 32]);
        let short = BASE64.encode([7u8; 16]);
        let cases = [
            (format!("key.1={k}"), "blind_index"),
            (format!("blind_index={k}"), "key.1"),
            (format!("blind_index={k};key.0={k}"), "key.0"),
            (format!("blind_index={k};key.x={k}"), "key.x"),
            (format!("blind_index={k};key.1={short}"), "key.1"),
            (format!("blind_index={k};key.1=%%%"), "key.1"),
            (format!("blind_index={k};key.1={k};key.1={k}"), "key.1"),
            (format!("blind_index={k};blind_index={k};key.1={k}"), "blind_index"),
            (format!("blind_index={k};aead={k}"), "aead"),
            (format!("blind_index={k};{k}"), "(unnamed entry)"),
        ];
        for (text, entry) in cases {
            match PiiKeys::from_env_value(&text) {
                Err(err @ CryptoError::KeyMaterial { .. }) => {
                    let msg = err.to_string();
                    assert!(msg.contains(entry), "{msg} should name {entry}");
                    assert!(!msg.contains(&k) && !msg.contains(&short), "{msg} leaks a key");
                }
                other => panic!("{text}: expected KeyMaterial error, got {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip_any_input(field in "[a-z_]{0,16}", plaintext in proptest::collection::vec(any::<u8>(), 0..256)) {
            let keys = PiiKeys::generate();
            let blob = keys.encrypt(&field, &plaintext);
            prop_assert_eq!(keys.decrypt(&field, &blob).ok(), Some(plaintext));
        }

        #[test]
        fn decrypt_never_panics_on_garbage(blob in proptest::collection::vec(any::<u8>(), 0..128)) {
            let keys = PiiKeys::generate();
            prop_assert!(keys.decrypt("f", &blob).is_err());
        }
    }
}
