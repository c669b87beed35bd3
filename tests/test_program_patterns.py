"""Patterns of real programs that once behaved differently on the core.

Each runs on the standard module and on ours (both paths where they
differ) and requires the same result.
"""

import contextvars
import gc
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from unittest import mock

import pytest
from conftest import FREE_THREADED, IO_TIMEOUT, read_to_eof, recv_all


def test_context_variables_do_not_leak_between_requests(variant, runner):
    """A web framework sets the current user in a ContextVar; the next
    request on the same worker must not see it."""
    user = contextvars.ContextVar("user", default="anonymous")
    seen = []

    class Handler(variant.mod.StreamRequestHandler):
        def handle(self):
            name = self.rfile.readline().strip().decode()
            seen.append(user.get())
            if name:
                user.set(name)
            self.wfile.write(b"ok\n")

    server = runner.track(variant.server_class("ThreadingTCPServer")(("127.0.0.1", 0), Handler))
    variant.check_path(server)
    runner.start(server)
    for name in ("alice", "", "", "bob", ""):
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
            client.sendall(name.encode() + b"\n")
            assert client.recv(16) == b"ok\n"
    assert seen == ["anonymous"] * 5


FORK_AFTER_SERVING = """
import os, socket, sys, threading
import {module} as ss

class Handler(ss.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline().upper())

def serve_once(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={{"poll_interval": 0.05}})
    thread.start()
    with socket.create_connection(server.server_address, timeout=5) as client:
        client.sendall(b"ping\\n")
        reply = client.recv(16)
    server.shutdown()
    thread.join()
    return reply

server = ss.ThreadingTCPServer(("127.0.0.1", 0), Handler)
first = serve_once(server)
pid = os.fork()
if pid == 0:
    # A pre-fork server: the child serves on the socket the parent made.
    try:
        code = 0 if serve_once(server) == b"PING\\n" else 3
        server.server_close()
    finally:
        os._exit(locals().get("code", 4))
_, status = os.waitpid(pid, 0)
server.server_close()
print(first.decode().strip(), os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("module", ["socketserver", "socketserver_rs"])
def test_a_forked_child_serves_with_the_threading_server_of_its_parent(module):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK_AFTER_SERVING).format(module=module)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["PING", "0"], proc.stderr


def _open_descriptors():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_no_descriptor_leaks_when_socket_socket_is_mocked(ssmod):
    """Test helpers (pytest-socket, mkdocs') replace socket.socket."""

    gc.collect()  # sockets earlier tests left to the collector go now, not midway
    before = _open_descriptors()
    with mock.patch("socket.socket") as fake:
        for _ in range(100):
            ssmod.TCPServer(("127.0.0.1", 0), ssmod.BaseRequestHandler, bind_and_activate=False)
    assert fake.call_count == 100
    assert _open_descriptors() - before == 0


DATA = Path(__file__).resolve().parent / "data"


def _replacement(how):
    """What a handler wraps the socket it was given in: TLS, as
    websocket-server does for wss://, or a plain socket over the same
    descriptor (the original is left detached either way)."""
    if how == "plain":
        return lambda sock: socket.socket(sock.family, sock.type, sock.proto, sock.detach())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(DATA / "localhost.crt", DATA / "localhost.key")
    return lambda sock: context.wrap_socket(sock, server_side=True)


def _connect(address, how):
    client = socket.create_connection(address, timeout=IO_TIMEOUT)
    if how == "plain":
        return client
    context = ssl.create_default_context(cafile=str(DATA / "localhost.crt"))
    return context.wrap_socket(client, server_hostname="localhost")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("how", ["plain", "tls"])
@pytest.mark.parametrize("server_class", ["TCPServer", "ThreadingTCPServer"])
def test_websocket_server_replaces_its_socket_and_skips_finish(variant, runner, server_class, how):
    """websocket-server's handler wraps the socket in __init__ and its
    finish() does not call super().finish(): the connection must still be
    closed when the handler is done."""
    if variant.name == "std" and FREE_THREADED:
        pytest.skip(
            "the standard module closes the replacement only when the handler is freed, "
            "which a free-threaded build may defer past the client's wait"
        )
    wrap = _replacement(how)

    class WebSocketHandler(variant.mod.StreamRequestHandler):
        def __init__(self, sock, client_address, server):
            variant.mod.StreamRequestHandler.__init__(self, wrap(sock), client_address, server)

        def handle(self):
            self.wfile.write(self.rfile.readline().upper())

        def finish(self):
            pass  # the client left: websocket-server tells its callbacks

    server = runner.track(variant.server_class(server_class)(("127.0.0.1", 0), WebSocketHandler))
    variant.check_path(server)
    runner.start(server)
    before = _open_descriptors()
    with warnings.catch_warnings():
        if variant.name == "std":
            # It closes the replacement only as the handler is collected.
            warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(5):
            with _connect(server.server_address, how) as client:
                client.sendall(b"hello\n")
                assert read_to_eof(client, 5.0) == (b"HELLO\n", True)
    assert _open_descriptors() == before


GREEN_SERVERS = """
import sys
if sys.argv[1] == "gevent":
    from gevent import monkey
    monkey.patch_all()
else:
    import eventlet
    eventlet.monkey_patch()
import socket, threading
if sys.argv[2] == "socketserver_rs":
    import socketserver_rs
    socketserver_rs.patch()
import socketserver as ss
import http.server, urllib.request

class Upper(ss.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())

def serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread

server = ss.ThreadingTCPServer(("127.0.0.1", 0), Upper)
serving = serve(server)
replies = []
def client(i):
    with socket.create_connection(server.server_address, timeout=5) as conn:
        conn.sendall(b"hello %d\\n" % i)
        replies.append(conn.recv(64).decode().strip())
clients = [threading.Thread(target=client, args=(i,)) for i in range(5)]
for c in clients:
    c.start()
for c in clients:
    c.join()
server.shutdown()
serving.join()
server.server_close()

class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
serving = serve(web)
url = "http://127.0.0.1:%d/" % web.server_address[1]
body = urllib.request.urlopen(url, timeout=5).read().decode()
web.shutdown()
serving.join()
web.server_close()
print(ss.__name__, " ".join(sorted(replies)), body, sep="|")
"""


@pytest.mark.parametrize("green", ["gevent", "eventlet"])
@pytest.mark.parametrize("module", ["socketserver", "socketserver_rs"])
def test_servers_run_under_green_thread_monkey_patching(green, module):
    """After gevent's or eventlet's monkey-patching, a threading server and
    http.server answer in-process clients (the core's waits would block
    the hub: the server then waits and reads in Python)."""
    if green == "gevent" and FREE_THREADED:
        # Not require(): nothing can install it here, in CI or elsewhere.
        pytest.skip("gevent publishes no build for free-threaded CPython")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(GREEN_SERVERS), green, module],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    name, replies, body = proc.stdout.strip().split("|")
    assert name == module
    assert replies == " ".join(f"HELLO {i}" for i in range(5))
    assert body == "ok"


PICKLE_CLASSES = """
import pickle
import socketserver_rs

class Handler(socketserver_rs.StreamRequestHandler):
    pass

class Server(socketserver_rs.ThreadingTCPServer):
    pass

# A program's own subclasses pickle by reference, as with the standard module.
for cls in (Handler, Server):
    assert pickle.loads(pickle.dumps(cls)) is cls
# The public classes report the module they stand in for, so pickle finds
# them once socketserver resolves to socketserver_rs.
try:
    pickle.dumps(socketserver_rs.TCPServer)
except pickle.PicklingError:
    print("unpatched: refused")
socketserver_rs.patch()
for name in socketserver_rs.__all__:
    cls = getattr(socketserver_rs, name)
    assert pickle.loads(pickle.dumps(cls)) is cls, name
print("patched:", len(socketserver_rs.__all__))
"""


def test_classes_pickle_by_reference():
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PICKLE_CLASSES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    import socketserver_rs

    assert proc.stdout.split("\n")[:2] == [
        "unpatched: refused",
        f"patched: {len(socketserver_rs.__all__)}",
    ]


HALF_CLOSED_CLIENTS = 1000


def line_echo_handlers(mod):
    class ForLines(mod.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    class OneLine(mod.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    return {"for-lines": ForLines, "one-line": OneLine}


@pytest.mark.parametrize("handler", ["for-lines", "one-line"])
def test_every_half_closed_client_gets_its_reply_and_eof(variant, handler, runner):
    """Clients in the style of `printf 'line\\n' | nc -N`: send a request
    line, shutdown(SHUT_WR), read the reply to EOF. A thousand of them,
    from a few threads, must each get their line back and then a clean
    EOF, as on the standard module."""
    cls = variant.server_class("ThreadingTCPServer")
    server = runner.track(cls(("127.0.0.1", 0), line_echo_handlers(variant.mod)[handler]))
    variant.check_path(server)
    runner.start(server)
    failures = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def client(first, step):
        for number in range(first, HALF_CLOSED_CLIENTS, step):
            line = b"request %d\n" % number
            if time.monotonic() > deadline:
                reply = "not sent: out of time"
            else:
                reply = exchange_half_closed(server.server_address, line)
            if reply != line:
                with lock:
                    failures.append((number, reply))

    threads = [threading.Thread(target=client, args=(first, 8)) for first in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, f"{len(failures)} of {HALF_CLOSED_CLIENTS} clients, first: {failures[:5]}"


def exchange_half_closed(address, line):
    """Send line, shut down the sending side, read to a clean EOF: the
    reply, or the exception (a reset, a timeout) that came instead."""
    try:
        with socket.create_connection(address, IO_TIMEOUT) as sock:
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            return recv_all(sock)
    except OSError as exc:
        return exc
