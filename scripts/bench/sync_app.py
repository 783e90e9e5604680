#!/usr/bin/env python3
"""S8's legacy app: a gunicorn-style pre-fork server with WORKERS sync workers.

    sync_app.py PORT WORKERS SITE_DIR BIG_BYTES [BIG_LOG]

Each worker accepts one connection, reads one request, writes the whole answer (blocking while
its reader is slow: a worker held by a slow client serves nobody else), closes, and only then
accepts the next, like a gunicorn sync worker or a PHP-FPM child. GET /big answers BIG_BYTES
bytes (and, with BIG_LOG, appends one byte to that file once it is written whole); any other
path answers the file of that name in SITE_DIR (404 if there is none).
The parent only waits; SIGTERM stops it and its workers. Python standard library only.
"""

import ctypes
import os
import signal
import socket
import sys


def serve(listener, site, big, big_log):
    while True:
        conn, _ = listener.accept()
        try:
            if answer(conn, site, big) and big_log:
                with open(big_log, "ab") as log:
                    log.write(b".")
        except OSError:
            pass
        finally:
            conn.close()


def answer(conn, site, big):
    """Answers one request; true when it was /big."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        data = conn.recv(4096)
        if not data:
            return False
        head += data
    path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else "/"
    if path == "/big":
        body, status = big, "200 OK"
    else:
        try:
            with open(os.path.join(site, os.path.basename(path)), "rb") as f:
                body, status = f.read(), "200 OK"
        except OSError:
            body, status = b"not found\n", "404 Not Found"
    conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    return path == "/big"


def main():
    port, workers, site, big_bytes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    big_log = sys.argv[5] if len(sys.argv) > 5 else None
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    big = bytes(range(256)) * (big_bytes // 256)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            # Die with the parent, however it goes (PR_SET_PDEATHSIG = 1, SIGKILL).
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)
            serve(listener, site, big, big_log)
        children.append(pid)

    def stop(*_):
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in children:
        os.wait()


if __name__ == "__main__":
    main()
