//! The registration waiting room: when sign-ups arrive faster than the service can take
//! them, newcomers get a signed ticket with a first-come-first-served position and an ETA,
//! poll it, and receive a signed admission pass when their turn comes.
//!
//! State is two counters and a ring of `2 × capacity` slots (16 bytes each): ticket
//! number `seq` lives in slot `seq % (2 × capacity)`, so a full room is a hard bound, never
//! a growing queue. Tickets are admitted strictly in order, at `admit_per_sec` (a token bucket holding
//! at most `admit_burst`) plus whatever [`WaitingRoom::admit`] adds. A ticket not polled for
//! `poll_ttl_ms` is abandoned: admission skips it without spending a slot, and a later poll
//! answers [`Status::Expired`] (join again, at the back). Positions count abandoned tickets
//! still ahead, so a reported position and ETA are upper bounds.
//!
//! An admitted ticket's pass can be fetched until its slot is reused, which takes
//! `capacity` more admissions (or skips) after it: at most `capacity` tickets wait, so the
//! ring's other half holds the recently admitted. With a ring of only `capacity`, a ticket
//! admitted by the clock and reused by the next join lost its pass before it could poll.
//!
//! The queue here is per process. A fleet keeps one queue in its shared state instead and
//! uses this type only for what it signs: tickets ([`WaitingRoom::seal_ticket`],
//! [`WaitingRoom::open_ticket`]) and passes ([`WaitingRoom::pass_for`]), under an epoch
//! every node shares. A ticket from an earlier run (another epoch) reads as expired.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::gcra::millis;
use crate::pow::ClientBinding;
use crate::signer::{Purpose, SealError, Signer, random_bytes};

const VERSION: u8 = 1;
/// version ‖ room epoch(8) ‖ seq(8) ‖ issued ms(8) ‖ binding(16)
const TICKET_BYTES: usize = 1 + 8 + 8 + 8 + 16;
/// version ‖ pass id(16) ‖ expires ms(8) ‖ binding(16)
const PASS_BYTES: usize = 1 + 16 + 8 + 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaitingRoomConfig {
    /// Most tickets waiting at once (memory: 16 bytes each).
    pub capacity: usize,
    /// Tickets admitted per second (0: only by `admit`).
    pub admit_per_sec: f64,
    /// Admissions that may be saved up while the room is empty.
    pub admit_burst: u32,
    /// A ticket not polled for this long is abandoned.
    pub poll_ttl_ms: u64,
    /// How often clients are told to poll (well under `poll_ttl_ms`).
    pub poll_interval_ms: u64,
    /// How long an admission pass stays valid for completing the sign-up.
    pub pass_ttl_ms: u64,
}

impl Default for WaitingRoomConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            admit_per_sec: 5.0,
            admit_burst: 10,
            poll_ttl_ms: 30_000,
            poll_interval_ms: 5_000,
            pass_ttl_ms: 600_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitingRoomError {
    #[error("the waiting room is full; try again in {retry_after:?}")]
    Full { retry_after: Duration },
    #[error("the ticket or pass is malformed")]
    Malformed,
    #[error("the ticket or pass signature does not verify")]
    Forged,
    #[error("the ticket or pass was issued to another client")]
    WrongClient,
    #[error("the admission pass has expired")]
    PassExpired,
}

impl WaitingRoomError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Full { .. } => "waiting_room_full",
            Self::Malformed => "waiting_room_malformed",
            Self::Forged => "waiting_room_forged",
            Self::WrongClient => "waiting_room_wrong_client",
            Self::PassExpired => "admission_pass_expired",
        }
    }
}

impl From<SealError> for WaitingRoomError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Malformed => Self::Malformed,
            SealError::Forged => Self::Forged,
        }
    }
}

/// A place in the queue, as handed out by [`WaitingRoom::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Signed; the client polls with it.
    pub token: String,
    /// 1 = next. 0 = already admitted: poll at once for the pass.
    pub position: u64,
    /// Upper bound at the current pace; `None` when admission is manual only.
    pub eta: Option<Duration>,
    pub poll_after: Duration,
}

/// The answer to a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Waiting {
        position: u64,
        eta: Option<Duration>,
        poll_after: Duration,
    },
    /// Present `pass` to the sign-up endpoint (see [`WaitingRoom::check_pass`]).
    Admitted {
        pass: String,
    },
    /// Abandoned, unknown (another node, an earlier run) or overwritten: join again.
    Expired,
}

/// A verified admission pass. Claim `id` in a [`crate::replay::ReplayGuard`] until
/// `expires_at` to make it single-use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionPass {
    pub id: [u8; 16],
    pub expires_at: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u64,
    last_seen_ms: u64,
}

/// The queue. Plain data: wrap it in a mutex (sign-up traffic is low, and every call is
/// O(1) amortised).
#[derive(Debug)]
pub struct WaitingRoom {
    config: WaitingRoomConfig,
    signer: Signer,
    epoch: u64,
    slots: Box<[Slot]>,
    /// The next ticket number to hand out. Numbers start at 1 so an empty slot (seq 0)
    /// never matches a ticket.
    next_seq: u64,
    /// Every ticket below this number has been admitted (or skipped as abandoned).
    head: u64,
    credit: f64,
    last_tick: Option<Duration>,
}

impl WaitingRoom {
    /// A room signing with `key` (shared secret; a fresh random epoch per room).
    pub fn new(config: WaitingRoomConfig, key: [u8; 32]) -> Self {
        Self::with_signer(config, Signer::new(key), u64::from_le_bytes(random_bytes::<8>()))
    }

    /// A room signing with `key` under a given epoch (a fleet's nodes share one).
    pub fn with_epoch(config: WaitingRoomConfig, key: [u8; 32], epoch: u64) -> Self {
        Self::with_signer(config, Signer::new(key), epoch)
    }

    pub fn config(&self) -> &WaitingRoomConfig {
        &self.config
    }

    pub fn with_signer(config: WaitingRoomConfig, signer: Signer, epoch: u64) -> Self {
        let cap = config.capacity.max(1);
        Self {
            slots: vec![Slot::default(); 2 * cap].into_boxed_slice(),
            signer,
            epoch,
            next_seq: 1,
            head: 1,
            credit: 0.0,
            last_tick: None,
            config,
        }
    }

    /// Bytes of queue state: constant.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.slots.len() * size_of::<Slot>()
    }

    /// Tickets waiting (abandoned ones included until admission reaches them).
    pub fn waiting(&self) -> u64 {
        self.next_seq - self.head
    }

    /// True when nobody waits: a newcomer may go straight to sign-up if capacity allows.
    /// While anyone waits, newcomers must join, or the queue would not be fair.
    pub fn is_empty(&mut self, now: Duration) -> bool {
        self.advance(now);
        self.waiting() == 0
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    fn abandoned(&self, slot: &Slot, now_ms: u64) -> bool {
        slot.last_seen_ms.saturating_add(self.config.poll_ttl_ms) < now_ms
    }

    /// Accrues admission credit and moves the head past admitted and abandoned tickets.
    fn advance(&mut self, now: Duration) {
        if let Some(last) = self.last_tick
            && let Some(dt) = now.checked_sub(last)
        {
            let burst = f64::from(self.config.admit_burst.max(1));
            self.credit = (self.credit + self.config.admit_per_sec.max(0.0) * dt.as_secs_f64()).min(burst);
        }
        if self.last_tick.is_none_or(|last| now > last) {
            self.last_tick = Some(now);
        }
        let now_ms = millis(now);
        while self.head < self.next_seq {
            let slot = self.slots[self.slot(self.head)];
            if slot.seq != self.head || self.abandoned(&slot, now_ms) {
                self.head += 1;
            } else if self.credit >= 1.0 {
                self.credit -= 1.0;
                self.head += 1;
            } else {
                break;
            }
        }
    }

    /// Lets `n` more tickets in now (e.g. when sign-up capacity frees up); returns how many
    /// live tickets were admitted.
    pub fn admit(&mut self, n: u64, now: Duration) -> u64 {
        self.advance(now);
        let now_ms = millis(now);
        let mut admitted = 0;
        while admitted < n && self.head < self.next_seq {
            let slot = self.slots[self.slot(self.head)];
            if slot.seq == self.head && !self.abandoned(&slot, now_ms) {
                admitted += 1;
            }
            self.head += 1;
        }
        admitted
    }

    fn eta(&self, position: u64) -> Option<Duration> {
        let rate = self.config.admit_per_sec;
        (rate > 0.0).then(|| {
            let secs = ((position as f64 - self.credit).max(0.0) / rate).min(1e9);
            Duration::from_secs_f64(secs)
        })
    }

    fn poll_after(&self) -> Duration {
        Duration::from_millis(self.config.poll_interval_ms)
    }

    /// The refusal of a full room, with when to try again.
    pub fn full(&self) -> WaitingRoomError {
        let per = if self.config.admit_per_sec > 0.0 { 1.0 / self.config.admit_per_sec } else { 0.0 };
        let retry_after = Duration::from_secs_f64(per.clamp(1.0, 3600.0)).max(self.poll_after());
        WaitingRoomError::Full { retry_after }
    }

    /// A ticket for place `seq`, bound to `binding`.
    pub fn seal_ticket(&self, seq: u64, binding: &ClientBinding, now: Duration) -> String {
        let mut p = [0u8; TICKET_BYTES];
        p[0] = VERSION;
        p[1..9].copy_from_slice(&self.epoch.to_be_bytes());
        p[9..17].copy_from_slice(&seq.to_be_bytes());
        p[17..25].copy_from_slice(&millis(now).to_be_bytes());
        p[25..41].copy_from_slice(binding.bytes());
        self.signer.seal(Purpose::WaitingTicket, &p)
    }

    /// The place a ticket holds, checked (signature, binding); `None` for a ticket of
    /// another epoch (an earlier run: it reads as expired).
    pub fn open_ticket(&self, ticket: &str, binding: &ClientBinding) -> Result<Option<u64>, WaitingRoomError> {
        let p: [u8; TICKET_BYTES] = self.signer.open(Purpose::WaitingTicket, ticket)?;
        if p[0] != VERSION {
            return Err(WaitingRoomError::Malformed);
        }
        if !binding.matches(&p[25..41]) {
            return Err(WaitingRoomError::WrongClient);
        }
        let field = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok((field(1) == self.epoch).then(|| field(9)))
    }

    /// What a waiting client is told at `position`, with `credit` admissions saved up.
    pub fn waiting_status(&self, position: u64, credit: f64) -> Status {
        let rate = self.config.admit_per_sec;
        let eta = (rate > 0.0).then(|| Duration::from_secs_f64(((position as f64 - credit).max(0.0) / rate).min(1e9)));
        Status::Waiting { position, eta, poll_after: self.poll_after() }
    }

    /// Takes a place at the back of the queue for `binding`.
    pub fn join(&mut self, binding: &ClientBinding, now: Duration) -> Result<Ticket, WaitingRoomError> {
        self.advance(now);
        if self.waiting() >= self.config.capacity.max(1) as u64 {
            return Err(self.full());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let at = self.slot(seq);
        self.slots[at] = Slot { seq, last_seen_ms: millis(now) };
        let token = self.seal_ticket(seq, binding, now);
        // Admission may already cover this ticket (saved-up credit).
        self.advance(now);
        let position = (seq + 1).saturating_sub(self.head);
        Ok(Ticket { token, position, eta: self.eta(position), poll_after: self.poll_after() })
    }

    /// Where `ticket` stands; also marks it as still wanted.
    pub fn poll(&mut self, ticket: &str, binding: &ClientBinding, now: Duration) -> Result<Status, WaitingRoomError> {
        let Some(seq) = self.open_ticket(ticket, binding)? else { return Ok(Status::Expired) };
        self.advance(now);
        let now_ms = millis(now);
        let at = self.slot(seq);
        let slot = self.slots[at];
        if slot.seq != seq || self.abandoned(&slot, now_ms) {
            return Ok(Status::Expired);
        }
        self.slots[at].last_seen_ms = now_ms;
        if seq < self.head {
            return Ok(Status::Admitted { pass: self.pass_for(seq, binding, now) });
        }
        let position = seq - self.head + 1;
        Ok(Status::Waiting { position, eta: self.eta(position), poll_after: self.poll_after() })
    }

    /// The pass for ticket `seq`: the same id however often it is fetched, so one ticket
    /// yields one sign-up once the id is claimed.
    pub fn pass_for(&self, seq: u64, binding: &ClientBinding, now: Duration) -> String {
        let mut h = Sha256::new();
        h.update(b"palisade/shield/admission-pass-id/v1\0");
        h.update(self.epoch.to_be_bytes());
        h.update(seq.to_be_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut p = [0u8; PASS_BYTES];
        p[0] = VERSION;
        p[1..17].copy_from_slice(&digest[..16]);
        p[17..25]
            .copy_from_slice(&millis(now.saturating_add(Duration::from_millis(self.config.pass_ttl_ms))).to_be_bytes());
        p[25..41].copy_from_slice(binding.bytes());
        self.signer.seal(Purpose::AdmissionPass, &p)
    }

    /// Checks an admission pass at the sign-up endpoint (signature, expiry, binding). Then
    /// claim [`AdmissionPass::id`] in a replay guard so it is used once.
    pub fn check_pass(
        &self,
        pass: &str,
        binding: &ClientBinding,
        now: Duration,
    ) -> Result<AdmissionPass, WaitingRoomError> {
        let p: [u8; PASS_BYTES] = self.signer.open(Purpose::AdmissionPass, pass)?;
        if p[0] != VERSION {
            return Err(WaitingRoomError::Malformed);
        }
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&p[17..25]);
        let expires_ms = u64::from_be_bytes(exp);
        if millis(now) >= expires_ms {
            return Err(WaitingRoomError::PassExpired);
        }
        if !binding.matches(&p[25..41]) {
            return Err(WaitingRoomError::WrongClient);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&p[1..17]);
        Ok(AdmissionPass { id, expires_at: Duration::from_millis(expires_ms) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{ReplayError, ReplayGuard};
    use proptest::prelude::*;

    const T0: Duration = Duration::from_secs(1_700_000_000);
    const SEC: Duration = Duration::from_secs(1);

    fn room(capacity: usize, rate: f64) -> WaitingRoom {
        let config =
            WaitingRoomConfig { capacity, admit_per_sec: rate, admit_burst: 1, ..WaitingRoomConfig::default() };
        WaitingRoom::with_signer(config, Signer::new([9; 32]), 77)
    }

    fn who(n: u8) -> ClientBinding {
        ClientBinding::for_client(
            &crate::Client::new(std::net::IpAddr::from([198, 51, n, 1]), Default::default()),
            "Mozilla/5.0",
        )
    }

    #[test]
    fn first_come_first_served_with_positions_and_etas() {
        let mut r = room(100, 1.0);
        let tickets: Vec<_> = (0..5).map(|i| r.join(&who(i), T0).expect("room")).collect();
        assert_eq!(tickets.iter().map(|t| t.position).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(tickets[2].eta, Some(SEC * 3));
        // Each second one more is admitted, in order.
        for step in 1..=5u32 {
            let now = T0 + SEC * step;
            for (i, t) in tickets.iter().enumerate() {
                let status = r.poll(&t.token, &who(i as u8), now).expect("valid ticket");
                let admitted = matches!(status, Status::Admitted { .. });
                assert_eq!(admitted, i < step as usize, "ticket {i} at {step}s: {status:?}");
                if let Status::Waiting { position, .. } = status {
                    assert_eq!(position, i as u64 + 1 - u64::from(step));
                }
            }
        }
    }

    #[test]
    fn passes_are_bound_single_use_and_expire() {
        let mut r = room(10, 1.0);
        let t = r.join(&who(1), T0).expect("room");
        let Ok(Status::Admitted { pass }) = r.poll(&t.token, &who(1), T0 + SEC) else { panic!("admitted after 1 s") };
        let Ok(Status::Admitted { pass: again }) = r.poll(&t.token, &who(1), T0 + SEC * 2) else { panic!("still") };
        let a = r.check_pass(&pass, &who(1), T0 + SEC).expect("valid pass");
        assert_eq!(r.check_pass(&again, &who(1), T0 + SEC).map(|p| p.id), Ok(a.id), "one id per ticket");
        let guard = ReplayGuard::new(64);
        assert_eq!(guard.claim(&a.id, a.expires_at, T0 + SEC), Ok(()));
        assert_eq!(guard.claim(&a.id, a.expires_at, T0 + SEC), Err(ReplayError::Replayed));
        assert_eq!(r.check_pass(&pass, &who(2), T0), Err(WaitingRoomError::WrongClient));
        assert_eq!(r.check_pass(&pass, &who(1), a.expires_at), Err(WaitingRoomError::PassExpired));
        assert_eq!(r.check_pass(&t.token, &who(1), T0), Err(WaitingRoomError::Forged), "a ticket is not a pass");
        assert_eq!(r.poll(&t.token, &who(2), T0), Err(WaitingRoomError::WrongClient));
        assert_eq!(room(10, 1.0).poll(&t.token, &who(1), T0), Ok(Status::Expired), "same key, same epoch, fresh room");
        let other_key = WaitingRoom::with_signer(WaitingRoomConfig::default(), Signer::new([1; 32]), 77);
        assert_eq!(other_key.check_pass(&pass, &who(1), T0), Err(WaitingRoomError::Forged));
    }

    #[test]
    fn abandoned_tickets_expire_and_cost_no_admission() {
        let mut r = room(10, 0.0);
        let gone = r.join(&who(1), T0).expect("room");
        let stays = r.join(&who(2), T0).expect("room");
        for s in 1..=40u32 {
            assert!(matches!(r.poll(&stays.token, &who(2), T0 + SEC * s), Ok(Status::Waiting { .. })));
        }
        assert_eq!(r.poll(&gone.token, &who(1), T0 + SEC * 40), Ok(Status::Expired));
        assert_eq!(
            r.poll(&stays.token, &who(2), T0 + SEC * 41),
            Ok(Status::Waiting { position: 1, eta: None, poll_after: SEC * 5 })
        );
        assert_eq!(r.admit(1, T0 + SEC * 41), 1);
        assert!(matches!(r.poll(&stays.token, &who(2), T0 + SEC * 42), Ok(Status::Admitted { .. })));
        assert!(r.is_empty(T0 + SEC * 42));
    }

    #[test]
    fn a_full_room_refuses_with_a_retry_hint() {
        let mut r = room(3, 0.5);
        for i in 0..3 {
            r.join(&who(i), T0).expect("room");
        }
        assert_eq!(r.join(&who(9), T0), Err(WaitingRoomError::Full { retry_after: SEC * 5 }));
        assert!(r.join(&who(9), T0 + SEC * 2).is_ok(), "one admitted after 2 s frees a place");
        assert_eq!(r.memory_bytes() - size_of::<WaitingRoom>(), 2 * 3 * 16);
    }

    #[test]
    fn credit_saved_while_empty_is_capped() {
        let mut r = room(100, 10.0);
        r.is_empty(T0);
        let tickets: Vec<_> = (0..3).map(|i| r.join(&who(i), T0 + SEC * 3600)).collect();
        let positions: Vec<_> = tickets.iter().map(|t| t.as_ref().map(|t| t.position)).collect();
        assert_eq!(positions, [Ok(0), Ok(1), Ok(2)], "burst of 1 admits one at once");
    }

    proptest! {
        /// Whatever the interleaving of joins, polls and admissions, tickets are admitted in
        /// the order they were issued and the room never holds more than its capacity.
        #[test]
        fn admission_is_fifo_and_bounded(ops in proptest::collection::vec((0u8..3, 0u64..3), 1..200)) {
            let mut r = room(8, 0.7);
            let mut now = T0;
            let mut tickets: Vec<(u8, String)> = Vec::new();
            let mut admitted: Vec<usize> = Vec::new();
            for (op, step) in ops {
                now += SEC * step as u32;
                match op {
                    0 => {
                        let n = tickets.len() as u8;
                        if let Ok(t) = r.join(&who(n), now) {
                            tickets.push((n, t.token));
                        }
                    }
                    1 => { r.admit(1, now); }
                    _ => {}
                }
                // Everyone waiting polls every step, so nobody is abandoned; like a real
                // client, a ticket stops polling once it has its pass.
                for (i, (n, t)) in tickets.iter().enumerate() {
                    if admitted.contains(&i) {
                        continue;
                    }
                    let s = r.poll(t, &who(*n), now).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if matches!(s, Status::Admitted { .. }) {
                        admitted.push(i);
                    }
                    prop_assert!(!matches!(s, Status::Expired));
                }
                prop_assert!(r.waiting() <= 8);
            }
            let mut sorted = admitted.clone();
            sorted.sort_unstable();
            prop_assert_eq!(&admitted, &sorted);
            prop_assert!(admitted.iter().enumerate().all(|(k, &i)| k == i), "no gaps: {:?}", admitted);
        }
    }
}
