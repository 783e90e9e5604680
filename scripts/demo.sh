#!/usr/bin/env bash
# `make demo`: build shoal and the demo legacy app (examples/legacy_app.rs), start the app in the
# background on 127.0.0.1:3000, then shoal on http://127.0.0.1:8080 with examples/shoal.toml (the
# static site, and /api/ proxied to the app) until it exits. Both log to this terminal.
# Ctrl-C stops shoal (fast stop), SIGTERM to this script stops it gracefully; when shoal exits,
# for any reason, the app is stopped by its PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

APP_HOST=127.0.0.1 APP_PORT=3000   # must match [upstream.app] in examples/shoal.toml
APP_PID=""

say() { printf '[demo] %s\n' "$*" >&2; }

listening() { (exec 3<>"/dev/tcp/$APP_HOST/$APP_PORT") 2>/dev/null; }

# shellcheck disable=SC2317  # called by the EXIT trap
stop_app() {
    if [[ -n $APP_PID ]] && kill -0 "$APP_PID" 2>/dev/null; then
        say "stopping the legacy app (pid $APP_PID)"
        kill -TERM "$APP_PID" 2>/dev/null || true
    fi
    if [[ -n $APP_PID ]]; then wait "$APP_PID" 2>/dev/null || true; fi
}
trap stop_app EXIT

cargo build --release --bins --examples

if listening; then
    say "ERROR: $APP_HOST:$APP_PORT is already in use; stop whatever listens there first"
    exit 1
fi
./target/release/examples/legacy_app "$APP_HOST:$APP_PORT" &
APP_PID=$!
for _ in {1..50}; do
    listening && break
    if ! kill -0 "$APP_PID" 2>/dev/null; then
        say "ERROR: the legacy app exited at start"
        exit 1
    fi
    sleep 0.1
done
listening || { say "ERROR: the legacy app is not listening on $APP_HOST:$APP_PORT after 5 s"; exit 1; }

say "legacy app (pid $APP_PID) on http://$APP_HOST:$APP_PORT/"
say "static site:  http://127.0.0.1:8080/"
say "legacy app:   http://127.0.0.1:8080/api/users  (also /api/headers, /api/slow)"
say "Ctrl-C stops shoal, then the app"
# As root, shoal wants to be told who its workers run as: a demo from a checkout keeps root.
as_root=()
if [[ $EUID == 0 ]]; then as_root=(-U root); fi
./target/release/shoal "${as_root[@]}" -c examples/shoal.toml &
SHOAL_PID=$!
# A background job does not get the terminal's SIGINT, and a trap runs only once `wait` returns:
# so shoal runs in the background and these traps pass Ctrl-C and kill on to it, by its PID.
trap 'kill -INT "$SHOAL_PID" 2>/dev/null || true' INT
trap 'kill -TERM "$SHOAL_PID" 2>/dev/null || true' TERM HUP
while kill -0 "$SHOAL_PID" 2>/dev/null; do
    wait "$SHOAL_PID" || true # returns early when a trap runs: wait again while shoal is there
done
status=0
wait "$SHOAL_PID" || status=$? # shoal's own exit status, which bash remembers
exit "$status"
