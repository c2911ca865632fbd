//! The incremental leak detector behind [`crate::LeakScanner`] and [`crate::SseScanner`]:
//! fed one content stream (one choice of one reply) piece by piece, it tracks which byte
//! offsets are decided (safe to release, or redacted) and reports leaks with their offsets.
//!
//! Per byte it does a constant amount of work: normalise, shift the byte into a packed
//! n-gram key, one hash lookup, three run counters, three KMP steps for the canary, and the
//! same again on the base64-decoded side stream while a base64 run is in progress. It keeps
//! no copy of the reply: memory is a fixed few hundred bytes plus one bit per prompt n-gram.

use std::sync::Arc;

use crate::canary::Canary;
use crate::config::LeakAction;
use crate::leak::{Leak, LeakKind};
use crate::prompt::{PLAIN, ProtectedPrompt, REVERSED, ROT13, VARIANTS, normalize_char, rot13_byte};

/// Raw offsets of the most recent normalised bytes, to find where a match started. Must
/// cover the longest lookback: the normalised canary (24 bytes) and one n-gram.
const RING: usize = 32;
/// A run of letters/digits this long from the base64 alphabet is decoded. Shorter runs are
/// ordinary words; decoding them would only feed noise to the side stream.
const B64_MIN_RUN: u32 = 16;
/// While redacting, a run of this many consecutive prompt n-grams (or this much canary
/// progress) counts as "the leak is still going on".
const HOT_RUN: u32 = 3;
/// Redaction regions kept per stream; a reply that leaks more often than this is ended.
const MAX_REGIONS: usize = 64;

/// The canary in the scanner's normalised alphabet, plain, rot13 and reversed, each with its
/// KMP failure table so matching is one step per byte whatever the chunking.
#[derive(Debug, Clone)]
pub(crate) struct CanaryNeedles {
    needles: [Vec<u8>; 3],
    fail: [Vec<usize>; 3],
    /// First byte of each needle: while no match is in progress, any other byte leaves
    /// all three KMP states at zero and can be skipped.
    first: [u8; 3],
}

impl CanaryNeedles {
    pub(crate) fn new(canary: &Canary) -> Self {
        let plain = crate::prompt::normalize(canary.as_str());
        let rot: Vec<u8> = plain.iter().map(|&b| rot13_byte(b)).collect();
        let rev: Vec<u8> = plain.iter().rev().copied().collect();
        let needles = [plain, rot, rev];
        let fail = [kmp_fail(&needles[0]), kmp_fail(&needles[1]), kmp_fail(&needles[2])];
        let first = [0, 1, 2].map(|v| needles[v].first().copied().unwrap_or(0));
        Self { needles, fail, first }
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

/// Matching state over one stream of normalised bytes (the reply itself, or the text
/// decoded from a base64 run in it).
#[derive(Debug, Clone, Default)]
struct NgramStream {
    key: u64,
    /// Normalised bytes seen since the last reset.
    count: u64,
    runs: [u32; 3],
    run_start: [u64; 3],
    ring: [u64; RING],
    kmp: [usize; 3],
}

impl NgramStream {
    fn reset(&mut self) {
        self.key = 0;
        self.count = 0;
        self.runs = [0; 3];
        self.kmp = [0; 3];
    }

    fn raw_at(&self, back: u64) -> u64 {
        self.ring[((self.count - back) as usize) % RING]
    }
}

/// What one normalised byte told us.
#[derive(Debug, Default)]
struct Step {
    found: Option<(LeakKind, u64)>,
    hot: bool,
}

/// Containment bookkeeping: one bit per prompt n-gram slot.
#[derive(Debug, Clone)]
struct Seen {
    bits: Vec<u64>,
    count: [u32; 3],
    fired: bool,
}

/// Incremental decoder for a run of base64 characters (standard or URL-safe alphabet).
#[derive(Debug, Clone, Default)]
struct Base64Side {
    run: u32,
    pre: [u8; B64_MIN_RUN as usize],
    run_start: u64,
    acc: u32,
    bits: u32,
    /// Raw offset of the character that contributed the first pending bit.
    acc_start: u64,
    utf8: [u8; 4],
    utf8_len: usize,
    utf8_start: u64,
    stream: NgramStream,
}

fn b64_value(ch: char) -> Option<u8> {
    Some(match ch {
        'A'..='Z' => ch as u8 - b'A',
        'a'..='z' => ch as u8 - b'a' + 26,
        '0'..='9' => ch as u8 - b'0' + 52,
        '+' | '-' => 62,
        '/' | '_' => 63,
        _ => return None,
    })
}

fn utf8_width(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
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

/// One content stream's detector.
#[derive(Debug, Clone)]
pub(crate) struct Detector {
    prompt: Arc<ProtectedPrompt>,
    canary: Option<Arc<CanaryNeedles>>,
    choice: u32,
    seen: Seen,
    plain: NgramStream,
    b64: Base64Side,
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
            seen: Seen { bits: vec![0; slots.div_ceil(64)], count: [0; 3], fired: false },
            plain: NgramStream::default(),
            b64: Base64Side::default(),
            pos: 0,
            decided: 0,
            state: State::Clean,
            regions: Vec::new(),
        }
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
        for (i, ch) in text.char_indices() {
            let raw = self.pos + i as u64;
            let end = raw + ch.len_utf8() as u64;
            let mut step = Step::default();
            let prompt = &*self.prompt;
            let canary = self.canary.as_deref();
            let (plain, seen) = (&mut self.plain, &mut self.seen);
            normalize_char(ch, |b| merge(&mut step, scan_byte(plain, seen, prompt, canary, b, raw, false)));
            merge(&mut step, self.b64.push_char(ch, raw, seen, prompt, canary));
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
        let next = match self.state {
            State::Clean => self.pos.saturating_sub(self.prompt.settings.holdback as u64),
            State::Redacting { last_hot_end, .. } => last_hot_end,
            State::Tripped | State::Finished => return,
        };
        self.decided = self.decided.max(next);
    }
}

fn merge(into: &mut Step, from: Step) {
    into.hot |= from.hot;
    if into.found.is_none() {
        into.found = from.found;
    }
}

/// Advances one stream by one normalised byte `b` that came from raw offset `raw`.
#[inline]
fn scan_byte(
    s: &mut NgramStream,
    seen: &mut Seen,
    prompt: &ProtectedPrompt,
    canary: Option<&CanaryNeedles>,
    b: u8,
    raw: u64,
    decoded: bool,
) -> Step {
    let mut step = Step::default();
    s.ring[(s.count as usize) % RING] = raw;
    s.count += 1;
    s.key = ((s.key << 8) | u64::from(b)) & prompt.key_mask;

    if let Some(c) = canary
        && (s.kmp != [0; 3] || c.first.contains(&b))
    {
        for v in 0..3 {
            let needle = &c.needles[v];
            let mut k = s.kmp[v];
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
        }
    }

    let n = prompt.settings.ngram as u64;
    if !prompt.overlap_enabled || s.count < n {
        return step;
    }
    let Some(entry) = prompt.lookup(s.key) else {
        s.runs = [0; 3];
        return step;
    };
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
                        step.found = Some((if decoded { LeakKind::Base64 } else { LeakKind::Overlap }, 0));
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
            let kind = if decoded {
                LeakKind::Base64
            } else {
                match *variant {
                    ROT13 => LeakKind::Rot13,
                    REVERSED => LeakKind::Reversed,
                    // A run whose raw span is well over the normalised length was spelled
                    // out with separators between the letters.
                    PLAIN if (raw - start) * 5 > u64::from(s.runs[v] + n as u32 - 1) * 9 => LeakKind::SpacedOut,
                    _ => LeakKind::Overlap,
                }
            };
            step.found = Some((kind, start));
        }
    }
    step
}

impl Base64Side {
    fn reset(&mut self) {
        self.run = 0;
        self.acc = 0;
        self.bits = 0;
        self.utf8_len = 0;
        self.stream.reset();
    }

    fn push_char(
        &mut self,
        ch: char,
        raw: u64,
        seen: &mut Seen,
        prompt: &ProtectedPrompt,
        canary: Option<&CanaryNeedles>,
    ) -> Step {
        let mut step = Step::default();
        let Some(v) = b64_value(ch) else {
            // Line-wrapped base64 (76 columns, PEM style) keeps going across the newline.
            if !(matches!(ch, '\n' | '\r') && self.run >= B64_MIN_RUN) && self.run != 0 {
                self.reset();
            }
            return step;
        };
        self.run = self.run.saturating_add(1);
        if self.run == 1 {
            self.run_start = raw;
        }
        if self.run < B64_MIN_RUN {
            self.pre[self.run as usize - 1] = v;
            return step;
        }
        if self.run == B64_MIN_RUN {
            self.pre[self.run as usize - 1] = v;
            let pre = self.pre;
            for (i, sextet) in pre.into_iter().enumerate() {
                // The pre-buffered characters are ASCII and contiguous: one byte each.
                merge(&mut step, self.sextet(sextet, self.run_start + i as u64, seen, prompt, canary));
            }
            return step;
        }
        self.sextet(v, raw, seen, prompt, canary)
    }

    fn sextet(
        &mut self,
        v: u8,
        raw: u64,
        seen: &mut Seen,
        prompt: &ProtectedPrompt,
        canary: Option<&CanaryNeedles>,
    ) -> Step {
        if self.bits == 0 {
            self.acc_start = raw;
        }
        self.acc = (self.acc << 6) | u32::from(v);
        self.bits += 6;
        if self.bits < 8 {
            return Step::default();
        }
        self.bits -= 8;
        let byte = (self.acc >> self.bits) as u8;
        self.acc &= (1 << self.bits) - 1;
        let byte_start = self.acc_start;
        self.acc_start = raw;
        self.decoded_byte(byte, byte_start, seen, prompt, canary)
    }

    fn decoded_byte(
        &mut self,
        byte: u8,
        raw: u64,
        seen: &mut Seen,
        prompt: &ProtectedPrompt,
        canary: Option<&CanaryNeedles>,
    ) -> Step {
        let mut step = Step::default();
        if self.utf8_len > 0 && byte & 0xc0 != 0x80 {
            // Truncated sequence: drop it and treat this byte as a new start.
            self.utf8_len = 0;
        }
        if self.utf8_len == 0 {
            if utf8_width(byte) == 0 {
                return step;
            }
            self.utf8_start = raw;
        }
        self.utf8[self.utf8_len] = byte;
        self.utf8_len += 1;
        if self.utf8_len < utf8_width(self.utf8[0]) {
            return step;
        }
        let len = std::mem::take(&mut self.utf8_len);
        if let Ok(s) = std::str::from_utf8(&self.utf8[..len])
            && let Some(ch) = s.chars().next()
        {
            let start = self.utf8_start;
            let stream = &mut self.stream;
            normalize_char(ch, |b| merge(&mut step, scan_byte(stream, seen, prompt, canary, b, start, true)));
        }
        step
    }
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
