"""ThreadingMixIn on the worker pool: reuse, concurrency, daemon threads,
block_on_close, exceptions escaping a request, max_threads with clients
left waiting in the backlog, idle workers and clients dropped."""

import queue
import socket
import sys
import threading
import time

import pytest
from conftest import (
    IO_TIMEOUT,
    Serving,
    address_for,
    assert_path,
    exchange,
    is_stream,
    on_path,
    read_to_eof,
    recv_all,
    request,
    still_open,
    stream_request,
    tcp_queues,
    wait_until,
)

import socketserver_rs
from socketserver_rs import _state
from socketserver_rs.mixins import _WorkerThread

pytestmark = pytest.mark.timeout(30)

THREADING_CLASSES = [
    "ThreadingTCPServer",
    "ThreadingUDPServer",
    "ThreadingUnixStreamServer",
    "ThreadingUnixDatagramServer",
]


def reply(handler, data):
    """Answer a request of either kind."""
    if isinstance(handler.request, tuple):
        handler.request[1].sendto(data, handler.client_address)
    else:
        handler.request.recv(16)  # read the request: no reset on close
        handler.request.sendall(data)


def waits_for_work(worker):
    """The worker is back in its loop, waiting for the next job: no Python
    frame runs above the loop's (the wait itself is in the core)."""
    frame = sys._current_frames().get(worker.ident)
    return frame is not None and frame.f_code is _WorkerThread.run.__code__


def test_sequential_requests_reuse_one_worker(path, runner):
    seen = []

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            seen.append(threading.current_thread())
            self.request.sendall(b"ok")

    cls = on_path(socketserver_rs.ThreadingTCPServer, path)
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    assert_path(server, path)
    serving = runner.start(server)
    assert stream_request(server.server_address, b"1") == b"ok"
    (worker,) = server._threads
    assert wait_until(lambda: waits_for_work(worker))
    assert stream_request(server.server_address, b"2") == b"ok"
    first, second = seen
    assert first is second
    assert first is not serving.thread
    assert first is not threading.main_thread()
    assert first in server._threads


@pytest.mark.parametrize("name", THREADING_CLASSES)
def test_concurrent_requests_all_run_at_once(name, path, runner, unix_path, unix_client_path):
    n = 8
    barrier = threading.Barrier(n)
    workers = set()

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            workers.add(threading.current_thread())
            # All n run at once within ms when each has its own thread; a
            # short limit keeps a failure quick.
            barrier.wait(3)
            reply(self, b"through")

    cls = on_path(getattr(socketserver_rs, name), path)
    server = runner.track(cls(address_for(cls, unix_path), Handler))
    assert_path(server, path)
    runner.start(server)
    replies = []

    def client(i):
        unix_dgram = cls.address_family == socket.AF_UNIX and not is_stream(cls)
        bind = f"{unix_client_path}.{i}" if unix_dgram else None
        try:
            replies.append(request(server, b"x", bind))
        except OSError as exc:  # a timeout: reported by the assert below
            replies.append(exc)

    clients = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(IO_TIMEOUT * 2)
    assert replies == [b"through"] * n
    assert not barrier.broken
    assert len(workers) == n


@pytest.mark.parametrize("daemon", [False, True])
def test_daemon_threads_sets_worker_daemon(daemon, path, runner):
    seen = []

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            seen.append(threading.current_thread().daemon)
            self.request.sendall(b"ok")

    class Server(socketserver_rs.ThreadingTCPServer):
        daemon_threads = daemon

    cls = on_path(Server, path)
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    assert_path(server, path)
    runner.start(server)
    for _ in range(2):
        assert stream_request(server.server_address, b"x") == b"ok"
    assert seen == [daemon, daemon]
    assert all(t.daemon is daemon for t in server._threads)


def test_daemon_threads_set_on_the_instance(path, runner):
    seen = []

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            seen.append(threading.current_thread().daemon)
            self.request.sendall(b"ok")

    cls = on_path(socketserver_rs.ThreadingTCPServer, path)
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    server.daemon_threads = True
    runner.start(server)
    assert stream_request(server.server_address, b"x") == b"ok"
    assert seen == [True]


class SlowRequest:
    """A handler that signals it started, then takes `delay` seconds."""

    def __init__(self, mod, delay):
        self.started = threading.Event()
        self.done = threading.Event()
        outer = self

        class Handler(mod.BaseRequestHandler):
            def handle(self):
                outer.started.set()
                time.sleep(delay)
                outer.done.set()

        self.handler = Handler


@pytest.mark.parametrize("block_on_close", [True, False])
def test_server_close_and_block_on_close(block_on_close, variant, runner):
    slow = SlowRequest(variant.mod, 0.6)

    class Server(variant.mod.ThreadingTCPServer):
        pass

    Server.block_on_close = block_on_close
    cls = variant.server_class(Server)
    server = runner.track(cls(("127.0.0.1", 0), slow.handler))
    variant.check_path(server)
    serving = runner.start(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        assert slow.started.wait(IO_TIMEOUT)
        assert serving.stop()
        start = time.monotonic()
        server.server_close()
        elapsed = time.monotonic() - start
        if block_on_close:
            assert slow.done.is_set()
            assert elapsed >= 0.3
        else:
            assert not slow.done.is_set()
            assert elapsed < 0.3
        assert recv_all(client) == b""
    assert slow.done.wait(IO_TIMEOUT)


def test_threads_stay_few_over_many_sequential_requests(path, runner):
    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            self.request.sendall(self.request.recv(10))

    cls = on_path(socketserver_rs.ThreadingTCPServer, path)
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    assert_path(server, path)
    runner.start(server)
    for i in range(50):
        assert stream_request(server.server_address, b"%d" % i) == b"%d" % i
    threads = server._threads
    assert 1 <= len(threads) <= 4
    assert all(t.is_alive() for t in threads)


def test_system_exit_in_handler_reaches_threading_excepthook(variant, runner, monkeypatch):
    hooked = []
    hooked_event = threading.Event()

    def excepthook(args):
        hooked.append((args.exc_type, args.thread))
        hooked_event.set()

    monkeypatch.setattr(threading, "excepthook", excepthook)

    class Handler(variant.mod.BaseRequestHandler):
        def handle(self):
            if self.request.recv(10) == b"exit":
                raise SystemExit(0)
            self.request.sendall(b"ok")

    cls = variant.server_class("ThreadingTCPServer")
    server = runner.track(cls(("127.0.0.1", 0), Handler))
    variant.check_path(server)
    serving = runner.start(server)
    assert stream_request(server.server_address, b"exit") == b""
    assert hooked_event.wait(IO_TIMEOUT)
    [(exc_type, thread)] = hooked
    assert exc_type is SystemExit
    assert thread is not serving.thread
    # The server goes on serving.
    assert stream_request(server.server_address, b"again") == b"ok"
    assert serving.thread.is_alive()
    assert serving.errors == []


EXIT_WITH_IDLE_WORKERS = """
import socket, threading
import socketserver_rs as socketserver

class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())

server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
threading.Thread(target=server.serve_forever, daemon=True).start()
with socket.create_connection(server.server_address) as client:
    client.sendall(b"hi\\n")
    assert client.recv(10) == b"hi\\n"
assert [t.daemon for t in server._threads] == [False]
print("done", flush=True)
"""


def test_interpreter_exit_does_not_wait_for_idle_workers():
    # A non-daemon worker left idle (no server_close) must not hold the
    # interpreter until it retires: at exit the pools let idle workers go.
    import subprocess
    import sys
    import time

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", EXIT_WITH_IDLE_WORKERS], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert time.monotonic() - started < 5


class _Upper(socketserver_rs.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline().upper())


def _served_after_pool_closed(replace_pool):
    errors = []

    class Server(socketserver_rs.ThreadingTCPServer):
        def handle_error(self, request, client_address):
            errors.append((client_address, sys.exc_info()[0]))

    server = Server(("127.0.0.1", 0), _Upper)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.sendall(b"warm\n")
            assert client.recv(16) == b"WARM\n"
        pool = server._worker_pool()
        if replace_pool:
            # As server_close() leaves it: this server gets a new pool.
            _state.of(server).pool = None
        pool.close()
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.sendall(b"after\n")
            reply = client.recv(16)
            return reply, errors, client.getsockname()
    finally:
        server.shutdown()
        serving.join(5)
        server.server_close()


def test_a_request_met_by_a_replaced_pool_is_served():
    reply, errors, _ = _served_after_pool_closed(replace_pool=True)
    assert reply == b"AFTER\n"
    assert errors == []


def test_a_request_met_by_a_closed_pool_reaches_handle_error():
    # The standard module, unable to start a thread, reports it through
    # handle_error and closes the request; so does the pool once closed.
    reply, errors, address = _served_after_pool_closed(replace_pool=False)
    assert reply == b""
    assert errors == [(address, RuntimeError)]


def test_idle_workers_retire_after_idle_thread_timeout(runner):
    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            self.request.sendall(self.request.recv(10))

    class Server(socketserver_rs.ThreadingTCPServer):
        idle_thread_timeout = 0.2

    server = runner.track(Server(("127.0.0.1", 0), Handler))
    runner.start(server)
    assert stream_request(server.server_address, b"hi") == b"hi"
    (worker,) = server._threads
    worker.join(3.0)  # the default timeout (10 s) would keep it alive
    assert not worker.is_alive()
    assert len(server._threads) == 0
    assert stream_request(server.server_address, b"again") == b"again"
    (new_worker,) = server._threads
    assert new_worker is not worker


def recording_server(handler, path="fast", **attrs):
    """A ThreadingTCPServer (with class attributes `attrs`) on `path` whose
    handle_error() puts (client_address, exception) on server.errors."""

    def handle_error(self, request, client_address):
        self.errors.put((client_address, sys.exc_info()[1]))

    namespace = {"handle_error": handle_error, **attrs}
    cls = type("Server", (socketserver_rs.ThreadingTCPServer,), namespace)
    server = on_path(cls, path)(("127.0.0.1", 0), handler)
    assert_path(server, path)
    server.errors = queue.Queue()
    return server


def test_threading_runs_concurrent_requests_at_once():
    """A request arriving while another blocks is served at once: the pool
    never gives less concurrency than a thread per request."""
    blocking = threading.Event()
    release = threading.Event()

    class Handler(socketserver_rs.BaseRequestHandler):
        def handle(self):
            if self.request.recv(16) == b"block":
                blocking.set()
                release.wait(10)
            self.request.sendall(b"ok\n")

    server = recording_server(Handler)
    with Serving(server):
        try:
            with socket.create_connection(server.server_address, timeout=5) as blocked:
                blocked.sendall(b"block")
                assert blocking.wait(5)
                for _ in range(3):
                    start = time.monotonic()
                    assert exchange(server.server_address, b"quick", 2.0) == (b"ok\n", True)
                    assert time.monotonic() - start < 1.0
        finally:
            release.set()
    assert server.errors.empty()


class Gate:
    """Counts the handlers running at once; they block until released."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.served = 0
        self.release = threading.Event()

    def handler(self):
        gate = self

        class Handler(socketserver_rs.BaseRequestHandler):
            def handle(self):
                with gate.lock:
                    gate.running += 1
                    gate.most = max(gate.most, gate.running)
                try:
                    gate.release.wait(10)
                    self.request.sendall(b"served\n")
                finally:
                    with gate.lock:
                        gate.running -= 1
                        gate.served += 1

        return Handler


def test_max_threads_bounds_workers_and_keeps_clients_waiting(path):
    gate = Gate()
    server = recording_server(gate.handler(), path, max_threads=4)
    threads_before = threading.active_count()
    clients = []
    with Serving(server):
        try:
            for _ in range(20):
                clients.append(socket.create_connection(server.server_address, timeout=5))
            assert wait_until(lambda: gate.running == 4, 5)
            # No event marks a handler that does not start: give a fifth
            # the time to (wrongly) start.
            time.sleep(0.5)
            assert gate.running == 4
            assert gate.most == 4
            assert len(server._threads) <= 4
            # the serving thread and at most four workers
            assert threading.active_count() - threads_before <= 5
            assert all(still_open(client) for client in clients)
            # Not accepted and queued in the process: left in the kernel backlog.
            assert tcp_queues(server.server_address[1])[1] == 16
            gate.release.set()
            for client in clients:
                assert read_to_eof(client, 5.0) == (b"served\n", True)
            assert gate.most == 4
            assert gate.served == 20
        finally:
            gate.release.set()
            for client in clients:
                client.close()
    assert server.errors.empty()


def test_idle_client_is_dropped_after_handler_timeout(path):
    class Handler(socketserver_rs.StreamRequestHandler):
        timeout = 0.3

        def handle(self):
            self.wfile.write(self.rfile.readline())

    server = recording_server(Handler, path, max_threads=1)
    with Serving(server):
        with socket.create_connection(server.server_address, timeout=5) as idle:
            start = time.monotonic()
            assert read_to_eof(idle, 5.0) == (b"", True)
            elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 2.0
        client_address, exc = server.errors.get(timeout=5)
        assert isinstance(exc, socket.timeout)
        # The only worker is free again.
        start = time.monotonic()
        assert exchange(server.server_address, b"hi\n", 2.0) == (b"hi\n", True)
        assert time.monotonic() - start < 1.0
    assert server.errors.empty()


@pytest.mark.parametrize(
    "attribute, value",
    [
        ("idle_thread_timeout", 0),
        ("idle_thread_timeout", -1.0),
        ("idle_thread_timeout", float("nan")),
        ("idle_thread_timeout", float("inf")),
        ("idle_thread_timeout", "5"),
        ("idle_thread_timeout", None),
        ("max_threads", 0),
        ("max_threads", 2.0),
        ("max_threads", True),
    ],
)
def test_pool_settings_are_checked_when_serving_starts(attribute, value, runner):
    server = runner.track(
        socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), socketserver_rs.BaseRequestHandler)
    )
    setattr(server, attribute, value)
    with pytest.raises(ValueError, match=attribute):
        server.serve_forever(poll_interval=0.05)


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf")])
def test_the_core_pool_refuses_a_useless_idle_timeout(seconds):
    with pytest.raises(ValueError, match="idle_timeout"):
        socketserver_rs._core.WorkerPool(lambda worker: None, idle_timeout=seconds)


EXIT_WHILE_SERVING = """
import socket, sys, threading, time
import socketserver_rs as socketserver

kind = sys.argv[1]

class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        if kind == "tcp":
            self.rfile.readline()  # a line that never comes

server_class = {"tcp": socketserver.ThreadingTCPServer, "udp": socketserver.ThreadingUDPServer}
server = server_class[kind](("127.0.0.1", 0), Handler)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
kept = []

def arrive():
    while True:
        try:
            if kind == "udp":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                    client.sendto(b"x", server.server_address)
            else:
                kept.append(socket.create_connection(server.server_address, timeout=1))
        except OSError:
            pass

threading.Thread(target=arrive, daemon=True).start()
time.sleep(0.3)
"""


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_interpreter_exits_cleanly_while_daemon_threads_serve(kind):
    # The main thread returns while serve_forever() runs in a daemon thread,
    # starting workers and closing connections as requests keep arriving:
    # before 3.14, CPython ends such threads with pthread_exit when they take
    # the GIL back, in the middle of the core's calls into Python. The
    # process must exit 0 every time, as with the standard module (which
    # this crashed about one run in three).
    import subprocess

    for _ in range(12):
        result = subprocess.run(
            [sys.executable, "-c", EXIT_WHILE_SERVING, kind],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr[-2000:]
