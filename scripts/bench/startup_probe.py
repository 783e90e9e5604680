#!/usr/bin/env python3
"""S7 of scripts/bench.sh: time from exec to the first served request.

    startup_probe.py --port PORT --size BYTES [--log FILE] -- COMMAND [ARG...]

Takes time.monotonic(), starts COMMAND (a server that will listen on 127.0.0.1:PORT), then
tries, every INTERVAL (1 ms), to connect and GET PATH; the first 200 whose body has BYTES bytes
stops the clock. Prints one line, `ms=M attempts=N`, then stops the server it started: SIGTERM,
up to 5 s grace, SIGKILL, always by its pid (also when this probe is itself terminated).
Exits 1 when the server exits or does not answer within TIMEOUT seconds.

The clock includes fork and exec of the server (a fraction of a millisecond) and the probe's
own polling granularity (about 1 ms).
"""

import argparse
import signal
import socket
import subprocess
import sys
import time


def try_get(port, request, size):
    """True when one GET is answered 200 with a body of size bytes; False when not yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(request)
            buf = b""
            while True:
                data = s.recv(65536)
                if not data:
                    break
                buf += data
    except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
        return False
    head, _, body = buf.partition(b"\r\n\r\n")
    return head.split(b" ")[1:2] == [b"200"] and len(body) == size


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--size", type=int, required=True, help="expected body bytes")
    parser.add_argument("--interval", type=float, default=0.001, help="seconds between tries")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--log", default="/dev/null", help="the server's stdout and stderr")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    # Terminated (by bench.sh's cleanup): still stop the server, in the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    request = f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()

    with open(args.log, "ab") as log:
        start = time.monotonic()
        proc = subprocess.Popen(args.command, stdout=log, stderr=log)
    try:
        attempts = 0
        while True:
            attempts += 1
            if try_get(args.port, request, args.size):
                elapsed = time.monotonic() - start
                break
            if proc.poll() is not None:
                sys.exit(f"startup_probe: the server exited with status {proc.returncode}")
            if time.monotonic() - start > args.timeout:
                sys.exit(f"startup_probe: no 200 within {args.timeout} s")
            time.sleep(args.interval)
        print(f"ms={elapsed * 1000:.3f} attempts={attempts}")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
