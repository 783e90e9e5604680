#!/usr/bin/env bash
# S8 without its slow readers, with the scheduler's view: wrk through shoal (one or more
# binaries) and nginx to S8's app (scripts/bench/sync_app.py, 4 sync workers, one connection
# per request), alternating targets every round. Besides req/s, p50, p99 and the proxy's CPU
# per request, each run counts per request how often the app's workers blocked (voluntary
# context switches: waiting in accept or recv) and how often the proxy's workers were
# preempted (involuntary ones), from /proc/PID/status of both process trees. It then prints
# each target's medians. docs/performance.md ("S8's p99") reads these counts.
#
# Usage: scripts/bench/switches.sh BIN...     (each BIN a shoal binary; target/release/shoal)
# Environment: DURATION=5 (s per wrk run), ROUNDS=5, WORKERS=2, WRK_THREADS=1, WRK_CONNS=64,
#   SWITCHES_PORT=18100 (uses this port for nginx, one per binary after it, and one more for
#   the app)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
(($# > 0)) || { echo "usage: switches.sh BIN..." >&2; exit 2; }
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
WORKERS=${WORKERS:-2}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-64}
BASE_PORT=${SWITCHES_PORT:-18100}
NGINX_PROXY_PORT=$BASE_PORT
UPSTREAM_PORT=$((BASE_PORT + $# + 1))
CONN_CAP=10240   # connections per worker in servers.sh's configs

LOG_TAG=switches
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
# shellcheck source=scripts/bench/servers.sh
source "$REPO/scripts/bench/servers.sh"
# shellcheck source=scripts/bench/measure.sh
source "$REPO/scripts/bench/measure.sh"

# switches PID: the voluntary and involuntary context switches of PID's process tree so far.
switches() {
    local pid vol=0 invol=0 key value
    for pid in $(process_tree "$1"); do
        while read -r key value; do
            case $key in
                voluntary_ctxt_switches:) vol=$((vol + value)) ;;
                nonvoluntary_ctxt_switches:) invol=$((invol + value)) ;;
            esac
        done < <(cat "/proc/$pid/status" 2>/dev/null || true)
    done
    echo "$vol $invol"
}

# switches_run NAME ROUND: one wrk run; prints and keeps its figures.
switches_run() {
    local name=$1 round=$2 out=$TMP/$1-$2.wrk cpu0 cpu1 proxy0 proxy1 app0 app1 requests
    local -a cmd
    need_alive "$name" upstream
    wrk_argv cmd "${PORT[$name]}"
    cpu0=$(tree_cpu_sample "${PID[$name]}")
    read -r -a proxy0 <<< "$(switches "${PID[$name]}")"
    read -r -a app0 <<< "$(switches "${PID[upstream]}")"
    "${cmd[@]}" > "$out" 2>&1 || { cat "$out" >&2; die "wrk failed on $name"; }
    read -r -a app1 <<< "$(switches "${PID[upstream]}")"
    read -r -a proxy1 <<< "$(switches "${PID[$name]}")"
    cpu1=$(tree_cpu_sample "${PID[$name]}")
    requests=$(wrk_requests "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" \
        "$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$out")" \
        "$(wrk_latency_ms "$out" 50%)" "$(wrk_latency_ms "$out" 99%)" \
        "$(us_per "$requests" "$(cpu_delta "$name" "$cpu0" "$cpu1")")" \
        "$(awk -v d=$((app1[0] - app0[0])) -v n="$requests" 'BEGIN { printf "%.2f", d / n }')" \
        "$(awk -v d=$((proxy1[1] - proxy0[1])) -v n="$requests" 'BEGIN { printf "%.2f", d / n }')" |
        tee -a "$TMP/runs.tsv"
}

# Each target's median of every column over its runs.
medians() {
    awk -F'\t' "$AWK_MEDIAN"'
        { names[$1] = 1; for (c = 3; c <= 8; c++) col[$1, c] = col[$1, c] " " $c }
        END {
            printf "| target | req/s | p50 ms | p99 ms | CPU µs/req | app blocks/req | proxy preemptions/req |\n"
            printf "|---|---:|---:|---:|---:|---:|---:|\n"
            for (t in names) {
                printf "| %s", t
                for (c = 3; c <= 8; c++) printf " | %s", median(col[t, c])
                printf " |\n"
            }
        }' "$TMP/runs.tsv"
}

main() {
    local i=0 bin
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    install_deps
    CLK_TCK=$(getconf CLK_TCK)
    make_site shoal-switches
    launch upstream "$UPSTREAM_PORT" python3 "$REPO/scripts/bench/sync_app.py" "$UPSTREAM_PORT" 4 "$TMP/site" 1024
    wait_ready upstream
    TARGETS=()
    for bin in "$@"; do
        i=$((i + 1))
        SHOAL_BIN=$bin start_shoal "shoal$i" "$((BASE_PORT + i))" proxy
    done
    start_nginx_proxy nginx "$NGINX_PROXY_PORT"
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    printf 'target\tround\treq/s\tp50 ms\tp99 ms\tCPU µs/req\tapp blocks/req\tproxy preemptions/req\n'
    : > "$TMP/runs.tsv"
    for_rounds switches_run
    echo
    medians
    printf '\n%s to sync_app.py (4 workers), %s rounds; %s\n' "$(cmd_text wrk_argv PORT)" "$ROUNDS" \
        "$(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
    for ((i = 1; i <= $#; i++)); do printf 'shoal%d: %s\n' "$i" "${!i}"; done
}

main "$@"
