#!/usr/bin/env python3
"""The report of scripts/bench.sh: medians, ratios, targets, markdown and an SVG chart.

    report.py RESULTS FACTS [--docs docs/benchmarks.md] [--readme README.md] [--svg FILE]

RESULTS is the raw data, one figure per line, tab-separated: scenario, target, metric, round,
value. FACTS describes the run, tab-separated: key, value (machine, versions, the exact
command of each scenario as "cmd.<scenario>"; the last line for a key wins). The markdown
report goes to stdout. With --docs, the part of that file between the lines
`<!-- bench-results:begin -->` and `<!-- bench-results:end -->` is replaced by the report;
with --readme, the part between `<!-- bench-summary:begin -->` and `<!-- bench-summary:end -->`
by the summary table; with --svg, a bar chart of the ratios is written there.

Medians are the middle value of the sorted rounds (the lower middle for an even count).
Results of older runs (without the HTTPS scenarios) or of some scenarios only are fine: what
was not run shows as "not run" or is left out. Python standard library only.
"""

import argparse
import collections
import html
import sys

STATIC = ["shoal", "nginx", "nginx-reuseport", "floor"]
NGINXES = ["nginx", "nginx-reuseport"]
# The physical floors (benches/floor/): "floor" answers the 1 KiB from memory (S1, S2),
# "floor-relay" relays bytes over one upstream connection per client (S4).
S1_FLOOR_MAX = 1.05
S4_FLOOR_MAX = 1.05
S4_OTHERS_MAX = 0.75
S2_NGINX_MAX = 0.8
# The columns of the summary table, in order.
COLUMNS = ("shoal", "floor", "nginx", "nginx-reuseport", "HAProxy")
# The HTTPS targets: nginx-tls listens with "ssl reuseport"; haproxy-return answers the 1 KiB
# from memory (HAProxy serves no files), a reference without a target.
TLS = ["shoal-tls", "nginx-tls", "haproxy-return"]
TLS_WRK = [
    ("rps", "req/s", "int", "median"), ("p50_ms", "p50 ms", "2f", "median"),
    ("p99_ms", "p99 ms", "2f", "median"), ("errors", "errors", "int", "sum"),
    ("cpu_us", "CPU µs/req", "1f", "median")]
TLS_HANDSHAKES = TLS_WRK + [("handshakes_per_cpu_s", "handshakes per CPU-second", "int", "median")]
# S11: CPU first (the target's figure), then the bytes each answer took.
GZIP = [
    ("cpu_us", "CPU µs/req", "1f", "median"), ("body_bytes", "gzip body bytes", "int", "median"),
    ("wire_bytes", "bytes on the wire (head + body)", "int", "median"), ("rps", "req/s", "int", "median"),
    ("p50_ms", "p50 ms", "2f", "median"), ("p99_ms", "p99 ms", "2f", "median"), ("errors", "errors", "int", "sum")]
# S11's nginx targets by gzip_comp_level, and each part's shoal and HAProxy.
S11_PARTS = {
    "s11-static": ("S11 gzip static", "shoal-gzip", {1: "nginx-gzip1", 6: "nginx-gzip6"}, None),
    "s11-proxy": ("S11 gzip proxy", "shoal-proxy-gzip", {1: "nginx-proxy-gzip1", 6: "nginx-proxy-gzip6"}, "haproxy-gzip"),
}
# S12's bound on shoal's CPU per request with the guard ÷ without it.
S12_MAX = 1.05
IDLE = [
    ("kib_per_conn_pss", "KiB/conn (Pss)", "2f", "median"), ("kib_per_conn_rss", "KiB/conn (Rss)", "2f", "median"),
    ("kib_per_conn_dirty", "KiB/conn (private dirty)", "2f", "median"),
    ("established", "established at measurement", "int", "median")]

# scenario -> (title, targets in report order, detail columns: (metric, header, format, how))
# how: "median" (with min–max for the first column), "sum" (over rounds) or "max".
SCENARIOS = {
    "s1": ("S1: static 1 KiB, keep-alive", STATIC, [
        ("cpu_us", "CPU µs/req", "1f", "median"), ("rps", "req/s", "int", "median"),
        ("p50_ms", "p50 ms", "2f", "median"), ("p99_ms", "p99 ms", "2f", "median"),
        ("errors", "errors", "int", "sum")]),
    "s2-wrk-close": ("S2: wrk -H \"Connection: close\", a connection per request", STATIC, [
        ("cpu_us", "CPU µs per connection", "1f", "median"), ("rps", "req/s", "int", "median"),
        ("p50_ms", "p50 ms", "2f", "median"), ("p99_ms", "p99 ms", "2f", "median"),
        ("errors", "errors", "int", "sum")]),
    "s2-close": ("S2: ab, a connection per request (no keep-alive)", STATIC, [
        ("rps", "req/s", "int", "median"), ("errors", "failed", "int", "sum"),
        ("cpu_us", "CPU µs/req", "1f", "median")]),
    "s2-keepalive": ("S2: ab -k (HTTP/1.0 keep-alive)", STATIC, [
        ("rps", "req/s", "int", "median"), ("errors", "failed", "int", "sum"),
        ("keepalive_requests", "keep-alive requests", "int", "median"),
        ("cpu_us", "CPU µs/req", "1f", "median")]),
    "s3": ("S3: 64 MiB file over 4 connections", STATIC, [
        ("gbps", "GB/s", "2f", "median"), ("errors", "errors", "int", "sum"),
        ("cpu_ms_per_gb", "CPU ms/GB", "1f", "median")]),
    "s4": ("S4: reverse proxy, 1 KiB, keep-alive on both sides", ["shoal-proxy", "nginx-proxy", "haproxy", "floor-relay"], [
        ("cpu_us", "CPU µs/req", "1f", "median"), ("upstream_cpu_us", "upstream CPU µs/req", "1f", "median"),
        ("rps", "req/s", "int", "median"), ("p50_ms", "p50 ms", "2f", "median"),
        ("p99_ms", "p99 ms", "2f", "median"), ("errors", "errors", "int", "sum")]),
    "s5": ("S5: S1's load during HUP reloads", STATIC, [
        ("errors", "errors per run", "int", "median"), ("reloads", "reloads settled per run", "int", "median"),
        ("closes", "closes with a request outstanding", "int", "median"), ("rps", "req/s", "int", "median"),
        ("cpu_us", "CPU µs/req", "1f", "median")]),
    "s6": ("S6: memory per idle keep-alive connection", STATIC, IDLE),
    "s7": ("S7: start-up, exec to the first 200", ["shoal", "nginx"], [
        ("ms", "ms", "1f", "median")]),
    "s8": ("S8: legacy shield, small requests to a 4-worker sync app while slow clients pull big answers",
           ["shoal-shield", "nginx-shield"], [
        ("rps", "req/s", "int", "median"), ("p50_ms", "p50 ms", "2f", "median"),
        ("p99_ms", "p99 ms", "2f", "median"), ("errors", "errors", "int", "sum"),
        ("cpu_us", "CPU µs/req", "1f", "median")]),
    "s9-low": ("S9: reverse proxy at S4's 64 clients (shoal with max_conns = 64)", ["shoal-capped", "nginx-proxy", "haproxy"], [
        ("rps", "req/s", "int", "median"), ("p99_ms", "p99 ms", "2f", "median"),
        ("errors", "errors", "int", "sum"), ("cpu_us", "CPU µs/req", "1f", "median")]),
    "s9-high": ("S9: reverse proxy at 4,000 clients (shoal with max_conns = 64)", ["shoal-capped", "nginx-proxy", "haproxy"], [
        ("rps", "req/s", "int", "median"), ("p99_ms", "p99 ms", "2f", "median"),
        ("errors", "errors", "int", "sum"), ("cpu_us", "CPU µs/req", "1f", "median")]),
    "s10": ("S10: cached proxy, 1 KiB, keep-alive (every answer a cache hit)", ["shoal-cache", "nginx-cache", "haproxy-cache"], [
        ("rps", "req/s", "int", "median"), ("p50_ms", "p50 ms", "2f", "median"),
        ("p99_ms", "p99 ms", "2f", "median"), ("errors", "errors", "int", "sum"),
        ("cpu_us", "CPU µs/req", "1f", "median"), ("upstream_cpu_us", "upstream CPU µs/req", "1f", "median")]),
    "s11-static": ("S11: static 1 KiB of HTML, gzip, keep-alive (every request asks gzip)",
                   ["shoal-gzip", "nginx-gzip1", "nginx-gzip6"], GZIP),
    "s11-proxy": ("S11: reverse proxy, 1 KiB of HTML, gzip, keep-alive (every request asks gzip)",
                  ["shoal-proxy-gzip", "nginx-proxy-gzip1", "nginx-proxy-gzip6", "haproxy-gzip"],
                  GZIP + [("upstream_cpu_us", "upstream CPU µs/req", "1f", "median")]),
    "s12": ("S12: static 1 KiB, keep-alive, without and with a limit_requests guard that never refuses",
            ["shoal", "shoal-guarded"], [
        ("cpu_us", "CPU µs/req", "1f", "median"), ("rps", "req/s", "int", "median"),
        ("p50_ms", "p50 ms", "2f", "median"), ("p99_ms", "p99 ms", "2f", "median"),
        ("errors", "errors (non-2xx + socket)", "int", "sum")]),
    "s1-tls": ("S1-tls: static 1 KiB, keep-alive HTTPS", TLS, TLS_WRK),
    "s2-tls-full": ("S2-tls: a new TLS connection per request, full handshakes", TLS, TLS_HANDSHAKES),
    "s2-tls-resumed": ("S2-tls: a new TLS connection per request, sessions resumed", TLS, TLS_HANDSHAKES),
    "s6-tls": ("S6-tls: memory per idle keep-alive HTTPS connection", TLS, IDLE),
}

# metric -> (the metric it is computed from, round by round, and how), for the scenarios given.
DERIVED = {
    "handshakes_per_cpu_s": ("cpu_us", lambda us: 1e6 / us if us else None, ("s2-tls-full", "s2-tls-resumed")),
}


def median(values):
    s = sorted(values)
    return s[(len(s) - 1) // 2]


def fmt(value, kind):
    if value is None:
        return "—"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:.{kind[0]}f}"


class Data:
    def __init__(self, results_path, facts_path):
        self.values = collections.defaultdict(list)  # (scenario, target, metric) -> [values]
        with open(results_path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 5 and parts[4] != "":
                    self.values[(parts[0], parts[1], parts[2])].append(float(parts[4]))
        for metric, (source, func, scens) in DERIVED.items():
            for (scen, target, m), vals in list(self.values.items()):
                if m == source and scen in scens:
                    derived = [func(v) for v in vals]
                    self.values[(scen, target, metric)] = [v for v in derived if v is not None]
        self.facts = {}
        with open(facts_path) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("\t")
                self.facts[key] = value

    def has(self, scen, target=None):
        return any(k[0] == scen and (target is None or k[1] == target) for k in self.values)

    def get(self, scen, target, metric, how="median"):
        vals = self.values.get((scen, target, metric))
        if not vals:
            return None
        return {"median": median, "sum": sum, "max": max}[how](vals)

    def minmax(self, scen, target, metric, kind):
        vals = self.values.get((scen, target, metric))
        if not vals:
            return "—"
        return f"{fmt(min(vals), kind)}–{fmt(max(vals), kind)}"


# --- checks against the issue's targets -----------------------------------------------------


class Row:
    """One line of the summary: a figure, who was compared, the ratio(s) and the verdict."""

    def __init__(self, scenario, figure, kind, values, comparisons, target, verdict, bars, missing=None):
        self.scenario = scenario
        self.figure = figure
        self.kind = kind
        self.values = values  # column ("shoal", "nginx", "nginx-reuseport", "HAProxy") -> value
        self.comparisons = comparisons  # [(label, ratio)]
        self.target = target
        self.verdict = verdict  # True, False or None (not run)
        self.bars = bars  # [(label, ratio, target ratio or None, higher_is_better, passed[, text if no ratio])]
        self.missing = missing  # the result's text when there is no verdict, if not "not run"


def ratio(a, b):
    return None if a is None or not b else a / b


def meets(r, target, higher):
    if r is None:
        return None
    return r >= target if higher else r <= target


def all_pass(verdicts):
    if any(v is None for v in verdicts):
        return None
    return all(verdicts)


def best_nginx(d, scen, metric, higher):
    """The nginx configuration with the better median of metric, or None."""
    runs = [(d.get(scen, n, metric), n) for n in NGINXES if d.get(scen, n, metric) is not None]
    if not runs:
        return None
    return (max if higher else min)(runs)[1]


def static_values(d, scen, metric, how="median"):
    return {name: d.get(scen, name, metric, how) for name in STATIC}


def throughput_row(d, label, figure, scen, metric, kind, target):
    """shoal ≥ target × the faster nginx configuration."""
    ref = best_nginx(d, scen, metric, True)
    r = ratio(d.get(scen, "shoal", metric), d.get(scen, ref, metric)) if ref else None
    ok = meets(r, target, True)
    comps = [(f"vs {ref}", r)] if ref else []
    bars = [(f"{label} {figure} vs {ref or 'nginx'} (≥ {target})", r, target, True, ok)]
    return Row(label, figure, kind, static_values(d, scen, metric), comps, f"≥ {target} × the faster nginx",
               ok, bars)


def reference_row(d, label, figure, scen, metric, kind, higher, values=None, shoal="shoal", others=None):
    """shoal beside the better of the others (default: the nginx configurations), no target."""
    others = others or {n: n for n in NGINXES}
    runs = [(d.get(scen, t, metric), column) for column, t in others.items() if d.get(scen, t, metric) is not None]
    ref = (max if higher else min)(runs)[1] if runs else None
    r = ratio(d.get(scen, shoal, metric), d.get(scen, others[ref], metric)) if ref else None
    short = "CPU" if metric.startswith("cpu") else figure
    bars = [(f"{label} {short} vs {ref or 'nginx'} (no target)", r, None, higher, None)]
    return Row(label, figure, kind, values or static_values(d, scen, metric), [(f"vs {ref}", r)] if ref else [],
               None, None, bars)


def s1_p99_row(d):
    ref = best_nginx(d, "s1", "rps", True)
    r = ratio(d.get("s1", "shoal", "p99_ms"), d.get("s1", ref, "p99_ms")) if ref else None
    ok = meets(r, 1.0, False)
    return Row("S1", "p99 ms", "2f", static_values(d, "s1", "p99_ms"), [(f"vs {ref}", r)] if ref else [],
               "≤ the faster nginx's", ok, [(f"S1 p99 vs {ref or 'nginx'} (≤ 1)", r, 1.0, False, ok)])


def s1_cpu_row(d):
    """Static over keep-alive (issue 18): shoal's CPU per request ≤ 1.05 × the floor's; the
    cheaper nginx beside it without a target."""
    values = static_values(d, "s1", "cpu_us")
    r = ratio(values["shoal"], values["floor"])
    ok = meets(r, S1_FLOOR_MAX, False)
    ref = best_nginx(d, "s1", "cpu_us", False)
    rn = ratio(values["shoal"], values.get(ref)) if ref else None
    comps = [("vs the floor", r)] + ([(f"vs {ref} (no target)", rn)] if ref else [])
    bars = [(f"S1 CPU/req vs the floor (≤ {S1_FLOOR_MAX})", r, S1_FLOOR_MAX, False, ok),
            (f"S1 CPU/req vs {ref or 'nginx'} (no target)", rn, None, False, None)]
    return Row("S1", "CPU µs/req", "1f", values, comps, f"≤ {S1_FLOOR_MAX} × the floor's", ok, bars)


def s2_cpu_row(d):
    """A new connection per request with wrk (issue 18): shoal's CPU per connection ≤ 0.8 ×
    the cheaper nginx configuration's; the floor beside it without a target."""
    scen = "s2-wrk-close"
    values = static_values(d, scen, "cpu_us")
    ref = best_nginx(d, scen, "cpu_us", False)
    r = ratio(values["shoal"], values.get(ref)) if ref else None
    ok = meets(r, S2_NGINX_MAX, False)
    rf = ratio(values["shoal"], values["floor"])
    comps = ([(f"vs {ref}", r)] if ref else []) + [("vs the floor (no target)", rf)]
    bars = [(f"S2 CPU/connection vs {ref or 'nginx'} (≤ {S2_NGINX_MAX})", r, S2_NGINX_MAX, False, ok),
            ("S2 CPU/connection vs the floor (no target)", rf, None, False, None)]
    return Row("S2 no keep-alive (wrk)", "CPU µs per connection", "1f", values, comps,
               f"≤ {S2_NGINX_MAX} × the cheaper nginx's", ok, bars)


# S4's targets by summary column.
S4_COLUMNS = {"shoal": "shoal-proxy", "floor": "floor-relay", "nginx": "nginx-proxy", "HAProxy": "haproxy"}


def s4_values(d, metric):
    return {column: d.get("s4", t, metric) for column, t in S4_COLUMNS.items()}


def s4_rows(d):
    """The proxy (issue 18): CPU per request ≤ 1.05 × the relay floor's and ≤ 0.75 × the better
    of nginx and HAProxy; the upstream's CPU beside it; p99 ≤ HAProxy's; req/s without a target."""
    cpu = s4_values(d, "cpu_us")
    r_floor = ratio(cpu["shoal"], cpu["floor"])
    ok_floor = meets(r_floor, S4_FLOOR_MAX, False)
    others = [(cpu[c], c) for c in ("nginx", "HAProxy") if cpu[c] is not None]
    best = min(others)[1] if others else None
    r_best = ratio(cpu["shoal"], cpu[best]) if best else None
    ok_best = meets(r_best, S4_OTHERS_MAX, False)
    comps = [("vs the relay floor", r_floor)] + [(f"vs {c}", ratio(cpu["shoal"], cpu[c])) for c in ("nginx", "HAProxy")]
    bars = [(f"S4 CPU/req vs the relay floor (≤ {S4_FLOOR_MAX})", r_floor, S4_FLOOR_MAX, False, ok_floor),
            (f"S4 CPU/req vs {best or 'nginx or HAProxy'} (≤ {S4_OTHERS_MAX})", r_best, S4_OTHERS_MAX, False, ok_best)]
    rows = [Row("S4 proxy", "CPU µs/req", "1f", cpu, comps,
                f"≤ {S4_FLOOR_MAX} × the relay floor's and ≤ {S4_OTHERS_MAX} × the better of nginx and HAProxy",
                all_pass([ok_floor, ok_best]), bars)]
    upstream = s4_values(d, "upstream_cpu_us")
    rows.append(Row("S4 proxy", "the upstream's CPU µs/req behind each", "1f", upstream,
                    [(f"vs {c}", ratio(upstream["shoal"], upstream[c])) for c in ("floor", "nginx", "HAProxy")],
                    None, None, []))
    rps = s4_values(d, "rps")
    rows.append(Row("S4 proxy", "req/s", "int", rps, [(f"vs {c}", ratio(rps["shoal"], rps[c])) for c in ("nginx", "HAProxy")],
                    None, None, []))
    p99 = s4_values(d, "p99_ms")
    r = ratio(p99["shoal"], p99["HAProxy"])
    ok = meets(r, 1.0, False)
    rows.append(Row("S4 proxy", "p99 ms", "2f", p99, [("vs HAProxy", r), ("vs nginx (no target)", ratio(p99["shoal"], p99["nginx"]))],
                    "≤ HAProxy's", ok, [("S4 p99 vs HAProxy (≤ 1)", r, 1.0, False, ok)]))
    return rows


def s8_rows(d):
    """shoal ≥ nginx in req/s and ≤ nginx in p99, both with default buffering; CPU beside."""
    values = {"shoal": d.get("s8", "shoal-shield", "cpu_us"), "nginx": d.get("s8", "nginx-shield", "cpu_us")}
    rows = [reference_row(d, "S8 shield", "CPU µs/req", "s8", "cpu_us", "1f", False, values,
                          "shoal-shield", {"nginx": "nginx-shield"})]
    for metric, figure, kind, higher in (("rps", "req/s", "int", True), ("p99_ms", "p99 ms", "2f", False)):
        mine = d.get("s8", "shoal-shield", metric)
        r = ratio(mine, d.get("s8", "nginx-shield", metric))
        ok = meets(r, 1.0, higher)
        comps = [("vs nginx", r)]
        values = {"shoal": mine, "nginx": d.get("s8", "nginx-shield", metric)}
        bars = [(f"S8 shield {figure} vs nginx ({'≥' if higher else '≤'} 1)", r, 1.0, higher, ok)]
        rows.append(Row("S8 shield", figure, kind, values, comps, "≥ nginx" if higher else "≤ nginx", ok, bars))
    return rows


def s9_row(d):
    """shoal's CPU per request at 4,000 clients within 1.5 x its own at 64, with no errors."""
    targets = {"shoal": "shoal-capped", "nginx": "nginx-proxy", "HAProxy": "haproxy"}
    values = {label: ratio(d.get("s9-high", t, "cpu_us"), d.get("s9-low", t, "cpu_us")) for label, t in targets.items()}
    errors = d.get("s9-high", "shoal-capped", "errors", "sum")
    mine = values["shoal"]
    ok = None if mine is None else meets(mine, 1.5, False) and errors == 0
    bars = [("S9 shoal CPU/req at 4,000 ÷ at 64 clients (≤ 1.5)", mine, 1.5, False, ok)]
    return Row("S9 flood", "CPU µs/req at 4,000 ÷ at 64 clients", "2f", values, [], "shoal ≤ 1.5, 0 errors",
               ok, bars)


def s10_rows(d):
    """Cache hits (issue 16): shoal's server CPU per hit ≤ 0.6 × nginx's, and ≤ 1.3 × its own
    CPU per request serving the same 1 KiB as a static file in S1 (of the same run)."""
    targets = {"shoal": "shoal-cache", "nginx": "nginx-cache", "HAProxy": "haproxy-cache"}
    hits = {label: d.get("s10", t, "cpu_us") for label, t in targets.items()}
    r = ratio(hits["shoal"], hits["nginx"])
    rh = ratio(hits["shoal"], hits["HAProxy"])
    ok = meets(r, 0.6, False)
    vs_nginx = Row("S10 cached proxy", "CPU µs per hit", "1f", hits,
                   [("vs nginx", r), ("vs HAProxy (no target)", rh)], "≤ 0.6 × nginx's", ok,
                   [("S10 CPU/hit vs nginx (≤ 0.6)", r, 0.6, False, ok)])
    # Each server against its own static S1 figure (nginx: the one without reuseport, as the
    # nginx in S10); HAProxy serves no files.
    own = {"shoal": ratio(hits["shoal"], d.get("s1", "shoal", "cpu_us")),
           "nginx": ratio(hits["nginx"], d.get("s1", "nginx", "cpu_us"))}
    missing = "n/a: no S1 in this run" if hits["shoal"] is not None and own["shoal"] is None else None
    ok = meets(own["shoal"], 1.3, False)
    vs_s1 = Row("S10 cached proxy", "CPU µs per hit ÷ its own S1 CPU µs/req", "2f", own, [],
                "shoal ≤ 1.3", ok,
                [("S10 shoal CPU/hit ÷ its S1 CPU/req (≤ 1.3)", own["shoal"], 1.3, False, ok, missing or "not run")],
                missing)
    return [vs_nginx, vs_s1]


def comparable_level(d, scen, shoal, levels):
    """The nginx gzip level to hold shoal's CPU against: of the levels whose answers are no
    smaller than shoal's (nginx compressing no better), the cheapest in CPU; if every level
    compresses better than shoal, the one whose answers are largest (the closest to shoal's)."""
    mine = d.get(scen, shoal, "body_bytes")
    runs = [(level, d.get(scen, t, "cpu_us"), d.get(scen, t, "body_bytes")) for level, t in levels.items()]
    runs = [r for r in runs if r[1] is not None and r[2] is not None]
    if mine is None or not runs:
        return None
    no_better = [r for r in runs if r[2] >= mine]
    if no_better:
        return min(no_better, key=lambda r: r[1])[0]
    return max(runs, key=lambda r: r[2])[0]


def s11_rows(d):
    """Compression (issue 17): shoal's CPU per gzip answer ≤ nginx's at the same compression
    ratio, taken as nginx's at the comparable level (comparable_level); both levels are shown
    with their bytes, and HAProxy's compression filter beside them without a target."""
    rows = []
    for scen, (label, shoal, levels, haproxy) in S11_PARTS.items():
        cpu = d.get(scen, shoal, "cpu_us")
        body = d.get(scen, shoal, "body_bytes")
        ref = comparable_level(d, scen, shoal, levels)
        short = label.replace("S11 gzip ", "S11 ")
        comps, bars = [], []
        for level, t in levels.items():
            other = d.get(scen, t, "cpu_us")
            r = ratio(cpu, other)
            size = d.get(scen, t, "body_bytes")
            comps.append((f"vs nginx gzip {level} ({fmt(other, '1f')} µs, {fmt(size, 'int')} B)", r))
            if level == ref:
                bars.insert(0, (f"{short} CPU/answer vs nginx gzip {level} (≤ 1)", r, 1.0, False, meets(r, 1.0, False)))
            else:
                bars.append((f"{short} CPU/answer vs nginx gzip {level} (no target)", r, None, False, None))
        if ref is None:
            bars = [(f"{short} CPU/answer vs nginx at shoal's ratio (≤ 1)", None, 1.0, False, None)]
        if haproxy:
            rh = ratio(cpu, d.get(scen, haproxy, "cpu_us"))
            comps.append((f"vs HAProxy slz ({fmt(d.get(scen, haproxy, 'body_bytes'), 'int')} B; no target)", rh))
            bars.append((f"{short} CPU/answer vs HAProxy (no target)", rh, None, False, None))
        ok = meets(ratio(cpu, d.get(scen, levels[ref], "cpu_us")), 1.0, False) if ref is not None else None
        values = {"shoal": cpu, "nginx": d.get(scen, levels[ref], "cpu_us") if ref is not None else None,
                  "HAProxy": d.get(scen, haproxy, "cpu_us") if haproxy else None}
        shoal_bytes = "" if body is None else f"; shoal's {fmt(body, 'int')} B"
        goal = (f"≤ nginx's at gzip {ref} (the cheapest level compressing no better than shoal)"
                if ref is not None else "≤ nginx's at the same ratio")
        figure = "CPU µs per gzip answer" + (f" (nginx column: gzip {ref}{shoal_bytes})" if ref is not None else "")
        rows.append(Row(label, figure, "1f", values, comps, goal, ok, bars))
        sizes = {"shoal": body, "nginx": d.get(scen, levels[ref], "body_bytes") if ref is not None else None,
                 "HAProxy": d.get(scen, haproxy, "body_bytes") if haproxy else None}
        size_comps = [(f"vs nginx gzip {level}", ratio(body, d.get(scen, t, "body_bytes"))) for level, t in levels.items()]
        rows.append(Row(label, "gzip body bytes per answer (of 1,024)", "int", sizes, size_comps, None, None, []))
    return rows


def s12_row(d):
    """A limit_requests guard that never refuses (issue 17): shoal's CPU per request with it
    ≤ 1.05 × without it, measured in the same rounds, and no answer but 2xx."""
    guarded = d.get("s12", "shoal-guarded", "cpu_us")
    plain = d.get("s12", "shoal", "cpu_us")
    r = ratio(guarded, plain)
    errors = d.get("s12", "shoal-guarded", "errors", "sum")
    ok = None if r is None else meets(r, S12_MAX, False) and errors == 0
    return Row("S12 guarded static", "CPU µs/req with a limit_requests guard that never refuses", "1f",
               {"shoal": guarded}, [(f"vs shoal without it ({fmt(plain, '1f')} µs)", r)],
               f"≤ {S12_MAX} × shoal without it (same rounds), no 429", ok,
               [(f"S12 shoal CPU/req with the guard ÷ without (≤ {S12_MAX})", r, S12_MAX, False, ok)])


def s12_paired(d):
    """S12's rounds paired: shoal-guarded's CPU per request ÷ shoal's of the same round."""
    plain = d.values.get(("s12", "shoal", "cpu_us"), [])
    guarded = d.values.get(("s12", "shoal-guarded", "cpu_us"), [])
    return [g / p for p, g in zip(plain, guarded) if p]


def s5_row(d, hups):
    values = static_values(d, "s5", "errors", "sum")
    reloads = d.values.get(("s5", "shoal", "reloads"), [])
    ok = None
    if values["shoal"] is not None:
        ok = values["shoal"] == 0 and all(r >= hups for r in reloads)
    figure = f"errors in all rounds ({hups} HUPs each)"
    return Row("S5 reloads", figure, "int", values, [], "0 errors", ok, [])


def absolute_row(d, label, figure, scen, metric, kind, limit, unit):
    """shoal ≤ limit (an absolute target); the ratio to the better nginx is shown."""
    ref = best_nginx(d, scen, metric, False)
    mine = d.get(scen, "shoal", metric)
    r = ratio(mine, d.get(scen, ref, metric)) if ref else None
    ok = None if mine is None else mine <= limit
    text = f"≤ {limit} {unit}"
    shoal_text = "" if mine is None else f", shoal {fmt(mine, kind)}"
    bars = [(f"{label} vs {ref or 'nginx'} (target {text}{shoal_text})", r, None, False, ok)]
    return Row(label, figure, kind, static_values(d, scen, metric), [(f"vs {ref}", r)] if ref else [], text, ok, bars)


def tls_values(d, scen, metric):
    return {"shoal": d.get(scen, "shoal-tls", metric), "nginx-reuseport": d.get(scen, "nginx-tls", metric),
            "HAProxy": d.get(scen, "haproxy-return", metric)}


def tls_row(d, label, figure, short, scen, metric, kind, target, goal):
    """shoal-tls ÷ nginx-tls, against target (≤; None: no target), and shoal-tls ÷ haproxy-return
    beside it as information."""
    values = tls_values(d, scen, metric)
    r = ratio(values["shoal"], values["nginx-reuseport"])
    rh = ratio(values["shoal"], values["HAProxy"])
    ok = meets(r, target, False) if target is not None else None
    aim = f"≤ {target:g}" if target is not None else "no target"
    comps = [("vs nginx-tls", r), ("vs haproxy-return (no target)", rh)]
    bars = [(f"{label} {short} vs nginx ({aim})", r, target, False, ok),
            (f"{label} {short} vs haproxy-return (no target)", rh, None, False, None)]
    return Row(label, figure, kind, values, comps, goal, ok, bars)


def tls_rows(d):
    return [
        tls_row(d, "S1-tls", "CPU µs/req", "CPU/req", "s1-tls", "cpu_us", "1f", 0.75, "≤ 0.75 × nginx's"),
        tls_row(d, "S2-tls full", "CPU µs per full handshake", "CPU/handshake", "s2-tls-full", "cpu_us", "1f", 1.0,
                "≤ 1.0 × nginx's (handshakes per CPU-second ≥ nginx's)"),
        tls_row(d, "S2-tls resumed", "CPU µs per resumed handshake", "CPU/handshake", "s2-tls-resumed", "cpu_us",
                "1f", 1.0, "≤ 1.0 × nginx's (handshakes per CPU-second ≥ nginx's)"),
        tls_row(d, "S6-tls idle memory", "KiB per idle HTTPS connection (Pss)", "KiB/conn", "s6-tls",
                "kib_per_conn_pss", "2f", None, None),
    ]


def summary_rows(d):
    """Every scenario's rows, the CPU per request (or per unit) first."""
    hups = int(d.facts.get("hups", "18"))
    return [
        s1_cpu_row(d),
        throughput_row(d, "S1", "req/s", "s1", "rps", "int", 1.3),
        s1_p99_row(d),
        s2_cpu_row(d),
        reference_row(d, "S2 no keep-alive (wrk)", "req/s", "s2-wrk-close", "rps", "int", True),
        reference_row(d, "S2 no keep-alive (ab)", "req/s", "s2-close", "rps", "int", True),
        throughput_row(d, "S2 keep-alive (ab)", "req/s", "s2-keepalive", "rps", "int", 1.3),
        reference_row(d, "S3 64 MiB", "CPU ms/GB", "s3", "cpu_ms_per_gb", "1f", False),
        throughput_row(d, "S3 64 MiB", "GB/s", "s3", "gbps", "2f", 1.0),
        *s4_rows(d),
        s5_row(d, hups),
        reference_row(d, "S5 reloads", "CPU µs/req during the reloads", "s5", "cpu_us", "1f", False),
        absolute_row(d, "S6 idle memory", "KiB per idle connection (Pss)", "s6", "kib_per_conn_pss", "2f", 0.5, "KiB"),
        absolute_row(d, "S7 start-up", "ms from exec to the first 200", "s7", "ms", "1f", 50, "ms"),
        *s8_rows(d),
        s9_row(d),
        *s10_rows(d),
        *s11_rows(d),
        s12_row(d),
        *tls_rows(d),
    ]


# --- markdown -------------------------------------------------------------------------------


def verdict_text(v):
    return "not run" if v is None else ("pass" if v else "**FAIL**")


def row_result(row):
    """The result column: the verdict, or for a row without a target "—" (or "not run")."""
    if row.target is not None:
        if row.verdict is None and row.missing:
            return row.missing
        return verdict_text(row.verdict)
    return "not run" if all(v is None for v in row.values.values()) else "—"


def summary_table(rows):
    out = ["| scenario | figure (median) | shoal | floor | nginx | nginx-reuseport | HAProxy | shoal ÷ other | target | result |",
           "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for row in rows:
        cells = [fmt(row.values.get(c), row.kind) for c in COLUMNS]
        comps = ", ".join(f"{'—' if r is None else f'{r:.2f}'} {label}" for label, r in row.comparisons) or "—"
        out.append(f"| {row.scenario} | {row.figure} | " + " | ".join(cells) +
                   f" | {comps} | {row.target or 'none'} | {row_result(row)} |")
    return out


def detail_section(d, scen):
    title, targets, columns = SCENARIOS[scen]
    lines = [f"### {title}", ""]
    cmd = d.facts.get(f"cmd.{scen}")
    if cmd:
        lines += [f"`{cmd}`", ""]
    first_metric, first_header, first_kind, _ = columns[0]
    header = ["target", f"{first_header} (median)", "min–max"] + [
        f"{h} ({'sum' if how == 'sum' else 'median'})" for _, h, _, how in columns[1:]]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "---:|" * (len(header) - 1))
    for t in targets:
        if not d.has(scen, t):
            continue
        cells = [t, fmt(d.get(scen, t, first_metric), first_kind), d.minmax(scen, t, first_metric, first_kind)]
        cells += [fmt(d.get(scen, t, m, how), kind) for m, _, kind, how in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def report(d, svg_name):
    f = d.facts
    lines = [
        "## Results",
        "",
        f"Run of {f.get('date', '?')}.",
        "",
        f"- command: `{f.get('command', 'scripts/bench.sh')}`",
        f"- machine: {f.get('machine', '?')}",
        f"- load average just before the run: {f.get('load', '?')}",
        f"- software: {f.get('software', '?')}",
        f"- servers: {f.get('servers', '?')}",
        f"- method: {f.get('method', '?')}",
        *([f"- TLS: {f['tls']}"] if "tls" in f else []),
        "",
        "### Against the targets",
        "",
        *summary_table(summary_rows(d)),
        "",
        "Each scenario leads with the server's CPU per request (per connection in S2, per GB in S3):",
        "utime + stime of its whole process tree over the run, divided by what it served; on this",
        "2-core machine, where the load generator (and in S4 the upstream) shares the cores with the",
        "server, req/s says more about the machine than about the server. The floor column holds",
        "the physical floors of `benches/floor/`: for S1 and S2 a fixed 1 KiB answer from memory",
        "(`static_floor.c`), for S4 an L4 byte relay with one upstream connection per client",
        "(`relay_floor.c`); the S4 rows also give the shared upstream's CPU behind each proxy.",
        "Ratios divide shoal's median by the other server's median; in the static scenarios the",
        "other is the nginx configuration (with or without `reuseport`) that did better on that",
        "figure (for S1's p99 the one faster in S1's req/s), in S4 the floor, nginx and HAProxy.",
        "Lower is better for CPU, p99, memory and start-up. Rows whose target is \"none\" are",
        "there to read beside the others (the S2 ab rows are the former S2, kept as secondary).",
        "In the HTTPS rows (S1-tls, S2-tls, S6-tls) the other is nginx-tls (`listen ... ssl",
        "reuseport`, in the nginx-reuseport column); the HAProxy column is haproxy-return, which",
        "answers the 1 KiB from memory instead of serving a file, so the ratio to it has no target.",
        "In the S10 rows the others are nginx and HAProxy with their caches; the second S10 row",
        "divides each server's CPU per hit by its own S1 CPU µs/req (nginx: without `reuseport`), so",
        "it needs S1 in the same run.",
        "In the S11 rows every request asks gzip; the nginx column is nginx at the gzip level",
        "the target compares with: of levels 1 and 6, the cheapest whose answers are no smaller than",
        "shoal's (nginx compressing no better than shoal), else the one whose answers are largest;",
        "the ratios to both levels and their bytes stand in the shoal ÷ other column. The HAProxy",
        "column is HAProxy's compression filter (libslz), with no target. The S12 row divides",
        "shoal's CPU per request with the guard by its own without it, measured in the same rounds.",
        "",
        f"![shoal ÷ the floors, nginx and HAProxy, medians of this run]({svg_name})",
        "",
    ]
    for scen in SCENARIOS:
        if d.has(scen):
            lines += detail_section(d, scen)
            if scen == "s12" and s12_paired(d):
                lines += ["Round by round, shoal-guarded's CPU µs/req ÷ shoal's: " +
                          ", ".join(f"{r:.3f}" for r in s12_paired(d)) + ".", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def readme_summary(d):
    f = d.facts
    return "\n".join([
        *summary_table(summary_rows(d)),
        "",
        f"Run of {f.get('date', '?')} on {f.get('machine', '?')}: `{f.get('command', 'scripts/bench.sh')}`;",
        "methods, per-scenario tables and the exact commands in [docs/benchmarks.md](docs/benchmarks.md).",
    ]) + "\n"


def replace_marked(path, name, body):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        sys.exit(f"report.py: {path} has no {begin} ... {end} section")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{begin}\n{body}{end}{tail}")


# --- SVG ------------------------------------------------------------------------------------

GREEN, RED, GREY = "#2e7d32", "#c62828", "#9e9e9e"


def chart(d):
    rows = summary_rows(d)
    bars = [b for row in rows for b in row.bars]
    label_w, plot_w, row_h, top = 390, 360, 26, 100
    ratios = [b[1] for b in bars if b[1] is not None] + [b[2] for b in bars if b[2] is not None]
    x_max = max(2.0, min(5.0, (int(max(ratios, default=1.0) * 1.15 * 2) + 1) / 2))
    width = label_w + plot_w + 90
    s5 = next(r for r in rows if r.scenario.startswith("S5"))
    height = top + row_h * len(bars) + 64

    def x(v):
        return label_w + plot_w * min(v, x_max) / x_max

    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="20" font-size="15" font-weight="bold">shoal ÷ the floors / nginx / HAProxy, medians</text>',
        f'<text x="10" y="38" fill="#444">run of {esc(d.facts.get("date", "?"))}; '
        f'{esc(d.facts.get("machine_short", ""))}</text>',
        '<text x="10" y="54" fill="#444">bar: the ratio (green: target met, red: missed, grey: no target)</text>',
        '<text x="10" y="70" fill="#444">black tick: the target (throughput: at least; p99, memory, start-up, '
        'CPU: at most)</text>',
    ]
    tick = 0.0
    while tick <= x_max + 1e-9:
        colour = "#000" if abs(tick - 1.0) < 1e-9 else "#ddd"
        out.append(f'<line x1="{x(tick):.1f}" y1="{top - 6}" x2="{x(tick):.1f}" '
                   f'y2="{top + row_h * len(bars)}" stroke="{colour}"/>')
        out.append(f'<text x="{x(tick):.1f}" y="{top - 9}" text-anchor="middle" fill="#444">{tick:g}</text>')
        tick += 0.5
    for i, (label, r, target, higher, ok, *missing) in enumerate(bars):
        y = top + i * row_h
        colour = GREY if ok is None else (GREEN if ok else RED)
        out.append(f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{esc(label)}</text>')
        if r is not None:
            out.append(f'<rect x="{label_w}" y="{y + 5}" width="{x(r) - label_w:.1f}" height="{row_h - 10}" '
                       f'fill="{colour}"/>')
            more = "+" if r > x_max else ""
            # Right of the bar and of the target tick, whichever ends later.
            at = max(x(r), x(target) + 2 if target is not None else 0) + 4
            out.append(f'<text x="{at:.1f}" y="{y + 17}">{r:.2f}{more}</text>')
        else:
            out.append(f'<text x="{label_w + 4}" y="{y + 17}" fill="{GREY}">{esc(missing[0] if missing else "not run")}</text>')
        if target is not None:
            out.append(f'<line x1="{x(target):.1f}" y1="{y + 2}" x2="{x(target):.1f}" y2="{y + row_h - 2}" '
                       f'stroke="black" stroke-width="3"/>')
    y = top + row_h * len(bars) + 24
    errs = ", ".join(f"{name} {fmt(s5.values.get(name), 'int')}" for name in STATIC if s5.values.get(name) is not None)
    s5_text = f"{errs} (target 0: {verdict_text(s5.verdict).strip('*')})" if errs else "not run"
    out.append(f'<text x="10" y="{y}">S5, errors during {esc(d.facts.get("hups", "18"))} HUP reloads under load '
               f'(all rounds): {esc(s5_text)}</text>')
    out.append(f'<text x="10" y="{y + 20}" fill="#444">scripts/bench.sh; tables in docs/benchmarks.md</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("facts")
    parser.add_argument("--docs", help="replace the bench-results section of this markdown file")
    parser.add_argument("--readme", help="replace the bench-summary section of this markdown file")
    parser.add_argument("--svg", help="write the chart of the ratios here")
    parser.add_argument("--svg-link", default="bench-ratios.svg", help="the chart's path as the report links it")
    args = parser.parse_args()
    d = Data(args.results, args.facts)
    text = report(d, args.svg_link)
    sys.stdout.write(text)
    if args.docs:
        replace_marked(args.docs, "bench-results", text)
    if args.readme:
        replace_marked(args.readme, "bench-summary", readme_summary(d))
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(chart(d))


if __name__ == "__main__":
    main()
