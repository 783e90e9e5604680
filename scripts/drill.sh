#!/usr/bin/env bash
# Operations drill: shoal under wrk load while its master is reloaded, upgraded and scaled and
# its workers are killed and recycled; then nginx under the same load with the reloads alone.
#
# Usage: scripts/drill.sh            (from anywhere; writes the report to stdout)
#        scripts/drill.sh > drill.md (progress goes to stderr)
#
# For each target, one `wrk -t1 -c64 -d${DURATION}s --latency http://127.0.0.1:PORT/1k.bin` runs
# while a driver spreads the actions over the run; after each action it waits (bounded) until
# the server is back in a steady state (e.g. the full worker count, none of the old pids).
#   shoal:            20 HUP reloads, 5 kill -9 of a random worker, 2 RSS recycles (HUP to
#                     max_worker_rss = "1MiB", two `recycling (Bloated` log lines, HUP back to
#                     "0"), 1 USR2 binary upgrade, 2 TTOU/TTIN pairs
#   nginx, nginx-reuseport:  20 HUP reloads
# wrk runs with a small LD_PRELOAD shim (compiled here with cc) that timestamps every socket
# error wrk counts (a read error is a reset or an end of file while a request is outstanding)
# and every 4xx/5xx; the report charges each to the action in progress (or settled less than
# 1 s before), so an error can be pinned on the reload, kill or upgrade that caused it.
#
# Environment (all optional):
#   DURATION=30        seconds of each wrk run
#   SHOAL_PORT=18090   NGINX_PORT=18091 (both nginx runs use it, one after the other)
#   SKIP_NGINX=1       run shoal only          SKIP_REUSEPORT=1  leave out nginx-reuseport
#   SKIP_BUILD=1       use the existing binary without cargo build
#   SHOAL_BIN=path     shoal binary (default: target/release/shoal; the drill runs a copy, so
#                      a rebuild during the drill does not change what USR2 starts)
#   HUPS=20 KILLS=5 RECYCLES=2 UPGRADES=1 SCALES=2
#                      how many of each action; set some to 0 to see which action causes
#                      errors, e.g. HUPS=20 KILLS=0 RECYCLES=0 UPGRADES=0 SCALES=0 SKIP_NGINX=1
#   WORKERS=2          workers (shoal) and worker_processes (nginx)
#   KEEP_TMP=1         keep the temp dir (configs, logs, wrk output, event files) and print it
#
# Needs root (or sudo) only if nginx/wrk/curl must be installed with apt-get.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-30}
SHOAL_PORT=${SHOAL_PORT:-18090}
NGINX_PORT=${NGINX_PORT:-18091}
SKIP_NGINX=${SKIP_NGINX:-0}
SKIP_REUSEPORT=${SKIP_REUSEPORT:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
SHOAL_BIN=${SHOAL_BIN:-$REPO/target/release/shoal}
HUPS=${HUPS:-20}
KILLS=${KILLS:-5}
RECYCLES=${RECYCLES:-2}
UPGRADES=${UPGRADES:-1}
SCALES=${SCALES:-2}
WORKERS=${WORKERS:-2}
WRK_THREADS=1
WRK_CONNS=64

LOG_TAG=drill
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

TMP=""
declare -A PID=()      # role -> PID of a process we started (or a shoal master we adopted)
MASTER=""              # the server master the actions signal (changes on a shoal upgrade)
WRK_PID=""
SHOAL_LOG=""           # shoal's stderr (both masters of an upgrade write to it)
declare -A ACTED=()     # action -> times performed in the current run
declare -A SLOW=()     # action -> times its wait for a steady state ran out
KILLED=""              # worker pids we sent SIGKILL (their death is expected)
RECYCLED=0             # "recycling (Bloated" lines seen during the RSS recycles
UPGRADE_NOTE=""
TARGETS=()
declare -A R_REQ=() R_NON2XX=() R_SOCK=() R_ACTIONS=() R_CLOSES=()   # target -> report values

# --- process control --------------------------------------------------------

cleanup() {
    local role
    trap - EXIT INT TERM
    # The load first, then the servers; all by PID.
    for role in wrk "${!PID[@]}"; do
        [[ -n ${PID[$role]:-} ]] || continue
        stop_pid "$role" "${PID[$role]}"
        unset "PID[$role]"
    done
    if [[ ${KEEP_TMP:-0} == 1 && -n $TMP ]]; then
        log "kept $TMP"
    elif [[ -n $TMP && -d $TMP ]]; then
        rm -rf -- "$TMP"
    fi
}

# --- setup ------------------------------------------------------------------

# The shoal config; $1 is max_worker_rss. Written atomically so a HUP never reads half a file.
write_shoal_conf() {
    cat > "$TMP/shoal.toml.new" <<EOF
workers = $WORKERS
pid_file = "$TMP/shoal.pid"
access_log = "off"
[supervisor]
heartbeat_interval = "200ms"
heartbeat_timeout = "2s"
max_worker_rss = "$1"
[[server]]
listen = ["127.0.0.1:$SHOAL_PORT"]
  [[server.route]]
  prefix = "/"
  root = "$TMP/site"
EOF
    mv -f "$TMP/shoal.toml.new" "$TMP/shoal.toml"
}

# Poll until GET /1k.bin answers 200 with $WORKERS workers; give up after 10 s.
wait_ready() {
    local name=$1 port=$2 errlog=$3 url="http://127.0.0.1:$2/1k.bin" code deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        pid_alive "$MASTER" || { show_log "$errlog"; die "$name exited during startup"; }
        code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)
        if [[ $code == 200 ]] && workers_settled "$MASTER" "$WORKERS"; then
            log "$name ready on $url (master $MASTER)"
            return 0
        fi
        sleep 0.1
    done
    show_log "$errlog"
    die "$name not ready within 10 s (last HTTP code: ${code:-none}) at $url"
}

start_shoal() {
    check_port_free "$SHOAL_PORT"
    mkdir -p "$TMP/bin"
    cp "$SHOAL_BIN" "$TMP/bin/shoal"
    write_shoal_conf 0
    SHOAL_LOG=$TMP/shoal.log
    "$TMP/bin/shoal" "${SHOAL_AS[@]}" -c "$TMP/shoal.toml" > "$TMP/shoal.out" 2> "$SHOAL_LOG" &
    PID[shoal]=$!
    MASTER=$!
    wait_ready shoal "$SHOAL_PORT" "$SHOAL_LOG"
}

start_nginx() {
    local name=$1 listen_opts=${2:-} dir=$TMP/$1
    check_port_free "$NGINX_PORT"
    write_nginx_conf "$dir" "$NGINX_PORT" "$listen_opts" "$WORKERS"
    nginx_args "$dir"
    "${NGINX_ARGS[@]}" > "$dir/stdout.log" 2>&1 &
    PID[$name]=$!
    MASTER=$!
    wait_ready "$name" "$NGINX_PORT" "$dir/error.log"
}

# --- wrk spy ----------------------------------------------------------------

# --- actions ----------------------------------------------------------------
# Each takes the steady state as given, acts, and waits (bounded) for the steady state again.
# It returns 1 when a wait ran out; the drill goes on regardless.

act_hup() { reload_shoal "$MASTER" "$SHOAL_LOG" "$WORKERS"; }

act_kill() {
    local kids victim
    mapfile -t kids < <(children_of "$MASTER")
    ((${#kids[@]} > 0)) || return 1
    victim=${kids[RANDOM % ${#kids[@]}]}
    kill -KILL "$victim"
    KILLED+=" $victim"
    EVENT_DETAIL="pid $victim"
    wait_for 10 workers_settled "$MASTER" "$WORKERS" "$victim"
}

# HUP to max_worker_rss = "1MiB", two recycles, HUP back to "0".
act_recycle() {
    local mark back old rc=0 n
    mark=$(log_mark "$SHOAL_LOG")
    write_shoal_conf 1MiB
    kill -HUP "$MASTER"
    wait_for 10 log_has_since "$SHOAL_LOG" "$mark" 'reload complete' || rc=1
    wait_for 15 log_has_since "$SHOAL_LOG" "$mark" 'recycling (Bloated' 2 || rc=1
    write_shoal_conf 0
    back=$(log_mark "$SHOAL_LOG")
    mapfile -t old < <(children_of "$MASTER")
    kill -HUP "$MASTER"
    wait_for 10 log_has_since "$SHOAL_LOG" "$back" 'reload complete' || rc=1
    wait_for 12 workers_settled "$MASTER" "$WORKERS" "${old[@]}" || rc=1
    n=$(log_count_since "$SHOAL_LOG" "$mark" 'recycling (Bloated')
    RECYCLED=$((RECYCLED + n))
    EVENT_DETAIL="$n recycles"
    return $rc
}

# The pid file names a live master other than $1, running our copy of the binary.
new_master_ready() {
    local pid
    pid=$(cat "$TMP/shoal.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ && $pid != "$1" ]] && pid_alive "$pid" &&
        [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$TMP/bin/shoal" ]]
}

act_upgrade() {
    local mark prev=$MASTER new rc=0 status=0
    mark=$(log_mark "$SHOAL_LOG")
    kill -USR2 "$prev"
    if ! wait_for 35 new_master_ready "$prev"; then
        UPGRADE_NOTE="no new master wrote the pid file within 35 s"
        return 1
    fi
    new=$(cat "$TMP/shoal.pid")
    # From here on the new master is the one to signal (and to stop at the end).
    MASTER=$new
    PID[shoal]=$new
    PID[shoal-old]=$prev
    EVENT_DETAIL="master $prev -> $new"
    wait_for 5 log_has_since "$SHOAL_LOG" "$mark" "new master (pid $new) is serving" || rc=1
    wait_for 12 workers_settled "$new" "$WORKERS" || rc=1
    # The old master is our child: it drains its workers and exits by itself.
    if wait_for 15 eval "! pid_alive $prev"; then
        wait "$prev" 2>/dev/null || status=$?
        unset "PID[shoal-old]"
        UPGRADE_NOTE="old master $prev exited with status $status; new master $new serves"
    else
        UPGRADE_NOTE="old master $prev still running 15 s after the upgrade"
        rc=1
    fi
    return $rc
}

# TTOU, wait for the slot to go away, TTIN, wait for the full count.
act_scale() {
    local mark
    mark=$(log_mark "$SHOAL_LOG")
    kill -TTOU "$MASTER"
    wait_for 12 log_has_since "$SHOAL_LOG" "$mark" 'removed; its sockets are closed' &&
        wait_for 5 workers_settled "$MASTER" $((WORKERS - 1)) || return 1
    mark=$(log_mark "$SHOAL_LOG")
    kill -TTIN "$MASTER"
    wait_for 5 log_has_since "$SHOAL_LOG" "$mark" 'scaling up' &&
        wait_for 10 workers_settled "$MASTER" "$WORKERS"
}

act_nginx_hup() { reload_nginx "$MASTER" "$WORKERS"; }

# "offset-in-seconds action" lines: each action's occurrences evenly spread over 8%–82% of the
# run, each kind slightly shifted so that kinds do not coincide.
schedule() {
    awk -v d="$DURATION" -v spec="$*" 'BEGIN {
        n = split(spec, kinds, " "); lo = 0.08 * d; hi = 0.82 * d
        for (i = 1; i <= n; i++) {
            split(kinds[i], kv, ":")
            for (k = 0; k < kv[2]; k++)
                printf "%.3f %s\n", lo + (hi - lo) * (k + 0.5) / kv[2] + (i - 1) * 0.011 * d, kv[1]
        }
    }' | sort -n
}

# --- one run ----------------------------------------------------------------

# run_drill NAME PORT SPEC...: wrk against PORT while the actions of SPEC ("hup:20 kill:5")
# run on schedule. Events go to $TMP/NAME.events: start_us end_us action ok detail.
run_drill() {
    local name=$1 port=$2 out=$TMP/wrk-$1.txt t0 wrk_end line at what start ok rc
    shift 2
    local -a plan
    mapfile -t plan < <(schedule "$@")
    ACTED=() SLOW=()
    : > "$TMP/$name.events"
    : > "$TMP/$name.spy"
    log "$name: wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s --latency http://127.0.0.1:$port/1k.bin; ${#plan[@]} actions"
    t0=$(now_us)
    LD_PRELOAD=$SPY WRKSPY_LOG=$TMP/$name.spy \
        wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/1k.bin" > "$out" 2>&1 &
    WRK_PID=$!
    PID[wrk]=$WRK_PID
    wrk_end=$((t0 + DURATION * 1000000))
    for line in "${plan[@]}"; do
        read -r at what <<< "$line"
        sleep_until_us $((t0 + 10#${at/./} * 1000))
        if ! pid_alive "$WRK_PID" || (($(now_us) > wrk_end - 500000)); then
            log "WARNING: wrk has (nearly) finished; $what and the actions after it are skipped"
            break
        fi
        pid_alive "$MASTER" || die "$name master (pid $MASTER) is gone"
        start=$(now_us) EVENT_DETAIL="" ok=1 rc=0
        "act_$what" || rc=$?
        if ((rc != 0)); then
            ok=0
            SLOW[$what]=$((${SLOW[$what]:-0} + 1))
            log "WARNING: $what at +$(((start - t0) / 1000)) ms: no steady state within the bound"
        fi
        ACTED[$what]=$((${ACTED[$what]:-0} + 1))
        printf '%s %s %s %s %s\n' "$start" "$(now_us)" "$what" "$ok" "${EVENT_DETAIL:--}" >> "$TMP/$name.events"
        log "  +$(((start - t0) / 1000)) ms $what${EVENT_DETAIL:+ ($EVENT_DETAIL)} took $((($(now_us) - start) / 1000)) ms"
    done
    if ! wait_for $((DURATION + 15)) eval "! pid_alive $WRK_PID"; then
        stop_pid wrk "$WRK_PID"
        die "wrk did not finish within $((DURATION + 15)) s"
    fi
    wait "$WRK_PID" || { cat "$out" >&2; die "wrk failed on $name"; }
    unset "PID[wrk]"
    echo "$t0 $wrk_end" > "$TMP/$name.span"
}

# --- report -----------------------------------------------------------------

# "N requests in ..." and "Socket errors: connect a, read b, write c, timeout d".
wrk_socket_detail() {
    awk '/Socket errors:/ { gsub(/,/, ""); print "connect " $4 ", read " $6 ", write " $8 ", timeout " $10; f = 1 }
         END { if (!f) print "connect 0, read 0, write 0, timeout 0" }' "$1"
}

actions_summary() {
    local what label parts=()
    for what in hup kill recycle upgrade scale nginx_hup; do
        [[ -n ${ACTED[$what]:-} ]] || continue
        case $what in
            hup | nginx_hup) label="${ACTED[$what]} HUP" ;;
            kill) label="${ACTED[$what]} kill -9" ;;
            recycle) label="${ACTED[$what]} RSS recycle ($RECYCLED recycling lines)" ;;
            upgrade) label="${ACTED[$what]} USR2" ;;
            scale) label="${ACTED[$what]} TTOU/TTIN" ;;
        esac
        [[ -z ${SLOW[$what]:-} ]] || label+=" [${SLOW[$what]} not settled in time]"
        parts+=("$label")
    done
    ((${#parts[@]} > 0)) || parts=(none)
    local joined
    joined=$(printf '%s, ' "${parts[@]}")
    echo "${joined%, }"
}

# Charges each event of the wrk spy to a window: the action in progress (from its start until
# 1 s after it settled, or until the next action starts), "between actions", or "wrk exiting"
# (after the end of the run). Prints a markdown table per kind of action, then every action
# window and every burst between actions that had events.
attribution() {
    local name=$1
    if [[ -z $SPY ]]; then
        echo "(no wrk shim: errors are not timestamped)"
        return 0
    fi
    awk -v span="$(cat "$TMP/$name.span")" '
        function bucket(t,   i, end) {
            if (t > t1) return -2
            for (i = 1; i <= n; i++) {
                end = e[i] + 1000000; if (i < n && s[i + 1] < end) end = s[i + 1]
                if (t >= s[i] && t < end) return i
            }
            return 0
        }
        function errname(x) {
            return x == 104 ? "ECONNRESET" : x == 32 ? "EPIPE" : x == 111 ? "ECONNREFUSED" : \
                   x == 110 ? "ETIMEDOUT" : x == 0 ? "" : "errno " x
        }
        function describe(c, k,   out, m, sep) {
            for (m = 1; m <= 5; m++) if (c[k, m]) { out = out sep c[k, m] " " kname[m] (c[k, m] > 1 ? "s" : ""); sep = ", " }
            return out
        }
        FILENAME ~ /events$/ { n++; s[n] = $1; e[n] = $2; w[n] = $3; kinds[$3]++
                               d = $0; for (i = 1; i <= 4; i++) sub(/^[^ ]+ /, "", d); det[n] = d; next }
        { t = $1; idx = ($2 == "read") ? 1 : ($2 == "write") ? 2 : ($2 == "connect") ? 3 : ($2 == "status") ? 4 : 5
          if (t < t0) next
          b = bucket(t)
          k = (b == -2) ? "(wrk exiting)" : (b == 0) ? "(between actions)" : w[b]
          tot[k, idx]++; seen[k] = 1
          if ($4 != 0) errs[k] = errs[k] (index(errs[k], errname($4)) ? "" : " " errname($4))
          if (b > 0) win[b, idx]++
          if (b == 0) {   # bursts between actions: events less than 200 ms apart
              if (nb == 0 || t - last > 200000) { nb++; bs[nb] = t; n0 = 0; for (i = 1; i <= n; i++) if (s[i] <= t) n0 = i; prev[nb] = n0 }
              last = t; burst[nb, idx]++
          }
          next }
        BEGIN { split(span, sp, " "); t0 = sp[1]; t1 = sp[2]
                split("reset|write error|connect error|4xx/5xx|close", kname, "|") }
        END {
            print "| window | count | read: reset | read: close (EOF) | write errors | connect errors | 4xx/5xx |"
            print "|---|---:|---:|---:|---:|---:|---:|"
            nk = split("hup kill recycle upgrade scale nginx_hup (between-actions) (wrk-exiting)", order, " ")
            for (o = 1; o <= nk; o++) {
                k = order[o]; gsub(/-/, " ", k)
                if (!(k in kinds) && !(k in seen)) continue
                printf "| %s | %s | %d | %d | %d | %d | %d |\n", k, (k in kinds) ? kinds[k] : "", \
                    tot[k, 1], tot[k, 5], tot[k, 2], tot[k, 3], tot[k, 4]
            }
            sep = "\nerrno by window:"
            for (k in errs) { printf "%s %s:%s", sep, k, errs[k]; sep = ";" }
            if (sep == ";") print ""
            hdr = 0
            for (i = 1; i <= n; i++) {
                if (win[i, 1] + win[i, 2] + win[i, 3] + win[i, 4] + win[i, 5] == 0) continue
                if (!hdr++) print "\nEvents per window (time from the start of wrk):\n"
                printf "- +%.2fs %s%s (settled in %.2fs): %s\n", (s[i] - t0) / 1e6, w[i], \
                    (det[i] == "-") ? "" : " [" det[i] "]", (e[i] - s[i]) / 1e6, describe(win, i)
            }
            for (j = 1; j <= nb; j++) {
                if (!hdr++) print "\nEvents per window (time from the start of wrk):\n"
                p = prev[j]
                printf "- +%.2fs between actions%s: %s\n", (bs[j] - t0) / 1e6, \
                    p ? sprintf(" (%.2fs after the %s of +%.2fs settled)", (bs[j] - e[p]) / 1e6, w[p], (s[p] - t0) / 1e6) : " (before the first action)", \
                    describe(burst, j)
            }
            if (!hdr) print "\nNo socket error and no 4xx/5xx was seen during the run."
        }' "$TMP/$name.events" "$TMP/$name.spy"
}

# shoal WARN/ERROR lines, with the actions running in that second; kills we did are expected.
shoal_warnings() {
    local name=$1 line stamp sec what
    grep -E '^[^ ]+ (WARN|ERROR) ' "$SHOAL_LOG" | while IFS= read -r line; do
        what=""
        for pid in $KILLED; do
            [[ $line == *"(pid $pid) killed by SIGKILL"* ]] && what="expected: our kill -9"
        done
        if [[ -z $what ]]; then
            stamp=${line%% *}
            sec=$(date -d "$stamp" +%s 2>/dev/null || echo 0)
            what=$(awk -v a="${sec}000000" -v b="$((sec + 1))000000" '
                $1 < b && $2 + 1000000 >= a { printf "%s%s", sep, $3; sep = ", " }' "$TMP/$name.events")
            what="during: ${what:-no action}"
        fi
        echo "- \`$line\` ($what)"
    done
}

report_run() {
    local name=$1 out=$TMP/wrk-$1.txt req rps non2xx sock spied=0 timeouts
    req=$(wrk_requests "$out")
    rps=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$out")
    non2xx=$(wrk_non2xx "$out")
    sock=$(wrk_sockerr "$out")
    [[ -n $req ]] || { cat "$out" >&2; die "could not parse wrk output for $name"; }
    TARGETS+=("$name")
    R_REQ[$name]=$req R_NON2XX[$name]=$non2xx
    R_SOCK[$name]="$sock ($(wrk_socket_detail "$out"))"
    R_ACTIONS[$name]=$(actions_summary)
    R_CLOSES[$name]=n/a
    if [[ -n $SPY ]]; then
        R_CLOSES[$name]=$(awk '$2 == "eof"' "$TMP/$name.spy" | wc -l)
        spied=$(awk '$2 != "status"' "$TMP/$name.spy" | wc -l)
    fi
    echo "### $name"
    echo
    echo "- wrk: $req requests ($rps req/s), non-2xx $non2xx, socket errors ${R_SOCK[$name]}"
    if [[ -n $SPY ]]; then
        timeouts=$(awk '/Socket errors:/ { print $NF + 0 }' "$out")
        echo "- of these, closes by the server of a connection with a request outstanding (EOF): ${R_CLOSES[$name]}"
        (( spied == sock - ${timeouts:-0} )) ||
            echo "- NOTE: the shim saw $spied socket errors (closes included), wrk counted $((sock - ${timeouts:-0})) besides timeouts"
    fi
    echo "- actions: ${R_ACTIONS[$name]}"
    [[ -z $UPGRADE_NOTE || $name != shoal ]] || echo "- upgrade: $UPGRADE_NOTE"
    echo
    attribution "$name"
    echo
}

drill_shoal() {
    local code warnings
    start_shoal
    run_drill shoal "$SHOAL_PORT" "hup:$HUPS" "kill:$KILLS" "recycle:$RECYCLES" "upgrade:$UPGRADES" "scale:$SCALES"
    report_run shoal
    code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$SHOAL_PORT/1k.bin" || true)
    echo "- after the drill: master $MASTER $(pid_alive "$MASTER" && echo alive || echo GONE)," \
        "$(children_of "$MASTER" | wc -l) workers, GET /1k.bin -> $code"
    echo
    echo "shoal warnings and errors:"
    echo
    warnings=$(shoal_warnings shoal || true)
    echo "${warnings:-- none}"
    echo
    stop_pid shoal "$MASTER"
    unset "PID[shoal]"
}

drill_nginx() {
    local name=$1 opts=${2:-}
    start_nginx "$name" "$opts"
    run_drill "$name" "$NGINX_PORT" "nginx_hup:$HUPS"
    report_run "$name"
    stop_pid "$name" "$MASTER"
    unset "PID[$name]"
}

print_summary() {
    local name
    echo "## Summary"
    echo
    echo "| target | actions | requests | non-2xx | socket errors |"
    echo "|---|---|---:|---:|---|"
    for name in "${TARGETS[@]}"; do
        echo "| $name | ${R_ACTIONS[$name]} | ${R_REQ[$name]} | ${R_NON2XX[$name]} | ${R_SOCK[$name]} |"
    done
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM   # make Ctrl-C go through the EXIT trap
    if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 5)); then
        die "DURATION must be a whole number of seconds >= 5"
    fi
    install_deps
    [[ $SKIP_BUILD == 1 ]] || build_shoal
    [[ -x $SHOAL_BIN ]] || die "$SHOAL_BIN not found (drop SKIP_BUILD=1?)"
    make_site shoal-drill
    build_spy "$TMP"

    local cpu nginx_v rev
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '(no commit)')
    git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || rev+=" + uncommitted changes in src/"
    nginx_v=$(nginx -v 2>&1 || true)
    echo "## Operations drill under load"
    echo
    echo "- machine: $(nproc) CPUs${cpu:+ ($cpu)}, kernel $(uname -r)"
    echo "- shoal $rev" \
        "($WORKERS workers), ${nginx_v#nginx version: } (worker_processes $WORKERS)"
    echo "- load: \`wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s --latency http://127.0.0.1:PORT/1k.bin\`, actions spread over 8–82% of the run"
    echo "- windows: an action's window runs from its start to 1 s after it settled (or to the next action)." \
        "Events come from an LD_PRELOAD shim in wrk and are the socket errors wrk counts:" \
        "a read error is either a reset or a close (end of file while a request is outstanding: the server closed a busy keep-alive connection);" \
        "wrk's timeouts are not timestamped"
    echo

    drill_shoal
    if [[ $SKIP_NGINX != 1 ]]; then
        drill_nginx nginx
        [[ $SKIP_REUSEPORT == 1 ]] || drill_nginx nginx-reuseport reuseport
    fi
    print_summary
}

main "$@"
