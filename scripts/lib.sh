# Helpers shared by scripts/bench.sh (and its scripts/bench/*.sh) and scripts/drill.sh. Source
# it; do not run it.
#
# The sourcing script sets, before calling anything here:
#   LOG_TAG    prefix of progress lines ("bench", "drill")
#   REPO       repository root          (build_shoal)
#   SHOAL_BIN  shoal binary path        (build_shoal)
#   TMP        set by make_site; the sourcing script's cleanup removes it
# Everything here acts on PIDs it is given, never on process names.
# shellcheck shell=bash

# shoal will not keep its workers root unless told so, and the sites made here live in private
# temp dirs only their owner can read: as root, every shoal started here gets "-U root".
# shellcheck disable=SC2034 # used by the sourcing scripts
SHOAL_AS=()
if [[ $EUID == 0 ]]; then SHOAL_AS=(-U root); fi

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
# /proc/<pid>/stat, all threads included) plus cutime + cstime (16 and 17: the children each
# has reaped, such as workers replaced during a run), in clock ticks (getconf CLK_TCK). PIDs
# that are gone count 0. The fields are counted after the last ")" because field 2, the
# command name in parentheses, may itself contain spaces or parentheses.
cpu_ticks() {
    local pid line total=0
    local -a f
    for pid in "$@"; do
        { read -r line < "/proc/$pid/stat"; } 2>/dev/null || continue
        read -r -a f <<< "${line##*) }"   # f[0] is field 3 (state)
        total=$((total + f[11] + f[12] + f[13] + f[14]))
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

# --- time and waiting -------------------------------------------------------

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# Sleep until the absolute time $1 (microseconds since the epoch); no-op if it has passed.
sleep_until_us() {
    local delta=$(($1 - $(now_us)))
    ((delta > 0)) || return 0
    sleep "$((delta / 1000000)).$(printf '%06d' $((delta % 1000000)))"
}

# wait_for SECONDS CMD...: poll CMD every 50 ms until it succeeds; 1 if it never did.
wait_for() {
    local deadline=$(($(now_us) + $1 * 1000000))
    shift
    while (($(now_us) < deadline)); do
        "$@" && return 0
        sleep 0.05
    done
    "$@"
}

# Log files: log_mark FILE is its line count now; log_count_since FILE MARK PATTERN counts the
# lines after MARK that contain PATTERN; log_has_since FILE MARK PATTERN [N] is true once at
# least N (default 1) such lines exist.
log_mark() { wc -l < "$1"; }
log_count_since() { tail -n +"$(($2 + 1))" "$1" | grep -c -- "$3" || true; }
log_has_since() { (($(log_count_since "$1" "$2" "$3") >= ${4:-1})); }

# workers_settled MASTER COUNT [PID...]: exactly COUNT children, none of the given PIDs.
workers_settled() {
    local master=$1 count=$2 kids k p
    shift 2
    mapfile -t kids < <(children_of "$master")
    ((${#kids[@]} == count)) || return 1
    for p in "$@"; do
        for k in "${kids[@]}"; do [[ $k == "$p" ]] && return 1; done
    done
    return 0
}

# --- reloads ----------------------------------------------------------------
# Each sends one HUP and waits (bounded) until the reload is over: 0 when it is, 1 when a wait
# ran out (the caller decides whether that is fatal).

# reload_shoal MASTER LOG WORKERS: shoal logs "reload complete" to LOG (its stderr) once every
# new worker serves; then the old workers must be gone and exactly WORKERS remain.
reload_shoal() {
    local master=$1 logf=$2 workers=$3 mark old
    mark=$(log_mark "$logf")
    mapfile -t old < <(children_of "$master")
    kill -HUP "$master"
    wait_for 10 log_has_since "$logf" "$mark" 'reload complete' &&
        wait_for 12 workers_settled "$master" "$workers" "${old[@]}"
}

# reload_nginx MASTER WORKERS: nginx logs nothing useful; done when none of the old workers is
# left and exactly WORKERS new ones run.
reload_nginx() {
    local master=$1 workers=$2 old
    mapfile -t old < <(children_of "$master")
    kill -HUP "$master"
    wait_for 12 workers_settled "$master" "$workers" "${old[@]}"
}

# --- setup ------------------------------------------------------------------

# CI machines are fresh: install whatever of nginx/wrk/curl is missing, and of any extra
# commands given as arguments: "haproxy" (a command and its Debian package of the same name)
# or "ab:apache2-utils" (command:package).
# shellcheck disable=SC2120  # the arguments are optional; drill.sh passes none
install_deps() {
    local missing=() sudo=() spec
    for spec in nginx wrk curl "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
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
# "listen" parameters (e.g. "reuseport"; may be empty). $5 is worker_connections (default
# 10240; worker_rlimit_nofile is set 1024 above it), $6 keepalive_timeout (default 75s, nginx's),
# $7 more lines for the server block (e.g. the ssl_* directives of scripts/bench/tls_servers.sh).
write_nginx_conf() {
    local dir=$1 port=$2 listen_opts=${3:-} workers=${4:-2} conns=${5:-10240} idle=${6:-75s} more=${7:-} nl=$'\n'
    mkdir -p "$dir"
    cat > "$dir/nginx.conf" <<EOF
worker_processes $workers;
worker_rlimit_nofile $((conns + 1024));
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections $conns; }
http {
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout $idle;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port${listen_opts:+ $listen_opts};
        root $TMP/site;${more:+$nl$more}
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
# "50%  1.23ms" / "99%  2.34ms" in the Latency Distribution block of `wrk --latency` ($2 is
# "50%", "99%"...), in ms; "?" when absent or in a unit we do not know.
wrk_latency_ms() {
    awk -v pct="$2" '$1 == pct {
        v = $2; u = v; sub(/^[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (m < 0) { print "?"; exit } ; printf "%.3f\n", v * m; found = 1 }
        END { if (!found) print "?" }' "$1"
}

# --- wrk shim ---------------------------------------------------------------

# compile_shim DIR NAME: compiles DIR/NAME.c into the LD_PRELOAD library DIR/NAME.so and prints
# its path; prints nothing (the compiler's errors go to stderr) when that fails.
compile_shim() {
    local dir=$1 name=$2
    if cc -O2 -Wall -shared -fPIC -o "$dir/$name.so" "$dir/$name.c" -ldl 2> "$dir/$name.err"; then
        echo "$dir/$name.so"
    else
        cat "$dir/$name.err" >&2
    fi
}

# build_spy DIR: builds DIR/wrkspy.so, an LD_PRELOAD shim for wrk, and sets SPY to its path
# (empty when there is no C compiler). It wraps read/write/connect and appends
# "time_us kind fd errno" to $WRKSPY_LOG for each socket error wrk counts (kind read, write,
# connect), each 4xx/5xx status line (status) and each end of file on a socket (eof: the
# server closed a connection while wrk waited for a response; Debian's wrk 4.1.0 counts that
# as a read error, newer wrk reconnects without counting it). Nothing is logged on the normal
# path, so the load is unchanged.
# shellcheck disable=SC2034  # SPY is read by the sourcing script
SPY=""
# shellcheck disable=SC2034
build_spy() {
    local dir=$1
    SPY=""
    command -v cc >/dev/null 2>&1 || { log "WARNING: no cc; wrk errors will not be timestamped"; return 0; }
    cat > "$dir/wrkspy.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int out = -1;

__attribute__((constructor)) static void init(void) {
    real_read = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    const char *path = getenv("WRKSPY_LOG");
    if (path) out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static void note(const char *kind, int fd, int err) {
    struct timespec ts;
    char line[96];
    clock_gettime(CLOCK_REALTIME, &ts);
    int n = snprintf(line, sizeof line, "%lld%06ld %s %d %d\n", (long long)ts.tv_sec,
                     ts.tv_nsec / 1000, kind, fd, err);
    if (out >= 0 && n > 0) real_write(out, line, (size_t)n);
}

static int is_socket(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

ssize_t read(int fd, void *buf, size_t len) {
    ssize_t r = real_read(fd, buf, len);
    if (r > 0) {
        const char *b = buf;
        if (r >= 10 && memcmp(b, "HTTP/1.", 7) == 0 && b[8] == ' ' && (b[9] == '4' || b[9] == '5'))
            note("status", fd, 0);
    } else if (fd != out) {
        int e = errno;
        if (is_socket(fd)) note(r == 0 ? "eof" : "read", fd, r == 0 ? 0 : e);
        errno = e;
    }
    return r;
}

ssize_t write(int fd, const void *buf, size_t len) {
    ssize_t r = real_write(fd, buf, len);
    if (r < 0 && errno != EAGAIN && fd != out) {
        int e = errno;
        note("write", fd, e);
        errno = e;
    }
    return r;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    int r = real_connect(fd, addr, len);
    if (r < 0 && errno != EINPROGRESS) {
        int e = errno;
        note("connect", fd, e);
        errno = e;
    }
    return r;
}
EOF
    SPY=$(compile_shim "$dir" wrkspy)
    [[ -n $SPY ]] || log "WARNING: the wrk shim did not compile; wrk errors will not be timestamped"
}
