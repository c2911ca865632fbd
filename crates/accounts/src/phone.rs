//! Phone numbers normalised to E.164 with the region they belong to (libphonenumber's
//! metadata via the `phonenumber` crate), so one person's number has one spelling for
//! uniqueness and for the region-based registration policy.

use phonenumber::Mode;
use phonenumber::country::Id;

/// Longest input considered. The longest E.164 number is 15 digits; 32 leaves room for
/// `+`, spaces, dashes and brackets while refusing pasted junk before parsing it.
pub const MAX_INPUT_CHARS: usize = 32;

/// E.164 caps a number at 15 digits, country code included.
const MAX_E164_DIGITS: usize = 15;

/// A valid phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    /// `+` and digits, e.g. `+8613800138000`: the form to store, index and send to.
    pub e164: String,
    /// ISO 3166-1 alpha-2 region the number belongs to, e.g. `CN` (for shared calling
    /// codes like +1 this is the region of the number, not the default passed in).
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("Enter a phone number.")]
    Empty,
    #[error("That is too long for a phone number.")]
    TooLong,
    #[error("A phone number may contain only digits, spaces, + - ( ) and dots.")]
    InvalidCharacters,
    #[error("Add the country code, for example +86 or +1.")]
    CountryCodeRequired,
    #[error("That is not a valid phone number. Check the digits and the country code.")]
    Invalid,
    /// The configured default region is not a known ISO 3166 code: a configuration error.
    #[error("unknown default region {0:?}")]
    UnknownDefaultRegion(String),
}

impl PhoneError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_phone",
            Self::TooLong => "phone_too_long",
            Self::InvalidCharacters => "invalid_phone_characters",
            Self::CountryCodeRequired => "phone_country_code_required",
            Self::Invalid => "invalid_phone",
            Self::UnknownDefaultRegion(_) => "unknown_default_region",
        }
    }
}

/// Parses what a person typed. Numbers written with `+` carry their own country code;
/// others are read as dialled from `default_region` (e.g. the region the sign-up page is
/// served for), which also covers that region's international prefix (`00` in CN and FR,
/// `011` in the US).
///
/// Letters are refused outright: libphonenumber would read vanity spellings
/// (`1-800-FLOWERS`) and extensions (`x123`), neither of which can receive an SMS.
pub fn parse_phone(input: &str, default_region: Option<&str>) -> Result<Phone, PhoneError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(PhoneError::Empty);
    }
    if input.chars().count() > MAX_INPUT_CHARS {
        return Err(PhoneError::TooLong);
    }
    if !input.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.')) {
        return Err(PhoneError::InvalidCharacters);
    }
    let default = default_region
        .map(|r| r.parse::<Id>().map_err(|_| PhoneError::UnknownDefaultRegion(r.to_owned())))
        .transpose()?;
    let international = input.starts_with('+');
    if default.is_none() && !international {
        return Err(PhoneError::CountryCodeRequired);
    }
    // A `+` number needs no default, and passing one anyway is harmful: phonenumber
    // 0.3.10 then strips the default region's national prefix from the digits after the
    // country code ("+86 138…" with US became "+86 38…").
    let region_hint = if international { None } else { default };
    let number = phonenumber::parse(region_hint, input).map_err(|_| PhoneError::Invalid)?;
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid);
    }
    let region = number.country().id().ok_or(PhoneError::Invalid)?;
    let e164 = number.format().mode(Mode::E164).to_string();
    // libphonenumber's metadata takes some numbers longer than E.164 allows (German
    // ones of 16 digits); no SMS route delivers to those.
    if e164.len() > 1 + MAX_E164_DIGITS {
        return Err(PhoneError::Invalid);
    }
    // One spelling per number: what is stored must read back as itself, or an account
    // registered as "00 7 800…" could not be found again by its own E.164 form, which
    // phonenumber 0.3.10 refuses for some numbers it accepts through a dialling prefix.
    if !international && parse_phone(&e164, None).map(|p| p.e164).as_deref() != Ok(e164.as_str()) {
        return Err(PhoneError::Invalid);
    }
    Ok(Phone { e164, region: region.as_ref().to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(input: &str, default: Option<&str>) -> (String, String) {
        let p = parse_phone(input, default).unwrap_or_else(|e| panic!("{input:?} ({default:?}): {e}"));
        (p.e164, p.region)
    }

    fn err(input: &str, default: Option<&str>) -> &'static str {
        match parse_phone(input, default) {
            Ok(p) => panic!("{input:?} ({default:?}) parsed as {p:?}"),
            Err(e) => e.code(),
        }
    }

    fn pair(e164: &str, region: &str) -> (String, String) {
        (e164.to_owned(), region.to_owned())
    }

    #[test]
    fn numbers_longer_than_e164_allows_are_refused() {
        // Found by the `phone` fuzz target (fuzz/regressions/): libphonenumber calls this
        // German number valid, with 16 digits.
        assert_eq!(err("+4  996171 123456256", Some("IN")), "invalid_phone");
        assert_eq!(err("+49 96171 123456256", None), "invalid_phone");
    }

    #[test]
    fn a_number_whose_e164_form_does_not_read_back_is_refused() {
        // Found by the `phone` fuzz target (fuzz/regressions/): through China's "00" prefix phonenumber took
        // this as +7 800 338 0000, then refused "+78003380000" itself.
        assert_eq!(err("+78003380000", None), "invalid_phone");
        assert_eq!(err("00 78003380000", Some("CN")), "invalid_phone");
    }

    #[test]
    fn china() {
        let want = pair("+8613800138000", "CN");
        assert_eq!(ok("138 0013 8000", Some("CN")), want);
        assert_eq!(ok("+86 138-0013-8000", None), want);
        assert_eq!(ok("0086 13800138000", Some("CN")), want);
        assert_eq!(ok("+86 138 0013 8000", Some("US")), want, "international form ignores the default");
    }

    #[test]
    fn united_states_and_canada_share_plus_one() {
        let want = pair("+12015550123", "US");
        assert_eq!(ok("(201) 555-0123", Some("US")), want);
        assert_eq!(ok("+1 201-555-0123", None), want);
        assert_eq!(ok("201.555.0123", Some("US")), want);
        // Toronto area code: the region comes from the number, not from the default.
        assert_eq!(ok("+1 416 555 0123", Some("US")), pair("+14165550123", "CA"));
    }

    #[test]
    fn great_britain() {
        let want = pair("+447400123456", "GB");
        assert_eq!(ok("07400 123456", Some("GB")), want);
        assert_eq!(ok("+44 7400 123456", None), want);
        assert_eq!(ok("+44 (0)7400 123456", None), want);
    }

    #[test]
    fn france() {
        let want = pair("+33612345678", "FR");
        assert_eq!(ok("06 12 34 56 78", Some("FR")), want);
        assert_eq!(ok("+33 6 12 34 56 78", None), want);
        assert_eq!(ok("0033612345678", Some("FR")), want);
        assert_eq!(ok("011 33 6 12 34 56 78", Some("US")), want, "US international prefix");
    }

    #[test]
    fn a_national_number_is_valid_only_in_its_own_region() {
        assert_eq!(ok("06 12 34 56 78", Some("FR")).1, "FR");
        assert_eq!(err("06 12 34 56 78", Some("CN")), "invalid_phone");
        assert_eq!(err("06 12 34 56 78", Some("US")), "invalid_phone");
        assert_eq!(ok("138 0013 8000", Some("CN")).1, "CN");
        assert_eq!(err("138 0013 8000", Some("GB")), "invalid_phone");
    }

    #[test]
    fn refuses_garbage_with_specific_codes() {
        assert_eq!(err("", None), "empty_phone");
        assert_eq!(err("   ", Some("CN")), "empty_phone");
        assert_eq!(err(&"1".repeat(33), Some("US")), "phone_too_long");
        assert_eq!(err("1-800-FLOWERS", Some("US")), "invalid_phone_characters");
        assert_eq!(err("+1 201 555 0123 x12", None), "invalid_phone_characters");
        assert_eq!(err("+86 138 0013 800０", None), "invalid_phone_characters");
        assert_eq!(err("13800138000", None), "phone_country_code_required");
        assert_eq!(err("0086 13800138000", None), "phone_country_code_required");
        assert_eq!(err("+86 123", None), "invalid_phone");
        assert_eq!(err("+999 1234 5678", None), "invalid_phone");
        assert_eq!(err("+1 000 000 0000", None), "invalid_phone");
        assert_eq!(err("++--()", None), "invalid_phone");
        assert_eq!(err("123", Some("ZZ")), "unknown_default_region");
    }

    #[test]
    fn messages_tell_what_to_do() {
        assert!(PhoneError::CountryCodeRequired.to_string().contains("+86"));
        assert!(PhoneError::InvalidCharacters.to_string().contains("digits"));
    }

    proptest! {
        #[test]
        fn never_panics_and_output_is_canonical(input in "[0-9+ ()\\-.]{0,32}", region in proptest::sample::select(vec!["CN", "US", "GB", "FR"])) {
            if let Ok(p) = parse_phone(&input, Some(region)) {
                prop_assert!(p.e164.starts_with('+'));
                prop_assert!(p.e164[1..].bytes().all(|b| b.is_ascii_digit()));
                prop_assert!(p.e164.len() <= 16);
                // The normalised form parses to itself: it is a fixed point.
                prop_assert_eq!(parse_phone(&p.e164, None), Ok(p.clone()));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(input in "\\PC{0,40}") {
            let _ = parse_phone(&input, Some("CN"));
        }
    }
}
