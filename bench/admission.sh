#!/usr/bin/env bash
# bench/admission.sh — the priority-admission proof.
#
# A simulated model of capacity C (8 concurrent replies of ~190 ms), logged-in
# users (registered, verified and logged in through /auth, each from its own
# address) chatting at 0.5× C, and an anonymous flood at 20× C from 400
# addresses on 127.0.0.0/8. Two runs against fresh `palisade serve` processes:
# admission on (the default) and admission off (a plain proxy), each with a
# quiet phase (users alone) and a flood phase. Loopback only; bounded (about
# 2 × (QUIET_S + FLOOD_S) seconds plus start-up and the drain of queued
# requests, each at most 60 s).
#
# Knobs: CAPACITY [8], QUIET_S [10], FLOOD_S [15], MEMBERS [20], BOTS [400],
# MODES ["on off"], NO_BUILD=1 to reuse the release build.
# Output: the table on stdout, bench/out/admission.json, bench/out/admission.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$OUT"
cd "$ROOT"
if [[ ${NO_BUILD:-} != 1 ]]; then
    echo "[admission.sh] cargo build --release (palisade, the flood example)" >&2
    { cargo build --release -p palisade && cargo build --release -p drill --example priority_flood; } \
        >"$OUT/admission-build.log" 2>&1 ||
        { tail -n 30 "$OUT/admission-build.log" >&2; exit 1; }
fi
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)  nproc: $(nproc)"
    echo "palisade: $(git rev-parse --short HEAD 2>/dev/null)"
    echo
    timeout 600 "$TARGET/release/examples/priority_flood" "$TARGET/release/palisade" "$OUT/admission.json"
} | tee "$OUT/admission.txt"
