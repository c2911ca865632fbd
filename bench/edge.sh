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
# Wall-clock rates on a shared 2-vCPU VM move by ±30% from one minute to the next, so
# each case also reports the server CPU's busy time per request (CPU 1's jiffies from
# /proc/stat over the measurement, divided by the requests answered), and ROUNDS
# repeats the five cases, interleaved, and prints each round and the medians.
#
#   bench/edge.sh            # DURATION=5 CONNECTIONS=32 ROUNDS=1 by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-1}
PORT_CEILING=${PORT_CEILING:-9311}
PORT_PALISADE=${PORT_PALISADE:-9312}
PORT_NGINX=${PORT_NGINX:-9313}
PORT_ADMIN=${PORT_ADMIN:-9314}
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

# Busy and total jiffies of one CPU (busy counts irq, softirq and steal too).
cpu_busy_total() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# Prints "<requests/s> <non-2xx count> <total requests> <server CPU µs per request>
# <load CPU busy %>".
measure() {
    local out s0 s1 l0 l1
    read -r -a s0 < <(cpu_busy_total 1)
    read -r -a l0 < <(cpu_busy_total 0)
    out=$(timeout $((DURATION + 10)) taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$1")
    read -r -a s1 < <(cpu_busy_total 1)
    read -r -a l1 < <(cpu_busy_total 0)
    local rps total non2xx
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
    awk -v rps="${rps:-0}" -v non="${non2xx:-0}" -v total="${total:-0}" \
        -v sb=$((s1[0] - s0[0])) -v lb=$((l1[0] - l0[0])) -v lt=$((l1[1] - l0[1])) \
        -v hz="$(getconf CLK_TCK)" 'BEGIN {
            printf "%.0f %d %d %.2f %.0f\n", rps, non, total, (total > 0 ? sb * 1e6 / hz / total : 0),
                (lt > 0 ? 100 * lb / lt : 0)
        }'
}

start_palisade() {
    local name=$1
    shift
    mkdir -p "$WORK/$name"
    # exec: the recorded pid is palisade itself, so stop_last stops it.
    (cd "$WORK/$name" && exec env TOKIO_WORKER_THREADS=1 PALISADE_LOG__LEVEL=warn \
        PALISADE_LISTEN="127.0.0.1:$PORT_PALISADE" PALISADE_ADMIN__LISTEN="127.0.0.1:$PORT_ADMIN" "$@" taskset -c 1 "$BIN" serve >"$WORK/$name.log" 2>&1) &
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

CASES=(ceiling nginx_deny nginx_limit blocked limited)
declare -A LABEL=(
    [ceiling]="minimal hyper 200 (ceiling)" [nginx_deny]="nginx 403 deny all" [nginx_limit]="nginx 429 limit_req"
    [blocked]="palisade 403 blocked" [limited]="palisade 429 over per-IP limit"
)
ROWS="$WORK/rows" # round case rps non2xx total cpu_us load_pct
: >"$ROWS"
record() { read -r rps non total cpu load < <(measure "$3"); echo "$1 $2 $rps $non $total $cpu $load" >>"$ROWS"; }

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS: ceiling (minimal hyper handler)" >&2
    taskset -c 1 "$CEILING_BIN" "127.0.0.1:$PORT_CEILING" 2>/dev/null &
    PIDS+=($!)
    wait_port "$PORT_CEILING"
    record "$round" ceiling "http://127.0.0.1:$PORT_CEILING/"
    stop_last

    echo "round $round/$ROUNDS: nginx deny all" >&2
    start_nginx deny "deny all;"
    record "$round" nginx_deny "http://127.0.0.1:$PORT_NGINX/v1/models"
    stop_last

    echo "round $round/$ROUNDS: nginx limit_req" >&2
    # (`return` would answer before limit_req runs, so the one request let through gets a 404.)
    start_nginx limit "limit_req zone=perip; limit_req_status 429; root $WORK/empty;"
    record "$round" nginx_limit "http://127.0.0.1:$PORT_NGINX/v1/models"
    stop_last

    echo "round $round/$ROUNDS: palisade, client address on the block list" >&2
    start_palisade "blocked-$round"
    (cd "$WORK/blocked-$round" && "$BIN" admin --url "http://127.0.0.1:$PORT_ADMIN" block add 127.0.0.1/32 --note bench >/dev/null)
    record "$round" blocked "http://127.0.0.1:$PORT_PALISADE/v1/models"
    stop_last

    echo "round $round/$ROUNDS: palisade, per-address limit of one request" >&2
    start_palisade "limited-$round" PALISADE_SHIELD__LIMITS__PER_IP='{count = 1, period_ms = 3600000, burst = 1}'
    record "$round" limited "http://127.0.0.1:$PORT_PALISADE/v1/models"
    stop_last
done

echo
echo "edge refusals vs. a minimal hyper handler (wrk -t1 -c$CONNECTIONS -d${DURATION}s, wrk on CPU 0, server on CPU 1)"
echo "cpu µs/req: CPU 1's busy time per request answered (lower is cheaper); load %: CPU 0 (wrk) busy"
for round in $(seq 1 "$ROUNDS"); do
    echo
    echo "round $round"
    printf '%-32s %11s %16s %9s %11s %9s %7s\n' "case" "requests/s" "refused/total" "vs ceil" "cpu µs/req" "vs ceil" "load %"
    for case in "${CASES[@]}"; do
        awk -v r="$round" -v c="$case" -v label="${LABEL[$case]}" '
            $1 == r && $2 == "ceiling" { crps = $3; ccpu = $6 }
            $1 == r && $2 == c { rps = $3; non = $4; total = $5; cpu = $6; load = $7 }
            END {
                refused = (c == "ceiling") ? "-" : non "/" total
                printf "%-32s %11d %16s %9.2f %11.2f %9.2f %7d\n", label, rps, refused, rps / crps, cpu, cpu / ccpu, load
            }' "$ROWS"
    done
done
if [ "$ROUNDS" -gt 1 ]; then
    echo
    echo "medians over $ROUNDS rounds (each ratio against the ceiling of its own round)"
    printf '%-32s %11s %9s %11s %9s\n' "case" "requests/s" "vs ceil" "cpu µs/req" "vs ceil"
    for case in "${CASES[@]}"; do
        awk -v c="$case" -v label="${LABEL[$case]}" '
            $2 == "ceiling" { crps[$1] = $3; ccpu[$1] = $6 }
            $2 == c { rps[$1] = $3; cpu[$1] = $6 }
            function median(a, n,   i, j, t, v, k) {
                k = 0; for (i in a) v[++k] = a[i]
                for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
                return (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
            }
            END {
                for (r in rps) { rr[r] = rps[r] / crps[r]; cr[r] = cpu[r] / ccpu[r] }
                printf "%-32s %11d %9.2f %11.2f %9.2f\n", label, median(rps), median(rr), median(cpu), median(cr)
            }' "$ROWS"
    done
fi
echo
echo "proof of work, one core (verify is what the gateway pays; solve is what a client pays)"
timeout 60 "$POW_BIN"
