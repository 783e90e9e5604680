#!/usr/bin/env bash
# Soak: shoal under mixed load for a long while, reloaded every minute and recycled every few
# minutes; passes when its memory and descriptors stay flat and not one request failed.
#
# Usage: scripts/soak.sh [DURATION]      DURATION like 30m (default), 5m, 90s, 1h
#        nice scripts/soak.sh 3m         a short check (progress on stderr, summary on stdout)
#
# What runs (all on 127.0.0.1, every process started here is stopped by PID on exit):
#   upstreams  examples/legacy_app.rs (proxied GETs and uploads) and a WebSocket echo
#              (scripts/soak.py ws-upstream)
#   shoal      release build, WORKERS workers: /api/ -> app (prefix stripped), /ws/ -> the echo,
#              everything else from a site of 1 KiB, 64 KiB, 300 KiB and 16 MiB files;
#              header_timeout 5s, send_timeout 10s, max_body_bytes 1MiB, access log off
#   load       wrk on the static files (rotating paths), wrk on /api/users, wrk POSTing 8 KiB
#              to /api/users, and scripts/soak.py clients: WebSocket sessions, a checker that
#              compares every static, proxied and uploaded answer byte for byte, tricklers
#              (must get 408 and a close) and non-readers (must be cut by the send timeout)
#   actions    a HUP every HUP_EVERY s (the config is rewritten each time); every
#              RECYCLE_EVERY-th reload sets max_worker_age to 60% of HUP_EVERY, so each
#              worker is recycled by the supervisor once (the next reload sets it back to 0)
#   samples    every SAMPLE_EVERY s: RSS and open fds of the master and of every worker
#
# Output in OUT_DIR (default docs/soak/): soak-STAMP.csv (elapsed_s,process,slot,pid,rss_kib,
# fds), soak-STAMP-events.csv (reloads), soak-STAMP.svg (the plot), soak-STAMP.txt (summary).
#
# Passes (exit 0) when all of these hold:
#   - flat after warm-up: for the largest worker RSS, the sum of the workers' fds, and the
#     master's RSS and fds, the last third's maximum is at most 1.2 x the first third's
#     maximum plus a small slack (see soak.py judge);
#   - wrk: no non-2xx answer and no socket error in any of the three runs;
#   - every soak.py client round succeeded (and every kind ran at least once);
#   - the shoal log holds one "reloading" line per HUP, the expected "recycling (Old)" lines,
#     and no WARN or ERROR line; shoal exits 0 on SIGTERM at the end.
#
# Environment (optional): SOAK_PORT=18095 APP_PORT=18096 WS_PORT=18097 WORKERS=2 HUP_EVERY=60
#   RECYCLE_EVERY=5 SAMPLE_EVERY=10 WARMUP (default: the larger of 60 s and a sixth of the run)
#   WRK_CONNS=8 (per wrk) OUT_DIR SKIP_BUILD=1 KEEP_TMP=1 (keep configs and logs, print the dir)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOAK_PORT=${SOAK_PORT:-18095}
APP_PORT=${APP_PORT:-18096}
WS_PORT=${WS_PORT:-18097}
WORKERS=${WORKERS:-2}
HUP_EVERY=${HUP_EVERY:-60}
RECYCLE_EVERY=${RECYCLE_EVERY:-5}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
WRK_CONNS=${WRK_CONNS:-8}
OUT_DIR=${OUT_DIR:-$REPO/docs/soak}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
SHOAL_BIN=$REPO/target/release/shoal
APP_BIN=$REPO/target/release/examples/legacy_app
HEADER_TIMEOUT=5
SEND_TIMEOUT=10

LOG_TAG=soak
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

# "30m" -> 1800; plain numbers are seconds.
parse_duration() {
    local text=$1 n unit
    [[ $text =~ ^([0-9]+)(s|m|h)?$ ]] || die "bad duration '$text' (try 30m, 5m, 90s, 1h)"
    n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]:-s}
    case $unit in s) echo "$n" ;; m) echo $((n * 60)) ;; h) echo $((n * 3600)) ;; esac
}

DURATION_TEXT=${1:-30m}
SECS=$(parse_duration "$DURATION_TEXT")
((SECS >= 60)) || die "a soak shorter than a minute says nothing (got ${SECS}s)"
WARMUP=${WARMUP:-$((SECS / 6 > 60 ? SECS / 6 : 60))}
RECYCLE_AGE=$((HUP_EVERY * 3 / 5))

TMP=""
declare -A PID=()       # role -> PID of a process we started
MASTER=""

cleanup() {
    local role
    trap - EXIT INT TERM
    # The load first, then shoal, then its upstreams; all by PID.
    for role in wrk-static wrk-proxied wrk-upload clients shoal app ws; do
        [[ -n ${PID[$role]:-} ]] || continue
        stop_pid "$role" "${PID[$role]}"
    done
    if [[ -n $TMP ]]; then
        if ((KEEP_TMP)); then log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
}
trap cleanup EXIT INT TERM

for cmd in wrk curl python3; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is needed (apt-get install wrk curl python3)"
done
for port in "$SOAK_PORT" "$APP_PORT" "$WS_PORT"; do check_port_free "$port"; done

if ((SKIP_BUILD == 0)); then
    log "cargo build --release (shoal and examples/legacy_app)"
    (cd "$REPO" && cargo build --release --bin shoal --example legacy_app >&2)
fi
[[ -x $SHOAL_BIN && -x $APP_BIN ]] || die "missing $SHOAL_BIN or $APP_BIN"

make_site shoal-soak
head -c $((64 * 1024)) /dev/urandom > "$TMP/site/64k.bin"
head -c $((300 * 1024)) /dev/urandom > "$TMP/site/300k.bin"
head -c $((16 * 1024 * 1024)) /dev/urandom > "$TMP/site/16m.bin"

# Writes the config with max_worker_age $1 and swaps it in whole.
write_config() {
    cat > "$TMP/shoal.toml.new" <<EOF
workers = $WORKERS
pid_file = "$TMP/shoal.pid"
access_log = "off"

[supervisor]
max_worker_age = "$1"

[limits]
header_timeout = "${HEADER_TIMEOUT}s"
send_timeout = "${SEND_TIMEOUT}s"
max_body_bytes = "1MiB"
# The load holds a few dozen connections. The default 10000 needs about 20,320 open files
# per worker, more than some machines' hard limit (20,000 here), and shoal warns about that
# at every start and reload, which fails the soak.
max_connections = 1000

[[server]]
listen = ["127.0.0.1:$SOAK_PORT"]

  [[server.route]]
  prefix = "/api/"
  upstream = "app"
  strip_prefix = true

  [[server.route]]
  prefix = "/ws/"
  upstream = "ws"

  [[server.route]]
  prefix = "/"
  root = "site"

[upstream.app]
servers = ["127.0.0.1:$APP_PORT"]

[upstream.ws]
servers = ["127.0.0.1:$WS_PORT"]
EOF
    mv "$TMP/shoal.toml.new" "$TMP/shoal.toml"
}

# Polls until `curl URL` succeeds (10 s at most).
wait_http() {
    local url=$1 i
    for ((i = 0; i < 100; i++)); do
        curl -sf -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.1
    done
    return 1
}

wait_port() {
    local port=$1 i
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

log "starting the upstreams and shoal ($WORKERS workers) on 127.0.0.1:$SOAK_PORT"
"$APP_BIN" "127.0.0.1:$APP_PORT" > /dev/null 2> "$TMP/app.log" &
PID[app]=$!
python3 "$REPO/scripts/soak.py" ws-upstream "$WS_PORT" > "$TMP/ws.log" 2>&1 &
PID[ws]=$!
wait_http "http://127.0.0.1:$APP_PORT/health" || { show_log "$TMP/app.log"; die "legacy_app did not start"; }
wait_port "$WS_PORT" || { show_log "$TMP/ws.log"; die "the WebSocket upstream did not start"; }
write_config 0
"$SHOAL_BIN" "${SHOAL_AS[@]}" -c "$TMP/shoal.toml" > /dev/null 2> "$TMP/shoal.log" &
PID[shoal]=$!
MASTER=${PID[shoal]}
wait_http "http://127.0.0.1:$SOAK_PORT/1k.bin" || { show_log "$TMP/shoal.log"; die "shoal did not start"; }

cat > "$TMP/static.lua" <<'EOF'
local paths = {"/1k.bin", "/64k.bin", "/300k.bin"}
local i = 0
request = function()
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
end
EOF
cat > "$TMP/upload.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '"' .. string.rep("u", 8192) .. '"'
EOF

STAMP=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUT_DIR"
CSV=$OUT_DIR/soak-$STAMP.csv
EVENTS=$OUT_DIR/soak-$STAMP-events.csv
SVG=$OUT_DIR/soak-$STAMP.svg
SUMMARY=$OUT_DIR/soak-$STAMP.txt
echo "elapsed_s,process,slot,pid,rss_kib,fds" > "$CSV"
echo "elapsed_s,event" > "$EVENTS"

# One CSV row: elapsed, process, slot, pid (nothing if the process is gone).
sample_one() {
    local rss fds
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$4/status" 2>/dev/null) || return 0
    fds=$(find "/proc/$4/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    [[ -n $rss ]] && echo "$1,$2,$3,$4,$rss,$fds" >> "$CSV"
    return 0
}

sample() {
    local t=$1 pid comm
    sample_one "$t" master - "$MASTER"
    for pid in $(children_of "$MASTER"); do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        sample_one "$t" worker "${comm##* }" "$pid"
    done
}

log "load for ${SECS}s: wrk x3 ($WRK_CONNS connections each), WebSocket, checker and slow clients"
URL=http://127.0.0.1:$SOAK_PORT
wrk -t1 -c"$WRK_CONNS" -d"${SECS}s" --timeout 10s -s "$TMP/static.lua" "$URL/" > "$TMP/wrk-static.txt" 2>&1 &
PID[wrk-static]=$!
wrk -t1 -c"$WRK_CONNS" -d"${SECS}s" --timeout 10s "$URL/api/users" > "$TMP/wrk-proxied.txt" 2>&1 &
PID[wrk-proxied]=$!
wrk -t1 -c"$WRK_CONNS" -d"${SECS}s" --timeout 10s -s "$TMP/upload.lua" "$URL/api/users" > "$TMP/wrk-upload.txt" 2>&1 &
PID[wrk-upload]=$!
python3 "$REPO/scripts/soak.py" clients --port "$SOAK_PORT" --site "$TMP/site" --duration "$SECS" \
    --header-timeout "$HEADER_TIMEOUT" --send-timeout "$SEND_TIMEOUT" --out "$TMP/clients.json" \
    > "$TMP/clients.txt" 2>&1 &
PID[clients]=$!

SECONDS=0
next_sample=0
next_hup=$HUP_EVERY
hups=0
expected_recycles=0
while ((SECONDS < SECS)); do
    pid_alive "$MASTER" || { show_log "$TMP/shoal.log"; die "shoal's master died"; }
    if ((SECONDS >= next_sample)); then
        sample "$SECONDS"
        next_sample=$((next_sample + SAMPLE_EVERY))
    fi
    if ((SECONDS >= next_hup)); then
        hups=$((hups + 1))
        if ((hups % RECYCLE_EVERY == 0)); then
            write_config "${RECYCLE_AGE}s"
            echo "$SECONDS,recycling reload" >> "$EVENTS"
            # Its workers recycle at 90-100% of RECYCLE_AGE, if the run lasts that long.
            if ((SECS - SECONDS > RECYCLE_AGE + 5)); then
                expected_recycles=$((expected_recycles + WORKERS))
            fi
        else
            write_config 0
            echo "$SECONDS,reload" >> "$EVENTS"
        fi
        kill -HUP "$MASTER"
        log "t=${SECONDS}s: HUP $hups"
        next_hup=$((next_hup + HUP_EVERY))
    fi
    sleep 1
done
sample "$SECONDS"

log "load done; waiting for the clients' last rounds"
for role in wrk-static wrk-proxied wrk-upload clients; do
    rc=0
    wait "${PID[$role]}" || rc=$?
    unset "PID[$role]"
    [[ $role != clients ]] || clients_rc=$rc
done
kill -TERM "$MASTER"
shoal_rc=0
wait "$MASTER" || shoal_rc=$?
unset "PID[shoal]"

failures=()
{
    echo "# shoal soak $STAMP: ${SECS}s, $WORKERS workers, HUP every ${HUP_EVERY}s, recycle every $((HUP_EVERY * RECYCLE_EVERY))s"
    echo
    for run in static proxied upload; do
        file=$TMP/wrk-$run.txt
        requests=$(wrk_requests "$file")
        non2xx=$(wrk_non2xx "$file")
        sockerr=$(wrk_sockerr "$file")
        echo "wrk $run: ${requests:-0} requests, $non2xx non-2xx, $sockerr socket errors"
        if [[ -z $requests || $requests == 0 || $non2xx != 0 || $sockerr != 0 ]]; then
            failures+=("wrk $run: ${requests:-0} requests, $non2xx non-2xx, $sockerr socket errors")
        fi
    done
    echo
    cat "$TMP/clients.txt"
    ((clients_rc == 0)) || failures+=("soak.py clients: a round failed or a kind never ran (see above)")
    echo
    reloads=$(grep -c "reloading:" "$TMP/shoal.log" || true)
    recycles=$(grep -c "recycling (Old)" "$TMP/shoal.log" || true)
    echo "reloads: $hups HUPs sent, $reloads logged; recycles by age: $recycles (expected at least $expected_recycles)"
    ((reloads == hups)) || failures+=("$hups HUPs but $reloads 'reloading' lines")
    ((recycles >= expected_recycles)) || failures+=("$recycles recycles, expected at least $expected_recycles")
    problems=$(grep -E " (WARN|ERROR) " "$TMP/shoal.log" || true)
    if [[ -n $problems ]]; then
        echo "shoal logged warnings or errors:"
        echo "$problems" | head -n 20
        failures+=("shoal logged $(echo "$problems" | wc -l) WARN/ERROR lines")
    fi
    echo "shoal exit code on SIGTERM: $shoal_rc"
    ((shoal_rc == 0)) || failures+=("shoal exited $shoal_rc")
    echo
    echo "flatness after a ${WARMUP}s warm-up ($(($(wc -l < "$CSV") - 1)) samples in $(basename "$CSV")):"
    report_rc=0
    python3 "$REPO/scripts/soak.py" report --samples "$CSV" --events "$EVENTS" --warmup "$WARMUP" \
        --svg "$SVG" || report_rc=$?
    ((report_rc == 0)) || failures+=("RSS or fds not flat after warm-up")
    echo
    if ((${#failures[@]} == 0)); then
        echo "PASS"
    else
        echo "FAIL:"
        printf '  - %s\n' "${failures[@]}"
    fi
} | tee "$SUMMARY"
log "wrote $CSV, $SVG, $SUMMARY"
grep -qx PASS "$SUMMARY"
