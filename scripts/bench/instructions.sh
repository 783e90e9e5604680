#!/usr/bin/env bash
# Instructions per proxied request of one or more shoal binaries, counted by callgrind: a
# figure that does not drift with the machine (timings on these shared VMs move by 10 % from
# one minute to the next). One worker under `valgrind --tool=callgrind --trace-children=yes`
# proxies 1 KiB over keep-alive to an nginx upstream while `wrk -t1 -c8 -dDURATION` loads it;
# the worker's instruction count divided by the requests wrk completed is printed per binary.
# Each binary runs ROUNDS times, alternating. (Static files cannot be measured this way:
# valgrind does not know openat2, so every file request would answer 500.)
#
# Usage: scripts/bench/instructions.sh BIN...     e.g. an old build and target/release/shoal
# Environment: DURATION=8 ROUNDS=2 INSN_PORT=18291 (and the next port for the upstream)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
(($# > 0)) || { echo "usage: instructions.sh BIN..." >&2; exit 2; }
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-2}
PORT=${INSN_PORT:-18291}
UPSTREAM_PORT=$((PORT + 1))

LOG_TAG=instructions
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

TMP=""
NGINX_PID=""
SHOAL_PID=""
cleanup() {
    [[ -z $SHOAL_PID ]] || stop_pid shoal "$SHOAL_PID"
    [[ -z $NGINX_PID ]] || stop_pid nginx "$NGINX_PID"
    [[ -z $TMP ]] || rm -rf -- "$TMP"
}

# count BIN: prints the worker's instructions per request.
count() {
    local bin=$1 requests insns file
    rm -f "$TMP"/callgrind.out.*
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$TMP/callgrind.out.%p" \
        "$bin" "${SHOAL_AS[@]}" -c "$TMP/shoal.toml" > "$TMP/shoal.log" 2>&1 &
    SHOAL_PID=$!
    wait_for 30 curl -sf -o /dev/null "http://127.0.0.1:$PORT/1k.bin"
    wrk -t1 -c8 -d"${DURATION}s" "http://127.0.0.1:$PORT/1k.bin" > "$TMP/wrk.txt"
    requests=$(wrk_requests "$TMP/wrk.txt")
    grep -q "Non-2xx" "$TMP/wrk.txt" && die "$bin answered errors: $(cat "$TMP/wrk.txt")"
    stop_pid shoal "$SHOAL_PID"
    SHOAL_PID=""
    # The worker's profile is the one with the most instructions (the master idles).
    insns=0
    for file in "$TMP"/callgrind.out.*; do
        local n
        n=$(awk '/^summary:/ { print $2; exit }' "$file")
        ((n > insns)) && insns=$n
    done
    awk -v i="$insns" -v r="$requests" 'BEGIN { printf "%.0f\n", i / r }'
}

main() {
    local round bin
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    install_deps valgrind
    make_site shoal-insns
    write_nginx_conf "$TMP/upstream" "$UPSTREAM_PORT" "" 1
    nginx_args "$TMP/upstream"
    "${NGINX_ARGS[@]}" > "$TMP/nginx.out" 2>&1 &
    NGINX_PID=$!
    wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/1k.bin"
    cat > "$TMP/shoal.toml" <<EOF
workers = 1
access_log = "off"
[supervisor]
heartbeat_timeout = "60s"
[limits]
keepalive_timeout = "300s"
max_requests_per_connection = 100000
[[server]]
listen = ["127.0.0.1:$PORT"]
  [[server.route]]
  prefix = "/"
  upstream = "app"
[upstream.app]
servers = ["127.0.0.1:$UPSTREAM_PORT"]
keepalive = 64
EOF
    echo "| binary | round | instructions per proxied request |"
    echo "|---|---:|---:|"
    for ((round = 1; round <= ROUNDS; round++)); do
        for bin in "$@"; do
            echo "| $bin | $round | $(count "$bin") |"
        done
    done
}

main "$@"
