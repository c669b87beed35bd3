#!/usr/bin/env python3
"""How long a good client waits behind silent ones: 16 TLS clients that
never start their handshake, or 16 PROXY protocol clients that stall in
their header, against a ThreadingTCPServer with max_threads = 8, on the
standard module (TLS only: it has no PROXY support) and on socketserver_rs.
Prints the good client's connect-to-reply time, median of a few rounds,
alone and behind the silent clients, and the delay they add.

    python3 bench/silent_clients.py [--rounds 5]

Runs in the interpreter that runs it, with socketserver_rs installed; the
standard module's TLS case is cut at 2 s (its good client would wait until
a silent one gives up).
"""

import argparse
import logging
import socket
import socketserver
import ssl
import statistics
import threading
import time
from pathlib import Path

import socketserver_rs
from socketserver_rs.proxy import ProxyProtocolMixIn

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
CERT, KEY = DATA / "localhost.crt", DATA / "localhost.key"
SILENT = 16
GIVE_UP = 2.0


def server_context():
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, KEY)
    return context


def tls_server(mod):
    class Echo(mod.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    class Server(mod.ThreadingTCPServer):
        daemon_threads = True
        max_threads = 8
        handshake_timeout = 60

    server = Server(("127.0.0.1", 0), Echo)
    server.socket = server_context().wrap_socket(server.socket, server_side=True)
    return server


def proxy_server(mod):
    class Echo(mod.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    class Server(ProxyProtocolMixIn, mod.ThreadingTCPServer):
        daemon_threads = True
        max_threads = 8
        proxy_header_timeout = 60

    return Server(("127.0.0.1", 0), Echo)


def tls_client(address):
    context = ssl.create_default_context(cafile=str(CERT))
    with socket.create_connection(address, timeout=GIVE_UP) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(b"hi\n")
            return conn.recv(64)


def proxy_client(address):
    with socket.create_connection(address, timeout=GIVE_UP) as conn:
        conn.sendall(b"PROXY TCP4 10.1.1.1 10.0.0.1 1 2\r\nhi\n")
        return conn.recv(64)


def timed(client, address):
    started = time.perf_counter()
    try:
        client(address)
    except OSError:
        return None  # gave up
    return time.perf_counter() - started


def stalled(address, stall):
    # A server stuck in a handshake stops accepting, and its backlog fills.
    try:
        sock = socket.create_connection(address, timeout=GIVE_UP)
        sock.sendall(stall)
        return sock
    except OSError:
        return None


def measure(make_server, client, stall, rounds):
    alone, behind = [], []
    for _ in range(rounds):
        server = make_server()
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        address = server.server_address
        alone.append(timed(client, address))
        silent = [sock for sock in (stalled(address, stall) for _ in range(SILENT)) if sock]
        time.sleep(0.2)  # let the server take them: a benchmark, not a test
        behind.append(timed(client, address))
        for sock in silent:
            sock.close()
        server.shutdown()
        server.server_close()
    return alone, behind


def show(name, alone, behind):
    def ms(values):
        if any(value is None for value in values):
            return f"gave up after {GIVE_UP:.0f} s"
        return f"{statistics.median(values) * 1000:8.2f} ms"

    delay = (
        f"{(statistics.median(behind) - statistics.median(alone)) * 1000:8.2f} ms"
        if None not in behind + alone
        else "-"
    )
    print(f"{name:<30} alone {ms(alone)}, behind {SILENT} silent {ms(behind)}, delay {delay}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # Each silent client's end is logged; the figures are what matters here.
    logging.getLogger("socketserver_rs").setLevel(logging.ERROR)
    show(
        "standard, TLS",
        *measure(lambda: tls_server(socketserver), tls_client, b"", 1),
    )
    show(
        "socketserver_rs, TLS",
        *measure(lambda: tls_server(socketserver_rs), tls_client, b"", args.rounds),
    )
    show(
        "socketserver_rs, PROXY header",
        *measure(
            lambda: proxy_server(socketserver_rs), proxy_client, b"PROXY TCP4 1.2", args.rounds
        ),
    )


if __name__ == "__main__":
    main()
