//! Leak scanning of OpenAI-style server-sent event streams (`stream: true` replies of
//! `/v1/chat/completions` and `/v1/completions`), fed raw upstream bytes in whatever pieces
//! they arrive and returning the bytes to forward to the client.
//!
//! Events are held back whole, never edited, while the scanner still needs their text, and
//! are then forwarded as the original bytes: a reply without a leak comes out byte-identical
//! to what the upstream sent. Only events that carry leaked text are rewritten.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use crate::canary::Canary;
use crate::config::LeakAction;
use crate::detector::Leak;
use crate::detector::{CanaryNeedles, Detector};
use crate::leak::{REDACTION_MARKER, render};
use crate::prompt::ProtectedPrompt;

/// Distinct (choice, field) text streams scanned per reply: `n` above ~10 is unheard of,
/// and so are more than a few parallel tool calls per choice.
const MAX_STREAMS: usize = 64;

/// Why the stream could not be scanned. After an error, forward [`SseScanner::abort`] and
/// close the stream: nothing else from upstream may go to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event (or the bytes held back) grew past `leak.max_event_bytes`.
    #[error("server-sent event larger than {limit} bytes")]
    EventTooLarge { limit: usize },
    /// More choices or text fields than the scanner tracks.
    #[error("more than {limit} choice streams in one reply")]
    TooManyChoices { limit: usize },
}

/// What one [`SseScanner::push`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseOutput {
    /// Bytes to send to the client now (possibly empty).
    pub forward: Bytes,
    /// Leaks detected during this push; audit each one.
    pub leaks: Vec<Leak>,
    /// The reply was ended here (`forward` ends with the `content_filter` chunk and
    /// `data: [DONE]`): stop reading from upstream and close the response.
    pub terminated: bool,
}

/// Which text field of a choice a stream carries; also its JSON path for rewriting. Every
/// text a client receives has one: a leak is as much a leak in a tool call's arguments or
/// in the tokens of `logprobs` as in `content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `choices[].delta.content` (chat).
    Content,
    /// `choices[].delta.reasoning_content` (vLLM, DeepSeek reasoning models).
    ReasoningContent,
    /// `choices[].delta.reasoning` (Ollama, some vLLM versions).
    Reasoning,
    /// `choices[].delta.refusal` (OpenAI structured outputs).
    Refusal,
    /// `choices[].text` (legacy completions).
    Text,
    /// `choices[].delta.tool_calls[index].function.name`.
    ToolName(u32),
    /// `choices[].delta.tool_calls[index].function.arguments`: streamed in fragments, one
    /// detector per tool-call index reassembles them.
    ToolArguments(u32),
    /// `choices[].delta.function_call.name` (legacy functions).
    FunctionName,
    /// `choices[].delta.function_call.arguments`.
    FunctionArguments,
    /// The tokens of `choices[].logprobs` (`content[].token`, `refusal[].token`, or the
    /// legacy `tokens[]`), concatenated. Rewriting drops the event's `logprobs`.
    Logprobs,
}

impl Field {
    fn get_mut(self, choice: &mut Value) -> Option<&mut Value> {
        match self {
            Self::Content => choice.get_mut("delta")?.get_mut("content"),
            Self::ReasoningContent => choice.get_mut("delta")?.get_mut("reasoning_content"),
            Self::Reasoning => choice.get_mut("delta")?.get_mut("reasoning"),
            Self::Refusal => choice.get_mut("delta")?.get_mut("refusal"),
            Self::Text => choice.get_mut("text"),
            Self::ToolName(i) | Self::ToolArguments(i) => {
                let calls = choice.get_mut("delta")?.get_mut("tool_calls")?.as_array_mut()?;
                let pos = calls.iter().position(|c| c.get("index").and_then(Value::as_u64) == Some(u64::from(i)));
                let call = calls.get_mut(pos.unwrap_or(i as usize))?;
                let key = if matches!(self, Self::ToolName(_)) { "name" } else { "arguments" };
                call.get_mut("function")?.get_mut(key)
            }
            Self::FunctionName => choice.get_mut("delta")?.get_mut("function_call")?.get_mut("name"),
            Self::FunctionArguments => choice.get_mut("delta")?.get_mut("function_call")?.get_mut("arguments"),
            Self::Logprobs => choice.get_mut("logprobs"),
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    choice: u32,
    field: Field,
    det: Detector,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    slot: usize,
    start: u64,
    end: u64,
}

#[derive(Debug)]
struct Held {
    raw: Bytes,
    spans: Spans,
    /// Choices whose `finish_reason` this event carries.
    finishes: Vec<u32>,
}

/// Fields copied from the first chunk to build the terminal chunk.
#[derive(Debug, Clone, Default)]
struct Meta {
    id: Option<String>,
    model: Option<String>,
    created: Option<Value>,
    completions: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// Ended by a leak, an error or `finish`: further input is ignored.
    Closed,
}

/// Scanner for one streamed reply.
#[derive(Debug)]
pub struct SseScanner {
    prompt: Arc<ProtectedPrompt>,
    canary: Option<Arc<CanaryNeedles>>,
    input: BytesMut,
    search_from: usize,
    queue: VecDeque<Held>,
    queued_bytes: usize,
    slots: Vec<Slot>,
    /// Choices whose finish chunk has been forwarded; the terminal chunk skips them.
    finished_choices: Vec<u32>,
    meta: Option<Meta>,
    phase: Phase,
    unscanned: u64,
    template: Option<Template>,
}

/// The bytes around the content string of a typical event. Servers repeat the same `id`,
/// `model`, `created` and field order in every chunk, so an event that starts and ends with
/// exactly the bytes that surrounded the content string of an earlier, fully parsed event
/// has the same structure, and its middle is that choice's content as a JSON string
/// literal. Decoding just the literal skips most of the per-event JSON work; anything
/// that does not match byte for byte (or whose middle is not one string literal) takes the
/// full parse.
#[derive(Debug)]
struct Template {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    slot: usize,
}

impl SseScanner {
    /// A scanner for the streamed reply to a request whose system prompt was `prompt`.
    pub fn new(prompt: Arc<ProtectedPrompt>, canary: Option<&Canary>) -> Self {
        Self {
            prompt,
            canary: canary.map(|c| Arc::new(CanaryNeedles::new(c))),
            input: BytesMut::new(),
            search_from: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            slots: Vec::new(),
            finished_choices: Vec::new(),
            meta: None,
            phase: Phase::Streaming,
            unscanned: 0,
            template: None,
        }
    }

    /// Events whose `data` was not the JSON the scanner understands; they were forwarded
    /// unscanned (an upstream protocol problem worth a metric, not a leak).
    pub fn unscanned_events(&self) -> u64 {
        self.unscanned
    }

    /// Feeds the next bytes from upstream.
    pub fn push(&mut self, chunk: &[u8]) -> Result<SseOutput, SseError> {
        let mut out = SseOutput::default();
        if self.phase == Phase::Closed {
            return Ok(out);
        }
        self.input.extend_from_slice(chunk);
        while let Some(end) = find_event_end(&self.input, self.search_from) {
            let raw = self.input.split_to(end).freeze();
            self.search_from = 0;
            self.accept(raw, &mut out.leaks).inspect_err(|_| self.phase = Phase::Closed)?;
        }
        // Resume the delimiter search where it stopped, minus the bytes a delimiter split
        // across chunks may have left at the end.
        self.search_from = self.input.len().saturating_sub(3);
        let limit = self.prompt.settings.max_event_bytes;
        if self.input.len() > limit || self.queued_bytes > 2 * limit {
            self.phase = Phase::Closed;
            return Err(SseError::EventTooLarge { limit });
        }
        self.drain(&mut out);
        Ok(out)
    }

    /// Upstream closed the stream: scan any unterminated last event and release
    /// everything still held.
    pub fn finish(&mut self) -> Result<SseOutput, SseError> {
        let mut out = SseOutput::default();
        if self.phase == Phase::Closed {
            return Ok(out);
        }
        if !self.input.is_empty() {
            let raw = self.input.split().freeze();
            self.accept(raw, &mut out.leaks).inspect_err(|_| self.phase = Phase::Closed)?;
        }
        for slot in &mut self.slots {
            slot.det.finish();
        }
        self.drain(&mut out);
        self.phase = Phase::Closed;
        Ok(out)
    }

    /// Ends the stream cleanly after an error: a final `content_filter` chunk and
    /// `data: [DONE]`. Held events are dropped, since they were never cleared.
    pub fn abort(&mut self) -> Bytes {
        self.phase = Phase::Closed;
        self.queue.clear();
        self.queued_bytes = 0;
        self.terminal_events()
    }

    /// Parses one complete event, scans its text and queues it.
    fn accept(&mut self, raw: Bytes, leaks: &mut Vec<Leak>) -> Result<(), SseError> {
        let mut spans = Spans::default();
        let mut finishes = Vec::new();
        if let Some(text) = self.template_content(&raw) {
            let slot = self.template.as_ref().map_or(0, |t| t.slot);
            let det = &mut self.slots[slot].det;
            let start = det.fed();
            det.feed(&text, leaks);
            spans.push(Span { slot, start, end: det.fed() });
            self.queued_bytes += raw.len();
            self.queue.push_back(Held { raw, spans, finishes });
            return Ok(());
        }
        match event_data(&raw) {
            None => {}
            Some(data) if data.trim_ascii() == b"[DONE]" => {
                for slot in &mut self.slots {
                    slot.det.finish();
                }
            }
            Some(data) => match parse_chunk(&data) {
                Some(chunk) => {
                    let fed = self.scan_chunk(chunk, &mut spans, &mut finishes, leaks)?;
                    if let (Some(text), Some(span), true, true) =
                        (fed, spans.first, spans.more.is_empty(), finishes.is_empty())
                        && self.slots[span.slot].field == Field::Content
                    {
                        self.template = Template::learn(&raw, &text, span.slot);
                    }
                }
                None => self.unscanned += 1,
            },
        }
        self.queued_bytes += raw.len();
        self.queue.push_back(Held { raw, spans, finishes });
        Ok(())
    }

    /// Scans a parsed chunk; returns the text of the last field scanned (for templating).
    fn scan_chunk(
        &mut self,
        chunk: Chunk<'_>,
        spans: &mut Spans,
        finishes: &mut Vec<u32>,
        leaks: &mut Vec<Leak>,
    ) -> Result<Option<String>, SseError> {
        let mut last = None;
        if self.meta.is_none() {
            self.meta = Some(Meta {
                id: chunk.id.map(Cow::into_owned),
                model: chunk.model.map(Cow::into_owned),
                created: chunk.created,
                completions: chunk.object.as_deref() == Some("text_completion"),
            });
        }
        for (pos, choice) in chunk.choices.into_iter().enumerate() {
            let index = choice.index.unwrap_or(pos as u32);
            let finished = choice.finish_reason.is_some();
            for (field, text) in choice.texts() {
                let slot = self.slot(index, field)?;
                let det = &mut self.slots[slot].det;
                let start = det.fed();
                det.feed(&text, leaks);
                spans.push(Span { slot, start, end: det.fed() });
                last = Some(text);
            }
            if finished {
                for slot in self.slots.iter_mut().filter(|s| s.choice == index) {
                    slot.det.finish();
                }
                finishes.push(index);
            }
        }
        Ok(last.map(Cow::into_owned))
    }

    /// The content of `raw` when it matches the learned template.
    fn template_content<'r>(&self, raw: &'r [u8]) -> Option<Cow<'r, str>> {
        let t = self.template.as_ref()?;
        if raw.len() < t.prefix.len() + t.suffix.len() + 2 || !raw.starts_with(&t.prefix) || !raw.ends_with(&t.suffix) {
            return None;
        }
        let literal = &raw[t.prefix.len()..raw.len() - t.suffix.len()];
        if literal.first() != Some(&b'"') {
            return None;
        }
        // Exactly one JSON string: serde rejects trailing bytes after the closing quote.
        serde_json::from_slice::<Cow<'r, str>>(literal).ok()
    }

    fn slot(&mut self, choice: u32, field: Field) -> Result<usize, SseError> {
        if let Some(i) = self.slots.iter().position(|s| s.choice == choice && s.field == field) {
            return Ok(i);
        }
        if self.slots.len() >= MAX_STREAMS {
            return Err(SseError::TooManyChoices { limit: MAX_STREAMS });
        }
        let mut det = Detector::new(self.prompt.clone(), self.canary.clone(), choice);
        if matches!(field, Field::ToolArguments(_) | Field::FunctionArguments) {
            det = det.reading_json();
        }
        self.slots.push(Slot { choice, field, det });
        Ok(self.slots.len() - 1)
    }

    /// Forwards every queued event whose text is decided; on a termination, forwards what
    /// precedes the leak and ends the stream.
    fn drain(&mut self, out: &mut SseOutput) {
        let mut out_parts = Output::default();
        let tripped = self.slots.iter().any(|s| s.det.is_tripped());
        while let Some(front) = self.queue.front() {
            let decided = front.spans.iter().all(|s| s.end <= self.slots[s.slot].det.decided());
            let touched = front.spans.iter().any(|s| self.touches_region(s));
            if !(decided || tripped && touched) {
                break;
            }
            let Some(held) = self.queue.pop_front() else { break };
            self.queued_bytes -= held.raw.len();
            if decided {
                self.finished_choices.extend_from_slice(&held.finishes);
            }
            if touched || !decided {
                if let Some(rewritten) = self.rewrite(&held) {
                    out_parts.push(Bytes::from(rewritten));
                }
            } else {
                out_parts.push(held.raw);
            }
            if !decided {
                // The event that contains the start of the leak: its benign prefix went out
                // above; nothing after it may.
                break;
            }
        }
        if tripped {
            self.queue.clear();
            self.queued_bytes = 0;
            out_parts.push(self.terminal_events());
            self.phase = Phase::Closed;
            out.terminated = true;
        }
        out.forward = out_parts.finish();
    }

    fn touches_region(&self, span: &Span) -> bool {
        self.slots[span.slot].det.regions().iter().any(|r| r.start < span.end && r.end > span.start)
    }

    /// Re-serialises an event with leaked text removed (redaction marker in redact mode),
    /// and text past a termination point cut. Returns `None` for an event with nothing left
    /// worth sending.
    fn rewrite(&self, held: &Held) -> Option<Vec<u8>> {
        let data = event_data(&held.raw)?;
        let mut value: Value = serde_json::from_slice(&data).ok()?;
        let choices = value.get_mut("choices")?.as_array_mut()?;
        for span in held.spans.iter() {
            let slot = &self.slots[span.slot];
            let marker = (slot.det.action() == LeakAction::Redact).then_some(REDACTION_MARKER);
            let pos =
                choices.iter().position(|c| c.get("index").and_then(Value::as_u64) == Some(u64::from(slot.choice)));
            let Some(choice) = choices.get_mut(pos.unwrap_or(slot.choice as usize)) else { continue };
            if slot.field == Field::Logprobs {
                // Tokens are not cut one by one: the event's logprobs go when any of their
                // text is leaked or past a termination.
                if (self.touches_region(span) || slot.det.decided() < span.end)
                    && let Some(lp) = slot.field.get_mut(choice)
                {
                    *lp = Value::Null;
                }
                continue;
            }
            let Some(Value::String(text)) = slot.field.get_mut(choice) else { continue };
            let limit = slot.det.decided().clamp(span.start, span.end);
            let kept = text.get(..(limit - span.start) as usize).unwrap_or("");
            let mut new = String::with_capacity(kept.len());
            render(kept, span.start, slot.det.regions(), marker, &mut new);
            *text = new;
        }
        let mut bytes = b"data: ".to_vec();
        serde_json::to_writer(&mut bytes, &value).ok()?;
        bytes.extend_from_slice(b"\n\n");
        Some(bytes)
    }

    /// A final chunk with `finish_reason: "content_filter"` for every unfinished choice,
    /// then `data: [DONE]`.
    fn terminal_events(&self) -> Bytes {
        let meta = self.meta.clone().unwrap_or_default();
        let mut open: Vec<u32> = self.slots.iter().map(|s| s.choice).collect();
        open.sort_unstable();
        open.dedup();
        open.retain(|c| !self.finished_choices.contains(c));
        if open.is_empty() {
            open.push(0);
        }
        let choices: Vec<Value> = open
            .iter()
            .map(|&index| {
                if meta.completions {
                    serde_json::json!({"index": index, "text": "", "logprobs": null, "finish_reason": "content_filter"})
                } else {
                    serde_json::json!({"index": index, "delta": {}, "finish_reason": "content_filter"})
                }
            })
            .collect();
        let object = if meta.completions { "text_completion" } else { "chat.completion.chunk" };
        let chunk = serde_json::json!({
            "id": meta.id.unwrap_or_default(),
            "object": object,
            "created": meta.created.unwrap_or(Value::from(0)),
            "model": meta.model.unwrap_or_default(),
            "choices": choices,
        });
        Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n"))
    }
}

impl Template {
    /// Finds the string literal of `content` in `raw` (a fully parsed event whose only text
    /// was `content`) and keeps the bytes around it.
    fn learn(raw: &[u8], content: &str, slot: usize) -> Option<Self> {
        const KEY: &[u8] = b"\"content\":";
        let key_at = raw.windows(KEY.len()).rposition(|w| w == KEY)?;
        if key_at > 0 && raw[key_at - 1] == b'\\' {
            return None;
        }
        let mut start = key_at + KEY.len();
        while raw.get(start).is_some_and(|b| *b == b' ') {
            start += 1;
        }
        if raw.get(start) != Some(&b'"') {
            return None;
        }
        let mut end = start + 1;
        while let Some(&b) = raw.get(end) {
            match b {
                b'\\' => end += 2,
                b'"' => break,
                _ => end += 1,
            }
        }
        let literal = raw.get(start..=end)?;
        let decoded: Cow<'_, str> = serde_json::from_slice(literal).ok()?;
        (decoded == content).then(|| Self { prefix: raw[..start].to_vec(), suffix: raw[end + 1..].to_vec(), slot })
    }
}

/// Spans of one event: almost always exactly one, kept inline.
#[derive(Debug, Default)]
struct Spans {
    first: Option<Span>,
    more: Vec<Span>,
}

impl Spans {
    fn push(&mut self, span: Span) {
        if self.first.is_none() {
            self.first = Some(span);
        } else {
            self.more.push(span);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Span> {
        self.first.iter().chain(self.more.iter())
    }
}

/// Forwarded bytes: the original event's `Bytes` when one event goes out (no copy), a
/// concatenation otherwise.
#[derive(Default)]
struct Output {
    single: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl Output {
    fn push(&mut self, bytes: Bytes) {
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(&bytes);
        } else if let Some(first) = self.single.take() {
            let mut joined = BytesMut::with_capacity(first.len() + bytes.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&bytes);
            self.joined = Some(joined);
        } else {
            self.single = Some(bytes);
        }
    }

    fn finish(self) -> Bytes {
        match (self.joined, self.single) {
            (Some(joined), _) => joined.freeze(),
            (None, Some(single)) => single,
            (None, None) => Bytes::new(),
        }
    }
}

/// Index just past the blank line that ends the first complete event at or after `from`
/// (`\n\n` or `\r\n\r\n`; the delimiter belongs to the event so forwarding is lossless).
fn find_event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let nl = i + buf.get(i..)?.iter().position(|&b| b == b'\n')?;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// The event's `data` (lines joined with `\n`), or `None` if it has no data line.
fn event_data(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    // Fast path for the usual one-line event, `data: {...}\n\n`.
    if let Some(rest) = raw.strip_prefix(b"data:") {
        let body = rest.strip_suffix(b"\n\n").or_else(|| rest.strip_suffix(b"\r\n\r\n"));
        if let Some(body) = body
            && !body.contains(&b'\n')
        {
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            return Some(Cow::Borrowed(body.strip_prefix(b" ").unwrap_or(body)));
        }
    }
    let mut data: Option<Cow<'_, [u8]>> = None;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data:") else { continue };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        data = Some(match data {
            None => Cow::Borrowed(value),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                Cow::Owned(joined)
            }
        });
    }
    data
}

/// The parts of a streamed chunk the scanner reads; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<Value>,
    #[serde(borrow, default)]
    choices: Choices<'a>,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    logprobs: Option<LogprobsIn<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallIn<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<FunctionIn<'a>>,
}

#[derive(Deserialize)]
struct ToolCallIn<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    function: Option<FunctionIn<'a>>,
}

#[derive(Deserialize)]
struct FunctionIn<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

/// `logprobs` of a chat chunk (`content`, `refusal`: lists of token objects) or of a
/// completions chunk (`tokens`: a list of strings).
#[derive(Deserialize)]
struct LogprobsIn<'a> {
    #[serde(borrow, default)]
    content: Option<Vec<TokenIn<'a>>>,
    #[serde(borrow, default)]
    refusal: Option<Vec<TokenIn<'a>>>,
    #[serde(borrow, default)]
    tokens: Option<Vec<Cow<'a, str>>>,
}

#[derive(Deserialize)]
struct TokenIn<'a> {
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

/// `choices`: the first choice inline (the usual single-choice stream parses without a
/// heap allocation), further ones in a vector. `null` reads as empty.
#[derive(Default)]
struct Choices<'a> {
    first: Option<ChoiceIn<'a>>,
    more: Vec<ChoiceIn<'a>>,
}

impl<'a> IntoIterator for Choices<'a> {
    type Item = ChoiceIn<'a>;
    type IntoIter = std::iter::Chain<std::option::IntoIter<ChoiceIn<'a>>, std::vec::IntoIter<ChoiceIn<'a>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.more)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Choices<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Choices::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Choices { first: seq.next_element()?, more: Vec::new() };
                while let Some(c) = seq.next_element()? {
                    out.more.push(c);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl<'a> ChoiceIn<'a> {
    /// Every non-empty text of the choice, with its field.
    fn texts(self) -> Vec<(Field, Cow<'a, str>)> {
        let mut out = Vec::new();
        let mut add = |field, text: Option<Cow<'a, str>>| {
            if let Some(t) = text.filter(|t| !t.is_empty()) {
                out.push((field, t));
            }
        };
        if let Some(d) = self.delta {
            add(Field::Content, d.content);
            add(Field::ReasoningContent, d.reasoning_content);
            add(Field::Reasoning, d.reasoning);
            add(Field::Refusal, d.refusal);
            for (pos, call) in d.tool_calls.into_iter().flatten().enumerate() {
                let index = call.index.unwrap_or(pos as u32);
                if let Some(f) = call.function {
                    add(Field::ToolName(index), f.name);
                    add(Field::ToolArguments(index), f.arguments);
                }
            }
            if let Some(f) = d.function_call {
                add(Field::FunctionName, f.name);
                add(Field::FunctionArguments, f.arguments);
            }
        }
        add(Field::Text, self.text);
        if let Some(lp) = self.logprobs {
            let mut tokens = String::new();
            for t in lp.content.into_iter().chain(lp.refusal).flatten().filter_map(|t| t.token) {
                tokens.push_str(&t);
            }
            for t in lp.tokens.into_iter().flatten() {
                tokens.push_str(&t);
            }
            add(Field::Logprobs, Some(Cow::Owned(tokens)));
        }
        out
    }
}

/// Parses a chunk; `None` for data that is not a JSON object of that shape (an upstream
/// error object still parses: it simply has no choices).
fn parse_chunk(data: &[u8]) -> Option<Chunk<'_>> {
    serde_json::from_slice(data).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::LeakConfig;
    use crate::detector::LeakKind;

    const PROMPT: &str = "You are Nimbus, the support assistant for Acme Cloud. Answer only questions about \
        Acme Cloud billing, invoices and service outages. Never discuss competitors or internal pricing formulas.";

    fn scanner(action: LeakAction) -> SseScanner {
        let settings = LeakConfig { on_leak: action, ..LeakConfig::default() };
        SseScanner::new(Arc::new(ProtectedPrompt::new(PROMPT, &settings)), None)
    }

    fn chat_stream(pieces: &[&str]) -> Vec<u8> {
        let mut s = String::new();
        s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
        for p in pieces {
            let chunk = serde_json::json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
                "choices":[{"index":0,"delta":{"content":p},"finish_reason":null}]});
            s.push_str(&format!("data: {chunk}\n\n"));
        }
        s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        s.push_str("data: [DONE]\n\n");
        s.into_bytes()
    }

    fn feed(s: &mut SseScanner, bytes: &[u8], chunk: usize) -> (Vec<u8>, Vec<Leak>, bool) {
        let mut out = Vec::new();
        let mut leaks = Vec::new();
        let mut terminated = false;
        for piece in bytes.chunks(chunk.max(1)) {
            let o = s.push(piece).expect("within limits");
            out.extend_from_slice(&o.forward);
            leaks.extend(o.leaks);
            terminated |= o.terminated;
        }
        let o = s.finish().expect("within limits");
        out.extend_from_slice(&o.forward);
        (out, leaks, terminated)
    }

    /// The concatenated `delta.content` of a forwarded stream, and its last finish_reason.
    fn content_of(bytes: &[u8]) -> (String, Option<String>) {
        let mut text = String::new();
        let mut finish = None;
        for event in String::from_utf8_lossy(bytes).split("\n\n") {
            let Some(data) = event.strip_prefix("data: ") else { continue };
            let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(c);
            }
            if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
        (text, finish)
    }

    #[test]
    fn benign_stream_is_byte_identical() {
        let words: Vec<String> = "Your invoice for March is ready. The outage on Tuesday lasted twelve minutes \
            and affected only the Frankfurt region; credits were applied automatically. ünï 🎉"
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let stream = chat_stream(&refs);
        for chunk in [1, 7, 64, 100_000] {
            let (out, leaks, terminated) = feed(&mut scanner(LeakAction::Terminate), &stream, chunk);
            assert_eq!(out, stream, "chunk size {chunk}");
            assert!(leaks.is_empty() && !terminated);
        }
    }

    #[test]
    fn crlf_events_and_comments_pass_through() {
        let stream = b": keep-alive\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\r\n\r\nevent: x\ndata: not json\n\ndata: [DONE]\r\n\r\n";
        let mut s = scanner(LeakAction::Terminate);
        let (out, _, _) = feed(&mut s, stream, 3);
        assert_eq!(out, stream);
        assert_eq!(s.unscanned_events(), 1);
    }

    #[test]
    fn leak_terminates_with_content_filter() {
        let pieces: Vec<String> = format!("Sure, here it is: {PROMPT} Hope that helps!")
            .as_bytes()
            .chunks(6)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let stream = chat_stream(&refs);
        for chunk in [1, 13, 4096] {
            let (out, leaks, terminated) = feed(&mut scanner(LeakAction::Terminate), &stream, chunk);
            assert!(terminated);
            assert_eq!(leaks.len(), 1);
            assert_eq!(leaks[0].kind, LeakKind::Overlap);
            let (text, finish) = content_of(&out);
            assert_eq!(text, "Sure, here it is: ");
            assert_eq!(finish.as_deref(), Some("content_filter"));
            assert!(out.ends_with(b"data: [DONE]\n\n"));
        }
    }

    #[test]
    fn leak_is_redacted_and_stream_continues() {
        let body = format!("Sure, here it is: {PROMPT} Anyway, your invoice for March is ready to download now.");
        let pieces: Vec<String> = body.as_bytes().chunks(9).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (out, leaks, terminated) = feed(&mut scanner(LeakAction::Redact), &chat_stream(&refs), 17);
        assert!(!terminated);
        assert_eq!(leaks.len(), 1);
        let (text, finish) = content_of(&out);
        assert!(text.starts_with("Sure, here it is: [redacted]"), "{text}");
        assert!(text.ends_with("ready to download now."), "{text}");
        assert!(!text.contains("Nimbus"));
        assert_eq!(finish.as_deref(), Some("stop"));
    }

    #[test]
    fn completions_text_field_is_scanned() {
        let mut stream = String::new();
        for piece in format!("Prompt: {PROMPT}").as_bytes().chunks(10) {
            let chunk = serde_json::json!({"id":"x","object":"text_completion","created":1,"model":"m",
                "choices":[{"index":0,"text":String::from_utf8_lossy(piece),"finish_reason":null}]});
            stream.push_str(&format!("data: {chunk}\n\n"));
        }
        let (out, leaks, terminated) = feed(&mut scanner(LeakAction::Terminate), stream.as_bytes(), 50);
        assert!(terminated && !leaks.is_empty());
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("\"object\":\"text_completion\""));
        assert!(text.contains("\"finish_reason\":\"content_filter\""));
        assert!(!text.contains("Nimbus"));
    }

    #[test]
    fn oversized_event_is_refused_and_abort_ends_cleanly() {
        let mut s = scanner(LeakAction::Terminate);
        let big = vec![b'a'; 1024 * 1024 + 1];
        assert_eq!(s.push(&big), Err(SseError::EventTooLarge { limit: 1024 * 1024 }));
        let end = s.abort();
        assert!(end.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(s.push(b"data: {}\n\n").map(|o| o.forward.len()), Ok(0));
    }

    #[test]
    fn template_fast_path_agrees_with_full_parse() {
        // Escapes, quotes and non-ASCII in the content; one event of another shape in the
        // middle (forces the full parse); the leak must be found across both paths.
        let text = format!("Quote: \"ok\" \\ é\n{PROMPT}");
        let mut stream = String::new();
        let chars: Vec<char> = text.chars().collect();
        for (i, piece) in chars.chunks(5).enumerate() {
            let piece: String = piece.iter().collect();
            let chunk = if i == 7 {
                serde_json::json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
                    "choices":[{"index":0,"delta":{"content":piece},"logprobs":null,"finish_reason":null}]})
            } else {
                serde_json::json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
                    "choices":[{"index":0,"delta":{"content":piece},"finish_reason":null}]})
            };
            stream.push_str(&format!("data: {chunk}\n\n"));
        }
        let mut s = scanner(LeakAction::Terminate);
        let (out, leaks, terminated) = feed(&mut s, stream.as_bytes(), 64);
        assert!(s.template.is_some(), "the template was learned");
        assert!(terminated && leaks.len() == 1);
        let (content, _) = content_of(&out);
        assert!(text.starts_with(&content) && content.starts_with("Quote:"), "{content}");
        assert_eq!(leaks[0].start as usize, text.find("You are").unwrap_or(0));
    }

    /// A chat stream whose chunks carry the given `delta`s (and `logprobs`, when given).
    fn delta_stream(deltas: &[(Value, Option<Value>)]) -> Vec<u8> {
        let mut s = String::new();
        for (delta, logprobs) in deltas {
            let mut choice = serde_json::json!({"index": 0, "delta": delta, "finish_reason": null});
            if let Some(lp) = logprobs {
                choice["logprobs"] = lp.clone();
            }
            let chunk = serde_json::json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[choice]});
            s.push_str(&format!("data: {chunk}\n\n"));
        }
        s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n");
        s.into_bytes()
    }

    /// Streamed tool-call arguments: fragments of a JSON document, per tool-call index.
    fn tool_call_deltas(arguments: &[&str], piece: usize) -> Vec<(Value, Option<Value>)> {
        let mut out = vec![(
            serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "save_note", "arguments": ""}},
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}),
            None,
        )];
        for (index, args) in arguments.iter().enumerate() {
            let chars: Vec<char> = args.chars().collect();
            for frag in chars.chunks(piece) {
                let frag: String = frag.iter().collect();
                out.push((
                    serde_json::json!({"tool_calls": [{"index": index, "function": {"arguments": frag}}]}),
                    None,
                ));
            }
        }
        out
    }

    #[test]
    fn leak_in_streamed_tool_call_arguments_is_stopped() {
        let leaked = serde_json::to_string(&serde_json::json!({"note": PROMPT})).expect("json");
        let benign = r#"{"query": "invoice March"}"#;
        for (piece, read) in [(1, 1), (3, 64), (17, 4096)] {
            let stream = delta_stream(&tool_call_deltas(&[benign, &leaked], piece));
            let (out, leaks, terminated) = feed(&mut scanner(LeakAction::Terminate), &stream, read);
            assert!(terminated && !leaks.is_empty(), "piece {piece}");
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains("Nimbus") && !text.contains("support assistant"), "{text}");
            assert!(text.contains("content_filter"));
        }
    }

    /// A prompt of short lines: recited inside JSON, each line break is `\n`, two characters
    /// that are no part of the prompt's text.
    pub(crate) const LINES: &str = "Answer as Orbit, the travel desk bot.\nOnly book flights inside Europe.\n\
        Never quote fares over the phone.\nAsk for the booking code first.\nHand refunds to a human agent.\n\
        Keep every reply under fifty words.\nGreet members by their first name.\nOffer rail when flights are full.\n\
        Do not promise seat upgrades.\nCheck visa rules for every trip.\nSend receipts by email only.\n\
        Close each chat with a short summary.";

    #[test]
    fn a_prompt_of_short_lines_recited_in_tool_call_arguments_is_stopped_at_its_start() {
        let settings = LeakConfig::default();
        let prompt = Arc::new(ProtectedPrompt::new(LINES, &settings));
        let half: String = LINES.chars().take(LINES.len() / 2).collect();
        for recited in [LINES, half.as_str()] {
            let leaked = serde_json::to_string(&serde_json::json!({"note": recited})).expect("json");
            for piece in [1, 5, 24] {
                let stream = delta_stream(&tool_call_deltas(&[&leaked], piece));
                let (out, leaks, terminated) = feed(&mut SseScanner::new(prompt.clone(), None), &stream, 64);
                assert!(terminated && !leaks.is_empty(), "piece {piece}: {recited}");
                // Cut where the note starts: read raw, the escaped line breaks put the
                // first match a line or more later.
                assert_eq!(leaks[0].start, r#"{"note":""#.len() as u64, "piece {piece}: {recited}");
                let args: String = String::from_utf8_lossy(&out)
                    .split("\n\n")
                    .filter_map(|e| serde_json::from_str::<Value>(e.strip_prefix("data: ")?).ok())
                    .filter_map(|v| {
                        Some(v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()?.to_owned())
                    })
                    .collect();
                assert!(r#"{"note":""#.starts_with(&args), "piece {piece}: {args}");
            }
        }
    }

    #[test]
    fn benign_tool_calls_reasoning_and_logprobs_are_byte_identical() {
        let mut deltas = vec![(
            serde_json::json!({"role": "assistant", "reasoning_content": "The user wants the March invoice."}),
            None,
        )];
        deltas.extend(tool_call_deltas(&[r#"{"month": "March", "year": 2026}"#, r#"{"id": 42}"#], 4));
        deltas.push((
            serde_json::json!({"content": "Here it is."}),
            Some(serde_json::json!({"content": [{"token": "Here", "logprob": -0.1, "top_logprobs": []}, {"token": " it is.", "logprob": -0.2}]})),
        ));
        deltas.push((serde_json::json!({"refusal": null, "content": ""}), None));
        let stream = delta_stream(&deltas);
        for read in [1, 7, 100_000] {
            let (out, leaks, terminated) = feed(&mut scanner(LeakAction::Terminate), &stream, read);
            assert_eq!(out, stream, "read {read}");
            assert!(leaks.is_empty() && !terminated);
        }
    }

    #[test]
    fn every_other_delta_field_is_scanned() {
        let pieces: Vec<String> =
            format!("Well: {PROMPT}").as_bytes().chunks(7).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        let deltas_for = |field: &str| -> Vec<(Value, Option<Value>)> {
            pieces
                .iter()
                .map(|p| match field {
                    "logprobs" => (
                        serde_json::json!({"content": "x"}),
                        Some(serde_json::json!({"content": [{"token": p, "logprob": 0}]})),
                    ),
                    "function_call" => (serde_json::json!({"function_call": {"arguments": p}}), None),
                    f => (serde_json::json!({ f: p }), None),
                })
                .collect()
        };
        for field in ["reasoning_content", "reasoning", "refusal", "function_call", "logprobs"] {
            let stream = delta_stream(&deltas_for(field));
            let (out, leaks, terminated) = feed(&mut scanner(LeakAction::Terminate), &stream, 33);
            assert!(terminated && !leaks.is_empty(), "{field}");
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains("Nimbus") && !text.contains("outages"), "{field}: {text}");
        }
    }

    #[test]
    fn event_boundaries() {
        assert_eq!(find_event_end(b"data: x\n\nrest", 0), Some(9));
        assert_eq!(find_event_end(b"data: x\r\n\r\n", 0), Some(11));
        assert_eq!(find_event_end(b"data: x\n", 0), None);
        assert_eq!(event_data(b"data: a\ndata:b\n\n").as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(event_data(b": comment\n\n"), None);
    }
}
