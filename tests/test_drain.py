"""drain(timeout), ThreadingMixIn.close_timeout and server_close() after
Ctrl-C: graceful stops."""

import logging
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import IO_TIMEOUT, KeepAlive, wait_until

import socketserver_rs


class Lines(socketserver_rs.StreamRequestHandler):
    """Keep-alive: one reply per line; "slow" takes 0.3 s, "body" then
    waits for a 100-byte body (a request still being received)."""

    def handle(self):
        for line in self.rfile:
            if line == b"slow\n":
                time.sleep(0.3)
            if line == b"body\n":
                self.server.reading_body.set()
                line = self.rfile.read(100)
            self.wfile.write(line)


def server_for(runner, path, **attributes):
    cls = socketserver_rs.ThreadingTCPServer
    if path == "faithful":
        attributes["verify_request"] = lambda self, request, client_address: True
    cls = type("Server", (cls,), {"daemon_threads": True, **attributes})
    server = runner.track(cls(("127.0.0.1", 0), Lines))
    server.reading_body = threading.Event()
    runner.start(server)
    return server


def exchange(sock, line):
    sock.sendall(line)
    return sock.recv(64)


def test_drain_finishes_in_flight_requests_and_closes_idle_connections(runner, path):
    server = server_for(runner, path)
    address = server.server_address
    idle = [socket.create_connection(address, timeout=IO_TIMEOUT) for _ in range(20)]
    for sock in idle:
        assert exchange(sock, b"fast\n") == b"fast\n"
    slow = [socket.create_connection(address, timeout=IO_TIMEOUT) for _ in range(200)]
    for sock in slow:
        sock.sendall(b"slow\n")
    assert wait_until(lambda: server.stats()["requests_total"] == 220)
    try:
        assert server.drain(timeout=IO_TIMEOUT) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=IO_TIMEOUT)
        for sock in slow:  # each got its reply, then the connection closed
            reply = b""
            while chunk := sock.recv(64):
                reply += chunk
            assert reply == b"slow\n"
        for sock in idle:
            assert sock.recv(64) == b""
        assert server.stats()["requests_active"] == 0
    finally:
        for sock in idle + slow:
            sock.close()


def test_drain_cuts_a_request_still_running_at_the_deadline(runner, path, caplog):
    server = server_for(runner, path)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        client.sendall(b"body\n0123456789")  # 10 of the 100 bytes
        assert server.reading_body.wait(IO_TIMEOUT)
        started = time.monotonic()
        assert server.drain(timeout=0.3) == 1
        assert time.monotonic() - started < IO_TIMEOUT
        assert client.recv(64) in (b"0123456789", b"")  # cut short, then closed
    assert wait_until(lambda: server.stats()["requests_active"] == 0)
    assert any("drain(): 1 request(s) still running" in r.getMessage() for r in caplog.records)


def test_server_close_gives_up_waiting_at_close_timeout(runner, caplog):
    caplog.set_level(logging.WARNING, logger="socketserver_rs")
    server = server_for(runner, "fast", daemon_threads=False, close_timeout=0.3)
    client = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    try:
        client.sendall(b"body\n")
        assert server.reading_body.wait(IO_TIMEOUT)
        server.shutdown()
        started = time.monotonic()
        server.server_close()
        assert time.monotonic() - started < IO_TIMEOUT
    finally:
        client.close()
    assert any("server_close(): 1 request(s)" in r.getMessage() for r in caplog.records)
    assert server.stats()["requests_active"] == 0


# A threading server left by Ctrl-C, as a plain program writes it. Its
# handlers answer one request at a time on a keep-alive connection, and
# say when a request is half received ("send it", "100 Continue").
CTRL_C_PROGRAM = r"""
import signal, sys

signal.signal(signal.SIGINT, signal.default_int_handler)  # as an interactive start does
if sys.argv[1] == "socketserver_rs":
    import socketserver_rs

    socketserver_rs.patch()
import http.server
import socketserver


class Lines(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if line == b"body\n":
                self.wfile.write(b"send it\n")
                line = self.rfile.read(10)
            self.wfile.write(line)


class Page(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ThreadedHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    pass


if sys.argv[2] == "lines":
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Lines)
else:
    server = ThreadedHTTPServer(("127.0.0.1", 0), Page)
with server:
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("closing", flush=True)
print("closed", flush=True)
"""


def interrupted(module, kind):
    """The program with one idle keep-alive client and one mid-request,
    after SIGINT: (process, idle client, busy client)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_PROGRAM, module, kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    port = int(proc.stdout.readline())
    idle = KeepAlive(("127.0.0.1", port), kind)
    assert idle.request(b"0123456789") == b"0123456789"
    busy = KeepAlive(("127.0.0.1", port), kind)
    busy.start(b"abcdefghij")
    # Served once the loop is past busy's process_request(), where a
    # KeyboardInterrupt would cut busy's connection (both modules do).
    last = KeepAlive(("127.0.0.1", port), kind)
    assert last.request(b"9876543210") == b"9876543210"
    last.close()
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline() == b"closing\n"
    return proc, idle, busy


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["lines", "http"])
def test_server_close_after_ctrl_c_closes_idle_keep_alive_connections(kind):
    # The standard module waits for the idle client's next request, for ever.
    proc, idle, busy = interrupted("socketserver", kind)
    try:
        assert not idle.closed_by_server(timeout=0.5)
        assert busy.finish(b"abcdefghij") == b"abcdefghij"
        assert proc.poll() is None
        idle.close()  # only the clients can end it
        busy.close()
        assert proc.wait(IO_TIMEOUT) == 0
    finally:
        for end in (proc.kill, proc.wait, proc.stdout.close, proc.stderr.close):
            end()
        idle.close()
        busy.close()
    # Ours closes the idle connection, finishes the one mid-request, then
    # closes it too: it is idle once answered.
    proc, idle, busy = interrupted("socketserver_rs", kind)
    try:
        assert idle.closed_by_server(timeout=IO_TIMEOUT)
        assert busy.finish(b"abcdefghij") == b"abcdefghij"
        assert proc.wait(IO_TIMEOUT) == 0, proc.stderr.read().decode()
        assert proc.stdout.read() == b"closed\n"
    finally:
        for end in (proc.kill, proc.wait, proc.stdout.close, proc.stderr.close):
            end()
        idle.close()
        busy.close()


class Refused(Exception):
    pass


@pytest.mark.parametrize("base", ["TCPServer", "ThreadingTCPServer"])
def test_a_raising_verify_request_leaves_no_request_running(runner, base):
    class Server(getattr(socketserver_rs, base)):
        def verify_request(self, request, client_address):
            request.close()
            raise Refused

    server = runner.track(Server(("127.0.0.1", 0), Lines))
    serving = runner.start(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT):
        assert serving.returned.wait(IO_TIMEOUT)
    # As in the standard module, the hook's exception ends serve_forever().
    assert [type(exc) for exc in serving.errors] == [Refused]
    assert server.stats()["requests_active"] == 0
    started = time.monotonic()
    assert server.drain(timeout=IO_TIMEOUT) == 0
    assert time.monotonic() - started < IO_TIMEOUT / 2


def test_a_threading_server_serving_inline_leaves_no_request_running(runner):
    class Inline(socketserver_rs.ThreadingTCPServer):
        def process_request(self, request, client_address):
            self.finish_request(request, client_address)
            self.shutdown_request(request)

    server = runner.track(Inline(("127.0.0.1", 0), Lines))
    runner.start(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        assert exchange(client, b"inline\n") == b"inline\n"
        client.shutdown(socket.SHUT_WR)
        assert client.recv(64) == b""
    assert wait_until(lambda: server.stats()["requests_active"] == 0)
    started = time.monotonic()
    assert server.drain(timeout=IO_TIMEOUT) == 0
    assert time.monotonic() - started < IO_TIMEOUT / 2


class TwoLineRequests(socketserver_rs.StreamRequestHandler):
    """Each request is two lines, a key then its value; one reply each."""

    def handle(self):
        while key := self.rfile.readline():
            self.server.waiting_for_value.set()
            value = self.rfile.readline()
            self.wfile.write(b"stored " + key.strip() + b"=" + value)


@pytest.mark.parametrize("stop", ["drain", "server_close"])
def test_a_request_whose_next_line_is_awaited_is_finished_not_cut(runner, stop):
    # The handler read a request's first line and waits for its second: it
    # is in the middle of a request, not idle between two, so it is waited
    # for (as the standard module's server_close() waits), then closed.
    cls = type("Server", (socketserver_rs.ThreadingTCPServer,), {"daemon_threads": stop == "drain"})
    server = runner.track(cls(("127.0.0.1", 0), TwoLineRequests))
    server.waiting_for_value = threading.Event()
    serving = runner.start(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        client.sendall(b"a\n1\n")
        assert client.recv(64) == b"stored a=1\n"
        server.waiting_for_value.clear()
        client.sendall(b"b\n")
        assert server.waiting_for_value.wait(IO_TIMEOUT)
        if stop == "drain":
            stopping = threading.Thread(target=server.drain, args=(IO_TIMEOUT,))
        else:
            server.shutdown()
            serving.thread.join(IO_TIMEOUT)
            stopping = threading.Thread(target=server.server_close)
        stopping.start()
        time.sleep(0.3)
        assert stopping.is_alive()
        client.sendall(b"2\n")
        assert client.recv(64) == b"stored b=2\n"
        assert client.recv(64) == b""  # idle now: closed
        stopping.join(IO_TIMEOUT)
        assert not stopping.is_alive()
