//! The login back-off and known networks, fleet-wide: one script per attempt checks the
//! counts that apply and counts the attempt, atomically, before any password is checked;
//! one more settles it (success clears, a refund takes the count back). So password
//! guesses spread over every node, in parallel, get no more tries than on one node.
//!
//! Each count is a hash (`f` failures, `w` the end of the current wait in ms, server
//! time) that expires `forget_after` after its last failure. All login keys share the
//! `{login}` hash tag: the account's counts and the address's are decided in one script,
//! which on Redis Cluster puts them in one slot (login traffic is small beside proxied
//! traffic, so one slot carries it).

use std::sync::LazyLock;
use std::time::Duration;

use accounts::throttle::{Attempt, LoginFuture, LoginKeys, LoginRules, Outcome, SharedLogins, SharedLoginsDown};

use crate::error::FleetError;
use crate::state::{Fleet, hex};

/// KEYS: the account's count, the (account, network) count, the address's count, the
/// (account, network) "known" marker. ARGV: free failures per account, per address;
/// base and max wait (ms); forget after (ms).
/// Returns {go, wait_ms, known}.
const ATTEMPT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = redis.call('EXISTS', KEYS[4])
local held = KEYS[1]
if known == 1 then held = KEYS[2] end
for _, k in ipairs({held, KEYS[3]}) do
  local w = tonumber(redis.call('HGET', k, 'w') or '0') or 0
  if w > now then return {0, w - now, known} end
end
local base = tonumber(ARGV[3])
local max = tonumber(ARGV[4])
local forget = tonumber(ARGV[5])
for i = 1, 3 do
  local free = tonumber(ARGV[1])
  if i == 3 then free = tonumber(ARGV[2]) end
  local f = redis.call('HINCRBY', KEYS[i], 'f', 1)
  local expire = forget
  if f > free then
    local wait = math.min(base * 2 ^ math.min(f - free - 1, 40), max)
    redis.call('HSET', KEYS[i], 'w', string.format('%.0f', now + wait))
    expire = math.max(forget, wait)
  end
  redis.call('PEXPIRE', KEYS[i], string.format('%.0f', expire))
end
return {1, 0, known}
";

/// KEYS as for the attempt. ARGV[1]: `known` or `new` (a success from that kind of
/// network) or `refund`; ARGV[2]: how long the network stays known (ms).
const SETTLE_SCRIPT: &str = r"
if ARGV[1] == 'refund' then
  for i = 1, 3 do
    if redis.call('HEXISTS', KEYS[i], 'f') == 1 then redis.call('HINCRBY', KEYS[i], 'f', -1) end
  end
  return 1
end
if ARGV[1] == 'new' then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SET', KEYS[4], 1, 'PX', ARGV[2])
return 1
";

/// The Redis keys of an attempt: the account's blind index (never the identifier), its
/// network and the client's address. An absent client (never on the gateway's path) is one
/// shared key.
fn keys(prefix: &str, key: &LoginKeys<'_>) -> [String; 4] {
    let account = hex(key.account);
    let net = key.network.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let ip = key.address.map_or_else(|| "-".to_owned(), |a| a.to_string());
    [
        format!("{prefix}:login:{{login}}:a:{account}"),
        format!("{prefix}:login:{{login}}:n:{account}:{net}"),
        format!("{prefix}:login:{{login}}:ip:{ip}"),
        format!("{prefix}:login:{{login}}:known:{account}:{net}"),
    ]
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Fleet {
    /// Checks the counts that apply to `key` and counts the attempt, in one script.
    pub async fn login_attempt(&self, key: LoginKeys<'_>, rules: &LoginRules) -> Result<Attempt, FleetError> {
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ATTEMPT_SCRIPT));
        let mut invocation = SCRIPT.prepare_invoke();
        for k in keys(self.prefix(), &key) {
            invocation.key(k);
        }
        invocation
            .arg(rules.free_per_account)
            .arg(rules.free_per_address)
            .arg(ms(rules.base_delay))
            .arg(ms(rules.max_delay))
            .arg(ms(rules.forget_after));
        let answer: Vec<i64> = self.call(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        match answer[..] {
            [1, _, known] => Ok(Attempt::Go { known: known == 1 }),
            [0, wait, _] => Ok(Attempt::Wait(Duration::from_millis(u64::try_from(wait).unwrap_or(1).max(1)))),
            _ => Err(FleetError::Protocol("the login script answered something else")),
        }
    }

    /// Settles an attempt [`Fleet::login_attempt`] counted.
    pub async fn login_settle(
        &self,
        key: LoginKeys<'_>,
        rules: &LoginRules,
        outcome: Outcome,
    ) -> Result<(), FleetError> {
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SETTLE_SCRIPT));
        let mut invocation = SCRIPT.prepare_invoke();
        for k in keys(self.prefix(), &key) {
            invocation.key(k);
        }
        let mode = match outcome {
            Outcome::Success { known: true } => "known",
            Outcome::Success { known: false } => "new",
            Outcome::Refund => "refund",
        };
        invocation.arg(mode).arg(ms(rules.remember_network));
        let _: i64 = self.call(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Ok(())
    }
}

/// The account service counts login attempts here when the node is in a fleet. While the
/// fleet is down (or a call fails) it counts in its own process, and the fallback is
/// counted.
impl SharedLogins for Fleet {
    fn attempt<'a>(&'a self, keys: LoginKeys<'a>, rules: &'a LoginRules) -> LoginFuture<'a, Attempt> {
        Box::pin(async move { self.shared(self.login_attempt(keys, rules)).await })
    }

    fn settle<'a>(&'a self, keys: LoginKeys<'a>, rules: &'a LoginRules, outcome: Outcome) -> LoginFuture<'a, ()> {
        Box::pin(async move { self.shared(self.login_settle(keys, rules, outcome)).await })
    }
}

impl Fleet {
    /// `call`'s answer, or "down" (counted as a local decision) when the fleet is away or
    /// the call failed.
    async fn shared<T>(&self, call: impl Future<Output = Result<T, FleetError>>) -> Result<T, SharedLoginsDown> {
        if !self.is_up() {
            self.count_fallback();
            return Err(SharedLoginsDown);
        }
        call.await.map_err(|_| {
            self.count_fallback();
            SharedLoginsDown
        })
    }
}
