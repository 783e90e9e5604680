# Helpers shared by scripts/bench.sh and scripts/drill.sh. Source it; do not run it.
#
# The sourcing script sets, before calling anything here:
#   LOG_TAG    prefix of progress lines ("bench", "drill")
#   REPO       repository root          (build_shoal)
#   SHOAL_BIN  shoal binary path        (build_shoal)
#   TMP        set by make_site; the sourcing script's cleanup removes it
# Everything here acts on PIDs it is given, never on process names.
# shellcheck shell=bash

log() { printf '[%s] %s\n' "${LOG_TAG:-lib}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- process control --------------------------------------------------------

# True while the process exists and has not exited (a zombie waiting to be reaped by a
# parent other than us counts as gone).
pid_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || true
    [[ -n $state && $state != Z && $state != X ]]
}

# Stop one PID we started: SIGTERM, up to 5 s grace, then SIGKILL. Never by name.
# The wait only reaps it when it is our child; for others it returns at once.
stop_pid() {
    local name=$1 pid=$2 i
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            log "WARNING: $name (pid $pid) ignored SIGTERM for 5 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true   # reap; exit status is irrelevant here
}

# Direct children of a process, one PID per line (nothing if it is gone).
children_of() {
    local pid=$1
    { tr ' ' '\n' < "/proc/$pid/task/$pid/children"; } 2>/dev/null | sed '/^$/d' || true
}

# The PID $1 and all its descendants (recursively), one per line; nothing if $1 is gone.
# Reads the children file of every thread of each process (a child forked by a thread other
# than the main one is listed only under that thread); threads themselves are not listed,
# since /proc/<pid>/stat already sums all of a process's threads.
process_tree() {
    local pid=$1 task child
    [[ -d /proc/$pid ]] || return 0
    echo "$pid"
    for task in /proc/"$pid"/task/*; do
        for child in $({ cat "$task/children"; } 2>/dev/null || true); do
            process_tree "$child"
        done
    done
}

# Total CPU time used so far by the given PIDs: utime + stime (fields 14 and 15 of
# /proc/<pid>/stat, all threads included), in clock ticks (getconf CLK_TCK). PIDs that are
# gone count 0. The fields are counted after the last ")" because field 2, the command name
# in parentheses, may itself contain spaces or parentheses.
cpu_ticks() {
    local pid line total=0
    local -a f
    for pid in "$@"; do
        { read -r line < "/proc/$pid/stat"; } 2>/dev/null || continue
        read -r -a f <<< "${line##*) }"   # f[0] is field 3 (state)
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# CPU ticks (as cpu_ticks) of the whole process tree of PID $1, then the tree's PIDs:
# "TICKS PID PID ...", so a caller can notice when the tree changed between two samples.
tree_cpu_sample() {
    local -a pids
    mapfile -t pids < <(process_tree "$1")
    echo "$(cpu_ticks "${pids[@]}") ${pids[*]}"
}

# Show the tail of a server's log so a failed start is diagnosable.
show_log() {
    local file=$1
    [[ -f $file ]] || return 0
    log "--- last lines of $file ---"
    tail -n 20 "$file" >&2 || true
}

# --- setup ------------------------------------------------------------------

# CI machines are fresh: install whatever of nginx/wrk/curl is missing, and of any extra
# commands given as arguments (each one's Debian package has the same name, e.g. haproxy).
# shellcheck disable=SC2120  # the arguments are optional; drill.sh passes none
install_deps() {
    local missing=() sudo=() cmd
    for cmd in nginx wrk curl "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) && return 0
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
        sudo=(sudo)
    fi
    log "installing: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

build_shoal() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
    log "cargo build --release"
    (cd "$REPO" && cargo build --release >&2)
    [[ -x $SHOAL_BIN ]] || die "build finished but $SHOAL_BIN is missing"
}

# Creates the temp dir $TMP (named after $1) holding site/1k.bin: exactly 1024 bytes.
# The temp dir is made world-readable because nginx (started as root) serves files from
# worker processes running as nobody.
make_site() {
    local name=${1:-shoal-bench}
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
    chmod 755 "$TMP"
    mkdir -p "$TMP/site"
    head -c 1024 /dev/urandom > "$TMP/site/1k.bin"
    chmod 644 "$TMP/site/1k.bin"
    [[ $(stat -c %s "$TMP/site/1k.bin") == 1024 ]] || die "1k.bin is not 1024 bytes"
}

# Refuse to benchmark whatever else might already be listening on our port.
check_port_free() {
    local port=$1 rc=0
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" || rc=$?
    ((rc == 7)) || die "port $port is already in use (set another *_PORT)"
}

# --- nginx ------------------------------------------------------------------

# Writes $1/nginx.conf: a standalone nginx with its own prefix dir $1 (nothing touches /var),
# $4 workers (default 2), access log off, serving $TMP/site on 127.0.0.1:$2. $3 is extra
# "listen" parameters (e.g. "reuseport"; may be empty).
write_nginx_conf() {
    local dir=$1 port=$2 listen_opts=${3:-} workers=${4:-2}
    mkdir -p "$dir"
    cat > "$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 10240; }
http {
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port${listen_opts:+ $listen_opts};
        root $TMP/site;
    }
}
EOF
}

# Sets NGINX_ARGS to the command that runs the nginx of write_nginx_conf $1 in the
# foreground (daemon off), so that "${NGINX_ARGS[@]}" & makes $! the nginx master's PID.
# -e: avoid nginx opening its compiled-in /var/log error log before parsing.
# shellcheck disable=SC2034  # read by the sourcing script
NGINX_ARGS=()
# shellcheck disable=SC2034
nginx_args() { NGINX_ARGS=(nginx -c "$1/nginx.conf" -p "$1" -e "$1/error.log"); }

# --- wrk output -------------------------------------------------------------

# "N requests in 10.00s, ..." -> N (the requests wrk completed).
wrk_requests() { awk '/ requests in / { print $1 }' "$1"; }
# "Non-2xx or 3xx responses: N" (absent when there were none) -> N, else 0.
wrk_non2xx() { awk '/Non-2xx or 3xx responses:/ { n = $NF } END { print n + 0 }' "$1"; }
# "Socket errors: connect 0, read 1, write 0, timeout 2" -> 3 (0 when the line is absent).
wrk_sockerr() {
    awk '/Socket errors:/ { for (i = 3; i <= NF; i++) { f = $i; sub(/,$/, "", f); if (f ~ /^[0-9]+$/) s += f } }
         END { print s + 0 }' "$1"
}
