# S1, S2 and S3 of scripts/bench.sh: the static file scenarios. They share one set of servers
# (shoal, nginx, nginx-reuseport; start_static_targets), started once for whichever of them
# is selected. Sourced by bench.sh.
# shellcheck shell=bash

# S1: static 1 KiB over keep-alive, wrk with latency percentiles.
scenario_s1() {
    fact cmd.s1 "$(cmd_text wrk_argv PORT)"
    for_rounds s1_run
}

s1_run() { run_wrk s1 "$1" "$2"; }

# S2: a new connection per request, first with wrk -H "Connection: close" (the figure that
# counts: req/s and the server's CPU per connection; wrk's one thread is cheap enough per
# connection not to set the ceiling, as ab's does), then ab without keep-alive (HTTP/1.0, a
# connection per request) and with -k, kept as secondary rows. Every target, alternating.
scenario_s2() {
    fact cmd.s2-wrk-close "$(WRK_CLOSE=1 cmd_text wrk_argv PORT)"
    fact cmd.s2-close "$(cmd_text ab_argv "" PORT)"
    fact cmd.s2-keepalive "$(cmd_text ab_argv k PORT)"
    for_rounds s2_run
}

# The three runs of one target back to back; targets alternate within each round.
s2_run() {
    WRK_CLOSE=1 run_wrk s2-wrk-close "$1" "$2"
    run_ab s2-close "$1" "$2" ""
    run_ab s2-keepalive "$1" "$2" k
}

# bulk_argv ARRAY PORT: S3's client (run from the repository root).
bulk_argv() {
    local -n _bulk=$1
    _bulk=(python3 scripts/bench/bulk_get.py --port "$2" --path /64m.bin --size "$BIG_BYTES" --conns 4 --duration "$DURATION")
}

# S3: the 64 MiB file over 4 keep-alive connections (scripts/bench/bulk_get.py, which
# discards bytes in the kernel so that it does not limit the figure); records gbps, errors
# and cpu_ms_per_gb (the server tree's CPU ms per GB sent).
scenario_s3() {
    local name
    for name in "${TARGETS[@]}"; do check_body "$name" 64m.bin; done
    fact cmd.s3 "$(cmd_text bulk_argv PORT)"
    for_rounds s3_run
}

s3_run() {
    local name=$1 round=$2 out=$TMP/s3-$1-$2.txt cpu0 cpu1 line bytes gbps errors
    local -a cmd
    need_alive "$name"
    bulk_argv cmd "${PORT[$name]}"
    log "s3 round $round: $name: ${cmd[*]}"
    cpu0=$(tree_cpu_sample "${PID[$name]}")
    (cd "$REPO" && "${cmd[@]}") > "$out" 2>&1 || { cat "$out" >&2; die "bulk_get failed on $name"; }
    cpu1=$(tree_cpu_sample "${PID[$name]}")
    line=$(grep '^bytes=' "$out") || { cat "$out" >&2; die "no result line from bulk_get on $name"; }
    bytes=$(kv bytes "$line"); gbps=$(kv gbps "$line"); errors=$(kv errors "$line")
    record s3 "$name" gbps "$round" "$gbps"
    record s3 "$name" errors "$round" "$errors"
    record s3 "$name" cpu_ms_per_gb "$round" \
        "$(awk -v t="$(cpu_delta "$name" "$cpu0" "$cpu1")" -v hz="$CLK_TCK" -v b="$bytes" 'BEGIN { printf "%.1f\n", t * 1000 / hz / (b / 1e9) }')"
    log "  $gbps GB/s, errors $errors ($line)"
}

# kv KEY "k=v k=v ...": the value of KEY in a line of key=value words.
kv() { tr ' ' '\n' <<< "$2" | awk -F= -v k="$1" '$1 == k { print $2; exit }'; }

# Run the selected static scenarios on one set of static servers.
static_scenarios() {
    local s any=0
    for s in s1 s2 s3; do selected "$s" && any=1; done
    ((any)) || return 0
    start_static_targets
    local -a servers=("${TARGETS[@]}")
    # The floor answers only the 1 KiB file: a reference for S1 and S2, not for S3.
    start_static_floor
    selected s1 && scenario_s1
    selected s2 && scenario_s2
    TARGETS=("${servers[@]}")
    selected s3 && scenario_s3
    stop_servers "${servers[@]}" floor
}
