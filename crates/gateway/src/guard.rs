//! The AI guard on the `/v1` path: scores what clients send for prompt
//! extraction and jailbreak attempts, injects the operator's system prompt
//! with a per-request canary, scans replies (streamed or whole) for the prompt
//! leaking out, and gives the strikes that throttle or suspend abusers.
//! The detection itself is `aiguard`'s; this module is the wiring.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aiguard::{Canary, Completion, Guard, InputAction, ProtectedPrompt, SemanticScore, SseScanner};
use axum::body::Body;
use axum::http::{Response, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::Value;
use shield::Key;

use crate::abuse::activity::{ActivityMonitor, Signal};
use crate::abuse::{AbusePolicy, Strikes};
use crate::audit::{Actor, AuditLog, Event};
use crate::metrics::Metrics;

/// The guard, the strikes it gives, and where it reports: one per gateway.
pub struct AiGuard {
    guard: Guard,
    /// Bounds concurrent embeddings of the semantic layer to the CPU count: each is
    /// milliseconds of CPU, so more at once only queues inside the blocking pool and
    /// starves the runtime threads of cores.
    semantic_slots: Arc<tokio::sync::Semaphore>,
    strikes: Arc<Strikes>,
    activity: ActivityMonitor,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
}

/// Who a request is, as the guard counts and reports it.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The account, or the subnet digest of anonymous traffic.
    pub who: u64,
    pub actor: Actor,
}

impl Caller {
    /// The audit sample key: one entry per caller and minute.
    fn source(self) -> Key {
        Key::custom(7, u128::from(self.who))
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

impl AiGuard {
    /// `in_fleet`: the strikes are counted for the fleet (see `fleet_sync`).
    pub fn new(
        config: aiguard::GuardConfig,
        policy: AbusePolicy,
        metrics: Arc<Metrics>,
        audit: Arc<AuditLog>,
        in_fleet: bool,
    ) -> Result<AiGuard, aiguard::ConfigError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let strikes = Strikes::new(policy.clone(), 100_000);
        Ok(AiGuard {
            guard: Guard::new(config)?,
            semantic_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            strikes: Arc::new(if in_fleet { strikes.shared() } else { strikes }),
            activity: ActivityMonitor::new(policy),
            metrics,
            audit,
        })
    }

    /// The strikes this guard gives (also read by admission and the operator).
    pub fn strikes(&self) -> &Arc<Strikes> {
        &self.strikes
    }

    /// The semantic layer's verdict on the request's last user turn, when a model is
    /// configured (`None` at once otherwise). The embedding runs on the blocking pool,
    /// at most one per core at a time. A failure is logged and scores nothing: the
    /// patterns still run, and a broken model must not refuse every request.
    pub async fn semantic_score(&self, text: &aiguard::RequestText<'_>) -> Option<SemanticScore> {
        let index = self.guard.semantic()?.clone();
        let query = aiguard::query_text(text)?;
        let _slot = self.semantic_slots.acquire().await.ok()?;
        match tokio::task::spawn_blocking(move || index.score(&query)).await {
            Ok(Ok(score)) => Some(score),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "semantic layer failed; patterns only for this request");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "semantic layer task failed; patterns only for this request");
                None
            }
        }
    }

    /// Score the client's messages (patterns and the n-gram classifier, plus the semantic
    /// layer's verdict when configured); audit and count a strike when they look like an extraction or
    /// jailbreak attempt.
    pub fn check_input(
        &self,
        route: &str,
        text: &aiguard::RequestText,
        semantic: Option<&SemanticScore>,
        caller: Caller,
        now: Instant,
    ) -> InputVerdict {
        let mut score = self.guard.score_input(text);
        let input = &self.guard.config().input;
        if let Some(semantic) = semantic {
            score.add_semantic(semantic, input.threshold);
        }
        let Some(action) = input.decide(route, score.score) else { return InputVerdict::Pass };
        let reasons: Vec<&'static str> = score.reasons.iter().map(|r| r.as_str()).collect();
        self.metrics.guard_input(action);
        if action != InputAction::Log {
            self.strikes.add(caller.who, "flagged_prompt", now);
        }
        let outcome = if action == InputAction::Block { "refused" } else { "flagged" };
        self.audit.sample(caller.source(), crate::clock::now(), || {
            let detail = serde_json::json!({"route": route, "score": score.score, "reasons": reasons,
                                            "action": format!("{action:?}").to_lowercase()});
            Event::new(caller.actor.to_string(), "guard.input", outcome).detail(detail)
        });
        match action {
            InputAction::Log | InputAction::Flag => InputVerdict::Pass,
            InputAction::Slow => InputVerdict::Slow(Duration::from_millis(input.slow_ms)),
            InputAction::Block => InputVerdict::Block(reasons),
        }
    }

    /// Feed the activity signals; each one raised is a strike (against the
    /// subnet for many accounts on it, else against the caller) and an audit entry.
    /// `prompt`: the fingerprint of the last user turn (`activity::fingerprint`).
    pub fn watch_activity(&self, caller: Caller, subnet: u64, prompt: Option<u64>, tokens: u32, now: Instant) {
        let account = caller.actor.0;
        for signal in self.activity.observe(caller.who, subnet, account, prompt, tokens, now) {
            let target = if signal == Signal::ManyAccountsOnSubnet { subnet } else { caller.who };
            self.strikes.add(target, signal.code(), now);
            tracing::warn!(signal = signal.code(), "API activity flagged");
            self.audit.sample(caller.source(), crate::clock::now(), || {
                Event::new(caller.actor.to_string(), "guard.activity", "flagged")
                    .detail(serde_json::json!({"signal": signal.code()}))
            });
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

/// The upstream's reply, scanned for the protected prompt.
pub async fn scan_reply(
    guard: Arc<AiGuard>,
    response: Response<Body>,
    protection: Protection,
    streamed: bool,
    caller: Caller,
) -> Response<Body> {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if streamed {
        let scanner = SseScanner::new(protection.prompt.clone(), protection.canary.as_ref());
        let body = ScannedStream { inner: body, scanner, done: false, guard, caller };
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
            guard.report_leaks(caller, &leaks);
            Response::from_parts(parts, Body::from(body))
        }
    }
}

impl AiGuard {
    fn report_leaks(&self, caller: Caller, leaks: &[aiguard::Leak]) {
        if leaks.is_empty() {
            return;
        }
        self.strikes.add(caller.who, "prompt_leak", Instant::now());
        let kinds: Vec<String> = leaks.iter().map(|l| format!("{:?}", l.kind).to_lowercase()).collect();
        self.metrics.guard_leaks(leaks.len() as u64);
        tracing::warn!(leaks = leaks.len(), kinds = ?kinds, "system prompt leak stopped");
        self.audit.sample(caller.source(), crate::clock::now(), || {
            Event::new(caller.actor.to_string(), "guard.leak", "stopped").detail(serde_json::json!({"kinds": kinds}))
        });
    }
}

/// A streamed reply passed through the SSE leak scanner.
struct ScannedStream {
    inner: Body,
    scanner: SseScanner,
    done: bool,
    guard: Arc<AiGuard>,
    caller: Caller,
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
            this.guard.report_leaks(this.caller, &output.leaks);
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
