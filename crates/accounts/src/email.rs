//! E-mail addresses checked for shape (not deliverability: only a sent code proves that)
//! and normalised so one mailbox has one spelling for uniqueness.
//!
//! Deliberately narrower than RFC 5321: the local part must be ASCII dot-atom text (no
//! quoted strings, no Unicode). That refuses a few legal but vanishingly rare addresses
//! and, in exchange, rules out control characters and mixed-script look-alikes
//! (Cyrillic `а` for Latin `a`) outright, with no confusables table to maintain.
//! Internationalised domains must be entered in their `xn--` form for the same reason.

/// RFC 5321 limit on a forward path, less the angle brackets.
pub const MAX_LEN: usize = 254;
/// RFC 5321 limit on the local part.
pub const MAX_LOCAL_LEN: usize = 64;
const MAX_LABEL_LEN: usize = 63;

/// A well-formed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// As entered (trimmed), domain lower-cased: the form to send mail to, since a few
    /// servers still treat the local part case-sensitively.
    pub address: String,
    /// Entirely lower-cased: the form to compare, index and keep unique.
    pub normalized: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Enter an e-mail address.")]
    Empty,
    #[error("That e-mail address is too long (at most {MAX_LEN} characters).")]
    TooLong,
    #[error("An e-mail address needs exactly one @, as in name@example.com.")]
    NotOneAt,
    #[error("The part before the @ is missing.")]
    EmptyLocalPart,
    #[error("The part before the @ is too long (at most {MAX_LOCAL_LEN} characters).")]
    LocalPartTooLong,
    #[error(
        "The part before the @ may contain only ASCII letters, digits, dots and ! # $ % & ' * + / = ? ^ _ ` {{ | }} ~ -, without a dot at the start, at the end or twice in a row."
    )]
    InvalidLocalPart,
    #[error("Internationalised domain names are not supported yet; enter the domain in its xn-- form.")]
    NonAsciiDomain,
    #[error("The part after the @ must be a domain name such as example.com.")]
    InvalidDomain,
}

impl EmailError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_email",
            Self::TooLong => "email_too_long",
            Self::NotOneAt => "invalid_email",
            Self::EmptyLocalPart => "email_local_part_empty",
            Self::LocalPartTooLong => "email_local_part_too_long",
            Self::InvalidLocalPart => "email_local_part_invalid",
            Self::NonAsciiDomain => "email_domain_not_ascii",
            Self::InvalidDomain => "email_domain_invalid",
        }
    }
}

/// Checks and normalises an address typed by a person.
pub fn parse_email(input: &str) -> Result<Email, EmailError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(EmailError::Empty);
    }
    // Counted in bytes: every accepted address is ASCII, and bytes bound the work.
    if input.len() > MAX_LEN {
        return Err(EmailError::TooLong);
    }
    let mut parts = input.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(EmailError::NotOneAt);
    };
    if local.is_empty() {
        return Err(EmailError::EmptyLocalPart);
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err(EmailError::LocalPartTooLong);
    }
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    if !local.split('.').all(|atom| !atom.is_empty() && atom.bytes().all(atext)) {
        return Err(EmailError::InvalidLocalPart);
    }
    if !domain.is_ascii() {
        return Err(EmailError::NonAsciiDomain);
    }
    let domain = domain.to_ascii_lowercase();
    if !is_hostname(&domain) {
        return Err(EmailError::InvalidDomain);
    }
    let address = format!("{local}@{domain}");
    let normalized = address.to_ascii_lowercase();
    Ok(Email { address, normalized })
}

/// At least two LDH labels, none empty, none over 63 bytes, none starting or ending with
/// `-`, and a top-level label that is not all digits (which would be an IP address).
fn is_hostname(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let ldh = |l: &&str| {
        !l.is_empty()
            && l.len() <= MAX_LABEL_LEN
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    labels.len() >= 2
        && labels.iter().all(ldh)
        && labels.last().is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(input: &str) -> &'static str {
        match parse_email(input) {
            Ok(e) => panic!("{input:?} accepted as {e:?}"),
            Err(e) => e.code(),
        }
    }

    #[test]
    fn accepts_and_normalises() {
        let e = parse_email("  Marguerite.Dubois+ai@Example.ORG \n").expect("valid");
        assert_eq!(e.address, "Marguerite.Dubois+ai@example.org");
        assert_eq!(e.normalized, "marguerite.dubois+ai@example.org");
        for ok in ["a@b.co", "x_y-z@mail.example.co.uk", "o'brien@xn--bcher-kva.example", "!#$%&'*+/=?^_`{|}~-@a1.io"] {
            assert!(parse_email(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn case_variants_share_one_normalized_form() {
        let a = parse_email("Bob@Example.com").expect("a");
        let b = parse_email("BOB@example.COM").expect("b");
        assert_ne!(a.address, b.address);
        assert_eq!(a.normalized, b.normalized);
    }

    #[test]
    fn length_limits() {
        let local64 = "a".repeat(64);
        assert!(parse_email(&format!("{local64}@example.com")).is_ok());
        assert_eq!(code(&format!("{local64}a@example.com")), "email_local_part_too_long");
        let label = "d".repeat(63);
        let at_limit = format!("{}@{label}.{label}.{label}.{}.com", "a".repeat(18), "e".repeat(39));
        assert_eq!(at_limit.len(), 254);
        assert!(parse_email(&at_limit).is_ok());
        assert_eq!(code(&format!("a{at_limit}")), "email_too_long");
        assert_eq!(code(&format!("a@{}.com", "d".repeat(64))), "email_domain_invalid");
    }

    #[test]
    fn refuses_malformed_addresses_with_specific_codes() {
        let cases = [
            ("", "empty_email"),
            ("   ", "empty_email"),
            ("no-at.example.com", "invalid_email"),
            ("a@b@example.com", "invalid_email"),
            ("@example.com", "email_local_part_empty"),
            (".a@example.com", "email_local_part_invalid"),
            ("a.@example.com", "email_local_part_invalid"),
            ("a..b@example.com", "email_local_part_invalid"),
            ("a b@example.com", "email_local_part_invalid"),
            ("\"quoted\"@example.com", "email_local_part_invalid"),
            ("a\u{0}b@example.com", "email_local_part_invalid"),
            ("a\tb@example.com", "email_local_part_invalid"),
            ("pаypal@example.com", "email_local_part_invalid"), // Cyrillic 'а'
            ("zoë@example.com", "email_local_part_invalid"),
            ("a@bücher.de", "email_domain_not_ascii"),
            ("a@localhost", "email_domain_invalid"),
            ("a@", "email_domain_invalid"),
            ("a@example..com", "email_domain_invalid"),
            ("a@.example.com", "email_domain_invalid"),
            ("a@example.com.", "email_domain_invalid"),
            ("a@-example.com", "email_domain_invalid"),
            ("a@example-.com", "email_domain_invalid"),
            ("a@exa_mple.com", "email_domain_invalid"),
            ("a@[127.0.0.1]", "email_domain_invalid"),
            ("a@127.0.0.1", "email_domain_invalid"),
            ("a@exa mple.com", "email_domain_invalid"),
        ];
        for (input, expected) in cases {
            assert_eq!(code(input), expected, "{input:?}");
        }
    }

    #[test]
    fn messages_are_specific() {
        assert!(EmailError::NonAsciiDomain.to_string().contains("xn--"));
        assert!(EmailError::NotOneAt.to_string().contains("exactly one @"));
    }

    proptest! {
        #[test]
        fn never_panics_and_normalized_is_a_fixed_point(input in "\\PC{0,80}") {
            if let Ok(e) = parse_email(&input) {
                prop_assert!(e.normalized.len() <= MAX_LEN);
                prop_assert!(e.normalized.is_ascii());
                let again = parse_email(&e.normalized).map_err(|err| TestCaseError::fail(err.to_string()))?;
                prop_assert_eq!(again.normalized, e.normalized.clone());
                prop_assert_eq!(e.address.to_ascii_lowercase(), e.normalized);
            }
        }

        #[test]
        fn generated_addresses_parse(local in "[a-zA-Z0-9_+-]{1,20}(\\.[a-z0-9]{1,5}){0,2}", domain in "[a-z0-9]{1,10}(\\.[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?){0,2}\\.[a-z]{2,6}") {
            let e = parse_email(&format!("{local}@{domain}")).map_err(|err| TestCaseError::fail(err.to_string()))?;
            prop_assert_eq!(e.normalized, format!("{local}@{domain}").to_ascii_lowercase());
        }
    }
}
