# bench/lib.sh — process handling shared by the bench scripts (sourced, not run).
#
# Every process a script starts runs in its own session (setsid), so it and its
# children can be stopped by process-group id, and only those. Record the group
# with `PGID[name]=$!` after starting it in the background.

declare -A PGID=()

# log MESSAGE — to stderr, with the script's name and the time; die MESSAGE — log, exit 1.
log() { printf '[%s %s] %s\n' "${0##*/}" "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Every `palisade serve` a script starts puts its admin API on a port of its own
# choosing, so several nodes (or a developer's own gateway on 8081) do not collide.
export PALISADE_ADMIN__LISTEN=127.0.0.1:0

# stop_group NAME — TERM the group, wait up to 5 s, then KILL what is left.
stop_group() {
    local name=$1 pg=${PGID[$1]:-}
    [[ -n $pg ]] || return 0
    kill -TERM -- "-$pg" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 -- "-$pg" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pg" 2>/dev/null || true
    wait "$pg" 2>/dev/null || true
    unset "PGID[$name]"
}

# stop_all — every group still recorded (for the EXIT trap).
stop_all() {
    local name
    for name in "${!PGID[@]}"; do stop_group "$name"; done
}

# stop_all_on_exit — stop every recorded group when the script ends, however it ends
# (keeping its exit status; 130/143 on INT/TERM).
stop_all_on_exit() {
    # shellcheck disable=SC2317 # invoked by the EXIT trap
    _bench_cleanup() {
        local rc=$?
        trap - EXIT INT TERM
        stop_all
        exit "$rc"
    }
    trap _bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# palisade_proxy_env SIM_PORT DATA_DIR — set PALISADE_ENV to the environment the
# proxy benchmarks run `palisade serve` under: the sim as its only upstream and
# every stage on (edge checks, identity, admission, guard scoring), with only the
# budgets raised past what one benchmark client sends, so what is measured is
# the cost of the checks, not their refusals.
palisade_proxy_env() {
    local unlimited='{ count = 100000000, period_ms = 1000, burst = 100000000 }'
    PALISADE_ENV=(PALISADE_UPSTREAMS="[{name=\"sim\", url=\"http://127.0.0.1:$1\"}]"
        PALISADE_DATA_DIR="$2" PALISADE_LOG__LEVEL=warn
        PALISADE_SHIELD__LIMITS__PER_IP="$unlimited" PALISADE_SHIELD__LIMITS__PER_SUBNET="$unlimited"
        PALISADE_SHIELD__LIMITS__PER_ACCOUNT="$unlimited" PALISADE_SHIELD__LIMITS__PER_API_KEY="$unlimited"
        PALISADE_ADMISSION__PER_ACCOUNT_MAX_IN_FLIGHT=100000 PALISADE_ADMISSION__ACCOUNT_SHARE=1.0
        PALISADE_SHIELD__LIMITS__CONCURRENT_PER_ACCOUNT=100000
        PALISADE_ADMISSION__LIMIT__INITIAL=256 PALISADE_ADMISSION__LIMIT__MIN=256
        PALISADE_SHIELD__LIMITS__ACCOUNT_TOKENS="$unlimited" PALISADE_ABUSE__TOKEN_SPIKE_FACTOR=0
        # The bench key's account is minutes old (the `recent` tier): its tier's share,
        # raised like the rest.
        PALISADE_PRIORITY__TIER_LIMITS__MAX_IN_FLIGHT='{ established = 100000, standard = 100000, recent = 100000, newcomer = 100000 }'
        PALISADE_PRIORITY__TIER_LIMITS__BUDGET_FRACTION='{ established = 1.0, standard = 1.0, recent = 1.0, newcomer = 1.0 }')
}

# start NAME CPU CMD... — run CMD pinned to CPU (at niceness $NICE, 0 when
# unset), output to $OUT/NAME.log.
start() {
    local name=$1 cpu=$2
    shift 2
    setsid taskset -c "$cpu" nice -n "${NICE:-0}" "$@" >"$OUT/$name.log" 2>&1 </dev/null &
    PGID[$name]=$!
}

# wait_ready NAME SECONDS CURL-ARGS... — poll until curl succeeds; fail early
# if the process died.
wait_ready() {
    local name=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if ! kill -0 "${PGID[$name]}" 2>/dev/null; then
            log "$name exited during start-up; last lines of $OUT/$name.log:"
            tail -n 20 "$OUT/$name.log" >&2 || true
            return 1
        fi
        if curl -fsS --noproxy '*' -m 2 -o /dev/null "$@" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    log "$name not ready after ${secs}s; last lines of $OUT/$name.log:"
    tail -n 20 "$OUT/$name.log" >&2 || true
    return 1
}

# group_ticks PGID — utime+stime (in clock ticks) of every process in the group, from /proc.
group_ticks() { # PGID -> ticks
    local pg=$1 total=0 f line
    local -a v
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue # the process may be gone
        read -ra v <<<"${line##*) }" # v[0]=state v[2]=pgrp v[11]=utime v[12]=stime
        [[ ${v[2]} == "$pg" ]] && total=$((total + v[11] + v[12]))
    done
    echo "$total"
}

# callgrind_per_request NAME DUMP PATTERN REQUESTS — the inclusive instruction count of
# the first `callgrind_annotate` line containing PATTERN ("PROGRAM TOTALS" for all),
# divided by REQUESTS, into RESULT[NAME]. Uses the caller's OUT.
callgrind_per_request() {
    local name=$1 dump=$2 pattern=$3 requests=$4 counted
    callgrind_annotate --inclusive=yes "$dump" >"$OUT/annotate.$name" 2>/dev/null
    counted=$(awk -v pattern="$pattern" 'index($0, pattern) { gsub(",", "", $1); print $1; exit }' "$OUT/annotate.$name")
    [[ -n $counted && $requests -gt 0 ]] || die "no count for $name in $dump"
    RESULT[$name]=$((counted / requests))
    log "$name: $requests requests, ${RESULT[$name]} instructions each"
}

# instruction_table ANCHOR... — RESULT for every target of TARGETS, with its ratio to
# RESULT[ANCHOR] for each ANCHOR measured, as a Markdown table.
instruction_table() {
    local anchor target ratio head="| target | instructions per request |" rule="|---|---:|" row
    for anchor in "$@"; do
        [[ -n ${RESULT[$anchor]:-} ]] || continue
        head+=" vs $anchor |"
        rule+="---:|"
    done
    echo
    echo "$head"
    echo "$rule"
    for target in $TARGETS; do
        row="| $target | ${RESULT[$target]} |"
        for anchor in "$@"; do
            [[ -n ${RESULT[$anchor]:-} ]] || continue
            ratio=$(awk -v a="${RESULT[$target]}" -v b="${RESULT[$anchor]}" 'BEGIN { printf "%.2f×", a / b }')
            row+=" $ratio |"
        done
        echo "$row"
    done
}

# count_syscalls NAME PID URL [WRK-ARGS...] — wrk (CONNS connections, DURATION s, on CPU 0)
# against URL while strace counts the system calls of every thread of PID; sets CALLS[NAME]
# to the calls per request and TOP[NAME] to the most frequent ones, per request. The wrk
# output is left in $OUT/wrk.sys.NAME. Uses the caller's OUT, CONNS, DURATION, CALLS, TOP.
count_syscalls() {
    local name=$1 pid=$2 url=$3 tracer requests
    shift 3
    setsid strace -f -c -o "$OUT/strace.$name" -p "$pid" 2>"$OUT/strace.$name.log" &
    tracer=$!
    sleep 1 # strace has attached to every thread before the count starts
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "$url" >"$OUT/wrk.sys.$name"
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    requests=$(awk '/requests in/ { print $1 }' "$OUT/wrk.sys.$name")
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall; then "total".
    CALLS[$name]=$(awk -v n="$requests" '$NF == "total" { printf "%.2f", $4 / n }' "$OUT/strace.$name")
    TOP[$name]=$(awk -v n="$requests" '$1 ~ /^[0-9.]+$/ && $NF != "total" { printf "%s %.2f\n", $NF, $4 / n }' \
        "$OUT/strace.$name" | sort -k2 -rn | head -n 6 | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
    log "$name: $requests requests, ${CALLS[$name]} system calls each"
}

# callgrind_mallocs DUMP REQUESTS — calls to malloc per request in a callgrind dump,
# from every caller but SQLite's own allocator (the store's background writes), with
# one decimal: how many heap allocations a request costs.
callgrind_mallocs() {
    awk -v requests="$2" '
        /^c?fn=/ {
            callee = substr($0, 1, 1) == "c"
            text = $0
            sub(/^c?fn=/, "", text)
            if (match(text, /^\([0-9]+\)/)) {
                id = substr(text, 1, RLENGTH)
                if (length(text) > RLENGTH) name[id] = substr(text, RLENGTH + 2)
                text = name[id]
            }
            if (callee) to = text; else from = text
        }
        /^calls=/ && to == "malloc" && from != "sqlite3MemMalloc" { split($0, c, /[= ]/); total += c[2] }
        END { printf "%.1f\n", (requests > 0 ? total / requests : 0) }
    ' "$1"
}
