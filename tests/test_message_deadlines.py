"""Event-driven message handlers with a timeout: a connection whose message
or reply stalls half-way, or (with idle_timeout) one idle between messages,
is closed with one log line, while the others are served."""

import logging
import socket
import struct

import pytest
from conftest import IO_TIMEOUT, read_to_eof, start_recording, stop_serving, wait_until

import socketserver_rs
from socketserver_rs import MessageClient, MessageRequestHandler, _state

SERVERS = {"plain": socketserver_rs.TCPServer, "threading": socketserver_rs.ThreadingTCPServer}


@pytest.fixture(params=sorted(SERVERS))
def server_class(request):
    return SERVERS[request.param]


class Upper(MessageRequestHandler):
    timeout = 0.3
    finished = 0

    def handle_message(self, message):
        if message.startswith(b"big "):
            return b"x" * int(message[4:])
        return message.upper()

    def finish(self):
        type(self).finished += 1
        super().finish()


def start(server_class, handler):
    server, thread = start_recording(server_class, handler)
    assert wait_until(lambda: _state.of(server).messages is not None)
    return server, thread


stop = stop_serving


def closed_lines(caplog):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "socketserver_rs" and "closed the connection from" in r.getMessage()
    ]


@pytest.mark.parametrize(
    "partial",
    [b"\x00\x00", struct.pack(">I", 100) + b"0123456789"],
    ids=["half-a-header", "half-a-message"],
)
def test_a_stalled_message_is_closed_and_others_are_served(server_class, partial, caplog):
    caplog.set_level(logging.INFO, logger="socketserver_rs")
    handler = type("Handler", (Upper,), {"finished": 0})
    server, thread = start(server_class, handler)
    try:
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as stalled:
            with MessageClient(server.server_address, timeout=IO_TIMEOUT) as good:
                stalled.sendall(partial)
                assert good.request(b"before") == b"BEFORE"
                assert read_to_eof(stalled) == (b"", True)  # closed by the server
                assert good.request(b"after") == b"AFTER"
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
        assert handler.finished == 2
        [line] = closed_lines(caplog)
        assert "does not finish" in line and "0.300 s" in line
        assert server.errors == []
    finally:
        stop(server, thread)


def test_idle_connections_stay_without_idle_timeout(server_class, caplog):
    caplog.set_level(logging.INFO, logger="socketserver_rs")
    server, thread = start(server_class, Upper)
    try:
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as idle:
            assert idle.request(b"first") == b"FIRST"
            with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as stalled:
                stalled.sendall(b"\x00")
                # By the time the stalled one is closed, the idle one has
                # been idle for longer than timeout.
                assert read_to_eof(stalled) == (b"", True)
            assert idle.request(b"still open") == b"STILL OPEN"
        assert len(closed_lines(caplog)) == 1
    finally:
        stop(server, thread)


def test_idle_timeout_closes_idle_connections(server_class, caplog):
    caplog.set_level(logging.INFO, logger="socketserver_rs")
    handler = type("Handler", (Upper,), {"timeout": None, "idle_timeout": 0.2, "finished": 0})
    server, thread = start(server_class, handler)
    try:
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
            assert client.request(b"hello") == b"HELLO"
            assert client.recv_message() is None  # closed once idle
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
        assert handler.finished == 1
        [line] = closed_lines(caplog)
        assert "idle connection" in line
    finally:
        stop(server, thread)


def test_a_client_that_does_not_read_its_reply_is_closed(server_class, caplog):
    caplog.set_level(logging.INFO, logger="socketserver_rs")
    handler = type("Handler", (Upper,), {"finished": 0})
    server, thread = start(server_class, handler)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(server.server_address)
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as good:
            sock.sendall(struct.pack(">I", 12) + b"big 33554432")
            assert wait_until(lambda: closed_lines(caplog))
            assert good.request(b"served") == b"SERVED"
        got, closed = read_to_eof(sock)
        assert closed and len(got) < 33554432 + 4
        sock.close()
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
        [line] = closed_lines(caplog)
        assert "does not read" in line
        assert server.errors == []
    finally:
        stop(server, thread)
