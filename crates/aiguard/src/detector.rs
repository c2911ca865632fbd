//! The incremental leak detector behind [`crate::LeakScanner`] and [`crate::SseScanner`]:
//! fed one text stream (one field of one choice of one reply) piece by piece, it tracks
//! which byte offsets are decided (safe to release, or redacted) and reports leaks with
//! their offsets.
//!
//! Every character goes through [`crate::normalize`] into the plain stream, and through
//! four streaming decoders ([`crate::decode`]: base64, base32, hex, escapes) whose output
//! is normalised and matched the same way, nested up to [`MAX_DEPTH`] levels (hex inside
//! base64, …). Each stream matches, per normalised byte: a packed n-gram key against the
//! prompt's n-grams (plain, rot13, reversed, ciphers, without vowels), run counters, and
//! KMP steps for the canary needles; per word: adjacent word pairs of the prompt in either
//! order (reversed or reordered recitation), the prompt's words in order with a filler
//! word between, and a sliding window of the prompt's content words.
//!
//! Memory is a few hundred bytes per stream plus one bit per prompt n-gram; decoded streams
//! are allocated only once their decoder first produces text. Work per reply character is
//! bounded: each decoder emits at most one character per character it is fed, so nesting
//! multiplies the cost by a constant, never by the input.

use std::sync::Arc;

use serde::Serialize;

use crate::canary::Canary;
use crate::config::LeakAction;
use crate::decode::{Decoder, ENCODINGS, Encoding, JsonText};
use crate::normalize::{CharClass, FNV_START, fnv_step, normalize, normalize_char, rot13_char};
use crate::prompt::{
    ATBASH, CAESAR, NO_VOWELS, PLAIN, ProtectedPrompt, REVERSED, ROT13, VARIANTS, WORDS_BACKWARDS, pair_key,
};

/// How the reply gave the prompt away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// The request's canary token or name (any case, separators, look-alikes, rot13,
    /// reversed, or inside any decoded encoding).
    Canary,
    /// A long run of the prompt's text, or most of its n-grams, in the reply.
    Overlap,
    /// The prompt base64-encoded.
    Base64,
    /// The prompt in rot13.
    Rot13,
    /// The prompt written backwards, or each of its words spelled backwards.
    Reversed,
    /// The prompt in the Caesar or the Atbash cipher, or without its vowels.
    Cipher,
    /// The prompt spelled out with separators between the letters.
    SpacedOut,
    /// The prompt base32-encoded.
    Base32,
    /// The prompt as hex bytes (`596f75`, `59 6F 75`, `0x59`, `\x59`).
    Hex,
    /// The prompt percent-encoded, as `\u` / `\x` escapes or HTML character references.
    Escaped,
    /// The prompt's words in another order (backwards, or shuffled).
    Reordered,
}

impl LeakKind {
    /// Stable name for audit events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Overlap => "overlap",
            Self::Base64 => "base64",
            Self::Rot13 => "rot13",
            Self::Reversed => "reversed",
            Self::Cipher => "cipher",
            Self::SpacedOut => "spaced_out",
            Self::Base32 => "base32",
            Self::Hex => "hex",
            Self::Escaped => "escaped",
            Self::Reordered => "reordered",
        }
    }
}

/// One detected leak. Offsets are bytes of the choice's content text (not of the SSE
/// stream), which is what an audit event should record, never the text itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Leak {
    pub kind: LeakKind,
    /// Where the leaked text starts; nothing from here on was released.
    pub start: u64,
    /// Where the scanner was when it became sure.
    pub detected_at: u64,
    /// The choice (`choices[].index`) that leaked; 0 for [`LeakScanner`].
    pub choice: u32,
}

/// Raw offsets of the most recent normalised bytes, to find where a match started and how
/// far back a decoded stream must hold the raw text. Must cover the longest lookback: the
/// normalised canary token (24 bytes), one n-gram, and the default `min_run` (40).
const RING: usize = 64;
/// While redacting, a run of this many consecutive prompt n-grams (or this much canary
/// progress) counts as "the leak is still going on".
const HOT_RUN: u32 = 3;
/// Redaction regions kept per stream; a reply that leaks more often than this is ended.
const MAX_REGIONS: usize = 64;
/// Decoding layers: a decoder's output is decoded once more (base64 of hex, …), no deeper.
pub(crate) const MAX_DEPTH: u8 = 2;
/// Adjacent word pairs of the prompt, in reversed order, that make a reordered recitation
/// (with at least `min_run` normalised bytes among their words).
const MIN_PAIRS: u32 = 5;
/// Canary needles: the token plain, rot13, reversed and in the Caesar and Atbash ciphers;
/// the name plain, rot13, reversed and with its two words swapped.
const MAX_NEEDLES: usize = 9;
/// A decoded stream may hold raw text back at most this many times the configured
/// hold-back, however long its run: the hold-back stays bounded.
const MAX_HOLD_FACTOR: u64 = 8;

/// The canary in the scanner's normalised alphabet, in the shapes a recitation may give it,
/// each with its KMP failure table so matching is one step per byte whatever the chunking.
#[derive(Debug, Clone)]
pub(crate) struct CanaryNeedles {
    needles: Vec<Vec<u8>>,
    fail: Vec<Vec<usize>>,
    /// First byte of each needle: while no match is in progress, any other byte leaves
    /// every KMP state at zero and can be skipped.
    first: Vec<u8>,
    /// The same as a 256-bit set, for the one test most bytes take.
    first_set: [u64; 4],
}

impl CanaryNeedles {
    pub(crate) fn new(canary: &Canary) -> Self {
        let token = canary.as_str();
        let name = canary.name();
        let swapped: String = name.split(' ').rev().collect::<Vec<_>>().join(" ");
        let shapes = [
            token.to_owned(),
            token.chars().map(rot13_char).collect(),
            token.chars().rev().collect(),
            token.chars().map(|c| crate::normalize::shift_letter(c, 3)).collect(),
            token.chars().map(crate::normalize::atbash_letter).collect(),
            name.to_owned(),
            name.chars().map(rot13_char).collect(),
            name.chars().rev().collect(),
            swapped,
        ];
        let needles: Vec<Vec<u8>> = shapes.iter().map(|s| normalize(s)).filter(|n| !n.is_empty()).collect();
        let fail = needles.iter().map(|n| kmp_fail(n)).collect();
        let first: Vec<u8> = needles.iter().map(|n| n[0]).collect();
        let mut first_set = [0u64; 4];
        for &b in &first {
            first_set[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        Self { needles, fail, first, first_set }
    }
}

fn kmp_fail(p: &[u8]) -> Vec<usize> {
    let mut fail = vec![0; p.len()];
    let mut k = 0;
    for i in 1..p.len() {
        while k > 0 && p[i] != p[k] {
            k = fail[k - 1];
        }
        if p[i] == p[k] {
            k += 1;
        }
        fail[i] = k;
    }
    fail
}

/// Where a stream's text came from, for the leak's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Plain,
    Decoded(Encoding),
}

/// Word-level state of one stream.
#[derive(Debug, Clone, Default)]
struct Words {
    hash: u64,
    len: u32,
    start: u64,
    /// The previous word, if it is a prompt word: hash, raw start, normalised length.
    prev: Option<(u64, u64, u32)>,
    /// The word before that, likewise.
    prev2: Option<(u64, u64, u32)>,
    /// The run has used its one word that paired with neither neighbour.
    missed: bool,
    pair_run: u32,
    pair_start: u64,
    pair_bytes: u32,
    backward: bool,
    filled: Filled,
    window: Option<Box<Window>>,
}

/// A run of prompt words in the prompt's order, each pair adjacent there, with at most one
/// other word between two of them in the reply.
#[derive(Debug, Clone, Copy, Default)]
struct Filled {
    /// The run's last prompt word (its hash); `None` when there is no run.
    last: Option<u64>,
    /// Pairs in the run.
    run: u32,
    start: u64,
    bytes: u32,
    /// A word that is not the prompt's came after `last`.
    gap: bool,
    /// The run was reported (once is enough; the rules below get their turn).
    fired: bool,
}

/// The last `window` words of the reply (prompt word ids, `u32::MAX` for others) and how
/// many distinct content words of the prompt they hold.
#[derive(Debug, Clone)]
struct Window {
    ring: Vec<u32>,
    next: usize,
    counts: Vec<u16>,
    distinct: u32,
    fired: bool,
}

/// Matching state over one stream of normalised bytes (the reply itself, or the text
/// decoded from it).
#[derive(Debug, Clone)]
struct NgramStream {
    key: u64,
    /// Normalised bytes seen since the last reset.
    count: u64,
    runs: [u32; VARIANTS.len()],
    run_start: [u64; VARIANTS.len()],
    ring: [u64; RING],
    kmp: [usize; MAX_NEEDLES],
    /// Some KMP state is past zero.
    kmp_live: bool,
    words: Words,
    origin: Origin,
}

impl NgramStream {
    fn new(origin: Origin) -> Self {
        Self {
            key: 0,
            count: 0,
            runs: [0; VARIANTS.len()],
            run_start: [0; VARIANTS.len()],
            ring: [0; RING],
            kmp: [0; MAX_NEEDLES],
            kmp_live: false,
            words: Words::default(),
            origin,
        }
    }

    fn reset(&mut self) {
        let window = self.words.window.take();
        *self = Self::new(self.origin);
        self.words.window = window;
    }

    fn raw_at(&self, back: u64) -> u64 {
        self.ring[((self.count - back) as usize) % RING]
    }
}

/// What one normalised byte (or word) told us.
#[derive(Debug, Default)]
struct Step {
    found: Option<(LeakKind, u64)>,
    hot: bool,
}

fn merge(into: &mut Step, from: Step) {
    into.hot |= from.hot;
    if into.found.is_none() {
        into.found = from.found;
    }
}

/// Containment bookkeeping: one bit per prompt n-gram slot, shared by every stream.
#[derive(Debug, Clone)]
struct Seen {
    bits: Vec<u64>,
    count: [u32; VARIANTS.len()],
    fired: bool,
}

/// What every stream reads: the prompt, the canary and the shared containment bits.
struct Ctx<'a> {
    prompt: &'a ProtectedPrompt,
    canary: Option<&'a CanaryNeedles>,
    seen: &'a mut Seen,
}

/// A decoder, the stream of its output, and (below [`MAX_DEPTH`]) the decoders of that.
#[derive(Debug, Clone)]
struct Layer {
    decoder: Decoder,
    /// Allocated when the decoder first emits.
    stream: Option<Box<NgramStream>>,
    children: Vec<Layer>,
    out: Vec<(char, u64)>,
}

impl Layer {
    fn new(encoding: Encoding) -> Self {
        Self { decoder: Decoder::new(encoding), stream: None, children: Vec::new(), out: Vec::new() }
    }

    #[inline]
    fn feed(&mut self, ch: char, raw: u64, depth: u8, ctx: &mut Ctx<'_>, step: &mut Step) {
        if self.decoder.ignores(ch) {
            return;
        }
        self.feed_slow(ch, raw, depth, ctx, step);
    }

    fn feed_slow(&mut self, ch: char, raw: u64, depth: u8, ctx: &mut Ctx<'_>, step: &mut Step) {
        let was_active = self.decoder.is_active();
        self.decoder.push(ch, raw, &mut self.out);
        if was_active && !self.decoder.is_active() {
            // The run ended: what follows is not a continuation of its text.
            if let Some(s) = &mut self.stream {
                s.reset();
            }
        }
        if self.out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut self.out);
        let origin = Origin::Decoded(self.decoder.encoding());
        let stream = self.stream.get_or_insert_with(|| Box::new(NgramStream::new(origin)));
        if depth < MAX_DEPTH && self.children.is_empty() {
            self.children = ENCODINGS.iter().map(|&e| Layer::new(e)).collect();
        }
        for &(c, r) in &out {
            merge(step, feed_char(stream, ctx, c, r));
            if depth < MAX_DEPTH {
                for child in &mut self.children {
                    child.feed(c, r, depth + 1, ctx, step);
                }
            }
        }
        self.out = out;
        self.out.clear();
    }

    /// The earliest raw offset this layer (or one below it) still needs held back: the
    /// raw text behind the last `back` normalised bytes of an active run, no further back
    /// than `back` characters of this encoding can take (noise that decodes to nothing
    /// readable holds nothing).
    fn hold(&self, back: u64, pos: u64) -> Option<u64> {
        let mut hold = None;
        if self.decoder.is_active()
            && let Some(s) = &self.stream
            && s.count > 0
        {
            let at = s.raw_at(back.min(s.count));
            hold = Some(at.max(pos.saturating_sub(back * self.decoder.expansion())));
        }
        for child in &self.children {
            if let Some(h) = child.hold(back, pos) {
                hold = Some(hold.map_or(h, |x: u64| x.min(h)));
            }
        }
        hold
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing found (or the last redaction closed): release everything older than the
    /// hold-back.
    Clean,
    /// A leak is being redacted; the region grows while the leak goes on.
    Redacting { start: u64, last_hot_end: u64 },
    /// Terminated at a leak: nothing at or after `start` is ever released.
    Tripped,
    /// `finish` was called.
    Finished,
}

/// A half-open byte range of the stream, `[start, end)`, to replace with the marker.
/// `end == u64::MAX` while the region is still open (or forever, after a termination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// One text stream's detector.
#[derive(Debug, Clone)]
pub(crate) struct Detector {
    prompt: Arc<ProtectedPrompt>,
    canary: Option<Arc<CanaryNeedles>>,
    choice: u32,
    seen: Seen,
    plain: NgramStream,
    layers: Vec<Layer>,
    /// Set for a field that carries a JSON document (tool-call arguments): its escapes are
    /// read before anything else sees the text.
    json: Option<JsonText>,
    pos: u64,
    decided: u64,
    state: State,
    regions: Vec<Region>,
}

impl Detector {
    pub(crate) fn new(prompt: Arc<ProtectedPrompt>, canary: Option<Arc<CanaryNeedles>>, choice: u32) -> Self {
        let slots = prompt.slots();
        let canary = if prompt.settings.canary { canary } else { None };
        Self {
            prompt,
            canary,
            choice,
            seen: Seen { bits: vec![0; slots.div_ceil(64)], count: [0; VARIANTS.len()], fired: false },
            plain: NgramStream::new(Origin::Plain),
            layers: ENCODINGS.iter().map(|&e| Layer::new(e)).collect(),
            json: None,
            pos: 0,
            decided: 0,
            state: State::Clean,
            regions: Vec::new(),
        }
    }

    /// A detector for a field whose text is a JSON document, such as a tool call's
    /// arguments: it matches what the document says, not how it is escaped.
    pub(crate) fn reading_json(mut self) -> Self {
        self.json = Some(JsonText::default());
        self
    }

    /// Bytes `[0, decided)` have their final verdict: released as they are, or (inside a
    /// region) replaced. Never decreases.
    pub(crate) fn decided(&self) -> u64 {
        self.decided
    }

    /// Bytes fed so far.
    pub(crate) fn fed(&self) -> u64 {
        self.pos
    }

    pub(crate) fn action(&self) -> LeakAction {
        self.prompt.settings.on_leak
    }

    pub(crate) fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub(crate) fn is_tripped(&self) -> bool {
        self.state == State::Tripped
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished | State::Tripped)
    }

    /// Scans `text`, the next piece of the stream, appending any new leaks to `leaks`.
    pub(crate) fn feed(&mut self, text: &str, leaks: &mut Vec<Leak>) {
        if self.is_finished() {
            return;
        }
        let prompt = self.prompt.clone();
        let canary = self.canary.clone();
        for (i, ch) in text.char_indices() {
            let raw = self.pos + i as u64;
            let end = raw + ch.len_utf8() as u64;
            let (ch, raw) = match &mut self.json {
                None => (ch, raw),
                Some(json) => match json.push(ch, raw) {
                    Some(read) => read,
                    None => continue,
                },
            };
            let mut step = Step::default();
            let mut ctx = Ctx { prompt: &prompt, canary: canary.as_deref(), seen: &mut self.seen };
            merge(&mut step, feed_char(&mut self.plain, &mut ctx, ch, raw));
            for layer in &mut self.layers {
                layer.feed(ch, raw, 1, &mut ctx, &mut step);
            }
            if step.found.is_none() && !step.hot && self.state == State::Clean {
                continue;
            }
            self.on_step(step, end, leaks);
            if self.state == State::Tripped {
                break;
            }
        }
        self.pos += text.len() as u64;
        self.settle();
    }

    /// The stream has ended: close any redaction and decide every byte.
    pub(crate) fn finish(&mut self) {
        match self.state {
            State::Tripped | State::Finished => {}
            State::Redacting { start, last_hot_end } => {
                self.close_region(start, last_hot_end);
                self.state = State::Finished;
                self.decided = self.pos;
            }
            State::Clean => {
                self.state = State::Finished;
                self.decided = self.pos;
            }
        }
    }

    fn on_step(&mut self, step: Step, end: u64, leaks: &mut Vec<Leak>) {
        match self.state {
            State::Clean => {
                let Some((kind, start)) = step.found else { return };
                // Bytes before `decided` are already out; the leak can only be cut from here.
                let start = start.max(self.decided);
                leaks.push(Leak { kind, start, detected_at: end, choice: self.choice });
                if self.prompt.settings.on_leak == LeakAction::Terminate || self.regions.len() >= MAX_REGIONS {
                    self.regions.push(Region { start, end: u64::MAX });
                    self.state = State::Tripped;
                    self.decided = start;
                } else {
                    self.regions.push(Region { start, end: u64::MAX });
                    self.state = State::Redacting { start, last_hot_end: end };
                }
            }
            State::Redacting { start, ref mut last_hot_end } => {
                if step.hot || step.found.is_some() {
                    *last_hot_end = end;
                } else if end - *last_hot_end >= self.prompt.settings.holdback as u64 {
                    let last = *last_hot_end;
                    self.close_region(start, last);
                    self.state = State::Clean;
                }
            }
            State::Tripped | State::Finished => {}
        }
    }

    fn close_region(&mut self, start: u64, end: u64) {
        if let Some(r) = self.regions.last_mut()
            && r.start == start
        {
            r.end = end;
        }
    }

    fn settle(&mut self) {
        let holdback = self.prompt.settings.holdback as u64;
        let next = match self.state {
            State::Clean => {
                let mut next = self.pos.saturating_sub(holdback);
                // An active decoder's text is still being matched: keep the raw text behind
                // its last `min_run` decoded bytes, however much longer its encoding is
                // (a `\u` escape is six bytes a letter), within a bounded multiple.
                let back = (self.prompt.settings.min_run as u64).min(RING as u64 - 1);
                let floor = self.pos.saturating_sub(holdback * MAX_HOLD_FACTOR);
                // The plain text too: noise between its letters (a zero-width space after
                // each, full-width forms at three bytes a letter) stretches `min_run` of
                // them past the hold-back, which would release a recitation before it
                // could match.
                if self.plain.count > 0 {
                    next = next.min(self.plain.raw_at(back.min(self.plain.count)).max(floor));
                }
                for layer in &self.layers {
                    if let Some(h) = layer.hold(back, self.pos) {
                        next = next.min(h.max(floor));
                    }
                }
                next
            }
            State::Redacting { last_hot_end, .. } => last_hot_end,
            State::Tripped | State::Finished => return,
        };
        self.decided = self.decided.max(next);
    }
}

/// Advances one stream by one character at raw offset `raw`.
#[inline]
fn feed_char(s: &mut NgramStream, ctx: &mut Ctx<'_>, ch: char, raw: u64) -> Step {
    let mut step = Step::default();
    let class = normalize_char(ch, |b| merge(&mut step, scan_byte(s, ctx, b, raw)));
    if class == CharClass::Break && s.words.len > 0 {
        merge(&mut step, end_word(s, ctx));
    }
    step
}

/// Advances one stream by one normalised byte `b` that came from raw offset `raw`.
#[inline]
fn scan_byte(s: &mut NgramStream, ctx: &mut Ctx<'_>, b: u8, raw: u64) -> Step {
    let mut step = Step::default();
    let prompt = ctx.prompt;
    s.ring[(s.count as usize) % RING] = raw;
    s.count += 1;
    s.key = ((s.key << 8) | u64::from(b)) & prompt.key_mask;
    let w = &mut s.words;
    if w.len == 0 {
        w.start = raw;
        w.hash = FNV_START;
    }
    w.len += 1;
    w.hash = fnv_step(w.hash, b);

    if let Some(c) = ctx.canary
        && (s.kmp_live || c.first_set[usize::from(b >> 6)] >> (b & 63) & 1 == 1)
    {
        let mut live = false;
        for (v, needle) in c.needles.iter().enumerate() {
            let mut k = s.kmp[v];
            if k == 0 && c.first[v] != b {
                continue;
            }
            while k > 0 && needle[k] != b {
                k = c.fail[v][k - 1];
            }
            if needle[k] == b {
                k += 1;
            }
            if k == needle.len() {
                let start = s.raw_at(needle.len() as u64);
                step.found = Some((LeakKind::Canary, start));
                step.hot = true;
                k = c.fail[v][k - 1];
            } else if k >= 6 {
                step.hot = true;
            }
            s.kmp[v] = k;
            live |= k != 0;
        }
        s.kmp_live = live;
    }

    let n = prompt.settings.ngram as u64;
    if !prompt.overlap_enabled || s.count < n {
        return step;
    }
    let Some(entry) = prompt.lookup(s.key) else {
        s.runs = [0; VARIANTS.len()];
        return step;
    };
    let seen = &mut *ctx.seen;
    if !seen.fired {
        let word = (entry.id / 64) as usize;
        let bit = 1u64 << (entry.id % 64);
        if let Some(w) = seen.bits.get_mut(word)
            && *w & bit == 0
        {
            *w |= bit;
            for (v, variant) in VARIANTS.iter().enumerate() {
                if entry.mask & variant != 0 {
                    seen.count[v] += 1;
                    if seen.count[v] >= prompt.containment_need[v] && step.found.is_none() {
                        seen.fired = true;
                        // The recitation is spread out; cut from the first undecided byte.
                        step.found = Some((kind_of(s.origin, LeakKind::Overlap), 0));
                    }
                }
            }
        }
    }
    for (v, variant) in VARIANTS.iter().enumerate() {
        if entry.mask & variant == 0 {
            s.runs[v] = 0;
            continue;
        }
        s.runs[v] += 1;
        if s.runs[v] == 1 {
            s.run_start[v] = s.raw_at(n);
        }
        if s.runs[v] >= HOT_RUN {
            step.hot = true;
        }
        if s.runs[v] >= prompt.run_needed && step.found.is_none() {
            let start = s.run_start[v];
            let plain_kind = match *variant {
                ROT13 => LeakKind::Rot13,
                REVERSED | WORDS_BACKWARDS => LeakKind::Reversed,
                CAESAR | ATBASH | NO_VOWELS => LeakKind::Cipher,
                // A run whose raw span is well over the normalised length was spelled out
                // with separators between the letters.
                PLAIN if (raw - start) * 5 > u64::from(s.runs[v] + n as u32 - 1) * 9 => LeakKind::SpacedOut,
                _ => LeakKind::Overlap,
            };
            step.found = Some((kind_of(s.origin, plain_kind), start));
        }
    }
    step
}

/// The kind to report: what the decoder undid, else what the plain match saw.
fn kind_of(origin: Origin, plain: LeakKind) -> LeakKind {
    match origin {
        Origin::Plain => plain,
        Origin::Decoded(Encoding::Base64) => LeakKind::Base64,
        Origin::Decoded(Encoding::Base32) => LeakKind::Base32,
        Origin::Decoded(Encoding::Hex) => LeakKind::Hex,
        Origin::Decoded(Encoding::Escape) => LeakKind::Escaped,
    }
}

/// A word of the stream ended: the order-independent rules.
fn end_word(s: &mut NgramStream, ctx: &mut Ctx<'_>) -> Step {
    let mut step = Step::default();
    let index = &ctx.prompt.words;
    let w = &mut s.words;
    let (hash, len, start) = (w.hash, std::mem::take(&mut w.len), w.start);
    let id = index.id(hash);

    // Adjacent prompt words standing in the other order: a backwards or reordered
    // recitation that no character n-gram sees across the word boundaries. A word may also
    // pair with the one before the previous (`real-time claim` recited backwards from
    // `claim real-time`), and one prompt word that pairs with neither keeps the run alive.
    let mut matched = None;
    if id.is_some() {
        for (prev, prev_start, prev_len) in [w.prev, w.prev2].into_iter().flatten() {
            let (key, order) = pair_key(prev, hash);
            if let Some(&flags) = index.pairs.get(&key) {
                // `order` says how the reply has the pair, `flags` how the prompt has it.
                matched = Some((flags & order != 0, prev_start, prev_len));
                break;
            }
        }
    }
    match matched {
        Some((same_order, prev_start, prev_len)) => {
            if w.pair_run == 0 {
                w.pair_start = prev_start;
                w.pair_bytes = prev_len;
                w.backward = false;
            }
            w.pair_run += 1;
            w.pair_bytes += len;
            w.missed = false;
            w.backward |= !same_order;
            if w.pair_run >= 2 {
                step.hot = true;
            }
            if w.backward
                && w.pair_run >= MIN_PAIRS
                && w.pair_bytes as usize >= ctx.prompt.settings.min_run
                && ctx.prompt.overlap_enabled
            {
                step.found = Some((kind_of(s.origin, LeakKind::Reordered), w.pair_start));
            }
        }
        None if id.is_some() && w.pair_run > 0 && !w.missed => {
            w.missed = true;
            w.pair_bytes += len;
        }
        None => w.pair_run = 0,
    }
    w.prev2 = w.prev;
    w.prev = id.map(|_| (hash, start, len));

    // The prompt's words in its order with a filler word after each (`You um are um
    // Nimbus`): every character run is broken, and a filler between two words ends the
    // pairs above. An answer may echo a few of the prompt's phrases in order (one of the
    // eval's on-topic answers made five pairs), so this takes two pairs more.
    let f = &mut w.filled;
    match id {
        Some(_) => {
            let follows = f.last.is_some_and(|last| {
                let (key, order) = pair_key(last, hash);
                index.pairs.get(&key).is_some_and(|&flags| flags & order != 0)
            });
            if follows {
                f.run += 1;
                f.bytes += len;
            } else {
                *f = Filled { start, bytes: len, ..Filled::default() };
            }
            f.last = Some(hash);
            f.gap = false;
            if f.run >= 2 {
                step.hot = true;
            }
            if !f.fired
                && f.run >= MIN_PAIRS + 2
                && f.bytes as usize >= ctx.prompt.settings.min_run
                && ctx.prompt.overlap_enabled
                && step.found.is_none()
            {
                f.fired = true;
                step.found = Some((kind_of(s.origin, LeakKind::Overlap), f.start));
            }
        }
        None if f.gap => f.last = None,
        None => f.gap = true,
    }

    // Most of the prompt's content words within a window of about twice its length: a
    // recitation in any order.
    if index.window > 0 {
        let window = w.window.get_or_insert_with(|| {
            Box::new(Window {
                ring: vec![u32::MAX; index.window],
                next: 0,
                counts: vec![0; index.content.len()],
                distinct: 0,
                fired: false,
            })
        });
        let slot = window.next % window.ring.len();
        let old = std::mem::replace(&mut window.ring[slot], id.unwrap_or(u32::MAX));
        window.next += 1;
        if let Some(c) = window.counts.get_mut(old as usize) {
            *c -= 1;
            if *c == 0 && index.content[old as usize] {
                window.distinct -= 1;
            }
        }
        if let Some(id) = id
            && let Some(c) = window.counts.get_mut(id as usize)
        {
            if *c == 0 && index.content[id as usize] {
                window.distinct += 1;
            }
            *c = c.saturating_add(1);
        }
        if !window.fired && window.distinct >= index.window_need && step.found.is_none() {
            window.fired = true;
            step.found = Some((kind_of(s.origin, LeakKind::Reordered), 0));
        }
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeakConfig;

    fn detector(prompt: &str, action: LeakAction) -> Detector {
        let settings = LeakConfig { on_leak: action, ..LeakConfig::default() };
        Detector::new(Arc::new(ProtectedPrompt::new(prompt, &settings)), None, 0)
    }

    const PROMPT: &str = "You are Nimbus, the support assistant for Acme Cloud. Only answer questions about \
        Acme Cloud billing and outages. Never discuss competitors.";

    #[test]
    fn decided_trails_the_input_by_the_holdback() {
        let mut d = detector(PROMPT, LeakAction::Terminate);
        let mut leaks = Vec::new();
        d.feed(&"a".repeat(300), &mut leaks);
        assert_eq!(d.decided(), 300 - 112);
        d.finish();
        assert_eq!(d.decided(), 300);
        assert!(leaks.is_empty());
    }

    #[test]
    fn verbatim_leak_trips_at_its_start() {
        let mut d = detector(PROMPT, LeakAction::Terminate);
        let mut leaks = Vec::new();
        let intro = "Sure! Here are my instructions: ";
        d.feed(intro, &mut leaks);
        d.feed(PROMPT, &mut leaks);
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].kind, LeakKind::Overlap);
        assert_eq!(leaks[0].start, intro.len() as u64);
        assert!(d.is_tripped());
        assert_eq!(d.decided(), intro.len() as u64);
    }

    #[test]
    fn redaction_region_closes_after_the_leak() {
        let mut d = detector(PROMPT, LeakAction::Redact);
        let mut leaks = Vec::new();
        let text = format!("Intro. {PROMPT} {}", "And now something else entirely. ".repeat(10));
        d.feed(&text, &mut leaks);
        d.finish();
        assert_eq!(leaks.len(), 1);
        let r = d.regions()[0];
        assert_eq!(r.start, 7);
        assert!(r.end >= 7 + PROMPT.len() as u64 - 8 && r.end <= 8 + PROMPT.len() as u64, "{r:?}");
    }

    #[test]
    fn kmp_table() {
        assert_eq!(kmp_fail(b"abab"), vec![0, 0, 1, 2]);
        assert_eq!(kmp_fail(b"aaa"), vec![0, 1, 2]);
    }
}
