#!/usr/bin/env bash
# Builds every fuzz target once, then runs each for SECONDS (default 10), two at a time
# (FUZZ_JOBS), with bounded memory. Fails if any target finds a crash: its input is kept
# under fuzz/artifacts/<target>/ and libFuzzer prints it (base64) in the log.
#
#   bash fuzz/run.sh          # CI: a short run of every target
#   bash fuzz/run.sh 3600     # the long run: an hour each
#
# Stable Rust is enough: cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1 allows.
# What a run learns (new inputs) stays in the target directory, not in the checkout.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-10}"
jobs="${FUZZ_JOBS:-2}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/palisade-fuzz-target}"
export CARGO_TERM_COLOR=never
started=$(date +%s)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# No AddressSanitizer: the parsers are safe Rust, and without it the build is cheaper and
# the runs several times faster. Sixteen codegen units: a quicker build, barely slower runs.
build_flags=(--sanitizer none --codegen-units 16)
cargo fuzz build "${build_flags[@]}"
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
echo "fuzz: built in $(( $(date +%s) - started ))s"

run_one() {
    local target=$1 work="$CARGO_TARGET_DIR/fuzz-corpus/$1" rc=0
    mkdir -p "$work" "artifacts/$target"
    rm -f "$CARGO_TARGET_DIR/fuzz-$target.rc"
    "$bin/$target" "$work" "corpus/$target" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" >"$CARGO_TARGET_DIR/fuzz-$target.log" 2>&1 || rc=$?
    echo "$rc" >"$CARGO_TARGET_DIR/fuzz-$target.rc"
}

mapfile -t targets < <(cargo fuzz list)
for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_one "$target" &
done
wait

failed=()
for target in "${targets[@]}"; do
    log="$CARGO_TARGET_DIR/fuzz-$target.log"
    if [ "$(cat "$CARGO_TARGET_DIR/fuzz-$target.rc" 2>/dev/null)" = 0 ]; then
        status=ok
    else
        status=FAILED
        failed+=("$target")
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    printf 'fuzz: %-14s %-6s %12s executions in %ss\n' "$target" "$status" "${runs:-?}" "$seconds"
    if [ "$status" = FAILED ]; then tail -n 40 "$log" | sed "s/^/fuzz: $target: /"; fi
done

echo "fuzz: done in $(( $(date +%s) - started ))s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
