//! The AI guard on the `/v1` path: scores what clients send for prompt
//! extraction and jailbreak attempts, injects the operator's system prompt
//! with a per-request canary, scans replies (streamed or whole) for the prompt
//! leaking out, and keeps the strikes that throttle or suspend abusers.
//! The detection itself is `aiguard`'s; this module is the wiring.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aiguard::{Canary, Completion, Guard, InputAction, ProtectedPrompt, SseScanner};
use axum::body::Body;
use axum::http::{Response, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Gateway;

/// What happens to callers who collect strikes (input flagged, prompt leaked).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AbusePolicy {
    /// Strikes after which the caller's requests drop to the `anonymous` class.
    pub throttle_after: u32,
    /// Strikes after which the caller's `/v1` requests are refused (403).
    pub suspend_after: u32,
    /// Strikes are forgotten this long after the first one.
    pub window_s: u64,
    /// A strike when one caller sends the same prompt (ignoring case, spacing,
    /// punctuation and digits) this many times within `repeat_window_s` (0: off).
    pub repeated_prompts: u32,
    pub repeat_window_s: u64,
    /// A strike against a subnet (/24, /64) once this many accounts call from it (0: off).
    pub accounts_per_subnet: u32,
    /// A strike when an account's tokens in one minute exceed this multiple of
    /// its usual minute and `token_spike_floor` (0: off).
    pub token_spike_factor: f64,
    pub token_spike_floor: u64,
}

impl AbusePolicy {
    pub fn validate(&self, out: &mut Vec<crate::config::InvalidField>) {
        let mut bad = |field: &str, reason: String| {
            out.push(crate::config::InvalidField { field: format!("abuse.{field}"), reason })
        };
        if self.throttle_after == 0 || self.suspend_after == 0 {
            bad("throttle_after", "throttle_after and suspend_after must be at least 1".into());
        }
        if self.repeated_prompts as usize > crate::activity::RECENT_PROMPTS {
            bad("repeated_prompts", format!("at most {} (0 turns it off)", crate::activity::RECENT_PROMPTS));
        }
        if !(self.token_spike_factor >= 0.0 && self.token_spike_factor.is_finite()) {
            bad("token_spike_factor", "must be 0 (off) or a positive number".into());
        }
    }
}

impl Default for AbusePolicy {
    fn default() -> Self {
        AbusePolicy {
            throttle_after: 3,
            suspend_after: 10,
            window_s: 24 * 3600,
            repeated_prompts: 20,
            repeat_window_s: 600,
            accounts_per_subnet: 50,
            token_spike_factor: 10.0,
            token_spike_floor: 50_000,
        }
    }
}

/// Strikes per caller (an account, or the /24 or /64 of anonymous traffic).
/// Bounded: when full, entries past their window go first, then the fewest strikes.
pub struct Strikes {
    policy: AbusePolicy,
    entries: Mutex<HashMap<u64, Strike>>,
    capacity: usize,
}

#[derive(Clone, Copy, Debug)]
struct Strike {
    count: u32,
    /// Why the latest strike was given.
    reason: &'static str,
    first: Instant,
    last: Instant,
}

/// One caller with strikes, as the operator sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flag {
    /// An account id, or a subnet digest (≥ 2^63) for anonymous traffic.
    pub caller: u64,
    pub strikes: u32,
    pub last_strike_s_ago: u64,
    pub last_reason: &'static str,
    pub standing: Standing,
}

/// What the strikes say about a caller now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Good,
    Throttled,
    Suspended,
}

impl Strikes {
    pub fn new(policy: AbusePolicy, capacity: usize) -> Strikes {
        Strikes { policy, entries: Mutex::new(HashMap::new()), capacity }
    }

    pub fn add(&self, who: u64, reason: &'static str) -> u32 {
        let now = Instant::now();
        let window = Duration::from_secs(self.policy.window_s);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&who) {
            entries.retain(|_, s| now.duration_since(s.first) < window);
            if entries.len() >= self.capacity {
                if let Some(victim) = entries.iter().min_by_key(|(_, s)| s.count).map(|(k, _)| *k) {
                    entries.remove(&victim);
                }
            }
        }
        let strike = entries.entry(who).or_insert(Strike { count: 0, reason, first: now, last: now });
        if now.duration_since(strike.first) >= window {
            *strike = Strike { count: 0, reason, first: now, last: now };
        }
        strike.count += 1;
        strike.reason = reason;
        strike.last = now;
        strike.count
    }

    pub fn standing(&self, who: u64) -> Standing {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.standing_of(entries.get(&who))
    }

    fn standing_of(&self, strike: Option<&Strike>) -> Standing {
        let count = match strike {
            Some(s) if s.first.elapsed() < Duration::from_secs(self.policy.window_s) => s.count,
            _ => 0,
        };
        if count >= self.policy.suspend_after {
            Standing::Suspended
        } else if count >= self.policy.throttle_after {
            Standing::Throttled
        } else {
            Standing::Good
        }
    }

    /// Callers with strikes, most first (at most `limit`).
    pub fn list(&self, limit: usize) -> Vec<Flag> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Flag> = entries
            .iter()
            .map(|(caller, s)| Flag {
                caller: *caller,
                strikes: s.count,
                last_strike_s_ago: s.last.elapsed().as_secs(),
                last_reason: s.reason,
                standing: self.standing_of(Some(s)),
            })
            .collect();
        all.sort_by(|a, b| b.strikes.cmp(&a.strikes).then(a.caller.cmp(&b.caller)));
        all.truncate(limit);
        all
    }

    pub fn clear(&self, who: u64) -> bool {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&who).is_some()
    }
}

/// The guard and the strikes, one per gateway.
pub struct GuardState {
    pub guard: Guard,
    pub strikes: Strikes,
    pub activity: crate::activity::ActivityMonitor,
}

/// Who a request's audit entries name: its account, or "anonymous". Kept as
/// the id and spelled out only when an entry is written, which is rare.
#[derive(Clone, Copy, Debug)]
pub struct Actor(pub Option<i64>);

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(user_id) => write!(f, "user:{user_id}"),
            None => f.write_str("anonymous"),
        }
    }
}

/// What the input score decided for one request.
pub enum InputVerdict {
    Pass,
    Slow(Duration),
    Block(Vec<&'static str>),
}

/// The system prompt a request was given, for scanning its reply.
pub struct Protection {
    prompt: Arc<ProtectedPrompt>,
    canary: Option<Canary>,
}

impl GuardState {
    pub fn new(config: aiguard::GuardConfig, policy: AbusePolicy) -> Result<GuardState, aiguard::ConfigError> {
        Ok(GuardState {
            guard: Guard::new(config)?,
            strikes: Strikes::new(policy.clone(), 100_000),
            activity: crate::activity::ActivityMonitor::new(policy),
        })
    }

    /// Score the client's messages; audit and count a strike when they look
    /// like an extraction or jailbreak attempt.
    pub fn check_input(
        &self,
        gw: &Gateway,
        route: &str,
        text: &aiguard::RequestText,
        who: u64,
        actor: Actor,
    ) -> InputVerdict {
        let score = aiguard::score_texts(text);
        let input = &self.guard.config().input;
        let Some(action) = input.decide(route, score.score) else { return InputVerdict::Pass };
        let reasons: Vec<&'static str> = score.reasons.iter().map(|r| r.as_str()).collect();
        gw.metrics.guard_input(action);
        if action != InputAction::Log {
            self.strikes.add(who, "flagged_prompt");
        }
        let detail = serde_json::json!({"route": route, "score": score.score, "reasons": reasons, "action": format!("{action:?}").to_lowercase()});
        audit_later(gw, actor, "guard.input", if action == InputAction::Block { "refused" } else { "flagged" }, detail);
        match action {
            InputAction::Log | InputAction::Flag => InputVerdict::Pass,
            InputAction::Slow => InputVerdict::Slow(Duration::from_millis(input.slow_ms)),
            InputAction::Block => InputVerdict::Block(reasons),
        }
    }

    /// Feed the activity signals; each one raised is a strike (against the
    /// subnet for many accounts on it, else against the caller) and an audit entry.
    #[allow(clippy::too_many_arguments)]
    pub fn watch_activity(
        &self,
        gw: &Gateway,
        who: u64,
        subnet: u64,
        account: Option<i64>,
        text: &aiguard::RequestText,
        tokens: u32,
        actor: Actor,
    ) {
        let prompt = text.last_user_text().map(crate::activity::fingerprint);
        for signal in self.activity.observe(who, subnet, account, prompt, tokens, Instant::now()) {
            let target = if signal == crate::activity::Signal::ManyAccountsOnSubnet { subnet } else { who };
            self.strikes.add(target, signal.code());
            tracing::warn!(signal = signal.code(), "API activity flagged");
            audit_later(gw, actor, "guard.activity", "flagged", serde_json::json!({"signal": signal.code()}));
        }
    }

    /// Whether requests for `model` get a system prompt (and so need their
    /// body rewritten and their reply scanned).
    pub fn protects(&self, model: Option<&str>) -> bool {
        self.guard.prompt_for(model.unwrap_or("")).is_some()
    }

    /// Put the operator's system prompt (with a fresh canary) in front of the
    /// client's messages. `None` when no prompt is configured for the model.
    pub fn protect(&self, model: Option<&str>, body: &mut Value) -> Option<Protection> {
        let prompt = self.guard.prompt_for(model.unwrap_or(""))?.clone();
        let canary = if self.guard.config().leak.canary { Canary::generate().ok() } else { None };
        let text = match &canary {
            Some(c) => aiguard::inject(prompt.text(), c),
            None => prompt.text().to_owned(),
        };
        aiguard::inject_system_prompt(body, &text).ok()?;
        Some(Protection { prompt, canary })
    }
}

/// Write an audit entry without making the request wait for the store.
fn audit_later(gw: &Gateway, actor: Actor, action: &'static str, outcome: &'static str, detail: Value) {
    let accounts = gw.accounts.clone();
    let actor = actor.to_string();
    tokio::spawn(async move {
        accounts.audit(&actor, action, outcome, None, None, Some(detail)).await;
    });
}

/// The upstream's reply, scanned for the protected prompt.
pub async fn scan_reply(
    gw: Arc<Gateway>,
    response: Response<Body>,
    protection: Protection,
    streamed: bool,
    who: u64,
    actor: Actor,
) -> Response<Body> {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if streamed {
        let scanner = SseScanner::new(protection.prompt.clone(), protection.canary.as_ref());
        let body = ScannedStream { inner: body, scanner, done: false, gw, who, actor };
        return Response::from_parts(parts, Body::new(body));
    }
    // A whole reply is small next to what the body limit already allows in.
    let collected = match http_body_util::Limited::new(body, 16 << 20).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    match aiguard::scan_completion(&protection.prompt, protection.canary.as_ref(), &collected) {
        Ok(Completion::Unchanged) | Err(_) => Response::from_parts(parts, Body::from(collected)),
        Ok(Completion::Rewritten { body, leaks }) => {
            report_leaks(&gw, who, actor, &leaks);
            Response::from_parts(parts, Body::from(body))
        }
    }
}

fn report_leaks(gw: &Gateway, who: u64, actor: Actor, leaks: &[aiguard::Leak]) {
    if leaks.is_empty() {
        return;
    }
    gw.strikes().add(who, "prompt_leak");
    let kinds: Vec<String> = leaks.iter().map(|l| format!("{:?}", l.kind).to_lowercase()).collect();
    gw.metrics.guard_leaks(leaks.len() as u64);
    tracing::warn!(leaks = leaks.len(), kinds = ?kinds, "system prompt leak stopped");
    audit_later(gw, actor, "guard.leak", "stopped", serde_json::json!({"kinds": kinds}));
}

/// A streamed reply passed through the SSE leak scanner.
struct ScannedStream {
    inner: Body,
    scanner: SseScanner,
    done: bool,
    gw: Arc<Gateway>,
    who: u64,
    actor: Actor,
}

impl http_body::Body for ScannedStream {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let output = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.scanner.push(&data),
                    Err(_) => continue, // trailers: nothing to scan or forward
                },
                Poll::Ready(None) => {
                    this.done = true;
                    this.scanner.finish()
                }
            };
            let output = match output {
                Ok(output) => output,
                Err(e) => {
                    tracing::warn!(error = %e, "streamed reply could not be scanned; ended");
                    this.done = true;
                    let tail = this.scanner.abort();
                    return Poll::Ready(if tail.is_empty() { None } else { Some(Ok(Frame::data(tail))) });
                }
            };
            report_leaks(&this.gw, this.who, this.actor, &output.leaks);
            if output.terminated {
                // Dropping the upstream body (with its admission slot) stops generation.
                this.done = true;
                this.inner = Body::empty();
            }
            if !output.forward.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(output.forward))));
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_throttle_then_suspend_and_can_be_cleared() {
        let policy = AbusePolicy { throttle_after: 2, suspend_after: 3, window_s: 3600, ..AbusePolicy::default() };
        let strikes = Strikes::new(policy, 10);
        assert_eq!(strikes.standing(1), Standing::Good);
        strikes.add(1, "test");
        assert_eq!(strikes.standing(1), Standing::Good);
        strikes.add(1, "test");
        assert_eq!(strikes.standing(1), Standing::Throttled);
        strikes.add(1, "test");
        assert_eq!(strikes.standing(1), Standing::Suspended);
        let flags = strikes.list(10);
        assert_eq!(
            (flags[0].caller, flags[0].strikes, flags[0].last_reason, flags[0].standing),
            (1, 3, "test", Standing::Suspended)
        );
        assert_eq!(flags.len(), 1);
        assert!(strikes.clear(1));
        assert_eq!(strikes.standing(1), Standing::Good);
    }

    #[test]
    fn strikes_stay_bounded() {
        let strikes = Strikes::new(AbusePolicy::default(), 4);
        for who in 0..100 {
            strikes.add(who, "test");
        }
        assert!(strikes.list(1000).len() <= 4);
    }
}
