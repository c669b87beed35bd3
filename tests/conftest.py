"""Shared fixtures and helpers: servers running in a thread, loopback and
Unix socket clients, echo handlers and hook-recording server subclasses."""

import inspect
import os
import socket
import socketserver
import sys
import sysconfig
import threading
import time

import pytest

import socketserver_rs
from socketserver_rs._fast_path import FAST_PATH_HOOKS

MODULES = {"socketserver": socketserver, "socketserver_rs": socketserver_rs}

# The request hooks the fast path stands in for.
REQUEST_HOOKS = FAST_PATH_HOOKS

IO_TIMEOUT = 10.0

# A free-threaded interpreter must still run without its GIL once the
# package is imported (the extension declares gil_used = false) ...
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
assert not FREE_THREADED or not sys._is_gil_enabled(), "importing socketserver_rs enabled the GIL"


def pytest_sessionfinish(session, exitstatus):
    # ... and after the whole suite ran on it.
    if FREE_THREADED and sys._is_gil_enabled():
        print("\nthe GIL was enabled during the run: something declared it needed it")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def in_ci():
    """Whether the suite runs in CI (the CI environment variable is "true"),
    where every test must run."""
    return os.environ.get("CI", "").lower() == "true"


def require(found, what):
    """A test that needs something from outside the project (a tool, other
    interpreters): where `found` is false it fails in CI and is skipped,
    with the reason, elsewhere."""
    if found:
        return
    if in_ci():
        pytest.fail(f"{what} (required in CI)", pytrace=False)
    pytest.skip(f"{what} (CI=true makes this a failure)")


@pytest.fixture(params=sorted(MODULES))
def ssmod(request):
    """The standard library's socketserver, then ours: a compat comparison."""
    return MODULES[request.param]


@pytest.fixture
def unix_path(tmp_path):
    """A fresh path for a Unix socket server."""
    return str(tmp_path / "srv.sock")


@pytest.fixture
def unix_client_path(tmp_path):
    """A fresh path for a Unix socket client to bind to."""
    return str(tmp_path / "cli.sock")


def wait_until(predicate, timeout=IO_TIMEOUT, interval=0.005):
    """Poll predicate() until it is true or timeout seconds have passed;
    its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def tcp_queues(local_port, remote_port=None):
    """(tx_queue, rx_queue) of an IPv4 TCP socket, from /proc/net/tcp: of
    the listener on local_port when remote_port is None (rx_queue: the
    connections waiting to be accepted), else of the connection from
    local_port to remote_port (tx_queue: bytes sent and not yet
    acknowledged; rx_queue: bytes received that its owner has not read)."""
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if int(local.split(":")[1], 16) != local_port:
                continue
            if (remote_port is None and state == "0A") or (
                remote_port is not None and int(remote.split(":")[1], 16) == remote_port
            ):
                tx, rx = queues.split(":")
                return int(tx, 16), int(rx, 16)
    raise LookupError(f"no socket on port {local_port} to {remote_port}")


class RecordingErrors:
    """A server mixin that records the exceptions handle_error() saw."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors = []

    def handle_error(self, request, client_address):
        self.errors.append(sys.exc_info()[1])


def still_open(sock):
    """Whether the server has neither closed, reset nor written to `sock`
    (whose timeout is left as it was)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
    return False


def start_recording(server_class, handler):
    """A server of server_class recording its errors, serving on a thread:
    (server, thread); stop_serving() ends both."""
    server = type("Server", (RecordingErrors, server_class), {})(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server, thread


def stop_serving(server, thread):
    server.shutdown()
    thread.join(IO_TIMEOUT)
    server.server_close()


class Serving:
    """A server whose serve_forever() runs in a thread. As a context
    manager (for a scenario run without the runner fixture) it starts the
    thread, and on exit stops it and closes the server."""

    def __init__(self, server, poll_interval=0.05):
        self.server = server
        self.errors = []
        self.returned = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(poll_interval,), name="serve_forever", daemon=True
        )

    def _run(self, poll_interval):
        try:
            self.server.serve_forever(poll_interval=poll_interval)
        except BaseException as exc:  # noqa: B036 -- recorded for the test
            self.errors.append(exc)
        finally:
            self.returned.set()

    def stop(self, timeout=IO_TIMEOUT):
        """shutdown() the loop and wait for its thread; True if it ended."""
        if self.thread.is_alive():
            self.server.shutdown()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        try:
            assert self.stop(), "serve_forever() did not stop"
        finally:
            self.server.server_close()


class Runner:
    """Starts servers in threads; on teardown always shuts them down and
    closes them (servers merely tracked are closed too)."""

    def __init__(self):
        self._servings = []
        self._servers = []

    def track(self, server):
        if not any(s is server for s in self._servers):
            self._servers.append(server)
        return server

    def start(self, server, poll_interval=0.05):
        self.track(server)
        serving = Serving(server, poll_interval)
        self._servings.append(serving)
        serving.thread.start()
        return serving

    def teardown(self):
        stuck = []
        for serving in self._servings:
            if not serving.stop():
                stuck.append(serving.server)
        for server in self._servers:
            server.server_close()
        assert not stuck, f"serve_forever() did not stop: {stuck}"


@pytest.fixture
def runner():
    r = Runner()
    try:
        yield r
    finally:
        r.teardown()


def address_for(cls, unix_path):
    """A server address of the right family for a server class."""
    family = cls.address_family
    if family == socket.AF_UNIX:
        return unix_path
    if family == socket.AF_INET6:
        return ("::1", 0)
    return ("127.0.0.1", 0)


def is_stream(cls):
    return cls.socket_type == socket.SOCK_STREAM


def recv_all(sock):
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def tcp_pair(timeout=None):
    """(client, server): the two ends of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for sock in (client, server):
        sock.settimeout(timeout)
    return client, server


def read_to_eof(sock, timeout=IO_TIMEOUT):
    """(bytes read, whether the peer closed or reset) within timeout."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except socket.timeout:
        return data, False
    except ConnectionResetError:
        return data, True


class KeepAlive:
    """A keep-alive client sending whole requests, or one left half
    received by its handler. kind "lines": the server echoes each line, and
    after b"body\\n" answers b"send it\\n" and echoes the next 10 bytes;
    "http": HTTP/1.1 POSTs with "Expect: 100-continue", the body echoed."""

    def __init__(self, address, kind):
        self.kind = kind
        self.sock = socket.create_connection(address, timeout=IO_TIMEOUT)
        self.file = self.sock.makefile("rb")

    def start(self, body):
        if self.kind == "lines":
            self.sock.sendall(b"body\n")
            assert self.file.readline() == b"send it\n"
        else:
            self.sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            assert self.file.readline() == b"HTTP/1.1 100 Continue\r\n"
            assert self.file.readline() == b"\r\n"

    def finish(self, body):
        self.sock.sendall(body)
        if self.kind == "lines":
            return self.file.read(len(body))
        assert self.file.readline() == b"HTTP/1.1 200 OK\r\n"
        length = 0
        while (line := self.file.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return self.file.read(length)

    def request(self, body):
        self.start(body)
        return self.finish(body)

    def closed_by_server(self, timeout):
        self.sock.settimeout(timeout)
        try:
            return self.file.read(1) == b""
        except socket.timeout:
            return False

    def close(self):
        self.file.close()
        self.sock.close()


def exchange(address, payload, timeout=IO_TIMEOUT):
    """One TCP connection: send payload, then read_to_eof()."""
    with socket.create_connection(address, timeout=timeout) as client:
        client.sendall(payload)
        return read_to_eof(client, timeout)


def stream_request(address, data, family=socket.AF_INET, bind=None):
    """Connect, send data, read until the server closes; the bytes read."""
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(IO_TIMEOUT)
        if bind is not None:
            client.bind(bind)
        client.connect(address)
        client.sendall(data)
        return recv_all(client)


def dgram_request(address, data, family=socket.AF_INET, bind=None):
    """Send one datagram and wait for one reply."""
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(IO_TIMEOUT)
        if bind is not None:
            client.bind(bind)
        client.sendto(data, address)
        return client.recvfrom(65536)[0]


def request(server, data, client_bind=None):
    """One request to a server of any class: connection or datagram."""
    family = server.address_family
    if family == socket.AF_UNIX and not is_stream(type(server)) and client_bind is None:
        raise ValueError("a Unix datagram client must be bound to get a reply")
    if is_stream(type(server)):
        return stream_request(server.server_address, data, family, client_bind)
    return dgram_request(server.server_address, data, family, client_bind)


def echo_handler(mod, stream):
    """An upper-casing echo handler built on `mod`'s handler classes."""
    if stream:

        class StreamEcho(mod.StreamRequestHandler):
            def handle(self):
                self.wfile.write(self.rfile.readline().upper())

        return StreamEcho

    class DatagramEcho(mod.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read().upper())

    return DatagramEcho


def hooked(cls):
    """A subclass of `cls` overriding every request hook it has: each one
    records its name, then calls super(). `done` is released per
    close_request()."""
    trace = []
    done = threading.Semaphore(0)
    namespace = {"trace": trace, "done": done}

    def make(name):
        def hook(self, *args, **kwargs):
            trace.append(name)
            try:
                return getattr(super(sub, self), name)(*args, **kwargs)
            finally:
                if name == "close_request":
                    done.release()

        hook.__name__ = name
        return hook

    for name in REQUEST_HOOKS:
        if hasattr(cls, name):
            namespace[name] = make(name)
    sub = type("Hooked" + cls.__name__, (cls,), namespace)
    return sub


def faithful(cls):
    """A subclass overriding one request hook (calling super): it runs the
    Python hooks rather than the fast path."""

    def verify_request(self, request, client_address):
        return super(sub, self).verify_request(request, client_address)

    sub = type("Faithful" + cls.__name__, (cls,), {"verify_request": verify_request})
    return sub


@pytest.fixture(params=["fast", "faithful"])
def path(request):
    """Which of our two paths a scenario runs on (see on_path())."""
    return request.param


def on_path(cls, path):
    return cls if path == "fast" else faithful(cls)


def fast_path_of(server):
    """What serve_forever() would take as its fast path (None: the hooks)."""
    fast_path = server._fast_path
    if inspect.signature(fast_path).parameters:
        return fast_path(server._serve_loop())
    return fast_path()


def assert_path(server, path):
    """Prove which path serve_forever() takes for this server."""
    if path == "fast":
        assert fast_path_of(server) is not None
    else:
        assert fast_path_of(server) is None


class Variant:
    """The standard library's module, or ours on one of its two paths."""

    def __init__(self, name):
        self.name = name
        self.mod = socketserver if name == "std" else socketserver_rs
        self.path = {"std": None, "rs-fast": "fast", "rs-faithful": "faithful"}[name]

    def server_class(self, name_or_cls):
        cls = name_or_cls
        if isinstance(cls, str):
            cls = getattr(self.mod, cls)
        return cls if self.path is None else on_path(cls, self.path)

    def check_path(self, server):
        if self.path is not None:
            assert_path(server, self.path)


@pytest.fixture(params=["std", "rs-fast", "rs-faithful"])
def variant(request):
    """A scenario run on the standard library, then on both of our paths."""
    return Variant(request.param)
