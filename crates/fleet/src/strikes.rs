//! The AI guard's strikes, counted for the fleet: a caller flagged on several nodes
//! collects its strikes in one record, so three flagged prompts on three nodes are three
//! strikes, not one on each.
//!
//! One hash under the `{switches}` tag holds a record per caller; a strike is added by
//! one script that also bumps [`Switch::Strikes`], and every node reloads the hash when
//! that version moves (see [`crate::switches`]), so a caller's standing is read locally,
//! on no request's path. The hash expires a window after its last strike and holds at
//! most [`MAX_CALLERS`] callers; past that a new caller's strikes stay on its node.

use std::time::Duration;

use crate::error::FleetError;
use crate::state::{Fleet, Trip};
use crate::switches::Switch;

/// Callers with strikes the fleet keeps at once.
pub const MAX_CALLERS: usize = 100_000;

/// KEYS[1]: the strikes hash; KEYS[2]: the switch versions. ARGV: caller, reason, the
/// window (ms), the most callers, the version field. A record is
/// `count first_ms last_ms reason`; returns the caller's count (0: not kept, full).
const ADD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local old = redis.call('HGET', KEYS[1], ARGV[1])
local count, first = 0, now
if old then
  local c, f = string.match(old, '^(%d+) (%d+)')
  if c and now - tonumber(f) < window then count, first = tonumber(c), tonumber(f) end
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
count = count + 1
redis.call('HSET', KEYS[1], ARGV[1], count .. ' ' .. first .. ' ' .. now .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
return count
";

/// One caller's strikes as the fleet holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrikeRecord {
    pub caller: u64,
    pub count: u32,
    /// How long ago the first and the latest strike were, by the shared state's clock.
    pub first_ago: Duration,
    pub last_ago: Duration,
    pub reason: String,
}

impl Fleet {
    /// Adds a strike against `caller` (forgotten `window` after its first); returns the
    /// caller's count in the fleet, or `None` when the fleet keeps no more callers.
    pub async fn add_strike(&self, caller: u64, reason: &str, window: Duration) -> Result<Option<u32>, FleetError> {
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(ADD));
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.key(self.switch_key("strikes")).key(self.switch_key("versions"));
        invocation.arg(caller).arg(reason).arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1));
        invocation.arg(MAX_CALLERS).arg(Switch::Strikes.field());
        let count: u32 =
            self.call_for(Trip::Clock, |mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Ok((count > 0).then_some(count))
    }

    /// Forgets `caller`'s strikes (an operator forgave them).
    pub async fn clear_strikes(&self, caller: u64) -> Result<(), FleetError> {
        let (strikes, versions) = (self.switch_key("strikes"), self.switch_key("versions"));
        self.call_for(Trip::Clock, |mut c| async move {
            redis::pipe()
                .atomic()
                .cmd("HDEL")
                .arg(&strikes)
                .arg(caller)
                .ignore()
                .cmd("HINCRBY")
                .arg(&versions)
                .arg(Switch::Strikes.field())
                .arg(1)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Every caller's strikes (records that do not parse are skipped).
    pub async fn strikes(&self) -> Result<Vec<StrikeRecord>, FleetError> {
        let key = self.switch_key("strikes");
        let (time, records): ((u64, u64), Vec<(String, String)>) = self
            .call_for(Trip::Clock, |mut c| async move {
                redis::pipe().cmd("TIME").cmd("HGETALL").arg(&key).query_async(&mut c).await
            })
            .await?;
        let now_ms = time.0 * 1000 + time.1 / 1000;
        Ok(records.iter().take(MAX_CALLERS).filter_map(|(caller, value)| parse(caller, value, now_ms)).collect())
    }
}

fn parse(caller: &str, value: &str, now_ms: u64) -> Option<StrikeRecord> {
    let mut parts = value.splitn(4, ' ');
    let count = parts.next()?.parse().ok()?;
    let first: u64 = parts.next()?.parse().ok()?;
    let last: u64 = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or("").to_owned();
    let ago = |at: u64| Duration::from_millis(now_ms.saturating_sub(at));
    Some(StrikeRecord { caller: caller.parse().ok()?, count, first_ago: ago(first), last_ago: ago(last), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_with_its_ages() {
        let r = parse("7", "3 1000 4000 flagged_prompt", 5000).unwrap();
        assert_eq!(
            r,
            StrikeRecord {
                caller: 7,
                count: 3,
                first_ago: Duration::from_secs(4),
                last_ago: Duration::from_secs(1),
                reason: "flagged_prompt".into()
            }
        );
        assert!(parse("x", "3 1000 4000 r", 5000).is_none());
        assert!(parse("7", "garbage", 5000).is_none());
    }
}
