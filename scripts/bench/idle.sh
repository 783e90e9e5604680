# S6 of scripts/bench.sh: memory per idle keep-alive connection (and, through idle_scenario,
# S6-tls in scripts/bench/https.sh). For each round and target, a fresh server (so what an
# earlier round allocated does not hide this one's cost), then scripts/bench/idle_conns.py:
# warm-up, measure the server's process tree, open the connections with one request each and
# keep them idle, check they are all ESTABLISHED on the server's port, measure again. Sourced
# by bench.sh.
# shellcheck shell=bash

# idle_argv ARRAY PORT MASTER_PID CONNS [FLAG...]: S6's client (run from the repository root);
# FLAG: --tls for HTTPS.
idle_argv() {
    local -n _idle=$1
    _idle=(python3 scripts/bench/idle_conns.py --port "$2" --pid "$3" --conns "$4" --path /1k.bin --warmup 64 --settle 1 "${@:5}")
}

scenario_s6() { idle_scenario s6 "$IDLE_CONNS" s6_run "$(static_target_names)"; }

# s6_run NAME ROUND: one S6 measurement of a fresh static target.
s6_run() { idle_run s6 start_static_target "$IDLE_CONNS" "$1" "$2"; }

# idle_scenario SCENARIO CONNS RUN "NAMES" [FLAG...]: RUN NAME ROUND for every round and
# target NAME (one fresh server at a time); FLAG as idle_argv's.
idle_scenario() {
    local scen=$1 conns=$2 run=$3 names
    read -r -a names <<< "$4"
    TARGETS=("${names[@]}")
    fact "cmd.$scen" "$(cmd_text idle_argv PORT MASTER_PID "$conns" "${@:5}")"
    for_rounds "$run"
    TARGETS=("${names[@]}")
}

# idle_run SCENARIO START CONNS NAME ROUND [FLAG...]: START NAME (a function that starts target
# NAME alone, ready and checked), idle_conns.py with CONNS connections, stop. Records
# kib_per_conn_pss, kib_per_conn_rss, kib_per_conn_dirty and established (the server's
# ESTABLISHED sockets at the measurement).
idle_run() {
    local scen=$1 start=$2 conns=$3 name=$4 round=$5 out=$TMP/$1-$4-$5.txt line key pids_before pids_after
    local -a cmd
    # The start functions reset nothing else: keep TARGETS as the scenario's list.
    local -a keep=("${TARGETS[@]}")
    "$start" "$name"
    TARGETS=("${keep[@]}")
    idle_argv cmd "${PORT[$name]}" "${PID[$name]}" "$conns" "${@:6}"
    log "$scen round $round: $name: ${cmd[*]}"
    (cd "$REPO" && exec "${cmd[@]}") > "$out" 2>&1 &
    PID["client"]=$!
    wait "${PID[client]}" || { cat "$out" >&2; unset "PID[client]"; die "idle_conns failed on $name"; }
    unset "PID[client]"
    line=$(grep '^conns=' "$out") || { cat "$out" >&2; die "no result line from idle_conns on $name"; }
    for key in kib_per_conn_pss kib_per_conn_rss kib_per_conn_dirty established; do
        record "$scen" "$name" "$key" "$round" "$(kv "$key" "$line")"
    done
    pids_before=$(kv pids_before "$line"); pids_after=$(kv pids_after "$line")
    [[ $pids_before == "$pids_after" ]] ||
        log "WARNING: $name's process tree changed during $scen ($pids_before -> $pids_after); its figure is approximate"
    log "  $(kv kib_per_conn_pss "$line") KiB/conn (Pss), $(kv kib_per_conn_rss "$line") KiB/conn (Rss)," \
        "$(kv established "$line") established"
    stop_servers "$name"
}
