//! Shared test support. Integration tests talk to real parts: a real listener on
//! an ephemeral loopback port, a real PostgreSQL, a real Redis.
//!
//! Services are found or started the same way everywhere: an explicit URL from
//! the environment, else the local default, else a private instance started
//! from the installed binaries. When none can be had, a test is skipped with a
//! loud message locally and fails under `CI=true`.

pub mod postgres;
pub mod redis;
pub mod redis_ha;

/// True when running under CI, where a missing service is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
