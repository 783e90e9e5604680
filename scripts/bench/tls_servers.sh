# HTTPS servers, shared by scripts/bench.sh (S1-tls, S2-tls, S6-tls) and scripts/bench/tls.sh:
# the one certificate every server of a run uses, shoal, nginx and HAProxy started over TLS
# with it, and the shim that makes wrk do full handshakes. Sourced after scripts/lib.sh and
# scripts/bench/servers.sh (launch, start_shoal, start_nginx, PID, PORT, SCHEME, TARGETS);
# every process is started through launch and stopped by its PID.
# shellcheck shell=bash
# shellcheck disable=SC2034  # SCHEME and TLS_KIND are read by servers.sh and https.sh

TLS_DIR=""   # set by make_tls_files: cert.pem, key.pem and bundle.pem (both in one file)
TLS_KIND=""  # set by make_tls_files: its key, "ECDSA P-256" or "RSA 2048"
NO_RESUME="" # set by build_no_resume: the path of no_resume.so, empty without a C compiler

# new_certificate KIND CERT KEY: a self-signed certificate for localhost (valid 2 days) in
# CERT and its unencrypted private key in KEY; KIND ec (ECDSA P-256) or rsa (RSA 2048).
new_certificate() {
    local kind=$1 cert=$2 key=$3
    local -a newkey
    case $kind in
        ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
        rsa) newkey=(-newkey rsa:2048) ;;
        *) die "the key kind is ec or rsa, not '$kind'" ;;
    esac
    if ! openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost \
        -keyout "$key" -out "$cert" 2> "$cert.log"; then
        cat "$cert.log" >&2
        die "openssl could not make a certificate"
    fi
    rm -f "$cert.log"
}

# make_tls_files DIR KIND: the run's certificate (new_certificate KIND) in DIR: cert.pem,
# key.pem, and bundle.pem with both, as HAProxy's "crt" takes them. Sets TLS_DIR.
make_tls_files() {
    local dir=$1
    mkdir -p "$dir"
    new_certificate "$2" "$dir/cert.pem" "$dir/key.pem"
    (umask 077 && cat "$dir/cert.pem" "$dir/key.pem" > "$dir/bundle.pem")
    TLS_DIR=$dir
    if [[ $2 == ec ]]; then TLS_KIND="ECDSA P-256"; else TLS_KIND="RSA 2048"; fi
}

# tls_session_text PORT: protocol, cipher suite and key exchange group that OpenSSL's client
# (openssl s_client, with the same defaults as wrk's) negotiates with the server on PORT.
tls_session_text() {
    openssl s_client -connect "127.0.0.1:$1" -servername localhost -brief < /dev/null 2>&1 |
        awk -F': *' '/^Protocol version/ { p = $2 } /^Ciphersuite/ { c = $2 }
            /^(Negotiated TLS1.3 group|Server Temp Key)/ { g = $2; sub(/,.*/, "", g) }
            END { print (p == "" ? "no TLS session" : p " " c (g == "" ? "" : " " g)) }'
}

# --- servers ----------------------------------------------------------------
# All three serve $TMP/site/1k.bin over HTTPS with the certificate of make_tls_files, WORKERS
# workers (HAProxy: threads), access logs off and 300 s of keep-alive idleness; shoal and nginx
# allow CONN_CAP connections per worker and 100,000 requests per connection, as the static
# servers of servers.sh (HAProxy sets no limit on requests per connection).

# start_shoal_tls NAME PORT: shoal with S1's static config and a tls table in its [[server]].
start_shoal_tls() {
    start_shoal "$1" "$2" tls
    SCHEME["$1"]=https
}

# start_nginx_tls NAME PORT: nginx with S1's static config (sendfile, which nginx does not use
# for TLS connections without kTLS), listen ... ssl reuseport, and TLS 1.2 and 1.3 only.
start_nginx_tls() {
    start_nginx "$1" "$2" "ssl reuseport" "        ssl_certificate $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;"
    SCHEME["$1"]=https
}

# start_haproxy_return NAME PORT [MAXCONN]: HAProxy in the foreground (-db, one process,
# WORKERS threads) terminating TLS and answering every request with $TMP/site/1k.bin from
# memory: "http-request return ... file" reads the file once at start-up. HAProxy serves no
# files; this is the cost of TLS and HTTP with nothing behind them, a floor-like reference.
# MAXCONN (default 4096, as S4's HAProxy) caps its connections: HAProxy wants two descriptors
# per connection at start-up and refuses to start when the hard open-files limit is lower.
start_haproxy_return() {
    local name=$1 port=$2 maxconn=${3:-4096} cfg=$TMP/$1.cfg
    check_port_free "$port"
    cat > "$cfg" <<EOF
global
    nbthread $WORKERS
    maxconn $maxconn
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    maxconn $maxconn
    timeout client 300s
    timeout http-keep-alive 300s
    option http-keep-alive

frontend fe
    bind 127.0.0.1:$port ssl crt $TLS_DIR/bundle.pem
    http-request return status 200 content-type application/octet-stream file $TMP/site/1k.bin
EOF
    haproxy -c -f "$cfg" > "$TMP/$name.check" 2>&1 || { cat "$TMP/$name.check" >&2; die "haproxy rejected $cfg"; }
    launch "$name" "$port" haproxy -f "$cfg" -db
    SCHEME["$name"]=https
    TARGETS+=("$name")
}

# --- full handshakes --------------------------------------------------------
# wrk (4.1.0) keeps one SSL object per connection slot and reconnects with SSL_clear, which
# keeps the session: with "Connection: close" every connection after a slot's first resumes
# its session (TLS 1.3: a PSK from the server's ticket, with an X25519 exchange, and no
# certificate or signature), and all three servers accept that. no_resume.so, preloaded into
# wrk, drops the session after each SSL_clear, so that every connection is a full handshake.

# build_no_resume DIR: builds DIR/no_resume.so and sets NO_RESUME to its path (empty when there
# is no C compiler or it fails).
build_no_resume() {
    local dir=$1
    NO_RESUME=""
    command -v cc >/dev/null 2>&1 || { log "WARNING: no cc; wrk cannot be made to do full handshakes"; return 0; }
    cat > "$dir/no_resume.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

/* libssl's SSL_clear, then SSL_set_session(ssl, NULL): the next SSL_connect offers no session. */
int SSL_clear(void *ssl) {
    static int (*real_clear)(void *);
    static int (*set_session)(void *, void *);
    if (!real_clear) {
        real_clear = (int (*)(void *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(void *, void *))dlsym(RTLD_NEXT, "SSL_set_session");
    }
    int r = real_clear(ssl);
    if (r == 1 && set_session) set_session(ssl, NULL);
    return r;
}
EOF
    NO_RESUME=$(compile_shim "$dir" no_resume)
    [[ -n $NO_RESUME ]] || log "WARNING: no_resume.so did not compile; wrk cannot be made to do full handshakes"
}
