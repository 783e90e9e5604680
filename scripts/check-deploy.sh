#!/usr/bin/env bash
# Checks deploy/ offline with whatever tools the machine has (each check is skipped, with a
# note, when its tool is missing; CI runs it after the tests):
#   systemd-analyze verify   shoal.service and shoal.socket: no warning at all
#   python3 + PyYAML         kubernetes.yaml parses into the expected objects
#   logrotate -d             logrotate.conf parses
# The config inside kubernetes.yaml is checked (and run) by tests/it/deploy.rs.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=deploy
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-deploy.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

if command -v systemd-analyze >/dev/null 2>&1; then
    # verify wants ExecStart's binary to exist: point it at any executable.
    for unit in shoal.service shoal.socket; do
        sed "s|/usr/local/bin/shoal|/bin/true|g" "$REPO/deploy/$unit" > "$TMP/$unit"
    done
    out=$(cd "$TMP" && systemd-analyze verify ./shoal.service ./shoal.socket 2>&1) || die "systemd-analyze verify failed: $out"
    [[ -z $out ]] || die "systemd-analyze verify warns: $out"
    log "systemd units: verified"
else
    log "skipped: systemd-analyze not installed"
fi

if python3 -c 'import yaml' >/dev/null 2>&1; then
    python3 - "$REPO/deploy/kubernetes.yaml" <<'PY' || die "kubernetes.yaml"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = [d["kind"] for d in docs]
assert kinds == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"], kinds
pod = docs[1]["spec"]["template"]["spec"]
container = pod["containers"][0]
assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
PY
    log "kubernetes.yaml: parsed"
else
    log "skipped: python3 with PyYAML not available"
fi

if command -v logrotate >/dev/null 2>&1; then
    sed "s|/var/log/shoal|$TMP/logs|" "$REPO/deploy/logrotate.conf" > "$TMP/logrotate.conf"
    mkdir "$TMP/logs"
    logrotate -d -s "$TMP/state" "$TMP/logrotate.conf" > "$TMP/logrotate.out" 2>&1 \
        || { cat "$TMP/logrotate.out" >&2; die "logrotate -d failed"; }
    ! grep -qi 'error' "$TMP/logrotate.out" || { cat "$TMP/logrotate.out" >&2; die "logrotate reports errors"; }
    log "logrotate.conf: parsed"
else
    log "skipped: logrotate not installed"
fi
