# Servers for scripts/bench.sh: configs, start, readiness and body checks, stop. Sourced by
# bench.sh after scripts/lib.sh; every process is started here and stopped by its PID.
# shellcheck shell=bash

declare -A PID=()    # target name (or "upstream", "wrk", "client") -> PID of a process we started
declare -A PORT=()   # target name (or "upstream") -> port
declare -A SCHEME=() # target name -> "https" for the TLS targets (scripts/bench/tls_servers.sh)
TARGETS=()           # the targets of the scenario being run, in start order

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local name
    trap - EXIT INT TERM
    # Load generators and clients first, then the servers.
    for name in wrk client "${!PID[@]}"; do
        [[ -n ${PID[$name]:-} ]] || continue
        stop_pid "$name" "${PID[$name]}"
        unset "PID[$name]"
    done
    if [[ ${KEEP_TMP:-0} == 1 && -n $TMP ]]; then
        log "kept $TMP"
    elif [[ -n $TMP && -d $TMP ]]; then
        rm -rf -- "$TMP"
    fi
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

# --- configs ----------------------------------------------------------------
# Every static server allows CONN_CAP connections per worker, 100,000 requests per connection
# and 300 s of keep-alive idleness, so that S6's idle connections stay open and no scenario
# reconnects because of a per-connection limit (nginx: the same in write_nginx_conf's args).

# write_shoal_conf FILE PORT MODE [UPSTREAM_LINES]: MODE static serves $TMP/site, tls the same
# over HTTPS with the run's certificate (make_tls_files in scripts/bench/tls_servers.sh), proxy
# forwards to the upstream, keeping up to 64 idle connections to it unless UPSTREAM_LINES
# (lines of the [upstream.app] table) say otherwise; cache is proxy with the response cache on
# its route (cache = true, cache_ttl = "60s": the upstream's answers state no freshness), its
# entries in the directory named as FILE with -entries for .toml (max_size 1 GiB).
# SHOAL_ROUTE_LINES, when set, are more lines for the route (S11: compress = true; S12: a
# limit_requests guard).
write_shoal_conf() {
    local conf=$1 port=$2 mode=$3 upstream_lines=${4-keepalive = 64} tls="" route_lines=""
    [[ $mode != tls ]] || tls=$'\n'"tls = { cert = \"$TLS_DIR/cert.pem\", key = \"$TLS_DIR/key.pem\" }"
    cat > "$conf" <<EOF
workers = $WORKERS
access_log = "off"
[limits]
max_connections = $CONN_CAP
keepalive_timeout = "300s"
max_requests_per_connection = 100000
[[server]]
listen = ["127.0.0.1:$port"]$tls
  [[server.route]]
  prefix = "/"
EOF
    if [[ $mode == static || $mode == tls ]]; then
        echo "  root = \"$TMP/site\"" >> "$conf"
        [[ -z ${SHOAL_ROUTE_LINES:-} ]] || echo "  $SHOAL_ROUTE_LINES" >> "$conf"
    else
        [[ $mode != cache ]] || route_lines=$'\n  cache = true\n  cache_ttl = "60s"'
        [[ -z ${SHOAL_ROUTE_LINES:-} ]] || route_lines+=$'\n'"  $SHOAL_ROUTE_LINES"
        cat >> "$conf" <<EOF
  upstream = "app"$route_lines
[buffering]
temp_dir = "$TMP"
[upstream.app]
servers = ["127.0.0.1:$UPSTREAM_PORT"]
$upstream_lines
EOF
        if [[ $mode == cache ]]; then
            printf '[cache]\npath = "%s"\nmax_size = "1GiB"\n' "${conf%.toml}-entries" >> "$conf"
        fi
    fi
    # More routes and servers (scripts/bench/many_sites.py) for the target being started.
    if [[ -n ${SHOAL_EXTRA_CONF:-} ]]; then
        sed "s/{listen}/127.0.0.1:$port/g" "$SHOAL_EXTRA_CONF" >> "$conf"
    fi
}

# write_static_nginx_conf NAME PORT [LISTEN_OPTS [SERVER_LINES]]: the nginx twin of
# write_shoal_conf static, in $TMP/NAME/nginx.conf; SERVER_LINES go into its server block.
write_static_nginx_conf() {
    write_nginx_conf "$TMP/$1" "$2" "${3:-}" "$WORKERS" "$CONN_CAP" 300s "${4:-}"
}

# --- starting ---------------------------------------------------------------

# shoal as target $1 on port $2: $3 = static (serves $TMP/site), tls (the same over HTTPS),
# proxy (to the upstream, with the [upstream.app] lines $4 if given) or cache (proxy with the
# response cache; see write_shoal_conf).
start_shoal() {
    local name=$1 port=$2 mode=$3
    check_port_free "$port"
    write_shoal_conf "$TMP/$name.toml" "$port" "$mode" "${@:4}"
    launch "$name" "$port" "$SHOAL_BIN" "${SHOAL_AS[@]}" -c "$TMP/$name.toml"
    TARGETS+=("$name")
}

# One standalone nginx serving $TMP/site (see write_nginx_conf in lib.sh). $3 is extra
# "listen" parameters (e.g. "reuseport"), $4 extra lines for the server block. Not a target
# when $1 is "upstream", which has one worker and the default connection limits.
start_nginx() {
    local name=$1 port=$2 listen_opts=${3:-} server_lines=${4:-}
    check_port_free "$port"
    if [[ $name == upstream ]]; then
        write_nginx_conf "$TMP/$name" "$port" "" 1
    else
        write_static_nginx_conf "$name" "$port" "$listen_opts" "$server_lines"
        TARGETS+=("$name")
    fi
    nginx_args "$TMP/$name"
    launch "$name" "$port" "${NGINX_ARGS[@]}"
}

# nginx as a reverse proxy to the upstream, keeping up to 64 idle upstream connections per
# worker. keepalive_requests in the upstream block lifts nginx's default of 1000 requests per
# upstream connection to the upstream's own limit, so no proxy reconnects during a run.
# The proxy_set_header lines make nginx send the head shoal sends (client Host kept,
# X-Forwarded-For/-Proto/-Host, X-Real-IP, X-Request-Id): the same job for the shared
# upstream, whose parsing of those five headers costs it about 1 µs per request.
# start_nginx_proxy NAME PORT [HTTP_LINES [LOCATION_LINES]]: more lines for the http block
# (S10: proxy_cache_path) and for the location (S10: proxy_cache ...).
start_nginx_proxy() {
    local name=$1 port=$2 dir=$TMP/$1 http_lines=${3:-} location_lines=${4:-} nl=$'\n'
    [[ -z $http_lines ]] || http_lines="$nl    ${http_lines//$nl/$nl    }"
    [[ -z $location_lines ]] || location_lines="$nl            ${location_lines//$nl/$nl            }"
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
    scgi_temp_path $dir/scgi;$http_lines
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
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Request-Id \$request_id;$location_lines
        }
    }
}
EOF
    nginx_args "$dir"
    launch "$name" "$port" "${NGINX_ARGS[@]}"
    TARGETS+=("$name")
}

# HAProxy in the foreground (-db: no daemon, one process with WORKERS threads), so $! is
# the process that serves. No "log" line: nothing is logged. Like nginx above, it sends
# the upstream the forwarding headers shoal sends (it keeps the client's Host by itself).
# start_haproxy NAME PORT [BACKEND_LINES [SECTIONS]]: more lines for the backend, before its
# server (S10: cache-use, cache-store), and more sections after it (S10: the cache).
start_haproxy() {
    local name=$1 port=$2 cfg=$TMP/$1.cfg backend_lines=${3:-} sections=${4:-} nl=$'\n'
    [[ -z $backend_lines ]] || backend_lines="    ${backend_lines//$nl/$nl    }$nl"
    [[ -z $sections ]] || sections="$nl$nl$sections"
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
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Request-Id %[uuid()]
    default_backend app

backend app
${backend_lines}    server app1 127.0.0.1:$UPSTREAM_PORT$sections
EOF
    haproxy -c -f "$cfg" > "$TMP/$name.check" 2>&1 || { cat "$TMP/$name.check" >&2; die "haproxy rejected $cfg"; }
    launch "$name" "$port" haproxy -f "$cfg" -db
    TARGETS+=("$name")
}

# start_static_targets: shoal, nginx and nginx-reuseport serving $TMP/site (S1, S2, S3, S5,
# S6), each ready and checked; TARGETS lists those started.
start_static_targets() {
    local name
    TARGETS=()
    [[ $SKIP_SHOAL == 1 ]] || start_shoal shoal "$SHOAL_PORT" static
    start_nginx nginx "$NGINX_PORT"
    [[ $SKIP_REUSEPORT == 1 ]] || start_nginx nginx-reuseport "$NGINX_RP_PORT" reuseport
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
}

# The port a static target listens on (S6 starts one at a time).
static_port() {
    case $1 in
        shoal) echo "$SHOAL_PORT" ;;
        nginx) echo "$NGINX_PORT" ;;
        nginx-reuseport) echo "$NGINX_RP_PORT" ;;
        *) die "no static target named $1" ;;
    esac
}

# start_static_target NAME: one of start_static_targets' servers, alone, ready and checked.
start_static_target() {
    local name=$1
    case $name in
        shoal) start_shoal shoal "$SHOAL_PORT" static ;;
        nginx) start_nginx nginx "$NGINX_PORT" ;;
        nginx-reuseport) start_nginx nginx-reuseport "$NGINX_RP_PORT" reuseport ;;
    esac
    wait_ready "$name"
    check_body "$name"
}

# The names start_static_targets would start (without starting them).
static_target_names() {
    local names=()
    [[ $SKIP_SHOAL == 1 ]] || names+=(shoal)
    names+=(nginx)
    [[ $SKIP_REUSEPORT == 1 ]] || names+=(nginx-reuseport)
    echo "${names[*]}"
}

# --- checks -----------------------------------------------------------------

# Poll until GET /1k.bin answers 200; give up after 10 s or if the server died. HTTPS for the
# targets whose SCHEME is https, without verifying the (self-signed) certificate.
wait_ready() {
    local name=$1 url="${SCHEME[$1]:-http}://127.0.0.1:${PORT[$1]}/1k.bin" code deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        if ! pid_alive "${PID[$name]}"; then
            show_logs "$name"
            die "$name exited during startup"
        fi
        code=$(curl -sk -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)
        [[ $code == 200 ]] && { log "$name ready on $url"; return 0; }
        sleep 0.1
    done
    show_logs "$name"
    die "$name not ready within 10 s (last HTTP code: ${code:-none}) at $url"
}

# check_body NAME [FILE]: the target must hand back $TMP/site/FILE (default 1k.bin) byte for
# byte, twice over one connection (proxies: the upstream's copy of it; haproxy-return: its
# copy in memory).
check_body() {
    local name=$1 file=${2:-1k.bin} url got=$TMP/body-$1
    url="${SCHEME[$1]:-http}://127.0.0.1:${PORT[$1]}/$file"
    curl -sk --max-time 10 -o "$got.1" "$url" -o "$got.2" "$url" || true
    if ! cmp -s "$got.1" "$TMP/site/$file" || ! cmp -s "$got.2" "$TMP/site/$file"; then
        show_logs "$name"
        die "$name did not return $file byte for byte"
    fi
    rm -f "$got.1" "$got.2"
}
