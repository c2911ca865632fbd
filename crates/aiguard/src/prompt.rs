//! A protected system prompt, indexed once at configuration load: the set of its character
//! n-grams (plain, rot13, reversed, Caesar, Atbash, each word spelled backwards, without
//! vowels) that the leak scanner looks up for every byte of a reply.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::config::{LeakAction, LeakConfig};

/// Variant bit: the n-gram occurs in the prompt as written.
pub(crate) const PLAIN: u8 = 1;
/// Variant bit: the n-gram occurs in the rot13 of the prompt.
pub(crate) const ROT13: u8 = 2;
/// Variant bit: the n-gram occurs in the prompt read backwards.
pub(crate) const REVERSED: u8 = 4;
/// Variant bit: the n-gram occurs in the prompt's Caesar cipher (every letter three on).
pub(crate) const CAESAR: u8 = 8;
/// Variant bit: the n-gram occurs in the prompt's Atbash cipher (`a`↔`z`, `b`↔`y` …).
pub(crate) const ATBASH: u8 = 16;
/// Variant bit: the n-gram occurs in the prompt with each word spelled backwards, the
/// words in their order.
pub(crate) const WORDS_BACKWARDS: u8 = 32;
/// Variant bit: the n-gram occurs in the prompt with its vowels left out (`Y r Nmbs`).
pub(crate) const NO_VOWELS: u8 = 64;
/// Each is a transformation a model can be asked to recite its prompt through, cheap
/// enough to index: one more table entry per prompt n-gram, looked up by the same key.
pub(crate) const VARIANTS: [u8; 7] = [PLAIN, ROT13, REVERSED, CAESAR, ATBASH, WORDS_BACKWARDS, NO_VOWELS];

pub(crate) use crate::normalize::{atbash_letter, normalize, rot13_char, shift_letter};

/// One distinct prompt n-gram: which variants contain it and its slot in the per-request
/// "seen" bitset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) mask: u8,
    pub(crate) id: u32,
}

/// Keys are n-grams of at most eight bytes packed into a `u64`, so the key is the n-gram
/// itself and needs only a cheap mix (splitmix64's finaliser) to spread over buckets. The
/// table is built from the operator's prompt, not from client input, so there is no
/// collision flooding to defend against.
#[derive(Default)]
pub(crate) struct PackedKeyHasher(u64);

impl Hasher for PackedKeyHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type NgramTable = HashMap<u64, Entry, BuildHasherDefault<PackedKeyHasher>>;

/// An operator system prompt together with its leak-detection index and the scanner
/// settings. Build one per configured prompt when the configuration loads and share it
/// (`Arc`) across requests; building costs a few microseconds per prompt byte, scanning
/// a reply then allocates only a small per-request state.
pub struct ProtectedPrompt {
    text: String,
    pub(crate) settings: LeakConfig,
    pub(crate) table: NgramTable,
    /// Distinct n-grams per variant, and how many of them a reply must contain for the
    /// containment rule to fire.
    pub(crate) containment_need: [u32; VARIANTS.len()],
    /// Consecutive matching n-grams that make a run long enough to be a leak.
    pub(crate) run_needed: u32,
    /// Mask keeping the low `ngram` bytes of a packed key.
    pub(crate) key_mask: u64,
    /// One-hash Bloom filter over the table's keys, about 16 bits per key: most n-grams of
    /// a reply are not in the prompt, and this answers them with one multiply and one bit
    /// test instead of a hash-table probe.
    filter: Vec<u64>,
    filter_shift: u32,
    /// False when the prompt normalises to fewer than `min_run` characters: only the
    /// canary protects it then.
    pub(crate) overlap_enabled: bool,
    /// Word-level index for matching that does not depend on word order.
    pub(crate) words: WordIndex,
}

/// The prompt's words (normalised, hashed): which pairs of them stand next to each other,
/// in which order, and which are content words for the word-set containment rule.
#[derive(Debug, Default)]
pub(crate) struct WordIndex {
    /// Word hash to dense id.
    pub(crate) ids: HashMap<u64, u32, BuildHasherDefault<PackedKeyHasher>>,
    /// Unordered pair of adjacent word hashes to [`FORWARD`] / [`BACKWARD`] flags.
    pub(crate) pairs: HashMap<u64, u8, BuildHasherDefault<PackedKeyHasher>>,
    /// Per id: a content word (four or more normalised bytes).
    pub(crate) content: Vec<bool>,
    /// Reply words a window spans, and the distinct content words of the prompt a window
    /// must hold to be a (reordered) recitation; 0 disables the rule (short prompts).
    pub(crate) window: usize,
    pub(crate) window_need: u32,
}

/// Pair flag: the first word precedes the second in the prompt.
pub(crate) const FORWARD: u8 = 1;
/// Pair flag: the second word precedes the first.
pub(crate) const BACKWARD: u8 = 2;

/// The unordered key of two adjacent word hashes, and the flag for their order.
#[inline]
pub(crate) fn pair_key(first: u64, second: u64) -> (u64, u8) {
    if first <= second {
        (first.rotate_left(17) ^ second.wrapping_mul(0x9e37_79b9_7f4a_7c15), FORWARD)
    } else {
        (second.rotate_left(17) ^ first.wrapping_mul(0x9e37_79b9_7f4a_7c15), BACKWARD)
    }
}

impl WordIndex {
    fn new(text: &str) -> Self {
        let mut index = Self::default();
        let mut prev: Option<u64> = None;
        let mut total = 0usize;
        for word in crate::normalize::words(text) {
            let h = crate::normalize::word_hash(&word);
            let next = index.ids.len() as u32;
            index.ids.entry(h).or_insert_with(|| {
                index.content.push(word.len() >= 4);
                next
            });
            if let Some(p) = prev {
                let (key, flag) = pair_key(p, h);
                *index.pairs.entry(key).or_default() |= flag;
            }
            prev = Some(h);
            total += 1;
        }
        let content = index.content.iter().filter(|c| **c).count();
        if content >= 12 {
            index.window = (2 * total).clamp(32, 1024);
            index.window_need = ((content as f64 * 0.6).ceil() as u32).max(8);
        }
        index
    }

    #[inline]
    pub(crate) fn id(&self, hash: u64) -> Option<u32> {
        self.ids.get(&hash).copied()
    }
}

impl std::fmt::Debug for ProtectedPrompt {
    // The prompt text is the secret this crate protects: keep it out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectedPrompt")
            .field("bytes", &self.text.len())
            .field("ngrams", &self.table.len())
            .field("overlap_enabled", &self.overlap_enabled)
            .field("words", &self.words.ids.len())
            .finish()
    }
}

impl ProtectedPrompt {
    /// Indexes `text` with the given settings. Settings are assumed validated
    /// ([`crate::GuardConfig::validate`]); out-of-range values are clamped, not trusted.
    pub fn new(text: &str, settings: &LeakConfig) -> Self {
        let mut settings = *settings;
        settings.ngram = settings.ngram.clamp(4, 8);
        settings.min_run = settings.min_run.max(settings.ngram + 1);
        let n = settings.ngram;
        // Each variant is the transformation applied to the raw prompt, then normalised the
        // way a reply is: a reply that is rot13(prompt) normalises to exactly this.
        let norm = normalize(text);
        let rot = normalize(&text.chars().map(rot13_char).collect::<String>());
        let rev = normalize(&text.chars().rev().collect::<String>());
        let caesar = normalize(&text.chars().map(|c| shift_letter(c, 3)).collect::<String>());
        let atbash = normalize(&text.chars().map(atbash_letter).collect::<String>());
        let words_backwards = normalize(&words_spelled_backwards(text));
        let no_vowels = normalize(&text.chars().filter(|c| !"aeiouAEIOU".contains(*c)).collect::<String>());

        let mut table = NgramTable::default();
        let mut totals = [0u32; VARIANTS.len()];
        for (variant, bytes) in [
            (PLAIN, &norm),
            (ROT13, &rot),
            (REVERSED, &rev),
            (CAESAR, &caesar),
            (ATBASH, &atbash),
            (WORDS_BACKWARDS, &words_backwards),
            (NO_VOWELS, &no_vowels),
        ] {
            for window in bytes.windows(n) {
                let key = window.iter().fold(0u64, |k, &b| (k << 8) | u64::from(b));
                let next_id = table.len() as u32;
                let entry = table.entry(key).or_insert(Entry { mask: 0, id: next_id });
                if entry.mask & variant == 0 {
                    entry.mask |= variant;
                    totals[variant.trailing_zeros() as usize] += 1;
                }
            }
        }
        let containment_need = totals.map(|t| ((f64::from(t) * settings.containment).ceil() as u32).max(1));
        let key_mask = if n >= 8 { u64::MAX } else { (1u64 << (8 * n)) - 1 };
        let filter_bits = (table.len() * 16).next_power_of_two().clamp(4096, 1 << 22);
        let filter_shift = 64 - filter_bits.trailing_zeros();
        let mut filter = vec![0u64; filter_bits / 64];
        for &key in table.keys() {
            let bit = filter_index(key, filter_shift);
            filter[bit / 64] |= 1 << (bit % 64);
        }
        Self {
            filter,
            filter_shift,
            text: text.to_owned(),
            run_needed: (settings.min_run - n + 1) as u32,
            overlap_enabled: norm.len() >= settings.min_run,
            settings,
            table,
            containment_need,
            key_mask,
            words: WordIndex::new(text),
        }
    }

    /// The prompt as the operator wrote it (what [`crate::inject`] wraps).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What the scanners do on a leak.
    pub fn on_leak(&self) -> LeakAction {
        self.settings.on_leak
    }

    /// The table entry for a packed n-gram, if the prompt has it.
    #[inline]
    pub(crate) fn lookup(&self, key: u64) -> Option<&Entry> {
        let bit = filter_index(key, self.filter_shift);
        if self.filter[bit / 64] & (1 << (bit % 64)) == 0 {
            return None;
        }
        self.table.get(&key)
    }

    /// Number of distinct n-gram slots; the per-request state holds one bit per slot.
    pub(crate) fn slots(&self) -> usize {
        self.table.len()
    }
}

/// Every word (a run between spaces, so `travel-planning` is one) spelled backwards in
/// place.
fn words_spelled_backwards(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = Vec::new();
    for c in text.chars() {
        if !c.is_whitespace() {
            word.push(c);
        } else {
            out.extend(word.drain(..).rev());
            out.push(c);
        }
    }
    out.extend(word.drain(..).rev());
    out
}

#[inline]
fn filter_index(key: u64, shift: u32) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_holds_all_variants() {
        let p = ProtectedPrompt::new("You are the helpful assistant of Acme Bank. Be kind.", &LeakConfig::default());
        let key = |s: &[u8]| s.iter().fold(0u64, |k, &b| (k << 8) | u64::from(b));
        assert_eq!(p.table.get(&key(b"youareth")).map(|e| e.mask & PLAIN), Some(PLAIN));
        assert_eq!(p.table.get(&key(b"heipfuia")).map(|e| e.mask & PLAIN), Some(PLAIN), "l and 1 read as i");
        assert_eq!(p.table.get(&key(b"ibhnergu")).map(|e| e.mask & ROT13), Some(ROT13));
        assert_eq!(p.table.get(&key(b"knabemca")).map(|e| e.mask & REVERSED), Some(REVERSED));
        assert_eq!(p.table.get(&key(b"brxduhwk")).map(|e| e.mask & CAESAR), Some(CAESAR));
        assert_eq!(p.table.get(&key(b"bifzivgs")).map(|e| e.mask & ATBASH), Some(ATBASH));
        assert_eq!(p.table.get(&key(b"uoyeraeh")).map(|e| e.mask & WORDS_BACKWARDS), Some(WORDS_BACKWARDS));
        assert_eq!(p.table.get(&key(b"yrthhipf")).map(|e| e.mask & NO_VOWELS), Some(NO_VOWELS));
        assert!(p.overlap_enabled);
        assert!(!ProtectedPrompt::new("Be terse.", &LeakConfig::default()).overlap_enabled);
        assert!(!format!("{p:?}").contains("Acme"), "debug output must not show the prompt");
    }
}
