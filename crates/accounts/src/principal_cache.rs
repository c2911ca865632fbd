//! A short-lived, bounded memory of who a presented API key or session token is.
//!
//! Without it every `/v1` request costs two store reads before it reaches the
//! upstream, which on the embedded SQLite store is most of the proxy's added
//! latency. Entries are keyed by a 128-bit keyed hash of the presented credential
//! (never the credential itself; two SipHash-1-3 digests under random per-process
//! keys, so nobody outside the process can aim two credentials at one entry) and live
//! `ttl` at most. A keyed hash rather than SHA-256: it runs on every request of a busy
//! key, and costs a few hundred instructions instead of thousands. This process forgets everything at
//! once when anything that could change an answer happens here (a revoked key or
//! session, an MFA change); on another node such a change is seen within `ttl`.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::principal::Principal;

/// Which kind of credential was presented: a key and a session token with the
/// same text must not share an entry.
#[derive(Clone, Copy)]
pub enum Credential {
    ApiKey,
    Session,
}

/// Credential digest → (the answer, when it stops being trusted).
type Entries = HashMap<u128, (Option<Arc<Principal>>, Instant), BuildHasherDefault<Digest>>;

/// The map's hash of a key that is already a keyed digest: its low 64 bits. Nobody outside
/// the process can predict those either, so nobody can aim credentials at one bucket, and
/// hashing them again with SipHash would only repeat the work.
#[derive(Default)]
struct Digest(u64);

impl Hasher for Digest {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is ever called (the key type is `u128`); any other input is
        // still folded in rather than dropped.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, digest: u128) {
        self.0 = digest as u64;
    }
}

pub struct PrincipalCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Entries>,
    /// Two independent keys: together a 128-bit digest.
    keys: [RandomState; 2],
}

impl PrincipalCache {
    /// `ttl` zero turns the cache off. `capacity` bounds memory: when full, the
    /// whole map is dropped (a cold start costs one store read per credential,
    /// which is what every request costs without the cache).
    pub fn new(ttl: Duration, capacity: usize) -> PrincipalCache {
        PrincipalCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::default()),
            keys: [RandomState::new(), RandomState::new()],
        }
    }

    fn key(&self, kind: Credential, presented: &str) -> u128 {
        let digest = |state: &RandomState| {
            let mut h = state.build_hasher();
            h.write_u8(kind as u8);
            h.write(presented.as_bytes());
            h.finish()
        };
        u128::from(digest(&self.keys[0])) << 64 | u128::from(digest(&self.keys[1]))
    }

    /// The remembered answer, `Some(None)` meaning "known invalid".
    pub fn get(&self, kind: Credential, presented: &str, now: Instant) -> Option<Option<Arc<Principal>>> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = self.key(kind, presented);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            Some((principal, expires)) if *expires > now => Some(principal.clone()),
            _ => None,
        }
    }

    pub fn put(&self, kind: Credential, presented: &str, principal: Option<Arc<Principal>>, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let key = self.key(kind, presented);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (principal, now + self.ttl));
    }

    /// A holder remembered for `credential` whose entry lapsed less than `grace` ago: for
    /// when the store cannot be asked. Known-invalid answers are not kept past their time.
    pub fn stale(&self, kind: Credential, presented: &str, now: Instant, grace: Duration) -> Option<Arc<Principal>> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = self.key(kind, presented);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            Some((Some(principal), expires)) if *expires + grace > now => Some(principal.clone()),
            _ => None,
        }
    }

    /// Forget every answer: called after any change to keys, sessions or users.
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forget the answers naming one of `users` (and every known-invalid one, which names
    /// no one): for a change to a few accounts that must not send every other caller back
    /// to the store, as a cohort flagged during a flood would.
    pub fn forget_users(&self, users: &[i64]) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (principal, _)| principal.as_ref().is_some_and(|p| !users.contains(&p.user_id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::UserStatus;

    fn principal(id: i64) -> Arc<Principal> {
        Arc::new(Principal {
            user_id: id,
            status: UserStatus::Active,
            key_prefix: None,
            scopes: vec![],
            rpm_limit: None,
            tenure: Default::default(),
        })
    }

    #[test]
    fn answers_until_expiry_and_separates_credential_kinds() {
        let cache = PrincipalCache::new(Duration::from_secs(5), 10);
        let t0 = Instant::now();
        cache.put(Credential::ApiKey, "pal_x", Some(principal(1)), t0);
        assert_eq!(cache.get(Credential::ApiKey, "pal_x", t0), Some(Some(principal(1))));
        assert_eq!(cache.get(Credential::Session, "pal_x", t0), None);
        assert_eq!(cache.get(Credential::ApiKey, "pal_x", t0 + Duration::from_secs(5)), None);
        cache.put(Credential::Session, "bad", None, t0);
        assert_eq!(cache.get(Credential::Session, "bad", t0), Some(None));
        cache.clear();
        assert_eq!(cache.get(Credential::Session, "bad", t0), None);
    }

    #[test]
    fn a_lapsed_holder_is_kept_for_the_grace_only_and_never_an_invalid_answer() {
        let cache = PrincipalCache::new(Duration::from_secs(5), 10);
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        cache.put(Credential::ApiKey, "pal_x", Some(principal(1)), t0);
        cache.put(Credential::ApiKey, "pal_bad", None, t0);
        assert_eq!(cache.stale(Credential::ApiKey, "pal_x", t0 + Duration::from_secs(64), grace), Some(principal(1)));
        assert_eq!(cache.stale(Credential::ApiKey, "pal_x", t0 + Duration::from_secs(65), grace), None);
        assert_eq!(cache.stale(Credential::ApiKey, "pal_bad", t0, grace), None);
        cache.clear();
        assert_eq!(cache.stale(Credential::ApiKey, "pal_x", t0, grace), None, "a revocation here forgets it");
    }

    #[test]
    fn forgetting_some_users_keeps_everyone_else() {
        let cache = PrincipalCache::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        cache.put(Credential::ApiKey, "a", Some(principal(1)), now);
        cache.put(Credential::ApiKey, "b", Some(principal(2)), now);
        cache.put(Credential::Session, "c", Some(principal(3)), now);
        cache.put(Credential::ApiKey, "bogus", None, now);
        cache.forget_users(&[1, 3]);
        assert!(cache.get(Credential::ApiKey, "a", now).is_none());
        assert!(cache.get(Credential::Session, "c", now).is_none());
        assert!(cache.get(Credential::ApiKey, "bogus", now).is_none());
        assert_eq!(cache.get(Credential::ApiKey, "b", now).flatten().map(|p| p.user_id), Some(2));
    }

    #[test]
    fn never_holds_more_than_capacity() {
        let cache = PrincipalCache::new(Duration::from_secs(5), 3);
        let t0 = Instant::now();
        for i in 0..10 {
            cache.put(Credential::ApiKey, &format!("k{i}"), None, t0);
            assert!(cache.entries.lock().unwrap().len() <= 3);
        }
        assert_eq!(cache.get(Credential::ApiKey, "k9", t0), Some(None));
    }

    #[test]
    fn zero_ttl_disables() {
        let cache = PrincipalCache::new(Duration::ZERO, 3);
        let t0 = Instant::now();
        cache.put(Credential::ApiKey, "k", Some(principal(1)), t0);
        assert_eq!(cache.get(Credential::ApiKey, "k", t0), None);
    }
}
