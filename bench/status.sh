#!/usr/bin/env bash
# bench/status.sh — does the status page stay fast while the API is flooded?
#
# One run, loopback only, stops by itself:
#   1. builds Palisade in release (NO_BUILD=1 skips) and starts `palisade serve`
#      with the built-in simulated model and anonymous inference allowed;
#   2. baseline: wrk at $PROBE_CONNS connections measures /status and
#      /api/v2/summary.json for $PROBE_S seconds each, nothing else running;
#   3. flood: wrk at $FLOOD_CONNS connections posts /v1/chat/completions for
#      $FLOOD_S seconds while the same probes run again;
#   4. prints p50/p99 of each probe with and without the flood (the anchor is
#      the same binary, machine and run), and the flood's own throughput.
# Raw wrk output lands in bench/out/status-*.txt (gitignored).
#
# The target: /status p99 under 5 ms while the API is flooded. The status
# page's per-client limit is raised for the probe (all probes come from
# 127.0.0.1); its cost is still paid on every request. So is the per-address
# connection cap: the flood's 256 connections all come from 127.0.0.1 too.
#
# Environment knobs (defaults in brackets):
#   FLOOD_S      seconds of flood, at most 20 [20]
#   FLOOD_CONNS  flood connections [256]
#   PROBE_S      seconds per probe run, at most 8 [8]
#   PROBE_CONNS  probe connections, 1..4 [2]
#   PORT         port on 127.0.0.1 [18480]
#   LANE=1       serve the status page on its own listener and thread
#                (`status.listen`, port PORT+1) and probe that one [1];
#                LANE=0 probes the main listener, shared with the flood
#   NO_BUILD=1   use the release binary as it is
#   BIN          the binary to run [target/release/palisade]
#
# Exit status: 0 when everything ran and every probe answer was a 2xx; 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out
PALISADE=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/palisade}
FLOOD_S=${FLOOD_S:-20}
FLOOD_CONNS=${FLOOD_CONNS:-256}
PROBE_S=${PROBE_S:-8}
PROBE_CONNS=${PROBE_CONNS:-2}
PORT=${PORT:-18480}
BASE=http://127.0.0.1:$PORT
LANE=${LANE:-1}
PROBE_BASE=$BASE
if [[ $LANE == 1 ]]; then PROBE_BASE=http://127.0.0.1:$((PORT + 1)); fi
PROBES=(/status /api/v2/summary.json)

((FLOOD_S >= 1 && FLOOD_S <= 20)) || { echo "FLOOD_S must be 1..20" >&2; exit 2; }
((PROBE_S >= 1 && PROBE_S <= 8)) || { echo "PROBE_S must be 1..8" >&2; exit 2; }
((PROBE_CONNS >= 1 && PROBE_CONNS <= 4)) || { echo "PROBE_CONNS must be 1..4" >&2; exit 2; }
# The probes share the flood's window: both of them must fit inside it.
((${#PROBES[@]} * PROBE_S + 2 <= FLOOD_S)) || { echo "FLOOD_S must be at least $((${#PROBES[@]} * PROBE_S + 2))" >&2; exit 2; }

export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

command -v wrk >/dev/null || die "wrk is missing (apt-get install -y wrk)"
command -v curl >/dev/null || die "curl is missing (apt-get install -y curl)"
mkdir -p "$OUT"
DATA=$(mktemp -d)

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    rm -rf "$DATA"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {
    local name=$1
    shift
    setsid "$@" >"$OUT/status-$name.log" 2>&1 </dev/null &
    PGID[$name]=$!
}

if [[ ${NO_BUILD:-} != 1 ]]; then
    log "building palisade (release)"
    (cd "$ROOT" && cargo build --release --bin palisade) >"$OUT/status-build.log" 2>&1 \
        || die "build failed; see $OUT/status-build.log"
fi
[[ -x $PALISADE ]] || die "no binary at $PALISADE"
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is busy (set PORT)"

LANE_ENV=
if [[ $LANE == 1 ]]; then LANE_ENV="PALISADE_STATUS__LISTEN=127.0.0.1:$((PORT + 1))"; fi
log "starting palisade on $BASE (built-in simulated model; status probes on $PROBE_BASE)"
start palisade env -C "$DATA" \
    PALISADE_LISTEN="127.0.0.1:$PORT" \
    PALISADE_LOG__LEVEL=warn \
    PALISADE_AUTH__ALLOW_ANONYMOUS_INFERENCE=true \
    PALISADE_STATUS__RATE_LIMIT__PER_S=1000000 \
    PALISADE_STATUS__RATE_LIMIT__BURST=1000000 \
    PALISADE_SERVER__MAX_CONNECTIONS_PER_ADDRESS=4096 \
    ${LANE_ENV:+"$LANE_ENV"} \
    "$PALISADE" serve
for ((i = 0; i < 300; i++)); do
    curl -fs -o /dev/null "$PROBE_BASE/status" && break
    kill -0 "${PGID[palisade]}" 2>/dev/null || die "palisade exited; see $OUT/status-palisade.log"
    sleep 0.1
done
curl -fs -o /dev/null "$PROBE_BASE/status" || die "palisade did not answer within 30 s"

cat >"$OUT/status-flood.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"palisade-sim","max_tokens":8,"messages":[{"role":"user","content":"hello"}]}'
LUA

# probe LABEL PATH — one latency run against PATH.
probe() {
    local label=$1 path=$2
    wrk -t1 -c"$PROBE_CONNS" -d"${PROBE_S}s" --timeout 5s --latency "$PROBE_BASE$path" \
        >"$OUT/status-$label-${path//\//_}.txt" 2>&1
}

# Latency percentile ("50%" or "99%") from a wrk --latency report, in ms.
percentile_ms() {
    awk -v p="$2" '$1 == p {
        v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v);
        if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; else if (unit == "m") v *= 60000;
        printf "%.3f", v; exit }' "$1"
}
requests_per_s() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }
non_2xx() { awk '/Non-2xx or 3xx responses:/ { n = $5 } END { print n + 0 }' "$1"; }

log "warm-up"
wrk -t1 -c2 -d2s "$BASE/status" >/dev/null 2>&1 || true

log "baseline: probes alone, ${PROBE_S}s each"
for path in "${PROBES[@]}"; do probe quiet "$path"; done

log "flood: $FLOOD_CONNS connections on /v1/chat/completions for ${FLOOD_S}s, probes meanwhile"
start flood wrk -t2 -c"$FLOOD_CONNS" -d"${FLOOD_S}s" --timeout 10s -s "$OUT/status-flood.lua" "$BASE/v1/chat/completions"
sleep 1 # let the flood build up before measuring under it
for path in "${PROBES[@]}"; do probe flood "$path"; done
wait "${PGID[flood]}" 2>/dev/null || true
unset "PGID[flood]"
mv "$OUT/status-flood.log" "$OUT/status-flood.txt"

failed=0
{
    echo "status page latency, $(date -u +%FT%TZ), $(nproc) CPUs, $PROBE_CONNS probe connections"
    printf '%-22s %12s %12s %12s %12s %10s\n' path "p50 quiet" "p99 quiet" "p50 flood" "p99 flood" non-2xx
    for path in "${PROBES[@]}"; do
        q=$OUT/status-quiet-${path//\//_}.txt
        f=$OUT/status-flood-${path//\//_}.txt
        bad=$(($(non_2xx "$q") + $(non_2xx "$f")))
        ((bad == 0)) || failed=1
        printf '%-22s %10sms %10sms %10sms %10sms %10s\n' "$path" \
            "$(percentile_ms "$q" 50%)" "$(percentile_ms "$q" 99%)" \
            "$(percentile_ms "$f" 50%)" "$(percentile_ms "$f" 99%)" "$bad"
    done
    flood=$OUT/status-flood.txt
    echo "flood: $(requests_per_s "$flood") requests/s on /v1/chat/completions, $(non_2xx "$flood") of them refused (non-2xx)"
} | tee "$OUT/status-summary.txt"
exit "$failed"
