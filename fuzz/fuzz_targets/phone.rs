//! Phone numbers as a person types them (`accounts::phone::parse_phone`), read with one of
//! a few default regions (the first byte picks it).
#![no_main]

use accounts::phone::{PhoneError, parse_phone};
use libfuzzer_sys::fuzz_target;

const REGIONS: [Option<&str>; 8] =
    [None, Some("CN"), Some("US"), Some("FR"), Some("GB"), Some("IN"), Some("BR"), Some("ZZ")];

fuzz_target!(|data: &[u8]| {
    let [pick, text @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let region = REGIONS[usize::from(pick % 8)];
    match parse_phone(text, region) {
        Ok(phone) => {
            let digits = phone.e164.strip_prefix('+').expect("E.164 starts with +");
            assert!(
                (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
                "{text:?} → {phone:?}"
            );
            assert!(phone.region.len() == 2 && phone.region.bytes().all(|b| b.is_ascii_uppercase()), "{phone:?}");
            // One spelling per number: the stored form reads back as itself, whatever the
            // default region.
            for default in REGIONS.into_iter().filter(|r| *r != Some("ZZ")) {
                assert_eq!(parse_phone(&phone.e164, default), Ok(phone.clone()), "{text:?} with {default:?}");
            }
        }
        Err(PhoneError::UnknownDefaultRegion(r)) => assert_eq!(Some(r.as_str()), region),
        Err(_) => {}
    }
});
