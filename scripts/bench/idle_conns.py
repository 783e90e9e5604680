#!/usr/bin/env python3
"""S6 and S6-tls of scripts/bench.sh: the server memory that idle keep-alive connections cost.

Against a server listening on 127.0.0.1:PORT whose master has pid PID:
  1. warm-up: WARMUP short connections, one GET each, closed (so caches and lazily built
     per-worker state exist before the first measurement);
  2. measures the server's process tree (PID and all its descendants): the sum of Rss, Pss and
     Private_Dirty from /proc/<pid>/smaps_rollup;
  3. opens CONNS connections one after the other, sends one GET PATH on each and reads the
     whole response (200, Content-Length bytes), then leaves the connection open and idle;
  4. waits SETTLE seconds, counts the server's ESTABLISHED sockets on PORT with
     `ss -Htn state established '( sport = :PORT )'` and measures the tree again;
  5. closes everything and prints one line of key=value words (sizes in KiB):
     conns established rss_before rss_after pss_before pss_after dirty_before dirty_after
     kib_per_conn_rss kib_per_conn_pss kib_per_conn_dirty pids_before pids_after
Exits 1 when a connection could not be opened or answered, or when fewer than CONNS sockets
are established at the measurement. The per-connection figures count user-space memory
only: the kernel's socket buffers are not in any process's smaps. Pss is the fair sum for a
master and forked workers (a page shared by n processes counts 1/n in each).

With --tls every connection (the warm-up ones too) is HTTPS: Python's ssl module with its
default client settings (TLS 1.2 or 1.3), SNI "localhost", the certificate not verified. Each
handshake is complete before the GET, so the figure includes the TLS state a server keeps for
an idle connection.

RLIMIT_NOFILE: the soft limit is raised to the hard limit; CONNS + 64 must fit under it.
"""

import argparse
import os
import resource
import socket
import ssl
import subprocess
import sys
import time

FIELDS = ("Rss", "Pss", "Private_Dirty")


def tree(pid):
    """pid and all its descendants (children of every thread), depth first."""
    out = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        for kid in kids:
            out.extend(tree(int(kid)))
    return out


def memory(pid):
    """({field: KiB summed over the tree}, [pids]) for FIELDS."""
    pids = tree(pid)
    total = dict.fromkeys(FIELDS, 0)
    for p in pids:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in total:
                    total[name] += int(rest.split()[0])
    return total, pids


def established(port):
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def get(sock, request, path):
    """Sends request and reads one complete 200 response to it from a blocking socket."""
    sock.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before the response head to GET {path}")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if lines[0].split(b" ")[1:2] != [b"200"]:
        raise ConnectionError(f"GET {path}: {lines[0].decode(errors='replace')}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ConnectionError(f"GET {path}: no Content-Length")
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed in the body of GET {path}")
        body += data


def connector(tls):
    """A function (address) -> connected blocking socket, over TLS when tls."""
    if not tls:
        return lambda addr: socket.create_connection(addr, timeout=10)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def connect(addr):
        sock = socket.create_connection(addr, timeout=10)
        try:
            return context.wrap_socket(sock, server_hostname="localhost")
        except BaseException:
            sock.close()
            raise

    return connect


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server's master")
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds")
    parser.add_argument("--tls", action="store_true", help="HTTPS (not verified, SNI localhost)")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.conns + 64:
        sys.exit(f"idle_conns: RLIMIT_NOFILE hard limit {hard} < {args.conns + 64}; raise ulimit -Hn")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    request = f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    addr = ("127.0.0.1", args.port)
    connect = connector(args.tls)
    for _ in range(args.warmup):
        with connect(addr) as s:
            get(s, request, args.path)
    time.sleep(args.settle)
    before, pids_before = memory(args.pid)

    socks = []
    try:
        for i in range(args.conns):
            try:
                s = connect(addr)
                socks.append(s)
                get(s, request, args.path)
            except (OSError, ConnectionError) as err:
                sys.exit(f"idle_conns: connection {i + 1} of {args.conns}: {err}")
        time.sleep(args.settle)
        count = established(args.port)
        after, pids_after = memory(args.pid)
    finally:
        for s in socks:
            s.close()

    result = {"conns": args.conns, "established": count}
    for field, key in zip(FIELDS, ("rss", "pss", "dirty")):
        result[f"{key}_before"] = before[field]
        result[f"{key}_after"] = after[field]
    for field, key in zip(FIELDS, ("rss", "pss", "dirty")):
        result[f"kib_per_conn_{key}"] = f"{(after[field] - before[field]) / args.conns:.3f}"
    result["pids_before"] = ",".join(map(str, pids_before))
    result["pids_after"] = ",".join(map(str, pids_after))
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    if count < args.conns:
        sys.exit(f"idle_conns: only {count} of {args.conns} connections were established at the measurement")


if __name__ == "__main__":
    main()
