//! The one character normalisation the leak scanner applies to the protected prompt and to
//! every reply (and to every decoded side stream of a reply), so that both sides meet in
//! the same alphabet whatever disguise the reply wears.
//!
//! Per character, constant work:
//! - ASCII letters are lowercased; digits and `@ $` are read as the letters leetspeak uses
//!   them for (`0→o 1→i 3→e 4→a 5→s 7→t …`), and `l` as `i`, since `1` stands for both.
//!   Folding on both sides keeps ordinary digits matching too (`500` and `5oo` agree).
//! - A compatibility form of one ASCII character (full-width, mathematical, circled) is
//!   read as that character.
//! - Other characters go through the Unicode UTS #39 confusable skeleton
//!   (`unicode-security`), so Cyrillic and Greek look-alikes, full-width and mathematical
//!   letters become the Latin letters they imitate, and accents are dropped. CJK ideographs
//!   and Hangul syllables have no Latin look-alike and skip the table lookup.
//! - Default-ignorable characters (zero-width spaces and joiners, bidi controls, soft
//!   hyphens, variation selectors) vanish without ending a word; everything else that is
//!   not a letter or digit (spaces, punctuation, symbols) ends the current word and is
//!   dropped, which is what makes the scanner blind to spacing, markdown and bullet lists.

/// What a character was, for word tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CharClass {
    /// Produced normalised bytes: part of a word.
    Word,
    /// A separator: ends the current word, produces nothing.
    Break,
    /// Invisible: produces nothing and does not end the word.
    Ignore,
}

/// Leetspeak and look-alike folding of the ASCII range, lowercase first. 0 = separator.
const ASCII_FOLD: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut c = b'a';
    while c <= b'z' {
        t[c as usize] = c;
        t[(c - 32) as usize] = c;
        c += 1;
    }
    t[b'l' as usize] = b'i';
    t[b'L' as usize] = b'i';
    let digits = *b"oizeasgtbg";
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = digits[d];
        d += 1;
    }
    t[b'@' as usize] = b'a';
    t[b'$' as usize] = b's';
    t
};

/// Feeds the normalised bytes of `ch` to `out` and says what kind of character it was.
#[inline]
pub(crate) fn normalize_char(ch: char, mut out: impl FnMut(u8)) -> CharClass {
    if ch.is_ascii() {
        let b = ASCII_FOLD[ch as usize];
        if b == 0 {
            return CharClass::Break;
        }
        out(b);
        return CharClass::Word;
    }
    if matches!(ch, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{AC00}'..='\u{D7A3}') {
        let mut buf = [0u8; 4];
        ch.encode_utf8(&mut buf).bytes().for_each(&mut out);
        return CharClass::Word;
    }
    // Full-width, mathematical, circled and other compatibility forms of an ASCII
    // character read as that character. The skeleton alone would not do: it spells `ｍ`
    // as `rn`, so a full-width recitation of any word with an `m` would not match it.
    if let Some(ascii) = compatible_ascii(ch) {
        let b = ASCII_FOLD[ascii as usize];
        if b == 0 {
            return CharClass::Break;
        }
        out(b);
        return CharClass::Word;
    }
    let mut buf = [0u8; 4];
    if !ch.is_alphanumeric() {
        // Punctuation and symbols end a word even where a look-alike letter exists (an em
        // dash looks like a katakana prolonged sound mark); marks and default-ignorable
        // characters, which the skeleton drops, do not.
        let ignorable =
            is_mark(ch) || unicode_security::confusable_detection::skeleton(ch.encode_utf8(&mut buf)).next().is_none();
        return if ignorable { CharClass::Ignore } else { CharClass::Break };
    }
    let mut produced = false;
    for proto in unicode_security::confusable_detection::skeleton(ch.encode_utf8(&mut buf)) {
        if proto.is_ascii() {
            let b = ASCII_FOLD[proto as usize];
            if b != 0 {
                out(b);
                produced = true;
            }
        } else if proto.is_alphanumeric() {
            for lower in proto.to_lowercase() {
                let mut lb = [0u8; 4];
                lower.encode_utf8(&mut lb).bytes().for_each(&mut out);
            }
            produced = true;
        }
        // Combining marks left by the decomposition (accents) produce nothing.
    }
    if produced { CharClass::Word } else { CharClass::Ignore }
}

/// The one ASCII character `ch` is a compatibility form of, if it is one.
fn compatible_ascii(ch: char) -> Option<char> {
    let (mut only, mut count) = (None, 0);
    unicode_normalization::char::decompose_compatible(ch, |d| {
        count += 1;
        only = Some(d);
    });
    only.filter(|d| count == 1 && d.is_ascii())
}

fn is_mark(ch: char) -> bool {
    unicode_normalization::char::is_combining_mark(ch)
}

/// Normalises a whole string (see [`normalize_char`]).
pub(crate) fn normalize(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        normalize_char(ch, |b| out.push(b));
    }
    out
}

/// The words of `text` in normalised form, in order.
pub(crate) fn words(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut word = Vec::new();
    for ch in text.chars() {
        if normalize_char(ch, |b| word.push(b)) == CharClass::Break && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// rot13 of ASCII letters; everything else unchanged. Applied to the raw text before
/// normalising, like a model applies it to the prompt.
pub(crate) fn rot13_char(c: char) -> char {
    shift_letter(c, 13)
}

/// `c` moved `by` places on in the Latin alphabet, case kept.
pub(crate) fn shift_letter(c: char, by: u8) -> char {
    match c {
        'a'..='z' => (b'a' + (c as u8 - b'a' + by) % 26) as char,
        'A'..='Z' => (b'A' + (c as u8 - b'A' + by) % 26) as char,
        _ => c,
    }
}

/// `c` mirrored in the Latin alphabet, case kept.
pub(crate) fn atbash_letter(c: char) -> char {
    match c {
        'a'..='z' => (b'z' - (c as u8 - b'a')) as char,
        'A'..='Z' => (b'Z' - (c as u8 - b'A')) as char,
        _ => c,
    }
}

/// FNV-1a step, for hashing normalised words incrementally.
#[inline]
pub(crate) fn fnv_step(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
}

pub(crate) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

pub(crate) fn word_hash(word: &[u8]) -> u64 {
    word.iter().fold(FNV_START, |h, &b| fnv_step(h, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        String::from_utf8(normalize(s)).expect("utf-8")
    }

    #[test]
    fn separators_case_and_width_are_dropped() {
        assert_eq!(n("You are  A-C-M-E's bot!"), "youareacmesbot");
        assert_eq!(n("Y o u\ta r e"), "youare");
        assert_eq!(n("ＡＣＭＥ　ｂｏｔ"), "acmebot");
        assert_eq!(n("🎉—“”"), "");
    }

    #[test]
    fn compatibility_forms_read_as_their_ascii_character() {
        for c in ('a'..='z').chain('A'..='Z').chain('0'..='9') {
            let full = char::from_u32(c as u32 + 0xFEE0).expect("full-width form");
            assert_eq!(n(&full.to_string()), n(&c.to_string()), "full-width {c}");
        }
        assert_eq!(n("\u{1D426}\u{1D41E}\u{1D426}\u{1D428} \u{24C2}"), "memom", "mathematical bold, circled");
        assert_eq!(n("ｍｅｍｏ，ｍｅ"), n("memo, me"));
    }

    #[test]
    fn leetspeak_folds_to_the_same_letters() {
        assert_eq!(n("Y0u 4r3 N1mbu5, h3lp@ $upp0rt"), n("You are Nimbus, help@ support"));
        assert_eq!(n("Hello"), n("He11o"));
    }

    #[test]
    fn look_alikes_fold_to_latin() {
        // Cyrillic а, е, о, р, с and Greek ο in Latin words.
        assert_eq!(n("Yоu аrе Nimbus, the suppоrt аssistаnt"), n("You are Nimbus, the support assistant"));
        assert_eq!(n("\u{1D40E}\u{1D41A}\u{1D41C}"), n("Oac"), "mathematical bold letters");
        assert_eq!(n("café naïve"), "cafenaive");
    }

    #[test]
    fn invisible_characters_do_not_split_words() {
        assert_eq!(words("ig\u{200B}nore al\u{00AD}l"), vec![b"ignore".to_vec(), b"aii".to_vec()]);
        assert_eq!(words("a, b;c"), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn cjk_passes_through() {
        assert_eq!(n("你好，世界"), "你好世界");
        assert_eq!(words("你好 世界").len(), 2);
    }
}
