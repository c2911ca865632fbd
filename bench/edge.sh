#!/usr/bin/env bash
# What the edge guard costs when it refuses: requests per second Palisade answers with
# 403 (blocked address) and 429 (over the per-address limit), against the same machine's
# ceiling for a hello-world hyper server, measured in one run with the same wrk settings
# and pinning (wrk on CPU 0, the server on CPU 1, one Tokio worker each). Then the
# proof-of-work verify/solve table. nginx answering the same refusals (`deny all` for
# 403, `limit_req` with status 429 for 429; one worker, no access log) are rows of the
# same run. Loopback only; stops by itself (about 60 s after the release build, which is
# cached after the first run).
#
#   bench/edge.sh            # DURATION=5 CONNECTIONS=32 by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
PORT_CEILING=${PORT_CEILING:-9311}
PORT_PALISADE=${PORT_PALISADE:-9312}
PORT_NGINX=${PORT_NGINX:-9313}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx is required (apt-get install nginx-light)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is required (util-linux)" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then echo "needs two CPUs (wrk on 0, server on 1)" >&2; exit 1; fi

TARGET=${CARGO_TARGET_DIR:-target}
echo "building (release)…" >&2
# (--example restricts a build to that target, so the binary is built on its own.)
cargo build --quiet --release -p palisade
cargo build --quiet --release -p gateway --example minimal_hyper
cargo build --quiet --release -p shield --example pow_table
BIN=$(realpath "$TARGET/release/palisade")
CEILING_BIN=$(realpath "$TARGET/release/examples/minimal_hyper")
POW_BIN=$(realpath "$TARGET/release/examples/pow_table")
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on port $1" >&2
    exit 1
}

# Prints "<requests/s> <non-2xx count> <total requests>".
measure() {
    local out
    out=$(timeout $((DURATION + 10)) taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$1")
    local rps total non2xx
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
    echo "${rps:-0} ${non2xx:-0} ${total:-0}"
}

start_palisade() {
    local name=$1
    shift
    mkdir -p "$WORK/$name"
    # exec: the recorded pid is palisade itself, so stop_last stops it.
    (cd "$WORK/$name" && exec env TOKIO_WORKER_THREADS=1 PALISADE_LOG__LEVEL=warn \
        PALISADE_LISTEN="127.0.0.1:$PORT_PALISADE" PALISADE_ADMIN__LISTEN=127.0.0.1:0 "$@" taskset -c 1 "$BIN" serve >"$WORK/$name.log" 2>&1) &
    PIDS+=($!)
    wait_port "$PORT_PALISADE"
}

stop_last() {
    local pid=${PIDS[-1]}
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'PIDS[-1]'
    sleep 0.3
}

echo "1/5 ceiling: minimal hyper handler" >&2
taskset -c 1 "$CEILING_BIN" "127.0.0.1:$PORT_CEILING" 2>/dev/null &
PIDS+=($!)
wait_port "$PORT_CEILING"
read -r CEIL _ _ < <(measure "http://127.0.0.1:$PORT_CEILING/")
stop_last

# nginx refusing as cheaply as it can: `deny all` (403) and `limit_req` at one request
# an hour with no burst and status 429, one worker pinned like the others.
start_nginx() {
    local name=$1 location=$2
    mkdir -p "$WORK/nginx-$name" "$WORK/empty"
    cat >"$WORK/nginx-$name/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx-$name/nginx.pid;
error_log $WORK/nginx-$name/error.log crit;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-$name/body;
    proxy_temp_path $WORK/nginx-$name/proxy;
    fastcgi_temp_path $WORK/nginx-$name/fastcgi;
    uwsgi_temp_path $WORK/nginx-$name/uwsgi;
    scgi_temp_path $WORK/nginx-$name/scgi;
    keepalive_requests 1000000;
    limit_req_zone \$binary_remote_addr zone=perip:10m rate=1r/m;
    server {
        listen 127.0.0.1:$PORT_NGINX;
        location / { $location }
    }
}
CONF
    taskset -c 1 "$NGINX" -p "$WORK/nginx-$name" -c "$WORK/nginx-$name/nginx.conf" -e "$WORK/nginx-$name/error.log" &
    PIDS+=($!)
    wait_port "$PORT_NGINX"
}

echo "2/5 nginx deny all" >&2
start_nginx deny "deny all;"
read -r NGINX_DENY NGINX_DENY_NON2XX NGINX_DENY_TOTAL < <(measure "http://127.0.0.1:$PORT_NGINX/v1/models")
stop_last

echo "3/5 nginx limit_req" >&2
# (`return` would answer before limit_req runs, so the one request let through gets a 404.)
start_nginx limit "limit_req zone=perip; limit_req_status 429; root $WORK/empty;"
read -r NGINX_LIMIT NGINX_LIMIT_NON2XX NGINX_LIMIT_TOTAL < <(measure "http://127.0.0.1:$PORT_NGINX/v1/models")
stop_last

echo "4/5 palisade, client address on the block list" >&2
start_palisade blocked
(cd "$WORK/blocked" && "$BIN" admin --url "http://127.0.0.1:$PORT_PALISADE" block add 127.0.0.1/32 --note bench >/dev/null)
read -r BLOCKED BLOCKED_NON2XX BLOCKED_TOTAL < <(measure "http://127.0.0.1:$PORT_PALISADE/v1/models")
stop_last

echo "5/5 palisade, per-address limit of one request" >&2
start_palisade limited PALISADE_SHIELD__LIMITS__PER_IP='{count = 1, period_ms = 3600000, burst = 1}'
read -r LIMITED LIMITED_NON2XX LIMITED_TOTAL < <(measure "http://127.0.0.1:$PORT_PALISADE/v1/models")
stop_last

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "edge refusals vs. a minimal hyper handler (wrk -t1 -c$CONNECTIONS -d${DURATION}s, wrk on CPU 0, server on CPU 1)"
printf '%-34s %12s %16s %10s\n' "case" "requests/s" "refused/total" "vs ceiling"
printf '%-34s %12s %16s %10s\n' "minimal hyper 200 (ceiling)" "$CEIL" "-" "1.00"
printf '%-34s %12s %16s %10s\n' "nginx 403 deny all" "$NGINX_DENY" "$NGINX_DENY_NON2XX/$NGINX_DENY_TOTAL" "$(ratio "$NGINX_DENY" "$CEIL")"
printf '%-34s %12s %16s %10s\n' "nginx 429 limit_req" "$NGINX_LIMIT" "$NGINX_LIMIT_NON2XX/$NGINX_LIMIT_TOTAL" "$(ratio "$NGINX_LIMIT" "$CEIL")"
printf '%-34s %12s %16s %10s\n' "palisade 403 blocked" "$BLOCKED" "$BLOCKED_NON2XX/$BLOCKED_TOTAL" "$(ratio "$BLOCKED" "$CEIL")"
printf '%-34s %12s %16s %10s\n' "palisade 429 over per-IP limit" "$LIMITED" "$LIMITED_NON2XX/$LIMITED_TOTAL" "$(ratio "$LIMITED" "$CEIL")"
echo
echo "proof of work, one core (verify is what the gateway pays; solve is what a client pays)"
timeout 60 "$POW_BIN"
