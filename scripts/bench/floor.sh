# The physical floors of scripts/bench.sh: two small C programs (benches/floor/) that do the
# least work this kernel allows for a scenario, run as reference targets in the same rounds as
# the servers, so that every CPU figure can be read against the floor and not only against
# nginx. "floor" (S1, S2) answers every request with the same 1 KiB file from memory, with
# shoal's head size, over keep-alive or not; "floor-relay" (S4) relays bytes between each
# client and one upstream connection of its own, with no HTTP at all. Both fork WORKERS
# processes, each with its own SO_REUSEPORT listener and epoll loop. Sourced by bench.sh.
# shellcheck shell=bash

FLOOR_BIN=""   # $TMP/floor: the built programs' directory, empty when cc failed

# build_floors: compiles both programs into $TMP/floor (cc is installed by bench.sh).
build_floors() {
    local dir=$TMP/floor prog
    mkdir -p "$dir"
    for prog in static_floor relay_floor; do
        if ! cc -O2 -Wall -Wextra -o "$dir/$prog" "$REPO/benches/floor/$prog.c" 2> "$dir/$prog.cc.log"; then
            cat "$dir/$prog.cc.log" >&2
            die "benches/floor/$prog.c did not compile"
        fi
    done
    FLOOR_BIN=$dir
}

# start_static_floor: "floor" on FLOOR_PORT serving $TMP/site/1k.bin, ready and checked.
start_static_floor() {
    check_port_free "$FLOOR_PORT"
    launch floor "$FLOOR_PORT" "$FLOOR_BIN/static_floor" "$FLOOR_PORT" "$WORKERS" "$TMP/site/1k.bin"
    TARGETS+=(floor)
    wait_ready floor
    check_body floor
}

# start_relay_floor: "floor-relay" on RELAY_FLOOR_PORT before the upstream (S4 waits for it
# with its proxies).
start_relay_floor() {
    check_port_free "$RELAY_FLOOR_PORT"
    launch floor-relay "$RELAY_FLOOR_PORT" "$FLOOR_BIN/relay_floor" "$RELAY_FLOOR_PORT" "$UPSTREAM_PORT" "$WORKERS"
    TARGETS+=(floor-relay)
}
