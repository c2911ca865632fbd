//! Drill scenario files (`drill::scenario::Scenario::parse`: TOML, then every bound).
#![no_main]

use drill::scenario::{MAX_SECONDS, Scenario};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(scenario) = Scenario::parse(text, "fuzz.toml") else { return };
    assert!(scenario.problems().is_empty());
    assert!(!scenario.phases.is_empty() && scenario.total_seconds() <= MAX_SECONDS);
    for i in 0..scenario.phases.len() {
        let (start, end) = scenario.window(i);
        assert!(start <= end, "phase {i}: {start}..{end}");
    }
    for bot in &scenario.bots {
        assert!(scenario.bot_phases(bot).iter().all(|&i| i < scenario.phases.len()));
    }
    // A scenario written back out (as `palisade drill --show` prints it) reads as the same scenario.
    let written = toml::to_string_pretty(&scenario).expect("a valid scenario serialises");
    let again = Scenario::parse(&written, "written.toml").expect("a written scenario reads back");
    assert_eq!(toml::to_string_pretty(&again).expect("serialises"), written);
});
