#!/usr/bin/env bash
# Builds one fully static x86_64 Linux shoal binary and proves it: target/shoal-static.
#
#   scripts/static.sh           build (release profile), check it is static, print its size
#   scripts/static.sh --smoke   also run it: `--version`, then one request served from a temp dir
#
# Target: x86_64-unknown-linux-musl when rustup has it installed (it resolves upstream host
# names itself), otherwise x86_64-unknown-linux-gnu with `-C target-feature=+crt-static`
# (glibc's NSS cannot work in a static binary: upstream host names may then fail to resolve;
# IP addresses always work). STATIC_TARGET=... picks one explicitly.
# Static means: no ELF interpreter (PT_INTERP) and no NEEDED shared libraries.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=static
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

smoke=false
case "${1:-}" in
    --smoke) smoke=true ;;
    "") ;;
    *) die "usage: $0 [--smoke]" ;;
esac

musl=x86_64-unknown-linux-musl
gnu=x86_64-unknown-linux-gnu
if [[ -z ${STATIC_TARGET:-} ]]; then
    if rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
        STATIC_TARGET=$musl
    else
        STATIC_TARGET=$gnu
    fi
fi
flags=${RUSTFLAGS:-}
if [[ $STATIC_TARGET == "$gnu" ]]; then
    flags="$flags -C target-feature=+crt-static"
fi

log "cargo build --release --target $STATIC_TARGET"
# --target keeps RUSTFLAGS off build scripts and proc macros, which must stay dynamic.
(cd "$REPO" && RUSTFLAGS="$flags" cargo build --release --locked --target "$STATIC_TARGET" --bin shoal >&2)
built="$REPO/target/$STATIC_TARGET/release/shoal"
out="$REPO/target/shoal-static"
cp "$built" "$out"

headers=$(readelf --program-headers --dynamic "$out")
if grep -q 'INTERP' <<< "$headers" || grep -q '(NEEDED)' <<< "$headers"; then
    readelf --program-headers --dynamic "$out" | grep -E 'INTERP|NEEDED' >&2 || true
    die "$out is not static (it has an interpreter or needs shared libraries)"
fi
if command -v file >/dev/null 2>&1; then
    description=$(file -b "$out")
    log "file: $description"
    [[ $description == *"static"* ]] || die "file(1) does not call $out static"
fi
size=$(stat -c %s "$out")
log "static binary: $out ($STATIC_TARGET, $size bytes, $((size / 1024)) KiB)"

$smoke || exit 0
# The smoke request is made with curl; a fresh CI image may lack it.
if ! command -v curl >/dev/null 2>&1; then
    log "installing curl"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >&2
fi

version=$("$out" --version)
[[ $version == "shoal "* ]] || die "--version printed: $version"
log "runs: $version"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-static.XXXXXX")
pid=
cleanup() {
    [[ -n $pid ]] && stop_pid shoal "$pid"
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir "$TMP/site"
echo "static hello" > "$TMP/site/hello.txt"
# Port 0 is not allowed by shoal's config; pick a free one the kernel hands out.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# serve URL CURL_FLAGS SHOAL_ARGS...: runs the static binary with SHOAL_ARGS until URL answers
# "static hello" (curl with CURL_FLAGS), then stops it.
serve() {
    local url=$1 flags=$2 body=
    shift 2
    "$out" "${SHOAL_AS[@]}" "$@" -w 1 > "$TMP/out.log" 2> "$TMP/err.log" &
    pid=$!
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || { show_log "$TMP/err.log"; die "the static binary exited while booting ($*)"; }
        body=$(curl -s $flags --max-time 2 "$url") && [[ -n $body ]] && break
        sleep 0.1
    done
    [[ $body == "static hello" ]] || { show_log "$TMP/err.log"; die "GET $url returned: $body"; }
    log "served GET $url from the static binary"
    stop_pid shoal "$pid"
    pid=
}
serve "http://127.0.0.1:$port/hello.txt" "" -r "$TMP/site" -l "127.0.0.1:$port"

# HTTPS from the same binary: a self-signed certificate, one request with curl -k.
command -v openssl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openssl >&2; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2> /dev/null
cat > "$TMP/shoal.toml" <<EOF
[[server]]
listen = ["127.0.0.1:$port"]
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
  [[server.route]]
  prefix = "/"
  root = "$TMP/site"
EOF
serve "https://127.0.0.1:$port/hello.txt" -k -c "$TMP/shoal.toml"
