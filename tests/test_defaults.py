"""Defaults that differ from the standard module on purpose (see the table
of docs/differences.md): TCP_NODELAY on accepted connections and the
listen backlog; the class attributes themselves keep the standard values."""

import errno
import importlib.metadata
import queue
import select
import socket
import socketserver
import time
import warnings

import pytest
from conftest import IO_TIMEOUT, faithful, require, stream_request

import socketserver_rs


class Recorder(socketserver_rs.BaseRequestHandler):
    def handle(self):
        option = self.request.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.server.nodelay = option
        self.request.sendall(b"ok")


@pytest.mark.parametrize(
    "server_class", [socketserver_rs.TCPServer, faithful(socketserver_rs.TCPServer)]
)
def test_accepted_tcp_connections_have_nodelay(server_class):
    with server_class(("127.0.0.1", 0), Recorder) as server:
        with socket.create_connection(server.server_address, timeout=5) as client:
            server.handle_request()
            assert client.recv(2) == b"ok"
        assert server.nodelay != 0
    assert socketserver_rs.StreamRequestHandler.disable_nagle_algorithm is False


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("name", ["TCPServer", "ThreadingTCPServer"])
def test_nodelay_while_serving_forever(name, family, variant, runner):
    """handle_request() always runs the hooks; serve_forever() takes the
    fast path when no hook is overridden. Connections have TCP_NODELAY on
    both of our paths and, as ever, not on the standard module."""
    seen = queue.Queue()

    class Handler(variant.mod.BaseRequestHandler):
        def handle(self):
            seen.put(self.request.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            self.request.sendall(b"ok")

    base = getattr(variant.mod, name)
    host = "127.0.0.1"
    if family == "ipv6":
        base = type(name + "6", (base,), {"address_family": socket.AF_INET6})
        host = "::1"
    cls = variant.server_class(base)
    server = runner.track(cls((host, 0), Handler))
    variant.check_path(server)
    runner.start(server)
    for _ in range(2):
        assert stream_request(server.server_address, b"", server.address_family) == b"ok"
        nodelay = seen.get(timeout=IO_TIMEOUT)
        if variant.mod is socketserver:
            assert nodelay == 0
        else:
            assert nodelay != 0


@pytest.mark.parametrize("declared", ["inherited", "own False", "a base's False", "own True"])
@pytest.mark.parametrize("name", ["TCPServer", "ThreadingTCPServer"])
def test_an_explicit_disable_nagle_algorithm_false_keeps_nagle(name, declared, variant, runner):
    """A handler class that sets disable_nagle_algorithm = False itself (or a
    class it derives from, below StreamRequestHandler) gets the standard
    module's connections: Nagle's algorithm on. Left as inherited, ours set
    TCP_NODELAY; True sets it on both modules."""
    seen = queue.Queue()

    class Handler(variant.mod.StreamRequestHandler):
        def handle(self):
            seen.put(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            self.wfile.write(b"ok")

    if declared == "own False":
        Handler = type("Handler", (Handler,), {"disable_nagle_algorithm": False})
    elif declared == "a base's False":
        Base = type("Base", (Handler,), {"disable_nagle_algorithm": False})
        Handler = type("Handler", (Base,), {})
    elif declared == "own True":
        Handler = type("Handler", (Handler,), {"disable_nagle_algorithm": True})
    server = runner.track(variant.server_class(name)(("127.0.0.1", 0), Handler))
    variant.check_path(server)
    runner.start(server)
    assert stream_request(server.server_address, b"") == b"ok"
    nodelay = seen.get(timeout=IO_TIMEOUT)
    if declared == "own True" or (declared == "inherited" and variant.mod is socketserver_rs):
        assert nodelay != 0
    else:
        assert nodelay == 0


@pytest.mark.parametrize("declared", ["inherited", "own False"])
def test_event_driven_message_connections_follow_disable_nagle_algorithm(declared, runner):
    seen = queue.Queue()

    class Handler(socketserver_rs.MessageRequestHandler):
        def handle_message(self, message):
            seen.put(self.request.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            return message

    if declared == "own False":
        Handler.disable_nagle_algorithm = False
    server = runner.track(socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Handler))
    runner.start(server)
    with socketserver_rs.MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
        assert client.request(b"hi") == b"hi"
    assert socketserver_rs._message_loop.event_driven(server)
    nodelay = seen.get(timeout=IO_TIMEOUT)
    assert (nodelay != 0) == (declared == "inherited")


def test_disable_nagle_algorithm_false_on_a_unix_socket(runner, unix_path):
    require(hasattr(socketserver_rs, "UnixStreamServer"), "AF_UNIX sockets")

    class Handler(socketserver_rs.StreamRequestHandler):
        disable_nagle_algorithm = False

        def handle(self):
            self.wfile.write(self.rfile.readline())

    server = runner.track(socketserver_rs.ThreadingUnixStreamServer(unix_path, Handler))
    runner.start(server)
    assert stream_request(unix_path, b"unix\n", socket.AF_UNIX) == b"unix\n"


def completed_connects(server, count=64, wait=0.5):
    """Start `count` connects to a server that accepts none; how many the
    kernel completed within `wait` seconds (the rest wait on a SYN retry)."""
    clients = [socket.socket() for _ in range(count)]
    try:
        for client in clients:
            client.setblocking(False)
            client.connect_ex(server.server_address)
        deadline = time.monotonic() + wait
        done = set()
        while time.monotonic() < deadline and len(done) < count:
            pending = [c for c in clients if c not in done]
            _, writable, _ = select.select([], pending, [], 0.05)
            for client in writable:
                if client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    done.add(client)
        return len(done)
    finally:
        for client in clients:
            client.close()


def test_default_backlog_holds_a_burst_of_connects():
    assert socketserver_rs.TCPServer.request_queue_size == socketserver.TCPServer.request_queue_size
    with socketserver_rs.TCPServer(("127.0.0.1", 0), Recorder) as server:
        assert completed_connects(server) == 64


@pytest.mark.parametrize("module", [socketserver, socketserver_rs], ids=["std", "rs"])
def test_a_request_queue_size_set_by_the_user_is_kept(module):
    class Small(module.TCPServer):
        request_queue_size = 2

    with Small(("127.0.0.1", 0), Recorder) as server:
        assert completed_connects(server) <= 4


def test_version_is_the_standard_modules():
    """socketserver.__version__ is "0.4" (deprecated from 3.15 on); this
    package's own version is in its metadata."""
    caught = {}
    for mod in (socketserver, socketserver_rs):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            version = mod.__version__
        caught[mod.__name__] = (version, [w.category for w in seen])
    assert caught["socketserver_rs"] == caught["socketserver"]
    assert caught["socketserver"][0] == "0.4"
    assert importlib.metadata.version("socketserver_rs") == socketserver_rs._core.__version__


def test_reuse_port_only_for_internet_families(unix_path):
    """Linux 6.12.9+ refuses SO_REUSEPORT on AF_UNIX; it is set for TCP only."""
    require(hasattr(socket, "SO_REUSEPORT"), "no SO_REUSEPORT here")

    class Unix(socketserver_rs.UnixStreamServer):
        allow_reuse_port = True

    class Tcp(socketserver_rs.TCPServer):
        allow_reuse_port = True

    with Unix(unix_path, socketserver_rs.BaseRequestHandler) as server:
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    with Tcp(("127.0.0.1", 0), socketserver_rs.BaseRequestHandler) as server:
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def _held_port():
    """A socket bound with SO_REUSEADDR, not listening (a server between
    bind() and listen()): a second SO_REUSEADDR socket may bind its port,
    one without it may not."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    return holder


@pytest.mark.parametrize("module", [socketserver, socketserver_rs], ids=["std", "rs"])
@pytest.mark.parametrize("where", ["subclass", "instance"])
def test_an_explicit_allow_reuse_address_false_is_honoured(module, where):
    # google-auth-oauthlib sets WSGIServer.allow_reuse_address = False and
    # expects EADDRINUSE on a port that is taken.
    class Server(module.TCPServer):
        if where == "subclass":
            allow_reuse_address = False

    with _held_port() as holder:
        server = Server(holder.getsockname(), module.BaseRequestHandler, bind_and_activate=False)
        try:
            if where == "instance":
                server.allow_reuse_address = False
            with pytest.raises(OSError) as caught:
                server.server_bind()
            assert caught.value.errno == errno.EADDRINUSE
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        finally:
            server.server_close()


def test_allow_reuse_address_left_alone_gets_so_reuseaddr():
    with socketserver_rs.TCPServer(("127.0.0.1", 0), socketserver_rs.BaseRequestHandler) as server:
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
