#!/usr/bin/env bash
# Benchmark shoal against nginx (and HAProxy) in two scenarios, each with its own report:
#   static  shoal, nginx and nginx with reuseport serving the same 1 KiB static file
#   proxy   shoal, nginx and HAProxy as reverse proxies ("shoal-proxy", "nginx-proxy",
#           "haproxy") in front of one shared upstream: a separate nginx (1 worker, access
#           log off, keepalive_requests 100000) serving that 1 KiB file; each proxy keeps up
#           to 64 idle keep-alive connections to it
# In both, `wrk -t1 -c64 -d${DURATION}s --latency` loads every target once per round,
# alternating targets within the round, for ROUNDS rounds.
# Around every wrk run the script also samples the CPU time (utime + stime) of the target's
# whole process tree (nginx master + workers, shoal master + workers, the one multi-threaded
# HAProxy process) and, in the proxy scenario, of the upstream's, and divides the difference
# by the requests wrk completed: "CPU µs/req". On a small machine where wrk, the upstream and
# the server share the CPUs, req/s converge to one ceiling while CPU per request still shows
# how much of the machine each server needs.
#
# Usage: scripts/bench.sh            (from anywhere; writes the report to stdout)
#        scripts/bench.sh > bench.md (progress goes to stderr)
#        SCENARIOS=proxy DURATION=10 ROUNDS=3 scripts/bench.sh
#
# Environment (all optional):
#   SCENARIOS="static proxy"  which scenarios to run (always in this order)
#   DURATION=10        seconds per wrk run
#   ROUNDS=3           rounds; each round runs every target once, alternating
#   WORKERS=2          shoal workers, nginx worker_processes, HAProxy nbthread (not the
#                      upstream's, which always has 1 worker)
#   WRK_THREADS=1      wrk -t
#   WRK_CONNS=64       wrk -c
#   SHOAL_PORT=18080   NGINX_PORT=18081   NGINX_RP_PORT=18082              (static)
#   SHOAL_PROXY_PORT=18083   NGINX_PROXY_PORT=18084   HAPROXY_PORT=18085
#   UPSTREAM_PORT=18086                                                  (proxy)
#   SKIP_SHOAL=1       do not build or run shoal (tests the harness on nginx/HAProxy alone)
#   SKIP_BUILD=1       use the existing shoal binary without cargo build
#   SHOAL_BIN=path     shoal binary to run (default: target/release/shoal)
#   SKIP_REUSEPORT=1   leave out the "nginx-reuseport" variant (static)
#
# Needs root (or sudo) only if nginx/wrk/curl (or haproxy, for the proxy scenario) must be
# installed with apt-get.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-64}
SHOAL_PORT=${SHOAL_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
NGINX_RP_PORT=${NGINX_RP_PORT:-18082}
SHOAL_PROXY_PORT=${SHOAL_PROXY_PORT:-18083}
NGINX_PROXY_PORT=${NGINX_PROXY_PORT:-18084}
HAPROXY_PORT=${HAPROXY_PORT:-18085}
UPSTREAM_PORT=${UPSTREAM_PORT:-18086}
SCENARIOS=${SCENARIOS:-static proxy}
WORKERS=${WORKERS:-2}
SKIP_SHOAL=${SKIP_SHOAL:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_REUSEPORT=${SKIP_REUSEPORT:-0}
SHOAL_BIN=${SHOAL_BIN:-$REPO/target/release/shoal}

LOG_TAG=bench
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

TMP=""
declare -A PID=()    # target name (or "upstream") -> server PID (only processes we started)
declare -A PORT=()   # target name (or "upstream") -> port
declare -A RPS=() P99=() NON2XX=() SOCKERR=()  # target -> space-separated per-round values
declare -A CPU=() UPCPU=()  # target -> per-round CPU µs/req of the target / of the upstream
CLK_TCK=""           # clock ticks per second of /proc/<pid>/stat times (set in main)
TARGETS=()           # the targets of the scenario being run, in start order

# --- process control --------------------------------------------------------

cleanup() {
    local name
    trap - EXIT INT TERM
    for name in "${!PID[@]}"; do
        stop_pid "$name" "${PID[$name]}"
    done
    if [[ -n $TMP && -d $TMP ]]; then rm -rf -- "$TMP"; fi
}

# Stop the named servers we started (by PID) and forget them.
stop_servers() {
    local name
    for name in "$@"; do
        [[ -n ${PID[$name]:-} ]] || continue
        stop_pid "$name" "${PID[$name]}"
        unset "PID[$name]"
    done
}

# Run "$@" in the background as server $1 on port $2, stdout and stderr to $TMP/$1.out.
launch() {
    local name=$1 port=$2
    shift 2
    "$@" > "$TMP/$name.out" 2>&1 &
    PID[$name]=$!
    PORT[$name]=$port
}

# The output of a server and, for nginx, its error log: to diagnose a failed start.
show_logs() { show_log "$TMP/$1.out"; show_log "$TMP/$1/error.log"; }

# --- servers ----------------------------------------------------------------

# shoal as target $1 on port $2: $3 = static (serves $TMP/site) or proxy (to the upstream).
start_shoal() {
    local name=$1 port=$2 mode=$3 conf=$TMP/$1.toml
    check_port_free "$port"
    cat > "$conf" <<EOF
workers = $WORKERS
access_log = "off"
[[server]]
listen = ["127.0.0.1:$port"]
  [[server.route]]
  prefix = "/"
EOF
    if [[ $mode == static ]]; then
        echo "  root = \"$TMP/site\"" >> "$conf"
    else
        cat >> "$conf" <<EOF
  upstream = "app"
[upstream.app]
servers = ["127.0.0.1:$UPSTREAM_PORT"]
keepalive = 64
EOF
    fi
    launch "$name" "$port" "$SHOAL_BIN" -c "$conf"
    TARGETS+=("$name")
}

# One standalone nginx instance serving $TMP/site, with its own prefix dir (see
# write_nginx_conf in lib.sh). $3 is extra "listen" parameters (e.g. "reuseport"), $4 the
# worker count (default WORKERS). Not a target when $1 is "upstream".
start_nginx() {
    local name=$1 port=$2 listen_opts=${3:-} workers=${4:-$WORKERS} dir=$TMP/$1
    check_port_free "$port"
    write_nginx_conf "$dir" "$port" "$listen_opts" "$workers"
    nginx_args "$dir"
    launch "$name" "$port" "${NGINX_ARGS[@]}"
    [[ $name == upstream ]] || TARGETS+=("$name")
}

# nginx as a reverse proxy to the upstream, keeping up to 64 idle upstream connections per
# worker. keepalive_requests in the upstream block lifts nginx's default of 1000 requests per
# upstream connection to the upstream's own limit, so no proxy reconnects during a run.
start_nginx_proxy() {
    local name=$1 port=$2 dir=$TMP/$1
    check_port_free "$port"
    mkdir -p "$dir"
    cat > "$dir/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 10240; }
http {
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    nginx_args "$dir"
    launch "$name" "$port" "${NGINX_ARGS[@]}"
    TARGETS+=("$name")
}

# HAProxy in the foreground (-db: no daemon, one process with WORKERS threads), so $! is
# the process that serves. No "log" line: nothing is logged.
start_haproxy() {
    local name=$1 port=$2 cfg=$TMP/$1.cfg
    check_port_free "$port"
    cat > "$cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:$port
    default_backend app

backend app
    server app1 127.0.0.1:$UPSTREAM_PORT
EOF
    haproxy -c -f "$cfg" > "$TMP/$name.check" 2>&1 || { cat "$TMP/$name.check" >&2; die "haproxy rejected $cfg"; }
    launch "$name" "$port" haproxy -f "$cfg" -db
    TARGETS+=("$name")
}

# Poll until GET /1k.bin answers 200; give up after 10 s or if the server died.
wait_ready() {
    local name=$1 url="http://127.0.0.1:${PORT[$1]}/1k.bin" code deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        if ! kill -0 "${PID[$name]}" 2>/dev/null; then
            show_logs "$name"
            die "$name exited during startup"
        fi
        code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)
        [[ $code == 200 ]] && { log "$name ready on $url"; return 0; }
        sleep 0.1
    done
    show_logs "$name"
    die "$name not ready within 10 s (last HTTP code: ${code:-none}) at $url"
}

# A proxy must hand back the upstream's file byte for byte, twice over one connection.
check_body() {
    local name=$1 url="http://127.0.0.1:${PORT[$1]}/1k.bin" got=$TMP/body-$1
    curl -s --max-time 2 -o "$got.1" "$url" -o "$got.2" "$url" || true
    if ! cmp -s "$got.1" "$TMP/site/1k.bin" || ! cmp -s "$got.2" "$TMP/site/1k.bin"; then
        show_logs "$name"
        die "$name did not return the upstream's 1k.bin byte for byte"
    fi
}

# --- measuring --------------------------------------------------------------

# The exact command run_wrk executes, for logs and the report.
wrk_cmd() { echo "wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s --latency http://127.0.0.1:$1/1k.bin"; }

# CPU µs per request from a tick difference $1 and a request count $2.
us_per_req() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.3f\n", t * 1000000 / hz / n }'; }

# CPU µs/req of server $1 (a PID key) from its tree samples $2 (before) and $3 (after) of
# tree_cpu_sample, over $4 requests. Warns when the process tree changed during the run: a
# process that exited took its CPU time with it, one that started is counted from zero.
cpu_per_req() {
    local name=$1 before=$2 after=$3 requests=$4
    [[ ${before#* } == "${after#* }" ]] ||
        log "WARNING: $name's process tree changed during the run (${before#* } -> ${after#* }); its CPU figure is approximate"
    us_per_req $((${after%% *} - ${before%% *})) "$requests"
}

# Run wrk once against a target and append req/s, p99 (ms), error counts and the CPU per
# request of the target (and of the upstream, if one runs).
run_wrk() {
    local name=$1 round=$2 out=$TMP/wrk-$1-$2.txt rps p99 non2xx sockerr requests
    local cpu0 cpu1 up0="" up1="" cpu upcpu=""
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name died before round $round"
    [[ -z ${PID[upstream]:-} ]] || kill -0 "${PID[upstream]}" 2>/dev/null || die "upstream died before round $round"
    log "round $round: $(wrk_cmd "${PORT[$name]}")"
    cpu0=$(tree_cpu_sample "${PID[$name]}")
    [[ -z ${PID[upstream]:-} ]] || up0=$(tree_cpu_sample "${PID[upstream]}")
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$name]}/1k.bin" \
        > "$out" 2>&1 || { cat "$out" >&2; die "wrk failed on $name"; }
    cpu1=$(tree_cpu_sample "${PID[$name]}")
    [[ -z ${PID[upstream]:-} ]] || up1=$(tree_cpu_sample "${PID[upstream]}")
    rps=$(awk '$1 == "Requests/sec:" { print $2 }' "$out")
    # "99%  2.34ms" in the Latency Distribution block; normalise units to ms.
    p99=$(awk '$1 == "99%" {
        v = $2; u = v; sub(/^[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (m < 0) { print "?"; exit } ; printf "%.3f\n", v * m }' "$out")
    non2xx=$(wrk_non2xx "$out")
    sockerr=$(wrk_sockerr "$out")
    requests=$(wrk_requests "$out")
    [[ -n $rps && -n $p99 && $p99 != "?" ]] || { cat "$out" >&2; die "could not parse wrk output for $name"; }
    [[ $requests =~ ^[0-9]+$ && $requests -gt 0 ]] || { cat "$out" >&2; die "no completed requests in wrk output for $name"; }
    cpu=$(cpu_per_req "$name" "$cpu0" "$cpu1" "$requests")
    [[ -z $up0 ]] || upcpu=$(cpu_per_req upstream "$up0" "$up1" "$requests")
    RPS[$name]+="$rps "
    P99[$name]+="$p99 "
    NON2XX[$name]+="${non2xx:-0} "
    SOCKERR[$name]+="${sockerr:-0} "
    CPU[$name]+="$cpu "
    [[ -z $upcpu ]] || UPCPU[$name]+="$upcpu "
    log "  $name: $rps req/s, p99 ${p99} ms, non-2xx ${non2xx:-0}, socket errors ${sockerr:-0}," \
        "$requests requests, CPU $cpu µs/req${upcpu:+ (upstream $upcpu µs/req)}"
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
# Median CPU µs/req of a target (from the array named $2, default CPU), or nothing.
median_cpu() {
    local -n values=${2:-CPU}
    # shellcheck disable=SC2086  # space-separated list on purpose
    if [[ -n ${values[$1]:-} ]]; then median ${values[$1]}; fi
}
ratio()  { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f\n", a / b }'; }

machine_line() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo "- machine: $(nproc) CPUs${cpu:+ ($cpu)}, kernel $(uname -r)"
}
nginx_version() { local v; v=$(nginx -v 2>&1 || true); echo "${v#nginx version: }"; }
wrk_version() { local v; v=$({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print $1, $2 }'); echo "${v:-wrk}"; }
# "shoal <commit> (workers = N$1)", or "shoal (skipped)". With $2 = mark-dirty, the commit is
# followed by " + uncommitted changes in src/" when src/ or Cargo.* differ from it (tracked
# or not), as in drill.sh. The static report leaves it out to keep its format.
shoal_version() {
    local rev
    if [[ $SKIP_SHOAL == 1 ]]; then echo "shoal (skipped)"; return; fi
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '(no commit)')
    if [[ ${2:-} == mark-dirty && -n $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        rev+=" + uncommitted changes in src/"
    fi
    echo "shoal $rev (workers = $WORKERS${1:-})"
}
medians_line() { echo "- medians: middle value of the sorted rounds (lower middle when the count is even)"; }
cpu_line() {
    echo "- CPU µs/req: utime + stime (/proc/<pid>/stat, CLK_TCK $CLK_TCK) of the server's whole process tree," \
        "sampled just before and after each wrk run, divided by the requests wrk completed; lower is better"
}

# The results table of the current scenario's TARGETS.
print_table() {
    local name med n2 se errs
    echo "| target | median req/s | min–max req/s | median p99 (ms) | errors | CPU µs/req (median) |"
    echo "|---|---:|---:|---:|---|---:|"
    for name in "${TARGETS[@]}"; do
        # shellcheck disable=SC2086  # the value lists are space-separated on purpose
        {
            med=$(median ${RPS[$name]})
            n2=$(sum ${NON2XX[$name]}); se=$(sum ${SOCKERR[$name]})
            errs=0; ((n2 + se == 0)) || errs="non-2xx $n2, socket $se"
            printf '| %s | %.0f | %s | %.2f | %s | %.1f |\n' "$name" "$med" "$(minmax ${RPS[$name]})" "$(median ${P99[$name]})" "$errs" \
                "$(median ${CPU[$name]})"
        }
    done
}

print_static_report() {
    echo "## shoal vs nginx: static 1 KiB file"
    echo
    machine_line
    echo "- servers: $(shoal_version), $(nginx_version) (worker_processes $WORKERS), $(wrk_version)"
    echo "- command: \`$(wrk_cmd PORT)\`, $ROUNDS round(s), targets alternated within each round"
    medians_line
    cpu_line
    echo
    print_table
    echo
    echo "- shoal/nginx (median req/s): $(ratio "$(median_rps shoal)" "$(median_rps nginx)")"
    echo "- shoal/nginx-reuseport (median req/s): $(ratio "$(median_rps shoal)" "$(median_rps nginx-reuseport)")"
    echo "- CPU per request shoal/nginx (median CPU µs/req, lower is better for shoal): $(ratio "$(median_cpu shoal)" "$(median_cpu nginx)")"
    echo "- CPU per request shoal/nginx-reuseport (median CPU µs/req, lower is better for shoal):" \
        "$(ratio "$(median_cpu shoal)" "$(median_cpu nginx-reuseport)")"
}

# The upstream's own CPU per proxied request during each proxy's runs (for reference: the
# upstream does the same work whichever proxy is in front, so this is the floor the proxies'
# figures add to).
upstream_cpu_line() {
    local name list=""
    for name in "${TARGETS[@]}"; do
        list+="${list:+, }$name $(printf '%.1f' "$(median_cpu "$name" UPCPU)")"
    done
    echo "- upstream CPU µs/req (median, same method as the table, per request through each proxy): $list"
}

print_proxy_report() {
    local haproxy_v
    haproxy_v=$({ haproxy -v 2>&1 || true; } | awk 'NR == 1 { print "HAProxy", $3 }')
    echo "## shoal vs nginx vs HAProxy: reverse proxy, 1 KiB upstream response"
    echo
    machine_line
    echo "- proxies: $(shoal_version ", keepalive = 64" mark-dirty), $(nginx_version) (worker_processes $WORKERS, keepalive 64)," \
        "${haproxy_v:-HAProxy} (nbthread $WORKERS, http-reuse always), $(wrk_version)"
    echo "- upstream: one $(nginx_version) shared by all proxies (worker_processes 1, access_log off," \
        "keepalive_requests 100000) serving the same 1 KiB file on 127.0.0.1"
    upstream_cpu_line
    echo "- command: \`$(wrk_cmd PORT)\` against each proxy, $ROUNDS round(s), targets alternated within each round"
    medians_line
    cpu_line
    echo
    print_table
    echo
    echo "- shoal-proxy/nginx-proxy (median req/s): $(ratio "$(median_rps shoal-proxy)" "$(median_rps nginx-proxy)")"
    echo "- shoal-proxy/haproxy (median req/s): $(ratio "$(median_rps shoal-proxy)" "$(median_rps haproxy)")"
    echo "- CPU per request shoal-proxy/nginx-proxy (median CPU µs/req, lower is better for shoal):" \
        "$(ratio "$(median_cpu shoal-proxy)" "$(median_cpu nginx-proxy)")"
    echo "- CPU per request shoal-proxy/haproxy (median CPU µs/req, lower is better for shoal):" \
        "$(ratio "$(median_cpu shoal-proxy)" "$(median_cpu haproxy)")"
}

# Alternate targets within each round so drift (thermal, noisy neighbours)
# hits every server alike instead of whichever ran last.
run_rounds() {
    local name round
    for ((round = 1; round <= ROUNDS; round++)); do
        for name in "${TARGETS[@]}"; do run_wrk "$name" "$round"; done
    done
}

scenario_static() {
    local name
    TARGETS=()
    [[ $SKIP_SHOAL == 1 ]] || start_shoal shoal "$SHOAL_PORT" static
    start_nginx nginx "$NGINX_PORT"
    [[ $SKIP_REUSEPORT == 1 ]] || start_nginx nginx-reuseport "$NGINX_RP_PORT" reuseport
    for name in "${TARGETS[@]}"; do wait_ready "$name"; done
    run_rounds
    print_static_report
    stop_servers "${TARGETS[@]}"
}

scenario_proxy() {
    local name
    TARGETS=()
    start_nginx upstream "$UPSTREAM_PORT" "" 1
    wait_ready upstream
    [[ $SKIP_SHOAL == 1 ]] || start_shoal shoal-proxy "$SHOAL_PROXY_PORT" proxy
    start_nginx_proxy nginx-proxy "$NGINX_PROXY_PORT"
    start_haproxy haproxy "$HAPROXY_PORT"
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    run_rounds
    print_proxy_report
    stop_servers "${TARGETS[@]}" upstream
}

# True if scenario $1 is selected in SCENARIOS.
selected() { [[ " $SCENARIOS " == *" $1 "* ]]; }

main() {
    local word extra=() first=1
    for word in $SCENARIOS; do
        [[ $word == static || $word == proxy ]] || die "unknown scenario '$word' in SCENARIOS (static, proxy)"
    done
    selected static || selected proxy || die "SCENARIOS selects nothing (static, proxy)"
    [[ $WORKERS =~ ^[1-9][0-9]{0,2}$ ]] || die "WORKERS must be a positive integer, not '$WORKERS'"
    trap cleanup EXIT
    trap 'exit 130' INT TERM   # make Ctrl-C go through the EXIT trap
    selected proxy && extra+=(haproxy)
    install_deps "${extra[@]}"
    CLK_TCK=$(getconf CLK_TCK)
    [[ $CLK_TCK =~ ^[1-9][0-9]*$ ]] || die "getconf CLK_TCK gave '$CLK_TCK'"
    [[ $SKIP_SHOAL == 1 || $SKIP_BUILD == 1 ]] || build_shoal
    [[ $SKIP_SHOAL == 1 || -x $SHOAL_BIN ]] || die "$SHOAL_BIN not found (drop SKIP_BUILD=1?)"
    make_site shoal-bench

    # Each scenario prints its report when done and stops its servers before the next starts.
    if selected static; then scenario_static; first=0; fi
    if selected proxy; then ((first)) || echo; scenario_proxy; fi
}

main "$@"
