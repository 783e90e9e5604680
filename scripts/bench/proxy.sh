# S4 of scripts/bench.sh: reverse proxy, 1 KiB, keep-alive on both sides. shoal, nginx and
# HAProxy ("shoal-proxy", "nginx-proxy", "haproxy") in front of one shared upstream: a
# separate nginx (1 worker, access log off, keepalive_requests 100000) serving $TMP/site;
# each proxy keeps up to 64 idle keep-alive connections to it. "floor-relay"
# (scripts/bench/floor.sh) relays each client's bytes over one upstream connection of its own:
# the floor. Sourced by bench.sh.
# shellcheck shell=bash

scenario_s4() {
    local name
    TARGETS=()
    start_nginx upstream "$UPSTREAM_PORT"
    wait_ready upstream
    [[ $SKIP_SHOAL == 1 ]] || start_shoal shoal-proxy "$SHOAL_PROXY_PORT" proxy
    start_nginx_proxy nginx-proxy "$NGINX_PROXY_PORT"
    start_haproxy haproxy "$HAPROXY_PORT"
    start_relay_floor
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    fact cmd.s4 "$(cmd_text wrk_argv PORT)"
    for_rounds s4_run
    stop_servers "${TARGETS[@]}" upstream
}

s4_run() { run_wrk s4 "$1" "$2"; }
