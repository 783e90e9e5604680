#!/usr/bin/env python3
"""Helpers of scripts/soak.sh (standard library only).

  soak.py ws-upstream PORT
      A WebSocket echo upstream on 127.0.0.1:PORT (RFC 6455 handshake, echoes text and binary
      frames, answers pings and closes), one thread per connection.
  soak.py clients --port P --site DIR --duration S --out FILE
      Checking clients against shoal on 127.0.0.1:P until S seconds are up; every answer is
      verified and every failure counted (the summary JSON goes to FILE):
        websocket   sessions through /ws/: handshake, messages of 1 B to 70 KB echoed, close
        checker     static files compared byte for byte, proxied JSON, chunked uploads echoed
        trickler    heads sent a byte a second: must get 408 and a close
        non-reader  a 16 MiB file requested and never read: must be cut by the send timeout
  soak.py report --samples CSV --events CSV --warmup S --svg FILE
      Judges the samples (flat after warm-up, see judge()) and draws them as an SVG.
      Exit 0 when flat, 1 when not.
"""

import argparse
import base64
import csv
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IO_TIMEOUT = 15.0


# --- HTTP and WebSocket on raw sockets ----------------------------------------------------------

def read_head(sock, buf=b""):
    """Reads up to the end of a response head; returns (head, bytes after it)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise IOError("closed before a complete head (got %r)" % buf[:200])
        buf += data
        if len(buf) > 1 << 20:
            raise IOError("head over 1 MiB")
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def header(head, name):
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def status_of(head):
    parts = head.split(" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def read_exact(sock, n, buf):
    while len(buf) < n:
        data = sock.recv(max(65536, n - len(buf)))
        if not data:
            raise IOError("closed with %d of %d bytes" % (len(buf), n))
        buf += data
    return buf[:n], buf[n:]


def read_body(sock, head, rest):
    """The body of a response, by Content-Length or chunked; returns (body, leftover)."""
    length = header(head, "Content-Length")
    if length is not None:
        return read_exact(sock, int(length), rest)
    if (header(head, "Transfer-Encoding") or "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                data = sock.recv(65536)
                if not data:
                    raise IOError("closed inside chunked framing")
                rest += data
            line, rest = rest.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            chunk, rest = read_exact(sock, size + 2, rest)
            if size == 0:
                return body, rest
            body += chunk[:-2]
    raise IOError("response without framing: %s" % head.split("\r\n")[0])


def ws_frame(opcode, payload, mask=True):
    first = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        size = bytes([bit | n])
    elif n < 65536:
        size = bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        size = bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return first + size + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return first + size + key + masked


def ws_read(sock, buf):
    """One frame: returns (opcode, payload, leftover)."""
    two, buf = read_exact(sock, 2, buf)
    opcode, n, masked = two[0] & 0x0F, two[1] & 0x7F, two[1] & 0x80
    if n == 126:
        ext, buf = read_exact(sock, 2, buf)
        n = int.from_bytes(ext, "big")
    elif n == 127:
        ext, buf = read_exact(sock, 8, buf)
        n = int.from_bytes(ext, "big")
    key = b""
    if masked:
        key, buf = read_exact(sock, 4, buf)
    payload, buf = read_exact(sock, n, buf)
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return opcode, payload, buf


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


# --- the WebSocket echo upstream ----------------------------------------------------------------

def ws_upstream(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    print("ws-upstream listening on 127.0.0.1:%d" % port, flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=ws_serve, args=(conn,), daemon=True).start()


def ws_serve(conn):
    try:
        conn.settimeout(600)
        head, buf = read_head(conn)
        key = header(head, "Sec-WebSocket-Key")
        if (header(head, "Upgrade") or "").lower() != "websocket" or not key:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n\r\n" % ws_accept(key)).encode())
        while True:
            opcode, payload, buf = ws_read(conn, buf)
            if opcode == 0x8:
                conn.sendall(ws_frame(0x8, payload[:2], mask=False))
                return
            if opcode == 0x9:
                conn.sendall(ws_frame(0xA, payload, mask=False))
            elif opcode in (0x1, 0x2):
                conn.sendall(ws_frame(opcode, payload, mask=False))
    except (IOError, OSError):
        pass
    finally:
        conn.close()


# --- checking clients ---------------------------------------------------------------------------

class Tally:
    """Successes and failures of one kind of client (the first few failures kept)."""

    def __init__(self, kind):
        self.kind, self.ok, self.failed, self.errors = kind, 0, 0, []
        self.lock = threading.Lock()

    def success(self):
        with self.lock:
            self.ok += 1

    def failure(self, why):
        with self.lock:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append("%.1fs: %s" % (time.time() - START, why))

    def summary(self):
        return {"kind": self.kind, "ok": self.ok, "failed": self.failed, "errors": self.errors}


START = time.time()


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def websocket_session(port, rng):
    sock = connect(port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(("GET /ws/echo HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        head, buf = read_head(sock)
        if status_of(head) != 101 or header(head, "Sec-WebSocket-Accept") != ws_accept(key):
            raise IOError("handshake answered %r" % head.split("\r\n")[0])
        for _ in range(rng.randint(5, 30)):
            size = rng.choice([1, 125, 126, 4000, 65535, 65536, 70000])
            payload = os.urandom(size)
            sock.sendall(ws_frame(0x2, payload))
            opcode, echoed, buf = ws_read(sock, buf)
            if opcode != 0x2 or echoed != payload:
                raise IOError("echo of %d bytes came back as opcode %d, %d bytes" % (size, opcode, len(echoed)))
        sock.sendall(ws_frame(0x8, (1000).to_bytes(2, "big")))
        opcode, _, buf = ws_read(sock, buf)
        if opcode != 0x8:
            raise IOError("no close frame back (opcode %d)" % opcode)
    finally:
        sock.close()


class Conversation:
    """Requests on a keep-alive connection, reconnecting after an answer that says
    `Connection: close` (a draining worker says so; it is not a failure)."""

    def __init__(self, port):
        self.port, self.sock, self.rest = port, None, b""

    def ask(self, request):
        if self.sock is None:
            self.sock, self.rest = connect(self.port), b""
        self.sock.sendall(request)
        head, self.rest = read_head(self.sock, self.rest)
        body, self.rest = read_body(self.sock, head, self.rest)
        if (header(head, "Connection") or "").lower() == "close":
            self.close()
        return head, body

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def checker_round(port, site, rng):
    """A few static GETs, a proxied GET and a chunked upload, every answer compared."""
    talk = Conversation(port)
    try:
        for _ in range(5):
            name = rng.choice(["1k.bin", "64k.bin", "300k.bin"])
            head, body = talk.ask(("GET /%s HTTP/1.1\r\nHost: soak\r\n\r\n" % name).encode())
            if status_of(head) != 200 or body != site[name]:
                raise IOError("GET /%s: %s, %d bytes" % (name, head.split("\r\n")[0], len(body)))
        head, body = talk.ask(b"GET /api/users/2 HTTP/1.1\r\nHost: soak\r\n\r\n")
        if status_of(head) != 200 or json.loads(body).get("name") != "Grace Hopper":
            raise IOError("GET /api/users/2: %s %r" % (head.split("\r\n")[0], body[:100]))
        token = "%032x" % rng.getrandbits(128)
        upload = json.dumps({"token": token, "pad": "x" * rng.randint(0, 200000)}).encode()
        chunks = b""
        for i in range(0, len(upload), 16384):
            piece = upload[i:i + 16384]
            chunks += b"%x\r\n%s\r\n" % (len(piece), piece)
        head, body = talk.ask(b"POST /api/users HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n"
                              b"Content-Type: application/json\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
        if status_of(head) != 201 or json.loads(body).get("received") != json.loads(upload):
            raise IOError("POST /api/users: %s, %d bytes" % (head.split("\r\n")[0], len(body)))
    finally:
        talk.close()


def trickle(port, header_timeout):
    """A head sent a byte a second: shoal must answer 408 and close within its header timeout."""
    sock = connect(port)
    try:
        sock.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: soak\r\nX-Slow: ")
        got = b""
        deadline = time.time() + header_timeout + 10
        sock.settimeout(1.0)
        while time.time() < deadline:
            try:
                data = sock.recv(4096)
            except socket.timeout:
                sock.sendall(b"s")
                continue
            if not data:
                if got.startswith(b"HTTP/1.1 408 "):
                    return
                raise IOError("closed after %r" % got[:100])
            got += data
        raise IOError("still open %ds after its head began (got %r)" % (header_timeout + 10, got[:100]))
    finally:
        sock.close()


def never_read(port, send_timeout, full_length):
    """A 16 MiB file requested and not read: shoal must cut it after its send timeout."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(IO_TIMEOUT)
    sock.connect(("127.0.0.1", port))
    try:
        sock.sendall(b"GET /16m.bin HTTP/1.1\r\nHost: soak\r\n\r\n")
        time.sleep(send_timeout + 5)
        got = 0
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            got += len(data)
        if got >= full_length:
            raise IOError("the whole response (%d bytes) came through" % got)
    except socket.timeout:
        raise IOError("not closed by shoal: the read timed out")
    finally:
        sock.close()


def loop(tally, until, body, pause=0.0):
    rng = random.Random()
    while time.time() < until:
        try:
            body(rng)
            tally.success()
        except (IOError, OSError, ValueError) as e:
            tally.failure("%s: %s" % (type(e).__name__, e))
        if pause:
            time.sleep(pause)


def clients(args):
    until = START + args.duration
    site = {name: open(os.path.join(args.site, name), "rb").read() for name in ["1k.bin", "64k.bin", "300k.bin"]}
    full = os.path.getsize(os.path.join(args.site, "16m.bin"))
    tallies = {kind: Tally(kind) for kind in ["websocket", "checker", "trickler", "non-reader"]}
    plan = [("websocket", lambda rng: websocket_session(args.port, rng), 0.0)] * args.websockets
    plan += [("checker", lambda rng: checker_round(args.port, site, rng), 0.0)] * args.checkers
    plan += [("trickler", lambda rng: trickle(args.port, args.header_timeout), 0.0)] * args.tricklers
    plan += [("non-reader", lambda rng: never_read(args.port, args.send_timeout, full), 1.0)] * args.non_readers
    threads = [threading.Thread(target=loop, args=(tallies[kind], until, body, pause), daemon=True)
               for kind, body, pause in plan]
    for thread in threads:
        thread.start()
    # Each loop finishes its round after `until`: a round is bounded by its own timeouts.
    for thread in threads:
        thread.join(args.duration + 120)
    summary = [tally.summary() for tally in tallies.values()]
    with open(args.out, "w") as out:
        json.dump(summary, out, indent=1)
    for item in summary:
        print("%-10s ok %6d  failed %d" % (item["kind"], item["ok"], item["failed"]))
        for error in item["errors"]:
            print("    " + error)
    return 0 if all(item["failed"] == 0 and item["ok"] > 0 for item in summary) else 1


# --- judging and plotting -----------------------------------------------------------------------

# A series is flat when, after warm-up, the highest value of its last third is at most its
# first third's highest value times RATIO plus SLACK (absolute, for small numbers and noise).
RATIO = 1.2
SLACK = {"worker_rss_mib": 4.0, "master_rss_mib": 1.0, "worker_fds": 16, "master_fds": 4}


def load_series(path):
    """Per sample time: the largest worker RSS, all workers' fds summed, the master's RSS and fds."""
    by_time = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            t = float(row["elapsed_s"])
            point = by_time.setdefault(t, {"worker_rss_mib": 0.0, "worker_fds": 0, "master_rss_mib": 0.0,
                                           "master_fds": 0})
            rss, fds = int(row["rss_kib"]) / 1024.0, int(row["fds"])
            if row["process"] == "master":
                point["master_rss_mib"], point["master_fds"] = rss, fds
            else:
                point["worker_rss_mib"] = max(point["worker_rss_mib"], rss)
                point["worker_fds"] += fds
    return sorted(by_time.items())


def judge(series, warmup):
    after = [(t, p) for t, p in series if t >= warmup]
    if len(after) < 6:
        return False, ["too few samples after the %ds warm-up (%d): run longer" % (warmup, len(after))]
    third = len(after) // 3
    first, last = after[:third], after[-third:]
    verdicts, flat = [], True
    for key, slack in SLACK.items():
        first_max = max(p[key] for _, p in first)
        last_max = max(p[key] for _, p in last)
        bound = first_max * RATIO + slack
        ok = last_max <= bound
        flat &= ok
        verdicts.append("%-15s first third max %8.1f  last third max %8.1f  bound %8.1f  %s"
                        % (key, first_max, last_max, bound, "flat" if ok else "GROWING"))
    return flat, verdicts


def svg(series, events, warmup, path):
    width, height, left, right, top, panel, gap = 900, 560, 70, 20, 30, 220, 50
    times = [t for t, _ in series] or [0.0]
    t_max = max(times[-1], 1.0)
    panels = [("RSS (MiB)", [("worker_rss_mib", "largest worker", "#1f77b4"), ("master_rss_mib", "master", "#d62728")]),
              ("open fds", [("worker_fds", "all workers", "#2ca02c"), ("master_fds", "master", "#9467bd")])]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">'
           % (width, height), '<rect width="100%" height="100%" fill="white"/>']
    x = lambda t: left + (width - left - right) * t / t_max
    for i, (title, lines) in enumerate(panels):
        y0 = top + i * (panel + gap)
        v_max = max([p[key] for _, p in series for key, _, _ in lines] + [1.0]) * 1.1
        y = lambda v: y0 + panel - panel * v / v_max
        out.append('<text x="%d" y="%d" font-weight="bold">%s</text>' % (left, y0 - 8, title))
        out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>'
                   % (left, y0, width - left - right, panel))
        for k in range(5):
            v = v_max * k / 4
            out.append('<text x="%d" y="%.1f" text-anchor="end">%.0f</text>' % (left - 5, y(v) + 4, v))
        out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="#eee"/>'
                   % (left, y0, x(min(warmup, t_max)) - left, panel))
        for t, event in events:
            colour = "#ff7f0e" if "recycl" in event else "#bbb"
            out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="3,3"/>'
                       % (x(t), y0, x(t), y0 + panel, colour))
        for n, (key, label, colour) in enumerate(lines):
            points = " ".join("%.1f,%.1f" % (x(t), y(p[key])) for t, p in series)
            out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>' % (points, colour))
            out.append('<text x="%d" y="%d" fill="%s">%s</text>' % (left + 10 + 130 * n, y0 + 14, colour, label))
    bottom = top + 2 * panel + gap
    for k in range(6):
        t = t_max * k / 5
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%.0f s</text>' % (x(t), bottom + 16, t))
    out.append('<text x="%d" y="%d">grey: warm-up; dashed: reloads (grey) and recycling reloads (orange)</text>'
               % (left, bottom + 34))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def report(args):
    series = load_series(args.samples)
    events = []
    if os.path.exists(args.events):
        with open(args.events) as f:
            events = [(float(row["elapsed_s"]), row["event"]) for row in csv.DictReader(f)]
    svg(series, events, args.warmup, args.svg)
    flat, verdicts = judge(series, args.warmup)
    for line in verdicts:
        print(line)
    return 0 if flat else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ws-upstream")
    p.add_argument("port", type=int)
    p = sub.add_parser("clients")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--header-timeout", type=float, default=5)
    p.add_argument("--send-timeout", type=float, default=10)
    p.add_argument("--websockets", type=int, default=4)
    p.add_argument("--checkers", type=int, default=2)
    p.add_argument("--tricklers", type=int, default=16)
    p.add_argument("--non-readers", type=int, default=2)
    p = sub.add_parser("report")
    p.add_argument("--samples", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--svg", required=True)
    args = parser.parse_args()
    if args.command == "ws-upstream":
        ws_upstream(args.port)
    elif args.command == "clients":
        sys.exit(clients(args))
    else:
        sys.exit(report(args))


if __name__ == "__main__":
    main()
