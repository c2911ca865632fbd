//! The attack drill and its simulated model server.
//!
//! [`sim`] is an OpenAI-compatible upstream with a fixed capacity, used by the
//! quick start (when no upstream is configured), the tests and the benchmarks.

pub mod chart;
pub mod load;
pub mod sim;
