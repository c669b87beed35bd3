"""Soak: mixed load against a ThreadingTCPServer and a ThreadingUDPServer
for a while; every reply is checked.

Load: keep-alive echo over several long-lived connections, a new
connection per request, and UDP ping-pong. A TCP request whose reply is
wrong or missing is an error; a UDP datagram whose reply does not come
within a second is counted as lost (UDP may lose) and reported.

    python bench/soak.py --seconds 60 [--module socketserver]

The last line printed is a JSON object with the figures; the exit status
is 1 when a TCP request failed or took longer than a second.
"""

import argparse
import importlib
import json
import socket
import sys
import threading
import time

from clients import read_line, serving

# A TCP reply later than this (seconds) counts as slow: every request has a
# thread of its own, so none should wait for another connection to end.
SLOW = 1.0


def handlers(socketserver):
    class Echo(socketserver.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    class Pong(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(b"pong " + data, self.client_address)

    return Echo, Pong


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {
            "tcp_keepalive": 0,
            "tcp_per_connection": 0,
            "tcp_errors": 0,
            "udp_sent": 0,
            "udp_received": 0,
            "udp_lost": 0,
            "udp_wrong": 0,
            "tcp_slow": 0,
        }
        self.first_errors = []
        self.slowest = 0.0

    def latency(self, seconds):
        """A TCP reply took this long; over SLOW it counts as slow."""
        with self.lock:
            self.slowest = max(self.slowest, seconds)
            if seconds > SLOW:
                self.counts["tcp_slow"] += 1

    def add(self, name, error=None):
        with self.lock:
            self.counts[name] += 1
            if error is not None and len(self.first_errors) < 5:
                self.first_errors.append(error)


def keepalive_client(address, tag, deadline, stats):
    number = 0
    try:
        with socket.create_connection(address, timeout=10) as sock:
            while time.monotonic() < deadline:
                line = b"keepalive %d %d %s\n" % (tag, number, b"x" * (number % 200))
                start = time.monotonic()
                sock.sendall(line)
                reply = read_line(sock)
                stats.latency(time.monotonic() - start)
                if reply == line:
                    stats.add("tcp_keepalive")
                else:
                    stats.add("tcp_errors", f"keepalive {tag} {number}: {reply[:40]!r}")
                    return
                number += 1
    except OSError as exc:
        stats.add("tcp_errors", f"keepalive {tag} {number}: {exc!r}")


def per_connection_client(address, tag, deadline, stats):
    number = 0
    while time.monotonic() < deadline:
        line = b"once %d %d\n" % (tag, number)
        start = time.monotonic()
        try:
            with socket.create_connection(address, timeout=10) as sock:
                sock.sendall(line)
                reply = read_line(sock)
            stats.latency(time.monotonic() - start)
        except OSError as exc:
            stats.add("tcp_errors", f"once {tag} {number}: {exc!r}")
            number += 1
            continue
        if reply == line:
            stats.add("tcp_per_connection")
        else:
            stats.add("tcp_errors", f"once {tag} {number}: {reply[:40]!r}")
        number += 1


def udp_client(address, tag, deadline, stats):
    number = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        while time.monotonic() < deadline:
            payload = b"ping %d %d" % (tag, number)
            sock.sendto(payload, address)
            stats.add("udp_sent")
            try:
                while True:
                    reply, _ = sock.recvfrom(4096)
                    if reply == b"pong " + payload:
                        stats.add("udp_received")
                        break
                    # A late reply to an earlier ping: already counted lost.
                    stats.add("udp_wrong")
            except socket.timeout:
                stats.add("udp_lost")
            number += 1


def run(seconds=10.0, keepalive=4, per_connection=2, udp=2, module="socketserver_rs"):
    socketserver = importlib.import_module(module)
    Echo, Pong = handlers(socketserver)
    stats = Stats()
    tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    udp_server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Pong)
    servers = [tcp, udp_server]
    with serving(servers, 0.05):
        deadline = time.monotonic() + seconds
        load = []
        for tag in range(keepalive):
            load.append((keepalive_client, tcp.server_address, tag))
        for tag in range(per_connection):
            load.append((per_connection_client, tcp.server_address, tag))
        for tag in range(udp):
            load.append((udp_client, udp_server.server_address, tag))
        threads = [
            threading.Thread(target=func, args=(address, tag, deadline, stats))
            for func, address, tag in load
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result = {"module": module, "seconds": seconds, **stats.counts}
    result["first_errors"] = stats.first_errors
    result["tcp_slowest_s"] = round(stats.slowest, 4)
    sent = result["udp_sent"]
    result["udp_loss_rate"] = round(result["udp_lost"] / sent, 6) if sent else None
    result["ok"] = (
        result["tcp_errors"] == 0
        and result["tcp_slow"] == 0
        and (result["tcp_keepalive"] > 0 and result["tcp_per_connection"] > 0)
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--module", default="socketserver_rs", help="or socketserver, to compare")
    args = parser.parse_args(argv)
    result = run(args.seconds, module=args.module)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
