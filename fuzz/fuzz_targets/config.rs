//! `palisade.toml` (`palisade::config::Config::parse`, then `validate`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use palisade::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text, Path::new("fuzz.toml"), Vec::new()) else { return };
    if config.validate().is_err() {
        return;
    }
    // A valid configuration written back out (as `palisade config` shows it) reads as the
    // same configuration.
    let written = toml::to_string(&config).expect("a valid configuration serialises");
    let again =
        Config::parse(&written, Path::new("written.toml"), Vec::new()).expect("a written configuration reads back");
    assert!(again == config, "{written}");
});
