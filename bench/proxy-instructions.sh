#!/usr/bin/env bash
# bench/proxy-instructions.sh — instructions per proxied request, counted.
#
# Wall-clock figures on a shared 2-vCPU VM move by ±20% between runs; counted
# instructions do not. This runs each target under valgrind's callgrind (which
# counts every instruction the process executes) while wrk sends the plain chat
# request of bench/proxy.sh through it to the simulated model, and prints
# instructions per request, so a change to the request path can be judged by
# a figure that repeats; and the heap allocations per request (calls to malloc,
# every thread of the process, SQLite's own allocator left out).
#
#   hyper     crates/gateway/examples/hyper_proxy.rs: hyper server + client and
#             nothing else (the floor; the anchor of the ratio)
#   palisade  palisade serve with every stage on, budgets raised as in proxy.sh
#             (bench/lib.sh palisade_proxy_env);
#             its figure counts the connection tasks only (accept loop, request
#             path, upstream connection), not the background tasks (status page
#             recorder, health checks), which run on timers; the second table
#             gives the whole process's count as well
#   nginx     nginx as bench/proxy.sh configures it (bench/nginx-proxy.conf.template),
#             with `master_process off` so its one worker is the process counted
#
# Then, unless SYSCALLS=0, each target runs again without valgrind, with strace
# attached (-f: every thread) while wrk sends the same request, and the system
# calls per request are printed: the kernel's share of a request's CPU, which
# callgrind does not see, counted too.
#
# Caveat: valgrind does not emulate the CPU's SHA extensions, so SHA-256 is counted
# as the software fallback (about 7,000 instructions a digest). It runs once per key
# here, on the first request; the credential cache names the caller after that
# without it.
#
# Environment: TARGETS ["hyper palisade nginx"], DURATION seconds per count [10],
# CONNS [4], BASE_PORT [18450], NO_BUILD=1 to use the release binaries as they are,
# SYSCALLS=0 to skip the strace runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out/instructions
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
TARGETS=${TARGETS:-"hyper palisade nginx"}
DURATION=${DURATION:-10}
CONNS=${CONNS:-4}
BASE_PORT=${BASE_PORT:-18450}
SIM_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
BODY='{"model":"palisade-sim","max_tokens":8,"messages":[{"role":"user","content":"hello"}]}'

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap 'stop_all' EXIT
trap 'exit 130' INT

mkdir -p "$OUT"
missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v wrk >/dev/null || missing+=(wrk)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ " $TARGETS " != *" nginx "* || -x $NGINX ]] || missing+=(nginx-light)
[[ ${SYSCALLS:-1} == 0 ]] || command -v strace >/dev/null || missing+=(strace)
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$OUT/apt.log" 2>&1 ||
        die "apt-get install ${missing[*]} failed; see $OUT/apt.log"
fi
if [[ ${NO_BUILD:-} != 1 ]]; then
    log "cargo build --release -p palisade; --example hyper_proxy"
    { cargo build --release -p palisade && cargo build --release -p gateway --example hyper_proxy; } \
        >"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log" >&2; die "build failed"; }
fi

start sim 0 env TOKIO_WORKER_THREADS=1 "$BIN/palisade" sim-upstream --listen "127.0.0.1:$SIM_PORT" \
    --capacity 4096 --ttft-ms 0 --tokens-per-s 0 --max-tokens 8
wait_ready sim 20 "http://127.0.0.1:$SIM_PORT/v1/models" || die "the simulated model did not start"

# nginx_conf — bench/proxy.sh's nginx configuration in $OUT/nginx, single-process.
nginx_conf() {
    mkdir -p "$OUT/nginx"
    {
        echo "master_process off;"
        sed -e "s|@OUT@|$OUT|g" -e "s|@SIM_PORT@|$SIM_PORT|g" -e "s|@NGINX_PORT@|$PROXY_PORT|g" \
            -e "s|@LISTEN_SSL@||g" -e "s|@TLS@|# plain HTTP|g" "$ROOT/bench/nginx-proxy.conf.template"
    } >"$OUT/nginx/nginx.conf"
}

# launch TARGET [WRAPPER...] — start TARGET on CPU 1 under WRAPPER (valgrind, or
# nothing), wait until it answers, and write the wrk script with its key to
# $OUT/chat.lua and the URL to URL.
launch() {
    local target=$1 bearer=none probe=/v1/models
    shift
    case $target in
    hyper)
        start "$target" 1 env TOKIO_WORKER_THREADS=1 "$@" \
            "$BIN/examples/hyper_proxy" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$SIM_PORT"
        ;;
    palisade)
        palisade_proxy_env "$SIM_PORT" "$OUT/palisade-data"
        rm -rf "$OUT/palisade-data"
        bearer=$(env "${PALISADE_ENV[@]}" "$BIN/palisade" keys create --name bench 2>>"$OUT/keys.log" |
            grep -Eo '^pal_[A-Za-z0-9_-]+') || die "palisade keys create printed no key; see $OUT/keys.log"
        start "$target" 1 env TOKIO_WORKER_THREADS=1 "${PALISADE_ENV[@]}" "$@" \
            "$BIN/palisade" serve --listen "127.0.0.1:$PROXY_PORT" --log-format json
        probe=/readyz # its /v1 wants the key
        ;;
    nginx)
        nginx_conf
        start "$target" 1 "$@" "$NGINX" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log"
        ;;
    *) die "unknown target $target (hyper, palisade, nginx)" ;;
    esac
    # valgrind starts slowly.
    wait_ready "$target" 60 "http://127.0.0.1:$PROXY_PORT$probe" || die "$target did not start; see $OUT/$target.log"
    cat >"$OUT/chat.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $bearer"
EOF
    URL="http://127.0.0.1:$PROXY_PORT/v1/chat/completions"
}

# requests_of FILE — the requests of a wrk output, failing on any answer but 2xx.
requests_of() {
    ! grep -q "Non-2xx" "$1" || die "a target answered with errors; see $1"
    awk '/requests in/ { print $1 }' "$1"
}

declare -A RESULT=() WHOLE=() ALLOCS=() CALLS=() TOP=()
for target in $TARGETS; do
    file=$OUT/callgrind.$target
    rm -f "$file"*
    launch "$target" valgrind --tool=callgrind --callgrind-out-file="$file"
    taskset -c 0 wrk -t1 -c"$CONNS" -d3s -s "$OUT/chat.lua" "$URL" >/dev/null # warm-up
    callgrind_control -z "${PGID[$target]}" >/dev/null
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$OUT/chat.lua" "$URL" >"$OUT/wrk.$target"
    callgrind_control -d "${PGID[$target]}" >/dev/null
    stop_group "$target"
    requests=$(requests_of "$OUT/wrk.$target")
    dump=$(ls "$file".* | head -n 1)
    if [[ $target == palisade ]]; then
        pattern='gateway::server::serve::{{closure}}::{{closure}}'
    else
        pattern='PROGRAM TOTALS'
    fi
    callgrind_per_request "$target" "$dump" "$pattern" "$requests"
    WHOLE[$target]=$(awk -v n="$requests" '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "%d", $1 / n; exit }' \
        "$OUT/annotate.$target")
    ALLOCS[$target]=$(callgrind_mallocs "$dump" "$requests")
done

if [[ ${SYSCALLS:-1} != 0 ]]; then
    for target in $TARGETS; do
        launch "$target"
        taskset -c 0 wrk -t1 -c"$CONNS" -d3s -s "$OUT/chat.lua" "$URL" >/dev/null # warm-up
        # env execs the program, so the group leader is the process itself.
        count_syscalls "$target" "${PGID[$target]}" "$URL" -s "$OUT/chat.lua"
        stop_group "$target"
        requests_of "$OUT/wrk.sys.$target" >/dev/null
    done
fi

instruction_table hyper nginx
echo
echo "| target | instructions per request, whole process (background tasks too) | vs nginx | allocations per request (calls to malloc, whole process) |"
echo "|---|---:|---:|---:|"
for target in $TARGETS; do
    ratio=-
    [[ -n ${WHOLE[nginx]:-} ]] && ratio=$(awk -v a="${WHOLE[$target]}" -v b="${WHOLE[nginx]}" 'BEGIN { printf "%.2f×", a / b }')
    echo "| $target | ${WHOLE[$target]} | $ratio | ${ALLOCS[$target]} |"
done
if [[ ${SYSCALLS:-1} != 0 ]]; then
    echo
    echo "| target | system calls per request (strace -f -c, every thread) | most frequent, per request |"
    echo "|---|---:|---|"
    for target in $TARGETS; do echo "| $target | ${CALLS[$target]} | ${TOP[$target]} |"; done
fi
