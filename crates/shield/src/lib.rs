//! Palisade's edge defence as pure logic: block and allow lists, rate limiters with bounded
//! memory, proof-of-work challenges and clearances, a bot score, under-attack detection and
//! the registration waiting room. No I/O, no clock: every call takes `now` (a `Duration`
//! since the Unix epoch wherever a signed token carries the time), so everything here is
//! tested and benchmarked directly and the gateway only wires it to HTTP.

pub mod attack;
pub mod blocklist;
pub mod botscore;
pub mod cidr;
pub mod clearance;
pub mod client;
pub mod concurrency;
pub mod config;
pub mod gcra;
pub mod limits;
pub mod meter;
pub mod pow;
pub mod replay;
pub mod signer;
pub mod table;
pub mod trie;
pub mod waiting_room;

pub use attack::{AttackConfig, AttackDetector, Cause, Counters, Metric, MetricState, Mode, Transition};
pub use blocklist::{BlockList, BlockListError, Entry as BlockEntry, ListKind, Verdict};
pub use botscore::{Action, BotScoreConfig, BotVerdict, Reasons, RequestSignals, score};
pub use cidr::{Cidr, CidrError, Family};
pub use clearance::{Clearance, ClearanceError, ClearanceLedger};
pub use client::{Client, SubnetPrefixes};
pub use concurrency::{ConcurrencyPermit, ConcurrencyTable};
pub use config::{
    BlockListConfig, ConfigError, LimitsConfig, PowConfig, RateConfig, RouteLimit, ShieldConfig, Subject,
};
pub use gcra::{Decision, Gcra, GcraError};
pub use limits::{EdgeLimits, RouteId, TableStats};
pub use meter::{DecayingCount, TimingStats, TimingTracker};
pub use pow::{Challenge, ClientBinding, PowError, PowIssuer, Solved, solve};
pub use replay::{ReplayError, ReplayGuard};
pub use signer::{Signer, epoch_key, fresh_epoch};
pub use table::{BoundedTable, Key, LimiterTable, Tat};
pub use waiting_room::{
    AdmissionPass, Status as WaitingStatus, Ticket, WaitingRoom, WaitingRoomConfig, WaitingRoomError,
};
