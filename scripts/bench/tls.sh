#!/usr/bin/env bash
# HTTPS side by side, shoal against nginx (OpenSSL), one certificate for both: S1-tls (1 KiB
# static file over keep-alive HTTPS) and S2-tls (a new TLS connection per request, full
# handshakes: wrk with Connection: close), both servers in every round, alternating. Prints
# per scenario and server the medians of the server's CPU µs per request (its process tree's
# utime + stime over the run, divided by the requests wrk completed), req/s and p99.
#
# Last, a renewal drill: S1-tls's load on shoal while its certificate is replaced (new files
# moved over the old ones, as certbot does) and the master reloaded RENEWALS times; it must
# fail no request.
#
# Usage: scripts/bench/tls.sh [SHOAL_BIN]   (default: target/release/shoal, built if missing)
# Environment: DURATION=8, ROUNDS=3, WORKERS=2, WRK_CONNS=64, KEY=ec (or rsa: RSA 2048),
#   RENEWALS=3, TLS_PORT=18190 (uses it and the next).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHOAL_BIN=${1:-$REPO/target/release/shoal}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
WRK_CONNS=${WRK_CONNS:-64}
KEY=${KEY:-ec}
RENEWALS=${RENEWALS:-3}
BASE_PORT=${TLS_PORT:-18190}
LOG_TAG=tls-bench
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

for tool in nginx wrk openssl; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx wrk openssl >&2; break; }
done
[[ -x $SHOAL_BIN ]] || (cd "$REPO" && cargo build --release >&2)
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-tls-bench.XXXXXX")
declare -A PID=() PORT=([shoal]=$BASE_PORT [nginx]=$((BASE_PORT + 1)))
cleanup() {
    local name
    for name in "${!PID[@]}"; do stop_pid "$name" "${PID[$name]}"; done
    rm -rf -- "$TMP"
}
trap cleanup EXIT

mkdir "$TMP/site"
head -c 1024 /dev/urandom > "$TMP/site/1k.bin"
case $KEY in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) die "KEY is ec or rsa" ;;
esac
# new_certificate NAME: NAME.pem and NAME.key in $TMP, self-signed for localhost.
new_certificate() {
    openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost \
        -keyout "$TMP/$1.key" -out "$TMP/$1.pem" 2> /dev/null
}
new_certificate cert
mv "$TMP/cert.key" "$TMP/key.pem"

cat > "$TMP/shoal.toml" <<CONF
workers = $WORKERS
access_log = "off"
[limits]
max_requests_per_connection = 100000
[[server]]
listen = ["127.0.0.1:${PORT[shoal]}"]
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
  [[server.route]]
  prefix = "/"
  root = "$TMP/site"
CONF
mkdir "$TMP/nginx"
cat > "$TMP/nginx/nginx.conf" <<CONF
worker_processes $WORKERS;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 10240; }
http {
    access_log off;
    keepalive_requests 100000;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl reuseport;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        root $TMP/site;
    }
}
CONF

"$SHOAL_BIN" "${SHOAL_AS[@]}" -c "$TMP/shoal.toml" > "$TMP/shoal.out" 2>&1 &
PID[shoal]=$!
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" -e "$TMP/nginx/error.log" > "$TMP/nginx.out" 2>&1 &
PID[nginx]=$!
for name in shoal nginx; do
    wait_for 10 curl -sk --max-time 1 -o /dev/null "https://127.0.0.1:${PORT[$name]}/1k.bin" ||
        { show_log "$TMP/$name.out"; die "$name does not answer over HTTPS"; }
done

results=$TMP/results.tsv
# run SCENARIO NAME: one wrk run; appends scenario, name, cpu µs/req, req/s, p99 ms.
run() {
    local scen=$1 name=$2 out=$TMP/$1-$2.wrk before after requests rps p99
    local -a close=()
    [[ $scen == s2-tls ]] && close=(-H "Connection: close")
    before=$(tree_cpu_sample "${PID[$name]}")
    wrk -t1 -c"$WRK_CONNS" -d"${DURATION}s" --latency "${close[@]}" "https://127.0.0.1:${PORT[$name]}/1k.bin" > "$out" 2>&1
    after=$(tree_cpu_sample "${PID[$name]}")
    requests=$(awk '/requests in/ { print $1 }' "$out")
    rps=$(awk '$1 == "Requests/sec:" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } print v }' "$out")
    [[ $requests =~ ^[0-9]+$ && $requests -gt 0 ]] || { cat "$out" >&2; die "wrk completed nothing on $name"; }
    local cpu
    cpu=$(awk -v t="$((${after%% *} - ${before%% *}))" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.3f", t * 1000000 / hz / n }')
    log "$scen $name: $rps req/s, p99 $p99 ms, CPU $cpu µs/req"
    printf '%s\t%s\t%s\t%s\t%s\n' "$scen" "$name" "$cpu" "$rps" "$p99" >> "$results"
}

for ((round = 1; round <= ROUNDS; round++)); do
    for scen in s1-tls s2-tls; do
        for name in shoal nginx; do run "$scen" "$name"; done
    done
done

echo "| scenario | server | CPU µs/req (median of $ROUNDS) | req/s | p99 ms |"
echo "|---|---|---:|---:|---:|"
for scen in s1-tls s2-tls; do
    for name in shoal nginx; do
        awk -F'\t' -v s="$scen" -v n="$name" '$1 == s && $2 == n { c[++k] = $3; r[k] = $4; p[k] = $5 }
            function median(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } return a[int((n + 1) / 2)] }
            END { printf "| %s | %s | %s | %s | %s |\n", s, n, median(c, k), median(r, k), median(p, k) }' "$results"
    done
done
echo
echo "KEY=$KEY WORKERS=$WORKERS wrk -t1 -c$WRK_CONNS -d${DURATION}s; $(date -u '+%Y-%m-%d %H:%M UTC'); $(nginx -v 2>&1)"

# The renewal drill.
drill=$TMP/renewal.wrk
wrk -t1 -c"$WRK_CONNS" -d"$((RENEWALS * 3 + 4))s" "https://127.0.0.1:${PORT[shoal]}/1k.bin" > "$drill" 2>&1 &
PID[wrk]=$!
for ((i = 1; i <= RENEWALS; i++)); do
    sleep 3
    new_certificate renewed
    mv "$TMP/renewed.pem" "$TMP/cert.pem"
    mv "$TMP/renewed.key" "$TMP/key.pem"
    kill -HUP "${PID[shoal]}"
done
wait "${PID[wrk]}"
unset 'PID[wrk]'
reloads=$(grep -c "reload complete" "$TMP/shoal.out" || true)
errors=$(awk '/Socket errors/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i } /Non-2xx/ { s += $NF } END { print s + 0 }' "$drill")
echo "renewal drill: $(awk '/requests in/ { print $1 }' "$drill") requests over HTTPS, $RENEWALS certificate renewals ($reloads reloads completed), $errors failed"
[[ $errors == 0 && $reloads == "$RENEWALS" ]] || { cat "$drill" >&2; die "the renewal drill failed requests or reloads"; }
