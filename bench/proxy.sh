#!/usr/bin/env bash
# bench/proxy.sh — what a proxy in front of the model server costs.
#
# One run: installs what is missing (wrk, nginx, LiteLLM in bench/out/venv),
# builds Palisade in release, starts the simulated model server (instant
# replies), and measures four ways to reach it:
#
#   direct    wrk -> sim
#   palisade  wrk -> palisade serve -> sim
#   hyper     wrk -> a bare relay on hyper (crates/gateway/examples/hyper_proxy.rs)
#             -> sim: Palisade's HTTP libraries doing nothing else, the floor of
#             what Palisade can cost (run it with TARGETS, it is not a default)
#   nginx     wrk -> nginx (proxy_pass, upstream keepalive, 1 worker) -> sim
#   litellm   wrk -> LiteLLM proxy (1 uvicorn worker) -> sim
#
# Pinning, the same for every target: the sim and wrk on CPU 0, the proxy under
# test on CPU 1. Every proxy gets one thread of work: nginx `worker_processes 1`,
# Palisade and the hyper relay TOKIO_WORKER_THREADS=1 (checked from /proc at run time), LiteLLM one
# uvicorn worker (Python: one event loop).
#
# For each target: a warm-up, then for each reply mode throughput at $CONNS
# connections and latency at one connection. Reply modes:
#   whole   the plain request, answered with one JSON body
#   stream  the same request with "stream": true, answered as server-sent events
# Raw output lands in bench/out/ (gitignored); the tables are printed and
# written to bench/out/table.md.
#
# Environment knobs (defaults in brackets):
#   TARGETS    targets to run, in order ["direct palisade nginx litellm"]
#   DURATION   seconds per measured wrk run, at most 10 [10]
#   WARMUP     seconds of warm-up per target [3]
#   CONNS      connections for the throughput run [32]
#   MODES      reply modes to measure ["whole stream"]
#   EXTRA_BUDGET seconds, in all, to spend waiting for other processes to
#              leave the CPUs idle and repeating runs they disturbed [90]
#   QUIET_PCT  idle means both CPUs under this % busy [15]
#   OTHER_PCT  a run is disturbed when others used more than this % of a CPU [20]
#   NICE       niceness of everything measured; -20 (needs root) lets it run
#              before other processes' CPU work on a shared machine [-20]
#   BASE_PORT  first of five consecutive ports on 127.0.0.1 [18400]
#   NO_BUILD=1 use target/release/palisade as it is
#   TLS=1      Palisade and nginx serve HTTPS on one certificate (ECDSA P-256,
#              made here with openssl), and MODES defaults to "whole handshake":
#              `handshake` is the plain request on a new connection each time
#              (`Connection: close`), so its req/s are full TLS handshakes per second
#
# Exit status: 0 when every target started and answered its runs with 2xx only;
# 1 when a target failed to start (or to install), or a run had errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out
VENV=$OUT/venv
PALISADE=${CARGO_TARGET_DIR:-$ROOT/target}/release/palisade

TARGETS=${TARGETS:-"direct palisade nginx litellm"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
TLS=${TLS:-0}
if [[ $TLS == 1 ]]; then MODES=${MODES:-"whole handshake"}; else MODES=${MODES:-"whole stream"}; fi
SCHEME=http
CURL_TLS=()
if [[ $TLS == 1 ]]; then SCHEME=https CURL_TLS=(--cacert "$OUT/tls/cert.pem"); fi
EXTRA_BUDGET=${EXTRA_BUDGET:-90}
QUIET_PCT=${QUIET_PCT:-15}
OTHER_PCT=${OTHER_PCT:-20}
NICE=${NICE:--20}
BASE_PORT=${BASE_PORT:-18400}
SIM_PORT=$BASE_PORT
PALISADE_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
LITELLM_PORT=$((BASE_PORT + 3))
HYPER_PORT=$((BASE_PORT + 4))
HYPER_PROXY=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/hyper_proxy
LOAD_CPU=0  # the sim and wrk
PROXY_CPU=1 # the proxy under test
BODY='{"model":"palisade-sim","max_tokens":8,"messages":[{"role":"user","content":"hello"}]}'
STREAM_BODY='{"model":"palisade-sim","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hello"}]}'
# The client's API key. Palisade checks its own (created in its store before it
# starts, see start_target) and does not forward it; LiteLLM checks this one (its
# master key); nginx forwards it and the sim ignores it.
LITELLM_KEY=sk-bench-proxy-overhead-not-a-secret
declare -A BEARER=()
CHAT_PATH=/v1/chat/completions

((DURATION >= 1 && DURATION <= 10)) || { echo "DURATION must be 1..10 seconds" >&2; exit 2; }

export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

# ---------------------------------------------------------------- processes
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
stop_all_on_exit

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# chat_ok TARGET — one plain and one streamed request, checked for a 200 with
# an OpenAI-shaped body.
chat_ok() {
    local url bearer=${BEARER[$1]:-$LITELLM_KEY} reply
    url=$(target_url "$1")
    reply=$(curl -sS --noproxy '*' "${CURL_TLS[@]}" -m 10 -w '\n%{http_code}' -H 'content-type: application/json' \
        -H "authorization: Bearer $bearer" -d "$BODY" "$url$CHAT_PATH") || return 1
    if [[ ${reply##*$'\n'} != 200 || $reply != *'"choices"'* ]]; then
        log "bad reply from $1: $reply"
        return 1
    fi
    reply=$(curl -sS --noproxy '*' "${CURL_TLS[@]}" -m 10 -w '\n%{http_code}' -H 'content-type: application/json' \
        -H "authorization: Bearer $bearer" -d "$STREAM_BODY" "$url$CHAT_PATH") || return 1
    if [[ ${reply##*$'\n'} != 200 || $reply != *'data: [DONE]'* ]]; then
        log "bad streamed reply from $1: $reply"
        return 1
    fi
}

# ---------------------------------------------------------------- CPU usage
# Jiffies of one CPU, and utime+stime of a process group, from /proc.
cpu_busy_total() { # CPU -> "busy total user+nice+system" (busy counts irq, softirq, steal too)
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t, $2 + $3 + $4 }' /proc/stat
}
HZ=$(getconf CLK_TCK)

# Others may share this machine (a build, a test run); their load would be
# measured as ours. So before each target we wait for both CPUs to be idle, and
# a run during which processes other than ours used more than $OTHER_PCT % of a
# CPU is repeated (at most twice). Waiting and repeating draw on one budget of
# $EXTRA_BUDGET seconds for the whole script, which keeps its time bounded.
EXTRA_LEFT=$EXTRA_BUDGET

# busy_now — the busier CPU's use in percent over one second.
busy_now() {
    local a0 b0 a1 b1
    a0=$(cpu_busy_total "$LOAD_CPU") b0=$(cpu_busy_total "$PROXY_CPU")
    sleep 1
    a1=$(cpu_busy_total "$LOAD_CPU") b1=$(cpu_busy_total "$PROXY_CPU")
    awk -v a0="$a0" -v a1="$a1" -v b0="$b0" -v b1="$b1" 'BEGIN {
        split(a0, A, " "); split(a1, B, " "); split(b0, C, " "); split(b1, D, " ")
        x = 100 * (B[1] - A[1]) / (B[2] - A[2]); y = 100 * (D[1] - C[1]) / (D[2] - C[2])
        printf "%.0f", (x > y ? x : y) }'
}

# wait_quiet — until both CPUs are under $QUIET_PCT % busy, or the budget is spent.
wait_quiet() {
    local busy start=$SECONDS
    while :; do
        busy=$(busy_now)
        if ((busy < QUIET_PCT)); then
            break
        fi
        if ((EXTRA_LEFT - (SECONDS - start) <= 0)); then
            log "warning: the machine is busy (a CPU at ${busy}% before any load from us); measuring anyway"
            break
        fi
        log "waiting for the machine to be quiet (a CPU at ${busy}% before any load from us)"
    done
    EXTRA_LEFT=$((EXTRA_LEFT - (SECONDS - start)))
}

# ---------------------------------------------------------------- installs
install_tools() {
    local -a missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v curl >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    if ((${#missing[@]})); then
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${missing[@]}" >"$OUT/apt.log" 2>&1 ||
            { apt-get update -qq >>"$OUT/apt.log" 2>&1 && apt-get install -y -qq "${missing[@]}" >>"$OUT/apt.log" 2>&1; } ||
            die "apt-get install ${missing[*]} failed; see $OUT/apt.log"
    fi
}

LITELLM_STATUS=ok
install_litellm() {
    if [[ -x $VENV/bin/litellm ]] && "$VENV/bin/python" -c 'import litellm, fastapi, uvicorn' 2>/dev/null; then
        return 0
    fi
    log "installing litellm[proxy] into $VENV (first run only)"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'litellm[proxy]'; } >"$OUT/pip.log" 2>&1; then
        LITELLM_STATUS="install failed (see bench/out/pip.log)"
        log "LiteLLM: $LITELLM_STATUS"
    fi
}

# ---------------------------------------------------------------- wrk
# write_lua MODE BODY — $OUT/chat-MODE.lua: POST the body, print one
# machine-readable summary line (latencies in microseconds).
write_lua() {
    cat >"$OUT/chat-$1.lua" <<EOF
-- Generated by bench/proxy.sh.
wrk.method = "POST"
wrk.path = "$CHAT_PATH"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_BEARER")

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
EOF
}

# field FILE KEY — a number from the BENCH or CPU line of a wrk output.
field() { sed -n 's/^\(BENCH\|CPU\) .*\b'"$2"'=\([0-9.]*\).*/\2/p' "$1" | head -n 1; }

# wrk_once FILE TARGET MODE CONNS SECONDS [WRK-ARGS...] — one wrk run from the
# load CPU, with the CPU use of both CPUs, the proxy, the sim and wrk.
wrk_once() {
    local file=$1 target=$2 mode=$3 conns=$4 secs=$5
    shift 5
    local url
    url=$(target_url "$target")
    local proxy_cpu0 load_cpu0 sim0 proxy0=0 proxy_cpu1 load_cpu1 sim1 proxy1=0 wrk_cpu
    proxy_cpu0=$(cpu_busy_total "$PROXY_CPU")
    load_cpu0=$(cpu_busy_total "$LOAD_CPU")
    sim0=$(group_ticks "${PGID[sim]}")
    [[ -z ${PGID[$target]:-} ]] || proxy0=$(group_ticks "${PGID[$target]}")
    wrk_cpu=$(
        TIMEFORMAT='%3U %3S'
        { time BENCH_BEARER=${BEARER[$target]:-$LITELLM_KEY} taskset -c "$LOAD_CPU" nice -n "$NICE" timeout $((secs + 20)) \
            wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s "$@" -s "$OUT/chat-$mode.lua" "$url$CHAT_PATH" >"$file" 2>&1; } 2>&1 || true
    )
    proxy_cpu1=$(cpu_busy_total "$PROXY_CPU")
    load_cpu1=$(cpu_busy_total "$LOAD_CPU")
    sim1=$(group_ticks "${PGID[sim]}")
    [[ -z ${PGID[$target]:-} ]] || proxy1=$(group_ticks "${PGID[$target]}")
    # In percent of one core over the run. "other" is the user and system time
    # the two CPUs spent outside wrk, the sim and the proxy: someone else's
    # processes (interrupts and softirq, where loopback TCP does much of its
    # work, are not in it).
    awk -v pc0="$proxy_cpu0" -v pc1="$proxy_cpu1" -v lc0="$load_cpu0" -v lc1="$load_cpu1" \
        -v p0="$proxy0" -v p1="$proxy1" -v s0="$sim0" -v s1="$sim1" -v hz="$HZ" -v secs="$secs" \
        -v wrk="${wrk_cpu:-0 0}" 'BEGIN {
            split(pc0, A, " "); split(pc1, B, " "); split(lc0, C, " "); split(lc1, D, " "); split(wrk, W, " ")
            load = 100 * (D[1] - C[1]) / (D[2] - C[2]); pbusy = 100 * (B[1] - A[1]) / (B[2] - A[2])
            us = 100 * (D[3] - C[3] + B[3] - A[3]) / (D[2] - C[2])
            proxy = 100 * (p1 - p0) / hz / secs; sim = 100 * (s1 - s0) / hz / secs; w = 100 * (W[1] + W[2]) / secs
            other = us - proxy - sim - w
            printf "CPU load_cpu_busy=%.0f proxy_cpu_busy=%.0f proxy=%.0f sim=%.0f wrk=%.0f other=%.0f\n",
                load, pbusy, proxy, sim, w, other < 0 ? 0 : other }' >>"$file"
}

# run_wrk TARGET MODE LABEL CONNS SECONDS [WRK-ARGS...] — measure into
# $OUT/TARGET-MODE-LABEL.txt, repeating a run that others disturbed while the
# budget lasts, and keeping the least disturbed; then check it for errors.
run_wrk() {
    local target=$1 mode=$2 label=$3 conns=$4 secs=$5
    local file=$OUT/$target-$mode-$label.txt try other best=
    for try in 1 2 3; do
        wrk_once "$OUT/.try" "$target" "$mode" "$conns" "$secs" "${@:6}"
        other=$(field "$OUT/.try" other)
        if [[ -z $best ]] || ((${other:-0} < best)); then
            best=${other:-0}
            mv "$OUT/.try" "$file"
        fi
        ((best > OTHER_PCT && try < 3 && EXTRA_LEFT > secs)) || break
        log "$target $mode $label: other processes used ${other}% of a CPU during the run; again"
        EXTRA_LEFT=$((EXTRA_LEFT - secs))
        wait_quiet
    done
    rm -f "$OUT/.try"
    if ! grep -q '^BENCH ' "$file"; then
        log "$target $mode $label: wrk printed no summary; see $file"
        cat "$file" >&2
        return 1
    fi
    local bad
    bad=$(awk '/^BENCH /{ for (i = 2; i <= NF; i++) if ($i ~ /^(non2xx|connect|read|write|timeout)=/) { split($i, kv, "="); n += kv[2] } } END { print n + 0 }' "$file")
    if ((bad > 0)); then
        log "$target $mode $label: $bad errors or non-2xx responses:"
        grep -E 'Non-2xx|Socket errors|^BENCH' "$file" >&2 || true
        return 1
    fi
}

# ---------------------------------------------------------------- targets
start_sim() {
    start sim "$LOAD_CPU" env TOKIO_WORKER_THREADS=1 "$PALISADE" sim-upstream \
        --listen "127.0.0.1:$SIM_PORT" --capacity 4096 --ttft-ms 0 --tokens-per-s 0 --max-tokens 8 \
        --log-format json
    wait_ready sim 20 "http://127.0.0.1:$SIM_PORT/v1/models"
}

# Worker threads of a tokio runtime (tokio-rt-worker; older tokio: tokio-runtime-worker).
tokio_workers() { grep -Elx 'tokio-(runtime-w|rt-worker).*' /proc/"$1"/task/*/comm 2>/dev/null | wc -l; }

PALISADE_WORKERS="not run"
start_target() {
    local target=$1
    case $target in
    direct) ;;
    palisade)
        rm -rf "$OUT/palisade-data"
        palisade_proxy_env "$SIM_PORT" "$OUT/palisade-data"
        local -a env=("${PALISADE_ENV[@]}")
        [[ $TLS != 1 ]] || env+=(PALISADE_SERVER__TLS__CERT_FILE="$OUT/tls/cert.pem" PALISADE_SERVER__TLS__KEY_FILE="$OUT/tls/key.pem")
        # /v1 wants an API key (or a session): make one in the fresh store.
        BEARER[palisade]=$(env "${env[@]}" "$PALISADE" keys create --name bench 2>>"$OUT/palisade.log" |
            grep -Eo '^pal_[A-Za-z0-9_-]+' || true)
        [[ -n ${BEARER[palisade]} ]] || { log "palisade keys create printed no key; see $OUT/palisade.log"; return 1; }
        start palisade "$PROXY_CPU" env TOKIO_WORKER_THREADS=1 "${env[@]}" \
            "$PALISADE" serve --listen "127.0.0.1:$PALISADE_PORT" --log-format json
        wait_ready palisade 30 "${CURL_TLS[@]}" "$SCHEME://127.0.0.1:$PALISADE_PORT/readyz" || return 1
        PALISADE_WORKERS=$(tokio_workers "${PGID[palisade]}")
        log "palisade: $PALISADE_WORKERS tokio worker thread(s), $(ls /proc/"${PGID[palisade]}"/task | wc -l) threads in all"
        ;;
    hyper)
        start hyper "$PROXY_CPU" env TOKIO_WORKER_THREADS=1 "$HYPER_PROXY" "127.0.0.1:$HYPER_PORT" "127.0.0.1:$SIM_PORT"
        wait_ready hyper 15 "http://127.0.0.1:$HYPER_PORT/v1/models" || return 1
        ;;
    nginx)
        mkdir -p "$OUT/nginx"
        local listen_ssl="" tls_conf="# plain HTTP"
        if [[ $TLS == 1 ]]; then
            listen_ssl=" ssl"
            tls_conf="ssl_certificate $OUT/tls/cert.pem; ssl_certificate_key $OUT/tls/key.pem;"
        fi
        sed -e "s|@OUT@|$OUT|g" -e "s|@SIM_PORT@|$SIM_PORT|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
            -e "s|@LISTEN_SSL@|$listen_ssl|g" -e "s|@TLS@|$tls_conf|g" \
            "$BENCH/nginx-proxy.conf.template" >"$OUT/nginx/nginx.conf"
        local nginx_bin
        nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
        start nginx "$PROXY_CPU" "$nginx_bin" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log"
        wait_ready nginx 15 "${CURL_TLS[@]}" "$SCHEME://127.0.0.1:$NGINX_PORT/v1/models" || return 1
        ;;
    litellm)
        [[ $LITELLM_STATUS == ok ]] || return 1
        sed -e "s|@SIM_PORT@|$SIM_PORT|g" "$BENCH/litellm-config.yaml" >"$OUT/litellm-config.yaml"
        local -a workers=()
        if grep -qs -- '"--num_workers"' "$VENV"/lib/python3*/site-packages/litellm/proxy/proxy_cli.py; then
            workers=(--num_workers 1)
        fi
        start litellm "$PROXY_CPU" env -u DATABASE_URL LITELLM_MASTER_KEY="$LITELLM_KEY" \
            LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False LITELLM_LOG=ERROR \
            DISABLE_ADMIN_UI=True PYTHONUNBUFFERED=1 \
            "$VENV/bin/litellm" --config "$OUT/litellm-config.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
            "${workers[@]}"
        if ! wait_ready litellm 120 "http://127.0.0.1:$LITELLM_PORT/health/liveliness"; then
            LITELLM_STATUS="did not start (see bench/out/litellm.log)"
            return 1
        fi
        ;;
    *) die "unknown target $target" ;;
    esac
}

target_url() {
    case $1 in
    direct) echo "http://127.0.0.1:$SIM_PORT" ;;
    palisade) echo "$SCHEME://127.0.0.1:$PALISADE_PORT" ;;
    nginx) echo "$SCHEME://127.0.0.1:$NGINX_PORT" ;;
    hyper) echo "http://127.0.0.1:$HYPER_PORT" ;;
    litellm) echo "http://127.0.0.1:$LITELLM_PORT" ;;
    esac
}

# ---------------------------------------------------------------- main
mkdir -p "$OUT"
cd "$ROOT"
T0=$SECONDS
((${nproc:=$(nproc)} >= 2)) || die "needs at least 2 CPUs (one for load, one for the proxy); this machine has $nproc"

install_tools
[[ " $TARGETS " == *" litellm "* ]] && install_litellm
if [[ ${NO_BUILD:-} != 1 ]]; then
    log "cargo build --release -p palisade"
    cargo build --release -p palisade >"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log" >&2; die "build failed"; }
    if [[ " $TARGETS " == *" hyper "* ]]; then
        cargo build --release -p gateway --example hyper_proxy >>"$OUT/build.log" 2>&1 ||
            { tail -n 30 "$OUT/build.log" >&2; die "build failed"; }
    fi
fi
[[ -x $PALISADE ]] || die "$PALISADE missing"
[[ " $TARGETS " != *" hyper "* || -x $HYPER_PROXY ]] || die "$HYPER_PROXY missing"
T_SETUP=$((SECONDS - T0))

for port in "$SIM_PORT" "$PALISADE_PORT" "$NGINX_PORT" "$LITELLM_PORT" "$HYPER_PORT"; do
    ! port_busy "$port" || die "127.0.0.1:$port is in use; set BASE_PORT"
done
rm -f "$OUT"/*-c*.txt "$OUT"/*-warmup.txt "$OUT"/table.md "$OUT"/results.tsv "$OUT"/chat*.lua
write_lua whole "$BODY"
write_lua stream "$STREAM_BODY"
write_lua handshake "$BODY"
echo 'wrk.headers["Connection"] = "close"' >>"$OUT/chat-handshake.lua"
if [[ $TLS == 1 ]]; then
    mkdir -p "$OUT/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" \
        2>"$OUT/tls/openssl.log" || die "openssl could not make the benchmark certificate; see $OUT/tls/openssl.log"
fi
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "kernel: $(uname -sr)"
    echo "wrk: $(wrk -v 2>&1 | head -n 1)"
    echo "nginx: $( (nginx -v || /usr/sbin/nginx -v) 2>&1 | head -n 1)"
    echo "litellm: $("$VENV/bin/pip" show litellm 2>/dev/null | sed -n 's/^Version: //p')"
    echo "palisade: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty')"
} >"$OUT/env.txt"

start_sim || die "the simulated upstream did not start"
chat_ok direct || die "the simulated upstream answers wrongly"

declare -A STATUS=()
FAILED=0
for target in $TARGETS; do
    log "== $target"
    if ! start_target "$target"; then
        STATUS[$target]="FAILED to start"
        [[ $target != litellm || $LITELLM_STATUS == ok ]] || STATUS[$target]="FAILED: LiteLLM $LITELLM_STATUS"
        FAILED=1
        stop_group "$target"
        continue
    fi
    if ! chat_ok "$target"; then
        STATUS[$target]="FAILED: wrong reply"
        FAILED=1
        stop_group "$target"
        continue
    fi
    STATUS[$target]=ok
    wait_quiet
    run_wrk "$target" whole warmup "$CONNS" "$WARMUP" || true
    for mode in $MODES; do
        run_wrk "$target" "$mode" c"$CONNS" "$CONNS" "$DURATION" || { STATUS[$target]="errors ($mode @$CONNS)"; FAILED=1; }
        run_wrk "$target" "$mode" c1 1 "$DURATION" --latency || { STATUS[$target]="errors ($mode @1)"; FAILED=1; }
        log "$target $mode: $(field "$OUT/$target-$mode-c$CONNS.txt" rps) req/s @$CONNS, p50 $(field "$OUT/$target-$mode-c1.txt" p50_us) µs @1"
    done
    [[ $target == direct ]] || stop_group "$target"
done
stop_group sim

# ---------------------------------------------------------------- tables
# results.tsv: one row per target and mode, the numbers behind the tables.
{
    printf 'mode\ttarget\trps_c%s\trps_c1\tp50_us_c1\tp99_us_c1\tproxy_cpu_pct\tload_cpu_busy_pct\tother_pct_max\tproxy_cpu_pct_c1\tstatus\n' "$CONNS"
    for mode in $MODES; do
        for target in $TARGETS; do
            fc=$OUT/$target-$mode-c$CONNS.txt f1=$OUT/$target-$mode-c1.txt
            status=${STATUS[$target]:-not run}
            if [[ -f $fc && -f $f1 ]]; then
                other=$(printf '%s\n%s\n' "$(field "$fc" other)" "$(field "$f1" other)" | sort -n | tail -n 1)
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$target" "$(field "$fc" rps)" "$(field "$f1" rps)" \
                    "$(field "$f1" p50_us)" "$(field "$f1" p99_us)" "$(field "$fc" proxy)" "$(field "$fc" load_cpu_busy)" "$other" \
                    "$(field "$f1" proxy)" "$status"
            else
                printf '%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n' "$mode" "$target" "$status"
            fi
        done
    done
} >"$OUT/results.tsv"

for mode in $MODES; do
    case $mode in
    whole) echo "Plain replies (the request as given; one JSON body back)" ;;
    stream) echo "Streamed replies (the same request with \"stream\": true; 11 server-sent events back)" ;;
    handshake) echo "A new connection per request (\`Connection: close\`): over TLS, a full handshake each (the direct row is the sim over plain HTTP)" ;;
    esac
    echo
    awk -F'\t' -v mode="$mode" -v conns="$CONNS" -v other_pct="$OTHER_PCT" '
        NR == 1 || $1 != mode { next }
        { k = $2; t[++n] = k; rps[k] = $3; rps1[k] = $4; p50[k] = $5; p99[k] = $6; pcpu[k] = $7; lcpu[k] = $8; oth[k] = $9; pcpu1[k] = $10; st[k] = $11 }
        function num(x) { return x == "-" || x == "" ? "-" : sprintf("%.0f", x) }
        function have(x) { return x != "-" && x != "" }
        END {
            printf "| target | req/s @%d conns | p50 @1 conn (µs) | p99 @1 conn (µs) | throughput vs nginx | added p50 vs direct (µs) | proxy CPU @%d | proxy CPU µs/req | proxy CPU µs/req @1 conn | CPU 0 (wrk+sim) busy | CPU used by others | status |\n", conns, conns
            printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
            for (i = 1; i <= n; i++) {
                k = t[i]
                ratio = have(rps[k]) && have(rps["nginx"]) ? sprintf("%.2f×", rps[k] / rps["nginx"]) : "-"
                added = k == "direct" ? "0" : have(p50[k]) && have(p50["direct"]) ? sprintf("%+.0f", p50[k] - p50["direct"]) : "-"
                pc = k != "direct" && have(pcpu[k]) ? pcpu[k] "%" : "-"
                per = k != "direct" && have(pcpu[k]) && have(rps[k]) ? sprintf("%.0f", pcpu[k] * 1e4 / rps[k]) : "-"
                per1 = k != "direct" && have(pcpu1[k]) && have(rps1[k]) ? sprintf("%.0f", pcpu1[k] * 1e4 / rps1[k]) : "-"
                lc = have(lcpu[k]) ? lcpu[k] "%" : "-"
                oc = have(oth[k]) ? oth[k] "%" : "-"
                s = st[k]
                if (s == "ok" && have(oth[k]) && oth[k] + 0 > other_pct) s = "ok, but disturbed by other processes"
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k, num(rps[k]), num(p50[k]), num(p99[k]), ratio, added, pc, per, per1, lc, oc, s
            }
        }' "$OUT/results.tsv"
    echo
done >"$OUT/table.md"

echo
echo "Proxy overhead: $(sed -n 's/^cpu: //p' "$OUT/env.txt"), $(nproc) CPUs, $(uname -r); wrk + sim on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU"
echo "palisade tokio worker threads seen in /proc: $PALISADE_WORKERS (TOKIO_WORKER_THREADS=1)"
echo
cat "$OUT/table.md"
log "done in $((SECONDS - T0))s (setup ${T_SETUP}s, benchmark $((SECONDS - T0 - T_SETUP))s); raw output in $OUT"
exit "$FAILED"
