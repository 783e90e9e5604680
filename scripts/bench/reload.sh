# S5 of scripts/bench.sh: S1's load while the server reloads its configuration HUPS times.
# Fresh static servers (start_static_targets); for each run, wrk (with lib.sh's LD_PRELOAD
# shim, which notes every error wrk counts) loads one target for S5_WARMUP seconds, then the
# master gets a HUP every S5_INTERVAL seconds; after each HUP the run waits until the reload is
# over (reload_shoal / reload_nginx in lib.sh, bounded), so a slow reload delays the next one
# instead of overlapping it. One second after the last reload settled, wrk is stopped with
# SIGINT (it then prints its totals as at the end of -d). Sourced by bench.sh.
# shellcheck shell=bash

# s5_argv ARRAY PORT: S5's load; it is stopped by SIGINT (see the header).
s5_argv() {
    local -n _s5=$1
    _s5=(wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$(s5_bound)s" --latency "http://127.0.0.1:$2/1k.bin")
}
s5_text() {
    echo "$(cmd_text s5_argv "$1") (stopped by SIGINT 1 s after the last of $HUPS HUPs, one every" \
        "${S5_INTERVAL} s after ${S5_WARMUP} s, each awaited until the reload is over)"
}
# wrk's own -d: the longest a run may take (every reload slow); it normally ends by SIGINT.
s5_bound() { echo $((S5_WARMUP + HUPS * (S5_INTERVAL + 22) + 5)); }

scenario_s5() {
    start_static_targets
    build_spy "$TMP"
    fact cmd.s5 "$(s5_text PORT)"
    for_rounds s5_run
    stop_servers "${TARGETS[@]}"
}

# s5_run NAME ROUND: records errors (wrk's non-2xx + socket errors), reloads (HUPs that
# settled in time), closes (the shim's count of connections the server closed while wrk
# waited for a response; "" without the shim), rps and cpu_us (the server tree's, old and new
# workers included).
s5_run() {
    local name=$1 round=$2 out=$TMP/s5-$1-$2.wrk spy=$TMP/s5-$1-$2.spy t0 k settled=0 errors rps closes="" cpu0 cpu
    local -a cmd
    need_alive "$name"
    : > "$spy"
    s5_argv cmd "${PORT[$name]}"
    log "s5 round $round: $name: $(s5_text "${PORT[$name]}")"
    cpu0=$(tree_cpu_sample "${PID[$name]}")
    LD_PRELOAD=$SPY WRKSPY_LOG=$spy "${cmd[@]}" > "$out" 2>&1 &
    PID["wrk"]=$!
    t0=$(now_us)
    for ((k = 0; k < HUPS; k++)); do
        sleep_until_us $((t0 + (S5_WARMUP + k * S5_INTERVAL) * 1000000))
        pid_alive "${PID[wrk]}" || break
        need_alive "$name"
        if s5_reload "$name"; then
            settled=$((settled + 1))
        else
            log "WARNING: $name: reload $((k + 1)) did not settle within the bound"
        fi
    done
    sleep 1   # one more second of load: errors caused by the last reload show up in it
    kill -INT "${PID[wrk]}" 2>/dev/null || true
    wait "${PID[wrk]}" || { cat "$out" >&2; die "wrk failed on $name"; }
    unset "PID[wrk]"
    cpu=$(us_per "$(wrk_requests "$out")" "$(cpu_delta "$name" "$cpu0" "$(tree_cpu_sample "${PID[$name]}")")")
    rps=$(awk '$1 == "Requests/sec:" { print $2 }' "$out")
    [[ -n $rps ]] || { cat "$out" >&2; die "could not parse wrk output for $name"; }
    errors=$(($(wrk_non2xx "$out") + $(wrk_sockerr "$out")))
    [[ -z $SPY ]] || closes=$(awk '$2 == "eof"' "$spy" | wc -l)
    record s5 "$name" errors "$round" "$errors"
    record s5 "$name" reloads "$round" "$settled"
    record s5 "$name" rps "$round" "$rps"
    record s5 "$name" cpu_us "$round" "$cpu"
    [[ -z $closes ]] || record s5 "$name" closes "$round" "$closes"
    log "  $settled/$HUPS reloads settled in $((($(now_us) - t0) / 1000)) ms, errors $errors," \
        "closes with a request outstanding ${closes:-(no shim)}, $rps req/s, CPU $cpu µs/req"
}

# One HUP to target NAME's master, waiting until that reload is over.
s5_reload() {
    case $1 in
        shoal*) reload_shoal "${PID[$1]}" "$TMP/$1.out" "$WORKERS" ;;
        *) reload_nginx "${PID[$1]}" "$WORKERS" ;;
    esac
}
