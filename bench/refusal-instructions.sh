#!/usr/bin/env bash
# bench/refusal-instructions.sh — instructions per refused request, counted.
#
# bench/edge.sh's rates are bounded by wrk on the other core and move with the VM, so
# this counts, under valgrind's callgrind, every instruction each server executes while
# wrk sends it GET /v1/models (4 connections, DURATION seconds, after a 2 s warm-up that
# is not counted), and prints instructions per request. Kernel work (the socket calls)
# is not counted by callgrind; unless SYSCALLS=0, each target then runs again without
# valgrind under `strace -f -c` while wrk sends the same requests, and the system calls
# per request are printed (the kernel's share of a request's CPU).
#
#   ceiling           crates/gateway/examples/minimal_hyper.rs answering 200 "ok"
#   nginx-deny        nginx `deny all` (403), one process (master_process off)
#   nginx-limit       nginx `limit_req` at 1 r/m, status 429
#   palisade-blocked  palisade serve, 127.0.0.1 on the block list: refused in the front
#   palisade-limited  palisade serve, per-address limit of one an hour: in the front
#   *-hyper           the same behind `trusted_proxies = ["127.0.0.1/32"]`, which sends
#                     every request through hyper (as behind a load balancer): the
#                     listener's refusal from pre-rendered parts in hyper's response,
#                     which every refusal took before the front
#   *-tls             nginx-deny and palisade-blocked over TLS 1.3 (one self-signed
#                     P-256 certificate made here with openssl), wrk speaking HTTPS; the
#                     count includes each connection's handshake, four per run
#
# Environment: TARGETS [all of the above], DURATION [5], CONNS [4], BASE_PORT [18470],
# NO_BUILD=1 to use the release binaries as they are, SYSCALLS=0 to skip the strace runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out/refusal-instructions
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
TARGETS=${TARGETS:-"ceiling nginx-deny nginx-limit palisade-blocked palisade-blocked-hyper palisade-limited palisade-limited-hyper nginx-deny-tls palisade-blocked-tls"}
DURATION=${DURATION:-5}
CONNS=${CONNS:-4}
BASE_PORT=${BASE_PORT:-18470}
PORT=$BASE_PORT
ADMIN_PORT=$((BASE_PORT + 1))
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap 'stop_all' EXIT
trap 'exit 130' INT

mkdir -p "$OUT"
tools=(valgrind wrk curl openssl)
[[ ${SYSCALLS:-1} == 0 ]] || tools+=(strace)
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || die "$tool is required (apt-get install $tool)"; done
[ -x "$NGINX" ] || die "nginx is required (apt-get install nginx-light)"
if [[ ${NO_BUILD:-} != 1 ]]; then
    log "cargo build --release -p palisade; --example minimal_hyper"
    { cargo build --release -p palisade && cargo build --release -p gateway --example minimal_hyper; } \
        >"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log" >&2; die "build failed"; }
fi

# One certificate for the TLS rows, made here: nothing secret leaves the run.
CERT=$OUT/tls-cert.pem
KEY=$OUT/tls-key.pem
if [[ $TARGETS == *-tls* ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$KEY" -out "$CERT" >"$OUT/openssl.log" 2>&1 ||
        die "openssl could not make a certificate; see $OUT/openssl.log"
fi

nginx_conf() { # DIR LOCATION [ssl]
    local listen="listen 127.0.0.1:$PORT;"
    [[ ${3:-} == ssl ]] &&
        listen="listen 127.0.0.1:$PORT ssl; ssl_certificate $CERT; ssl_certificate_key $KEY; ssl_protocols TLSv1.3;"
    mkdir -p "$1/empty"
    cat >"$1/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log crit;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
    limit_req_zone \$binary_remote_addr zone=perip:10m rate=1r/m;
    server {
        $listen
        location / { $2 }
    }
}
CONF
}

# launch TARGET [WRAPPER...] — start TARGET on CPU 1 under WRAPPER (valgrind, or nothing),
# wait until it listens, block 127.0.0.1 where it is to be blocked, and set URL.
launch() {
    local target=$1 data=$OUT/data-$target probe=/v1/models location
    shift
    rm -rf "$data"
    mkdir -p "$data"
    local palisade=(env TOKIO_WORKER_THREADS=1 PALISADE_LOG__LEVEL=warn PALISADE_DATA_DIR="$data"
        PALISADE_LISTEN="127.0.0.1:$PORT" PALISADE_ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT")
    [[ $target == *-hyper ]] && palisade+=(PALISADE_SHIELD__TRUSTED_PROXIES='["127.0.0.1/32"]')
    [[ $target == *-tls ]] && palisade+=(PALISADE_SERVER__TLS__CERT_FILE="$CERT" PALISADE_SERVER__TLS__KEY_FILE="$KEY")
    [[ $target == palisade-limited* ]] &&
        palisade+=(PALISADE_SHIELD__LIMITS__PER_IP='{count = 1, period_ms = 3600000, burst = 1}')
    case $target in
    ceiling)
        start "$target" 1 "$@" "$BIN/examples/minimal_hyper" "127.0.0.1:$PORT"
        ;;
    nginx-deny | nginx-limit | nginx-deny-tls)
        location="deny all;"
        [[ $target == nginx-limit ]] && location="limit_req zone=perip; limit_req_status 429; root $data/empty;"
        nginx_conf "$data" "$location" "$([[ $target == *-tls ]] && echo ssl)"
        start "$target" 1 "$@" "$NGINX" -p "$data" -c "$data/nginx.conf" -e "$data/error.log"
        probe=/nothing-here
        ;;
    palisade-*)
        start "$target" 1 "${palisade[@]}" "$@" "$BIN/palisade" serve
        probe=/healthz
        ;;
    *) die "unknown target $target" ;;
    esac
    # valgrind starts slowly; nginx answers the probe with its refusal, which curl -f
    # counts as a failure, so it is probed on the admin-free port with plain TCP.
    if [[ $target == nginx-* ]]; then
        for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
    elif [[ $target == *-tls ]]; then
        for _ in $(seq 1 300); do curl -skf -o /dev/null "https://127.0.0.1:$PORT$probe" && break; sleep 0.2; done
    else
        wait_ready "$target" 60 "http://127.0.0.1:$PORT$probe" || die "$target did not start; see $OUT/$target.log"
    fi
    if [[ $target == palisade-blocked* ]]; then
        PALISADE_DATA_DIR="$data" "$BIN/palisade" admin --url "http://127.0.0.1:$ADMIN_PORT" block add 127.0.0.1/32 --note bench >/dev/null ||
            die "could not block 127.0.0.1"
    fi
    URL="http://127.0.0.1:$PORT/v1/models"
    [[ $target == *-tls ]] && URL="https://127.0.0.1:$PORT/v1/models"
    return 0
}

# refused TARGET WRK-OUTPUT — the requests of a run, failing unless all but the first
# were refused (the ceiling refuses none).
refused() {
    local requests refused
    requests=$(awk '/requests in/ { print $1 }' "$2")
    refused=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$2")
    if [[ $1 != ceiling ]]; then
        [[ ${refused:-0} -ge $((requests - 1)) ]] || die "$1: only ${refused:-0} of $requests refused"
    fi
    echo "$requests"
}

declare -A RESULT=() CALLS=() TOP=()
for target in $TARGETS; do
    file=$OUT/callgrind.$target
    rm -f "$file"*
    launch "$target" valgrind --tool=callgrind --callgrind-out-file="$file"
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s "$URL" >/dev/null # warm-up
    callgrind_control -z "${PGID[$target]}" >/dev/null 2>&1
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL" >"$OUT/wrk.$target"
    callgrind_control -d "${PGID[$target]}" >/dev/null 2>&1
    stop_group "$target"
    requests=$(refused "$target" "$OUT/wrk.$target")
    dump=$(ls -t "$file".* | head -n 1)
    callgrind_per_request "$target" "$dump" "PROGRAM TOTALS" "$requests"
done

# The kernel's share: system calls per request, each target again without valgrind.
if [[ ${SYSCALLS:-1} != 0 ]]; then
    for target in $TARGETS; do
        launch "$target"
        taskset -c 0 wrk -t1 -c"$CONNS" -d2s "$URL" >/dev/null # warm-up
        count_syscalls "$target" "${PGID[$target]}" "$URL"
        stop_group "$target"
        refused "$target" "$OUT/wrk.sys.$target" >/dev/null
    done
fi

instruction_table ceiling
if [[ ${SYSCALLS:-1} != 0 ]]; then
    echo
    echo "| target | system calls per request (strace -f -c, every thread) | most frequent, per request |"
    echo "|---|---:|---|"
    for target in $TARGETS; do echo "| $target | ${CALLS[$target]} | ${TOP[$target]} |"; done
fi
