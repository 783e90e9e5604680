# S1-tls, S2-tls and S6-tls of scripts/bench.sh: the static 1 KiB file over HTTPS. The targets
# (scripts/bench/tls_servers.sh) share the run's one certificate (TLS_KEY: ec or rsa):
#   shoal-tls       shoal, S1's static config with a tls table
#   nginx-tls       nginx, S1's static config with listen ... ssl reuseport
#   haproxy-return  HAProxy answering every request with the same 1 KiB from memory
#                   ("http-request return"): it serves no files, so this is a floor-like
#                   reference for the cost of TLS and HTTP, not a file server
# S1-tls: S1's wrk over keep-alive HTTPS. S2-tls: the same with -H "Connection: close", so every
# request has its own TCP connection and TLS handshake, and CPU µs per request is CPU µs per
# handshake; two runs per target and round: s2-tls-resumed, wrk as it is (it resumes each
# slot's session: see tls_servers.sh), and s2-tls-full, wrk with no_resume.so (every handshake
# full; left out without a C compiler). S6-tls: S6 (idle.sh) over HTTPS, IDLE_CONNS_TLS
# connections. Sourced by bench.sh.
# shellcheck shell=bash

# The names start_tls_targets starts, in order.
tls_target_names() {
    local names=()
    [[ $SKIP_SHOAL == 1 ]] || names+=(shoal-tls)
    names+=(nginx-tls haproxy-return)
    echo "${names[*]}"
}

# launch_tls_target NAME: start one of them (not yet ready). HAProxy's maxconn: S6-tls's
# connections and some, at least 4096.
launch_tls_target() {
    local maxconn=$((IDLE_CONNS_TLS + 1024 > 4096 ? IDLE_CONNS_TLS + 1024 : 4096))
    case $1 in
        shoal-tls) start_shoal_tls shoal-tls "$SHOAL_TLS_PORT" ;;
        nginx-tls) start_nginx_tls nginx-tls "$NGINX_TLS_PORT" ;;
        haproxy-return) start_haproxy_return haproxy-return "$HAPROXY_TLS_PORT" "$maxconn" ;;
        *) die "no TLS target named $1" ;;
    esac
}

# start_tls_target NAME: one TLS target alone, ready and checked (S6-tls).
start_tls_target() {
    launch_tls_target "$1"
    wait_ready "$1"
    check_body "$1"
}

# start_tls_targets: every TLS target, each ready and checked; TARGETS lists them. Notes in
# the facts what each negotiates.
start_tls_targets() {
    local name sessions=""
    TARGETS=()
    for name in $(tls_target_names); do launch_tls_target "$name"; done
    for name in "${TARGETS[@]}"; do
        wait_ready "$name"
        check_body "$name"
        sessions+="${sessions:+; }$name $(tls_session_text "${PORT[$name]}")"
    done
    fact tls "$(tls_fact); negotiated (openssl s_client): $sessions"
}

# The facts' line about TLS, before start_tls_targets adds what each target negotiates.
tls_fact() { echo "one self-signed $TLS_KIND certificate for localhost, the same for every server"; }

scenario_s1_tls() {
    fact cmd.s1-tls "$(WRK_SCHEME=https cmd_text wrk_argv PORT)"
    for_rounds s1_tls_run
}

s1_tls_run() { WRK_SCHEME=https run_wrk s1-tls "$1" "$2"; }

scenario_s2_tls() {
    build_no_resume "$TMP"
    fact cmd.s2-tls-resumed "$(WRK_SCHEME=https WRK_CLOSE=1 cmd_text wrk_argv PORT)"
    [[ -z $NO_RESUME ]] ||
        fact cmd.s2-tls-full "$(WRK_SCHEME=https WRK_CLOSE=1 WRK_PRELOAD=no_resume.so cmd_text wrk_argv PORT)"
    for_rounds s2_tls_run
}

# Both kinds of handshake for one target back to back; targets alternate within each round.
s2_tls_run() {
    WRK_SCHEME=https WRK_CLOSE=1 run_wrk s2-tls-resumed "$1" "$2"
    [[ -z $NO_RESUME ]] || WRK_SCHEME=https WRK_CLOSE=1 WRK_PRELOAD=$NO_RESUME run_wrk s2-tls-full "$1" "$2"
}

scenario_s6_tls() { idle_scenario s6-tls "$IDLE_CONNS_TLS" s6_tls_run "$(tls_target_names)" --tls; }

s6_tls_run() { idle_run s6-tls start_tls_target "$IDLE_CONNS_TLS" "$1" "$2" --tls; }

# Run the selected HTTPS scenarios: S1-tls and S2-tls on one set of servers, then S6-tls (a
# fresh server per run).
tls_scenarios() {
    if selected s1-tls || selected s2-tls; then
        start_tls_targets
        if selected s1-tls; then scenario_s1_tls; fi
        if selected s2-tls; then scenario_s2_tls; fi
        stop_servers "${TARGETS[@]}"
    fi
    if selected s6-tls; then scenario_s6_tls; fi
}
