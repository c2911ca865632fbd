//! Fleet-wide GCRA: the same algorithm as `shield::Gcra`, its state (the theoretical
//! arrival time) kept in Redis and updated by one script per decision, so the limits of
//! one request are checked and spent together, atomically, in one round trip.
//!
//! All or nothing: when any limit refuses, none is spent (a request the subnet refuses
//! does not use up the address's budget). Time is the server's (`TIME`), so nodes with
//! skewed clocks still share one bucket. The script answers, per limit, how far the
//! bucket's arrival time is ahead of the server's now; the headers (`RateLimit-*`,
//! `Retry-After`) are then worked out here with `shield::Gcra` itself, so they are the
//! same as a single node's.

use std::fmt::Write;
use std::sync::LazyLock;
use std::time::Duration;

use shield::{Decision, Gcra};

use crate::error::FleetError;
use crate::queue::{MAX_BATCH, Update};
use crate::state::{Fleet, Trip};

/// KEYS: one arrival time (µs since the epoch) per limit, in two groups: the first
/// `split` keys, then the rest; then `peeks` keys only read; then, with a lease, the
/// caller's lease set.
/// ARGV[1]: the cost; ARGV[2]: `split`; ARGV[3..5]: the most leases the caller may
/// hold (0: no lease asked), this lease's id, and how long it lasts (ms); ARGV[6]:
/// `peeks`; ARGV[2i+5], ARGV[2i+6]: limit i's emission interval (µs) and burst.
/// Each group is all or nothing, and the second is decided only when the first allowed
/// (the source's limits, then the caller's: one round trip for both); the lease only
/// when both did.
/// Returns {ok_1, ok_2, leased, ahead_1, …, ahead_n, peeked_1, …}: whether each group
/// allowed and the lease was taken (a step not taken counts as allowed), each limit's
/// arrival time minus now *before* this request, in µs (0 for a full bucket or a limit
/// not looked at), and the same for each key only read (a budget this node decides on
/// from that reading, see [`Fleet::adjust`]).
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local split = tonumber(ARGV[2])
local lease_max = tonumber(ARGV[3])
local peeks = tonumber(ARGV[6])
local n = #KEYS - peeks
if lease_max > 0 then n = n - 1 end
local out = {1, 1, 1}
for i = 1, n do out[i + 3] = 0 end
for i = n + 1, n + peeks do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  out[i + 3] = math.max(tat - now, 0)
end
local function decide(first, last)
  local ok = 1
  local new = {}
  for i = first, last do
    local interval = tonumber(ARGV[2 * i + 5])
    local tau = interval * tonumber(ARGV[2 * i + 6])
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
    local base = math.max(tat, now)
    new[i] = base + interval * cost
    if new[i] > now + tau then ok = 0 end
    out[i + 3] = base - now
  end
  if ok == 1 then
    for i = first, last do
      -- A bucket that is full again carries no information: let Redis drop it then.
      local ttl = math.ceil((new[i] - now) / 1000) + 1
      redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', ttl)
    end
  end
  return ok
end
out[1] = decide(1, split)
if out[1] == 1 and split < n then out[2] = decide(split + 1, n) end
if out[1] == 1 and out[2] == 1 and lease_max > 0 then
  -- Leases are scored by when they lapse: a dead node's free themselves.
  local key = KEYS[n + peeks + 1]
  local now_ms = math.floor(now / 1000)
  local ttl = tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  if redis.call('ZCARD', key) < lease_max then
    redis.call('ZADD', key, now_ms + ttl, ARGV[4])
    redis.call('PEXPIRE', key, ttl)
  else
    out[3] = 0
  end
end
return out
";

/// ARGV[1], ARGV[2]: the bucket's emission interval (µs) and burst; ARGV[3]: tokens to
/// charge (positive) or give back (negative). A charge is capped at one window past
/// empty; a refund never makes the bucket fuller than full.
const ADJUST_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local delta = tonumber(ARGV[3]) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local new
if delta >= 0 then
  new = math.min(math.max(tat, now) + delta, now + 2 * tau)
else
  new = math.max(tat + delta, math.min(now, tat))
end
if new <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1)
end
return 1
";

/// Which bucket a limit uses: the caller (the hash tag: everything one decision touches
/// must share it) and the dimension within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitKey {
    caller: String,
    dimension: String,
}

impl LimitKey {
    /// `caller` groups the limits decided together (a subnet for the address and subnet
    /// limits, an account for the account and key limits); `dimension` names one limit.
    pub fn new(caller: impl Into<String>, dimension: impl Into<String>) -> LimitKey {
        LimitKey { caller: caller.into(), dimension: dimension.into() }
    }

    fn render(&self, prefix: &str) -> String {
        let mut s = String::with_capacity(prefix.len() + self.caller.len() + self.dimension.len() + 8);
        let _ = write!(s, "{prefix}:rl:{{{}}}:{}", self.caller, self.dimension);
        s
    }
}

/// One limit of a request: its bucket and its rate.
#[derive(Debug, Clone)]
pub struct SharedLimit {
    pub key: LimitKey,
    pub rate: Gcra,
}

/// One of a caller's concurrent requests, held in the fleet until given back or lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The caller (the hash tag shared with its limits).
    pub caller: String,
    /// Unique per request.
    pub id: String,
    /// The most leases the caller may hold at once.
    pub max: u32,
    /// How long a lease lasts if never given back (its node died).
    pub ttl: Duration,
}

impl Lease {
    fn key(&self, prefix: &str) -> String {
        format!("{prefix}:lease:{{{}}}", self.caller)
    }
}

/// What [`Fleet::check_then`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub first: Checked,
    /// `None` when the first group refused or there was no second.
    pub then: Option<Checked>,
    /// Whether the lease was taken; `None` when none was asked or a limit refused.
    pub leased: Option<bool>,
    /// How far each key only read was ahead of the server's clock (zero: a full bucket).
    pub peeked: Vec<Duration>,
}

/// A decision and, when refused, the index of the first limit that refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub decision: Decision,
    pub refused_by: Option<usize>,
}

impl Fleet {
    /// Checks every limit in `limits` and spends `cost` from each only when all allow.
    /// Returns the tightest decision (as `shield::Decision::tightest` picks it). The
    /// limits must share one caller (`LimitKey::new`'s first argument) for Redis Cluster.
    pub async fn check(&self, limits: &[SharedLimit], cost: u32) -> Result<Checked, FleetError> {
        if limits.is_empty() {
            return Ok(Checked { decision: Decision::unlimited(), refused_by: None });
        }
        Ok(self.check_then(limits, &[], &[], None, cost).await?.first)
    }

    /// [`Fleet::check`] on `first`, then, only when it allowed, on `then`: two groups of
    /// limits in one script, so one round trip (the source's limits and a known caller's).
    /// `then` is `None` when the first refused (nothing of it was spent). With `lease`,
    /// when both allowed, one of the caller's concurrent-request leases is taken too.
    /// `peek`: buckets only read, in the same trip (they must share `then`'s caller).
    /// The groups' callers differ, so on Redis Cluster their keys would need one slot;
    /// this release talks to one Redis endpoint.
    pub async fn check_then(
        &self,
        first: &[SharedLimit],
        then: &[SharedLimit],
        peek: &[LimitKey],
        lease: Option<&Lease>,
        cost: u32,
    ) -> Result<Decided, FleetError> {
        if self.is_cluster() && !first.is_empty() && (!then.is_empty() || !peek.is_empty() || lease.is_some()) {
            // The two groups' keys live in two slots: one call each, the second only when
            // the first allowed.
            let source = self.check_once(first, &[], &[], None, cost).await?;
            if !source.first.decision.allowed {
                return Ok(source);
            }
            let caller = self.check_once(&[], then, peek, lease, cost).await?;
            return Ok(Decided { first: source.first, ..caller });
        }
        self.check_once(first, then, peek, lease, cost).await
    }

    /// [`Fleet::check_then`] in one script call.
    async fn check_once(
        &self,
        first: &[SharedLimit],
        then: &[SharedLimit],
        peek: &[LimitKey],
        lease: Option<&Lease>,
        cost: u32,
    ) -> Result<Decided, FleetError> {
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.arg(cost).arg(first.len());
        match lease {
            Some(l) => {
                invocation.arg(l.max.max(1)).arg(&l.id).arg(u64::try_from(l.ttl.as_millis()).unwrap_or(u64::MAX))
            }
            None => invocation.arg(0).arg("").arg(0),
        };
        invocation.arg(peek.len());
        for limit in first.iter().chain(then) {
            let interval_us = limit.rate.emission_interval().as_micros().max(1);
            invocation.key(limit.key.render(self.prefix())).arg(u64::try_from(interval_us).unwrap_or(u64::MAX));
            invocation.arg(limit.rate.burst());
        }
        for key in peek {
            invocation.key(key.render(self.prefix()));
        }
        if let Some(l) = lease {
            invocation.key(l.key(self.prefix()));
        }
        let answer: Vec<i64> = self.call(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        if answer.len() != first.len() + then.len() + peek.len() + 3 {
            return Err(FleetError::Protocol("the limit script answered the wrong number of values"));
        }
        let (ahead, peeked) = answer[3..].split_at(first.len() + then.len());
        let (ahead_first, ahead_then) = ahead.split_at(first.len());
        let peeked = peeked.iter().map(|&us| Duration::from_micros(u64::try_from(us).unwrap_or(0))).collect();
        let checked = decide(first, answer[0] == 1, ahead_first, cost);
        let second = (answer[0] == 1 && !then.is_empty()).then(|| decide(then, answer[1] == 1, ahead_then, cost));
        let both = answer[0] == 1 && answer[1] == 1;
        Ok(Decided {
            first: checked,
            then: second,
            leased: (both && lease.is_some()).then_some(answer[2] == 1),
            peeked,
        })
    }

    /// Spends `tokens` more from `limit`'s bucket (positive: whether or not it has them,
    /// the debt capped at one window past empty, as `shield::Gcra::charge` caps it) or
    /// gives them back (negative: never fuller than full). For budgets this node decided
    /// on from a reading (see [`Fleet::check_then`]'s `peek`): queued, not awaited, and
    /// sent by [`Fleet::run_updates`]. `false`: the queue is full and it was dropped.
    pub fn adjust_later(&self, limit: &SharedLimit, tokens: i64) -> bool {
        self.queue_update(limit, tokens, None)
    }

    /// [`Fleet::adjust_later`], and a receiver that hears when the fleet applied it (or
    /// is dropped when it never will: the queue was full, the trip failed). For a
    /// settlement the client must not outrun: its next request, on another node, must
    /// find the tokens given back.
    pub fn adjust_confirmed(&self, limit: &SharedLimit, tokens: i64) -> tokio::sync::oneshot::Receiver<()> {
        let (done, heard) = tokio::sync::oneshot::channel();
        if tokens == 0 {
            let _ = done.send(());
        } else {
            self.queue_update(limit, tokens, Some(done));
        }
        heard
    }

    fn queue_update(&self, limit: &SharedLimit, tokens: i64, done: Option<tokio::sync::oneshot::Sender<()>>) -> bool {
        if tokens == 0 {
            return true;
        }
        let update = Update { key: limit.key.render(self.prefix()), rate: limit.rate, tokens, done };
        self.queue.try_send(update).is_ok()
    }

    /// Until aborted: sends queued budget updates, in the order they were queued. Each
    /// trip carries every update queued since the last (one script call per bucket,
    /// pipelined, a bucket's updates summed first), so the fleet's load grows with the
    /// buckets touched, not with requests. Updates to one bucket are applied in order:
    /// a refund is never applied before the charge it gives back.
    pub async fn run_updates(&self) {
        let Some(mut queue) = self.queued.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let mut batch: Vec<Update> = Vec::with_capacity(MAX_BATCH);
        let mut loaded = false;
        loop {
            if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
            // Summed per bucket, in the order first seen.
            let mut net: Vec<Update> = Vec::with_capacity(batch.len());
            let mut waiting = Vec::new();
            for mut u in batch.drain(..) {
                waiting.extend(u.done.take());
                match net.iter_mut().find(|n| n.key == u.key) {
                    Some(n) => n.tokens = n.tokens.saturating_add(u.tokens),
                    None => net.push(u),
                }
            }
            net.retain(|u| u.tokens != 0);
            if !self.is_up() {
                // Lost while the fleet is away: the buckets are read afresh when it is back.
                continue;
            }
            if !net.is_empty() {
                loaded = self.send_updates(&net, !loaded).await.is_ok();
                if !loaded {
                    self.count_fallback();
                    continue;
                }
            }
            for done in waiting {
                let _ = done.send(());
            }
        }
    }

    /// One pipelined trip; `load`: send the script first (the first trip, and after a
    /// failure: the server may have restarted and forgotten it).
    async fn send_updates(&self, net: &[Update], load: bool) -> Result<(), FleetError> {
        if self.is_cluster() {
            // Buckets in many slots: a call each, all at once (the script is loaded on
            // whichever node lacks it).
            static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADJUST_SCRIPT));
            let calls = net.iter().map(|u| {
                let interval_us = u64::try_from(u.rate.emission_interval().as_micros().max(1)).unwrap_or(u64::MAX);
                let mut invocation = SCRIPT.prepare_invoke();
                invocation.key(&u.key).arg(interval_us).arg(u.rate.burst()).arg(u.tokens);
                self.call_for(Trip::Update, |mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
            });
            for result in futures_util::future::join_all(calls).await {
                result?;
            }
            return Ok(());
        }
        static HASH: LazyLock<String> = LazyLock::new(|| redis::Script::new(ADJUST_SCRIPT).get_hash().to_owned());
        let mut p = redis::pipe();
        if load {
            p.cmd("SCRIPT").arg("LOAD").arg(ADJUST_SCRIPT).ignore();
        }
        for u in net {
            let interval_us = u64::try_from(u.rate.emission_interval().as_micros().max(1)).unwrap_or(u64::MAX);
            p.cmd("EVALSHA").arg(HASH.as_str()).arg(1).arg(&u.key).arg(interval_us).arg(u.rate.burst()).arg(u.tokens);
            p.ignore();
        }
        self.call_for(Trip::Update, |mut c| async move { p.query_async::<()>(&mut c).await }).await
    }

    /// Gives a lease back (the reply is over). A lease not given back lapses by itself.
    pub async fn release(&self, lease: &Lease) -> Result<(), FleetError> {
        let (key, id) = (lease.key(self.prefix()), lease.id.clone());
        self.call_for(Trip::Release, |mut c| async move {
            redis::cmd("ZREM").arg(&key).arg(&id).query_async::<i64>(&mut c).await
        })
        .await?;
        Ok(())
    }
}

/// The decision the script's answer stands for, with the headers `shield::Gcra` gives.
fn decide(limits: &[SharedLimit], ok: bool, ahead_us: &[i64], cost: u32) -> Checked {
    // Any fixed instant serves as "now": only the distance to each arrival time matters.
    let now = Duration::from_secs(1 << 20);
    let mut tightest: Option<Decision> = None;
    let mut refused_by = None;
    for (i, (limit, &ahead)) in limits.iter().zip(ahead_us).enumerate() {
        let ahead = Duration::from_micros(u64::try_from(ahead).unwrap_or(0));
        let mut tat = u64::try_from((now + ahead).as_nanos()).unwrap_or(u64::MAX);
        let mut d = limit.rate.check(&mut tat, now, cost);
        if !d.allowed && refused_by.is_none() {
            refused_by = Some(i);
        }
        if !ok && d.allowed {
            // Allowed alone, but another limit refused and nothing was spent: describe
            // the unspent bucket.
            let mut unspent = u64::try_from((now + ahead).as_nanos()).unwrap_or(u64::MAX);
            d = limit.rate.check(&mut unspent, now, 0);
        }
        tightest = Some(match tightest {
            None => d,
            Some(t) => t.tightest(d),
        });
    }
    let mut d = tightest.unwrap_or_else(Decision::unlimited);
    // The script decided; rounding to microseconds must not contradict it.
    d.allowed = ok;
    if !ok && d.retry_after.is_none() && cost <= d.limit {
        d.retry_after = Some(Duration::from_millis(1));
    }
    Checked { decision: d, refused_by: if ok { None } else { refused_by.or(Some(0)) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> SharedLimit {
        SharedLimit {
            key: LimitKey::new("c", "d"),
            rate: Gcra::per_period(per_second, Duration::from_secs(1), burst).unwrap(),
        }
    }

    #[test]
    fn a_refusal_by_one_limit_refuses_the_request_with_a_retry_time() {
        let limits = [limit(10, 5), limit(1, 1)];
        let c = decide(&limits, false, &[0, 1_000_000], 1);
        assert_eq!(c.refused_by, Some(1));
        let d = c.decision;
        assert!(!d.allowed);
        assert_eq!(d.limit, 1, "the refusing limit's headers");
        assert!(d.retry_after.is_some_and(|r| r > Duration::from_millis(900)), "{d:?}");
    }

    #[test]
    fn an_allowed_request_reports_the_scarcest_limit() {
        let limits = [limit(10, 5), limit(10, 50)];
        let d = decide(&limits, true, &[300_000, 0], 1).decision;
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (5, 1));
    }

    #[test]
    fn keys_carry_the_callers_hash_tag() {
        assert_eq!(LimitKey::new("s/10.0.0.0", "ip/10.0.0.1").render("p"), "p:rl:{s/10.0.0.0}:ip/10.0.0.1");
    }
}
