//! E-mail addresses as a person types them (`accounts::email::parse_email`).
#![no_main]

use accounts::email::{MAX_LEN, MAX_LOCAL_LEN, parse_email};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(email) = parse_email(text) else { return };
    assert!(email.address.is_ascii() && email.address.len() <= MAX_LEN, "{email:?}");
    assert_eq!(email.normalized, email.address.to_ascii_lowercase());
    let (local, domain) = email.address.split_once('@').expect("one @");
    assert!(!local.is_empty() && local.len() <= MAX_LOCAL_LEN && !domain.contains('@'));
    assert!(!email.address.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()), "{email:?}");
    assert!(text.contains(local), "the local part is kept as typed");
    // One spelling per mailbox: both forms read back as themselves.
    assert_eq!(parse_email(&email.address).as_ref(), Ok(&email));
    assert_eq!(parse_email(&email.normalized).map(|e| e.normalized), Ok(email.normalized.clone()));
});
