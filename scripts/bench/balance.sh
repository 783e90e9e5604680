#!/usr/bin/env bash
# How S4's p99 depends on how the kernel spreads wrk's connections over shoal's workers. S4's
# upstream, shoal proxying to it (one or more binaries, e.g. a build with another steering
# program) and HAProxy (threads taking connections from one shared queue); every round runs
# wrk against each target, alternating, and for shoal counts the established client
# connections per worker 1 s into the run (`ss -tnp`). Prints one line per run (the split,
# p50, p99, CPU µs/req) and, per target, the median p99 over all runs, over the runs whose
# split was even within 2 connections and over the others.
#
# Usage: scripts/bench/balance.sh BIN...     (each BIN a shoal binary; target/release/shoal)
# Environment: DURATION=6 (s per wrk run), ROUNDS=8, WORKERS=2, WRK_THREADS=1, WRK_CONNS=64,
#   BALANCE_PORT=18094 (uses this port, one per binary after it, and one more for the upstream)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
(($# > 0)) || { echo "usage: balance.sh BIN..." >&2; exit 2; }
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-8}
WORKERS=${WORKERS:-2}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-64}
BASE_PORT=${BALANCE_PORT:-18094}
HAPROXY_PORT=$BASE_PORT
UPSTREAM_PORT=$((BASE_PORT + $# + 1))
CONN_CAP=10240   # connections per worker in servers.sh's configs

LOG_TAG=balance
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
# shellcheck source=scripts/bench/servers.sh
source "$REPO/scripts/bench/servers.sh"
# shellcheck source=scripts/bench/measure.sh
source "$REPO/scripts/bench/measure.sh"

# split NAME: the established client connections of target NAME per process, largest first
# ("36/28"); "-" for a single process (HAProxy's threads share one).
split() {
    ss -Htnp state established "( sport = :${PORT[$1]} )" |
        grep -o 'pid=[0-9]*' | sort | uniq -c | awk '{ print $1 }' | sort -rn | paste -sd/
}

# balance_run NAME ROUND: one wrk run; prints and records its split and figures.
balance_run() {
    local name=$1 round=$2 out=$TMP/$1-$2.wrk cpu0 cpu1 parts=""
    local -a cmd
    need_alive "$name" upstream
    wrk_argv cmd "${PORT[$name]}"
    cpu0=$(tree_cpu_sample "${PID[$name]}")
    "${cmd[@]}" > "$out" 2>&1 &
    PID[wrk]=$!
    sleep 1
    [[ $name == haproxy ]] || parts=$(split "$name")
    wait "${PID[wrk]}" || { cat "$out" >&2; die "wrk failed on $name"; }
    unset "PID[wrk]"
    cpu1=$(tree_cpu_sample "${PID[$name]}")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "${parts:--}" "$(wrk_latency_ms "$out" 50%)" \
        "$(wrk_latency_ms "$out" 99%)" "$(us_per "$(wrk_requests "$out")" "$(cpu_delta "$name" "$cpu0" "$cpu1")")" |
        tee -a "$TMP/runs.tsv"
}

# The median p99 of target $1's runs whose split matches awk condition $2 (on the split's
# largest part $3 and smallest $4 ... as fields of the split).
summary() {
    awk -F'\t' "$AWK_MEDIAN"'
        function med(list,   n, a) {
            n = split(list, a, " ")
            return n ? sprintf("%s (%d runs)", median(list), n) : "-"
        }
        {
            all[$1] = all[$1] " " $5; names[$1] = 1
            if ($3 == "-") next
            n = split($3, p, "/")
            if (n > 1 && p[1] - p[n] <= 2) even[$1] = even[$1] " " $5; else uneven[$1] = uneven[$1] " " $5
        }
        END {
            printf "| target | p99 ms, all runs | even split (within 2) | uneven split |\n|---|---:|---:|---:|\n"
            for (t in names) printf "| %s | %s | %s | %s |\n", t, med(all[t]), med(even[t]), med(uneven[t])
        }' "$TMP/runs.tsv"
}

main() {
    local i=0 bin
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    install_deps haproxy ss:iproute2
    CLK_TCK=$(getconf CLK_TCK)
    make_site shoal-balance
    start_nginx upstream "$UPSTREAM_PORT"
    wait_ready upstream
    TARGETS=()
    for bin in "$@"; do
        i=$((i + 1))
        SHOAL_BIN=$bin start_shoal "shoal$i" "$((BASE_PORT + i))" proxy
    done
    start_haproxy haproxy "$HAPROXY_PORT"
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    printf 'target\tround\tsplit\tp50 ms\tp99 ms\tCPU µs/req\n'
    : > "$TMP/runs.tsv"
    for_rounds balance_run
    echo
    summary
    printf '\n%s, %s rounds; %s\n' "$(cmd_text wrk_argv PORT)" "$ROUNDS" "$(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
    for ((i = 1; i <= $#; i++)); do printf 'shoal%d: %s\n' "$i" "${!i}"; done
}

main "$@"
