#!/usr/bin/env bash
# bench/fleet.sh — what sharing state through Redis costs a proxied request, and what
# three nodes serve on this machine against one.
#
# One run: builds Palisade in release, starts the simulated model server and a private
# redis-server (both with wrk on CPU 0), and measures the same identified chat request
# (an API key, every stage on, budgets raised as in bench/proxy.sh) through:
#
#   local   one `palisade serve`, state in process (the single-node default)
#   shared  one `palisade serve` with shared_state: every limit decided in Redis
#   fleet3  three `palisade serve` with shared_state on one store, all on CPU 1
#           (the same one core as the single node: on this 2-core machine three
#           nodes cannot add capacity, so the row shows what running a fleet costs,
#           not what it scales to)
#
# For each: requests/s at $CONNS connections (fleet3: three wrk processes, one per node,
# summed), latency at one connection (local and shared), CPU per request of the
# palisade processes (utime+stime from /proc), and Redis round trips per request (from
# palisade_shared_state_round_trips_total; lease returns and the batched token-budget
# trips counted apart: they come beside or after the request, on no request's path).
# Loopback only; stops by itself.
#
#   bench/fleet.sh            # DURATION=5 CONNS=32 BASE_PORT=18500
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out/fleet
PALISADE=${CARGO_TARGET_DIR:-$ROOT/target}/release/palisade
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
BASE_PORT=${BASE_PORT:-18500}
SIM_PORT=$BASE_PORT
REDIS_PORT=$((BASE_PORT + 1))
NODE_PORTS=($((BASE_PORT + 2)) $((BASE_PORT + 3)) $((BASE_PORT + 4)))
SECRET=5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed

export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for tool in wrk redis-server taskset curl; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install wrk redis-server util-linux curl)"
done
(($(nproc) >= 2)) || die "needs two CPUs (load on 0, gateways on 1)"

stop_all_on_exit

rm -rf "$OUT"
mkdir -p "$OUT"
log "building (release)…"
cargo build --quiet --release -p palisade --manifest-path "$ROOT/Cargo.toml"

# Each request asks something else, as people do (the same prompt over and over is
# what the abuse layer flags as a script).
cat >"$OUT/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
request = function()
    local word = {}
    for i = 1, 12 do word[i] = string.char(97 + math.random(0, 25)) end
    local body = '{"model":"palisade-sim","max_tokens":8,"messages":[{"role":"user","content":"what does '
        .. table.concat(word) .. ' mean"}]}'
    return wrk.format(nil, nil, nil, body)
end
LUA

start sim 0 env TOKIO_WORKER_THREADS=1 "$PALISADE" sim-upstream --listen "127.0.0.1:$SIM_PORT" \
    --capacity 4096 --ttft-ms 0 --tokens-per-s 0 --max-tokens 8 --log-format json
wait_ready sim 20 "http://127.0.0.1:$SIM_PORT/v1/models"
start redis 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

HZ=$(getconf CLK_TCK)
metric() { # PORT NAME -> value (0 when absent)
    curl -fsS -m 5 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}
beside() { # PORT -> calls made beside or after requests: lease returns and budget trips
    echo $(($(metric "$1" palisade_shared_state_lease_releases_total) + $(metric "$1" palisade_shared_state_budget_updates_total)))
}
# wrk PORT CONNS SECONDS [--latency] -> "<requests> <seconds> <non2xx> <avg latency> <p99>" on stdout
run_wrk() {
    local port=$1 conns=$2 secs=$3 extra=${4:-} out
    out=$(BENCH_KEY=$KEY taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s $extra -s "$OUT/chat.lua" \
        "http://127.0.0.1:$port/v1/chat/completions")
    echo "$out" >>"$OUT/wrk.log"
    local total non2xx avg p99
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
    avg=$(awk '$1 == "Latency" {print $2; exit}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "${total:-0} $secs ${non2xx:-0} ${avg:--} ${p99:--}"
}

# start_nodes MODE N — N gateways on one store (and, unless MODE is local, one Redis).
start_nodes() {
    local mode=$1 n=$2 i
    rm -rf "$OUT/data"
    palisade_proxy_env "$SIM_PORT" "$OUT/data"
    # A benchmark's steady load is not an attack: the detector's request floor is raised
    # past it (its other signals stay on), in every setup alike.
    NODE_ENV=("${PALISADE_ENV[@]}" PALISADE_SHIELD__SECRET=$SECRET
        PALISADE_SHIELD__ATTACK__REQUESTS__FLOOR_PER_SEC=1000000000)
    if [[ $mode != local ]]; then
        NODE_ENV+=(PALISADE_SHARED_STATE="redis://127.0.0.1:$REDIS_PORT" PALISADE_FLEET__NODES="$n"
            PALISADE_FLEET__KEY_PREFIX="bench-$mode-$RANDOM")
    fi
    KEY=$(env "${NODE_ENV[@]}" "$PALISADE" keys create --name bench 2>>"$OUT/keys.log" | grep -Eo '^pal_[A-Za-z0-9_-]+' || true)
    [[ -n $KEY ]] || die "palisade keys create printed no key; see $OUT/keys.log"
    for ((i = 0; i < n; i++)); do
        start "node$i" 1 env TOKIO_WORKER_THREADS=1 "${NODE_ENV[@]}" \
            "$PALISADE" serve --listen "127.0.0.1:${NODE_PORTS[$i]}" --log-format json
        wait_ready "node$i" 30 "http://127.0.0.1:${NODE_PORTS[$i]}/readyz" || die "node$i did not start"
    done
    for ((i = 0; i < n; i++)); do # warm: the key in every node's credential cache
        BENCH_KEY=$KEY taskset -c 0 wrk -t1 -c4 -d1s -s "$OUT/chat.lua" "http://127.0.0.1:${NODE_PORTS[$i]}/v1/chat/completions" >/dev/null
    done
}
stop_nodes() {
    local i
    for ((i = 0; i < $1; i++)); do stop_group "node$i"; done
}

declare -A ROW=()
measure() { # MODE N
    local mode=$1 n=$2 i ticks0=0 ticks1=0 trips0=0 trips1=0 back0=0 back1=0
    start_nodes "$mode" "$n"
    for ((i = 0; i < n; i++)); do
        ticks0=$((ticks0 + $(group_ticks "${PGID[node$i]}")))
        trips0=$(awk -v a="$trips0" -v b="$(metric "${NODE_PORTS[$i]}" palisade_shared_state_round_trips_total)" 'BEGIN { print a + b }')
        back0=$(awk -v a="$back0" -v b="$(beside "${NODE_PORTS[$i]}")" 'BEGIN { print a + b }')
    done
    local per=$(((CONNS + n - 1) / n)) total=0 non2xx=0 pids=() files=()
    for ((i = 0; i < n; i++)); do
        run_wrk "${NODE_PORTS[$i]}" "$per" "$DURATION" >"$OUT/$mode-$i.txt" &
        pids+=($!)
        files+=("$OUT/$mode-$i.txt")
    done
    wait "${pids[@]}"
    local f r s x _
    for f in "${files[@]}"; do
        read -r r s x _ <"$f"
        total=$((total + r))
        non2xx=$((non2xx + x))
    done
    sleep 0.5 # lease returns and budget settlements come just after the replies
    for ((i = 0; i < n; i++)); do
        ticks1=$((ticks1 + $(group_ticks "${PGID[node$i]}")))
        trips1=$(awk -v a="$trips1" -v b="$(metric "${NODE_PORTS[$i]}" palisade_shared_state_round_trips_total)" 'BEGIN { print a + b }')
        back1=$(awk -v a="$back1" -v b="$(beside "${NODE_PORTS[$i]}")" 'BEGIN { print a + b }')
    done
    local latency="-"
    if ((n == 1)); then
        read -r _ _ _ avg p99 < <(run_wrk "${NODE_PORTS[0]}" 1 "$DURATION" --latency)
        latency="$avg / $p99"
    fi
    stop_nodes "$n"
    ((non2xx == 0)) || die "$mode: $non2xx non-2xx replies (see $OUT/wrk.log)"
    ROW[$mode]=$(awk -v t="$total" -v d="$DURATION" -v c0="$ticks0" -v c1="$ticks1" -v hz="$HZ" \
        -v r0="$trips0" -v r1="$trips1" -v b0="$back0" -v b1="$back1" -v lat="$latency" 'BEGIN {
            rps = t / d; cpu = (c1 - c0) / hz * 1e6 / t
            trips = (r1 - r0 - (b1 - b0)) / t; back = (b1 - b0) / t
            printf "%.0f|%.1f|%.2f|%.2f|%s", rps, cpu, trips, back, lat }')
    log "$mode ($n node(s)): ${ROW[$mode]}"
}

measure local 1
measure shared 1
measure fleet3 3

IFS='|' read -r L_RPS L_CPU _ _ L_LAT <<<"${ROW[local]}"
IFS='|' read -r S_RPS S_CPU S_TRIPS S_BACK S_LAT <<<"${ROW[shared]}"
IFS='|' read -r F_RPS F_CPU F_TRIPS F_BACK _ <<<"${ROW[fleet3]}"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
{
    echo "fleet: identified chat request, wrk -c$CONNS ${DURATION}s (fleet3: three wrk, one per node), load on CPU 0, gateways on CPU 1"
    printf '| %-8s | %10s | %8s | %13s | %17s | %19s | %22s |\n' "setup" "requests/s" "vs local" "CPU µs/request" "CPU vs local" "Redis trips/request" "latency avg / p99 (1 conn)"
    printf '| %-8s | %10s | %8s | %13s | %17s | %19s | %22s |\n' local "$L_RPS" 1.00 "$L_CPU" 1.00 0 "$L_LAT"
    printf '| %-8s | %10s | %8s | %13s | %17s | %19s | %22s |\n' shared "$S_RPS" "$(ratio "$S_RPS" "$L_RPS")" "$S_CPU" "$(ratio "$S_CPU" "$L_CPU")" "$S_TRIPS (+$S_BACK after)" "$S_LAT"
    printf '| %-8s | %10s | %8s | %13s | %17s | %19s | %22s |\n' fleet3 "$F_RPS" "$(ratio "$F_RPS" "$L_RPS")" "$F_CPU" "$(ratio "$F_CPU" "$L_CPU")" "$F_TRIPS (+$F_BACK after)" "-"
} | tee "$OUT/table.md"
