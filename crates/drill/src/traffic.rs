//! The drill's traffic: who sends what, from where, and what they do with the answer.
//!
//! Real users behave like browsers: they solve a proof-of-work challenge when asked,
//! wait in the waiting room, and honour `Retry-After`. Bots fire and forget, except the
//! proof-of-work solvers, which pay the price and keep their clearance. Each finished
//! attempt becomes one [`Event`] in the [`Recorder`]; every schedule is open loop,
//! bounded by the phase windows, the run's request budget and an in-flight cap.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::load::client_from;

/// What an attempt came to, as its sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It got what it came for (for slowloris: the connection was still held at the end).
    Ok,
    /// 429 or 503: limited, queued out, shed.
    Refused,
    /// 401, 403, 408, 410 and other 4xx: blocked, challenged, cut off.
    Denied,
    /// No answer: connection refused or reset, timeout, 5xx other than 503.
    Error,
    /// Never sent: the run's in-flight cap or request budget.
    Dropped,
}

impl Outcome {
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Ok,
            429 | 503 => Outcome::Refused,
            400..=499 => Outcome::Denied,
            _ => Outcome::Error,
        }
    }
}

/// One finished attempt.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub class: usize,
    /// Seconds since the first phase began (negative during setup).
    pub at: f64,
    pub latency: f64,
    /// The gateway node it was sent to; None when it was never sent.
    pub node: Option<usize>,
    /// The last HTTP status (0 when there was none).
    pub status: u16,
    pub outcome: Outcome,
}

/// Every event of a run, and live counts for the progress line.
pub struct Recorder {
    pub classes: Vec<String>,
    events: Mutex<Vec<Event>>,
    started: Vec<AtomicU64>,
    ok: Vec<AtomicU64>,
    epoch: Instant,
    budget: AtomicU64,
}

impl Recorder {
    pub fn new(classes: Vec<String>, epoch: Instant, budget: u64) -> Recorder {
        let n = classes.len();
        Recorder {
            classes,
            events: Mutex::new(Vec::new()),
            started: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ok: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch,
            budget: AtomicU64::new(budget),
        }
    }

    pub fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Takes one request from the run's budget; false once it is spent.
    fn spend(&self) -> bool {
        self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_ok()
    }

    /// A closed-loop sender (one that sends again when answered, not on a clock) starts
    /// an attempt of `class`: its start time, or None (recorded as dropped) once the run's
    /// request budget is spent.
    pub fn begin(&self, class: usize) -> Option<f64> {
        let at = self.now();
        self.started[class].fetch_add(1, Ordering::Relaxed);
        if self.spend() {
            Some(at)
        } else {
            self.push(class, None, at, 0, Outcome::Dropped);
            None
        }
    }

    /// An attempt of `class` started at `at` and sent to `node` is over.
    pub fn record(&self, class: usize, node: usize, at: f64, status: u16, outcome: Outcome) {
        self.push(class, Some(node), at, status, outcome);
    }

    fn push(&self, class: usize, node: Option<usize>, at: f64, status: u16, outcome: Outcome) {
        let latency = (self.now() - at).max(0.0);
        if outcome == Outcome::Ok {
            self.ok[class].fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut events) = self.events.lock() {
            events.push(Event { class, at, latency, node, status, outcome });
        }
    }

    /// (started, ok) for a class so far.
    pub fn counts(&self, class: usize) -> (u64, u64) {
        (self.started[class].load(Ordering::Relaxed), self.ok[class].load(Ordering::Relaxed))
    }

    pub fn take(&self) -> Vec<Event> {
        self.events.lock().map(|mut e| std::mem::take(&mut *e)).unwrap_or_default()
    }
}

/// One source address per index: `subnets` /24 networks under 127.`second`.0.0/16
/// (and the next second octets when there are more than 256), `sources` addresses
/// spread round-robin over them.
pub fn address(second: u8, subnets: usize, i: usize) -> IpAddr {
    let subnets = subnets.max(1);
    let net = i % subnets;
    let host = (i / subnets) % 250 + 1;
    IpAddr::V4(Ipv4Addr::new(127, second.wrapping_add((net / 256) as u8), (net % 256) as u8, host as u8))
}

/// A scripting client's headers: what bots that do not bother look like.
pub fn script_client(source: IpAddr, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .user_agent("python-requests/2.32.3")
        .pool_max_idle_per_host(4)
        .local_address(source)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Run `attempt(n)` open loop at `rate` per second inside each `window` (seconds since
/// the epoch), at most `max_in_flight` at once; an attempt that cannot start is recorded
/// as dropped.
pub async fn schedule<F, Fut>(
    recorder: Arc<Recorder>,
    class: usize,
    rate: f64,
    windows: Vec<(f64, f64)>,
    max_in_flight: usize,
    attempt: F,
) where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if rate <= 0.0 {
        return;
    }
    let gate = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let attempt = Arc::new(attempt);
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut n = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    for (start, end) in windows {
        let epoch = recorder.epoch();
        tokio::time::sleep_until((epoch + Duration::from_secs_f64(start.max(0.0))).into()).await;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end_at = epoch + Duration::from_secs_f64(end);
        loop {
            ticker.tick().await;
            if Instant::now() >= end_at {
                break;
            }
            let at = recorder.now();
            recorder.started[class].fetch_add(1, Ordering::Relaxed);
            let slot = gate.clone().try_acquire_owned();
            let (Ok(slot), true) = (slot, recorder.spend()) else {
                recorder.push(class, None, at, 0, Outcome::Dropped);
                continue;
            };
            let attempt = attempt.clone();
            let i = n;
            n += 1;
            tasks.spawn(async move {
                let _slot = slot;
                attempt(i).await;
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Verification codes as the operator's SMS/e-mail provider would deliver them: read
/// from the gateway's outbox file (one per node of a fleet), incrementally (bots fill
/// them too).
pub struct Outbox {
    paths: Vec<PathBuf>,
    /// How far each file has been read, and the codes found so far by user id.
    state: Mutex<(Vec<u64>, HashMap<i64, String>)>,
}

impl Outbox {
    pub fn new(paths: Vec<PathBuf>) -> Outbox {
        let read = vec![0; paths.len()];
        Outbox { paths, state: Mutex::new((read, HashMap::new())) }
    }

    fn code_now(&self, user: i64) -> Option<String> {
        let mut state = self.state.lock().ok()?;
        if let Some(code) = state.1.get(&user) {
            return Some(code.clone());
        }
        for (i, path) in self.paths.iter().enumerate() {
            let Ok(mut file) = std::fs::File::open(path) else { continue };
            if file.seek(SeekFrom::Start(state.0[i])).is_err() {
                continue;
            }
            let mut text = String::new();
            if file.read_to_string(&mut text).is_err() {
                continue;
            }
            // Only whole lines; a line being written is read next time.
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            state.0[i] += complete as u64;
            for line in text[..complete].lines() {
                let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
                let (Some(id), Some(text)) = (entry["user_id"].as_i64(), entry["text"].as_str()) else { continue };
                let code: String = text.chars().filter(char::is_ascii_digit).take(6).collect();
                if code.len() == 6 {
                    state.1.insert(id, code);
                }
            }
        }
        state.1.get(&user).cloned()
    }

    /// The code for `user`, waiting briefly for the provider to write it.
    pub async fn code(&self, user: i64) -> Option<String> {
        for _ in 0..100 {
            if let Some(code) = self.code_now(user) {
                return Some(code);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// Proof-of-work solving, on blocking threads, a bounded number at once: the drill
/// shares the machine with the gateway it measures.
pub struct Solver {
    gate: Semaphore,
    pub solved: AtomicUsize,
}

impl Solver {
    pub fn new(threads: usize) -> Solver {
        Solver { gate: Semaphore::new(threads.max(1)), solved: AtomicUsize::new(0) }
    }

    /// A nonce, or None when no solver thread is free before `deadline`.
    async fn solve(&self, seed: String, difficulty: u8, deadline: Instant) -> Option<u64> {
        let _permit = tokio::time::timeout_at(deadline.into(), self.gate.acquire()).await.ok()?.ok()?;
        let nonce = tokio::task::spawn_blocking(move || shield::pow::solve_range(&seed, difficulty, 0, u64::MAX / 2))
            .await
            .ok()?;
        self.solved.fetch_add(1, Ordering::Relaxed);
        nonce
    }
}

/// A user agent that behaves as a browser on the gateway's pages would.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    clearance: Mutex<Option<String>>,
    session: Mutex<Option<String>>,
    /// One challenge solved at a time per browser: requests that meet a challenge
    /// while another is being solved wait for that clearance instead of solving again.
    clearing: tokio::sync::Mutex<()>,
}

/// The CSRF token the drill's browsers hold: any value works, as long as the cookie and
/// the header agree.
const CSRF: &str = "drill-csrf-token";

/// A step of a user's journey that did not succeed: its last status (0 when there
/// was no answer) and what was said.
#[derive(Debug, thiserror::Error)]
#[error("{step} answered {status}: {detail}")]
pub struct StepFailed {
    pub step: &'static str,
    pub status: u16,
    pub detail: String,
}

impl StepFailed {
    fn of(step: &'static str, answer: &Answer) -> StepFailed {
        StepFailed { step, status: answer.status, detail: answer.body.to_string() }
    }
}

/// What [`Browser::call`] ends with.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub session: Option<String>,
}

impl Browser {
    pub fn new(source: IpAddr, base: &str, timeout: Duration) -> Browser {
        Browser {
            http: client_from(Some(source), timeout),
            base: base.to_owned(),
            clearance: Mutex::new(None),
            session: Mutex::new(None),
            clearing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn session(&self) -> Option<String> {
        self.session.lock().ok().and_then(|s| s.clone())
    }

    /// `method path` with a JSON body, getting past challenges, proofs asked before a
    /// text, waiting-room tickets and `Retry-After` until `deadline`; the last answer.
    pub async fn call(
        &self,
        solver: &Solver,
        method: &str,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Answer {
        let mut pass: Option<String> = None;
        // Sent with every repeat of this request once solved (it may meet the waiting
        // room before it reaches the account service again); solved anew when asked again.
        let mut proof: Option<String> = None;
        let (mut solves, mut proofs) = (0, 0);
        loop {
            let (mut request, sent) = self.request(method, path, body);
            if let Some(p) = pass.take() {
                request = request.header("x-palisade-pass", p);
            }
            if let Some(p) = &proof {
                request = request.header(PROOF_HEADER, p.as_str());
            }
            let Ok(response) = request.send().await else {
                return Answer { status: 0, body: Value::Null, session: None };
            };
            let status = response.status().as_u16();
            let retry_after =
                response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            let session = response
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|v| v.starts_with("palisade_session="))
                .and_then(|v| v.split(';').next())
                .map(str::to_owned);
            if let Some(s) = &session
                && let Ok(mut mine) = self.session.lock()
            {
                *mine = Some(s.clone());
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let challenge = &body["challenge"];
            if status == 403 && asks_proof(&body) {
                if proofs < 3 {
                    proofs += 1;
                    proof = prove(solver, challenge, deadline).await;
                    if proof.is_some() {
                        continue;
                    }
                }
            } else if status == 403 && challenge.is_object() && solves < 3 {
                solves += 1;
                if self.clear(solver, challenge, sent.as_deref(), deadline).await {
                    continue;
                }
            } else if status == 202 && body["status"] == "waiting" {
                if let Some(p) = self.wait_for_pass(solver, &body, deadline).await {
                    pass = Some(p);
                    continue;
                }
            } else if matches!(status, 429 | 503) {
                let wait = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 60));
                if Instant::now() + wait < deadline {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Answer { status, body, session };
        }
    }

    /// `method path` with this browser's clearance and session, and the clearance sent.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (reqwest::RequestBuilder, Option<String>) {
        let url = format!("{}{path}", self.base);
        let mut request = if method == "GET" { self.http.get(&url) } else { self.http.post(&url) };
        if let Some(body) = body {
            request = request.json(body);
        }
        let sent = self.clearance();
        if let Some(c) = &sent {
            request = request.header("x-palisade-clearance", c.as_str());
        }
        if let Some(s) = self.session() {
            // The page's CSRF cookie goes with the session, and a form would echo it:
            // the gateway checks the two match (double submit) on account changes.
            request = request.header("cookie", format!("{s}; palisade_csrf={CSRF}"));
            if method != "GET" {
                request = request.header("x-csrf-token", CSRF);
            }
        }
        (request, sent)
    }

    /// A bot's way: one POST, paying a challenge when asked (the clearance is kept for
    /// the next ones), but never waiting in line. With `proves`, it also solves the proof
    /// asked before a text (`sms_proof_required`). The status.
    pub async fn call_once_cleared(
        &self,
        solver: &Solver,
        path: &str,
        body: &Value,
        proves: bool,
        deadline: Instant,
    ) -> u16 {
        let mut proof: Option<String> = None;
        for _ in 0..3 {
            let (mut request, sent) = self.request("POST", path, Some(body));
            if let Some(p) = &proof {
                request = request.header(PROOF_HEADER, p.as_str());
            }
            let Ok(response) = request.send().await else { return 0 };
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status != 403 || !answer["challenge"].is_object() || Instant::now() >= deadline {
                return status;
            }
            if asks_proof(&answer) {
                proof = if proves { prove(solver, &answer["challenge"], deadline).await } else { None };
                if proof.is_none() {
                    return status;
                }
            } else if !self.clear(solver, &answer["challenge"], sent.as_deref(), deadline).await {
                return status;
            }
        }
        403
    }

    fn clearance(&self) -> Option<String> {
        self.clearance.lock().ok().and_then(|c| c.clone())
    }

    /// Solves `challenge` unless another request of this browser got a clearance other
    /// than the `sent` one meanwhile. True when there is a new clearance to try.
    async fn clear(&self, solver: &Solver, challenge: &Value, sent: Option<&str>, deadline: Instant) -> bool {
        let Ok(_one_at_a_time) = tokio::time::timeout_at(deadline.into(), self.clearing.lock()).await else {
            return false;
        };
        if self.clearance().is_some_and(|c| Some(c.as_str()) != sent) {
            return true;
        }
        let (Some(token), Some(seed), Some(difficulty)) =
            (challenge["token"].as_str(), challenge["seed"].as_str(), challenge["difficulty"].as_u64())
        else {
            return false;
        };
        let Some(nonce) = solver.solve(seed.to_owned(), difficulty.min(32) as u8, deadline).await else {
            return false;
        };
        let answer = self
            .http
            .post(format!("{}/challenge", self.base))
            .json(&json!({"token": token, "nonce": nonce.to_string()}))
            .send()
            .await;
        let Ok(answer) = answer else { return false };
        let Ok(body) = answer.json::<Value>().await else { return false };
        match body["clearance"].as_str() {
            Some(c) => {
                if let Ok(mut mine) = self.clearance.lock() {
                    *mine = Some(c.to_owned());
                }
                true
            }
            None => false,
        }
    }

    async fn wait_for_pass(&self, solver: &Solver, ticket: &Value, deadline: Instant) -> Option<String> {
        let id = ticket["ticket"].as_str()?.to_owned();
        let mut poll_after = ticket["poll_after_s"].as_u64().unwrap_or(1);
        loop {
            let wait = Duration::from_secs(poll_after.clamp(1, 30));
            if Instant::now() + wait >= deadline {
                return None;
            }
            tokio::time::sleep(wait).await;
            let path = format!("/auth/register/ticket?ticket={id}");
            let answer = Box::pin(self.call(solver, "GET", &path, None, deadline)).await;
            match answer.body["status"].as_str() {
                Some("admitted") => return answer.body["pass"].as_str().map(str::to_owned),
                Some("waiting") => poll_after = answer.body["poll_after_s"].as_u64().unwrap_or(poll_after),
                _ => return None,
            }
        }
    }

    /// Register, verify with the code from the outbox, log in: the account id and the
    /// session cookie. Each step passed is counted in `counts` when given.
    pub async fn sign_up(
        &self,
        solver: &Solver,
        outbox: &Outbox,
        who: &Identifier,
        password: &str,
        deadline: Instant,
        counts: Option<&SignUpCounts>,
    ) -> Result<(i64, String), StepFailed> {
        let count = |step: fn(&SignUpCounts) -> &AtomicU64| {
            if let Some(c) = counts {
                step(c).fetch_add(1, Ordering::Relaxed);
            }
        };
        let r = self.call(solver, "POST", "/auth/register", Some(&who.with_password(password)), deadline).await;
        let user = r.body["user_id"].as_i64().ok_or_else(|| StepFailed::of("register", &r))?;
        count(|c| &c.registered);
        let code = outbox.code(user).await.ok_or(StepFailed {
            step: "verify",
            status: 0,
            detail: "no verification code in the outbox".into(),
        })?;
        count(|c| &c.got_code);
        let verify = json!({"user_id": user, "code": code});
        let r = self.call(solver, "POST", "/auth/verify", Some(&verify), deadline).await;
        if !(200..300).contains(&r.status) {
            return Err(StepFailed::of("verify", &r));
        }
        count(|c| &c.verified);
        let session = self.log_in(solver, who, password, deadline).await?;
        Ok((user, session))
    }

    pub async fn log_in(
        &self,
        solver: &Solver,
        who: &Identifier,
        password: &str,
        deadline: Instant,
    ) -> Result<String, StepFailed> {
        let login = who.with_password(password);
        let r = self.call(solver, "POST", "/auth/login", Some(&login), deadline).await;
        match &r.session {
            Some(s) if (200..300).contains(&r.status) => Ok(s.clone()),
            _ => Err(StepFailed::of("login", &r)),
        }
    }

    /// One chat request with the session; the status once the whole reply arrived.
    pub async fn chat(&self, body: &Bytes) -> u16 {
        self.chat_answer(body).await.0
    }

    /// One chat request with the session: the status once the whole reply arrived, and
    /// the `Retry-After` it carried.
    pub async fn chat_answer(&self, body: &Bytes) -> (u16, Option<Duration>) {
        let mut request = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(s) = self.session() {
            request = request.header("cookie", s);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                if response.bytes().await.is_ok() { (status, retry_after) } else { (0, None) }
            }
            Err(_) => (0, None),
        }
    }
}

/// The header a request repeated with a proof of work carries: the challenge's token,
/// one space, the nonce in decimal.
pub const PROOF_HEADER: &str = "x-palisade-proof";

/// Whether a 403's body asks for a proof of work before a text goes out. That challenge
/// is answered by repeating the request with [`PROOF_HEADER`], never at `/challenge` (a
/// clearance is not a proof).
fn asks_proof(body: &Value) -> bool {
    body["error"]["code"] == "sms_proof_required" && body["challenge"].is_object()
}

/// Solves a proof-of-work `challenge`: the [`PROOF_HEADER`] value, or None when it is
/// malformed or no solver thread was free before `deadline`.
async fn prove(solver: &Solver, challenge: &Value, deadline: Instant) -> Option<String> {
    let token = challenge["token"].as_str()?;
    let seed = challenge["seed"].as_str()?;
    let difficulty = challenge["difficulty"].as_u64()?;
    let nonce = solver.solve(seed.to_owned(), difficulty.min(32) as u8, deadline).await?;
    Some(format!("{token} {nonce}"))
}

/// Who signs up or logs in: an e-mail address or a phone number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identifier {
    Email(String),
    Phone(String),
}

impl Identifier {
    /// The body of a sign-up or login.
    fn with_password(&self, password: &str) -> Value {
        match self {
            Identifier::Email(e) => json!({"email": e, "password": password}),
            Identifier::Phone(p) => json!({"phone": p, "password": password}),
        }
    }
}

/// How far sign-ups got: counted as each step passes.
#[derive(Debug, Default)]
pub struct SignUpCounts {
    /// Journeys begun.
    pub started: AtomicU64,
    /// Registrations answered with an account id (a code was sent).
    pub registered: AtomicU64,
    /// Codes found in the outbox: the code reached its owner.
    pub got_code: AtomicU64,
    /// Codes entered and accepted: a completed sign-up.
    pub verified: AtomicU64,
}

/// A copy of [`SignUpCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignUpTally {
    pub started: u64,
    pub registered: u64,
    pub got_code: u64,
    pub verified: u64,
}

impl SignUpCounts {
    pub fn tally(&self) -> SignUpTally {
        SignUpTally {
            started: self.started.load(Ordering::Relaxed),
            registered: self.registered.load(Ordering::Relaxed),
            got_code: self.got_code.load(Ordering::Relaxed),
            verified: self.verified.load(Ordering::Relaxed),
        }
    }
}

/// A chat request body, labelled with `user` so the simulated model can tell who got
/// its capacity.
pub fn chat_body(user: &str, max_tokens: u32, question: &str) -> Bytes {
    Bytes::from(
        json!({"model": "palisade-sim", "max_tokens": max_tokens, "user": user,
               "messages": [{"role": "user", "content": question}]})
        .to_string(),
    )
}

/// A password no breach list has: what members and newcomers use.
pub fn member_password(i: usize) -> String {
    format!("Drill member {i} keeps a long pass 2026!")
}

pub fn member_email(i: usize) -> String {
    format!("member{i}@drill.example")
}

/// A cheap, seeded sequence for made-up names and keys (no crypto needed: these only
/// have to differ from each other).
pub struct Noise(AtomicU64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(AtomicU64::new(seed))
    }

    pub fn next(&self) -> u64 {
        let mut z = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A slowloris connection from `source`: a request head sent a header line at a time,
/// every `every`, until the server closes it or `until`. Ok when the connection was
/// still held at `until`; Denied when the server cut it (with the 408 it may send).
pub async fn slowloris(source: IpAddr, target: SocketAddr, every: Duration, until: Instant) -> (u16, Outcome) {
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let Ok(socket) = socket else { return (0, Outcome::Error) };
    if socket.bind(SocketAddr::new(source, 0)).is_err() {
        return (0, Outcome::Error);
    }
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(5), socket.connect(target)).await else {
        return (0, Outcome::Error);
    };
    let head = "POST /auth/login HTTP/1.1\r\nHost: drill\r\nUser-Agent: Mozilla/5.0\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return (0, Outcome::Denied);
    }
    let mut buf = [0u8; 512];
    let mut n = 0u32;
    loop {
        let now = Instant::now();
        if now >= until {
            return (0, Outcome::Ok);
        }
        let next = (now + every).min(until);
        tokio::select! {
            read = stream.read(&mut buf) => {
                // Closed, reset or answered: the server let go of us.
                let status = match read {
                    Ok(len) if len > 12 && buf.starts_with(b"HTTP/1.") => {
                        std::str::from_utf8(&buf[9..12]).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
                    }
                    _ => 0,
                };
                return (status, Outcome::Denied);
            }
            _ = tokio::time::sleep_until(next.into()) => {
                n += 1;
                if stream.write_all(format!("X-Drill-{n}: {n}\r\n").as_bytes()).await.is_err() {
                    return (0, Outcome::Denied);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_spread_over_subnets_and_stay_on_loopback() {
        let a = address(20, 100, 0);
        let b = address(20, 100, 1);
        let c = address(20, 100, 100);
        assert_eq!(a, IpAddr::V4(Ipv4Addr::new(127, 20, 0, 1)));
        assert_eq!(b, IpAddr::V4(Ipv4Addr::new(127, 20, 1, 1)));
        assert_eq!(c, IpAddr::V4(Ipv4Addr::new(127, 20, 0, 2)));
        let many: std::collections::HashSet<IpAddr> = (0..2000).map(|i| address(20, 100, i)).collect();
        assert_eq!(many.len(), 2000);
        assert!(many.iter().all(IpAddr::is_loopback));
        assert_eq!(address(30, 300, 299), IpAddr::V4(Ipv4Addr::new(127, 31, 43, 1)));
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(Outcome::of_status(201), Outcome::Ok);
        assert_eq!(Outcome::of_status(429), Outcome::Refused);
        assert_eq!(Outcome::of_status(503), Outcome::Refused);
        assert_eq!(Outcome::of_status(403), Outcome::Denied);
        assert_eq!(Outcome::of_status(502), Outcome::Error);
        assert_eq!(Outcome::of_status(0), Outcome::Error);
    }

    #[tokio::test]
    async fn the_outbox_is_read_incrementally_and_ignores_partial_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("outbox.jsonl");
        std::fs::write(&path, "{\"user_id\":1,\"text\":\"Your code is 123456\"}\n{\"user_id\":2,\"te").expect("write");
        // A second node's outbox, not written yet.
        let other = dir.path().join("node-2-outbox.jsonl");
        let outbox = Outbox::new(vec![path.clone(), other.clone()]);
        assert_eq!(outbox.code_now(1).as_deref(), Some("123456"));
        assert_eq!(outbox.code_now(2), None);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        std::io::Write::write_all(&mut f, b"xt\":\"code 654321\"}\n").expect("append");
        assert_eq!(outbox.code(2).await.as_deref(), Some("654321"));
        std::fs::write(&other, "{\"user_id\":3,\"text\":\"Your code is 111222\"}\n").expect("write");
        assert_eq!(outbox.code_now(3).as_deref(), Some("111222"), "codes from every node's outbox");
    }

    #[tokio::test]
    async fn a_proof_asked_before_a_text_is_solved_and_sent_with_the_repeated_request() {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::post;
        // A sign-up that texts only with a valid proof for its challenge, and counts
        // what reaches `/challenge` (where this proof must never go).
        let to_challenge = Arc::new(AtomicUsize::new(0));
        let counted = to_challenge.clone();
        let app = axum::Router::new()
            .route(
                "/auth/register",
                post(|headers: HeaderMap| async move {
                    let proof = headers.get(PROOF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                    let proven = proof.split_once(' ').is_some_and(|(token, nonce)| {
                        token == "tok-1"
                            && nonce.parse::<u64>().is_ok_and(|n| {
                                shield::pow::leading_zero_bits(&shield::pow::work_hash("seed-1", n)) >= 8
                            })
                    });
                    if proven {
                        (StatusCode::CREATED, axum::Json(json!({"user_id": 7})))
                    } else {
                        let challenge = json!({"token": "tok-1", "seed": "seed-1", "difficulty": 8});
                        let error = json!({"code": "sms_proof_required", "message": "prove it"});
                        (StatusCode::FORBIDDEN, axum::Json(json!({"error": error, "challenge": challenge})))
                    }
                }),
            )
            .route(
                "/challenge",
                post(move || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async { StatusCode::BAD_REQUEST }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let browser = Browser::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &base, Duration::from_secs(5));
        let solver = Solver::new(1);
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = json!({"phone": "+447400100000", "password": "a long enough password"});

        let answer = browser.call(&solver, "POST", "/auth/register", Some(&body), deadline).await;
        assert_eq!((answer.status, answer.body["user_id"].as_i64()), (201, Some(7)), "{}", answer.body);
        assert_eq!(solver.solved.load(Ordering::Relaxed), 1);
        // Bots stop at the proof unless told to solve it.
        assert_eq!(browser.call_once_cleared(&solver, "/auth/register", &body, false, deadline).await, 403);
        assert_eq!(browser.call_once_cleared(&solver, "/auth/register", &body, true, deadline).await, 201);
        assert_eq!(to_challenge.load(Ordering::Relaxed), 0, "a proof is not a clearance");
        server.abort();
    }

    #[tokio::test]
    async fn the_schedule_is_bounded_by_its_window_and_the_budget() {
        let recorder = Arc::new(Recorder::new(vec!["x".into()], Instant::now(), 5));
        let r = recorder.clone();
        schedule(recorder.clone(), 0, 200.0, vec![(0.0, 0.2)], 100, move |_| {
            let r = r.clone();
            async move { r.record(0, 0, r.now(), 200, Outcome::Ok) }
        })
        .await;
        let events = recorder.take();
        let ok = events.iter().filter(|e| e.outcome == Outcome::Ok).count();
        let dropped = events.iter().filter(|e| e.outcome == Outcome::Dropped).count();
        assert_eq!(ok, 5, "the budget of 5 caps what is sent");
        assert!(dropped > 0 && ok + dropped <= 41, "{ok} + {dropped}");
    }
}
