//! The attack detector's signals summed over the fleet: each node adds what it counted
//! in its last second to a per-second bucket (server time) and reads the bucket of the
//! second before, which every node has finished adding to. So every node feeds its
//! detector the same fleet-wide rates and switches at the same moment, and an attack
//! spread thin over many nodes is seen whole. One round trip per node a second,
//! independent of traffic.

use std::sync::LazyLock;

use crate::error::FleetError;
use crate::state::{Fleet, Trip};

/// KEYS[1]: the buckets' key prefix. ARGV: this node's counts, one per signal.
/// Returns the previous second's totals, in ARGV's order.
const SIGNALS_SCRIPT: &str = r"
local t = redis.call('TIME')
local second = tonumber(t[1])
local now = KEYS[1] .. ':' .. second
local before = KEYS[1] .. ':' .. (second - 1)
local out = {}
for i = 1, #ARGV do
  local n = tonumber(ARGV[i])
  if n > 0 then redis.call('HINCRBY', now, i, n) end
  out[i] = tonumber(redis.call('HGET', before, i) or '0') or 0
end
redis.call('EXPIRE', now, 10)
return out
";

impl Fleet {
    /// Adds this node's `counts` for the last second and returns the fleet's totals for
    /// the second before (in the same order). A [`Trip::Clock`]: the detector makes it once
    /// a second.
    pub async fn sum_signals<const N: usize>(&self, counts: [u64; N]) -> Result<[u64; N], FleetError> {
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SIGNALS_SCRIPT));
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.key(format!("{}:{{switches}}:signals", self.prefix()));
        for n in counts {
            invocation.arg(n);
        }
        let answer: Vec<u64> =
            self.call_for(Trip::Clock, |mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        answer.try_into().map_err(|_| FleetError::Protocol("the signals script answered the wrong number of values"))
    }
}
