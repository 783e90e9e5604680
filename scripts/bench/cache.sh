# S10 of scripts/bench.sh: cached proxy, 1 KiB, keep-alive. S4's three proxies before S4's
# shared nginx upstream, each with its response cache on, measured while it answers /1k.bin
# from the cache ("shoal-cache", "nginx-cache", "haproxy-cache"):
#   shoal    S4's config plus [cache] (entries in the run's directory, max_size 1 GiB) and
#            cache = true, cache_ttl = "60s" on the route
#   nginx    S4's config plus proxy_cache_path (levels=1:2, keys_zone=c:10m, max_size=1g,
#            inactive=60m, use_temp_path=off), proxy_cache c, proxy_cache_valid 200 60s and
#            add_header X-Cache-Status $upstream_cache_status. The cache has a directory of
#            its own, not nginx's prefix: its cache loader removes files it does not know.
#            The loader process exits about a minute after the start, so a run then may warn
#            that nginx's process tree changed (the loader's CPU time is a few ticks at most).
#   HAProxy  S4's config plus a "cache c" section (total-max-size 64 MB, max-age 60 s),
#            http-request cache-use c, http-response cache-store c in the backend, and
#            X-Cache-Status: HIT set on the answers the cache gave (res.cache_hit)
# The upstream's nginx answers state no freshness (Last-Modified and ETag only), so each
# cache keeps them for its own 60 s. Before every run the target gets one request (which
# stores the entry, or refreshes it once it is older than 60 s) and then a second that must
# say it was a hit, else the run stops. run_wrk records the upstream's CPU per request too:
# with every answer from the cache it stays near 0, and a warning says when it does not.
# Sourced by bench.sh.
# shellcheck shell=bash

# The upstream's CPU µs per request above which an S10 run warns that the upstream was asked:
# it spends about 15 µs on each request it answers (S4), so 0.5 is about one request in 30,
# and above the noise of a clock-tick count (one tick is 10 ms over the run's requests).
S10_UPSTREAM_MAX_US=0.5

scenario_s10() {
    local name
    TARGETS=()
    start_nginx upstream "$UPSTREAM_PORT"
    wait_ready upstream
    [[ $SKIP_SHOAL == 1 ]] || start_shoal shoal-cache "$SHOAL_PROXY_PORT" cache
    # shellcheck disable=SC2016  # $upstream_cache_status is nginx's variable
    start_nginx_proxy nginx-cache "$NGINX_PROXY_PORT" \
        "proxy_cache_path $TMP/nginx-cache-entries levels=1:2 keys_zone=c:10m max_size=1g inactive=60m use_temp_path=off;" \
        'proxy_cache c;
proxy_cache_valid 200 60s;
add_header X-Cache-Status $upstream_cache_status;'
    start_haproxy haproxy-cache "$HAPROXY_PORT" 'http-request cache-use c
http-response cache-store c
http-response set-header X-Cache-Status HIT if { res.cache_hit }' 'cache c
    total-max-size 64
    max-age 60'
    # wait_ready's request and check_body's two fill the caches; check_body's are answered
    # from them, so the cached copies are checked byte for byte.
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name"; done
    fact cmd.s10 "$(cmd_text wrk_argv PORT)"
    for_rounds s10_run
    stop_servers "${TARGETS[@]}" upstream
}

s10_run() {
    local name=$1 round=$2 up
    s10_check_hit "$name"
    run_wrk s10 "$name" "$round"
    up=$(awk -F'\t' -v t="$name" -v r="$round" '$1 == "s10" && $2 == t && $3 == "upstream_cpu_us" && $4 == r { v = $5 }
        END { print v }' "$RESULTS")
    if [[ -n $up ]] && awk -v u="$up" -v max="$S10_UPSTREAM_MAX_US" 'BEGIN { exit !(u > max) }'; then
        log "WARNING: s10 round $round: the upstream spent $up µs per request of $name's (more than $S10_UPSTREAM_MAX_US): were answers not from the cache?"
    fi
}

# s10_check_hit NAME: one GET of /1k.bin to fill NAME's cache, then a second whose cache
# header must say hit (shoal: "Cache-Status: shoal; hit"; nginx and HAProxy:
# "X-Cache-Status: HIT"); dies otherwise.
s10_check_hit() {
    local name=$1 url="http://127.0.0.1:${PORT[$1]}/1k.bin" head=$TMP/s10-$1.head header want got
    case $name in
        shoal-cache) header=cache-status want="shoal; hit" ;;
        *) header=x-cache-status want=HIT ;;
    esac
    curl -s -o /dev/null --max-time 5 "$url" || die "$name: the warm-up GET of $url failed"
    curl -s -o /dev/null -D "$head" --max-time 5 "$url" || die "$name: the second GET of $url failed"
    got=$(awk -v h="$header:" 'tolower($1) == h { sub(/^[^:]*:[ \t]*/, ""); sub(/[ \t\r]+$/, ""); print; exit }' "$head")
    if [[ $got != "$want" ]]; then
        cat "$head" >&2
        show_logs "$name"
        die "$name: the second GET of /1k.bin was not a cache hit ($header: ${got:-absent}; expected \"$want\")"
    fi
    log "s10: $name answers from its cache ($header: $got)"
}
