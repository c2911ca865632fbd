//! A simulated OpenAI-compatible model server.
//!
//! It behaves like a saturated vLLM or llama.cpp server would: at most
//! `capacity` requests generate at once, a bounded number wait in a queue, and
//! a request that finds the queue full, or waits longer than the queue timeout,
//! gets `503` with an OpenAI-style error. Replies are deterministic for a given
//! seed and prompt, and timing follows a time-to-first-token and a token rate.
//!
//! With `echo_system_prompt` the model "leaks": its reply is the system prompt,
//! split across many stream chunks, which is what the leak guard is tested on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the simulated model behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Requests generated at the same time.
    pub capacity: usize,
    /// Requests allowed to wait for a free slot; more are refused at once.
    pub queue: usize,
    /// How long a queued request waits before it is refused with 503.
    pub queue_timeout: Duration,
    /// Time to first token.
    pub ttft: Duration,
    /// Generation speed; 0 means no delay between tokens.
    pub tokens_per_s: u32,
    /// Seed for the deterministic replies.
    pub seed: u64,
    /// Reply with the system prompt instead of generated text.
    pub echo_system_prompt: bool,
    /// Completion length when the request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Model id reported by `/v1/models` and in replies.
    pub model: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            capacity: 64,
            queue: 64,
            queue_timeout: Duration::from_secs(5),
            ttft: Duration::from_millis(50),
            tokens_per_s: 200,
            seed: 42,
            echo_system_prompt: false,
            default_max_tokens: 16,
            model: "palisade-sim".to_owned(),
        }
    }
}

/// Upper bound on generated tokens, whatever the request asks for.
const MAX_TOKENS: u32 = 4096;

/// Live counters, readable by tests through [`SimStats::snapshot`] or `GET /sim/stats`.
#[derive(Debug, Default)]
pub struct SimStats {
    in_flight: AtomicU64,
    queued: AtomicU64,
    served: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    /// Generation time by the request's `user` field: the drill labels each traffic
    /// class there to learn who got the model's capacity.
    usage: Mutex<BTreeMap<String, Usage>>,
}

/// What one `user` label got from the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Requests that held a generation slot (finished or cancelled).
    pub requests: u64,
    /// Seconds of generation slots held: capacity × time is what there is to share.
    pub slot_seconds: f64,
}

/// Distinct `user` labels tallied; later ones count under [`OTHER_USERS`], so a client
/// cannot grow the map.
const MAX_USAGE_LABELS: usize = 64;
/// The label for requests without a `user` field, or past [`MAX_USAGE_LABELS`].
pub const OTHER_USERS: &str = "(other)";

/// A copy of [`SimStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimSnapshot {
    /// Requests holding a generation slot now.
    pub in_flight: u64,
    /// Requests waiting for a slot now.
    pub queued: u64,
    /// Requests answered completely.
    pub served: u64,
    /// Requests refused with 503 because the server was saturated.
    pub rejected: u64,
    /// Requests whose client went away before the reply was complete.
    pub cancelled: u64,
}

impl SimStats {
    pub fn snapshot(&self) -> SimSnapshot {
        SimSnapshot {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
        }
    }

    /// Generation time so far, by `user` label.
    pub fn usage(&self) -> BTreeMap<String, Usage> {
        self.usage.lock().map(|u| u.clone()).unwrap_or_default()
    }

    fn charge(&self, user: Option<&str>, held: Duration) {
        let Ok(mut usage) = self.usage.lock() else { return };
        let known = user.filter(|u| usage.contains_key(*u) || usage.len() < MAX_USAGE_LABELS);
        let entry = usage.entry(known.unwrap_or(OTHER_USERS).to_owned()).or_default();
        entry.requests += 1;
        entry.slot_seconds += held.as_secs_f64();
    }
}

struct Sim {
    cfg: SimConfig,
    slots: Arc<Semaphore>,
    stats: Arc<SimStats>,
    ids: AtomicU64,
}

/// A held generation slot. Dropping it before [`Slot::finish`] counts a cancellation,
/// which is how a client disconnect mid-stream becomes visible.
struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<SimStats>,
    finished: bool,
    user: Option<String>,
    since: Instant,
}

impl Slot {
    fn finish(mut self) {
        self.finished = true;
        self.stats.served.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats.charge(self.user.as_deref(), self.since.elapsed());
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Sim {
    async fn admit(&self, user: Option<String>) -> Result<Slot, Response> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.wait_in_queue().await?,
        };
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { _permit: permit, stats: self.stats.clone(), finished: false, user, since: Instant::now() })
    }

    async fn wait_in_queue(&self) -> Result<OwnedSemaphorePermit, Response> {
        let waiting = self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let permit = if waiting as usize >= self.cfg.queue {
            None
        } else {
            tokio::time::timeout(self.cfg.queue_timeout, self.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        };
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        permit.ok_or_else(|| {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "overloaded",
                "the model is at capacity, retry later",
            )
        })
    }

    fn token_delay(&self) -> Duration {
        match self.cfg.tokens_per_s {
            0 => Duration::ZERO,
            rate => Duration::from_secs(1) / rate,
        }
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-sim-{}", self.ids.fetch_add(1, Ordering::Relaxed))
    }

    /// The reply's pieces (one per token) for this prompt.
    fn reply(&self, system: Option<&str>, prompt: &str, max_tokens: Option<u32>) -> Vec<String> {
        if self.cfg.echo_system_prompt
            && let Some(system) = system
        {
            return chunk_text(system, 4);
        }
        let n = max_tokens.unwrap_or(self.cfg.default_max_tokens).clamp(1, MAX_TOKENS);
        let mut rng = SplitMix64(self.cfg.seed ^ fnv1a(prompt.as_bytes()));
        (0..n)
            .map(|i| {
                let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
                if i == 0 { word.to_owned() } else { format!(" {word}") }
            })
            .collect()
    }
}

/// Build the simulated server's router and a handle on its counters.
pub fn router(cfg: SimConfig) -> (Router, Arc<SimStats>) {
    let stats = Arc::new(SimStats::default());
    let sim = Arc::new(Sim {
        slots: Arc::new(Semaphore::new(cfg.capacity.max(1))),
        cfg,
        stats: stats.clone(),
        ids: AtomicU64::new(1),
    });
    let router = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/sim/stats", get(stats_handler))
        .fallback(not_found)
        .with_state(sim);
    (router, stats)
}

/// Serve the simulated model on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    cfg: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = router(cfg);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

type SimState = State<Arc<Sim>>;

async fn models(State(sim): SimState) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": sim.cfg.model, "object": "model", "created": 0, "owned_by": "palisade-sim"}]
    }))
}

async fn stats_handler(State(sim): SimState) -> Json<SimSnapshot> {
    Json(sim.stats.snapshot())
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", "unknown endpoint")
}

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    #[serde(default)]
    user: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    #[serde(default)]
    user: Option<String>,
    prompt: Value,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: Option<String>,
    #[serde(default)]
    user: Option<String>,
    input: Value,
}

/// Parse a JSON request body whatever its content type, as lenient model servers do.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(&format!("invalid JSON body: {e}")))
}

/// Text of a message content, which is a string or an array of typed parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

/// A rough token count: a token is about four characters of English text.
fn approx_tokens(text: &str) -> u32 {
    (text.chars().count() as u32).div_ceil(4)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn chat_completions(State(sim): SimState, body: Bytes) -> Response {
    let req: ChatRequest = match parse(&body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let system = req.messages.iter().find(|m| m.role == "system").map(|m| content_text(&m.content));
    let prompt: String = req.messages.iter().map(|m| content_text(&m.content)).collect::<Vec<_>>().join("\n");
    let last_user = req.messages.iter().rev().find(|m| m.role == "user").map(|m| content_text(&m.content));
    let pieces = sim.reply(
        system.as_deref(),
        last_user.as_deref().unwrap_or(&prompt),
        req.max_completion_tokens.or(req.max_tokens),
    );
    let slot = match sim.admit(req.user.clone()).await {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let reply = Reply {
        id: sim.next_id("chatcmpl"),
        model: req.model.unwrap_or_else(|| sim.cfg.model.clone()),
        created: unix_now(),
        prompt_tokens: approx_tokens(&prompt),
        pieces,
        kind: ReplyKind::Chat,
        ttft: sim.cfg.ttft,
        per_token: sim.token_delay(),
    };
    if req.stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        reply.stream(slot, include_usage)
    } else {
        reply.whole(slot).await
    }
}

async fn completions(State(sim): SimState, body: Bytes) -> Response {
    let req: CompletionRequest = match parse(&body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let prompt = match &req.prompt {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => return bad_request("`prompt` must be a string or an array of strings"),
    };
    let pieces = sim.reply(None, &prompt, req.max_tokens);
    let slot = match sim.admit(req.user.clone()).await {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let reply = Reply {
        id: sim.next_id("cmpl"),
        model: req.model.unwrap_or_else(|| sim.cfg.model.clone()),
        created: unix_now(),
        prompt_tokens: approx_tokens(&prompt),
        pieces,
        kind: ReplyKind::Completion,
        ttft: sim.cfg.ttft,
        per_token: sim.token_delay(),
    };
    if req.stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        reply.stream(slot, include_usage)
    } else {
        reply.whole(slot).await
    }
}

async fn embeddings(State(sim): SimState, body: Bytes) -> Response {
    let req: EmbeddingRequest = match parse(&body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let inputs: Vec<String> = match &req.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        _ => return bad_request("`input` must be a string or an array of strings"),
    };
    let slot = match sim.admit(req.user.clone()).await {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    if !sim.cfg.ttft.is_zero() {
        tokio::time::sleep(sim.cfg.ttft).await;
    }
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let mut rng = SplitMix64(sim.cfg.seed ^ fnv1a(text.as_bytes()));
            let vector: Vec<f32> = (0..8).map(|_| (rng.next() % 2000) as f32 / 1000.0 - 1.0).collect();
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    let tokens: u32 = inputs.iter().map(|s| approx_tokens(s)).sum();
    slot.finish();
    Json(json!({
        "object": "list",
        "data": data,
        "model": req.model.unwrap_or_else(|| sim.cfg.model.clone()),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}

#[derive(Clone, Copy)]
enum ReplyKind {
    Chat,
    Completion,
}

struct Reply {
    id: String,
    model: String,
    created: u64,
    prompt_tokens: u32,
    pieces: Vec<String>,
    kind: ReplyKind,
    ttft: Duration,
    per_token: Duration,
}

impl Reply {
    fn usage(&self) -> Value {
        let completion = self.pieces.len() as u32;
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion
        })
    }

    async fn whole(self, slot: Slot) -> Response {
        let generation = self.per_token * self.pieces.len() as u32;
        let delay = self.ttft + generation;
        // A zero sleep still waits for the timer's next 1 ms tick.
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let text = self.pieces.concat();
        let body = match self.kind {
            ReplyKind::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "stop"}],
                "usage": self.usage()
            }),
            ReplyKind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
                "usage": self.usage()
            }),
        };
        slot.finish();
        Json(body).into_response()
    }

    fn chunk(&self, delta: Option<&str>, first: bool, finish: bool) -> Value {
        match self.kind {
            ReplyKind::Chat => {
                let delta = match (first, delta) {
                    (true, _) => json!({"role": "assistant", "content": ""}),
                    (false, Some(text)) => json!({"content": text}),
                    (false, None) => json!({}),
                };
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": if finish { json!("stop") } else { Value::Null }}]
                })
            }
            ReplyKind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": delta.unwrap_or(""), "logprobs": null, "finish_reason": if finish { json!("stop") } else { Value::Null }}]
            }),
        }
    }

    fn usage_chunk(&self) -> Value {
        let object = match self.kind {
            ReplyKind::Chat => "chat.completion.chunk",
            ReplyKind::Completion => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": self.usage()})
    }

    /// The reply as server-sent events, one token per event. The slot lives in the
    /// stream, so a client that disconnects frees it at once.
    fn stream(self, slot: Slot, include_usage: bool) -> Response {
        // Completions have no role chunk: they start at the first token.
        let next = match self.kind {
            ReplyKind::Chat => 0,
            ReplyKind::Completion => 1,
        };
        let state = StreamState { reply: self, slot: Some(slot), next, include_usage, done: false };
        let events = futures_util::stream::unfold(state, |mut state| async move {
            let event = state.next_event().await?;
            Some((Ok::<Bytes, Infallible>(event), state))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(events))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

struct StreamState {
    reply: Reply,
    slot: Option<Slot>,
    /// 0: role chunk; 1..=n: tokens; n+1: finish; n+2: usage; then [DONE].
    next: usize,
    include_usage: bool,
    done: bool,
}

impl StreamState {
    async fn next_event(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let n = self.reply.pieces.len();
        let step = self.next;
        self.next += 1;
        let value = match step {
            0 => self.reply.chunk(None, true, false),
            i if i <= n => {
                let delay = if i == 1 { self.reply.ttft } else { self.reply.per_token };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                self.reply.chunk(Some(&self.reply.pieces[i - 1]), false, false)
            }
            i if i == n + 1 => self.reply.chunk(None, false, true),
            i if i == n + 2 && self.include_usage => self.reply.usage_chunk(),
            _ => {
                self.done = true;
                if let Some(slot) = self.slot.take() {
                    slot.finish();
                }
                return Some(Bytes::from_static(b"data: [DONE]\n\n"));
            }
        };
        Some(Bytes::from(format!("data: {value}\n\n")))
    }
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request", message)
}

/// Split text into pieces of about `size` characters, on character boundaries.
fn chunk_text(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size.max(1)).map(|c| c.iter().collect()).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64: tiny, seedable and stable across releases, which a reproducible
/// benchmark needs more than statistical quality.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const WORDS: &[&str] = &[
    "the", "gateway", "keeps", "serving", "users", "while", "a", "flood", "of", "requests", "is", "queued", "model",
    "answers", "quickly", "and", "status", "page", "reports", "healthy", "tokens", "stream", "to", "clients", "with",
    "low", "latency", "every", "defence", "counts", "cheap", "checks", "first",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_deterministic_per_seed_and_prompt() {
        let sim = |seed| Sim {
            cfg: SimConfig { seed, ..SimConfig::default() },
            slots: Arc::new(Semaphore::new(1)),
            stats: Arc::default(),
            ids: AtomicU64::new(1),
        };
        let a = sim(7).reply(None, "hello", Some(12));
        assert_eq!(a, sim(7).reply(None, "hello", Some(12)));
        assert_eq!(a.len(), 12);
        assert_ne!(a, sim(8).reply(None, "hello", Some(12)));
        assert_ne!(a, sim(7).reply(None, "hullo", Some(12)));
    }

    #[test]
    fn echo_mode_returns_the_system_prompt_in_pieces() {
        let sim = Sim {
            cfg: SimConfig { echo_system_prompt: true, ..SimConfig::default() },
            slots: Arc::new(Semaphore::new(1)),
            stats: Arc::default(),
            ids: AtomicU64::new(1),
        };
        let pieces = sim.reply(Some("You are Palisade's secret helper ✓"), "hi", None);
        assert!(pieces.len() > 5);
        assert_eq!(pieces.concat(), "You are Palisade's secret helper ✓");
    }

    #[test]
    fn content_text_reads_strings_and_parts() {
        assert_eq!(content_text(&json!("hi")), "hi");
        assert_eq!(content_text(&json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])), "ab");
        assert_eq!(content_text(&Value::Null), "");
    }
}
