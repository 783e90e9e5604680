# S7 of scripts/bench.sh: start-up time, from exec to the first 200 on /1k.bin. For each of
# STARTS starts, alternating targets, scripts/bench/startup_probe.py takes the time, execs the
# server (the same static config as S1), polls it every millisecond, then stops it by its pid.
# Sourced by bench.sh.
# shellcheck shell=bash

# probe_argv ARRAY PORT LOG SERVER...: S7's probe starting SERVER (run from the repository root).
probe_argv() {
    local -n _probe=$1
    _probe=(python3 scripts/bench/startup_probe.py --port "$2" --path /1k.bin --size 1024 --interval 0.001 --log "$3" -- "${@:4}")
}

scenario_s7() {
    local start name
    TARGETS=()
    [[ $SKIP_SHOAL == 1 ]] || TARGETS+=(shoal)
    TARGETS+=(nginx)
    mkdir -p "$TMP/s7"
    write_shoal_conf "$TMP/s7/shoal.toml" "$SHOAL_PORT" static
    write_static_nginx_conf s7/nginx "$NGINX_PORT"
    fact cmd.s7 "$(cmd_text probe_argv PORT LOG) SERVER_COMMAND"
    for ((start = 1; start <= STARTS; start++)); do
        for name in "${TARGETS[@]}"; do s7_run "$name" "$start"; done
    done
}

# s7_run NAME START: records ms (exec to the first 200).
s7_run() {
    local name=$1 start=$2 port out=$TMP/s7/$1-$2.txt ms
    local -a server cmd
    if [[ $name == shoal ]]; then
        port=$SHOAL_PORT server=("$SHOAL_BIN" "${SHOAL_AS[@]}" -c "$TMP/s7/shoal.toml")
    else
        port=$NGINX_PORT
        nginx_args "$TMP/s7/nginx"
        server=("${NGINX_ARGS[@]}")
    fi
    check_port_free "$port"
    probe_argv cmd "$port" "$TMP/s7/$name.out" "${server[@]}"
    (cd "$REPO" && exec "${cmd[@]}") > "$out" 2>&1 &
    PID["client"]=$!
    wait "${PID[client]}" || { cat "$out" >&2; show_log "$TMP/s7/$name.out"; unset "PID[client]"; die "startup_probe failed on $name"; }
    unset "PID[client]"
    ms=$(grep -o 'ms=[0-9.]*' "$out") || { cat "$out" >&2; die "no result from startup_probe on $name"; }
    record s7 "$name" ms "$start" "${ms#ms=}"
    log "s7 start $start: $name: first 200 after ${ms#ms=} ms"
}
