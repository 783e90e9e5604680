# S8 and S9 of scripts/bench.sh: the proxy as a legacy app's shield. Sourced by bench.sh.
#
# S8, legacy shield: shoal and nginx (each with its default response buffering) in front of a
# pre-fork app with 4 sync workers (scripts/bench/sync_app.py: one request at a time per
# worker, the answer written whole even to a slow reader). 200 slow clients
# (scripts/bench/slow_readers.py) pull S8_BIG_MIB MiB answers at S8_READ_KIBS KiB/s each while
# wrk measures the small requests, from when the app has written every big answer (so the
# proxies' steady state is measured, not how fast they take in the first burst). A proxy that
# takes the big answers at the app's pace frees its workers. shoal runs with its defaults
# (only the temporary files' directory is the run's). HAProxy does not buffer responses: the
# slow clients hold all 4 app workers and wrk completes no request at all, so it is not a
# target here.
#
# S9, S4 under a flood: S4's setup at WRK_CONNS clients and at S9_CONNS (4,000). shoal runs
# with max_conns = 64 on the upstream server and keepalive at its default, which follows the
# cap (64 per worker, as S4): requests over 64 wait for a pooled connection instead of opening
# new ones, and whichever worker holds the permits can keep all 64 connections (with 32 per
# worker, a worker holding more than half of them closed its surplus: one connect per five
# requests, a third more CPU per request). nginx and HAProxy keep S4's configuration (64 idle
# connections each). Each target is measured at both
# concurrencies in every round; results go to scenarios s9-low and s9-high.
# shellcheck shell=bash

scenario_s8() {
    local name
    TARGETS=()
    launch upstream "$UPSTREAM_PORT" python3 "$REPO/scripts/bench/sync_app.py" "$UPSTREAM_PORT" 4 "$TMP/site" \
        $((S8_BIG_MIB * 1024 * 1024)) "$TMP/s8-big.log"
    wait_ready upstream
    [[ $SKIP_SHOAL == 1 ]] || start_shoal shoal-shield "$SHOAL_PROXY_PORT" proxy ""
    start_nginx_proxy nginx-shield "$NGINX_PROXY_PORT"
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    fact cmd.s8 "$S8_READERS x slow_readers.py PORT $S8_READERS /big $((S8_READ_KIBS * 1024)) (S8_BIG_MIB=$S8_BIG_MIB), then $(cmd_text wrk_argv PORT)"
    ROUNDS=$S8_ROUNDS for_rounds s8_run
    stop_servers "${TARGETS[@]}" upstream
}

# One S8 run: the slow readers start, the app writes their answers (to the proxy), and the
# readers stay for wrk's run.
s8_run() {
    local name=$1 round=$2 out=$TMP/s8-$1-$2.readers deadline=$((SECONDS + 60))
    : > "$TMP/s8-big.log"
    python3 "$REPO/scripts/bench/slow_readers.py" "${PORT[$name]}" "$S8_READERS" /big \
        $((S8_READ_KIBS * 1024)) > "$out" 2>&1 &
    PID[client]=$!
    while (($(stat -c %s "$TMP/s8-big.log") < S8_READERS)); do
        ((SECONDS < deadline)) || die "$name: the app wrote $(stat -c %s "$TMP/s8-big.log") of $S8_READERS big answers in 60 s"
        sleep 0.2
    done
    run_wrk s8 "$name" "$round"
    stop_pid client "${PID[client]}"
    unset "PID[client]"
    log "  slow readers: $(tail -n 1 "$out")"
}

scenario_s9() {
    local name
    TARGETS=()
    start_nginx upstream "$UPSTREAM_PORT"
    wait_ready upstream
    [[ $SKIP_SHOAL == 1 ]] || start_shoal shoal-capped "$SHOAL_PROXY_PORT" proxy 'max_conns = 64'
    start_nginx_proxy nginx-proxy "$NGINX_PROXY_PORT"
    start_haproxy haproxy "$HAPROXY_PORT"
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    fact cmd.s9-low "$(cmd_text wrk_argv PORT)"
    fact cmd.s9-high "$(WRK_CONNS=$S9_CONNS cmd_text wrk_argv PORT)"
    for_rounds s9_run
    stop_servers "${TARGETS[@]}" upstream
}

s9_run() {
    run_wrk s9-low "$1" "$2"
    WRK_CONNS=$S9_CONNS run_wrk s9-high "$1" "$2"
}
