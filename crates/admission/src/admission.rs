//! The shared admission gate: [`Admission::acquire`] waits for a slot (or is refused at once),
//! and the [`Permit`] gives it back and reports how the upstream did.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::class::PriorityClass;
use crate::config::AdmissionConfig;
use crate::refusal::Refusal;
use crate::report::{AdmissionSnapshot, Outcome};
use crate::scheduler::{Arrival, Grant, LaneKey, Scheduler, Ticket, WaiterId};
use crate::tier::Tier;

/// A configuration that failed [`AdmissionConfig::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid admission configuration: {}", .0.join("; "))]
pub struct InvalidConfig(pub Vec<String>);

/// One request asking for a slot toward the upstreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionRequest {
    /// Its priority class.
    pub class: PriorityClass,
    /// Its account's trust tier inside the class ([`Tier::Standard`] when unknown).
    pub tier: Tier,
    /// An opaque id of the account or API key, for the per-account cap and fair sharing. For
    /// anonymous traffic the gateway may pass a hash of the client's subnet so that fairness
    /// applies there too; `None` is exempt from per-account caps and shares one FIFO lane.
    pub account: Option<u64>,
    /// Latest time to get a slot, e.g. from the client's own timeout; the class's `max_wait`
    /// applies when it is later or absent.
    pub deadline: Option<Instant>,
    /// This key's own cap on requests in flight and queued, overriding
    /// `per_account_max_in_flight`.
    pub max_in_flight: Option<u32>,
}

impl AdmissionRequest {
    /// A request of `class` with no account, deadline or cap of its own.
    pub fn new(class: PriorityClass) -> Self {
        AdmissionRequest { class, tier: Tier::Standard, account: None, deadline: None, max_in_flight: None }
    }
}

/// Priority admission in front of the upstream pool. Cheap to clone; all clones share state.
///
/// State sits behind one mutex held for a few hundred nanoseconds per call and never across an
/// `.await`; waiting happens on a per-waiter channel.
#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

struct Shared {
    config: AdmissionConfig,
    state: Mutex<Scheduler<Wake>>,
}

/// Sent to a waiter: a slot, or the news that it was displaced.
type Wake = oneshot::Sender<Result<Grant, Refusal>>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Scheduler<Wake>> {
        // The state is updated by plain arithmetic that cannot panic halfway; a poisoned lock
        // therefore still holds consistent counts.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives a slot back and hands freed capacity to waiters.
    fn release(&self, grant: Grant, outcome: Outcome, held: Option<Duration>) {
        let now = Instant::now();
        let mut state = self.lock();
        state.release(now, grant, outcome, held);
        grant_waiters(&mut state, now);
    }
}

/// Wakes every waiter that fits now. A waiter whose receiver is gone gets its slot taken back.
fn grant_waiters(state: &mut Scheduler<Wake>, now: Instant) {
    while let Some((wake, grant)) = state.grant_next(now) {
        if let Err(Ok(grant)) = wake.send(Ok(grant)) {
            // The waiter's guard holds its receiver until it has taken itself out of the queue
            // under this lock, so this does not happen; if it did, the slot must not leak.
            state.release(now, grant, Outcome::Cancelled, None);
        }
    }
}

impl Admission {
    /// An admission gate for a validated configuration.
    pub fn new(config: AdmissionConfig) -> Result<Self, InvalidConfig> {
        config.validate().map_err(InvalidConfig)?;
        let state = Mutex::new(Scheduler::new(&config));
        Ok(Admission { shared: Arc::new(Shared { config, state }) })
    }

    /// The configuration in force.
    pub fn config(&self) -> &AdmissionConfig {
        &self.shared.config
    }

    /// Waits for a slot toward the upstreams, or is refused.
    ///
    /// Returns at once when the request is admitted or refused without waiting (account cap,
    /// full queue, or an estimated wait past the deadline). Otherwise waits at most until the
    /// deadline. Dropping the future while waiting takes the request out of the queue.
    pub async fn acquire(&self, request: AdmissionRequest) -> Result<Permit, Refusal> {
        let shared = &self.shared;
        let class = request.class;
        let now = Instant::now();
        let longest = now + shared.config.max_wait(class);
        let deadline = request.deadline.map_or(longest, |d| d.min(longest));
        let ticket = Ticket {
            class,
            tier: request.tier,
            account: request.account,
            deadline,
            max_in_flight: request.max_in_flight.unwrap_or(shared.config.per_account_max_in_flight),
        };
        let mut receiver = None;
        let id = {
            let mut state = shared.lock();
            let arrival = state.arrive(now, ticket, || {
                let (sender, r) = oneshot::channel();
                receiver = Some(r);
                sender
            });
            match arrival {
                Arrival::Admitted(grant) => return Ok(self.permit(grant, now)),
                Arrival::Refused(refusal) => return Err(refusal),
                Arrival::Queued { id, displaced } => {
                    if let Some((wake, refusal)) = displaced {
                        // Sent under the lock, so the displaced waiter finds it once out of the
                        // queue; if its future is already gone there is nobody left to tell.
                        let _ = wake.send(Err(refusal));
                    }
                    id
                }
            }
        };
        let Some(receiver) = receiver else {
            // `arrive` builds the payload for every queued request; keep the type honest anyway.
            return Err(shared.lock().timed_out_refusal(class));
        };
        let lane = LaneKey { account: request.account, tier: request.tier };
        let mut waiting = Waiting { shared, class, lane, id, receiver, done: false };
        let woken = tokio::time::timeout_at(deadline, &mut waiting.receiver).await;
        waiting.done = true;
        let message = match woken {
            Ok(Ok(message)) => message,
            // The sender is dropped only with a message sent; treat the impossible as a time-out.
            Ok(Err(_)) => return Err(shared.lock().timed_out_refusal(class)),
            Err(_elapsed) => {
                let mut state = shared.lock();
                if state.time_out(class, lane, id).is_some() {
                    return Err(state.timed_out_refusal(class));
                }
                drop(state);
                // Granted or displaced at the deadline: the message is already in the channel.
                match waiting.receiver.try_recv() {
                    Ok(message) => message,
                    Err(_) => return Err(shared.lock().timed_out_refusal(class)),
                }
            }
        };
        message.map(|grant| self.permit(grant, now))
    }

    fn permit(&self, grant: Grant, arrived: Instant) -> Permit {
        Permit {
            shared: Arc::clone(&self.shared),
            grant,
            waited: grant.at.saturating_duration_since(arrived),
            finished: false,
        }
    }

    /// Current limit, gauges and counters.
    pub fn snapshot(&self) -> AdmissionSnapshot {
        self.shared.lock().snapshot()
    }
}

/// A request waiting in the queue; dropping it (the acquiring future was dropped) takes the
/// request out, or gives back the slot it was granted in the meantime.
struct Waiting<'a> {
    shared: &'a Shared,
    class: PriorityClass,
    lane: LaneKey,
    id: WaiterId,
    receiver: oneshot::Receiver<Result<Grant, Refusal>>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        if state.abandon(self.class, self.lane, self.id).is_some() {
            return;
        }
        // No longer queued, so a grant or a displacement was sent under the lock we now hold.
        if let Ok(Ok(grant)) = self.receiver.try_recv() {
            let now = Instant::now();
            state.release(now, grant, Outcome::Cancelled, None);
            grant_waiters(&mut state, now);
        }
    }
}

/// A slot toward the upstreams. Dropping it gives the slot back (as [`Outcome::Cancelled`]);
/// [`Permit::finish`] also tells the limit how the upstream did.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct Permit {
    shared: Arc<Shared>,
    grant: Grant,
    waited: Duration,
    finished: bool,
}

impl Permit {
    /// The class it was admitted in.
    pub fn class(&self) -> PriorityClass {
        self.grant.class
    }

    /// The trust tier it was admitted in.
    pub fn tier(&self) -> Tier {
        self.grant.tier
    }

    /// Time spent waiting for the slot.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Gives the slot back with the upstream's outcome. Call it when the response is complete
    /// (end of stream), so the slot is held for as long as the upstream works on the request.
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.give_back(outcome);
    }

    fn give_back(&self, outcome: Outcome) {
        let held = Instant::now().saturating_duration_since(self.grant.at);
        self.shared.release(self.grant, outcome, Some(held));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            self.give_back(Outcome::Cancelled);
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("class", &self.grant.class).field("waited", &self.waited).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::config::LimitConfig;
    use crate::refusal::RefusalReason;

    /// A gate with a fixed limit, so that only the queueing rules act.
    fn gate(limit: u32) -> Admission {
        let limit = LimitConfig { initial: limit, min: limit, max: limit, ..LimitConfig::default() };
        Admission::new(AdmissionConfig { limit, ..AdmissionConfig::default() }).expect("valid")
    }

    fn member(account: u64) -> AdmissionRequest {
        AdmissionRequest { account: Some(account), ..AdmissionRequest::new(PriorityClass::Member) }
    }

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn an_invalid_config_is_refused_naming_the_field() {
        let config = AdmissionConfig { account_share: 2.0, ..AdmissionConfig::default() };
        let error = Admission::new(config).err().expect("invalid");
        assert!(error.to_string().contains("admission.account_share"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_slot_is_taken_at_once_and_given_back_on_finish() {
        let gate = gate(4);
        let permit = gate.acquire(member(1)).await.expect("admitted");
        assert_eq!((permit.class(), permit.waited()), (PriorityClass::Member, Duration::ZERO));
        assert_eq!(gate.snapshot().in_flight[PriorityClass::Member], 1);
        permit.finish(Outcome::Success { latency: Duration::from_millis(20) });
        let snapshot = gate.snapshot();
        assert_eq!((snapshot.in_flight[PriorityClass::Member], snapshot.admitted[PriorityClass::Member]), (0, 1));
        assert_eq!(snapshot.latency, Some(Duration::from_millis(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_slot_when_a_permit_is_dropped() {
        let gate = gate(1);
        let first = gate.acquire(member(1)).await.expect("admitted");
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(member(2)).await.map(|permit| permit.waited()) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(gate.snapshot().queued[PriorityClass::Member], 1);
        drop(first);
        let waited = waiter.await.expect("joined").expect("admitted after the wait");
        assert_eq!(waited, Duration::from_millis(300));
        assert_eq!(gate.snapshot().in_flight[PriorityClass::Member], 0, "the waiter's permit was dropped too");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_times_out_at_its_deadline() {
        let gate = gate(1);
        let _held = gate.acquire(member(1)).await.expect("admitted");
        let start = Instant::now();
        let request = AdmissionRequest { deadline: Some(start + Duration::from_secs(2)), ..member(2) };
        let refusal = gate.acquire(request).await.expect_err("no slot frees");
        assert_eq!((refusal.reason(), refusal.status()), (RefusalReason::TimedOut, 503));
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
        let snapshot = gate.snapshot();
        assert_eq!(snapshot.queued[PriorityClass::Member], 0);
        assert_eq!(snapshot.refused(PriorityClass::Member, RefusalReason::TimedOut), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_class_max_wait_bounds_a_later_deadline() {
        let gate = gate(1);
        let _held = gate.acquire(member(1)).await.expect("admitted");
        let start = Instant::now();
        let request = AdmissionRequest { deadline: Some(start + Duration::from_secs(3600)), ..member(2) };
        let refusal = gate.acquire(request).await.expect_err("no slot frees");
        assert_eq!(refusal.reason(), RefusalReason::TimedOut);
        assert_eq!(Instant::now() - start, gate.config().max_wait(PriorityClass::Member));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let gate = gate(1);
        let held = gate.acquire(member(1)).await.expect("admitted");
        let waiting = tokio::time::timeout(Duration::from_millis(100), gate.acquire(member(2))).await;
        assert!(waiting.is_err(), "still waiting when the client gave up");
        let snapshot = gate.snapshot();
        assert_eq!((snapshot.queued[PriorityClass::Member], snapshot.abandoned[PriorityClass::Member]), (0, 1));
        drop(held);
        assert_eq!(gate.snapshot().in_flight[PriorityClass::Member], 0);
        assert!(gate.acquire(member(3)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_granted_to_a_waiter_that_then_goes_away_is_not_leaked() {
        let gate = gate(1);
        let held = gate.acquire(member(1)).await.expect("admitted");
        {
            let mut waiting = pin!(gate.acquire(member(2)));
            assert!(poll_once(waiting.as_mut()).is_pending(), "queued");
            drop(held); // grants the slot to the waiter, which is never polled again
            assert_eq!(gate.snapshot().in_flight[PriorityClass::Member], 1);
        }
        let snapshot = gate.snapshot();
        assert_eq!((snapshot.in_flight[PriorityClass::Member], snapshot.queued[PriorityClass::Member]), (0, 0));
        assert!(gate.acquire(member(3)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_displaced_waiter_is_told_at_once() {
        let limit = LimitConfig { initial: 1, min: 1, max: 1, ..LimitConfig::default() };
        let config = AdmissionConfig { limit, max_queued: 1, ..AdmissionConfig::default() };
        let gate = Admission::new(config).expect("valid");
        let held = gate.acquire(member(1)).await.expect("admitted");
        let anonymous = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(AdmissionRequest::new(PriorityClass::Anonymous)).await.map(drop) }
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        let member_waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(member(2)).await.map(drop) }
        });
        let refusal = anonymous.await.expect("joined").expect_err("displaced");
        assert_eq!((refusal.class(), refusal.reason()), (PriorityClass::Anonymous, RefusalReason::Displaced));
        assert_eq!(Instant::now(), start, "told without waiting");
        drop(held);
        assert!(member_waiting.await.expect("joined").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_admits_past_any_limit() {
        let limit = LimitConfig { initial: 1, min: 1, max: 1, ..LimitConfig::default() };
        let gate =
            Admission::new(AdmissionConfig { enabled: false, limit, ..AdmissionConfig::default() }).expect("valid");
        let mut permits = Vec::new();
        for _ in 0..50 {
            permits.push(gate.acquire(AdmissionRequest::new(PriorityClass::Anonymous)).await.expect("admitted"));
        }
        assert_eq!(gate.snapshot().in_flight[PriorityClass::Anonymous], 50);
        permits.clear();
        assert_eq!(gate.snapshot().in_flight[PriorityClass::Anonymous], 0);
    }

    #[test]
    fn admission_is_shareable_and_the_uncontended_path_never_waits() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Admission>();
        assert_send_sync::<Permit>();
        let gate = gate(4);
        let mut acquire = pin!(gate.acquire(member(1)));
        let Poll::Ready(Ok(permit)) = poll_once(acquire.as_mut()) else { panic!("admitted on the first poll") };
        drop(permit);
    }
}
