"""server.stats(): live counters kept in the core."""

import socket
import ssl
import threading
from pathlib import Path

import pytest
from conftest import IO_TIMEOUT, read_to_eof, wait_until

import socketserver_rs


class Echo(socketserver_rs.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if line == b"fail\n":
                raise ValueError("asked to")
            if line == b"hold\n":
                self.server.holding.set()
                self.server.release.wait(IO_TIMEOUT)
            self.wfile.write(line)


class Quiet:
    def handle_error(self, request, client_address):
        pass


@pytest.mark.parametrize("threaded", [False, True], ids=["plain", "threading"])
def test_counts_requests_errors_and_bytes(runner, path, threaded):
    base = socketserver_rs.ThreadingTCPServer if threaded else socketserver_rs.TCPServer
    server_class = type("Server", (Quiet, base), {})
    if path == "faithful":
        server_class.verify_request = lambda self, request, client_address: True
    server = runner.track(server_class(("127.0.0.1", 0), Echo))
    server.holding, server.release = threading.Event(), threading.Event()
    assert server.stats()["requests_total"] == 0
    runner.start(server)
    for _ in range(3):
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
            client.sendall(b"abc\n")
            assert client.recv(16) == b"abc\n"
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        client.sendall(b"fail\n")
        assert client.recv(16) == b""
    assert wait_until(lambda: server.stats()["requests_active"] == 0)
    stats = server.stats()
    assert stats["requests_total"] == 4
    assert stats["errors"] == 1
    assert stats["accept_errors"] == 0
    assert stats["bytes_received"] == 3 * 4 + 5
    assert stats["bytes_sent"] == 3 * 4
    if threaded:
        assert stats["workers_busy"] == 0
        assert stats["workers_idle"] >= 1


def test_active_requests_and_busy_workers_while_serving(runner, path):
    server_class = socketserver_rs.ThreadingTCPServer
    if path == "faithful":
        server_class = type("Faithful", (server_class,), {"verify_request": lambda *args: True})
    server = runner.track(server_class(("127.0.0.1", 0), Echo))
    server.holding, server.release = threading.Event(), threading.Event()
    runner.start(server)
    client = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    try:
        client.sendall(b"hold\n")
        assert server.holding.wait(IO_TIMEOUT)
        stats = server.stats()
        assert stats["requests_active"] == 1
        assert stats["workers_busy"] == 1
        server.release.set()
        assert client.recv(16) == b"hold\n"
    finally:
        client.close()
    assert wait_until(lambda: server.stats()["requests_active"] == 0)


def test_datagrams_are_requests(runner):
    class Upper(socketserver_rs.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read().upper())

    server = runner.track(socketserver_rs.UDPServer(("127.0.0.1", 0), Upper))
    runner.start(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(IO_TIMEOUT)
        for _ in range(5):
            client.sendto(b"x", server.server_address)
            assert client.recv(8) == b"X"
    assert wait_until(lambda: server.stats()["requests_total"] == 5)


DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize("wbufsize", [0, -1], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("threaded", [False, True], ids=["plain", "threading"])
def test_bytes_are_counted_over_tls(runner, threaded, wbufsize):
    """rfile and wfile come from makefile() over TLS: their bytes (the
    application's, not the records') count as over the core's files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(DATA / "localhost.crt", DATA / "localhost.key")
    base = socketserver_rs.ThreadingTCPServer if threaded else socketserver_rs.TCPServer

    class LineEcho(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    LineEcho.wbufsize = wbufsize
    server = runner.track(base(("127.0.0.1", 0), LineEcho, ssl_context=context))
    runner.start(server)
    client_context = ssl.create_default_context(cafile=str(DATA / "localhost.crt"))
    for _ in range(3):
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as raw:
            with client_context.wrap_socket(raw, server_hostname="localhost") as client:
                client.sendall(b"abc\n")
                assert read_to_eof(client) == (b"abc\n", True)
    assert wait_until(lambda: server.stats()["requests_active"] == 0)
    stats = server.stats()
    assert (stats["bytes_received"], stats["bytes_sent"]) == (3 * 4, 3 * 4)
