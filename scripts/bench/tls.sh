#!/usr/bin/env bash
# HTTPS side by side, shoal against nginx (OpenSSL), one certificate for both: S1-tls (1 KiB
# static file over keep-alive HTTPS) and S2-tls (a new TLS connection per request: wrk with
# Connection: close; "resumed" as wrk does by itself, which resumes each connection slot's
# session, and "full" with no_resume.so preloaded into wrk, a full handshake every time), both
# servers in every round, alternating. Prints per scenario and server the medians of the
# server's CPU µs per request (its process tree's utime + stime over the run, divided by the
# requests wrk completed), req/s and p99. The servers, certificate and measurement are those of
# S1-tls and S2-tls in scripts/bench.sh (scripts/bench/tls_servers.sh, measure.sh), without
# HAProxy and the report: a quick look by hand, with an RSA option.
#
# Last, a renewal drill: S1-tls's load on shoal while its certificate is replaced (new files
# moved over the old ones, as certbot does) and the master reloaded RENEWALS times; it must
# fail no request.
#
# Usage: scripts/bench/tls.sh [SHOAL_BIN]   (default: target/release/shoal, built if missing)
# Environment: DURATION=8, ROUNDS=3, WORKERS=2, WRK_CONNS=64, KEY=ec (or rsa: RSA 2048),
#   RENEWALS=3, TLS_PORT=18190 (uses it and the next), KEEP_TMP=1 (keep configs and raw output).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHOAL_BIN=${1:-$REPO/target/release/shoal}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
WRK_THREADS=1
WRK_CONNS=${WRK_CONNS:-64}
KEY=${KEY:-ec}
RENEWALS=${RENEWALS:-3}
BASE_PORT=${TLS_PORT:-18190}
CONN_CAP=10240   # connections per worker (servers.sh's static configs)
TMP=""
LOG_TAG="tls-bench"
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
# shellcheck source=scripts/bench/servers.sh
source "$REPO/scripts/bench/servers.sh"
# shellcheck source=scripts/bench/measure.sh
source "$REPO/scripts/bench/measure.sh"
# shellcheck source=scripts/bench/tls_servers.sh
source "$REPO/scripts/bench/tls_servers.sh"

SCENARIOS=(s1-tls s2-tls-resumed s2-tls-full)

# run SCENARIO NAME ROUND: one wrk run of SCENARIO against NAME (measure.sh's run_wrk).
run() {
    case $1 in
        s1-tls) WRK_SCHEME=https run_wrk "$@" ;;
        s2-tls-resumed) WRK_SCHEME=https WRK_CLOSE=1 run_wrk "$@" ;;
        s2-tls-full) WRK_SCHEME=https WRK_CLOSE=1 WRK_PRELOAD=$NO_RESUME run_wrk "$@" ;;
    esac
}

table() {
    local scen name
    echo "| scenario | server | CPU µs/req (median of $ROUNDS) | req/s | p99 ms |"
    echo "|---|---|---:|---:|---:|"
    for scen in "${SCENARIOS[@]}"; do
        for name in shoal nginx; do
            printf '| %s | %s | %s | %s | %s |\n' "$scen" "$name" "$(result_median "$scen" "$name" cpu_us)" \
                "$(result_median "$scen" "$name" rps)" "$(result_median "$scen" "$name" p99_ms)"
        done
    done
    echo
    echo "KEY=$KEY WORKERS=$WORKERS $(WRK_SCHEME=https cmd_text wrk_argv PORT) (s2-tls: with -H \"Connection: close\";" \
        "s2-tls-full: and LD_PRELOAD=no_resume.so); $(date -u '+%Y-%m-%d %H:%M UTC'); $(nginx -v 2>&1)"
}

# The renewal drill.
drill() {
    local out=$TMP/renewal.wrk i reloads errors
    wrk -t1 -c"$WRK_CONNS" -d"$((RENEWALS * 3 + 4))s" "https://127.0.0.1:${PORT[shoal]}/1k.bin" > "$out" 2>&1 &
    PID[wrk]=$!
    for ((i = 1; i <= RENEWALS; i++)); do
        sleep 3
        new_certificate "$KEY" "$TMP/renewed.pem" "$TMP/renewed.key"
        mv "$TMP/renewed.pem" "$TLS_DIR/cert.pem"
        mv "$TMP/renewed.key" "$TLS_DIR/key.pem"
        kill -HUP "${PID[shoal]}"
    done
    wait "${PID[wrk]}"
    unset 'PID[wrk]'
    reloads=$(grep -c "reload complete" "$TMP/shoal.out" || true)
    errors=$(($(wrk_sockerr "$out") + $(wrk_non2xx "$out")))
    echo "renewal drill: $(wrk_requests "$out") requests over HTTPS, $RENEWALS certificate renewals ($reloads reloads completed), $errors failed"
    [[ $errors == 0 && $reloads == "$RENEWALS" ]] || { cat "$out" >&2; die "the renewal drill failed requests or reloads"; }
}

main() {
    local round scen name
    [[ $KEY == ec || $KEY == rsa ]] || die "KEY is ec or rsa, not '$KEY'"
    trap cleanup EXIT
    trap 'exit 130' INT TERM   # make Ctrl-C go through the EXIT trap
    install_deps openssl
    [[ -x $SHOAL_BIN ]] || (cd "$REPO" && cargo build --release >&2)
    CLK_TCK=$(getconf CLK_TCK)
    make_site shoal-tls-bench
    RESULTS=$TMP/results.tsv FACTS=$TMP/facts.tsv
    : > "$RESULTS"
    make_tls_files "$TMP/tls" "$KEY"
    build_no_resume "$TMP"
    [[ -n $NO_RESUME ]] || SCENARIOS=(s1-tls s2-tls-resumed)
    TARGETS=()
    start_shoal_tls shoal "$BASE_PORT"
    start_nginx_tls nginx "$((BASE_PORT + 1))"
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    for ((round = 1; round <= ROUNDS; round++)); do
        for scen in "${SCENARIOS[@]}"; do
            for name in shoal nginx; do run "$scen" "$name" "$round"; done
        done
    done
    table
    drill
}

main "$@"
