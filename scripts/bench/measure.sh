# Measuring for scripts/bench.sh: raw results, run facts, CPU sampling, one wrk or ab run.
# Sourced by bench.sh after scripts/lib.sh. Every figure goes through `record` into
# $RESULTS (tab-separated: scenario, target, metric, round, value); scripts/bench/report.py
# turns that file into medians, ratios, the markdown report and the chart.
# shellcheck shell=bash

RESULTS=""   # $TMP/results.tsv, set by bench.sh's main
FACTS=""     # $TMP/facts.tsv: key, value (machine, versions, exact commands)
CLK_TCK=""   # clock ticks per second of /proc/<pid>/stat times

# record SCENARIO TARGET METRIC ROUND VALUE
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RESULTS"; }
# fact KEY VALUE...: one line of the report's description of the run (the last one wins).
fact() { local key=$1; shift; printf '%s\t%s\n' "$key" "$*" >> "$FACTS"; }

# result_median SCENARIO TARGET METRIC: the median (the lower middle for an even count) of the
# figures recorded so far, or nothing.
result_median() {
    awk -F'\t' -v s="$1" -v t="$2" -v m="$3" '$1 == s && $2 == t && $3 == m { print $5 }' "$RESULTS" |
        sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# for_rounds FUNC: FUNC TARGET ROUND for every round and target, alternating targets within a
# round so that drift (thermal, noisy neighbours) hits every server alike.
for_rounds() {
    local func=$1 round name
    for ((round = 1; round <= ROUNDS; round++)); do
        for name in "${TARGETS[@]}"; do "$func" "$name" "$round"; done
    done
}

need_alive() {
    local name
    for name in "$@"; do
        [[ -z ${PID[$name]:-} ]] || pid_alive "${PID[$name]}" || { show_logs "$name"; die "$name died"; }
    done
}

# --- CPU --------------------------------------------------------------------

# CPU seconds (as a decimal) from a tick difference.
ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.6f\n", t / hz }'; }

# cpu_delta NAME BEFORE AFTER: ticks used by server NAME between two tree_cpu_sample samples.
# A process that exited during the run is counted once its parent reaped it (cutime, cstime);
# warns when the tree changed, since one not reaped yet is missing.
cpu_delta() {
    local name=$1 before=$2 after=$3
    [[ ${before#* } == "${after#* }" ]] ||
        log "note: $name's process tree changed during the run (${before#* } -> ${after#* }); a process not reaped by the second sample is missing from its CPU figure"
    echo $((${after%% *} - ${before%% *}))
}

# us_per N TICKS: CPU µs per unit from ticks and a count of units.
us_per() { awk -v t="$2" -v hz="$CLK_TCK" -v n="$1" 'BEGIN { printf "%.3f\n", t * 1000000 / hz / n }'; }

# An awk function for programs that summarise runs: median(list), the median of the
# space-separated numbers in list (the lower middle of an even count), "-" for none.
# shellcheck disable=SC2034  # read by the sourcing scripts
AWK_MEDIAN='
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n ? a[int((n + 1) / 2)] : "-"
    }'

# --- commands ---------------------------------------------------------------
# A *_argv function puts a command into the array named by its first argument; cmd_text shows
# it as one line for the log and the report (the port may be the word PORT there).

# cmd_text FUNC ARGS...: the command FUNC would build from ARGS, as text (a word with a space
# in double quotes).
cmd_text() {
    local -a words shown=()
    local word
    "$1" words "${@:2}"
    for word in "${words[@]}"; do
        [[ $word != *" "* ]] || word="\"$word\""
        shown+=("$word")
    done
    echo "${shown[*]}"
}

# wrk_argv ARRAY PORT: the wrk command of run_wrk, S1's load. WRK_SCHEME=https makes it HTTPS
# (S1-tls), WRK_CLOSE=1 adds "Connection: close": a new connection for every request (S2-tls),
# WRK_ACCEPT_ENCODING=gzip adds "Accept-Encoding: gzip" (S11), WRK_PATH=/1k.html asks that
# path instead of /1k.bin (S11), WRK_PRELOAD=FILE runs wrk with LD_PRELOAD=FILE (through env).
wrk_argv() {
    local -n _wrk=$1
    _wrk=()
    [[ -z ${WRK_PRELOAD:-} ]] || _wrk=(env "LD_PRELOAD=$WRK_PRELOAD")
    _wrk+=(wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --latency)
    [[ ${WRK_CLOSE:-0} != 1 ]] || _wrk+=(-H "Connection: close")
    [[ -z ${WRK_ACCEPT_ENCODING:-} ]] || _wrk+=(-H "Accept-Encoding: $WRK_ACCEPT_ENCODING")
    _wrk+=("${WRK_SCHEME:-http}://127.0.0.1:$2${WRK_PATH:-/1k.bin}")
}

# ab_argv ARRAY KEEPALIVE PORT: the ab command of run_ab (KEEPALIVE empty or "k"). -r: a
# socket error is counted as a failed request instead of ending the run.
ab_argv() {
    local -n _ab=$1
    _ab=(ab -q -r ${2:+-k} -n "$AB_REQUESTS" -c "$AB_CONNS" "http://127.0.0.1:$3/1k.bin")
}

# --- wrk --------------------------------------------------------------------

# run_wrk SCENARIO NAME ROUND: one wrk_argv run against target NAME; records
# rps, p50_ms, p99_ms, errors (non-2xx + socket errors), cpu_us (the server tree's CPU µs per
# request) and, while an upstream runs, upstream_cpu_us.
run_wrk() {
    local scen=$1 name=$2 round=$3 out=$TMP/$1-$2-$3.wrk
    local cpu0 cpu1 up0="" up1="" rps p50 p99 errors requests cpu upcpu=""
    local -a cmd
    need_alive "$name" upstream
    wrk_argv cmd "${PORT[$name]}"
    log "$scen round $round: $name: ${cmd[*]}"
    cpu0=$(tree_cpu_sample "${PID[$name]}")
    [[ -z ${PID[upstream]:-} ]] || up0=$(tree_cpu_sample "${PID[upstream]}")
    "${cmd[@]}" > "$out" 2>&1 || { cat "$out" >&2; die "wrk failed on $name"; }
    cpu1=$(tree_cpu_sample "${PID[$name]}")
    [[ -z ${PID[upstream]:-} ]] || up1=$(tree_cpu_sample "${PID[upstream]}")
    rps=$(awk '$1 == "Requests/sec:" { print $2 }' "$out")
    p50=$(wrk_latency_ms "$out" 50%)
    p99=$(wrk_latency_ms "$out" 99%)
    requests=$(wrk_requests "$out")
    errors=$(($(wrk_non2xx "$out") + $(wrk_sockerr "$out")))
    [[ -n $rps && $p50 != "?" && $p99 != "?" ]] || { cat "$out" >&2; die "could not parse wrk output for $name"; }
    [[ $requests =~ ^[0-9]+$ && $requests -gt 0 ]] || { cat "$out" >&2; die "no completed requests in wrk output for $name"; }
    cpu=$(us_per "$requests" "$(cpu_delta "$name" "$cpu0" "$cpu1")")
    [[ -z $up0 ]] || upcpu=$(us_per "$requests" "$(cpu_delta upstream "$up0" "$up1")")
    record "$scen" "$name" rps "$round" "$rps"
    record "$scen" "$name" p50_ms "$round" "$p50"
    record "$scen" "$name" p99_ms "$round" "$p99"
    record "$scen" "$name" errors "$round" "$errors"
    record "$scen" "$name" cpu_us "$round" "$cpu"
    [[ -z $upcpu ]] || record "$scen" "$name" upstream_cpu_us "$round" "$upcpu"
    log "  $rps req/s, p50 $p50 ms, p99 $p99 ms, errors $errors, CPU $cpu µs/req${upcpu:+ (upstream $upcpu)}"
}

# --- ab ---------------------------------------------------------------------

# run_ab SCENARIO NAME ROUND KEEPALIVE: one ab run (KEEPALIVE empty or "k"); records rps,
# errors (failed + non-2xx), keepalive_requests (ab's count of requests that reused a
# connection) and cpu_us.
run_ab() {
    local scen=$1 name=$2 round=$3 ka=$4 out=$TMP/$1-$2-$3.ab cpu0 cpu1 rps completed failed non2xx kareq cpu
    local -a cmd
    need_alive "$name"
    ab_argv cmd "$ka" "${PORT[$name]}"
    log "$scen round $round: $name: ${cmd[*]}"
    cpu0=$(tree_cpu_sample "${PID[$name]}")
    "${cmd[@]}" > "$out" 2>&1 || { cat "$out" >&2; die "ab failed on $name"; }
    cpu1=$(tree_cpu_sample "${PID[$name]}")
    rps=$(awk '/^Requests per second:/ { print $4 }' "$out")
    completed=$(awk '/^Complete requests:/ { print $3 }' "$out")
    failed=$(awk '/^Failed requests:/ { print $3 }' "$out")
    non2xx=$(awk '/^Non-2xx responses:/ { n = $3 } END { print n + 0 }' "$out")
    kareq=$(awk '/^Keep-Alive requests:/ { n = $3 } END { print n + 0 }' "$out")
    [[ -n $rps && $completed =~ ^[0-9]+$ && $completed -gt 0 && -n $failed ]] || { cat "$out" >&2; die "could not parse ab output for $name"; }
    cpu=$(us_per "$completed" "$(cpu_delta "$name" "$cpu0" "$cpu1")")
    record "$scen" "$name" rps "$round" "$rps"
    record "$scen" "$name" errors "$round" $((failed + non2xx))
    record "$scen" "$name" keepalive_requests "$round" "$kareq"
    record "$scen" "$name" cpu_us "$round" "$cpu"
    log "  $rps req/s, failed $failed, non-2xx $non2xx${ka:+, keep-alive requests $kareq}, CPU $cpu µs/req"
}
