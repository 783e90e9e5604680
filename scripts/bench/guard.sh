# S12 of scripts/bench.sh: S1 (static 1 KiB, keep-alive) against two shoals in the same rounds,
# alternating: S1's "shoal", and "shoal-guarded", the same with a limit_requests guard on its
# route that never refuses (S12_GUARD: a million requests a second with a burst of a million,
# keyed by the client address) (issue 17). wrk's 64 connections all come from 127.0.0.1, so
# every request of the run takes one bucket in the limits' shared table, from both workers:
# the guard's whole path (the key, the bucket's lookup, its update) runs on each of them.
# A guard that answers anything but 200 spoils the figure, so a run that got a non-2xx status
# (a 429) stops the benchmark. Sourced by bench.sh.
# shellcheck shell=bash

S12_GUARD='limit_requests = { rate = "1000000/s", burst = 1000000, key = "client" }'

scenario_s12() {
    local name
    if [[ $SKIP_SHOAL == 1 ]]; then
        log "s12: left out (SKIP_SHOAL=1, and both its targets are shoal)"
        return 0
    fi
    TARGETS=()
    start_shoal shoal "$SHOAL_PORT" static
    SHOAL_ROUTE_LINES=$S12_GUARD start_shoal shoal-guarded "$SHOAL_GUARD_PORT" static
    grep -qF "$S12_GUARD" "$TMP/shoal-guarded.toml" || die "shoal-guarded's config has no guard"
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    fact cmd.s12 "$(cmd_text wrk_argv PORT)"
    for_rounds s12_run
    stop_servers "${TARGETS[@]}"
}

s12_run() {
    local name=$1 round=$2 non2xx
    run_wrk s12 "$name" "$round"
    non2xx=$(wrk_non2xx "$TMP/s12-$name-$round.wrk")
    ((non2xx == 0)) || die "s12 round $round: $non2xx of $name's answers were not 2xx (the guard refused?)"
}
