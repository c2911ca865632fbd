//! The admission decision as a pure state machine: who is admitted at once, who waits in which
//! queue, who gets the next free slot. No clock, lock or task in here: the caller passes the
//! time and owns whatever wakes a waiter (`T`).
//!
//! The rules, in the order they are applied:
//! 1. An account or key has at most `max_in_flight` requests in flight and queued (else 429).
//! 2. A request is admitted at once when the total in flight is under the limit, its class and
//!    every class below it together are under their nested share of the limit, and its account
//!    is under its fair share of the class's allowance.
//! 3. Otherwise it waits, unless its estimated wait exceeds its deadline, its class queue is
//!    full, or the waiting room is full with no less important waiter to displace.
//! 4. A freed slot goes to the most important class with an eligible waiter; within a class,
//!    to the trust tier holding the least for its weight (weighted max-min fairness), a tier
//!    and the tiers below it never holding more than their nested share of the class's
//!    allowance; within a tier, round-robin over accounts (an account at its share is
//!    skipped); FIFO within an account.
//!
//! Invariant kept after every call: no waiter is eligible. That is why an arrival that is itself
//! eligible may be admitted at once without jumping anyone.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::class::{PerClass, PriorityClass};
use crate::config::AdmissionConfig;
use crate::limit::{AdaptiveLimit, Average, Load};
use crate::refusal::{Refusal, RefusalReason};
use crate::report::{AdmissionSnapshot, Outcome};
use crate::tier::{PerTier, Tier};

/// Identifies one waiter; increasing, so the largest is the newest.
pub(crate) type WaiterId = u64;

/// Smoothing of the slot hold time used for wait estimates.
const HOLD_SAMPLES: u32 = 50;

/// What the scheduler needs to know about one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    pub class: PriorityClass,
    pub tier: Tier,
    pub account: Option<u64>,
    pub deadline: Instant,
    /// This account's cap on requests in flight and queued.
    pub max_in_flight: u32,
}

/// A slot handed to a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grant {
    pub class: PriorityClass,
    pub tier: Tier,
    pub at: Instant,
    /// In flight right after this grant, this one included.
    pub in_flight: u32,
    /// The account whose count this slot holds; `None` when accounts are not tracked.
    pub account: Option<u64>,
}

/// Which lane of a class a waiter is in: its account and tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaneKey {
    pub account: Option<u64>,
    pub tier: Tier,
}

pub(crate) enum Arrival<T> {
    Admitted(Grant),
    /// Waiting as `id`; `displaced` lost its place to make room and must be told.
    Queued {
        id: WaiterId,
        displaced: Option<(T, Refusal)>,
    },
    Refused(Refusal),
}

struct Waiter<T> {
    id: WaiterId,
    payload: T,
}

/// The waiters of one account (or of all requests without one) in one class and tier, oldest
/// first.
struct Lane<T> {
    account: Option<u64>,
    tier: Tier,
    waiters: VecDeque<Waiter<T>>,
}

/// One class's waiters: a round-robin ring of lanes, never holding an empty lane.
struct ClassQueue<T> {
    lanes: VecDeque<Lane<T>>,
    len: u32,
}

impl<T> Default for ClassQueue<T> {
    fn default() -> Self {
        ClassQueue { lanes: VecDeque::new(), len: 0 }
    }
}

/// What one account holds. An entry exists only while one of the counts is non-zero, so the
/// map is bounded by the limit plus the waiting room.
#[derive(Clone, Copy, Debug, Default)]
struct AccountUse {
    in_flight: u32,
    queued: u32,
}

pub(crate) struct Scheduler<T> {
    enabled: bool,
    max_share: PerClass<f64>,
    queue_capacity: PerClass<u32>,
    max_queued: u32,
    account_share: f64,
    tier_weight: PerTier<f64>,
    tier_share: PerTier<f64>,
    limit: AdaptiveLimit,
    hold: Average,
    in_flight: PerClass<u32>,
    tier_in_flight: PerClass<PerTier<u32>>,
    total_in_flight: u32,
    queues: [ClassQueue<T>; PriorityClass::COUNT],
    total_queued: u32,
    accounts: HashMap<u64, AccountUse>,
    next_id: WaiterId,
    admitted: PerClass<u64>,
    tier_admitted: PerTier<u64>,
    refused: PerClass<[u64; RefusalReason::COUNT]>,
    abandoned: PerClass<u64>,
}

impl<T> Scheduler<T> {
    pub(crate) fn new(config: &AdmissionConfig) -> Self {
        Scheduler {
            enabled: config.enabled,
            max_share: config.max_share,
            queue_capacity: config.queue_capacity,
            max_queued: config.max_queued,
            account_share: config.account_share,
            tier_weight: config.tier_weight,
            tier_share: config.tier_share,
            limit: AdaptiveLimit::new(&config.limit),
            hold: Average::new(HOLD_SAMPLES),
            in_flight: PerClass::default(),
            tier_in_flight: PerClass::default(),
            total_in_flight: 0,
            queues: Default::default(),
            total_queued: 0,
            accounts: HashMap::new(),
            next_id: 0,
            admitted: PerClass::default(),
            tier_admitted: PerTier::default(),
            refused: PerClass::default(),
            abandoned: PerClass::default(),
        }
    }

    /// Admits, queues or refuses a request. `payload` is built only when the request waits.
    pub(crate) fn arrive(&mut self, now: Instant, ticket: Ticket, payload: impl FnOnce() -> T) -> Arrival<T> {
        let (class, tier) = (ticket.class, ticket.tier);
        if !self.enabled {
            return Arrival::Admitted(self.admit(now, class, tier, None));
        }
        if let Some(account) = ticket.account {
            let held = self.accounts.get(&account).copied().unwrap_or_default();
            if held.in_flight.saturating_add(held.queued) >= ticket.max_in_flight {
                let retry_after = self.hold_time().unwrap_or(Duration::ZERO);
                return Arrival::Refused(self.refuse(class, RefusalReason::AccountLimit, retry_after));
            }
        }
        let limit = self.limit.current();
        if self.class_open(class, limit)
            && self.tier_open(class, tier, limit)
            && self.account_open(class, ticket.account, limit)
        {
            return Arrival::Admitted(self.admit(now, class, tier, ticket.account));
        }

        let ahead: u32 = PriorityClass::ALL[..=class.rank()].iter().map(|&c| self.queues[c.rank()].len).sum();
        let estimate = self.estimated_wait(class, ahead.saturating_add(1), limit);
        if estimate > ticket.deadline.saturating_duration_since(now) {
            return Arrival::Refused(self.refuse(class, RefusalReason::WouldTimeOut, estimate));
        }
        if self.queues[class.rank()].len >= self.queue_capacity[class] {
            return Arrival::Refused(self.refuse(class, RefusalReason::QueueFull, estimate));
        }
        let displaced = if self.total_queued >= self.max_queued {
            match self.displace_below(class, limit) {
                Some(displaced) => Some(displaced),
                None => return Arrival::Refused(self.refuse(class, RefusalReason::QueueFull, estimate)),
            }
        } else {
            None
        };

        let id = self.next_id;
        self.next_id += 1;
        let waiter = Waiter { id, payload: payload() };
        let has_lane = ticket.account.is_none_or(|a| self.accounts.get(&a).is_some_and(|held| held.queued > 0));
        let queue = &mut self.queues[class.rank()];
        let lane = if has_lane {
            queue.lanes.iter_mut().find(|lane| lane.account == ticket.account && lane.tier == tier)
        } else {
            None
        };
        match lane {
            Some(lane) => lane.waiters.push_back(waiter),
            None => queue.lanes.push_back(Lane { account: ticket.account, tier, waiters: VecDeque::from([waiter]) }),
        }
        queue.len += 1;
        self.total_queued += 1;
        if let Some(account) = ticket.account {
            self.accounts.entry(account).or_default().queued += 1;
        }
        Arrival::Queued { id, displaced }
    }

    /// Hands a free slot to the next waiter, if any is eligible. Call until `None` after
    /// anything that frees capacity.
    pub(crate) fn grant_next(&mut self, now: Instant) -> Option<(T, Grant)> {
        let limit = self.limit.current();
        for class in PriorityClass::ALL {
            if self.queues[class.rank()].len == 0 {
                continue;
            }
            if !self.class_open(class, limit) {
                // Every less important class is under the same (or a tighter) nested share.
                return None;
            }
            let Some(tier) = self.next_tier(class, limit) else {
                // Every waiting account of this class is at its share; less important classes may go.
                continue;
            };
            let cap = self.account_cap(class, limit);
            let accounts = &self.accounts;
            let queue = &mut self.queues[class.rank()];
            let open = |lane: &Lane<T>| {
                lane.tier == tier && lane.account.is_none_or(|a| accounts.get(&a).map_or(0, |h| h.in_flight) < cap)
            };
            let position = queue.lanes.iter().position(open)?;
            let mut lane = queue.lanes.remove(position)?;
            let waiter = lane.waiters.pop_front()?;
            let account = lane.account;
            if !lane.waiters.is_empty() {
                queue.lanes.push_back(lane);
            }
            queue.len -= 1;
            self.total_queued -= 1;
            if let Some(account) = account {
                self.accounts.entry(account).or_default().queued -= 1;
            }
            return Some((waiter.payload, self.admit(now, class, tier, account)));
        }
        None
    }

    /// A slot is given back. `held` is how long it was held, if it was used at all.
    pub(crate) fn release(&mut self, now: Instant, grant: Grant, outcome: Outcome, held: Option<Duration>) {
        let class = grant.class;
        let load = Load { admitted_at: grant.at, in_flight_then: grant.in_flight, in_flight_now: self.total_in_flight };
        match outcome {
            Outcome::Success { latency } => self.limit.on_success(now, latency, load),
            Outcome::Overloaded => self.limit.on_overload(now, load),
            Outcome::Failed | Outcome::Cancelled => {}
        }
        if let Some(held) = held {
            self.hold.add(held.as_secs_f64());
        }
        self.in_flight[class] = self.in_flight[class].saturating_sub(1);
        let tier_count = &mut self.tier_in_flight[class][grant.tier];
        *tier_count = tier_count.saturating_sub(1);
        self.total_in_flight = self.total_in_flight.saturating_sub(1);
        if let Some(account) = grant.account
            && let Entry::Occupied(mut entry) = self.accounts.entry(account)
        {
            let held = entry.get_mut();
            held.in_flight = held.in_flight.saturating_sub(1);
            if held.in_flight == 0 && held.queued == 0 {
                entry.remove();
            }
        }
    }

    /// The waiter reached its deadline; `Some` (and counted) if it was still waiting.
    pub(crate) fn time_out(&mut self, class: PriorityClass, lane: LaneKey, id: WaiterId) -> Option<T> {
        let payload = self.remove(class, lane, id)?;
        self.refused[class][RefusalReason::TimedOut.index()] += 1;
        Some(payload)
    }

    /// The waiter gave up (its future was dropped); `Some` (and counted) if it was still waiting.
    pub(crate) fn abandon(&mut self, class: PriorityClass, lane: LaneKey, id: WaiterId) -> Option<T> {
        let payload = self.remove(class, lane, id)?;
        self.abandoned[class] += 1;
        Some(payload)
    }

    /// A refusal for a waiter that timed out, with the current estimate as its retry hint.
    pub(crate) fn timed_out_refusal(&self, class: PriorityClass) -> Refusal {
        let limit = self.limit.current();
        let ahead: u32 = PriorityClass::ALL[..=class.rank()].iter().map(|&c| self.queues[c.rank()].len).sum();
        Refusal::new(class, RefusalReason::TimedOut, self.estimated_wait(class, ahead.max(1), limit))
    }

    pub(crate) fn snapshot(&self) -> AdmissionSnapshot {
        AdmissionSnapshot {
            enabled: self.enabled,
            limit: self.limit.current(),
            latency: self.limit.latency(),
            baseline_latency: self.limit.baseline(),
            in_flight: self.in_flight,
            queued: PerClass(std::array::from_fn(|rank| self.queues[rank].len)),
            admitted: self.admitted,
            tier_in_flight: PerTier(std::array::from_fn(|rank| self.tier_in_flight.0.iter().map(|t| t.0[rank]).sum())),
            tier_admitted: self.tier_admitted,
            refused: self.refused,
            abandoned: self.abandoned,
        }
    }

    fn admit(&mut self, now: Instant, class: PriorityClass, tier: Tier, account: Option<u64>) -> Grant {
        self.in_flight[class] += 1;
        self.tier_in_flight[class][tier] += 1;
        self.total_in_flight += 1;
        self.admitted[class] += 1;
        self.tier_admitted[tier] += 1;
        let account = account.filter(|_| self.enabled);
        if let Some(account) = account {
            self.accounts.entry(account).or_default().in_flight += 1;
        }
        Grant { class, tier, at: now, in_flight: self.total_in_flight, account }
    }

    fn refuse(&mut self, class: PriorityClass, reason: RefusalReason, retry_after: Duration) -> Refusal {
        self.refused[class][reason.index()] += 1;
        Refusal::new(class, reason, retry_after)
    }

    /// Slots `level` and every class below it may hold together.
    fn allowance(&self, level: PriorityClass, limit: u32) -> u32 {
        // The small epsilon keeps 0.5 × 10 at 5 despite binary fractions; the cast saturates.
        ((self.max_share[level] * f64::from(limit) + 1e-9).floor() as u32).min(limit)
    }

    /// Whether one more request of `class` fits the limit and every nested share it falls under.
    fn class_open(&self, class: PriorityClass, limit: u32) -> bool {
        if self.total_in_flight >= limit {
            return false;
        }
        let mut at_or_below = 0u32;
        for level in PriorityClass::ALL.into_iter().rev() {
            at_or_below += self.in_flight[level];
            if level <= class && at_or_below >= self.allowance(level, limit) {
                return false;
            }
        }
        true
    }

    /// Slots `class` may hold: the tightest nested share it falls under.
    fn class_allowance(&self, class: PriorityClass, limit: u32) -> u32 {
        PriorityClass::ALL[..=class.rank()].iter().map(|&l| self.allowance(l, limit)).min().unwrap_or(limit)
    }

    /// Slots `level` and every tier below it may hold together inside `class`; at least one,
    /// so that no tier is starved outright by a small limit.
    fn tier_allowance(&self, class: PriorityClass, level: Tier, limit: u32) -> u32 {
        let class_allowance = self.class_allowance(class, limit);
        ((self.tier_share[level] * f64::from(class_allowance) + 1e-9).floor() as u32).clamp(1, class_allowance.max(1))
    }

    /// Whether one more request of `tier` fits its nested tier shares inside `class`.
    fn tier_open(&self, class: PriorityClass, tier: Tier, limit: u32) -> bool {
        let mut at_or_below = 0u32;
        for level in Tier::ALL.into_iter().rev() {
            at_or_below += self.tier_in_flight[class][level];
            if level <= tier && at_or_below >= self.tier_allowance(class, level, limit) {
                return false;
            }
        }
        true
    }

    /// The tier of `class` that gets the next slot: among tiers with a waiter that could take
    /// it, the one holding the least in flight for its weight (ties to the more trusted).
    fn next_tier(&self, class: PriorityClass, limit: u32) -> Option<Tier> {
        let cap = self.account_cap(class, limit);
        let mut waiting = [false; Tier::COUNT];
        for lane in &self.queues[class.rank()].lanes {
            if lane.account.is_none_or(|a| self.accounts.get(&a).map_or(0, |h| h.in_flight) < cap) {
                waiting[lane.tier.rank()] = true;
            }
        }
        let held = |tier: Tier| f64::from(self.tier_in_flight[class][tier]) / self.tier_weight[tier];
        Tier::ALL
            .into_iter()
            .filter(|&tier| waiting[tier.rank()] && self.tier_open(class, tier, limit))
            .min_by(|&a, &b| held(a).total_cmp(&held(b)).then(a.cmp(&b)))
    }

    /// Most one account may hold in flight in `class`: its fair share of the class's allowance.
    fn account_cap(&self, class: PriorityClass, limit: u32) -> u32 {
        let share = (self.account_share * f64::from(self.class_allowance(class, limit)) + 1e-9).floor() as u32;
        share.max(1)
    }

    fn account_open(&self, class: PriorityClass, account: Option<u64>, limit: u32) -> bool {
        account.is_none_or(|a| self.accounts.get(&a).map_or(0, |h| h.in_flight) < self.account_cap(class, limit))
    }

    fn hold_time(&self) -> Option<Duration> {
        self.hold.value().map(Duration::from_secs_f64)
    }

    /// About how long the `position`-th waiter of `class` waits: slots of its class turn over
    /// once per hold time. Zero until a hold time has been measured.
    fn estimated_wait(&self, class: PriorityClass, position: u32, limit: u32) -> Duration {
        let Some(hold) = self.hold_time() else { return Duration::ZERO };
        let slots = PriorityClass::ALL[..=class.rank()].iter().map(|&l| self.allowance(l, limit)).min();
        hold.mul_f64(f64::from(position) / f64::from(slots.unwrap_or(limit).max(1)))
    }

    /// Drops the newest waiter of the least important class below `class`, to make room.
    fn displace_below(&mut self, class: PriorityClass, limit: u32) -> Option<(T, Refusal)> {
        let victim_class =
            PriorityClass::ALL.into_iter().rev().take_while(|&c| c > class).find(|&c| self.queues[c.rank()].len > 0)?;
        let queue = &self.queues[victim_class.rank()];
        let newest = queue
            .lanes
            .iter()
            .filter_map(|lane| lane.waiters.back().map(|w| (w.id, LaneKey { account: lane.account, tier: lane.tier })))
            .max_by_key(|(id, _)| *id)?;
        let payload = self.remove(victim_class, newest.1, newest.0)?;
        let ahead: u32 = PriorityClass::ALL[..=victim_class.rank()].iter().map(|&c| self.queues[c.rank()].len).sum();
        let retry_after = self.estimated_wait(victim_class, ahead.max(1), limit);
        Some((payload, self.refuse(victim_class, RefusalReason::Displaced, retry_after)))
    }

    fn remove(&mut self, class: PriorityClass, key: LaneKey, id: WaiterId) -> Option<T> {
        let account = key.account;
        let queue = &mut self.queues[class.rank()];
        let lane_at = queue.lanes.iter().position(|lane| lane.account == account && lane.tier == key.tier)?;
        let lane = &mut queue.lanes[lane_at];
        let waiter_at = lane.waiters.iter().position(|w| w.id == id)?;
        let waiter = lane.waiters.remove(waiter_at)?;
        if lane.waiters.is_empty() {
            queue.lanes.remove(lane_at);
        }
        queue.len -= 1;
        self.total_queued -= 1;
        if let Some(account) = account
            && let Entry::Occupied(mut entry) = self.accounts.entry(account)
        {
            let held = entry.get_mut();
            held.queued = held.queued.saturating_sub(1);
            if held.in_flight == 0 && held.queued == 0 {
                entry.remove();
            }
        }
        Some(waiter.payload)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::class::PriorityClass::{Anonymous, Login, Member, Newcomer, Operator};

    const HOUR: Duration = Duration::from_secs(3600);

    /// A scheduler with a fixed limit (initial = min = max), so only the queueing rules act.
    fn fixed(limit: u32) -> (Scheduler<u32>, Instant) {
        let mut config = AdmissionConfig::default();
        config.limit.initial = limit;
        config.limit.min = limit;
        config.limit.max = limit;
        (Scheduler::new(&config), Instant::now())
    }

    fn ticket(class: PriorityClass, account: Option<u64>, deadline: Instant) -> Ticket {
        Ticket { class, tier: Tier::Standard, account, deadline, max_in_flight: 16 }
    }

    fn key(account: Option<u64>, tier: Tier) -> LaneKey {
        LaneKey { account, tier }
    }

    impl<T> Scheduler<T> {
        /// The most important class with a waiter that could be granted now.
        fn best_eligible(&self) -> Option<PriorityClass> {
            let limit = self.limit.current();
            PriorityClass::ALL.into_iter().find(|&class| {
                let cap = self.account_cap(class, limit);
                self.class_open(class, limit)
                    && self.queues[class.rank()].lanes.iter().any(|lane| {
                        self.tier_open(class, lane.tier, limit)
                            && lane.account.is_none_or(|a| self.accounts.get(&a).map_or(0, |h| h.in_flight) < cap)
                    })
            })
        }

        fn check_consistent(&self) {
            for class in PriorityClass::ALL {
                let queue = &self.queues[class.rank()];
                let len: usize = queue.lanes.iter().map(|lane| lane.waiters.len()).sum();
                assert_eq!(len, queue.len as usize, "{class} queue length");
                assert!(queue.len <= self.queue_capacity[class], "{class} queue over capacity");
                assert!(queue.lanes.iter().all(|lane| !lane.waiters.is_empty()), "empty lane kept");
                let accounts: HashSet<_> = queue.lanes.iter().map(|lane| (lane.account, lane.tier)).collect();
                assert_eq!(accounts.len(), queue.lanes.len(), "one lane per account and tier");
                let tiers: u32 = self.tier_in_flight[class].0.iter().sum();
                assert_eq!(tiers, self.in_flight[class], "{class} tier counts");
            }
            assert_eq!(self.total_queued, self.queues.iter().map(|q| q.len).sum::<u32>());
            assert!(self.total_queued <= self.max_queued, "waiting room over capacity");
            assert_eq!(self.total_in_flight, self.in_flight.0.iter().sum::<u32>());
            assert!(self.accounts.values().all(|held| held.in_flight + held.queued > 0), "stale account entry");
            assert_eq!(self.best_eligible(), None, "an eligible waiter was left waiting");
        }
    }

    fn admitted(arrival: Arrival<u32>) -> Grant {
        match arrival {
            Arrival::Admitted(grant) => grant,
            Arrival::Queued { .. } => panic!("queued, expected admitted"),
            Arrival::Refused(refusal) => panic!("refused: {refusal}"),
        }
    }

    fn queued(arrival: Arrival<u32>) -> WaiterId {
        match arrival {
            Arrival::Queued { id, .. } => id,
            Arrival::Admitted(_) => panic!("admitted, expected queued"),
            Arrival::Refused(refusal) => panic!("refused: {refusal}"),
        }
    }

    fn refused(arrival: Arrival<u32>) -> RefusalReason {
        match arrival {
            Arrival::Refused(refusal) => refusal.reason(),
            Arrival::Admitted(_) => panic!("admitted, expected refused"),
            Arrival::Queued { .. } => panic!("queued, expected refused"),
        }
    }

    #[test]
    fn a_flood_gets_its_share_and_members_the_rest_without_waiting() {
        let (mut s, now) = fixed(10);
        let far = now + HOUR;
        let mut anonymous = Vec::new();
        for i in 0..20 {
            match s.arrive(now, ticket(Anonymous, None, far), || i) {
                Arrival::Admitted(grant) => anonymous.push(grant),
                Arrival::Queued { .. } => {}
                Arrival::Refused(refusal) => panic!("{refusal}"),
            }
        }
        assert_eq!(anonymous.len(), 5, "anonymous holds half the limit");
        let members: Vec<Grant> =
            (0..5).map(|i| admitted(s.arrive(now, ticket(Member, Some(i), far), || 100))).collect();
        assert_eq!(s.total_in_flight, 10);
        // A sixth member waits, and is first when any slot frees, ahead of 15 anonymous waiters.
        queued(s.arrive(now, ticket(Member, Some(9), far), || 200));
        s.release(now, anonymous[0], Outcome::Cancelled, None);
        assert_eq!(s.grant_next(now).map(|(p, g)| (p, g.class)), Some((200, Member)));
        assert!(s.grant_next(now).is_none(), "the limit is full again");
        // When members leave, anonymous waiters refill only their half.
        for grant in members {
            s.release(now, grant, Outcome::Cancelled, None);
        }
        while s.grant_next(now).is_some() {}
        assert_eq!((s.in_flight[Anonymous], s.in_flight[Member]), (5, 1));
        s.check_consistent();
    }

    #[test]
    fn nested_shares_bound_all_low_classes_together() {
        let (mut s, now) = fixed(20);
        let far = now + HOUR;
        for (class, n) in [(Anonymous, 10), (Newcomer, 10), (Login, 10)] {
            for i in 0..n {
                let _ = s.arrive(now, ticket(class, None, far), || i);
            }
        }
        // anonymous ≤ 10, newcomer + anonymous ≤ 12, login + newcomer + anonymous ≤ 15.
        assert_eq!((s.in_flight[Anonymous], s.in_flight[Newcomer], s.in_flight[Login]), (10, 2, 3));
        for i in 0..5 {
            admitted(s.arrive(now, ticket(Member, Some(i), far), || 0));
        }
        queued(s.arrive(now, ticket(Operator, None, far), || 0));
        s.check_consistent();
    }

    #[test]
    fn accounts_of_a_class_take_turns_and_each_is_capped_at_its_share() {
        let (mut s, now) = fixed(8);
        let far = now + HOUR;
        // Member share of 8 is 8; an account may hold a quarter of it: 2.
        let first = admitted(s.arrive(now, ticket(Member, Some(1), far), || 0));
        admitted(s.arrive(now, ticket(Member, Some(1), far), || 0));
        queued(s.arrive(now, ticket(Member, Some(1), far), || 10));
        queued(s.arrive(now, ticket(Member, Some(1), far), || 11));
        for account in 2..=4 {
            admitted(s.arrive(now, ticket(Member, Some(account), far), || 0));
            admitted(s.arrive(now, ticket(Member, Some(account), far), || 0));
        }
        // Limit full: 4 accounts × 2. Accounts 5 and 6 queue behind account 1's lane.
        queued(s.arrive(now, ticket(Member, Some(5), far), || 50));
        queued(s.arrive(now, ticket(Member, Some(6), far), || 60));
        queued(s.arrive(now, ticket(Member, Some(5), far), || 51));
        // Account 1 frees a slot: round-robin starts with its lane (FIFO within it).
        s.release(now, first, Outcome::Cancelled, None);
        assert_eq!(s.grant_next(now).map(|(p, _)| p), Some(10));
        s.check_consistent();
        // Next free slot: account 1 is at its share again, so its second waiter is skipped.
        let other = admitted_from(&mut s, now);
        assert_eq!(other, 50);
    }

    #[test]
    fn recent_accounts_get_only_what_established_ones_leave() {
        let (mut s, now) = fixed(8);
        let far = now + HOUR;
        let of = |tier: Tier, account: u64| Ticket { tier, ..ticket(Member, Some(account), far) };
        // A farm of recent accounts fills its nested share (half of 8) and then waits.
        let mut farm = Vec::new();
        for account in 100..110 {
            match s.arrive(now, of(Tier::Recent, account), || account as u32) {
                Arrival::Admitted(grant) => farm.push(grant),
                Arrival::Queued { .. } => {}
                Arrival::Refused(refusal) => panic!("refused: {refusal}"),
            }
        }
        assert_eq!(farm.len(), 4, "recent tier capped at half of the class");
        // Established members arrive: the other half is theirs at once.
        let members: Vec<Grant> = (1..=4).map(|a| admitted(s.arrive(now, of(Tier::Established, a), || 0))).collect();
        assert_eq!(s.snapshot().tier_in_flight.0, [4, 0, 4]);
        queued(s.arrive(now, of(Tier::Established, 5), || 5));
        // A farm slot frees: the waiting established member gets it, not the older farm waiters.
        s.release(now, farm[0], Outcome::Cancelled, None);
        assert_eq!(s.grant_next(now).map(|(p, _)| p), Some(5));
        s.check_consistent();
        // With no established demand left, freed member slots go back to the farm only
        // up to its share.
        for grant in members {
            s.release(now, grant, Outcome::Cancelled, None);
        }
        let got: Vec<u32> = std::iter::from_fn(|| s.grant_next(now).map(|(p, _)| p)).collect();
        assert_eq!(got.len(), 1, "farm back to its share of 4: {got:?}");
        s.check_consistent();
        assert_eq!(s.snapshot().tier_admitted.0, [5, 0, 5]);
    }

    #[test]
    fn weighted_max_min_between_tiers_under_contention() {
        let mut config = AdmissionConfig::default();
        config.limit = crate::LimitConfig { initial: 10, min: 10, max: 10, ..config.limit };
        config.tier_weight = PerTier([1.0, 1.0, 1.0]);
        config.tier_share = PerTier([1.0, 1.0, 1.0]);
        config.per_account_max_in_flight = 100;
        config.account_share = 1.0;
        let mut s: Scheduler<u32> = Scheduler::new(&config);
        let now = Instant::now();
        let far = now + HOUR;
        let of = |tier: Tier| Ticket { tier, max_in_flight: 100, ..ticket(Member, Some(tier.rank() as u64), far) };
        let mut held: Vec<Grant> = (0..10).map(|_| admitted(s.arrive(now, of(Tier::Recent), || 0))).collect();
        for tier in [Tier::Established, Tier::Recent] {
            for _ in 0..20 {
                queued(s.arrive(now, of(tier), || tier.rank() as u32));
            }
        }
        // Equal weights: as slots free, established climbs until both hold the same.
        for _ in 0..10 {
            s.release(now, held.remove(0), Outcome::Cancelled, None);
            let (_, grant) = s.grant_next(now).expect("a waiter");
            held.push(grant);
        }
        assert_eq!(s.snapshot().tier_in_flight.0, [5, 0, 5]);
        s.check_consistent();
    }

    /// Frees one member slot of account 2 and returns who got it.
    fn admitted_from(s: &mut Scheduler<u32>, now: Instant) -> u32 {
        let grant = Grant { class: Member, tier: Tier::Standard, at: now, in_flight: 0, account: Some(2) };
        s.release(now, grant, Outcome::Cancelled, None);
        s.grant_next(now).map(|(p, _)| p).expect("a waiter is eligible")
    }

    #[test]
    fn an_account_over_its_cap_is_refused_with_429() {
        let (mut s, now) = fixed(1);
        let far = now + HOUR;
        let capped = Ticket { max_in_flight: 2, ..ticket(Member, Some(7), far) };
        admitted(s.arrive(now, capped, || 0));
        queued(s.arrive(now, capped, || 1));
        assert_eq!(refused(s.arrive(now, capped, || 2)), RefusalReason::AccountLimit);
        assert_eq!(RefusalReason::AccountLimit.status(), 429);
        // Another account is not affected.
        queued(s.arrive(now, ticket(Member, Some(8), far), || 3));
        assert_eq!(s.snapshot().refused[Member][RefusalReason::AccountLimit.index()], 1);
    }

    #[test]
    fn a_wait_past_the_deadline_is_refused_at_once() {
        let (mut s, now) = fixed(2);
        let far = now + HOUR;
        let a = admitted(s.arrive(now, ticket(Member, None, far), || 0));
        let _b = admitted(s.arrive(now, ticket(Member, None, far), || 0));
        // Slots are held 1 s each: the 4th waiter of a 2-slot class waits about 2 s.
        s.release(now, a, Outcome::Cancelled, Some(Duration::from_secs(1)));
        admitted(s.arrive(now, ticket(Member, None, far), || 0));
        let soon = now + Duration::from_millis(1200);
        queued(s.arrive(now, ticket(Member, None, soon), || 1));
        queued(s.arrive(now, ticket(Member, None, soon), || 2));
        match s.arrive(now, ticket(Member, None, soon), || 3) {
            Arrival::Refused(refusal) => {
                assert_eq!(refusal.reason(), RefusalReason::WouldTimeOut);
                assert_eq!(refusal.retry_after(), Duration::from_millis(1500), "3rd in line × 1 s ÷ 2 slots");
            }
            _ => panic!("expected an immediate refusal"),
        }
        s.check_consistent();
    }

    #[test]
    fn a_full_class_queue_refuses_and_a_full_waiting_room_displaces_the_newest_lowest() {
        let mut config = AdmissionConfig::default();
        config.limit = crate::LimitConfig { initial: 1, min: 1, max: 1, ..config.limit };
        config.queue_capacity = PerClass([4, 4, 4, 2, 2]);
        config.max_queued = 4;
        let mut s = Scheduler::new(&config);
        let now = Instant::now();
        let far = now + HOUR;
        admitted(s.arrive(now, ticket(Member, None, far), || 0));
        queued(s.arrive(now, ticket(Anonymous, None, far), || 1));
        queued(s.arrive(now, ticket(Anonymous, None, far), || 2));
        assert_eq!(refused(s.arrive(now, ticket(Anonymous, None, far), || 3)), RefusalReason::QueueFull);
        queued(s.arrive(now, ticket(Newcomer, None, far), || 4));
        queued(s.arrive(now, ticket(Newcomer, None, far), || 5));
        // The room (4) is full: a member displaces the newest anonymous waiter, then the next.
        let Arrival::Queued { displaced: Some((victim, refusal)), .. } = s.arrive(now, ticket(Member, None, far), || 6)
        else {
            panic!("expected a displacement")
        };
        assert_eq!((victim, refusal.class(), refusal.reason_code()), (2, Anonymous, "displaced"));
        let Arrival::Queued { displaced: Some((victim, _)), .. } = s.arrive(now, ticket(Member, None, far), || 7)
        else {
            panic!("expected a displacement")
        };
        assert_eq!(victim, 1);
        // Then newcomers, newest first; an anonymous arrival cannot displace anyone.
        let Arrival::Queued { displaced: Some((victim, _)), .. } = s.arrive(now, ticket(Login, None, far), || 8) else {
            panic!("expected a displacement")
        };
        assert_eq!(victim, 5);
        assert_eq!(refused(s.arrive(now, ticket(Anonymous, None, far), || 9)), RefusalReason::QueueFull);
        s.check_consistent();
    }

    #[test]
    fn disabled_admits_everything_and_still_counts() {
        let mut config = AdmissionConfig { enabled: false, ..AdmissionConfig::default() };
        config.limit.initial = 2;
        let mut s: Scheduler<u32> = Scheduler::new(&config);
        let now = Instant::now();
        let grants: Vec<Grant> =
            (0..100).map(|_| admitted(s.arrive(now, ticket(Anonymous, Some(1), now), || 0))).collect();
        assert_eq!(s.snapshot().in_flight[Anonymous], 100);
        assert!(s.accounts.is_empty(), "accounts are not tracked when disabled");
        for grant in grants {
            s.release(now, grant, Outcome::Success { latency: Duration::from_millis(5) }, None);
        }
        assert_eq!(s.snapshot().in_flight[Anonymous], 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Arrive { class: usize, account: Option<u64>, wait_ms: u64 },
        Complete { pick: usize, outcome: u8, latency_ms: u64 },
        TimeOut { pick: usize },
        Abandon { pick: usize },
        Advance { ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..5usize, proptest::option::of(0..6u64), 0..3000u64)
                .prop_map(|(class, account, wait_ms)| Op::Arrive { class, account, wait_ms }),
            3 => (any::<usize>(), 0..4u8, 1..400u64)
                .prop_map(|(pick, outcome, latency_ms)| Op::Complete { pick, outcome, latency_ms }),
            1 => any::<usize>().prop_map(|pick| Op::TimeOut { pick }),
            1 => any::<usize>().prop_map(|pick| Op::Abandon { pick }),
            1 => (1..200u64).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    /// Hard cap of each test account, so the cap is a fixed property of the account.
    fn cap_of(account: u64) -> u32 {
        1 + (account % 4) as u32
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum End {
        Admitted,
        Refused,
        Abandoned,
    }

    struct Model {
        s: Scheduler<u32>,
        now: Instant,
        in_flight: Vec<(u32, Grant)>,
        queued: Vec<(u32, PriorityClass, LaneKey, WaiterId)>,
        ends: Vec<Option<End>>,
    }

    impl Model {
        fn end(&mut self, request: u32, end: End) {
            let slot = &mut self.ends[request as usize];
            assert_eq!(*slot, None, "request {request} ended twice");
            *slot = Some(end);
        }

        /// Checks what must hold at the moment a slot is handed out.
        fn admitted(&mut self, request: u32, grant: Grant) {
            let s = &self.s;
            let limit = s.limit.current();
            assert!(s.total_in_flight <= limit, "in flight {} over limit {limit}", s.total_in_flight);
            let mut at_or_below = 0;
            for level in PriorityClass::ALL.into_iter().rev() {
                at_or_below += s.in_flight[level];
                if level <= grant.class {
                    assert!(at_or_below <= s.allowance(level, limit), "{level} share exceeded");
                }
            }
            let mut at_or_below = 0;
            for level in Tier::ALL.into_iter().rev() {
                at_or_below += s.tier_in_flight[grant.class][level];
                if level <= grant.tier {
                    assert!(at_or_below <= s.tier_allowance(grant.class, level, limit), "{level} tier share exceeded");
                }
            }
            if let Some(account) = grant.account {
                let held = s.accounts[&account];
                assert!(held.in_flight <= s.account_cap(grant.class, limit), "account share exceeded");
                assert!(held.in_flight + held.queued <= cap_of(account), "account cap exceeded");
            }
            self.in_flight.push((request, grant));
            self.end(request, End::Admitted);
        }

        fn grant_all(&mut self) {
            loop {
                let best = self.s.best_eligible();
                let Some((request, grant)) = self.s.grant_next(self.now) else { break };
                assert_eq!(Some(grant.class), best, "granted {:?} while {best:?} was eligible", grant.class);
                self.queued.retain(|q| q.0 != request);
                self.admitted(request, grant);
            }
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Arrive { class, account, wait_ms } => {
                    let request = self.ends.len() as u32;
                    self.ends.push(None);
                    let class = PriorityClass::ALL[class];
                    let deadline = self.now + Duration::from_millis(wait_ms);
                    let max_in_flight = account.map_or(16, cap_of);
                    let tier = account.map_or(Tier::Standard, |a| Tier::ALL[(a % 3) as usize]);
                    let ticket = Ticket { class, tier, account, deadline, max_in_flight };
                    match self.s.arrive(self.now, ticket, || request) {
                        Arrival::Admitted(grant) => {
                            assert_eq!(self.s.best_eligible(), None);
                            self.admitted(request, grant);
                        }
                        Arrival::Queued { id, displaced } => {
                            self.queued.push((request, class, key(account, tier), id));
                            if let Some((victim, refusal)) = displaced {
                                assert!(refusal.class() > class, "displaced a class not below the arrival");
                                self.queued.retain(|q| q.0 != victim);
                                self.end(victim, End::Refused);
                            }
                        }
                        Arrival::Refused(_) => self.end(request, End::Refused),
                    }
                }
                Op::Complete { pick, outcome, latency_ms } => {
                    if self.in_flight.is_empty() {
                        return;
                    }
                    let (_, grant) = self.in_flight.swap_remove(pick % self.in_flight.len());
                    let outcome = match outcome {
                        0 => Outcome::Success { latency: Duration::from_millis(latency_ms) },
                        1 => Outcome::Overloaded,
                        2 => Outcome::Failed,
                        _ => Outcome::Cancelled,
                    };
                    let held = self.now.saturating_duration_since(grant.at);
                    self.s.release(self.now, grant, outcome, Some(held));
                    self.grant_all();
                }
                Op::TimeOut { pick } | Op::Abandon { pick } => {
                    if self.queued.is_empty() {
                        return;
                    }
                    let (request, class, account, id) = self.queued.swap_remove(pick % self.queued.len());
                    let removed = if matches!(op, Op::TimeOut { .. }) {
                        self.s.time_out(class, account, id)
                    } else {
                        self.s.abandon(class, account, id)
                    };
                    assert_eq!(removed, Some(request), "a queued waiter must be removable");
                    self.end(request, if matches!(op, Op::TimeOut { .. }) { End::Refused } else { End::Abandoned });
                }
                Op::Advance { ms } => self.now += Duration::from_millis(ms),
            }
            self.s.check_consistent();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn invariants_hold_over_random_arrivals_and_completions(
            ops in proptest::collection::vec(op(), 1..300),
            limit in 1..12u32,
            anonymous_share in 0.1..1.0f64,
            queue in 0..6u32,
            max_queued in 0..12u32,
        ) {
            let mut config = AdmissionConfig::default();
            config.limit = crate::LimitConfig { initial: limit, min: 1, max: 16, ..config.limit };
            config.max_share[Anonymous] = anonymous_share.min(config.max_share[Newcomer]);
            config.queue_capacity = PerClass([queue; PriorityClass::COUNT]);
            config.max_queued = max_queued;
            let mut model = Model {
                s: Scheduler::new(&config),
                now: Instant::now(),
                in_flight: Vec::new(),
                queued: Vec::new(),
                ends: Vec::new(),
            };
            for op in ops {
                model.apply(op);
            }
            // Drain: everyone waiting gives up, everyone in flight finishes; nothing may leak.
            while let Some((request, class, account, id)) = model.queued.pop() {
                prop_assert_eq!(model.s.abandon(class, account, id), Some(request));
                model.end(request, End::Abandoned);
            }
            while let Some((_, grant)) = model.in_flight.pop() {
                model.s.release(model.now, grant, Outcome::Cancelled, None);
                model.grant_all();
            }
            prop_assert!(model.ends.iter().all(Option::is_some), "a request never ended");
            let snapshot = model.s.snapshot();
            prop_assert_eq!(snapshot.in_flight, PerClass::default());
            prop_assert_eq!(snapshot.queued, PerClass::default());
            prop_assert!(model.s.accounts.is_empty());
            let admitted = model.ends.iter().filter(|e| **e == Some(End::Admitted)).count() as u64;
            let refused = model.ends.iter().filter(|e| **e == Some(End::Refused)).count() as u64;
            let abandoned = model.ends.iter().filter(|e| **e == Some(End::Abandoned)).count() as u64;
            prop_assert_eq!(snapshot.admitted.0.iter().sum::<u64>(), admitted);
            prop_assert_eq!(snapshot.refused.0.iter().flatten().sum::<u64>(), refused);
            prop_assert_eq!(snapshot.abandoned.0.iter().sum::<u64>(), abandoned);
        }
    }
}
