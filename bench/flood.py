#!/usr/bin/env python3
"""Latency under a flood, thread model: a probe client's request latency
while other clients send length-prefixed messages as fast as they can.

Each server runs in a process of its own: the standard module's
ThreadingTCPServer with a StreamRequestHandler that reads a 4-byte header
and the body from rfile and writes the reply to wfile, and ours, a
MessageRequestHandler with event_driven = False on ThreadingTCPServer (a
thread per connection). --flooders connections, from a second process,
each send messages without waiting for the replies (a second thread reads
and counts those); the probe, from this process, sends one message at a
time and times each reply. Prints the probe's mean, p50 and p99 latency
and the flood's messages/s for both servers, and the ratios.

    python3 bench/flood.py [--flooders 8] [--duration 5] [--size 64]

Loopback only; about 2 * (duration + 2) seconds.
"""

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import threading
import time

WINDOW = 32  # messages in each of a flooder's sends


def serve(impl):
    if impl == "std":
        import socketserver

        class Echo(socketserver.StreamRequestHandler):
            def handle(self):
                while len(header := self.rfile.read(4)) == 4:
                    body = self.rfile.read(int.from_bytes(header, "big"))
                    self.wfile.write(header + body)

    else:
        import socketserver_rs as socketserver

        class Echo(socketserver.MessageRequestHandler):
            event_driven = False

            def handle_message(self, message):
                return message

    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # served until the harness closes our input


def frame(payload):
    return len(payload).to_bytes(4, "big") + payload


def recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(max(n - len(data), 65536))
        if not chunk:
            raise ConnectionError("server closed")
        data += chunk
    return data


def flood(port, conns, size):
    """Each connection sends messages without waiting for the replies, which
    a second thread reads and counts, until our input closes."""
    blob = frame(b"f" * size) * WINDOW
    received = []

    def send(sock):
        with contextlib.suppress(OSError):
            while True:
                sock.sendall(blob)

    def drain(sock):
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received.append(len(chunk))

    for _ in range(conns):
        sock = socket.create_connection(("127.0.0.1", port))
        threading.Thread(target=send, args=(sock,), daemon=True).start()
        threading.Thread(target=drain, args=(sock,), daemon=True).start()
    print("flooding", flush=True)
    sys.stdin.read()
    print(sum(received) // (size + 4), flush=True)


def probe(port, duration, size):
    """Sequential requests for `duration` seconds: each latency in ms."""
    message = frame(b"p" * size)
    latencies = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            began = time.perf_counter()
            sock.sendall(message)
            recv_exactly(sock, len(message))
            latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def spawn(*args):
    # A connection reset as the run ends is no news: stderr is dropped.
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def measure(impl, args):
    server = spawn("serve", impl)
    try:
        port = int(server.stdout.readline())
        flooders = spawn("flood", str(port), str(args.flooders), str(args.size))
        try:
            flooders.stdout.readline()
            began = time.perf_counter()
            time.sleep(0.5)  # let the flood reach its pace (not synchronisation)
            latencies = probe(port, args.duration, args.size)
        finally:
            flooded, _ = flooders.communicate(timeout=10)
        elapsed = time.perf_counter() - began
    finally:
        server.communicate(timeout=10)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "mean": statistics.fmean(latencies),
        "p50": statistics.median(latencies),
        "p99": p99,
        "n": len(latencies),
        "flood": int(flooded) / elapsed,
    }


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        return serve(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "flood":
        return flood(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    results = {impl: measure(impl, args) for impl in ("std", "rs")}
    print(f"probe latency, {args.flooders} flooding clients, {args.size}-byte messages")
    print(f"{'':12}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}{'probes':>10}{'flood msg/s':>14}")
    for impl, name in (("std", "socketserver"), ("rs", "ours")):
        r = results[impl]
        print(
            f"{name:12}{r['mean']:10.3f}{r['p50']:10.3f}{r['p99']:10.3f}"
            f"{r['n']:10}{r['flood']:14.0f}"
        )
    std, rs = results["std"], results["rs"]
    ratios = "".join(f"{rs[key] / std[key]:10.2f}" for key in ("mean", "p50", "p99"))
    print(f"{'ours/std':12}{ratios}{rs['n'] / std['n']:10.2f}{rs['flood'] / std['flood']:14.2f}")


if __name__ == "__main__":
    main()
