//! The optional semantic layer: nearest-neighbour scoring of a request against labelled
//! attack examples, with a small sentence-embedding model loaded from a local directory.
//!
//! The patterns of [`score_text`](crate::score_text) catch what they were written for; a
//! request that asks for the system prompt in words no pattern anticipated still lands
//! near the reference attacks in embedding space. A request is flagged when its cosine
//! similarity to the nearest reference attack reaches the threshold *and* it is closer to
//! that attack than to any benign reference (the benign set is what keeps "what are the
//! rules of chess" from riding on the word "rules").
//!
//! The encoder needs the cargo feature `semantic` (candle BERT and `tokenizers`, pure Rust).
//! Without it [`SemanticIndex::load`] returns [`SemanticError::NotBuilt`], so a
//! configuration that names a model fails at start instead of silently scoring nothing.
//! Nothing is downloaded: the model directory must hold `config.json`, `tokenizer.json`
//! and `model.safetensors` (a BERT sentence encoder such as all-MiniLM-L6-v2).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::request::{Messages, RequestText};

#[cfg(feature = "semantic")]
mod encoder;
#[cfg(feature = "semantic")]
use encoder::{Encoder, LoadError};

/// Texts per forward pass. Padding makes every text in a batch as long as the longest, so
/// a small batch wastes little on mixed lengths while still amortising the matmuls.
const BATCH: usize = 16;

/// Tokens embedded per text, `[CLS]` and `[SEP]` included; the rest is cut off. Attention
/// cost grows with the square of this, and all-MiniLM-L6-v2 was trained on 128–256-token
/// inputs, so a longer window costs more without matching better.
pub const MAX_TOKENS: usize = 256;

/// Bytes of a text handed to the tokenizer. 256 tokens are rarely more than 2 KB of text;
/// the bound keeps tokenizing a megabyte-long message from costing more than the model.
pub const MAX_EMBED_BYTES: usize = 8 * 1024;

/// Reference attacks written for the project, plus the issue-19 tuning attacks: the
/// built-in examples every index starts from.
const BUILTIN_ATTACKS: &str = include_str!("semantic/attacks.txt");
const TUNING_ATTACKS_TSV: &str = include_str!("../eval/tuning_attacks.tsv");
/// Benign references: the project's everyday prompts and the hand-written hard negatives.
const BENIGN_PROMPTS: &str = include_str!("../eval/benign_prompts.txt");
const HARD_NEGATIVES_TSV: &str = include_str!("../eval/hard_negatives.tsv");

/// Why the semantic layer could not be built or could not score.
#[derive(Debug, thiserror::Error)]
pub enum SemanticError {
    #[error("this build has no semantic layer (rebuild with the cargo feature `semantic`)")]
    NotBuilt,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable model file: {reason}")]
    BadModel { path: PathBuf, reason: String },
    #[error("the embedding model failed: {0}")]
    Inference(String),
    #[error("no reference attacks to compare with")]
    NoReferences,
}

/// The built-in reference sets, as (attacks, benign) lists of texts.
pub fn builtin_references() -> (Vec<String>, Vec<String>) {
    let lines = |text: &'static str| text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut attacks: Vec<String> = lines(BUILTIN_ATTACKS).map(str::to_owned).collect();
    // tuning_attacks.tsv: lang \t label \t text.
    attacks.extend(lines(TUNING_ATTACKS_TSV).filter_map(|l| l.splitn(3, '\t').nth(2)).map(str::to_owned));
    let mut benign: Vec<String> = lines(BENIGN_PROMPTS).map(str::to_owned).collect();
    // hard_negatives.tsv: lang \t text.
    benign.extend(lines(HARD_NEGATIVES_TSV).filter_map(|l| l.split_once('\t')).map(|(_, t)| t.to_owned()));
    (attacks, benign)
}

/// Reads extra reference attacks from an operator file: one per line, `#` comments.
pub fn read_examples(path: &Path) -> Result<Vec<String>, SemanticError> {
    let text = std::fs::read_to_string(path).map_err(|source| SemanticError::Read { path: path.into(), source })?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

/// One unit-length embedding per text, `dim` floats each, back to back.
#[derive(Clone, Default)]
pub struct Embeddings {
    dim: usize,
    data: Vec<f32>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn get(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The highest cosine similarity between `query` and any row not excluded by `skip`
    /// (rows are unit length, so this is a dot product), with that row's index.
    pub fn nearest(&self, query: &[f32], skip: impl Fn(usize) -> bool) -> (f32, Option<usize>) {
        let mut best = (-1.0f32, None);
        for i in 0..self.len() {
            if skip(i) {
                continue;
            }
            let s: f32 = self.get(i).iter().zip(query).map(|(a, b)| a * b).sum();
            if s > best.0 {
                best = (s, Some(i));
            }
        }
        best
    }
}

/// How close one text came to the references.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticScore {
    /// Cosine similarity to the nearest reference attack.
    pub attack: f32,
    /// Cosine similarity to the nearest benign reference.
    pub benign: f32,
    /// `attack` reached the threshold and beat `benign`.
    pub flagged: bool,
}

impl SemanticScore {
    /// The decision rule, one place for the gateway and the evaluation alike.
    pub fn decide(attack: f32, benign: f32, threshold: f32) -> Self {
        Self { attack, benign, flagged: attack >= threshold && attack > benign }
    }
}

/// The encoder plus the embedded reference sets, built once at start and shared.
pub struct SemanticIndex {
    encoder: Encoder,
    attacks: Embeddings,
    benign: Embeddings,
    threshold: f32,
}

impl fmt::Debug for SemanticIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemanticIndex")
            .field("attacks", &self.attacks.len())
            .field("benign", &self.benign.len())
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl SemanticIndex {
    /// Loads the model in `model_dir` and embeds the references (a few seconds on two
    /// cores for the built-in sets: done once, at start).
    pub fn load(
        model_dir: &Path,
        attacks: &[String],
        benign: &[String],
        threshold: f32,
    ) -> Result<Self, SemanticError> {
        if cfg!(not(feature = "semantic")) {
            return Err(SemanticError::NotBuilt);
        }
        let encoder = Encoder::load(model_dir, MAX_TOKENS).map_err(|e| match e {
            LoadError::Read(path, source) => SemanticError::Read { path, source },
            LoadError::Bad(path, reason) => SemanticError::BadModel { path, reason },
        })?;
        Self::with_encoder(encoder, attacks, benign, threshold)
    }

    /// [`load`](Self::load) with the built-in references plus `extra` attacks.
    pub fn load_builtin(model_dir: &Path, extra: &[String], threshold: f32) -> Result<Self, SemanticError> {
        let (mut attacks, benign) = builtin_references();
        attacks.extend_from_slice(extra);
        Self::load(model_dir, &attacks, &benign, threshold)
    }

    fn with_encoder(
        encoder: Encoder,
        attacks: &[String],
        benign: &[String],
        threshold: f32,
    ) -> Result<Self, SemanticError> {
        if attacks.is_empty() {
            return Err(SemanticError::NoReferences);
        }
        let attacks = embed_all(&encoder, attacks)?;
        let benign = embed_all(&encoder, benign)?;
        Ok(Self { encoder, attacks, benign, threshold })
    }

    /// Embeds `texts` (each cut to [`MAX_EMBED_BYTES`] and [`MAX_TOKENS`]).
    pub fn embed(&self, texts: &[String]) -> Result<Embeddings, SemanticError> {
        embed_all(&self.encoder, texts)
    }

    pub fn attacks(&self) -> &Embeddings {
        &self.attacks
    }

    pub fn benign(&self) -> &Embeddings {
        &self.benign
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Scores one text. CPU-bound (milliseconds): callers on an async runtime run it on a
    /// blocking pool.
    pub fn score(&self, text: &str) -> Result<SemanticScore, SemanticError> {
        let e = embed_all(&self.encoder, &[text.to_owned()])?;
        let query = e.get(0);
        let (attack, _) = self.attacks.nearest(query, |_| false);
        let (benign, _) = self.benign.nearest(query, |_| false);
        Ok(SemanticScore::decide(attack, benign, self.threshold))
    }
}

/// Embeds `texts` in batches, each cut to [`MAX_EMBED_BYTES`] first.
fn embed_all(encoder: &Encoder, texts: &[String]) -> Result<Embeddings, SemanticError> {
    let mut out = Embeddings::default();
    for chunk in texts.chunks(BATCH) {
        let inputs: Vec<&str> = chunk.iter().map(|t| clip(t, MAX_EMBED_BYTES)).collect();
        let (dim, data) = encoder.embed_batch(&inputs).map_err(SemanticError::Inference)?;
        out.dim = dim;
        out.data.extend(data);
    }
    Ok(out)
}

/// What the semantic layer embeds for a request: its last user turn (all text parts), or
/// its prompt, cut to [`MAX_EMBED_BYTES`]. Only the latest turn: earlier turns were
/// scored when they were sent, and one embedding per request keeps the cost flat.
pub fn query_text(text: &RequestText) -> Option<String> {
    let parts: &[std::borrow::Cow<'_, str>] = match (&text.messages, &text.prompt) {
        (Some(Messages(Some(messages))), _) => {
            &messages.iter().rev().find(|m| m.role.as_deref() == Some("user"))?.content
        }
        (_, Some(prompt)) => &prompt.0,
        _ => return None,
    };
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(clip(p, MAX_EMBED_BYTES - out.len().min(MAX_EMBED_BYTES)));
        if out.len() >= MAX_EMBED_BYTES {
            break;
        }
    }
    (!out.trim().is_empty()).then_some(out)
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Stands in for the encoder in builds without the `semantic` feature: it cannot be
/// constructed, so everything past `load` is unreachable.
#[cfg(not(feature = "semantic"))]
enum Encoder {}

#[cfg(not(feature = "semantic"))]
#[allow(dead_code)] // the same shape as the real one, so `load` maps both alike
enum LoadError {
    Read(PathBuf, std::io::Error),
    Bad(PathBuf, String),
}

#[cfg(not(feature = "semantic"))]
impl Encoder {
    fn load(path: &Path, _: usize) -> Result<Self, LoadError> {
        Err(LoadError::Bad(path.to_owned(), "this build has no semantic layer".into()))
    }

    fn embed_batch(&self, _: &[&str]) -> Result<(usize, Vec<f32>), String> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_references_are_loaded() {
        let (attacks, benign) = builtin_references();
        assert!(attacks.len() > 60, "{}", attacks.len());
        assert!(benign.len() > 300, "{}", benign.len());
        assert!(attacks.iter().all(|a| !a.starts_with('#') && !a.contains('\t')));
    }

    #[test]
    fn nearest_skips_excluded_rows() {
        let e = Embeddings { dim: 2, data: vec![1.0, 0.0, 0.0, 1.0] };
        assert_eq!(e.nearest(&[1.0, 0.0], |_| false), (1.0, Some(0)));
        assert_eq!(e.nearest(&[1.0, 0.0], |i| i == 0), (0.0, Some(1)));
    }

    #[test]
    fn decide_needs_threshold_and_beating_benign() {
        assert!(SemanticScore::decide(0.8, 0.5, 0.7).flagged);
        assert!(!SemanticScore::decide(0.6, 0.5, 0.7).flagged);
        assert!(!SemanticScore::decide(0.8, 0.9, 0.7).flagged);
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("abc", 10), "abc");
    }

    #[cfg(not(feature = "semantic"))]
    #[test]
    fn without_the_feature_loading_says_so() {
        let err = SemanticIndex::load_builtin(Path::new("/nonexistent"), &[], 0.5).unwrap_err();
        assert!(matches!(err, SemanticError::NotBuilt));
    }
}
