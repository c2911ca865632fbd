//! Priority admission in front of the upstream pool: who gets a slot toward the model servers
//! when there are not enough, and who is refused — lowest class first, with `Retry-After`.
//!
//! - [`PriorityClass`]: operator > member > login > newcomer > anonymous, assigned by the
//!   gateway after identity (per route and per key).
//! - [`AdaptiveLimit`]: the concurrency limit toward the upstreams, adapting to their latency and
//!   overload signals instead of a fixed number.
//! - [`Admission`]: per-class bounded queues under that limit. Each class and the classes below
//!   it together may hold only a share of the limit, so a flood of low classes uses spare
//!   capacity but never the capacity members need; a freed slot goes to the most important
//!   waiting class; accounts of one class share round-robin and each is capped.
//! - [`Tier`]: trust tiers inside a class (established > standard > recent), sharing the
//!   class's capacity by weighted max-min fairness under nested tier shares.
//! - [`Refusal`]: the reason, a 429/503 status and a `Retry-After` hint, counted by class and
//!   reason in the [`AdmissionSnapshot`].
//!
//! ```no_run
//! # async fn proxy() -> Result<(), admission::Refusal> {
//! use admission::{Admission, AdmissionConfig, AdmissionRequest, Outcome, PriorityClass};
//! use std::time::Duration;
//!
//! let gate = Admission::new(AdmissionConfig::default()).expect("valid defaults");
//! let request = AdmissionRequest { account: Some(42), ..AdmissionRequest::new(PriorityClass::Member) };
//! let permit = gate.acquire(request).await?; // on Err: answer refusal.status() with Retry-After
//! // … call the upstream; once its first byte arrives, note the latency; stream the reply …
//! permit.finish(Outcome::Success { latency: Duration::from_millis(80) });
//! # Ok(())
//! # }
//! ```

mod admission;
mod class;
mod config;
mod limit;
mod refusal;
mod report;
mod scheduler;
mod tier;

pub use admission::{Admission, AdmissionRequest, InvalidConfig, Permit};
pub use class::{ParseClassError, PerClass, PriorityClass};
pub use config::{AdmissionConfig, LimitConfig};
pub use limit::{AdaptiveLimit, Load};
pub use refusal::{Refusal, RefusalReason};
pub use report::{AdmissionSnapshot, Outcome};
pub use tier::{ParseTierError, PerTier, Tier};
