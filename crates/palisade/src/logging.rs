//! Structured logs through `tracing`: human-readable by default, JSON by flag.
//! `RUST_LOG` overrides the configured level. Repetitive warnings are limited
//! (`gateway::log_limit`): a flood writes a few lines and counts the rest.

use gateway::log_limit::RepeatLimit;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let limited = tracing_subscriber::registry().with(filter).with(RepeatLimit);
    // A second init (tests calling in-process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => limited.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => {
            limited.with(fmt::layer().with_target(false).json().with_current_span(true).flatten_event(true)).try_init()
        }
    };
}
