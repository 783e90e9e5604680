#!/usr/bin/env bash
# Benchmark shoal against nginx serving the same 1 KiB static file.
#
# Usage: scripts/bench.sh            (from anywhere; writes the report to stdout)
#        scripts/bench.sh > bench.md (progress goes to stderr)
#
# Environment (all optional):
#   DURATION=10        seconds per wrk run
#   ROUNDS=3           rounds; each round runs every target once, alternating
#   WRK_THREADS=1      wrk -t
#   WRK_CONNS=64       wrk -c
#   SHOAL_PORT=18080   NGINX_PORT=18081   NGINX_RP_PORT=18082
#   SKIP_SHOAL=1       do not build or run shoal (tests the harness on nginx alone)
#   SKIP_BUILD=1       use the existing shoal binary without cargo build
#   SHOAL_BIN=path     shoal binary to run (default: target/release/shoal)
#   SKIP_REUSEPORT=1   leave out the "nginx-reuseport" variant
#
# Needs root (or sudo) only if nginx/wrk/curl must be installed with apt-get.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-64}
SHOAL_PORT=${SHOAL_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
NGINX_RP_PORT=${NGINX_RP_PORT:-18082}
SKIP_SHOAL=${SKIP_SHOAL:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_REUSEPORT=${SKIP_REUSEPORT:-0}
SHOAL_BIN=${SHOAL_BIN:-$REPO/target/release/shoal}

LOG_TAG=bench
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

TMP=""
declare -A PID=()    # target name -> server PID (only processes we started)
declare -A PORT=()   # target name -> port
declare -A RPS=() P99=() NON2XX=() SOCKERR=()  # target -> space-separated per-round values
TARGETS=()

# --- process control --------------------------------------------------------

cleanup() {
    local name
    trap - EXIT INT TERM
    for name in "${!PID[@]}"; do
        stop_pid "$name" "${PID[$name]}"
    done
    if [[ -n $TMP && -d $TMP ]]; then rm -rf -- "$TMP"; fi
}

# --- servers ----------------------------------------------------------------

start_shoal() {
    local name=shoal port=$SHOAL_PORT conf=$TMP/shoal.toml
    check_port_free "$port"
    cat > "$conf" <<EOF
workers = 2
access_log = "off"
[[server]]
listen = ["127.0.0.1:$port"]
  [[server.route]]
  prefix = "/"
  root = "$TMP/site"
EOF
    "$SHOAL_BIN" -c "$conf" > "$TMP/shoal.log" 2>&1 &
    PID[$name]=$!
    PORT[$name]=$port
    TARGETS+=("$name")
}

# One standalone nginx instance with its own prefix dir (see write_nginx_conf in lib.sh).
# $3 is extra "listen" parameters (e.g. "reuseport").
start_nginx() {
    local name=$1 port=$2 listen_opts=${3:-} dir=$TMP/$1
    check_port_free "$port"
    write_nginx_conf "$dir" "$port" "$listen_opts"
    nginx_args "$dir"
    "${NGINX_ARGS[@]}" > "$dir/stdout.log" 2>&1 &
    PID[$name]=$!
    PORT[$name]=$port
    TARGETS+=("$name")
}

# Poll until GET /1k.bin answers 200; give up after 10 s or if the server died.
wait_ready() {
    local name=$1 url="http://127.0.0.1:${PORT[$1]}/1k.bin" code deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        if ! kill -0 "${PID[$name]}" 2>/dev/null; then
            show_log "$TMP/shoal.log"; show_log "$TMP/$name/error.log"
            die "$name exited during startup"
        fi
        code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)
        [[ $code == 200 ]] && { log "$name ready on $url"; return 0; }
        sleep 0.1
    done
    show_log "$TMP/shoal.log"; show_log "$TMP/$name/error.log"
    die "$name not ready within 10 s (last HTTP code: ${code:-none}) at $url"
}

# --- measuring --------------------------------------------------------------

# The exact command run_wrk executes, for logs and the report.
wrk_cmd() { echo "wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s --latency http://127.0.0.1:$1/1k.bin"; }

# Run wrk once against a target and append req/s, p99 (ms) and error counts.
run_wrk() {
    local name=$1 round=$2 out=$TMP/wrk-$1-$2.txt rps p99 non2xx sockerr
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name died before round $round"
    log "round $round: $(wrk_cmd "${PORT[$name]}")"
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$name]}/1k.bin" \
        > "$out" 2>&1 || { cat "$out" >&2; die "wrk failed on $name"; }
    rps=$(awk '$1 == "Requests/sec:" { print $2 }' "$out")
    # "99%  2.34ms" in the Latency Distribution block; normalise units to ms.
    p99=$(awk '$1 == "99%" {
        v = $2; u = v; sub(/^[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (m < 0) { print "?"; exit } ; printf "%.3f\n", v * m }' "$out")
    non2xx=$(wrk_non2xx "$out")
    sockerr=$(wrk_sockerr "$out")
    [[ -n $rps && -n $p99 && $p99 != "?" ]] || { cat "$out" >&2; die "could not parse wrk output for $name"; }
    RPS[$name]+="$rps "
    P99[$name]+="$p99 "
    NON2XX[$name]+="${non2xx:-0} "
    SOCKERR[$name]+="${sockerr:-0} "
    log "  $name: $rps req/s, p99 ${p99} ms, non-2xx ${non2xx:-0}, socket errors ${sockerr:-0}"
}

# --- statistics & report ----------------------------------------------------

# Median of the arguments: sort numerically, take the middle element.
# For an even count this is the LOWER middle (no averaging).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f–%.0f", lo, hi }'; }
sum()    { printf '%s\n' "$@" | awk '{ s += $1 } END { print s + 0 }'; }
# Median req/s of a target, or nothing if it was not run.
median_rps() {
    # shellcheck disable=SC2086  # space-separated list on purpose
    if [[ -n ${RPS[$1]:-} ]]; then median ${RPS[$1]}; fi
}
ratio()  { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f\n", a / b }'; }

print_report() {
    local name med n2 se errs nginx_v wrk_v cpu shoal_v="shoal (skipped)"
    nginx_v=$(nginx -v 2>&1 || true)
    wrk_v=$({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print $1, $2 }')
    [[ $SKIP_SHOAL == 1 ]] ||
        shoal_v="shoal $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '(no commit)') (workers = 2)"
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo "## shoal vs nginx: static 1 KiB file"
    echo
    echo "- machine: $(nproc) CPUs${cpu:+ ($cpu)}, kernel $(uname -r)"
    echo "- servers: $shoal_v, ${nginx_v#nginx version: } (worker_processes 2), ${wrk_v:-wrk}"
    echo "- command: \`$(wrk_cmd PORT)\`, $ROUNDS round(s), targets alternated within each round"
    echo "- medians: middle value of the sorted rounds (lower middle when the count is even)"
    echo
    echo "| target | median req/s | min–max req/s | median p99 (ms) | errors |"
    echo "|---|---:|---:|---:|---|"
    for name in "${TARGETS[@]}"; do
        # shellcheck disable=SC2086  # the value lists are space-separated on purpose
        {
            med=$(median ${RPS[$name]})
            n2=$(sum ${NON2XX[$name]}); se=$(sum ${SOCKERR[$name]})
            errs=0; ((n2 + se == 0)) || errs="non-2xx $n2, socket $se"
            printf '| %s | %.0f | %s | %.2f | %s |\n' "$name" "$med" "$(minmax ${RPS[$name]})" "$(median ${P99[$name]})" "$errs"
        }
    done
    echo
    echo "- shoal/nginx (median req/s): $(ratio "$(median_rps shoal)" "$(median_rps nginx)")"
    echo "- shoal/nginx-reuseport (median req/s): $(ratio "$(median_rps shoal)" "$(median_rps nginx-reuseport)")"
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM   # make Ctrl-C go through the EXIT trap
    install_deps
    [[ $SKIP_SHOAL == 1 || $SKIP_BUILD == 1 ]] || build_shoal
    [[ $SKIP_SHOAL == 1 || -x $SHOAL_BIN ]] || die "$SHOAL_BIN not found (drop SKIP_BUILD=1?)"
    make_site shoal-bench

    [[ $SKIP_SHOAL == 1 ]] || start_shoal
    start_nginx nginx "$NGINX_PORT"
    [[ $SKIP_REUSEPORT == 1 ]] || start_nginx nginx-reuseport "$NGINX_RP_PORT" reuseport
    local name round
    for name in "${TARGETS[@]}"; do wait_ready "$name"; done

    # Alternate targets within each round so drift (thermal, noisy neighbours)
    # hits every server alike instead of whichever ran last.
    for ((round = 1; round <= ROUNDS; round++)); do
        for name in "${TARGETS[@]}"; do run_wrk "$name" "$round"; done
    done
    print_report
}

main "$@"
