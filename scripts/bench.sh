#!/usr/bin/env bash
# Benchmark shoal against nginx (with and without reuseport) and HAProxy, side by side on
# loopback with the same worker count, in the scenarios of issues 5, 15, 16, 17 and 19:
#   s1  static 1 KiB over keep-alive: wrk --latency (req/s, p50, p99)
#   s2  a connection per request: wrk -H "Connection: close" (req/s, CPU µs per connection),
#       then ab -n 30000 -c 50 without and with -k (req/s, failed requests) as secondary rows
#   s3  a 64 MiB file over 4 keep-alive connections (GB/s; scripts/bench/bulk_get.py)
#   s4  reverse proxy, 1 KiB, keep-alive on both sides: shoal, nginx, HAProxy before one
#       shared nginx upstream (wrk --latency)
#   s5  s1's load during 18 HUP reloads (errors)
#   s6  memory per idle keep-alive connection, 10,000 connections (scripts/bench/idle_conns.py)
#   s7  start-up: exec to the first 200 (scripts/bench/startup_probe.py; shoal and nginx)
#   s8  legacy shield: s4's proxies before an app with 4 sync workers while 200 slow clients
#       pull big answers; wrk on small ones (req/s, p99; scripts/bench/shield.sh)
#   s9  s4 at 64 and at 4,000 clients, shoal with max_conns = 64 (CPU µs/req, errors)
#   s10 cached proxy, 1 KiB, keep-alive: s4's proxies with their response caches on, every
#       answer from the cache (CPU µs per hit; scripts/bench/cache.sh)
#   s11 compressed, 1 KiB of HTML, keep-alive, wrk -H "Accept-Encoding: gzip": s1's shoal with
#       compress = true against nginx with gzip on at level 1 and at 6, then s4's proxies
#       compressing (shoal compress = true, nginx gzip at 1 and 6, HAProxy's compression
#       filter as a reference), each checked to answer gzip (CPU µs/req, bytes per response;
#       scripts/bench/compress.sh)
#   s12 s1 against shoal and shoal with a limit_requests guard that never refuses, in the
#       same rounds (CPU µs/req, no 429; scripts/bench/guard.sh)
#   s1-tls  s1 over HTTPS: shoal, nginx (listen ... ssl reuseport) and "haproxy-return"
#           (HAProxy answering the same 1 KiB from memory: a reference, not a file server),
#           one certificate for all (scripts/bench/https.sh, scripts/bench/tls_servers.sh)
#   s2-tls  s1-tls with wrk -H "Connection: close": a TLS handshake per request (req/s, p99,
#           CPU µs per request = per handshake), resumed as wrk does by itself and full (wrk
#           with an LD_PRELOAD shim that drops its sessions; needs cc)
#   s6-tls  s6 over HTTPS, 2,000 connections (idle_conns.py --tls)
# s1, s2 and s4 also run the physical floors of benches/floor/ ("floor": a fixed 1 KiB answer
# from memory; "floor-relay": an L4 byte relay, one upstream connection per client; built with
# cc, scripts/bench/floor.sh) as reference targets in the same rounds.
# Every scenario runs ROUNDS rounds, each target once per round, alternating targets; the
# report gives medians and min–max, the ratios shoal/floor, shoal/nginx (the faster nginx
# configuration where both run) and shoal/HAProxy against the issue's targets, pass or fail.
# Around every throughput run the CPU time of the server's whole process tree is sampled
# (utime + stime from /proc, reaped children included): the report leads with CPU µs/req.
# docs/benchmarks.md describes each scenario and how to read the figures.
#
# Usage: scripts/bench.sh                 (report to stdout, progress to stderr)
#        WRITE_DOCS=1 scripts/bench.sh    (also writes the report into docs/benchmarks.md, the
#                                         summary into README.md, the chart to docs/bench-ratios.svg)
#        SCENARIOS="s1 s4" DURATION=5 ROUNDS=1 scripts/bench.sh
#
# Environment (all optional):
#   SCENARIOS="s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 s12 s1-tls s2-tls s6-tls"  which scenarios (run in
#                      this order; "static" = s1, "proxy" = s4, "tls" = s1-tls s2-tls s6-tls)
#   DURATION=10        seconds per wrk / bulk_get run (s1, s2, s3, s4, s8-s12, s1-tls, s2-tls)
#   ROUNDS=3           rounds of every scenario but s8
#   S8_ROUNDS=5        rounds of s8, whose p99 varies most from round to round
#   WORKERS=2          shoal workers, nginx worker_processes, HAProxy nbthread
#   WRK_THREADS=1 WRK_CONNS=64        wrk -t / -c (s1, s2, s4, s5, s8-s12, s1-tls, s2-tls)
#   AB_REQUESTS=30000 AB_CONNS=50     ab -n / -c (s2)
#   BIG_FILE_MIB=64    size of s3's file
#   HUPS=18 S5_WARMUP=2 S5_INTERVAL=1 s5: reloads per run, seconds of load before the first,
#                      seconds between reloads (a reload that takes longer delays the next)
#   IDLE_CONNS=10000   s6's idle connections
#   IDLE_CONNS_TLS=2000  s6-tls's idle connections (fewer: Python's TLS handshakes are slow)
#   TLS_KEY=ec         the key of the run's certificate: ec (ECDSA P-256) or rsa (RSA 2048)
#   STARTS=10          s7's starts per target
#   S8_READERS=200 S8_BIG_MIB=8 S8_READ_KIBS=64   s8's slow clients, their answers' size and
#                      the pace each reads at
#   S9_CONNS=4000      s9's flood of clients
#   SHOAL_PORT=18080 NGINX_PORT=18081 NGINX_RP_PORT=18082                (s1-s3, s5-s7, s11, s12)
#   SHOAL_PROXY_PORT=18083 NGINX_PROXY_PORT=18084 HAPROXY_PORT=18085 UPSTREAM_PORT=18086  (s4, s8-s11)
#   NGINX_PROXY2_PORT=18090 (s11's second nginx proxy)  SHOAL_GUARD_PORT=18091 (s12's guarded shoal)
#   FLOOR_PORT=18092 (s1, s2's floor)  RELAY_FLOOR_PORT=18093 (s4's floor-relay)
#   SHOAL_TLS_PORT=18087 NGINX_TLS_PORT=18088 HAPROXY_TLS_PORT=18089     (s1-tls, s2-tls, s6-tls)
#   SKIP_SHOAL=1       leave shoal out (tests the harness on nginx/HAProxy alone)
#   SKIP_BUILD=1       use the existing shoal binary without cargo build
#   SHOAL_BIN=path     shoal binary to run (default: target/release/shoal)
#   SKIP_REUSEPORT=1   leave out the "nginx-reuseport" target
#   WRITE_DOCS=1       write docs/benchmarks.md, README.md and docs/bench-ratios.svg (above)
#   RESULTS_DIR=dir    also keep results.tsv, facts.tsv and report.md there; regenerate the
#                      report from them with scripts/bench/report.py (see its header)
#   KEEP_TMP=1         keep the temp dir (configs, logs, raw tool output) and print it
#
# Needs root (or sudo) only to apt-get what is missing (nginx, wrk, curl, apache2-utils,
# haproxy, openssl, gcc) and, for s6, to raise the open-files limit above its hard limit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIOS=${SCENARIOS:-s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 s12 s1-tls s2-tls s6-tls}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-64}
AB_REQUESTS=${AB_REQUESTS:-30000}
AB_CONNS=${AB_CONNS:-50}
BIG_FILE_MIB=${BIG_FILE_MIB:-64}
HUPS=${HUPS:-18}
S5_WARMUP=${S5_WARMUP:-2}
S5_INTERVAL=${S5_INTERVAL:-1}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_CONNS_TLS=${IDLE_CONNS_TLS:-2000}
TLS_KEY=${TLS_KEY:-ec}
STARTS=${STARTS:-10}
S8_READERS=${S8_READERS:-200}
S8_BIG_MIB=${S8_BIG_MIB:-8}
S8_READ_KIBS=${S8_READ_KIBS:-64}
S8_ROUNDS=${S8_ROUNDS:-5}
S9_CONNS=${S9_CONNS:-4000}
SHOAL_PORT=${SHOAL_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
NGINX_RP_PORT=${NGINX_RP_PORT:-18082}
SHOAL_PROXY_PORT=${SHOAL_PROXY_PORT:-18083}
NGINX_PROXY_PORT=${NGINX_PROXY_PORT:-18084}
HAPROXY_PORT=${HAPROXY_PORT:-18085}
UPSTREAM_PORT=${UPSTREAM_PORT:-18086}
SHOAL_TLS_PORT=${SHOAL_TLS_PORT:-18087}
NGINX_TLS_PORT=${NGINX_TLS_PORT:-18088}
HAPROXY_TLS_PORT=${HAPROXY_TLS_PORT:-18089}
NGINX_PROXY2_PORT=${NGINX_PROXY2_PORT:-18090}
SHOAL_GUARD_PORT=${SHOAL_GUARD_PORT:-18091}
FLOOR_PORT=${FLOOR_PORT:-18092}
RELAY_FLOOR_PORT=${RELAY_FLOOR_PORT:-18093}
SKIP_SHOAL=${SKIP_SHOAL:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_REUSEPORT=${SKIP_REUSEPORT:-0}
SHOAL_BIN=${SHOAL_BIN:-$REPO/target/release/shoal}
WRITE_DOCS=${WRITE_DOCS:-0}
RESULTS_DIR=${RESULTS_DIR:-}

# Connections each static server must take per worker: S6's (or S6-tls's) idle ones could all
# land on one.
IDLE_MAX=$((IDLE_CONNS > IDLE_CONNS_TLS ? IDLE_CONNS : IDLE_CONNS_TLS))
CONN_CAP=$((IDLE_MAX + 1024 > 10240 ? IDLE_MAX + 1024 : 10240))
BIG_BYTES=$((BIG_FILE_MIB * 1024 * 1024))

LOG_TAG=bench
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
# shellcheck source=scripts/bench/servers.sh
source "$REPO/scripts/bench/servers.sh"
# shellcheck source=scripts/bench/measure.sh
source "$REPO/scripts/bench/measure.sh"
# shellcheck source=scripts/bench/floor.sh
source "$REPO/scripts/bench/floor.sh"
# shellcheck source=scripts/bench/static.sh
source "$REPO/scripts/bench/static.sh"
# shellcheck source=scripts/bench/proxy.sh
source "$REPO/scripts/bench/proxy.sh"
# shellcheck source=scripts/bench/reload.sh
source "$REPO/scripts/bench/reload.sh"
# shellcheck source=scripts/bench/idle.sh
source "$REPO/scripts/bench/idle.sh"
# shellcheck source=scripts/bench/startup.sh
source "$REPO/scripts/bench/startup.sh"
# shellcheck source=scripts/bench/shield.sh
source "$REPO/scripts/bench/shield.sh"
# shellcheck source=scripts/bench/cache.sh
source "$REPO/scripts/bench/cache.sh"
# shellcheck source=scripts/bench/compress.sh
source "$REPO/scripts/bench/compress.sh"
# shellcheck source=scripts/bench/guard.sh
source "$REPO/scripts/bench/guard.sh"
# shellcheck source=scripts/bench/tls_servers.sh
source "$REPO/scripts/bench/tls_servers.sh"
# shellcheck source=scripts/bench/https.sh
source "$REPO/scripts/bench/https.sh"

TMP=""
ALL_SCENARIOS="s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 s12 s1-tls s2-tls s6-tls"

# True if scenario $1 is selected in SCENARIOS.
selected() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# True if any HTTPS scenario is selected.
tls_selected() { selected s1-tls || selected s2-tls || selected s6-tls; }

check_settings() {
    local word var words=()
    for word in $SCENARIOS; do
        case $word in
            static) words+=(s1) ;;
            proxy) words+=(s4) ;;
            tls) words+=(s1-tls s2-tls s6-tls) ;;
            *)
                [[ " $ALL_SCENARIOS " == *" $word "* ]] || die "unknown scenario '$word' in SCENARIOS ($ALL_SCENARIOS)"
                words+=("$word")
                ;;
        esac
    done
    SCENARIOS=${words[*]}
    [[ -n ${SCENARIOS// /} ]] || die "SCENARIOS selects nothing ($ALL_SCENARIOS)"
    for var in DURATION ROUNDS WORKERS WRK_THREADS WRK_CONNS AB_REQUESTS AB_CONNS BIG_FILE_MIB HUPS \
        S5_WARMUP S5_INTERVAL IDLE_CONNS IDLE_CONNS_TLS STARTS S8_READERS S8_BIG_MIB S8_READ_KIBS S8_ROUNDS S9_CONNS; do
        [[ ${!var} =~ ^[1-9][0-9]{0,6}$ ]] || die "$var must be a positive integer, not '${!var}'"
    done
    [[ $TLS_KEY == ec || $TLS_KEY == rsa ]] || die "TLS_KEY must be ec or rsa, not '$TLS_KEY'"
}

# Raise the open-files limit of this shell (and so of the servers and clients it starts) to
# what s6 and s6-tls need: IDLE_CONNS (IDLE_CONNS_TLS) client sockets plus as many on the
# server side.
raise_nofile() {
    local need=$((CONN_CAP + 2048)) soft
    soft=$(ulimit -Sn)
    if [[ $soft == unlimited ]] || ((soft >= need)); then return 0; fi
    ulimit -n "$need" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
    soft=$(ulimit -Sn)
    if selected s6 && [[ $soft != unlimited ]] && ((soft < IDLE_CONNS + 1024)); then
        die "s6 needs an open-files limit of at least $((IDLE_CONNS + 1024)) (ulimit -n is $soft; run as root or lower IDLE_CONNS)"
    fi
    if selected s6-tls && [[ $soft != unlimited ]] && ((soft < IDLE_CONNS_TLS + 1024)); then
        die "s6-tls needs an open-files limit of at least $((IDLE_CONNS_TLS + 1024)) (ulimit -n is $soft; run as root or lower IDLE_CONNS_TLS)"
    fi
}

make_big_file() {
    head -c "$BIG_BYTES" /dev/urandom > "$TMP/site/64m.bin"
    chmod 644 "$TMP/site/64m.bin"
}

# Rough seconds of the selected scenarios, without the build (from runs on the 2-core
# development machine: ab without keep-alive about 10,000 req/s, S6 about 2,000 connections/s,
# S6-tls about 400).
estimate_seconds() {
    local t=0 n=3
    [[ $SKIP_REUSEPORT == 1 ]] && n=2
    selected s1 && t=$((t + (n + 1) * ROUNDS * (DURATION + 1) + 5))
    selected s2 && t=$((t + (n + 1) * ROUNDS * (DURATION + 1 + AB_REQUESTS / 10000 + 2) + 5))
    selected s3 && t=$((t + n * ROUNDS * (DURATION + 1) + 5))
    selected s4 && t=$((t + 4 * ROUNDS * (DURATION + 1) + 5))
    selected s5 && t=$((t + n * ROUNDS * (S5_WARMUP + HUPS * S5_INTERVAL + 2) + 5))
    selected s6 && t=$((t + n * ROUNDS * (IDLE_CONNS / 2000 + 3)))
    selected s7 && t=$((t + 2 * STARTS / 2 + 2))
    selected s8 && t=$((t + 3 * S8_ROUNDS * (DURATION + 4) + 5))
    selected s9 && t=$((t + 6 * ROUNDS * (DURATION + 1) + 5))
    selected s10 && t=$((t + 3 * ROUNDS * (DURATION + 1) + 5))
    selected s11 && t=$((t + 7 * ROUNDS * (DURATION + 1) + 10))
    selected s12 && t=$((t + 2 * ROUNDS * (DURATION + 1) + 5))
    n=3
    [[ $SKIP_SHOAL == 1 ]] && n=2
    selected s1-tls && t=$((t + n * ROUNDS * (DURATION + 1) + 5))
    selected s2-tls && t=$((t + 2 * n * ROUNDS * (DURATION + 1) + 5))
    selected s6-tls && t=$((t + n * ROUNDS * (IDLE_CONNS_TLS / 400 + 3)))
    echo "$t"
}

# The command line that reproduces this run: DURATION and ROUNDS always, other knobs when
# they differ from their defaults.
exact_command() {
    local cmd="DURATION=$DURATION ROUNDS=$ROUNDS" spec var def
    [[ $SCENARIOS == "$ALL_SCENARIOS" ]] || cmd="SCENARIOS=\"$SCENARIOS\" $cmd"
    for spec in WORKERS=2 WRK_THREADS=1 WRK_CONNS=64 AB_REQUESTS=30000 AB_CONNS=50 BIG_FILE_MIB=64 HUPS=18 \
        S5_WARMUP=2 S5_INTERVAL=1 IDLE_CONNS=10000 IDLE_CONNS_TLS=2000 TLS_KEY=ec STARTS=10 S8_READERS=200 \
        S8_BIG_MIB=8 S8_READ_KIBS=64 S8_ROUNDS=5 S9_CONNS=4000 SKIP_SHOAL=0 SKIP_REUSEPORT=0; do
        var=${spec%%=*} def=${spec#*=}
        [[ ${!var} == "$def" ]] || cmd+=" $var=${!var}"
    done
    [[ $WRITE_DOCS != 1 ]] || cmd+=" WRITE_DOCS=1"
    echo "$cmd scripts/bench.sh"
}

shoal_version() {
    local rev
    [[ $SKIP_SHOAL != 1 ]] || { echo "shoal (skipped)"; return; }
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '(no commit)')
    [[ -z $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] ||
        rev+=" + uncommitted changes in src/"
    echo "shoal $rev"
}

# The description of the run at the top of the report.
collect_facts() {
    local cpu os mem nginx_v haproxy_v wrk_v ab_v openssl_v https="" cache="" filters=""
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    os=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || true)
    mem=$(awk '/^MemTotal:/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)
    nginx_v=$(nginx -v 2>&1 || true)
    haproxy_v=$({ haproxy -v 2>&1 || true; } | awk 'NR == 1 { print "HAProxy", $3 }')
    wrk_v=$({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print $1, $2 }')
    ab_v=$({ ab -V 2>&1 || true; } | awk 'NR == 1 { print "ab", $5 }')
    openssl_v=$({ openssl version 2>&1 || true; } | awk 'NR == 1 { print $1, $2 }')
    fact date "$(date -u '+%Y-%m-%d %H:%M UTC')"
    fact command "$(exact_command)"
    fact machine "$(nproc) CPUs${cpu:+ ($cpu)}, $mem, kernel $(uname -r)${os:+, $os}"
    fact machine_short "$(nproc) CPUs, kernel $(uname -r)"
    fact load "$(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
    fact software "$(shoal_version), ${nginx_v#nginx version: }, ${haproxy_v:-HAProxy}, ${wrk_v:-wrk}, ${ab_v:-ab}," \
        "$(python3 --version), ${openssl_v:-OpenSSL} (nginx, HAProxy, wrk; shoal uses rustls)"
    if selected s10; then
        cache="; s10: s4's proxies with their response caches, shoal [cache] and cache = true (cache_ttl 60 s),"
        cache+=" nginx proxy_cache (proxy_cache_valid 200 60s), HAProxy cache (max-age 60), every answer a hit"
    fi
    if selected s11; then
        filters+="; s11: /1k.html (1,024 bytes of HTML) asked with Accept-Encoding: gzip; static: shoal with"
        filters+=" compress = true (kept gzip 7) and s1's nginx (no reuseport) with gzip on, gzip_comp_level 1 or 6,"
        filters+=" gzip_min_length 0, gzip_vary on; proxy: s4's proxies, shoal compress = true (streamed gzip 3),"
        filters+=" nginx the same gzip lines at 1 or 6 (gzip_proxied any), HAProxy filter compression (libslz),"
        filters+=" the upstream not compressing"
    fi
    if selected s12; then
        filters+="; s12: s1's shoal, and the same with limit_requests = { rate = \"1000000/s\", burst = 1000000,"
        filters+=" key = \"client\" } on its route (never refuses), in the same rounds"
    fi
    if tls_selected; then
        https="; HTTPS (s1-tls, s2-tls, s6-tls): the static shoal and nginx (listen ... ssl reuseport, TLS 1.2"
        https+=" and 1.3) with the same limits, and HAProxy answering the 1 KiB from memory (http-request return)"
    fi
    fact servers "$WORKERS workers each (shoal workers, nginx worker_processes, HAProxy nbthread), access logs off;" \
        "static: shoal and nginx (sendfile on, tcp_nopush on; also with listen ... reuseport) allow $CONN_CAP" \
        "connections per worker, 100,000 requests per connection and 300 s of keep-alive idleness;" \
        "s4: each proxy keeps up to 64 idle connections to one shared nginx upstream (1 worker)$cache$filters$https"
    if tls_selected; then fact tls "$(tls_fact)"; fi
    fact method "rounds per scenario: $ROUNDS (s7: $STARTS starts per target; s8: $S8_ROUNDS rounds), every target once per round," \
        "targets alternated within the round; medians (lower middle for an even count) and min–max over" \
        "the rounds; load generators and servers share the same CPUs, on 127.0.0.1;" \
        "CPU µs/req: utime + stime of the server's process tree (CLK_TCK $CLK_TCK) over the requests served"
    fact hups "$HUPS"
}

write_report() {
    local args=("$RESULTS" "$FACTS")
    if [[ $WRITE_DOCS == 1 ]]; then
        args+=(--docs "$REPO/docs/benchmarks.md" --readme "$REPO/README.md" --svg "$REPO/docs/bench-ratios.svg")
        log "writing docs/benchmarks.md, README.md and docs/bench-ratios.svg"
    fi
    python3 "$REPO/scripts/bench/report.py" "${args[@]}" | tee "$TMP/report.md"
    if [[ -n $RESULTS_DIR ]]; then
        mkdir -p "$RESULTS_DIR"
        cp "$RESULTS" "$FACTS" "$TMP/report.md" "$RESULTS_DIR/"
        log "kept results.tsv, facts.tsv and report.md in $RESULTS_DIR"
    fi
}

main() {
    local started=$SECONDS
    check_settings
    trap cleanup EXIT
    trap 'exit 130' INT TERM   # make Ctrl-C go through the EXIT trap
    install_deps ab:apache2-utils haproxy python3 ss:iproute2 openssl cc:gcc
    CLK_TCK=$(getconf CLK_TCK)
    [[ $CLK_TCK =~ ^[1-9][0-9]*$ ]] || die "getconf CLK_TCK gave '$CLK_TCK'"
    [[ $SKIP_SHOAL == 1 || $SKIP_BUILD == 1 ]] || build_shoal
    [[ $SKIP_SHOAL == 1 || -x $SHOAL_BIN ]] || die "$SHOAL_BIN not found (drop SKIP_BUILD=1?)"
    raise_nofile
    make_site shoal-bench
    if selected s1 || selected s2 || selected s4; then build_floors; fi
    selected s3 && make_big_file
    selected s11 && make_text_file
    if tls_selected; then make_tls_files "$TMP/tls" "$TLS_KEY"; fi
    RESULTS=$TMP/results.tsv FACTS=$TMP/facts.tsv
    : > "$RESULTS"
    : > "$FACTS"
    collect_facts
    log "scenarios: $SCENARIOS; expect about $(($(estimate_seconds) / 60 + 1)) min"

    static_scenarios
    if selected s4; then scenario_s4; fi
    if selected s5; then scenario_s5; fi
    if selected s6; then scenario_s6; fi
    if selected s7; then scenario_s7; fi
    if selected s8; then scenario_s8; fi
    if selected s9; then scenario_s9; fi
    if selected s10; then scenario_s10; fi
    if selected s11; then scenario_s11; fi
    if selected s12; then scenario_s12; fi
    tls_scenarios

    write_report
    log "done in $((SECONDS - started)) s"
}

main "$@"
