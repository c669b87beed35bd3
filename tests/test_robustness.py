"""Robustness: resource exhaustion, leaks, slow clients, forking, errors in
handlers, shutdown from handlers, a mixed-load soak and bad arguments.

Where the standard library defines the behaviour, the same scenario runs on
``socketserver`` and on ``socketserver_rs`` and the outcomes are compared.
The long forms of the load tests are the scripts under ``bench/``; the tests
run their short forms in a fresh interpreter, so that rlimits, fds, threads
and child processes are measured without the rest of the test session.
"""

import queue
import socket
import socketserver as std
import sys
import threading
import time
from pathlib import Path

import pytest

import socketserver_rs as rs

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MODULES = {"stdlib": std, "rs": rs}
LOCAL = ("127.0.0.1", 0)


# --------------------------------------------------------------------------
# helpers


class Serving:
    """serve_forever() on a thread, bounded: records what it raised and, on
    exit, stops it (if still running) and closes the server."""

    def __init__(self, server, poll_interval=0.05):
        self.server = server
        self.raised = None
        self.returned = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(poll_interval,), daemon=True)

    def _run(self, poll_interval):
        try:
            self.server.serve_forever(poll_interval)
        except BaseException as exc:  # noqa: B036 - recorded for the test
            self.raised = exc
        finally:
            self.returned.set()

    def __enter__(self):
        self.thread.start()
        return self

    def stop(self, timeout=5.0):
        if self.thread.is_alive():
            self.server.shutdown()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "serve_forever() did not stop"

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self.server.server_close()


def read_to_eof(sock, timeout=5.0):
    """(bytes read, whether the peer closed) within timeout."""
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


def request(address, payload=b"ping\n", timeout=5.0):
    """One connection: send payload, read to EOF."""
    with socket.create_connection(address, timeout=timeout) as client:
        client.sendall(payload)
        return read_to_eof(client, timeout)


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


# --------------------------------------------------------------------------
# 5. errors in handlers


def failing_handler(ss, stage):
    class Handler(ss.BaseRequestHandler):
        def setup(self):
            self.fail("setup")

        def handle(self):
            self.fail("handle")
            self.request.sendall(b"ok\n")

        def finish(self):
            self.fail("finish")

        def fail(self, where):
            if where == stage and self.server.failing:
                raise ValueError(f"failure in {where}")

    return Handler


def recording_server(ss, threaded, faithful, handler, **attrs):
    """A TCP server whose handle_error records (client_address, exception)."""
    base = ss.ThreadingTCPServer if threaded else ss.TCPServer

    def handle_error(self, request, client_address):
        self.errors.put((client_address, sys.exc_info()[1]))

    namespace = {"failing": True, "handle_error": handle_error, **attrs}
    if faithful:
        # Any overridden request hook makes the server run the Python hooks.
        namespace["verify_request"] = lambda self, request, client_address: True
    server = type("Server", (base,), namespace)(LOCAL, handler)
    server.errors = queue.Queue()
    return server


@pytest.mark.parametrize("stage", ["setup", "handle", "finish"])
@pytest.mark.parametrize("faithful", [False, True], ids=["fast", "faithful"])
@pytest.mark.parametrize("threaded", [False, True], ids=["sync", "threading"])
def test_handler_exception_reaches_handle_error(threaded, faithful, stage):
    server = recording_server(rs, threaded, faithful, failing_handler(rs, stage))
    with Serving(server) as serving:
        with socket.create_connection(server.server_address, timeout=5) as client:
            local = client.getsockname()
            client.sendall(b"x\n")
            data, closed = read_to_eof(client)
        client_address, exc = server.errors.get(timeout=5)
        assert client_address == local
        assert isinstance(exc, ValueError) and stage in str(exc)
        assert closed, "the request socket was left open after the error"
        assert data == (b"ok\n" if stage == "finish" else b"")
        # The server goes on serving.
        server.failing = False
        assert request(server.server_address) == (b"ok\n", True)
        assert server.errors.empty()
    assert serving.raised is None


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
    server = Server(LOCAL, Handler)
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
                        raised = serving.raised
                        outcome["raised"] = type(raised).__name__ if raised else None
                        server.failing = False
                        try:
                            outcome["next"] = request(server.server_address, timeout=1.0)
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
    expected = handle_error_raises(std, mode, faithful)
    assert handle_error_raises(rs, mode, faithful) == expected


# --------------------------------------------------------------------------
# 6. shutdown() from a handler


@pytest.mark.parametrize("faithful", [False, True], ids=["fast", "faithful"])
def test_shutdown_from_worker_thread_stops_the_server(faithful):
    class Handler(rs.BaseRequestHandler):
        def handle(self):
            self.server.shutdown()
            self.request.sendall(b"stopped\n")

    server = recording_server(rs, True, faithful, Handler)
    with Serving(server) as serving:
        with socket.create_connection(server.server_address, timeout=5) as client:
            start = time.monotonic()
            assert serving.returned.wait(1.0), "serve_forever() did not return within 1 s"
            elapsed = time.monotonic() - start
            assert read_to_eof(client, 2.0) == (b"stopped\n", True)
    assert serving.raised is None
    assert server.errors.empty()
    assert elapsed < 1.0


@pytest.mark.parametrize("faithful", [False, True], ids=["fast", "faithful"])
def test_shutdown_from_serving_thread_raises(faithful):
    raised = queue.Queue()

    class Handler(rs.BaseRequestHandler):
        def handle(self):
            if self.server.failing:
                try:
                    self.server.shutdown()
                except Exception as exc:  # noqa: BLE001 - recorded for the test
                    raised.put(exc)
                else:
                    raised.put(None)
            self.request.sendall(b"ok\n")

    server = recording_server(rs, False, faithful, Handler)
    with Serving(server) as serving:
        assert request(server.server_address) == (b"ok\n", True)
        exc = raised.get(timeout=5)
        assert isinstance(exc, RuntimeError)
        message = str(exc)
        assert "shutdown()" in message and "serve_forever()" in message
        # Still serving.
        server.failing = False
        assert request(server.server_address) == (b"ok\n", True)
        assert not serving.returned.is_set()
    assert serving.raised is None
    assert server.errors.empty()
