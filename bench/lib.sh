# bench/lib.sh — process handling shared by the bench scripts (sourced, not run).
#
# Every process a script starts runs in its own session (setsid), so it and its
# children can be stopped by process-group id, and only those. Record the group
# with `PGID[name]=$!` after starting it in the background.

declare -A PGID=()

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
