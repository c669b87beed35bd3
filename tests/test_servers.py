"""The server classes: serving, hooks, attributes and hierarchy, addresses,
timeouts and error handling, compared with the standard library."""

import inspect
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    IO_TIMEOUT,
    Serving,
    address_for,
    assert_path,
    echo_handler,
    exchange,
    faithful,
    fast_path_of,
    hooked,
    is_stream,
    on_path,
    read_to_eof,
    recv_all,
    request,
    stream_request,
    wait_until,
)

import socketserver_rs

pytestmark = pytest.mark.timeout(30)

SERVER_CLASSES = [
    "TCPServer",
    "UDPServer",
    "UnixStreamServer",
    "UnixDatagramServer",
    "ThreadingTCPServer",
    "ThreadingUDPServer",
    "ThreadingUnixStreamServer",
    "ThreadingUnixDatagramServer",
    "ForkingTCPServer",
    "ForkingUDPServer",
    "ForkingUnixStreamServer",
    "ForkingUnixDatagramServer",
]
PUBLIC_CLASSES = sorted(
    name for name in socketserver.__all__ if inspect.isclass(getattr(socketserver, name))
)
MISSING = object()


def class_of(mod, name):
    """mod.<name>; composed from its mixin and base where the standard
    library predates the name (ForkingUnix*Server arrived in 3.12)."""
    if hasattr(mod, name):
        return getattr(mod, name)
    mixin, base = name.split("Unix")
    return type(name, (getattr(mod, mixin + "MixIn"), getattr(mod, "Unix" + base)), {})


def client_bind(cls, base, i):
    """A path for a Unix datagram client (it must be bound to get replies)."""
    if cls.address_family == socket.AF_UNIX and not is_stream(cls):
        return f"{base}.{i}"
    return None


# -- serving, on both paths --------------------------------------------------


@pytest.mark.parametrize("name", SERVER_CLASSES)
def test_serves_echo_requests_on_the_fast_path(name, runner, unix_path, unix_client_path):
    cls = getattr(socketserver_rs, name)
    server = runner.track(
        cls(address_for(cls, unix_path), echo_handler(socketserver_rs, is_stream(cls)))
    )
    if name.startswith("Forking"):
        # ForkingMixIn overrides process_request(): there is no fast path.
        assert fast_path_of(server) is None
    else:
        assert fast_path_of(server) is not None
    runner.start(server)
    for i in range(3):
        reply = request(server, b"echo %d\n" % i, client_bind(cls, unix_client_path, i))
        assert reply == b"ECHO %d\n" % i


def trace_hooks(mod, name, mode, tmp_path):
    """Serve two echo requests on a subclass of mod.<name> recording every
    request hook; the hooks called, in order, and the replies."""
    base = class_of(mod, name)
    cls = hooked(base)
    address = address_for(base, str(tmp_path / f"{mod.__name__}.srv"))
    server = cls(address, echo_handler(mod, is_stream(base)))
    replies = []
    try:
        if mod is socketserver_rs:
            assert fast_path_of(server) is None
        serving = None
        if mode == "serve_forever":
            serving = Serving(server, 0.05)
            serving.thread.start()
        for i in range(2):
            waiter = None
            if mode == "handle_request":
                waiter = threading.Thread(target=server.handle_request)
                waiter.start()
            bind = client_bind(base, str(tmp_path / f"{mod.__name__}.cli"), i)
            replies.append(request(server, b"hook %d\n" % i, bind))
            assert cls.done.acquire(timeout=IO_TIMEOUT)
            if waiter is not None:
                waiter.join(IO_TIMEOUT)
                assert not waiter.is_alive()
        if serving is not None:
            assert serving.stop()
            assert serving.errors == []
        return list(cls.trace), replies
    finally:
        server.server_close()


@pytest.mark.parametrize("mode", ["serve_forever", "handle_request"])
@pytest.mark.parametrize("name", SERVER_CLASSES)
def test_hook_order_equals_stdlib(name, mode, tmp_path):
    ours, our_replies = trace_hooks(socketserver_rs, name, mode, tmp_path)
    theirs, their_replies = trace_hooks(socketserver, name, mode, tmp_path)
    assert our_replies == their_replies == [b"HOOK 0\n", b"HOOK 1\n"]
    assert "process_request" in theirs
    assert ours == theirs


# -- class attributes and hierarchy -----------------------------------------

SERVER_ATTRIBUTES = (
    "allow_reuse_address",
    "allow_reuse_port",
    "request_queue_size",
    "timeout",
    "max_packet_size",
    "daemon_threads",
    "block_on_close",
    "max_children",
    "address_family",
    "socket_type",
    "active_children",
)
HANDLER_ATTRIBUTES = ("rbufsize", "wbufsize", "disable_nagle_algorithm", "timeout")


def test_public_names_include_stdlib():
    assert set(socketserver.__all__) <= set(socketserver_rs.__all__)
    for name in socketserver_rs.__all__:
        assert getattr(socketserver_rs, name).__module__ == "socketserver"


# Module-level names of the standard module besides __all__ that programs
# use: `from socketserver import _SocketWriter`, say.
STANDARD_MODULE_NAMES = [
    name
    for name in vars(socketserver)
    if not name.startswith("__") and name not in socketserver.__all__
]


def test_the_standard_modules_other_names_are_there_too():
    assert {"_SocketWriter", "_ServerSelector", "selectors", "time"} <= set(STANDARD_MODULE_NAMES)
    for name in STANDARD_MODULE_NAMES:
        assert hasattr(socketserver_rs, name), name
        assert name not in socketserver_rs.__all__
    for name in ("os", "selectors", "socket", "sys", "threading", "time", "BufferedIOBase"):
        assert getattr(socketserver_rs, name) is getattr(socketserver, name), name
    assert socketserver_rs._ServerSelector is socketserver._ServerSelector


def test_the_standard_modules_helpers_work_the_same(ssmod):
    a, b = socket.socketpair()
    with a, b:
        writer = ssmod._SocketWriter(a)
        assert writer.writable() and isinstance(writer, socketserver.BufferedIOBase)
        assert writer.write(memoryview(b"hello")[1:]) == 4
        assert writer.fileno() == a.fileno()
        assert b.recv(16) == b"ello"
        with ssmod._ServerSelector() as selector:
            selector.register(b, ssmod.selectors.EVENT_READ)
            assert selector.select(0) == []
    threads = ssmod._Threads()
    done = threading.Event()
    daemon = threading.Thread(target=done.wait, daemon=True)
    worker = threading.Thread(target=done.wait)
    for thread in (daemon, worker):
        thread.start()
        threads.append(thread)
    assert threads == [worker]
    done.set()
    threads.join()
    assert threads == [] and not worker.is_alive()
    nothing = ssmod._NoThreads()
    nothing.append(worker)
    nothing.join()


def test_the_standard_modules_other_names_import_after_patch():
    program = (
        "import socketserver_rs\n"
        "socketserver_rs.patch()\n"
        "from socketserver import _NoThreads, _ServerSelector, _SocketWriter, _Threads\n"
        "import socketserver, socket\n"
        "assert socketserver is socketserver_rs\n"
        "a, b = socket.socketpair()\n"
        "_SocketWriter(a).write(b'ok')\n"
        "print(b.recv(2).decode(), _Threads.__name__, _NoThreads.__name__)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=IO_TIMEOUT
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["ok", "_Threads", "_NoThreads"]


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_class_attributes_equal_stdlib(name):
    ours, theirs = getattr(socketserver_rs, name), getattr(socketserver, name)
    for attr in SERVER_ATTRIBUTES + HANDLER_ATTRIBUTES:
        assert getattr(ours, attr, MISSING) == getattr(theirs, attr, MISSING), attr


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_mro_names_equal_stdlib(name):
    ours, theirs = getattr(socketserver_rs, name), getattr(socketserver, name)
    assert [c.__name__ for c in ours.__mro__] == [c.__name__ for c in theirs.__mro__]


def test_subclass_relations_equal_stdlib():
    assert issubclass(socketserver_rs.UDPServer, socketserver_rs.TCPServer)
    assert issubclass(socketserver_rs.TCPServer, socketserver_rs.BaseServer)
    assert issubclass(socketserver_rs.ThreadingTCPServer, socketserver_rs.ThreadingMixIn)
    assert issubclass(socketserver_rs.UnixDatagramServer, socketserver_rs.UDPServer)
    for a in PUBLIC_CLASSES:
        for b in PUBLIC_CLASSES:
            expected = issubclass(getattr(socketserver, a), getattr(socketserver, b))
            assert (
                issubclass(getattr(socketserver_rs, a), getattr(socketserver_rs, b)) == expected
            ), (a, b)


# -- construction, fileno, handle_request, context manager ------------------


@pytest.mark.parametrize("name", ["TCPServer", "UDPServer", "UnixStreamServer"])
def test_bind_and_activate_false_then_manual(ssmod, name, runner, unix_path):
    cls = getattr(ssmod, name)
    address = address_for(cls, unix_path)
    server = runner.track(
        cls(address, echo_handler(ssmod, is_stream(cls)), bind_and_activate=False)
    )
    assert server.server_address == address
    assert server.socket.getsockname() in (("0.0.0.0", 0), "")
    server.allow_reuse_address = True
    server.server_bind()
    if cls.address_family == socket.AF_INET:
        assert server.server_address[1] != 0
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    assert server.server_address == server.socket.getsockname()
    server.server_activate()
    runner.start(server)
    assert request(server, b"manual\n") == b"MANUAL\n"


@pytest.mark.parametrize(
    "name", ["TCPServer", "UDPServer", "UnixDatagramServer", "ThreadingTCPServer"]
)
def test_fileno_is_the_socket_descriptor(ssmod, name, runner, unix_path):
    cls = getattr(ssmod, name)
    server = runner.track(cls(address_for(cls, unix_path), ssmod.BaseRequestHandler))
    assert type(server.fileno()) is int
    assert server.fileno() == server.socket.fileno() >= 0


@pytest.mark.parametrize("which", ["server", "socket", "both", "both-reversed"])
def test_handle_request_honours_timeout(ssmod, which, runner):
    timed_out = []

    class Server(ssmod.TCPServer):
        def handle_timeout(self):
            timed_out.append(time.monotonic())
            return "timed out"

    server = runner.track(Server(("127.0.0.1", 0), echo_handler(ssmod, True)))
    if which == "server":
        server.timeout = 0.2
    elif which == "socket":
        server.socket.settimeout(0.2)
    elif which == "both":
        server.timeout = 5
        server.socket.settimeout(0.2)
    else:
        server.timeout = 0.2
        server.socket.settimeout(5)
    start = time.monotonic()
    assert server.handle_request() == "timed out"
    elapsed = time.monotonic() - start
    assert len(timed_out) == 1
    assert 0.15 <= elapsed < 2.0

    # With a request waiting, it is handled and handle_timeout() not called.
    replies = []
    client = threading.Thread(
        target=lambda: replies.append(stream_request(server.server_address, b"late\n"))
    )
    client.start()
    assert server.handle_request() is None
    client.join(IO_TIMEOUT)
    assert replies == [b"LATE\n"]
    assert len(timed_out) == 1


@pytest.mark.parametrize(
    "name", ["TCPServer", "UDPServer", "UnixStreamServer", "ThreadingTCPServer"]
)
def test_context_manager_closes_the_socket(ssmod, name, unix_path):
    cls = getattr(ssmod, name)
    with cls(address_for(cls, unix_path), ssmod.BaseRequestHandler) as server:
        assert isinstance(server, cls)
        assert server.socket.fileno() >= 0
    assert server.socket.fileno() == -1


# -- what handlers get -------------------------------------------------------


@pytest.mark.parametrize("name", ["TCPServer", "UnixStreamServer", "ThreadingTCPServer"])
def test_stream_request_is_a_plain_socket(name, path, runner, unix_path):
    seen = []

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            seen.append((type(self.request), self.request.gettimeout()))
            self.request.recv(1)
            self.request.sendall(b"ok")

    cls = on_path(getattr(socketserver_rs, name), path)
    server = runner.track(cls(address_for(cls, unix_path), Handler))
    assert type(server.socket) is socket.socket
    assert_path(server, path)
    runner.start(server)
    assert request(server, b"x") == b"ok"
    assert seen == [(socket.socket, None)]


@pytest.mark.parametrize("name", ["UDPServer", "UnixDatagramServer", "ThreadingUDPServer"])
def test_datagram_request_is_bytes_and_the_server_socket(
    name, path, runner, unix_path, unix_client_path
):
    seen = []

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            seen.append((type(self.request), type(data), data, sock is self.server.socket))
            sock.sendto(b"ok", self.client_address)

    cls = on_path(getattr(socketserver_rs, name), path)
    server = runner.track(cls(address_for(cls, unix_path), Handler))
    assert type(server.socket) is socket.socket
    assert_path(server, path)
    runner.start(server)
    assert request(server, b"payload", client_bind(cls, unix_client_path, 0)) == b"ok"
    assert seen == [(tuple, bytes, b"payload", True)]


class TCP6Server(socketserver_rs.TCPServer):
    address_family = socket.AF_INET6


class UDP6Server(socketserver_rs.UDPServer):
    address_family = socket.AF_INET6


CLIENT_ADDRESS_CASES = {
    "ipv4-tcp": (socketserver_rs.TCPServer, None),
    "ipv4-udp": (socketserver_rs.UDPServer, None),
    "ipv6-tcp": (TCP6Server, None),
    "ipv6-udp": (UDP6Server, None),
    "unix-stream-path": (socketserver_rs.UnixStreamServer, "path"),
    "unix-stream-unbound": (socketserver_rs.UnixStreamServer, None),
    "unix-dgram-path": (socketserver_rs.UnixDatagramServer, "path"),
    "unix-dgram-abstract": (socketserver_rs.UnixDatagramServer, "abstract"),
}


@pytest.mark.parametrize("case", sorted(CLIENT_ADDRESS_CASES))
def test_client_address_is_the_clients_sockname(case, path, runner, unix_path, unix_client_path):
    base, bind = CLIENT_ADDRESS_CASES[case]
    seen = []

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            seen.append(self.client_address)
            if isinstance(self.request, tuple):
                self.request[1].sendto(b"ok", self.client_address)
            else:
                self.request.recv(1)  # no unread data at close: no reset
                self.request.sendall(b"ok")

    cls = on_path(base, path)
    server = runner.track(cls(address_for(cls, unix_path), Handler))
    assert_path(server, path)
    runner.start(server)
    with socket.socket(cls.address_family, cls.socket_type) as client:
        client.settimeout(IO_TIMEOUT)
        if bind == "path":
            client.bind(unix_client_path)
        elif bind == "abstract":
            client.bind(b"\0socketserver-rs-test-%d" % id(client))
        elif cls.address_family != socket.AF_UNIX:
            client.bind((server.server_address[0], 0))
        if is_stream(cls):
            client.connect(server.server_address)
            client.sendall(b"x")
            assert recv_all(client) == b"ok"
        else:
            client.sendto(b"x", server.server_address)
            assert client.recvfrom(100)[0] == b"ok"
        expected = client.getsockname()
    assert seen == [expected]
    assert type(seen[0]) is type(expected)


# -- errors ------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["setup", "handle", "finish"])
@pytest.mark.parametrize("threading_server", [False, True], ids=["sync", "threading"])
def test_handler_exception_reaches_handle_error(phase, threading_server, path, runner):
    """An exception in setup(), handle() or finish() reaches handle_error()
    while the request is still open; then the request is closed (what
    handle() wrote before finish() failed arrives) and the server goes on."""
    raised = []
    reported = []
    reported_event = threading.Event()

    class Handler(socketserver_rs.BaseRequestHandler):
        def _maybe_fail(self, where):
            if where == phase:
                exc = ValueError(f"failed in {where}")
                raised.append(exc)
                raise exc

        def setup(self):
            self._maybe_fail("setup")

        def handle(self):
            self._maybe_fail("handle")
            self.request.sendall(b"ok\n")

        def finish(self):
            self._maybe_fail("finish")

    name = "ThreadingTCPServer" if threading_server else "TCPServer"

    class Server(getattr(socketserver_rs, name)):
        def handle_error(self, request, client_address):
            reported.append(
                {
                    "address": client_address,
                    "exc_info": sys.exc_info(),
                    "request_open": request.fileno() >= 0,
                    "is_socket": type(request) is socket.socket,
                }
            )
            reported_event.set()

    cls = on_path(Server, path)
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    assert_path(server, path)
    serving = runner.start(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        assert recv_all(client) == (b"ok\n" if phase == "finish" else b"")
        expected_address = client.getsockname()
    assert reported_event.wait(IO_TIMEOUT)
    assert len(reported) == 1
    report = reported[0]
    assert report["address"] == expected_address
    exc_type, exc_value, exc_tb = report["exc_info"]
    assert exc_type is ValueError
    assert exc_value is raised[0]
    assert phase in str(exc_value)
    assert exc_tb is not None
    assert report["request_open"] and report["is_socket"]
    # The server keeps serving.
    reported_event.clear()
    phase = None
    assert stream_request(server.server_address, b"") == b"ok\n"
    assert not reported_event.is_set()
    assert len(reported) == 1
    assert serving.stop()
    assert serving.errors == []


@pytest.mark.parametrize("threading_server", [False, True], ids=["sync", "threading"])
def test_datagram_handler_exception_reaches_handle_error(threading_server, path, runner):
    reported = []
    reported_event = threading.Event()

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            raise KeyError(self.request[0])

    name = "ThreadingUDPServer" if threading_server else "UDPServer"

    class Server(getattr(socketserver_rs, name)):
        def handle_error(self, request, client_address):
            reported.append((client_address, sys.exc_info()[:2], request))
            self.socket.sendto(b"error", client_address)
            reported_event.set()

    cls = on_path(Server, path)
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    assert_path(server, path)
    runner.start(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(IO_TIMEOUT)
        client.bind(("127.0.0.1", 0))
        client.sendto(b"boom", server.server_address)
        assert client.recvfrom(100)[0] == b"error"
        expected_address = client.getsockname()
    assert reported_event.wait(IO_TIMEOUT)
    [(address, (exc_type, exc_value), req)] = reported
    assert address == expected_address
    assert exc_type is KeyError and exc_value.args == (b"boom",)
    assert req == (b"boom", server.socket)


def test_sys_exc_info_is_restored_after_handle_error(path, runner):
    """Inside handle_error the handler's exception is being handled; the
    serving thread's own exception state is untouched afterwards."""
    after = []

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            raise ValueError("in handler")

    class Server(socketserver_rs.TCPServer):
        def handle_error(self, request, client_address):
            assert sys.exc_info()[0] is ValueError

        def service_actions(self):
            after.append(sys.exc_info())

    cls = on_path(Server, path)
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    serving = runner.start(server, poll_interval=0.01)
    assert stream_request(server.server_address, b"x") == b""
    count = len(after)
    assert wait_until(lambda: len(after) >= count + 3)
    assert serving.stop()
    assert serving.errors == []
    assert after[-1] == (None, None, None)


@pytest.mark.parametrize("entry", ["handle_request", "serve_forever"])
def test_base_exception_propagates_after_request_closed(entry, variant, runner):
    requests = []

    class Handler(variant.mod.BaseRequestHandler):
        def handle(self):
            requests.append(self.request)
            raise SystemExit(3)

    cls = variant.server_class("TCPServer")
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    variant.check_path(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        client.sendall(b"x")
        if entry == "handle_request":
            with pytest.raises(SystemExit) as info:
                server.handle_request()
            assert info.value.code == 3
        else:
            serving = runner.start(server)
            serving.thread.join(IO_TIMEOUT)
            assert not serving.thread.is_alive()
            assert len(serving.errors) == 1
            assert type(serving.errors[0]) is SystemExit
        assert requests[0].fileno() == -1
        assert recv_all(client) == b""


def test_exception_from_handle_error_propagates(variant, runner):
    """As in the standard library, an exception raised by handle_error()
    ends serve_forever(), chained to the handler's."""
    requests = []

    class Handler(variant.mod.BaseRequestHandler):
        def handle(self):
            requests.append(self.request)
            raise ValueError("handler")

    class Server(variant.mod.TCPServer):
        def handle_error(self, request, client_address):
            raise RuntimeError("handle_error")

    cls = variant.server_class(Server)
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    variant.check_path(server)
    serving = runner.start(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        client.sendall(b"x")
        serving.thread.join(IO_TIMEOUT)
    assert not serving.thread.is_alive()
    [error] = serving.errors
    assert type(error) is RuntimeError
    assert type(error.__context__) is ValueError
    for req in requests:
        req.close()


class ExceptHook:
    """Records what escapes threads (threading.excepthook) meanwhile."""

    def __init__(self):
        self.types = []

    def __enter__(self):
        self._saved = threading.excepthook
        threading.excepthook = self._hook
        return self

    def _hook(self, args):
        self.types.append(args.exc_type)

    def __exit__(self, *exc):
        threading.excepthook = self._saved


def handle_error_raises(ss, mode, faithful):
    """A handler raises, then handle_error raises too. Returns what came out
    of serve_forever()/handle_request(), whether the client saw the request
    socket closed, what reached threading.excepthook, and whether the next
    request was served."""
    kept = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            if self.server.failing:
                raise ValueError("in handle")
            self.request.sendall(b"ok\n")

    class Server(ss.ThreadingTCPServer if mode == "threading" else ss.TCPServer):
        failing = True

        def handle_error(self, request, client_address):
            kept.append(request)
            raise RuntimeError("in handle_error")

    if faithful:
        Server.verify_request = lambda self, request, client_address: True
    server = Server(("127.0.0.1", 0), Handler)
    server.timeout = 5
    outcome = {}
    with ExceptHook() as hook:
        try:
            with socket.create_connection(server.server_address, timeout=5) as client:
                client.sendall(b"x\n")
                if mode == "handle_request":
                    try:
                        server.handle_request()
                        outcome["raised"] = None
                    except Exception as exc:  # noqa: BLE001 - compared
                        outcome["raised"] = type(exc).__name__
                    _, outcome["closed"] = read_to_eof(client, 1.0)
                    server.failing = False
                    with socket.create_connection(server.server_address, timeout=5) as nxt:
                        server.handle_request()
                        outcome["next"] = read_to_eof(nxt, 2.0)
                else:
                    with Serving(server) as serving:
                        _, outcome["closed"] = read_to_eof(client, 1.0)
                        serving.returned.wait(1.0)
                        raised = serving.errors[0] if serving.errors else None
                        outcome["raised"] = type(raised).__name__ if raised else None
                        server.failing = False
                        try:
                            outcome["next"] = exchange(server.server_address, b"ping\n", 1.0)
                        except OSError as exc:
                            outcome["next"] = type(exc).__name__
        finally:
            for sock in kept:
                sock.close()
            # server_close() joins the request threads (block_on_close), so
            # what they raised has reached threading.excepthook by then.
            server.server_close()
    outcome["excepthook"] = [t.__name__ for t in hook.types]
    return outcome


@pytest.mark.parametrize("faithful", [False, True], ids=["fast", "faithful"])
@pytest.mark.parametrize("mode", ["handle_request", "serve_forever", "threading"])
def test_exception_in_handle_error_matches_stdlib(mode, faithful):
    expected = handle_error_raises(socketserver, mode, faithful)
    assert handle_error_raises(socketserver_rs, mode, faithful) == expected


# -- mixing and overriding ---------------------------------------------------


def test_stdlib_threading_mixin_with_our_tcp_server(runner):
    barrier = threading.Barrier(3)
    threads = []

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            threads.append(threading.current_thread())
            barrier.wait(IO_TIMEOUT)
            self.request.sendall(b"ok")

    class Server(socketserver.ThreadingMixIn, socketserver_rs.TCPServer):
        pass

    server = runner.track(Server(("127.0.0.1", 0), Handler))
    assert fast_path_of(server) is None
    serving = runner.start(server)
    replies = []
    clients = [
        threading.Thread(target=lambda: replies.append(stream_request(server.server_address, b"x")))
        for _ in range(3)
    ]
    for c in clients:
        c.start()
    for c in clients:
        c.join(IO_TIMEOUT)
    assert replies == [b"ok"] * 3
    assert len(set(threads)) == 3
    assert serving.thread not in threads
    assert serving.stop()
    server.server_close()
    assert not any(t.is_alive() for t in threads)


@pytest.mark.parametrize(
    "name", ["TCPServer", "ThreadingTCPServer", "UDPServer", "ThreadingUDPServer"]
)
def test_user_mixin_overriding_process_request_is_honoured(name, runner):
    calls = []

    class Recording:
        def process_request(self, request, client_address):
            calls.append(client_address)
            super().process_request(request, client_address)

    cls = type("Server", (Recording, getattr(socketserver_rs, name)), {})
    server = runner.track(cls(("127.0.0.1", 0), echo_handler(socketserver_rs, is_stream(cls))))
    assert fast_path_of(server) is None
    runner.start(server)
    assert request(server, b"mixed\n") == b"MIXED\n"
    assert len(calls) == 1 and calls[0][0] == "127.0.0.1"


def test_instance_attribute_hook_is_honoured(ssmod, runner):
    handled = []

    class Handler(ssmod.BaseRequestHandler):
        def handle(self):
            handled.append(self.client_address)

    server = runner.track(ssmod.TCPServer(("127.0.0.1", 0), Handler))
    server.verify_request = lambda request, client_address: False
    if ssmod is socketserver_rs:
        assert fast_path_of(server) is None
    runner.start(server)
    assert stream_request(server.server_address, b"x") == b""
    assert handled == []


def test_faithful_helper_really_leaves_the_fast_path():
    server = faithful(socketserver_rs.TCPServer)(
        ("127.0.0.1", 0), socketserver_rs.BaseRequestHandler
    )
    with server:
        assert fast_path_of(server) is None
    server = socketserver_rs.TCPServer(("127.0.0.1", 0), socketserver_rs.BaseRequestHandler)
    with server:
        assert fast_path_of(server) is not None
