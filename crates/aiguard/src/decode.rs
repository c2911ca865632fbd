//! Streaming decoders for the encodings a model can be asked to wrap its prompt in: base64,
//! base32, hex, and escapes (percent-encoding, `\uXXXX` / `\xHH`, HTML character
//! references). Each is fed the reply one character at a time, in whatever pieces it
//! arrives, keeps a few bytes of state, and emits the decoded characters together with the
//! raw offset where their encoded form began (so a leak found in the decoded text is cut
//! where its encoding started).
//!
//! Cost is bounded by construction: a decoder emits at most one character per character it
//! is fed (after its pre-buffer), stays idle on text that is not its encoding, and decoding
//! is nested at most [`crate::detector`]'s depth, so the work per reply byte is a constant.

/// A run must be this long before base64, base32 or hex decoding starts: shorter runs are
/// ordinary words, and decoding them would only feed noise to the side stream.
pub(crate) const MIN_RUN: usize = 16;
/// Characters without an escape after which the escape decoder stops passing text through.
const ESCAPE_QUIET: u32 = 48;

/// The encodings, in the order the detector keeps its side streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Base64,
    Base32,
    Hex,
    Escape,
}

pub(crate) const ENCODINGS: [Encoding; 4] = [Encoding::Base64, Encoding::Base32, Encoding::Hex, Encoding::Escape];

/// Assembles decoded bytes into characters; invalid sequences are dropped.
#[derive(Debug, Clone, Default)]
struct Utf8 {
    buf: [u8; 4],
    len: usize,
    start: u64,
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

impl Utf8 {
    fn push(&mut self, byte: u8, raw: u64, out: &mut Vec<(char, u64)>) {
        if self.len > 0 && byte & 0xc0 != 0x80 {
            self.len = 0;
        }
        if self.len == 0 {
            if utf8_width(byte) == 0 {
                return;
            }
            self.start = raw;
        }
        self.buf[self.len] = byte;
        self.len += 1;
        if self.len < utf8_width(self.buf[0]) {
            return;
        }
        let len = std::mem::take(&mut self.len);
        if let Ok(s) = std::str::from_utf8(&self.buf[..len])
            && let Some(ch) = s.chars().next()
        {
            out.push((ch, self.start));
        }
    }
}

/// One streaming decoder.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    encoding: Encoding,
    /// Symbols in the current run (base64 / base32 / hex).
    run: usize,
    run_start: u64,
    pre: [(u8, u64); MIN_RUN],
    acc: u32,
    bits: u32,
    acc_start: u64,
    /// Hex: a half byte is pending.
    odd: bool,
    /// The previous character was a backslash: the next letter belongs to an escape
    /// (`\n` in a JSON string), not to the run.
    escaped: bool,
    utf8: Utf8,
    esc: Escape,
}

/// State of the escape decoder.
#[derive(Debug, Clone, Default)]
struct Escape {
    seq: [char; 10],
    len: usize,
    start: u64,
    active: bool,
    quiet: u32,
    high_surrogate: Option<(u16, u64)>,
}

impl Decoder {
    pub(crate) fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            run: 0,
            run_start: 0,
            pre: [(0, 0); MIN_RUN],
            acc: 0,
            bits: 0,
            acc_start: 0,
            odd: false,
            escaped: false,
            utf8: Utf8::default(),
            esc: Escape::default(),
        }
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// True while the decoder is inside a run it decodes: its output is still growing, so
    /// the raw text behind it may not be released yet.
    pub(crate) fn is_active(&self) -> bool {
        match self.encoding {
            Encoding::Escape => self.esc.active,
            _ => self.run >= MIN_RUN,
        }
    }

    /// The most raw bytes one decoded character can take in this encoding (a base64 letter
    /// is 4/3 of a byte, hex `0x41, ` six, `\u0041` six, `&#x1F600;` nine).
    pub(crate) fn expansion(&self) -> u64 {
        match self.encoding {
            Encoding::Base64 | Encoding::Base32 => 2,
            Encoding::Hex => 6,
            Encoding::Escape => 9,
        }
    }

    /// True when feeding `ch` would change nothing: the decoder is idle and `ch` cannot
    /// start its encoding. Most characters of most replies take this exit.
    #[inline]
    pub(crate) fn ignores(&self, ch: char) -> bool {
        if self.escaped || ch == '\\' {
            return false;
        }
        match self.encoding {
            Encoding::Escape => !self.esc.active && self.esc.len == 0 && !matches!(ch, '%' | '&'),
            Encoding::Hex => self.run == 0 && !ch.is_ascii_hexdigit(),
            Encoding::Base64 => self.run == 0 && base64_value(ch).is_none(),
            Encoding::Base32 => self.run == 0 && base32_value(ch).is_none(),
        }
    }

    /// Feeds one character at raw offset `raw`; decoded characters go to `out`.
    pub(crate) fn push(&mut self, ch: char, raw: u64, out: &mut Vec<(char, u64)>) {
        if self.encoding != Encoding::Escape {
            // Text inside a JSON string (a tool call's arguments) has `\n` where the
            // encoder wrote a line break: read it as one, so a wrapped or newline-prefixed
            // run stays aligned.
            if std::mem::take(&mut self.escaped) {
                let ch = if matches!(ch, 'n' | 'r') { '\n' } else { '\0' };
                if self.encoding == Encoding::Hex {
                    self.push_hex(ch, raw, out);
                } else {
                    self.push_radix(ch, raw, None, 0, out);
                }
                return;
            }
            if ch == '\\' && (self.odd || self.encoding != Encoding::Hex) {
                self.escaped = true;
                return;
            }
        }
        match self.encoding {
            Encoding::Base64 => self.push_radix(ch, raw, base64_value(ch), 6, out),
            Encoding::Base32 => self.push_radix(ch, raw, base32_value(ch), 5, out),
            Encoding::Hex => self.push_hex(ch, raw, out),
            Encoding::Escape => self.push_escape(ch, raw, out),
        }
    }

    fn reset_run(&mut self) {
        self.run = 0;
        self.acc = 0;
        self.bits = 0;
        self.odd = false;
        self.utf8.len = 0;
    }

    fn push_radix(&mut self, ch: char, raw: u64, value: Option<u8>, width: u32, out: &mut Vec<(char, u64)>) {
        let Some(v) = value else {
            // Line-wrapped output (76 columns, PEM style) keeps going across the newline.
            if !(matches!(ch, '\n' | '\r') && self.run >= MIN_RUN) && self.run != 0 {
                self.reset_run();
            }
            return;
        };
        self.symbol(v, raw, width, out);
    }

    /// Counts one symbol of a run; the first `MIN_RUN` are held until the run is long
    /// enough to be worth decoding.
    fn symbol(&mut self, v: u8, raw: u64, width: u32, out: &mut Vec<(char, u64)>) {
        self.run += 1;
        if self.run == 1 {
            self.run_start = raw;
        }
        if self.run < MIN_RUN {
            self.pre[self.run - 1] = (v, raw);
            return;
        }
        if self.run == MIN_RUN {
            self.pre[MIN_RUN - 1] = (v, raw);
            for (v, raw) in self.pre {
                self.bits_in(v, raw, width, out);
            }
            return;
        }
        self.bits_in(v, raw, width, out);
    }

    fn bits_in(&mut self, v: u8, raw: u64, width: u32, out: &mut Vec<(char, u64)>) {
        if self.bits == 0 {
            self.acc_start = raw;
        }
        self.acc = (self.acc << width) | u32::from(v);
        self.bits += width;
        if self.bits < 8 {
            return;
        }
        self.bits -= 8;
        let byte = (self.acc >> self.bits) as u8;
        self.acc &= (1 << self.bits) - 1;
        let start = self.acc_start;
        self.acc_start = raw;
        self.utf8.push(byte, start, out);
    }

    fn push_hex(&mut self, ch: char, raw: u64, out: &mut Vec<(char, u64)>) {
        if let Some(v) = ch.to_digit(16) {
            self.odd = !self.odd;
            self.symbol(v as u8, raw, 4, out);
            return;
        }
        match ch {
            // `0x41`: the `0` before the `x` was a prefix, not a half byte.
            'x' | 'X' if self.odd && self.run > 0 && self.last_nibble_was_zero() => {
                self.unsymbol();
                self.odd = false;
            }
            '\\' | 'x' | 'X' | ' ' | ':' | ',' | '-' | '\n' | '\r' if !self.odd => {}
            _ => {
                if self.run != 0 {
                    self.reset_run();
                }
            }
        }
    }

    fn last_nibble_was_zero(&self) -> bool {
        if self.run <= MIN_RUN { self.pre[self.run - 1].0 == 0 } else { self.acc & 0xf == 0 && self.bits == 4 }
    }

    /// Takes back the last symbol (a `0x` prefix's zero).
    fn unsymbol(&mut self) {
        if self.run < MIN_RUN {
            self.run -= 1;
        } else if self.bits == 4 {
            self.run -= 1;
            self.acc = 0;
            self.bits = 0;
        }
    }

    fn push_escape(&mut self, ch: char, raw: u64, out: &mut Vec<(char, u64)>) {
        let e = &mut self.esc;
        if e.len > 0 {
            if e.len < e.seq.len() {
                e.seq[e.len] = ch;
                e.len += 1;
            }
            match self.try_complete(out) {
                Some(true) => return,
                Some(false) => {
                    // Not an escape after all: what was buffered is plain text.
                    let esc = &mut self.esc;
                    let (seq, len, start) = (esc.seq, std::mem::take(&mut esc.len), esc.start);
                    // The last character may start the next escape (`%%41`, `&&#65;`).
                    let restart = len > 1 && matches!(seq[len - 1], '%' | '\\' | '&');
                    let flush = if restart { len - 1 } else { len };
                    for (i, &c) in seq[..flush].iter().enumerate() {
                        self.plain(c, if i == 0 { start } else { raw }, out);
                    }
                    if restart {
                        let esc = &mut self.esc;
                        esc.seq[0] = seq[len - 1];
                        esc.len = 1;
                        esc.start = raw;
                    }
                    return;
                }
                None => return,
            }
        }
        if matches!(ch, '%' | '\\' | '&') {
            let e = &mut self.esc;
            e.seq[0] = ch;
            e.len = 1;
            e.start = raw;
            return;
        }
        self.plain(ch, raw, out);
    }

    fn plain(&mut self, ch: char, raw: u64, out: &mut Vec<(char, u64)>) {
        let e = &mut self.esc;
        self.utf8.len = 0;
        e.high_surrogate = None;
        if !e.active {
            return;
        }
        e.quiet += 1;
        if e.quiet > ESCAPE_QUIET {
            e.active = false;
            return;
        }
        out.push((ch, raw));
    }

    /// `Some(true)`: a complete escape was decoded; `Some(false)`: the buffer cannot be an
    /// escape; `None`: keep buffering.
    fn try_complete(&mut self, out: &mut Vec<(char, u64)>) -> Option<bool> {
        let e = &self.esc;
        let seq = &e.seq[..e.len];
        let start = e.start;
        let hex =
            |s: &[char]| -> Option<u32> { s.iter().try_fold(0u32, |acc, c| c.to_digit(16).map(|d| acc * 16 + d)) };
        let done = |this: &mut Self| {
            this.esc.len = 0;
            this.esc.active = true;
            this.esc.quiet = 0;
        };
        match seq[0] {
            '%' => {
                if seq.len() < 3 {
                    return if seq[1..].iter().all(char::is_ascii_hexdigit) { None } else { Some(false) };
                }
                let byte = hex(&seq[1..3])? as u8;
                done(self);
                self.esc.high_surrogate = None;
                self.utf8.push(byte, start, out);
                Some(true)
            }
            '\\' => {
                let &kind = seq.get(1)?;
                let want = match kind {
                    'u' => 4,
                    'x' => 2,
                    'n' | 't' | 'r' | '\\' | '"' | '/' => {
                        done(self);
                        let c = if matches!(kind, 'n' | 't' | 'r') { ' ' } else { kind };
                        self.flush_direct(c, start, out);
                        return Some(true);
                    }
                    _ => return Some(false),
                };
                if seq.len() < 2 + want {
                    return if seq[2..].iter().all(char::is_ascii_hexdigit) { None } else { Some(false) };
                }
                let v = hex(&seq[2..2 + want])?;
                done(self);
                if kind == 'x' {
                    self.esc.high_surrogate = None;
                    self.utf8.push(v as u8, start, out);
                } else {
                    self.code_unit(v as u16, start, out);
                }
                Some(true)
            }
            _ => {
                // `&#65;`, `&#x41;`, `&amp;` …
                let last = *seq.last()?;
                if last != ';' {
                    let body_ok = seq[1..].iter().all(|c| c.is_ascii_alphanumeric() || *c == '#');
                    return if body_ok && seq.len() < e.seq.len() { None } else { Some(false) };
                }
                let body = &seq[1..seq.len() - 1];
                let ch = match body {
                    ['#', 'x' | 'X', digits @ ..] if !digits.is_empty() => char::from_u32(hex(digits)?),
                    ['#', digits @ ..] if !digits.is_empty() => {
                        let v = digits.iter().try_fold(0u32, |acc, c| c.to_digit(10).map(|d| acc * 10 + d))?;
                        char::from_u32(v)
                    }
                    ['a', 'm', 'p'] => Some('&'),
                    ['l', 't'] => Some('<'),
                    ['g', 't'] => Some('>'),
                    ['q', 'u', 'o', 't'] => Some('"'),
                    ['a', 'p', 'o', 's'] => Some('\''),
                    ['n', 'b', 's', 'p'] => Some(' '),
                    _ => None,
                };
                let Some(ch) = ch else { return Some(false) };
                done(self);
                self.flush_direct(ch, start, out);
                Some(true)
            }
        }
    }

    fn flush_direct(&mut self, ch: char, raw: u64, out: &mut Vec<(char, u64)>) {
        self.utf8.len = 0;
        self.esc.high_surrogate = None;
        out.push((ch, raw));
    }

    /// A `\uXXXX` UTF-16 code unit.
    fn code_unit(&mut self, unit: u16, raw: u64, out: &mut Vec<(char, u64)>) {
        self.utf8.len = 0;
        out.extend(utf16_unit(&mut self.esc.high_surrogate, unit, raw));
    }
}

/// One UTF-16 code unit of a `\uXXXX` escape at raw offset `raw`: a character, or nothing
/// while `high` keeps the first half of a surrogate pair (the joined character starts
/// where that half did).
fn utf16_unit(high: &mut Option<(u16, u64)>, unit: u16, raw: u64) -> Option<(char, u64)> {
    match unit {
        0xD800..=0xDBFF => {
            *high = Some((unit, raw));
            None
        }
        0xDC00..=0xDFFF => {
            let (first, start) = high.take()?;
            let c = 0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
            char::from_u32(c).map(|ch| (ch, start))
        }
        _ => {
            *high = None;
            char::from_u32(u32::from(unit)).map(|ch| (ch, raw))
        }
    }
}

/// Reads a JSON document's text as its parser will. A tool call's arguments are JSON, so
/// to the tool that reads them `\n` is a line break and `\u00e9` one letter; matched raw,
/// every escaped line break would put an `n` between two of the prompt's words.
/// One character in, at most one out, so offsets stay bounded like every decoder's.
#[derive(Debug, Clone, Default)]
pub(crate) struct JsonText {
    /// Inside an escape: where its backslash was, and the `\u` digits read so far
    /// (`None` right after the backslash).
    escape: Option<(u64, Option<(u8, u16)>)>,
    high_surrogate: Option<(u16, u64)>,
}

impl JsonText {
    /// The character `ch` at raw offset `raw` stands for, with the offset where it began.
    pub(crate) fn push(&mut self, ch: char, raw: u64) -> Option<(char, u64)> {
        let Some((start, digits)) = self.escape else {
            if ch == '\\' {
                self.escape = Some((raw, None));
                return None;
            }
            self.high_surrogate = None;
            return Some((ch, raw));
        };
        let Some((read, unit)) = digits else {
            self.escape = None;
            let decoded = match ch {
                'u' => {
                    self.escape = Some((start, Some((0, 0))));
                    return None;
                }
                'n' | 'r' => '\n',
                't' | 'b' | 'f' => ' ',
                // `\"`, `\\`, `\/`; anything else is not JSON: read the character alone.
                other => other,
            };
            self.high_surrogate = None;
            return Some((decoded, start));
        };
        let Some(d) = ch.to_digit(16) else {
            self.escape = None;
            self.high_surrogate = None;
            return Some((ch, raw));
        };
        let unit = unit << 4 | d as u16;
        if read < 3 {
            self.escape = Some((start, Some((read + 1, unit))));
            return None;
        }
        self.escape = None;
        utf16_unit(&mut self.high_surrogate, unit, start)
    }
}

fn base64_value(ch: char) -> Option<u8> {
    Some(match ch {
        'A'..='Z' => ch as u8 - b'A',
        'a'..='z' => ch as u8 - b'a' + 26,
        '0'..='9' => ch as u8 - b'0' + 52,
        '+' | '-' => 62,
        '/' | '_' => 63,
        _ => return None,
    })
}

fn base32_value(ch: char) -> Option<u8> {
    Some(match ch {
        'A'..='Z' => ch as u8 - b'A',
        'a'..='z' => ch as u8 - b'a',
        '2'..='7' => ch as u8 - b'2' + 26,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(encoding: Encoding, text: &str) -> String {
        let mut d = Decoder::new(encoding);
        let mut out = Vec::new();
        for (i, ch) in text.char_indices() {
            d.push(ch, i as u64, &mut out);
        }
        out.into_iter().map(|(c, _)| c).collect()
    }

    const TEXT: &str = "You are Nimbus, the support assistant. Grüße 🎉";

    #[test]
    fn base64_and_base32() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(TEXT);
        assert_eq!(decode(Encoding::Base64, &b64), TEXT);
        assert_eq!(decode(Encoding::Base32, &base32(TEXT.as_bytes())), TEXT);
        assert_eq!(decode(Encoding::Base32, &base32(TEXT.as_bytes()).to_lowercase()), TEXT);
        assert_eq!(decode(Encoding::Base64, "short words only here"), "");
    }

    #[test]
    fn hex_in_its_usual_spellings() {
        let plain: String = TEXT.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decode(Encoding::Hex, &plain), TEXT);
        let spaced: Vec<String> = TEXT.bytes().map(|b| format!("{b:02X}")).collect();
        assert_eq!(decode(Encoding::Hex, &spaced.join(" ")), TEXT);
        let prefixed: Vec<String> = TEXT.bytes().map(|b| format!("0x{b:02x}")).collect();
        assert_eq!(decode(Encoding::Hex, &prefixed.join(", ")), TEXT);
        let escaped: String = TEXT.bytes().map(|b| format!("\\x{b:02x}")).collect();
        assert_eq!(decode(Encoding::Hex, &escaped), TEXT);
        assert_eq!(decode(Encoding::Hex, "a bad decade of faded beef cafe"), "");
    }

    #[test]
    fn escapes() {
        let percent: String = TEXT.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(decode(Encoding::Escape, &percent), TEXT);
        let mixed = "You%20are%20Nimbus%2C%20the%20support";
        assert_eq!(decode(Encoding::Escape, mixed), " are Nimbus, the support", "from the first escape on");
        let json: String = TEXT.encode_utf16().map(|u| format!("\\u{u:04x}")).collect();
        assert_eq!(decode(Encoding::Escape, &json), TEXT);
        let html: String = TEXT.chars().map(|c| format!("&#{};", c as u32)).collect();
        assert_eq!(decode(Encoding::Escape, &html), TEXT);
        let hexref: String = TEXT.chars().map(|c| format!("&#x{:x};", c as u32)).collect();
        assert_eq!(decode(Encoding::Escape, &hexref), TEXT);
        assert_eq!(decode(Encoding::Escape, "Tom &amp; Jerry"), "& Jerry");
        assert_eq!(decode(Encoding::Escape, "100% sure & ready \\o/"), "");
        // JSON inside a JSON string: `\\u0059` decodes to `\u0059`, which a second layer decodes.
        assert_eq!(decode(Encoding::Escape, r"\\u0059\\u006f\\u0075"), r"\u0059\u006f\u0075");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(TEXT);
        assert_eq!(decode(Encoding::Base64, &format!(r"intro:\n\n{b64}")), TEXT, "escaped newline before the run");
    }

    fn json_text(text: &str) -> Vec<(char, u64)> {
        let mut j = JsonText::default();
        text.char_indices().filter_map(|(i, ch)| j.push(ch, i as u64)).collect()
    }

    #[test]
    fn json_text_reads_escapes_as_the_parser_does() {
        let read = |t: &str| json_text(t).into_iter().map(|(c, _)| c).collect::<String>();
        assert_eq!(read(r#"{"text":"Q: Who?\nA: \"Me\" \\ \/ \t."}"#), "{\"text\":\"Q: Who?\nA: \"Me\" \\ /  .\"}");
        let escaped: String = TEXT.encode_utf16().map(|u| format!("\\u{u:04X}")).collect();
        assert_eq!(read(&escaped), TEXT, "surrogate pairs are joined");
        assert_eq!(read(r"\\u0059"), r"\u0059", "an escaped backslash is left for the escape decoder");
        assert_eq!(read(r"\ud83c x \u00zz"), " x zz", "a broken escape keeps what follows it");
        // Each character is placed where its escape began, so a cut starts there.
        assert_eq!(json_text(r"a\nb\u00e9"), [('a', 0), ('\n', 1), ('b', 3), ('é', 4)]);
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic_and_never_grow_the_text(text in ".{0,400}", nested in proptest::bool::ANY) {
            for e in ENCODINGS {
                let mut d = Decoder::new(e);
                let mut out = Vec::new();
                let mut total = 0usize;
                for (i, ch) in text.char_indices() {
                    out.clear();
                    d.push(ch, i as u64, &mut out);
                    total += out.len();
                    for &(_, raw) in &out {
                        proptest::prop_assert!(raw <= i as u64, "output points at text already seen");
                    }
                    if nested {
                        let mut inner = Decoder::new(Encoding::Escape);
                        let mut more = Vec::new();
                        for &(c, r) in &out {
                            inner.push(c, r, &mut more);
                        }
                        proptest::prop_assert!(more.len() <= out.len());
                    }
                }
                proptest::prop_assert!(total <= text.chars().count(), "{:?} emitted {} for {} chars", e, total, text.chars().count());
            }
        }

        #[test]
        fn normalisation_is_bounded(ch in proptest::char::any()) {
            let mut n = 0;
            crate::normalize::normalize_char(ch, |_| n += 1);
            proptest::prop_assert!(n <= 32, "{:?} gave {} bytes", ch, n);
        }
    }

    /// RFC 4648 base32, for the tests.
    pub(crate) fn base32(bytes: &[u8]) -> String {
        const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut out = String::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for &b in bytes {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(A[((acc >> bits) & 31) as usize] as char);
            }
        }
        if bits > 0 {
            out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
        }
        out
    }
}
