//! The attack drill and its simulated model server.
//!
//! [`sim`] is an OpenAI-compatible upstream with a fixed capacity, used by the
//! quick start (when no upstream is configured), the tests and the benchmarks.
//! [`scenario`] is the drill's TOML, [`traffic`] the users and bots ([`farm`] the
//! account farm, [`phones`] the numbers sign-ups use), [`run`] one run against one
//! target, [`fleet`] several nodes of it, [`report`] the tables and verdicts, [`chart`]
//! the picture.

pub mod chart;
pub mod farm;
pub mod fleet;
pub mod load;
pub mod phones;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sim;
pub mod traffic;
