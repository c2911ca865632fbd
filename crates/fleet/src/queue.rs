//! A budget update waiting to be sent (see [`crate::Fleet::run_updates`]): its own
//! module so the connection's state can hold the queue without knowing the limits.

use shield::Gcra;

/// Most budget updates one trip carries.
pub(crate) const MAX_BATCH: usize = 512;
/// Most budget updates waiting to be sent; more are dropped (counted as fallbacks).
pub(crate) const MAX_QUEUED: usize = 65_536;

/// One queued budget update.
#[derive(Debug)]
pub(crate) struct Update {
    pub key: String,
    pub rate: Gcra,
    pub tokens: i64,
    /// Told when the update was applied.
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}
