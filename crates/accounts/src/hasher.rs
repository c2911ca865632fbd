//! Argon2id password hashing on a small pool of dedicated OS threads with a bounded
//! admission count, so a login flood costs a fixed amount of CPU and gets `Busy` back
//! at once instead of piling up work or stalling the async runtime.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use tokio::sync::oneshot;

/// Argon2id memory cost in KiB (OWASP Password Storage Cheat Sheet minimum: 19 MiB).
pub const M_COST_KIB: u32 = 19_456;
/// Argon2id passes over memory (OWASP minimum for m = 19 MiB).
pub const T_COST: u32 = 2;
/// Argon2id lanes. One lane per hash: the pool's threads are the parallelism.
pub const P_COST: u32 = 1;

/// The hasher every new hash uses. Verification reads the parameters from the PHC
/// string instead, so hashes made under older parameters keep verifying.
pub fn argon2id() -> Argon2<'static> {
    // The constants are within argon2's limits; the fallback only guards a future edit.
    let params = Params::new(M_COST_KIB, T_COST, P_COST, Some(32)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` (NFKC-normalised first) to a PHC string on the calling thread.
/// Costs tens of milliseconds of CPU: async callers go through [`HashPool`].
pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    let normalized = crate::password::normalize(password);
    let hash = argon2id().hash_password(normalized.as_bytes()).map_err(HashError::Argon2)?;
    Ok(hash.to_string())
}

/// Checks `password` against a PHC string on the calling thread. `Ok(false)` is a wrong
/// password; `Err` means the stored hash itself is unusable.
pub fn verify_blocking(password: &str, phc: &str) -> Result<bool, HashError> {
    let parsed = parse_phc(phc)?;
    let normalized = crate::password::normalize(password);
    use argon2::password_hash::Error;
    match argon2id().verify_password(normalized.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(Error::PasswordInvalid) => Ok(false),
        // Failures of the machine, not of the stored string.
        Err(err @ (Error::Internal | Error::OutOfMemory | Error::RngFailure | Error::Crypto)) => {
            Err(HashError::Argon2(err))
        }
        // Everything else is something the PHC string names that argon2 cannot use: an
        // unknown algorithm or version, parameters out of range, a bad salt or output.
        Err(_) => Err(HashError::InvalidHash),
    }
}

/// Parses a stored hash, accepting only complete argon2id PHC strings. argon2 itself
/// would "verify" a string with no salt or no hash as a plain mismatch, which would hide
/// a corrupted row behind a wrong-password answer.
fn parse_phc(phc: &str) -> Result<PasswordHash, HashError> {
    let parsed = PasswordHash::new(phc).map_err(|_| HashError::InvalidHash)?;
    let complete = parsed.algorithm == argon2::ARGON2ID_IDENT && parsed.salt.is_some() && parsed.hash.is_some();
    if complete { Ok(parsed) } else { Err(HashError::InvalidHash) }
}

/// Size of a [`HashPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPoolConfig {
    /// Dedicated hashing threads (each runs one argon2id at a time, ~19 MiB each).
    pub threads: usize,
    /// Requests admitted beyond those running; the next one gets [`HashError::Busy`].
    pub queue: usize,
}

impl Default for HashPoolConfig {
    /// Half the cores (at least one), so hashing can never take the whole machine from
    /// the proxy, and a queue of 16 per thread (about half a second of waiting).
    fn default() -> Self {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.div_ceil(2);
        Self { threads, queue: threads * 16 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every thread is hashing and the queue is full. Answer 503 with `Retry-After`.
    #[error("password hashing is saturated; retry shortly")]
    Busy,
    /// The stored string is not a PHC hash this crate can verify.
    #[error("stored password hash is malformed")]
    InvalidHash,
    /// A worker died (panicked) before answering.
    #[error("password hashing worker failed")]
    WorkerFailed,
    #[error("argon2: {0}")]
    Argon2(argon2::password_hash::Error),
    #[error("invalid hash pool configuration: {0}")]
    Config(&'static str),
    #[error("could not start a hashing thread")]
    Spawn(#[source] std::io::Error),
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Counters shared by the pool handle and its threads.
#[derive(Debug)]
struct Counters {
    /// Running plus waiting. Admission is decided on this number alone, which is what
    /// makes the limit exact: `threads + queue` requests, never one more.
    admitted: AtomicUsize,
    running: AtomicUsize,
    capacity: usize,
}

/// A bounded pool of OS threads for argon2id. Drop it to stop the threads (each exits
/// after the jobs already queued).
#[derive(Debug)]
pub struct HashPool {
    counters: Arc<Counters>,
    jobs: mpsc::Sender<Job>,
    /// Hash of a random password under the current parameters, for [`Self::verify_dummy`].
    dummy_phc: Arc<str>,
}

impl HashPool {
    /// Starts `config.threads` threads. Computes one hash on the calling thread (the
    /// target of [`Self::verify_dummy`]), so call it at start-up, not per request.
    pub fn new(config: HashPoolConfig) -> Result<Self, HashError> {
        if config.threads == 0 {
            return Err(HashError::Config("threads must be at least 1"));
        }
        let capacity =
            config.threads.checked_add(config.queue).ok_or(HashError::Config("threads + queue overflows"))?;
        let counters = Arc::new(Counters { admitted: AtomicUsize::new(0), running: AtomicUsize::new(0), capacity });
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..config.threads {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("palisade-hash-{i}"))
                .spawn(move || worker(&receiver))
                .map_err(HashError::Spawn)?;
        }
        let dummy_password = crate::tokens::SessionToken::generate();
        let dummy_phc = hash_blocking(dummy_password.as_str())?.into();
        Ok(Self { counters, jobs, dummy_phc })
    }

    /// Hashes a new password (NFKC-normalised first) to a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Checks a password against a stored PHC string. A malformed hash is refused before
    /// it takes a place in the pool.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, HashError> {
        parse_phc(&phc)?;
        self.run(move || verify_blocking(&password, &phc)).await?
    }

    /// Does the work of a failed [`Self::verify`] for a login naming an account that does
    /// not exist, so neither the time taken nor a `Busy` answer tells the caller whether
    /// the account exists. Always `Ok(())` unless the pool refuses or fails.
    pub async fn verify_dummy(&self, password: String) -> Result<(), HashError> {
        let phc = Arc::clone(&self.dummy_phc);
        self.run(move || verify_blocking(&password, &phc)).await?.map(|_| ())
    }

    /// Requests running on a hashing thread now.
    pub fn in_flight(&self) -> usize {
        self.counters.running.load(Ordering::Relaxed)
    }

    /// Requests admitted and waiting for a thread.
    pub fn queued(&self) -> usize {
        let admitted = self.counters.admitted.load(Ordering::Relaxed);
        admitted.saturating_sub(self.in_flight())
    }

    /// Admits `work` or refuses at once, then waits for its result.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let receiver = self.submit(work)?;
        receiver.await.map_err(|_| HashError::WorkerFailed)
    }

    /// The admission decision, synchronous so that `Busy` never waits.
    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, HashError> {
        let place = Place::take(&self.counters).ok_or(HashError::Busy)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller stopped waiting (client gone, request timed out): skip the
            // hash rather than spend 20+ ms of CPU on an answer nobody reads.
            if tx.is_closed() {
                return;
            }
            let running = Running::start(&place.0);
            let output = work();
            // Free the place before answering, so a caller that has its answer never
            // sees its own request still counted (and may be admitted again at once).
            drop(running);
            drop(place);
            let _ = tx.send(output);
        });
        // Fails only if every worker is gone; the place comes back as the job drops.
        self.jobs.send(job).map_err(|_| HashError::WorkerFailed)?;
        Ok(rx)
    }
}

/// One admitted request's place in the pool, given back when dropped: after the work,
/// when the work is skipped, or while unwinding from a panic in it.
struct Place(Arc<Counters>);

impl Place {
    fn take(counters: &Arc<Counters>) -> Option<Self> {
        let c = counters;
        c.admitted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < c.capacity).then_some(n + 1)).ok()?;
        Some(Self(Arc::clone(counters)))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks a request as running on a thread for as long as it lives.
struct Running<'a>(&'a Counters);

impl<'a> Running<'a> {
    fn start(counters: &'a Counters) -> Self {
        counters.running.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

fn worker(receiver: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // Hold the lock only to take one job; the others wait on the mutex meanwhile.
        let job = match receiver.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return }; // pool dropped and queue drained
        // A panic inside argon2 must not shrink the pool for good: the waiting caller
        // sees its oneshot dropped (WorkerFailed) and the thread takes the next job.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    fn pool(threads: usize, queue: usize) -> HashPool {
        HashPool::new(HashPoolConfig { threads, queue }).expect("pool starts")
    }

    /// Polls a future once without a runtime: admission happens on the first poll.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn phc_string_names_argon2id_and_owasp_parameters() {
        let phc = hash_blocking("violet-tractor-mango-82").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(verify_blocking("violet-tractor-mango-82", &phc).ok(), Some(true));
        assert_eq!(verify_blocking("violet-tractor-mango-83", &phc).ok(), Some(false));
        let no_hash = phc.rsplit_once('$').map(|(head, _)| head).unwrap_or_default();
        let as_argon2i = phc.replacen("argon2id", "argon2i", 1);
        for bad in [
            no_hash,
            &as_argon2i,
            "not a phc",
            "$bogus",
            "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
            "$bcrypt$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",
        ] {
            assert!(matches!(verify_blocking("x", bad), Err(HashError::InvalidHash)), "{bad}");
        }
    }

    #[test]
    fn verification_uses_nfkc_so_equivalent_input_matches() {
        // "é" precomposed vs "e" + combining acute: the same password to a person.
        let phc = hash_blocking("caf\u{e9} au lait").expect("hash");
        assert_eq!(verify_blocking("cafe\u{301} au lait", &phc).ok(), Some(true));
    }

    #[test]
    fn refuses_zero_threads() {
        assert!(matches!(HashPool::new(HashPoolConfig { threads: 0, queue: 4 }), Err(HashError::Config(_))));
    }

    #[tokio::test]
    async fn hash_and_verify_through_the_pool() {
        let p = pool(1, 2);
        let phc = p.hash("violet-tractor-mango-82".into()).await.expect("hash");
        assert!(p.verify("violet-tractor-mango-82".into(), phc.clone()).await.expect("verify"));
        assert!(!p.verify("wrong".into(), phc).await.expect("verify"));
        assert!(matches!(p.verify("x".into(), "$bogus".into()).await, Err(HashError::InvalidHash)));
        p.verify_dummy("anything".into()).await.expect("dummy");
        assert_eq!((p.in_flight(), p.queued()), (0, 0));
    }

    /// Threads that block on a gate make the admission count exact and deterministic.
    #[test]
    fn admits_exactly_threads_plus_queue_then_busy_at_once() {
        for (threads, queue) in [(1, 0), (1, 3), (2, 2), (3, 5)] {
            let p = pool(threads, queue);
            let (open, gate) = mpsc::channel::<()>();
            let gate = Arc::new(Mutex::new(gate));
            let mut receivers = Vec::new();
            let mut busy = 0;
            for _ in 0..threads + queue + 4 {
                let gate = Arc::clone(&gate);
                match p.submit(move || gate.lock().map(|g| g.recv().is_ok()).unwrap_or(false)) {
                    Ok(rx) => receivers.push(rx),
                    Err(HashError::Busy) => busy += 1,
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            assert_eq!((receivers.len(), busy), (threads + queue, 4), "N={threads} Q={queue}");
            wait_until(|| p.in_flight() >= 1);
            assert_eq!(p.in_flight() + p.queued(), threads + queue);
            for _ in 0..threads + queue {
                open.send(()).expect("gate open");
            }
            for rx in receivers {
                assert_eq!(rx.blocking_recv().ok(), Some(true));
            }
            wait_until(|| p.in_flight() + p.queued() == 0);
            // Places freed: admission works again.
            assert!(p.submit(|| ()).is_ok());
        }
    }

    #[test]
    fn busy_is_returned_on_first_poll_of_the_async_api() {
        let p = pool(1, 1);
        let (open, gate) = mpsc::channel::<()>();
        let blocker = p.submit(move || gate.recv().is_ok()).expect("first");
        let mut queued = pin!(p.verify_dummy("a".into()));
        assert!(poll_once(queued.as_mut()).is_pending(), "second request queues");
        let mut refused = pin!(p.hash("b".into()));
        assert!(matches!(poll_once(refused.as_mut()), Poll::Ready(Err(HashError::Busy))));
        open.send(()).expect("gate");
        assert_eq!(blocker.blocking_recv().ok(), Some(true));
    }

    #[test]
    fn abandoned_requests_are_skipped_and_release_their_place() {
        let p = pool(1, 4);
        let (open, gate) = mpsc::channel::<()>();
        let blocker = p.submit(move || gate.recv().is_ok()).expect("blocker");
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            let ran = Arc::clone(&ran);
            let rx = p.submit(move || ran.fetch_add(1, Ordering::Relaxed)).expect("queued");
            drop(rx); // the client went away
        }
        open.send(()).expect("gate");
        assert_eq!(blocker.blocking_recv().ok(), Some(true));
        wait_until(|| p.in_flight() + p.queued() == 0);
        assert_eq!(ran.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_panicking_job_reports_failure_and_keeps_the_thread() {
        let p = pool(1, 0);
        let rx = p.submit(|| -> u8 { panic!("boom") }).expect("admitted");
        assert!(rx.blocking_recv().is_err());
        wait_until(|| p.in_flight() + p.queued() == 0);
        let rx = p.submit(|| 7u8).expect("admitted again");
        assert_eq!(rx.blocking_recv().ok(), Some(7));
    }

    #[test]
    fn runs_on_dedicated_named_threads() {
        let p = pool(1, 0);
        let rx = p.submit(|| thread::current().name().map(str::to_owned)).expect("admitted");
        assert_eq!(rx.blocking_recv().ok().flatten().as_deref(), Some("palisade-hash-0"));
    }

    /// Counters are updated by the worker just after it sends its answer; poll briefly.
    /// The 10 s bound is far above the microseconds this takes, so it never flakes.
    fn wait_until(cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "condition not reached in 10 s");
            thread::sleep(Duration::from_millis(1));
        }
    }
}
