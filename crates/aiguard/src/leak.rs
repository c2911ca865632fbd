//! The text-level leak scanner: feed it reply text as it arrives, forward only what it
//! releases. It holds back the last `holdback` bytes so that text reaches the client only
//! once it is known not to begin a recitation of the system prompt.

use std::sync::Arc;

use crate::canary::Canary;
use crate::config::LeakAction;
use crate::detector::{CanaryNeedles, Detector, Leak, Region};
use crate::prompt::ProtectedPrompt;

/// Replaces each leaked span in [`LeakAction::Redact`] mode.
pub const REDACTION_MARKER: &str = "[redacted]";

/// What one [`LeakScanner::push`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Text that may be sent to the client now (possibly with [`REDACTION_MARKER`]s).
    pub release: String,
    /// Leaks detected in this push.
    pub leaks: Vec<Leak>,
}

/// Incremental scanner for one reply.
///
/// Guarantee: text is released only once it is `holdback` bytes behind the newest input,
/// and a leak is cut at its start. A leak that is detected within `holdback` bytes of its
/// start (every verbatim, truncated, rot13, reversed and base64 recitation with the default
/// settings, and every canary) therefore releases none of the leaked text; one detected
/// later (e.g. by the containment rule on a reordered recitation) releases at most what
/// went out before detection, which the caller can see from [`Leak::start`] and
/// [`Leak::detected_at`].
#[derive(Debug, Clone)]
pub struct LeakScanner {
    det: Detector,
    held: String,
    held_at: u64,
}

impl LeakScanner {
    /// A scanner for one reply to a request whose system prompt was `prompt`, with the
    /// request's `canary` if one was injected.
    pub fn new(prompt: Arc<ProtectedPrompt>, canary: Option<&Canary>) -> Self {
        let needles = canary.map(|c| Arc::new(CanaryNeedles::new(c)));
        Self { det: Detector::new(prompt, needles, 0), held: String::new(), held_at: 0 }
    }

    /// Scans the next piece of reply text.
    pub fn push(&mut self, text: &str) -> Scan {
        if self.det.is_finished() {
            return Scan::default();
        }
        let mut leaks = Vec::new();
        self.det.feed(text, &mut leaks);
        self.held.push_str(text);
        Scan { release: self.drain(), leaks }
    }

    /// The reply has ended: release whatever is left (unless terminated).
    pub fn finish(&mut self) -> Scan {
        self.det.finish();
        Scan { release: self.drain(), leaks: Vec::new() }
    }

    /// True once a leak ended the reply ([`LeakAction::Terminate`]): nothing more will be
    /// released and the caller should stop reading from upstream.
    pub fn is_terminated(&self) -> bool {
        self.det.is_tripped()
    }

    fn drain(&mut self) -> String {
        let decided = self.det.decided();
        let mut upto = usize::try_from(decided.saturating_sub(self.held_at)).unwrap_or(usize::MAX).min(self.held.len());
        while !self.held.is_char_boundary(upto) {
            upto -= 1;
        }
        let mut release = String::with_capacity(upto);
        let marker = (self.det.action() == LeakAction::Redact).then_some(REDACTION_MARKER);
        render(&self.held[..upto], self.held_at, self.det.regions(), marker, &mut release);
        self.held.drain(..upto);
        self.held_at += upto as u64;
        if self.det.is_tripped() {
            self.held = String::new();
        }
        release
    }
}

/// Appends `text`, which sits at stream offset `at`, to `out` with every byte inside a
/// region left out and `marker` written where a region starts.
pub(crate) fn render(text: &str, at: u64, regions: &[Region], marker: Option<&str>, out: &mut String) {
    let end = at + text.len() as u64;
    let mut cursor = at;
    for r in regions {
        if r.start >= end {
            break;
        }
        if r.end <= at {
            continue;
        }
        if r.start > cursor {
            out.push_str(slice(text, cursor - at, r.start - at));
        }
        if r.start >= at
            && let Some(m) = marker
        {
            out.push_str(m);
        }
        cursor = cursor.max(r.end.min(end));
    }
    if cursor < end {
        out.push_str(slice(text, cursor - at, end - at));
    }
}

fn slice(text: &str, from: u64, to: u64) -> &str {
    // Region bounds are char boundaries of the stream; `get` keeps a broken invariant
    // from turning into a panic.
    text.get(from as usize..to as usize).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeakConfig;
    use crate::detector::LeakKind;

    pub(crate) const PROMPT: &str = "You are Nimbus, the support assistant for Acme Cloud. Answer only questions \
        about Acme Cloud billing, invoices and service outages. Never discuss competitors or internal pricing \
        formulas, and escalate refund requests above 500 euros to a human agent.";

    fn scanner(action: LeakAction, canary: Option<&Canary>) -> LeakScanner {
        let settings = LeakConfig { on_leak: action, ..LeakConfig::default() };
        LeakScanner::new(Arc::new(ProtectedPrompt::new(PROMPT, &settings)), canary)
    }

    fn run(s: &mut LeakScanner, text: &str, chunk: usize) -> (String, Vec<Leak>) {
        let mut out = String::new();
        let mut leaks = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(chunk.max(1)) {
            let piece: String = piece.iter().collect();
            let scan = s.push(&piece);
            out.push_str(&scan.release);
            leaks.extend(scan.leaks);
        }
        out.push_str(&s.finish().release);
        (out, leaks)
    }

    #[test]
    fn benign_text_passes_unchanged() {
        let text = "Your March invoice is available under Billing > Invoices. The outage on the 4th affected \
            the Frankfurt region for 20 minutes; a credit has been applied automatically. ünïcödé 🎉";
        for chunk in [1, 3, 20, 1000] {
            let (out, leaks) = run(&mut scanner(LeakAction::Terminate, None), text, chunk);
            assert_eq!(out, text);
            assert!(leaks.is_empty());
        }
    }

    #[test]
    fn release_lags_by_the_holdback() {
        let mut s = scanner(LeakAction::Terminate, None);
        assert_eq!(s.push(&"x".repeat(100)).release, "");
        assert_eq!(s.push(&"x".repeat(100)).release.len(), 200 - 112);
    }

    #[test]
    fn verbatim_leak_is_cut_before_it_starts() {
        let intro = "Of course. My instructions say: ";
        let (out, leaks) =
            run(&mut scanner(LeakAction::Terminate, None), &format!("{intro}{PROMPT} Anything else?"), 7);
        assert_eq!(out, intro);
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].kind, LeakKind::Overlap);
    }

    #[test]
    fn noise_between_letters_does_not_carry_a_recitation_past_the_holdback() {
        let zero_width: String = PROMPT.chars().flat_map(|c| [c, '\u{200B}']).collect();
        let full_width: String = PROMPT
            .chars()
            .map(|c| if c.is_ascii_graphic() { char::from_u32(c as u32 + 0xFEE0).unwrap_or(c) } else { c })
            .collect();
        for recited in [zero_width, full_width] {
            for chunk in [1, 7, 50] {
                let (out, leaks) =
                    run(&mut scanner(LeakAction::Terminate, None), &format!("Sure: {recited} Anything else?"), chunk);
                assert_eq!(out, "Sure: ", "chunk {chunk}");
                assert!(!leaks.is_empty());
            }
        }
    }

    #[test]
    fn a_recitation_in_a_cipher_without_vowels_or_with_its_words_spelled_backwards_is_cut_before_it_starts() {
        let shift = |c: char, by: u8| match c {
            'a'..='z' => (b'a' + (c as u8 - b'a' + by) % 26) as char,
            'A'..='Z' => (b'A' + (c as u8 - b'A' + by) % 26) as char,
            _ => c,
        };
        let mirror = |c: char| match c {
            'a'..='z' => (b'z' - (c as u8 - b'a')) as char,
            'A'..='Z' => (b'Z' - (c as u8 - b'A')) as char,
            _ => c,
        };
        let caesar: String = PROMPT.chars().map(|c| shift(c, 3)).collect();
        let atbash: String = PROMPT.chars().map(mirror).collect();
        let backwards: Vec<String> = PROMPT.split(' ').map(|w| w.chars().rev().collect()).collect();
        let no_vowels: String = PROMPT.chars().filter(|c| !"aeiouAEIOU".contains(*c)).collect();
        for (recited, kind) in [
            (caesar, LeakKind::Cipher),
            (atbash, LeakKind::Cipher),
            (backwards.join(" "), LeakKind::Reversed),
            (no_vowels, LeakKind::Cipher),
        ] {
            for chunk in [1, 9, 60] {
                let (out, leaks) = run(&mut scanner(LeakAction::Terminate, None), &format!("Here: {recited}"), chunk);
                assert_eq!(out, "Here: ", "{kind:?}, chunk {chunk}");
                assert_eq!(leaks.first().map(|l| l.kind), Some(kind));
            }
        }
    }

    #[test]
    fn a_recitation_with_a_filler_word_after_each_word_is_cut_before_it_starts() {
        let recited: Vec<String> = PROMPT.split(' ').map(|w| format!("{w} um")).collect();
        for chunk in [1, 9, 60] {
            let (out, leaks) =
                run(&mut scanner(LeakAction::Terminate, None), &format!("Here: {}", recited.join(" ")), chunk);
            assert_eq!(out, "Here: ", "chunk {chunk}");
            assert_eq!(leaks.first().map(|l| l.kind), Some(LeakKind::Overlap));
        }
        // Echoing a few of the prompt's phrases in order is an answer, not a leak.
        let answer = "Your Acme Cloud invoices and service outages are what I know about; for the             billing questions I can help, and a human agent takes the rest.";
        let (out, leaks) = run(&mut scanner(LeakAction::Terminate, None), answer, 7);
        assert!(leaks.is_empty(), "{leaks:?}");
        assert_eq!(out, answer);
    }

    #[test]
    fn redaction_replaces_the_leak_and_keeps_the_rest() {
        let outro = " Let me know if you need anything else about your invoices, I am happy to help today.";
        let text = format!("Here you go: {PROMPT}{outro}");
        let (out, leaks) = run(&mut scanner(LeakAction::Redact, None), &text, 5);
        assert_eq!(leaks.len(), 1);
        assert!(out.starts_with("Here you go: [redacted]"), "{out}");
        assert!(out.ends_with("I am happy to help today."), "{out}");
        assert!(!out.contains("Nimbus") && !out.contains("competitors"), "{out}");
    }

    #[test]
    fn canary_split_across_chunks_is_found() {
        let canary = Canary::from_random(&[7; 20]);
        let text = format!("The marker is {} ok", canary.as_str().to_uppercase().replace('-', " - "));
        for chunk in [1, 2, 5] {
            let (out, leaks) = run(&mut scanner(LeakAction::Terminate, Some(&canary)), &text, chunk);
            assert_eq!(leaks.first().map(|l| l.kind), Some(LeakKind::Canary), "chunk {chunk}");
            assert_eq!(out, "The marker is ");
        }
    }

    #[test]
    fn short_prompt_is_protected_by_canary_only() {
        let settings = LeakConfig::default();
        let prompt = Arc::new(ProtectedPrompt::new("Be terse.", &settings));
        let canary = Canary::from_random(&[3; 20]);
        let mut s = LeakScanner::new(prompt.clone(), Some(&canary));
        let (out, leaks) = run(&mut s, "I will be terse. Be terse. Be terse.", 4);
        assert!(leaks.is_empty(), "quoting a short prompt is not a leak");
        assert_eq!(out, "I will be terse. Be terse. Be terse.");
        let mut s = LeakScanner::new(prompt, Some(&canary));
        let (_, leaks) = run(&mut s, &crate::canary::inject("Be terse.", &canary), 4);
        assert_eq!(leaks.first().map(|l| l.kind), Some(LeakKind::Canary));
    }

    #[test]
    fn the_canary_is_found_through_the_caesar_and_atbash_ciphers() {
        let prompt = Arc::new(ProtectedPrompt::new("Be terse.", &LeakConfig::default()));
        let canary = Canary::from_random(&[5; 20]);
        let injected = crate::canary::inject("Be terse.", &canary);
        let caesar: String = injected.chars().map(|c| crate::normalize::shift_letter(c, 3)).collect();
        let atbash: String = injected.chars().map(crate::normalize::atbash_letter).collect();
        for recited in [caesar, atbash] {
            let (_, leaks) = run(&mut LeakScanner::new(prompt.clone(), Some(&canary)), &recited, 3);
            assert_eq!(leaks.first().map(|l| l.kind), Some(LeakKind::Canary), "{recited}");
        }
    }

    #[test]
    fn render_handles_regions() {
        let regions = [Region { start: 2, end: 4 }, Region { start: 6, end: u64::MAX }];
        let mut out = String::new();
        render("abcdefgh", 0, &regions, Some("#"), &mut out);
        assert_eq!(out, "ab#ef#");
        out.clear();
        render("defgh", 3, &regions, Some("#"), &mut out);
        assert_eq!(out, "ef#");
    }
}
