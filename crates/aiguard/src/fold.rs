//! Input text folded so that patterns see through cheap disguises: compatibility forms,
//! accents, zero-width characters and Cyrillic or Greek look-alikes.

use std::borrow::Cow;

pub(crate) struct Folded<'a> {
    /// Lowercased, compatibility-decomposed, accents and invisible characters removed;
    /// punctuation kept (the raw literals need it). The text itself when that changes
    /// nothing (lower-case ASCII, as short chat prompts often are): no copy per request.
    pub(crate) lower: Cow<'a, str>,
    pub(crate) zero_width: bool,
    pub(crate) homoglyph: bool,
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{E0000}'..='\u{E007F}')
}

/// Cyrillic and Greek letters that render like Latin ones, the usual homoglyph swaps, and
/// Latin small capitals.
fn confusable(c: char) -> Option<char> {
    Some(match c {
        'а' | 'А' | 'α' | 'Α' => 'a',
        'в' | 'В' | 'β' | 'Β' => 'b',
        'с' | 'С' | 'ϲ' => 'c',
        'е' | 'Е' | 'ε' | 'Ε' => 'e',
        'н' | 'Н' | 'η' | 'Η' => 'h',
        'і' | 'І' | 'ι' | 'Ι' => 'i',
        'ј' | 'Ј' => 'j',
        'к' | 'К' | 'κ' | 'Κ' => 'k',
        'м' | 'М' | 'Μ' => 'm',
        'п' | 'ո' => 'n',
        'о' | 'О' | 'ο' | 'Ο' => 'o',
        'р' | 'Р' | 'ρ' | 'Ρ' => 'p',
        'ѕ' | 'Ѕ' => 's',
        'т' | 'Т' | 'τ' | 'Τ' => 't',
        'υ' | 'ս' => 'u',
        'ν' => 'v',
        'ѡ' | 'ԝ' => 'w',
        'х' | 'Х' | 'χ' | 'Χ' => 'x',
        'у' | 'У' | 'γ' | 'Υ' => 'y',
        'Ζ' => 'z',
        // Small capitals, which text "font" generators use to write a whole prompt.
        'ᴀ' => 'a',
        'ʙ' => 'b',
        'ᴄ' => 'c',
        'ᴅ' => 'd',
        'ᴇ' => 'e',
        'ꜰ' => 'f',
        'ɢ' => 'g',
        'ʜ' => 'h',
        'ɪ' => 'i',
        'ᴊ' => 'j',
        'ᴋ' => 'k',
        'ʟ' => 'l',
        'ᴍ' => 'm',
        'ɴ' => 'n',
        'ᴏ' => 'o',
        'ᴘ' => 'p',
        'ʀ' => 'r',
        'ꜱ' => 's',
        'ᴛ' => 't',
        'ᴜ' => 'u',
        'ᴠ' => 'v',
        'ᴡ' => 'w',
        'ʏ' => 'y',
        'ᴢ' => 'z',
        // Turkish dotless i, which also slips Latin words past a matcher ("ıgnore").
        'ı' => 'i',
        _ => return None,
    })
}

pub(crate) fn fold(text: &str) -> Folded<'_> {
    if text.is_ascii() {
        let lower = if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        };
        return Folded { lower, zero_width: false, homoglyph: false };
    }
    let mut lower = String::with_capacity(text.len());
    let (mut zero_width, mut homoglyph) = (false, false);
    let mut rest = text;
    while !rest.is_empty() {
        // Copy ASCII runs in bulk; only the rare non-ASCII characters go one by one.
        let ascii = rest.bytes().position(|b| !b.is_ascii()).unwrap_or(rest.len());
        let at = lower.len();
        lower.push_str(&rest[..ascii]);
        lower[at..].make_ascii_lowercase();
        rest = &rest[ascii..];
        let Some(c) = rest.chars().next() else { break };
        rest = &rest[c.len_utf8()..];
        if is_invisible(c) {
            zero_width = true;
        } else if let Some(latin) = confusable(c).or_else(|| {
            // Upper case the table leaves out (`П`) folds like its lower case (`п`).
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) => confusable(l),
                _ => None,
            }
        }) {
            homoglyph = true;
            lower.push(latin);
        } else {
            unicode_normalization::char::decompose_compatible(c, |d| {
                if !unicode_normalization::char::is_combining_mark(d) {
                    lower.extend(d.to_lowercase());
                }
            });
        }
    }
    // A Cyrillic or Greek text is not an attack: only count look-alikes mixed into mostly
    // Latin text.
    if homoglyph {
        let non_latin = text.chars().filter(|c| c.is_alphabetic() && !c.is_ascii()).count();
        let latin = text.chars().filter(char::is_ascii_alphabetic).count();
        homoglyph = latin > 4 * non_latin;
    }
    Folded { lower: Cow::Owned(lower), zero_width, homoglyph }
}

/// The folded form of a lexicon entry: what the input scorer matches patterns against.
pub(crate) fn fold_for_lexicon(text: &str) -> String {
    fold(text).lower.into_owned()
}
