//! Shared state for a fleet of identical gateway nodes, on Redis or Valkey.
//!
//! One [`Fleet`] per process holds a lazily connected, self-reconnecting
//! `redis` connection manager and answers: rate-limit decisions ([`Fleet::check`], GCRA
//! in one server-side script per decision, all the limits of one request at once, with
//! the account's concurrency lease), one-time claims ([`Fleet::claim_once`],
//! proof-of-work replay), the login back-off ([`logins`]), the registration waiting room
//! ([`room`]), the attack detector's signals summed over the fleet ([`signals`]), the AI
//! guard's strikes ([`strikes`]), and the switches every node must see within a second
//! ([`switches`]).
//!
//! Every call is bounded by [`FleetConfig::timeout`]. A failure marks the fleet down
//! ([`Fleet::is_up`]); callers then decide locally (the gateway scales its local limits to
//! its share of the fleet) and stop asking Redis, so an outage costs no added latency.
//! [`Fleet::run_probe`] pings while down and marks the fleet up again as soon as Redis
//! answers.
//!
//! Keys: `<prefix>:<kind>:{<caller>}…`. Everything one decision touches shares the
//! `{…}` hash tag, so the script's keys live in one Cluster slot.

pub mod error;
pub mod limits;
mod link;
pub mod logins;
mod queue;
pub mod room;
pub mod signals;
pub mod state;
pub mod strikes;
pub mod switches;

pub use error::FleetError;
pub use limits::{Checked, Decided, Lease, LimitKey, SharedLimit};
pub use room::{RoomAnswer, RoomRules};
pub use state::{Fleet, FleetConfig, Trip};
pub use strikes::StrikeRecord;
pub use switches::{Switch, SwitchVersions};
