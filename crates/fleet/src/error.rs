//! The one error type of the crate.

use std::time::Duration;

/// What went wrong talking to the shared state.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("shared_state is not a usable Redis URL: {0}")]
    Url(String),
    #[error("shared_state: the key prefix must be 1 to 64 characters without braces, found {0:?}")]
    Prefix(String),
    #[error("shared state did not answer within {0:?}")]
    Timeout(Duration),
    #[error("shared state: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("shared state answered something unexpected: {0}")]
    Protocol(&'static str),
    #[error(
        "this node's shield key differs from the one the fleet uses: every node must be given the same \
         shield key (copy the key file or set the same key on every node)"
    )]
    ShieldKeyMismatch,
}
