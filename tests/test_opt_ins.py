"""Opt-in behaviour beyond the standard module: dual-stack listening and
quiet disconnects. Off by default, where the standard behaviour holds."""

import logging
import socket
import struct
import threading

import pytest
from conftest import IO_TIMEOUT, require

import socketserver_rs


class Peer(socketserver_rs.StreamRequestHandler):
    def handle(self):
        self.server.seen.append(self.client_address)
        self.wfile.write(self.rfile.readline().upper())


def serve(runner, cls, address, handler):
    server = runner.track(cls(address, handler))
    server.seen = []
    runner.start(server)
    return server


def test_dualstack_serves_ipv4_and_ipv6_on_one_socket(runner):
    require(socket.has_dualstack_ipv6(), "no dual-stack IPv6 here (IPv6 disabled?)")

    class DualStack(socketserver_rs.ThreadingTCPServer):
        address_family = socket.AF_INET6
        dualstack_ipv6 = True

    server = serve(runner, DualStack, ("::", 0), Peer)
    port = server.server_address[1]
    for host in ("127.0.0.1", "::1"):
        with socket.create_connection((host, port), timeout=IO_TIMEOUT) as client:
            client.sendall(b"hi\n")
            assert client.recv(8) == b"HI\n"
    assert server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    v4, v6 = server.seen[0], server.seen[1]
    assert v4[0] == "::ffff:127.0.0.1" and len(v4) == 4
    assert v6[0] == "::1"


def test_dualstack_needs_an_ipv6_family():
    class Wrong(socketserver_rs.TCPServer):
        dualstack_ipv6 = True

    with pytest.raises(ValueError, match="AF_INET6"):
        Wrong(("127.0.0.1", 0), Peer)


def reset_mid_response(runner, quiet):
    """A client that resets while the handler is still writing."""
    written = threading.Event()

    class Flood(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
            finally:
                written.set()

    class Server(socketserver_rs.ThreadingTCPServer):
        quiet_disconnects = quiet

    server = runner.track(Server(("127.0.0.1", 0), Flood))
    runner.start(server)
    client = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    client.sendall(b"go\n")
    client.recv(1)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST
    assert written.wait(IO_TIMEOUT)
    server.server_close()  # waits for the worker's handle_error()


def test_a_reset_is_a_traceback_by_default(runner, capfd):
    reset_mid_response(runner, quiet=False)
    err = capfd.readouterr().err
    assert "Exception occurred during processing of request from" in err
    assert "Traceback" in err and ("ConnectionResetError" in err or "BrokenPipeError" in err)


def test_quiet_disconnects_is_one_log_line(runner, capfd, caplog):
    caplog.set_level(logging.INFO, logger="socketserver_rs")
    reset_mid_response(runner, quiet=True)
    assert capfd.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 1
    assert "ConnectionResetError" in lines[0] or "BrokenPipeError" in lines[0]


def test_quiet_disconnects_leaves_other_errors_to_handle_error(runner, capfd):
    class Broken(socketserver_rs.StreamRequestHandler):
        def handle(self):
            raise ValueError("a real bug")

    class Server(socketserver_rs.TCPServer):
        quiet_disconnects = True

    server = runner.track(Server(("127.0.0.1", 0), Broken))
    runner.start(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        client.sendall(b"x\n")
        assert client.recv(1) == b""
    err = capfd.readouterr().err
    assert "ValueError: a real bug" in err
