#!/usr/bin/env python3
"""S8's slow clients: READERS connections that each ask for PATH and read the answer slowly.

    slow_readers.py PORT READERS PATH BYTES_PER_SECOND

Each reader has a 16 KiB receive buffer (so the kernel holds little for it) and reads at most
BYTES_PER_SECOND / 10 bytes every 100 ms; a reader whose answer is complete asks again. Runs
until SIGTERM, then prints one line: `readers=R bytes=B responses=N errors=E` (responses
read to the end; errors: connections refused, reset or closed early). One thread, one
selector. Python standard library only.
"""

import selectors
import signal
import socket
import sys
import time


class Reader:
    def __init__(self, port, path):
        self.port, self.path = port, path
        self.sock = None
        self.open()

    def open(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.connect(("127.0.0.1", self.port))
        self.sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        self.sock.setblocking(False)
        self.head = b""
        self.left = None  # body bytes still due, once the head is read


def main():
    port, readers, path, rate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    per_tick = max(1, rate // 10)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    all_readers = [Reader(port, path) for _ in range(readers)]
    total = responses = errors = 0
    while not stopping:
        for r in all_readers:
            try:
                data = r.sock.recv(per_tick)
            except BlockingIOError:
                continue
            except OSError:
                data = None
            if not data:
                errors += r.left != 0
                r.sock.close()
                r.open()
                continue
            if r.left is None:
                r.head += data
                if b"\r\n\r\n" not in r.head:
                    continue
                head, data = r.head.split(b"\r\n\r\n", 1)
                lengths = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                r.left = lengths[0] if lengths else 0
            total += len(data)
            r.left -= len(data)
            if r.left <= 0:
                responses += 1
                r.sock.close()
                r.open()
        time.sleep(0.1)
    print(f"readers={readers} bytes={total} responses={responses} errors={errors}")


if __name__ == "__main__":
    main()
