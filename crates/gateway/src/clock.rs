//! The wall clock as the shield crate wants it: time since the Unix epoch. Logic
//! takes `now` as a parameter; only the edges of the program read the clock.

use std::time::Duration;

pub fn now() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}
