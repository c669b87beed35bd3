"""Leak soak: many connections of every kind through two ThreadingTCPServers
(one on the fast path, one running the Python hooks), then the process's
descriptors, threads and memory are compared with their baselines.

The connections mix echo requests, handlers that raise (handle_error is
silenced), clients that reset mid-request (SO_LINGER 0, then close),
half-closed clients (shutdown(SHUT_WR), then read) and, a few, clients that
connect and send nothing until the handler's timeout drops them.

    python bench/leak_soak.py --connections 20000

The last line printed is a JSON object with the figures; the exit status
is 1 when a check failed.
"""

import argparse
import collections
import gc
import json
import os
import socket
import struct
import sys
import threading
import time

from clients import read_line, run_clients, serving

import socketserver_rs as socketserver

HANDLER_TIMEOUT = 0.2
IDLE_EVERY = 400  # one connection in this many sends nothing


class Handler(socketserver.StreamRequestHandler):
    timeout = HANDLER_TIMEOUT

    def handle(self):
        for line in self.rfile:
            if line == b"raise\n":
                raise ValueError("the client asked for it")
            self.wfile.write(line)


HANDLER_ERRORS = collections.Counter()
_errors_lock = threading.Lock()


class Server(socketserver.ThreadingTCPServer):
    def handle_error(self, request, client_address):
        with _errors_lock:
            HANDLER_ERRORS[sys.exc_info()[0].__name__] += 1


class FaithfulServer(Server):
    def verify_request(self, request, client_address):
        return True


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def read_to_eof(sock):
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def one_connection(address, number):
    """One client of the kind `number` selects; returns an error or None."""
    kind = (
        "idle"
        if number % IDLE_EVERY == 7
        else ("echo", "echo", "echo", "raise", "reset", "half")[number % 6]
    )
    with socket.create_connection(address, timeout=10) as sock:
        if kind == "echo":
            for n in range(2):  # two requests on the connection
                line = b"echo %d %d\n" % (number, n)
                sock.sendall(line)
                if read_line(sock) != line:
                    return f"{kind} {number}: wrong reply"
        elif kind == "raise":
            sock.sendall(b"raise\n")
            if read_to_eof(sock) != b"":
                return f"{kind} {number}: unexpected reply"
        elif kind == "reset":
            sock.sendall(b"partial line, no newline")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif kind == "half":
            line = b"half %d\n" % number
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            if read_to_eof(sock) != line:
                return f"{kind} {number}: wrong reply"
        else:
            start = time.monotonic()
            if read_to_eof(sock) != b"":
                return f"{kind} {number}: unexpected reply"
            if time.monotonic() - start < HANDLER_TIMEOUT * 0.5:
                return f"{kind} {number}: dropped before the timeout"
    return None


def batch(addresses, numbers, clients):
    """Run the connections `numbers` over `clients` threads; the errors."""

    def request(number):
        # Every kind of connection goes to every server.
        return one_connection(addresses[(number // 6) % len(addresses)], number)

    return run_clients(numbers, clients, request)


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run(connections=2000, clients=8, warmup=300, retire_timeout=15.0):
    threads_before = threading.active_count()
    servers = [Server(("127.0.0.1", 0), Handler), FaithfulServer(("127.0.0.1", 0), Handler)]
    result = {"connections": connections}
    with serving(servers, 0.5):
        addresses = [s.server_address for s in servers]
        fds_base = fd_count()
        errors = batch(addresses, range(warmup), clients)
        wait_until(lambda: fd_count() <= fds_base, 5)
        gc.collect()
        rss_base = rss_bytes()

        start = time.monotonic()
        errors += batch(addresses, range(warmup, warmup + connections), clients)
        result["elapsed_s"] = round(time.monotonic() - start, 3)
        result["client_errors"] = len(errors)
        result["first_errors"] = errors[:5]
        result["handler_errors"] = dict(HANDLER_ERRORS)

        def settled():
            return (
                fd_count() <= fds_base
                and all(not s._threads for s in servers)
                and threading.active_count() <= threads_before + len(servers)
            )

        start = time.monotonic()
        result["settled"] = wait_until(settled, retire_timeout)
        result["settled_after_s"] = round(time.monotonic() - start, 3)
        gc.collect()
        result["fds"] = [fds_base, fd_count()]
        result["workers_left"] = sum(len(s._threads) for s in servers)
        result["threads"] = [threads_before + len(servers), threading.active_count()]
        rss = rss_bytes()
        result["rss"] = [rss_base, rss]
        result["rss_growth"] = round(rss / rss_base - 1, 4)
    result["threads_after_close"] = [threads_before, threading.active_count()]
    result["ok"] = (
        not errors
        and result["settled"]
        and result["rss_growth"] < 0.10
        and threading.active_count() == threads_before
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    result = run(args.connections, args.clients)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
