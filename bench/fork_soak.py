"""Forking soak: many requests through ForkingTCPServer and ForkingUDPServer
with a small max_children, from several client threads at once.

Each child marks the start and the end of its handler in a shared file
(O_APPEND), and the parent records how many children it has not yet reaped
after every fork; both must stay within max_children. After server_close()
no child of this process may remain, zombie or alive.

    python bench/fork_soak.py --requests 2000

The last line printed is a JSON object with the figures; the exit status
is 1 when a check failed.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import warnings

from clients import read_line, run_clients, serving

import socketserver_rs as socketserver

# Forking while client threads run is what this measures (3.12+ warns).
warnings.simplefilter("ignore", DeprecationWarning)

HANDLER_SECONDS = 0.003


def mark(fd, what):
    os.write(fd, b"%s %d %d\n" % (what, os.getpid(), time.monotonic_ns()))


def concurrency(path):
    """The most handlers that ran at once, from the start/end marks."""
    events = []
    with open(path, "rb") as marks:
        for line in marks:
            what, _, when = line.split()
            events.append((int(when), 1 if what == b"S" else -1))
    events.sort(key=lambda event: (event[0], event[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most, sum(step == 1 for _, step in events)


def children_of(pid):
    """(pid, state) of every process whose parent is pid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


def make_server(kind, max_children, marks_fd):
    if kind == "tcp":

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline()
                mark(marks_fd, b"S")
                time.sleep(HANDLER_SECONDS)
                mark(marks_fd, b"E")
                self.wfile.write(line)

        base = socketserver.ForkingTCPServer
    else:

        class Handler(socketserver.DatagramRequestHandler):
            def handle(self):
                mark(marks_fd, b"S")
                time.sleep(HANDLER_SECONDS)
                mark(marks_fd, b"E")
                self.wfile.write(self.rfile.read())

        base = socketserver.ForkingUDPServer

    class Server(base):
        most_unreaped = 0

        def process_request(self, request, client_address):
            super().process_request(request, client_address)
            self.most_unreaped = max(self.most_unreaped, len(self.active_children or ()))

        def service_actions(self):
            self.most_unreaped = max(self.most_unreaped, len(self.active_children or ()))
            super().service_actions()

    Server.max_children = max_children
    return Server(("127.0.0.1", 0), Handler)


def tcp_request(address, number):
    line = b"request %d\n" % number
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(line)
        return read_line(sock) == line


def udp_request(address, number):
    payload = b"datagram %d" % number
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for _ in range(3):  # a datagram may be lost: send again
            sock.sendto(payload, address)
            try:
                while True:
                    reply, _ = sock.recvfrom(4096)
                    if reply == payload:
                        return True
            except socket.timeout:
                continue
    return False


def soak(kind, requests, clients, max_children):
    with tempfile.NamedTemporaryFile(prefix="fork-marks-") as marks:
        marks_fd = os.open(marks.name, os.O_WRONLY | os.O_APPEND)
        try:
            server = make_server(kind, max_children, marks_fd)
            send = tcp_request if kind == "tcp" else udp_request

            def request(number):
                return None if send(server.server_address, number) else number

            with serving([server], 0.05):
                start = time.monotonic()
                failures = run_clients(range(requests), clients, request)
                elapsed = time.monotonic() - start
        finally:
            os.close(marks_fd)
        most_running, handled = concurrency(marks.name)
    try:
        reaped = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        reaped = None
    return {
        "requests": requests,
        "elapsed_s": round(elapsed, 3),
        "failed": len(failures),
        "first_failures": failures[:5],
        "handled": handled,
        "most_unreaped": server.most_unreaped,
        "most_running": most_running,
        "children_left": children_of(os.getpid()),
        "waitpid": reaped,
    }


def run(requests=300, clients=8, max_children=5):
    result = {"max_children": max_children}
    for kind in ("tcp", "udp"):
        result[kind] = soak(kind, requests, clients, max_children)
    result["ok"] = all(
        r["failed"] == 0
        and r["most_unreaped"] <= max_children
        and r["most_running"] <= max_children
        and not r["children_left"]
        and r["waitpid"] is None
        for r in (result["tcp"], result["udp"])
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-children", type=int, default=5)
    args = parser.parse_args(argv)
    result = run(args.requests, args.clients, args.max_children)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
