//! A BERT sentence encoder on candle (CPU, f32): tokenizer, model, masked mean pooling and
//! L2 normalisation, the recipe sentence-transformers uses for the MiniLM family.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

// Nothing is imported from the parent module (`semantic` uses this one): errors and
// results are this module's own, and the parent maps them.

/// Why the model could not be loaded.
pub(super) enum LoadError {
    Read(PathBuf, std::io::Error),
    Bad(PathBuf, String),
}

pub(super) struct Encoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

fn bad(path: &Path, reason: impl ToString) -> LoadError {
    LoadError::Bad(path.to_owned(), reason.to_string())
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError::Read(path.to_owned(), e))
}

impl Encoder {
    /// `path` is the model directory, or its `model.safetensors` (the directory is then
    /// the file's parent). Texts are cut to `max_tokens` tokens.
    pub(super) fn load(path: &Path, max_tokens: usize) -> Result<Self, LoadError> {
        let dir: PathBuf = if path.is_file() { path.parent().unwrap_or(Path::new(".")).into() } else { path.into() };
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_slice(&read(&config_path)?).map_err(|e| bad(&config_path, e))?;

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_bytes(read(&tokenizer_path)?).map_err(|e| bad(&tokenizer_path, e))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| bad(&tokenizer_path, e))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));

        let weights_path = dir.join("model.safetensors");
        let device = Device::Cpu;
        // Read into memory rather than mmap: 90 MB once at start, and no `unsafe` over a
        // file that could change underneath the process.
        let vb = VarBuilder::from_buffered_safetensors(read(&weights_path)?, DType::F32, &device)
            .map_err(|e| bad(&weights_path, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| bad(&weights_path, e))?;
        Ok(Self { model, tokenizer, device })
    }

    /// One unit-length embedding per text, back to back, and their dimension.
    pub(super) fn embed_batch(&self, texts: &[&str]) -> Result<(usize, Vec<f32>), String> {
        self.forward(texts).map_err(|e| e.to_string())
    }

    fn forward(&self, texts: &[&str]) -> Result<(usize, Vec<f32>), Box<dyn std::error::Error + Send + Sync>> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        let rows = encodings.len();
        let len = encodings.first().map_or(0, |e| e.len());
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (rows, len), &self.device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (rows, len, dim)
        // Mean over the real tokens only: padding must not pull short texts together.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let unit = mean.broadcast_div(&norm)?;
        let dim = unit.dim(1)?;
        Ok((dim, unit.flatten_all()?.to_vec1::<f32>()?))
    }
}
