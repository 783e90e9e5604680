#!/usr/bin/env bash
# Two shoal binaries side by side, for a change that must not cost CPU (a refactor, a new
# layer): S1 (static 1 KiB over keep-alive) and S4 (reverse proxy, 1 KiB, keep-alive both
# sides, one nginx upstream) of scripts/bench.sh, both binaries in every round, alternating.
# Prints per binary and scenario the medians of the server's CPU µs per request (its process
# tree's utime + stime over the run, divided by the requests wrk completed), req/s and p99,
# and NEW ÷ OLD for each.
#
# Usage: scripts/bench/compare.sh OLD_BIN NEW_BIN
#   e.g. git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release)
#        scripts/bench/compare.sh /tmp/old/target/release/shoal target/release/shoal
# Environment: DURATION=8 (s per wrk run), ROUNDS=5, WORKERS=2, WRK_THREADS=1, WRK_CONNS=64,
#   SCENARIOS="s1 s4", COMPARE_PORT=18090 (uses this port and the next three),
#   NEW_EXTRA_CONF=FILE: config text appended to the new binary's config only (e.g. 200 names
#   and 1,000 routes from scripts/bench/many_sites.py, the same binary on both sides).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OLD_BIN=${1:?usage: compare.sh OLD_BIN NEW_BIN}
NEW_BIN=${2:?usage: compare.sh OLD_BIN NEW_BIN}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-5}
WORKERS=${WORKERS:-2}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-64}
SCENARIOS=${SCENARIOS:-s1 s4}
BASE_PORT=${COMPARE_PORT:-18090}
UPSTREAM_PORT=$((BASE_PORT + 3))
CONN_CAP=10240
SHOAL_BIN=""

LOG_TAG=compare
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
# shellcheck source=scripts/bench/servers.sh
source "$REPO/scripts/bench/servers.sh"
# shellcheck source=scripts/bench/measure.sh
source "$REPO/scripts/bench/measure.sh"

# start_both MODE: "old" and "new" shoal as targets, serving (static) or proxying (proxy).
start_both() {
    local mode=$1
    TARGETS=()
    SHOAL_BIN=$OLD_BIN start_shoal old "$BASE_PORT" "$mode"
    SHOAL_BIN=$NEW_BIN SHOAL_EXTRA_CONF=${NEW_EXTRA_CONF:-} start_shoal new "$((BASE_PORT + 1))" "$mode"
    wait_ready old
    wait_ready new
    check_body old
    check_body new
}

compare_run() { run_wrk "$SCENARIO" "$1" "$2"; }

report() {
    local scen metric old new
    printf '| scenario | figure (median of %s rounds) | old | new | new ÷ old |\n|---|---|---:|---:|---:|\n' "$ROUNDS"
    for scen in $SCENARIOS; do
        for metric in cpu_us rps p99_ms; do
            old=$(result_median "$scen" old "$metric")
            new=$(result_median "$scen" new "$metric")
            printf '| %s | %s | %s | %s | %s |\n' "$scen" "$metric" "$old" "$new" \
                "$(awk -v o="$old" -v n="$new" 'BEGIN { if (o > 0) printf "%.3f", n / o; else print "-" }')"
        done
    done
    printf '\n%s; %s\n' "$(cmd_text wrk_argv PORT)" "$(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'old: %s (%s)\nnew: %s (%s)\n' "$OLD_BIN" "$(sha256sum "$OLD_BIN" | cut -c1-12)" "$NEW_BIN" "$(sha256sum "$NEW_BIN" | cut -c1-12)"
}

main() {
    [[ -x $OLD_BIN && -x $NEW_BIN ]] || die "both binaries must exist and be executable"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    install_deps
    CLK_TCK=$(getconf CLK_TCK)
    make_site shoal-compare
    RESULTS=$TMP/results.tsv FACTS=$TMP/facts.tsv
    : > "$RESULTS"
    for SCENARIO in $SCENARIOS; do
        case $SCENARIO in
            s1) start_both static ;;
            s4)
                start_nginx upstream "$UPSTREAM_PORT"
                wait_ready upstream
                start_both proxy
                ;;
            *) die "unknown scenario $SCENARIO (s1 or s4)" ;;
        esac
        for_rounds compare_run
        stop_servers old new upstream
    done
    report
}

main "$@"
