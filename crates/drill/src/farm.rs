//! The account farm: verified accounts, signed up through the public flow (register, the
//! code from the outbox, verify, log in) just before the phases start, each from a /24
//! of its own; then, in its phases, each account keeps its requests in flight, closed
//! loop: one is sent again as soon as the last is answered or refused, after the
//! `Retry-After` it was given (cut to a bound). Every account sends the same prompt.
//! What the defences must show: the farm gets only the capacity members leave unused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::fleet::node_of;
use crate::scenario::BotSpec;
use crate::traffic::{self, Browser, Identifier, Outbox, Outcome, Recorder, Solver};

/// Farm accounts signing up at once.
const SIGN_UPS_AT_ONCE: usize = 16;
/// After an attempt that got no answer at all, how long a slot waits before the next
/// (so a gateway that is down is not spun against).
const AFTER_NO_ANSWER: Duration = Duration::from_secs(1);

/// How the farm's sign-ups went.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FarmSetup {
    /// Accounts the scenario asked for.
    pub accounts: usize,
    /// Accounts registered, verified and logged in.
    pub signed_up: usize,
    /// Seconds the sign-ups took.
    pub seconds: f64,
    /// The others, by the step that failed and its status (`"register answered 429"`).
    pub failures: BTreeMap<String, usize>,
}

/// The farm's logged-in accounts, each with the node it uses.
pub struct Farm {
    pub accounts: Vec<(Arc<Browser>, usize)>,
    pub setup: FarmSetup,
}

pub fn email(i: usize) -> String {
    format!("farm{i}@drill.example")
}

/// A password no breach list has: farm operators are not careless.
pub fn password(i: usize) -> String {
    format!("Farm account {i} holds a long pass 2026!")
}

/// Signs up `spec.accounts` accounts, a few at a time, account `i` from the /24
/// `127.<second + i/256>.<i%256>.0` and on its node of `bases`, until `deadline`.
/// Accounts whose sign-up failed are left out and counted in [`FarmSetup::failures`].
pub async fn sign_up(
    spec: &BotSpec,
    second: u8,
    bases: &[String],
    solver: &Solver,
    outbox: &Outbox,
    timeout: Duration,
    deadline: Instant,
) -> Farm {
    let started = Instant::now();
    let count = spec.accounts;
    let nodes = bases.len().max(1);
    let results: Vec<Result<(Arc<Browser>, usize), traffic::StepFailed>> = futures_util::stream::iter(0..count)
        .map(|i| {
            let node = node_of(i, count, nodes);
            let browser = Arc::new(Browser::new(traffic::address(second, count, i), &bases[node], timeout));
            async move {
                let who = Identifier::Email(email(i));
                browser.sign_up(solver, outbox, &who, &password(i), deadline, None).await?;
                Ok((browser, node))
            }
        })
        .buffer_unordered(SIGN_UPS_AT_ONCE)
        .collect()
        .await;
    let mut setup = FarmSetup { accounts: count, ..FarmSetup::default() };
    let mut accounts = Vec::with_capacity(count);
    for result in results {
        match result {
            Ok(account) => accounts.push(account),
            Err(e) => *setup.failures.entry(format!("{} answered {}", e.step, e.status)).or_default() += 1,
        }
    }
    setup.signed_up = accounts.len();
    setup.seconds = started.elapsed().as_secs_f64();
    Farm { accounts, setup }
}

/// What one of an account's in-flight slots does through the `windows` (seconds since
/// the recorder's epoch): send `body`, record the answer, send again, until the window
/// ends or the run's request budget is spent.
pub async fn keep_in_flight(
    recorder: Arc<Recorder>,
    class: usize,
    account: Arc<Browser>,
    node: usize,
    body: Bytes,
    windows: Vec<(f64, f64)>,
    max_retry_after: Duration,
) {
    let epoch = recorder.epoch();
    for (start, end) in windows {
        tokio::time::sleep_until((epoch + Duration::from_secs_f64(start.max(0.0))).into()).await;
        let end_at = epoch + Duration::from_secs_f64(end);
        while Instant::now() < end_at {
            let Some(at) = recorder.begin(class) else { return };
            let (status, retry_after) = account.chat_answer(&body).await;
            recorder.record(class, node, at, status, Outcome::of_status(status));
            let pause = match (status, retry_after) {
                (0, _) => Some(AFTER_NO_ANSWER.min(max_retry_after)),
                (_, Some(wait)) => Some(wait.min(max_retry_after)),
                _ => None,
            };
            if let Some(pause) = pause {
                tokio::time::sleep_until((Instant::now() + pause).min(end_at).into()).await;
            }
        }
    }
}
