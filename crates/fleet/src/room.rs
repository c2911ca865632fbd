//! One registration waiting room for the whole fleet: ticket numbers, the admitted head,
//! the admission credit and when each waiting ticket was last polled live in Redis, and
//! one script per call moves the queue (server time) and answers. Every node hands out
//! and reads the same queue, so a newcomer is admitted in the order they joined whichever
//! node they reach, and a ticket taken on one node polls on any other.
//!
//! Same rules as `shield::WaitingRoom`: admission at `admit_per_sec` (saved up to
//! `admit_burst` while the room is empty), a ticket not polled for `poll_ttl_ms` is
//! skipped without spending an admission, at most `capacity` wait. An admitted ticket
//! can fetch its pass until `capacity` more tickets have been admitted after it. The
//! tickets and passes themselves are signed by each node with the fleet's shield key.

use std::sync::LazyLock;

use crate::error::FleetError;
use crate::state::Fleet;

/// KEYS: the room's state hash, its sorted set of waiting tickets (score: last poll, ms).
/// ARGV: operation (`peek`, `join`, `poll`), capacity, admissions per second, burst,
/// poll TTL (ms), ticket number (for `poll`).
/// Returns {answer, seq, head, credit × 1000}: answer 0 full, 1 joined, 2 admitted,
/// 3 expired, 4 waiting, 5 peeked (seq: the next ticket number).
const ROOM_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local burst = math.max(tonumber(ARGV[4]), 1)
local ttl = tonumber(ARGV[5])
local st = redis.call('HMGET', KEYS[1], 'next', 'head', 'credit', 'tick')
local nxt = tonumber(st[1] or '1') or 1
local head = tonumber(st[2] or '1') or 1
local credit = tonumber(st[3] or '0') or 0
local tick = tonumber(st[4] or '0') or 0
if tick > 0 and now > tick then credit = math.min(credit + rate * (now - tick) / 1000, burst) end
if now > tick then tick = now end
-- Past admitted and abandoned tickets, a bounded number of steps per call.
local steps = 0
while head < nxt and steps < 1000 do
  local seen = redis.call('ZSCORE', KEYS[2], head)
  if (not seen) or tonumber(seen) + ttl < now then
    redis.call('ZREM', KEYS[2], head)
    head = head + 1
  elseif credit >= 1 then
    credit = credit - 1
    redis.call('ZREM', KEYS[2], head)
    head = head + 1
  else
    break
  end
  steps = steps + 1
end
local op = ARGV[1]
local out
if op == 'join' then
  if nxt - head >= cap then
    out = {0, 0}
  else
    local seq = nxt
    nxt = nxt + 1
    if head == seq and credit >= 1 then
      credit = credit - 1
      head = head + 1
    else
      redis.call('ZADD', KEYS[2], now, seq)
    end
    out = {1, seq}
  end
elseif op == 'poll' then
  local seq = tonumber(ARGV[6])
  if seq < head then
    if seq + cap >= head then out = {2, seq} else out = {3, seq} end
  else
    local seen = redis.call('ZSCORE', KEYS[2], seq)
    if (not seen) or tonumber(seen) + ttl < now then
      out = {3, seq}
    else
      redis.call('ZADD', KEYS[2], now, seq)
      out = {4, seq}
    end
  end
else
  out = {5, nxt}
end
redis.call('HSET', KEYS[1], 'next', string.format('%d', nxt), 'head', string.format('%d', head),
  'credit', tostring(credit), 'tick', string.format('%d', tick))
out[3] = head
out[4] = math.floor(credit * 1000)
return out
";

/// The room's rules (as `shield::WaitingRoomConfig` has them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomRules {
    pub capacity: u64,
    pub admit_per_sec: f64,
    pub admit_burst: u32,
    pub poll_ttl_ms: u64,
}

/// What the room said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RoomAnswer {
    Full,
    /// Joined at `seq`; `position` 0 means admitted at once.
    Joined {
        seq: u64,
        position: u64,
        credit: f64,
    },
    Admitted,
    Expired,
    Waiting {
        position: u64,
        credit: f64,
    },
    /// Nobody waits when `waiting` is 0.
    Peeked {
        waiting: u64,
    },
}

#[derive(Clone, Copy)]
enum Op {
    Peek,
    Join,
    Poll(u64),
}

impl Fleet {
    /// How many wait now (admissions due are made first).
    pub async fn room_waiting(&self, rules: &RoomRules) -> Result<u64, FleetError> {
        match self.room(Op::Peek, rules).await? {
            RoomAnswer::Peeked { waiting } => Ok(waiting),
            _ => Err(FleetError::Protocol("the room answered a peek with something else")),
        }
    }

    /// Takes a place at the back of the fleet's queue.
    pub async fn room_join(&self, rules: &RoomRules) -> Result<RoomAnswer, FleetError> {
        self.room(Op::Join, rules).await
    }

    /// Where ticket `seq` stands; marks it as still wanted.
    pub async fn room_poll(&self, seq: u64, rules: &RoomRules) -> Result<RoomAnswer, FleetError> {
        self.room(Op::Poll(seq), rules).await
    }

    async fn room(&self, op: Op, rules: &RoomRules) -> Result<RoomAnswer, FleetError> {
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ROOM_SCRIPT));
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.key(format!("{}:room:{{room}}:state", self.prefix()));
        invocation.key(format!("{}:room:{{room}}:waiting", self.prefix()));
        let (name, seq) = match op {
            Op::Peek => ("peek", 0),
            Op::Join => ("join", 0),
            Op::Poll(seq) => ("poll", seq),
        };
        invocation
            .arg(name)
            .arg(rules.capacity.max(1))
            .arg(rules.admit_per_sec.max(0.0))
            .arg(rules.admit_burst)
            .arg(rules.poll_ttl_ms)
            .arg(seq);
        let answer: Vec<i64> = self.call(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        let [code, seq, head, credit_milli] = answer[..] else {
            return Err(FleetError::Protocol("the room script answered the wrong number of values"));
        };
        let (seq, head) = (u64::try_from(seq).unwrap_or(0), u64::try_from(head).unwrap_or(0));
        let credit = credit_milli as f64 / 1000.0;
        Ok(match code {
            0 => RoomAnswer::Full,
            1 => RoomAnswer::Joined { seq, position: (seq + 1).saturating_sub(head), credit },
            2 => RoomAnswer::Admitted,
            3 => RoomAnswer::Expired,
            4 => RoomAnswer::Waiting { position: seq - head + 1, credit },
            _ => RoomAnswer::Peeked { waiting: seq.saturating_sub(head) },
        })
    }
}
