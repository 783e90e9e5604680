# S6 of scripts/bench.sh: memory per idle keep-alive connection. For each round and target, a
# fresh server (so what an earlier round allocated does not hide this one's cost), then
# scripts/bench/idle_conns.py: warm-up, measure the server's process tree, open IDLE_CONNS
# connections with one request each and keep them idle, check they are all ESTABLISHED on the
# server's port, measure again. Sourced by bench.sh.
# shellcheck shell=bash

# idle_argv ARRAY PORT MASTER_PID: S6's client (run from the repository root).
idle_argv() {
    local -n _idle=$1
    _idle=(python3 scripts/bench/idle_conns.py --port "$2" --pid "$3" --conns "$IDLE_CONNS" --path /1k.bin --warmup 64 --settle 1)
}

scenario_s6() {
    local names
    read -r -a names <<< "$(static_target_names)"
    TARGETS=("${names[@]}")
    fact cmd.s6 "$(cmd_text idle_argv PORT MASTER_PID)"
    for_rounds s6_run
    TARGETS=("${names[@]}")
}

# s6_run NAME ROUND: records kib_per_conn_pss, kib_per_conn_rss, kib_per_conn_dirty and
# established (the server's ESTABLISHED sockets at the measurement).
s6_run() {
    local name=$1 round=$2 out=$TMP/s6-$1-$2.txt line key pids_before pids_after
    local -a cmd
    # start_static_target resets nothing else: keep TARGETS as the scenario's list.
    local -a keep=("${TARGETS[@]}")
    start_static_target "$name"
    TARGETS=("${keep[@]}")
    idle_argv cmd "${PORT[$name]}" "${PID[$name]}"
    log "s6 round $round: $name: ${cmd[*]}"
    (cd "$REPO" && exec "${cmd[@]}") > "$out" 2>&1 &
    PID["client"]=$!
    wait "${PID[client]}" || { cat "$out" >&2; unset "PID[client]"; die "idle_conns failed on $name"; }
    unset "PID[client]"
    line=$(grep '^conns=' "$out") || { cat "$out" >&2; die "no result line from idle_conns on $name"; }
    for key in kib_per_conn_pss kib_per_conn_rss kib_per_conn_dirty established; do
        record s6 "$name" "$key" "$round" "$(kv "$key" "$line")"
    done
    pids_before=$(kv pids_before "$line"); pids_after=$(kv pids_after "$line")
    [[ $pids_before == "$pids_after" ]] ||
        log "WARNING: $name's process tree changed during S6 ($pids_before -> $pids_after); its figure is approximate"
    log "  $(kv kib_per_conn_pss "$line") KiB/conn (Pss), $(kv kib_per_conn_rss "$line") KiB/conn (Rss)," \
        "$(kv established "$line") established"
    stop_servers "$name"
}
