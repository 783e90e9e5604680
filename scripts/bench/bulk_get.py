#!/usr/bin/env python3
"""S3 of scripts/bench.sh: how fast a server pushes one large file over a few connections.

Opens CONNS keep-alive connections to 127.0.0.1:PORT and, on each, asks for PATH again and
again until DURATION seconds have passed; a response in flight then is finished, none is
started. Every response must be 200 with Content-Length SIZE. Prints one line:

    bytes=B seconds=S gbps=G responses=N errors=E

where bytes counts body bytes, seconds runs from the first request to the last byte, and
gbps is bytes / seconds / 1e9 (decimal GB, as `wrk` and `ab` report).

Why not wrk or curl: on loopback the receiver pays for copying every byte out of the kernel,
so a client that reads the body (wrk reads 8 KiB at a time, curl copies to its buffer and
writes it out) saturates a core before the server does, and every server measures the same.
This client discards body bytes in the kernel (recv with MSG_TRUNC, which TCP supports since
Linux 2.4: no copy to user space), so the figure is bounded by how fast the server feeds the
socket (sendfile or not, buffer sizes, wakeups) and by the kernel's loopback path. One thread
and one epoll set: the client's own CPU time stays small.
"""

import argparse
import selectors
import socket
import sys
import time

HEAD_LIMIT = 16 * 1024
CHUNK = 4 * 1024 * 1024  # the most one recv may discard


class Conn:
    """One keep-alive connection: sending a request, reading a head, or discarding a body."""

    def __init__(self, port, request):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.request = request
        self.head = b""
        self.remaining = 0

    def send_request(self):
        # A request of about 60 bytes always fits an empty send buffer.
        self.sock.send(self.request)
        self.head = b""
        self.remaining = -1  # -1: reading the head

    def close(self):
        self.sock.close()


def parse_head(head):
    """(status, content_length) of a response head (without the blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    length = -1
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, length


class Run:
    def __init__(self, args):
        self.args = args
        self.request = f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        self.scratch = bytearray(CHUNK)
        self.sel = selectors.DefaultSelector()
        self.bytes = 0
        self.responses = 0
        self.errors = 0
        self.deadline = 0.0
        self.open = 0

    def start(self, conn):
        conn.send_request()
        self.sel.register(conn.sock, selectors.EVENT_READ, conn)
        self.open += 1

    def finish(self, conn, failed):
        self.sel.unregister(conn.sock)
        conn.close()
        self.open -= 1
        if failed:
            self.errors += 1
            if self.errors > 100:
                sys.exit("bulk_get: more than 100 errors; giving up")
            if time.monotonic() < self.deadline:
                self.start(Conn(self.args.port, self.request))

    def on_readable(self, conn):
        """Reads until the socket would block; False when the connection is done with."""
        for _ in range(64):
            try:
                if conn.remaining < 0:
                    data = conn.sock.recv(65536)
                    if not data:
                        return self.finish(conn, True)
                    conn.head += data
                    end = conn.head.find(b"\r\n\r\n")
                    if end < 0:
                        if len(conn.head) > HEAD_LIMIT:
                            return self.finish(conn, True)
                        continue
                    status, length = parse_head(conn.head[:end])
                    if status != 200 or length != self.args.size:
                        print(f"bulk_get: status {status}, length {length}", file=sys.stderr)
                        return self.finish(conn, True)
                    body = len(conn.head) - end - 4
                    conn.remaining = length - body
                    self.bytes += body
                else:
                    n = conn.sock.recv_into(self.scratch, min(conn.remaining, CHUNK), socket.MSG_TRUNC)
                    if n == 0:
                        return self.finish(conn, True)
                    conn.remaining -= n
                    self.bytes += n
                if conn.remaining == 0:
                    self.responses += 1
                    if time.monotonic() >= self.deadline:
                        return self.finish(conn, False)
                    conn.send_request()
            except BlockingIOError:
                return None
            except OSError as err:
                print(f"bulk_get: {err}", file=sys.stderr)
                return self.finish(conn, True)
        return None

    def run(self):
        start = time.monotonic()
        self.deadline = start + self.args.duration
        hard_stop = self.deadline + 30
        for _ in range(self.args.conns):
            self.start(Conn(self.args.port, self.request))
        while self.open > 0:
            if time.monotonic() > hard_stop:
                sys.exit("bulk_get: responses still unfinished 30 s after the deadline")
            for key, _ in self.sel.select(timeout=1.0):
                self.on_readable(key.data)
        seconds = time.monotonic() - start
        print(
            f"bytes={self.bytes} seconds={seconds:.3f} gbps={self.bytes / seconds / 1e9:.3f}"
            f" responses={self.responses} errors={self.errors}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/64m.bin")
    parser.add_argument("--size", type=int, required=True, help="expected Content-Length")
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    Run(parser.parse_args()).run()


if __name__ == "__main__":
    main()
