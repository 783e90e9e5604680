# S11 of scripts/bench.sh: compressed answers, 1 KiB of text, keep-alive (issue 17). wrk asks
# /1k.html (make_text_file: 1,024 bytes of HTML with inline CSS) with "Accept-Encoding: gzip"
# on every request, so every target answers gzip, in two parts:
#   s11-static  shoal serving the site with compress = true on its route ("shoal-gzip": the
#               gzip copy of a small file is made once, at gzip 7, and kept with the file) and
#               S1's nginx without reuseport (S1's "nginx") with gzip on at gzip_comp_level 1
#               and 6 ("nginx-gzip1", "nginx-gzip6": nginx compresses every answer)
#   s11-proxy   S4's proxies before S4's shared nginx upstream, which does not compress:
#               shoal with compress = true on its route ("shoal-proxy-gzip": gzip 3 as the
#               body streams), nginx with gzip on at level 1 and 6 in the location
#               ("nginx-proxy-gzip1", "nginx-proxy-gzip6") and, as a reference without a
#               target, HAProxy's compression filter ("haproxy-gzip": algo gzip, type
#               text/html; this build uses libslz, a stateless deflate about as tight as gzip 1)
# nginx's gzip lines are nginx_gzip_lines': gzip_min_length 0 (shoal's compress_min_bytes is
# 1 KiB, which 1,024 bytes meets), gzip_vary on (shoal sends Vary too), gzip_proxied any;
# gzip_types is left at its default, text/html, which nginx always compresses (naming it
# again only draws a warning). Before every run the target gets one GET with "Accept-Encoding:
# gzip" that must come back with Content-Encoding: gzip and a body that gunzips to the file,
# else the run stops; that GET's body size ("body_bytes": the deflate stream and gzip's
# 18 bytes of frame) and, from a second GET with curl --raw, the bytes of the head plus the
# body as sent, chunk framing included ("wire_bytes"), are recorded for the round. Sourced by
# bench.sh.
# shellcheck shell=bash

S11_FILE=1k.html

# make_text_file: $TMP/site/1k.html, exactly 1,024 bytes of an ordinary page (a table of
# orders with its stylesheet inline): gzip -6 leaves about 56 % of it, as small pages do.
make_text_file() {
    local file=$TMP/site/$S11_FILE
    cat > "$file" <<'EOF'
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width">
<title>Orders - Example Shop</title>
<style>
body { margin: 0; font-family: system-ui, sans-serif; color: #222; }
header, main, footer { max-width: 60rem; margin: 0 auto; padding: 1rem; }
nav a { margin-right: 1rem; color: #0b5394; text-decoration: none; }
table { width: 100%; border-collapse: collapse; }
td, th { padding: .4rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
.paid { color: #2e7d32; } .late { color: #c62828; }
</style>
</head>
<body>
<header><nav><a href="/">Home</a><a href="/orders">Orders</a><a href="/account">Account</a></nav></header>
<main>
<h1>Your orders</h1>
<table>
<tr><th>Order</th><th>Date</th><th>Total</th><th>Status</th></tr>
<tr><td>#10412</td><td>2026-11-28</td><td>42.90 EUR</td><td class="paid">Paid</td></tr>
<tr><td>#10398</td><td>2026-11-19</td><td>17.50 EUR</td><td class="late">Overdue</td></tr>
</table>
</main>
<footer>About</footer>
</body>
</html>
EOF
    chmod 644 "$file"
    [[ $(stat -c %s "$file") == 1024 ]] || die "$S11_FILE is not 1024 bytes"
}

# nginx_gzip_lines LEVEL: nginx's gzip directives for S11, one per line.
nginx_gzip_lines() {
    printf '%s\n' "gzip on;" "gzip_comp_level $1;" "gzip_min_length 0;" "gzip_vary on;" "gzip_proxied any;"
}

scenario_s11() {
    s11_static
    s11_proxy
}

s11_static() {
    local name
    TARGETS=()
    [[ $SKIP_SHOAL == 1 ]] || SHOAL_ROUTE_LINES="compress = true" start_shoal shoal-gzip "$SHOAL_PORT" static
    start_nginx nginx-gzip1 "$NGINX_PORT" "" "$(nginx_gzip_lines 1)"
    start_nginx nginx-gzip6 "$NGINX_RP_PORT" "" "$(nginx_gzip_lines 6)"
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name" "$S11_FILE"; done
    fact cmd.s11-static "$(WRK_PATH=/$S11_FILE WRK_ACCEPT_ENCODING=gzip cmd_text wrk_argv PORT)"
    for_rounds s11_static_run
    stop_servers "${TARGETS[@]}"
}

s11_proxy() {
    local name
    TARGETS=()
    start_nginx upstream "$UPSTREAM_PORT"
    wait_ready upstream
    s11_check_identity upstream
    [[ $SKIP_SHOAL == 1 ]] ||
        SHOAL_ROUTE_LINES="compress = true" start_shoal shoal-proxy-gzip "$SHOAL_PROXY_PORT" proxy
    start_nginx_proxy nginx-proxy-gzip1 "$NGINX_PROXY_PORT" "" "$(nginx_gzip_lines 1)"
    start_nginx_proxy nginx-proxy-gzip6 "$NGINX_PROXY2_PORT" "" "$(nginx_gzip_lines 6)"
    start_haproxy haproxy-gzip "$HAPROXY_PORT" 'filter compression
compression algo gzip
compression type text/html'
    for name in "${TARGETS[@]}"; do wait_ready "$name"; check_body "$name" "$S11_FILE"; done
    fact cmd.s11-proxy "$(WRK_PATH=/$S11_FILE WRK_ACCEPT_ENCODING=gzip cmd_text wrk_argv PORT)"
    for_rounds s11_proxy_run
    stop_servers "${TARGETS[@]}" upstream
}

s11_static_run() { s11_run s11-static "$@"; }
s11_proxy_run() { s11_run s11-proxy "$@"; }

s11_run() {
    local scen=$1 name=$2 round=$3
    s11_check_gzip "$scen" "$name" "$round"
    WRK_PATH=/$S11_FILE WRK_ACCEPT_ENCODING=gzip run_wrk "$scen" "$name" "$round"
}

# header_value FILE NAME: the value of header NAME (lower case) in the head curl -D wrote to
# FILE, without surrounding blanks; nothing when it is absent.
header_value() {
    awk -v h="$2:" 'tolower($1) == h { sub(/^[^:]*:[ \t]*/, ""); sub(/[ \t\r]+$/, ""); print; exit }' "$1"
}

# s11_check_gzip SCENARIO NAME ROUND: GET /1k.html from NAME with "Accept-Encoding: gzip"; dies
# unless the answer says Content-Encoding: gzip and its body gunzips to the file. Records the
# body's size (body_bytes) and, from a second GET with curl --raw (no transfer decoding), the
# head's bytes plus the body's as sent, chunk framing included (wire_bytes).
s11_check_gzip() {
    local scen=$1 name=$2 round=$3 url="http://127.0.0.1:${PORT[$2]}/$S11_FILE" base=$TMP/s11-$2 got body wire
    curl -s --max-time 5 -H 'Accept-Encoding: gzip' -D "$base.head" -o "$base.gz" "$url" ||
        die "$name: the GET of $url with Accept-Encoding: gzip failed"
    got=$(header_value "$base.head" content-encoding)
    if [[ $got != gzip ]]; then
        cat "$base.head" >&2
        show_logs "$name"
        die "$name: GET $url with Accept-Encoding: gzip was not answered gzip (Content-Encoding: ${got:-absent})"
    fi
    if ! gzip -dc < "$base.gz" | cmp -s - "$TMP/site/$S11_FILE"; then
        show_logs "$name"
        die "$name: the gzip body of $url does not decompress to $S11_FILE"
    fi
    body=$(stat -c %s "$base.gz")
    wire=$(curl -s --raw --max-time 5 -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_header} %{size_download}' "$url") ||
        die "$name: the raw GET of $url failed"
    wire=$((${wire% *} + ${wire#* }))
    record "$scen" "$name" body_bytes "$round" "$body"
    record "$scen" "$name" wire_bytes "$round" "$wire"
    [[ $round != 1 ]] || log "$scen: $name answers gzip: $body bytes of body, $wire bytes with the head"
}

# s11_check_identity NAME: NAME (the upstream) must answer /1k.html uncompressed even when asked
# for gzip, so that the proxies have the compressing to do; dies otherwise.
s11_check_identity() {
    local name=$1 url="http://127.0.0.1:${PORT[$1]}/$S11_FILE" head=$TMP/s11-$1.head got
    curl -s --max-time 5 -H 'Accept-Encoding: gzip' -D "$head" -o /dev/null "$url" ||
        die "$name: the GET of $url failed"
    got=$(header_value "$head" content-encoding)
    [[ -z $got ]] || die "$name compresses its answers (Content-Encoding: $got); S11 needs them plain"
    got=$(header_value "$head" content-type)
    [[ $got == text/html* ]] || die "$name answers $S11_FILE as '${got:-no type}', not text/html"
}
