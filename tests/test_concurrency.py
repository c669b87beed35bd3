"""Many threads on one server at once: stopping, counting, reading and
writing one connection, the pool growing and retiring, the message loop's
handlers on many workers, and fork while serving. Bounded in count and
time; they run on every build, and are what a free-threaded interpreter
(no GIL to serialise the callers) is checked with."""

import os
import socket
import socketserver
import sys
import threading

import pytest
from conftest import FREE_THREADED, IO_TIMEOUT, RecordingErrors, wait_until

import socketserver_rs
from socketserver_rs import MessageClient, MessageRequestHandler, _state


class Echo(socketserver_rs.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)


def serving(server):
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread


def run_all(targets, timeout=IO_TIMEOUT * 3):
    """Run the callables on threads at once; the exceptions they raised."""
    errors = []
    start = threading.Barrier(len(targets))

    def wrap(target):
        try:
            start.wait(IO_TIMEOUT)
            target()
        except BaseException as exc:  # noqa: B036 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread did not finish"
    return errors


def echo_client(address, rounds, stop=None):
    def client():
        for i in range(rounds):
            if stop is not None and stop.is_set():
                return
            try:
                with socket.create_connection(address, timeout=IO_TIMEOUT) as conn:
                    conn.sendall(b"line %d\n" % i)
                    assert conn.makefile("rb").readline() == b"line %d\n" % i
            except (ConnectionError, TimeoutError) as exc:
                if stop is None or not stop.is_set():
                    raise AssertionError(f"refused while serving: {exc!r}") from exc
                return

    return client


def test_the_gil_stays_as_the_interpreter_has_it():
    """On a free-threaded build, importing and using the package leaves the
    GIL off (the extension declares gil_used = false)."""
    if not FREE_THREADED:
        assert not hasattr(sys, "_is_gil_enabled") or sys._is_gil_enabled()
        return
    assert not sys._is_gil_enabled()
    with socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Echo) as server:
        thread = serving(server)
        assert echo_client(server.server_address, 3)() is None
        server.shutdown()
        thread.join(IO_TIMEOUT)
    assert not sys._is_gil_enabled()


def test_stopping_and_counting_from_many_threads_while_serving():
    server = socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    thread = serving(server)
    stop = threading.Event()

    def counter():
        seen = 0
        while not stop.is_set():
            snapshot = server.stats()
            assert snapshot["requests_active"] >= 0
            assert snapshot["requests_total"] >= seen
            seen = snapshot["requests_total"]

    def stopper():
        assert wait_until(lambda: server.stats()["requests_total"] >= 100)
        stop.set()
        server.shutdown()

    clients = [echo_client(server.server_address, 200, stop) for _ in range(4)]
    errors = run_all(clients + [counter] * 4 + [stopper] * 4)
    assert errors == []
    thread.join(IO_TIMEOUT)
    assert not thread.is_alive()
    # Then many threads close it at once, and drain it.
    errors = run_all([server.server_close] * 4 + [lambda: server.drain(0.5)] * 2)
    assert errors == []
    assert server.stats()["requests_active"] == 0


def test_drain_and_close_from_many_threads_with_requests_in_flight():
    release = threading.Event()

    class Held(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            release.wait(IO_TIMEOUT)
            self.wfile.write(b"done\n")

    server = socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Held)
    thread = serving(server)
    conns = [socket.create_connection(server.server_address, timeout=IO_TIMEOUT) for _ in range(8)]
    for conn in conns:
        conn.sendall(b"go\n")
    assert wait_until(lambda: server.stats()["requests_active"] == 8)
    results = []

    def drainer():
        results.append(server.drain(IO_TIMEOUT))

    errors = run_all([drainer] * 3 + [server.server_close] * 2 + [release.set])
    assert errors == []
    assert results == [0, 0, 0]
    for conn in conns:
        assert conn.makefile("rb").readline() == b"done\n"
        conn.close()
    thread.join(IO_TIMEOUT)
    assert server.stats()["requests_active"] == 0


@pytest.mark.parametrize("mod", [socketserver_rs, socketserver], ids=["rs", "std"])
def test_two_threads_writing_one_wfile_keep_each_write_whole(mod):
    """The standard files serialise their callers; so do ours."""

    class TwoWriters(mod.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()

            def write(tag):
                for i in range(500):
                    self.wfile.write(b"%s %04d %s\n" % (tag, i, tag * 200))

            writers = [threading.Thread(target=write, args=(t,)) for t in (b"a", b"b")]
            for w in writers:
                w.start()
            for w in writers:
                w.join()

    with mod.TCPServer(("127.0.0.1", 0), TwoWriters) as server:
        thread = serving(server)
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as conn:
            conn.sendall(b"go\n")
            lines = conn.makefile("rb").read().splitlines()
        server.shutdown()
        thread.join(IO_TIMEOUT)
    assert len(lines) == 1000
    for line in lines:
        tag, _, rest = line.partition(b" ")
        assert rest[5:] == tag * 200, line[:40]


def test_two_threads_reading_one_rfile_each_get_whole_lines():
    """Each readline() is whole (the standard module's BufferedReader may
    split a line between two threads: its first look into the buffer is
    unlocked)."""
    mod = socketserver_rs
    got = []

    class TwoReaders(mod.StreamRequestHandler):
        def handle(self):
            def read():
                for line in iter(self.rfile.readline, b""):
                    got.append(line)

            readers = [threading.Thread(target=read) for _ in range(2)]
            for r in readers:
                r.start()
            for r in readers:
                r.join()

    with mod.TCPServer(("127.0.0.1", 0), TwoReaders) as server:
        thread = serving(server)
        sent = [b"%05d %s\n" % (i, b"x" * (i % 300)) for i in range(2000)]
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as conn:
            conn.sendall(b"".join(sent))
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
        server.shutdown()
        thread.join(IO_TIMEOUT)
    assert sorted(got) == sent


def test_the_pool_grows_and_retires_under_churn():
    class Server(socketserver_rs.ThreadingTCPServer):
        max_threads = 6
        idle_thread_timeout = 0.02

    with Server(("127.0.0.1", 0), Echo) as server:
        thread = serving(server)
        for _ in range(3):
            # Bursts separated by lulls longer than the idle timeout: workers
            # start, retire, start again.
            assert run_all([echo_client(server.server_address, 40) for _ in range(8)]) == []
            assert wait_until(lambda: server.stats()["requests_active"] == 0)
            assert wait_until(lambda: threading.active_count() <= 3)
        assert server.stats()["requests_total"] == 3 * 8 * 40
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_message_handlers_on_many_workers_keep_each_connection_in_order():
    class Upper(MessageRequestHandler):
        def handle_message(self, message):
            return message.upper()

    with socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Upper) as server:
        thread = serving(server)

        def client():
            with MessageClient(server.server_address, timeout=IO_TIMEOUT) as c:
                for i in range(50):
                    c.send_message(b"m%d" % i)
                for i in range(50):
                    assert c.recv_message() == b"M%d" % i

        assert run_all([client] * 16) == []
        assert _state.of(server).messages is not None
        server.shutdown()
        thread.join(IO_TIMEOUT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
def test_fork_while_serving():
    """A child forked while threads serve can build and use a server of its
    own; the parent goes on serving."""
    server = type("Server", (RecordingErrors, socketserver_rs.ThreadingTCPServer), {})(
        ("127.0.0.1", 0), Echo
    )
    thread = serving(server)
    stop = threading.Event()
    load = threading.Thread(target=echo_client(server.server_address, 10_000, stop))
    load.start()
    try:
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    with socketserver_rs.TCPServer(("127.0.0.1", 0), Echo) as child:
                        t = serving(child)
                        echo_client(child.server_address, 2)()
                        child.shutdown()
                        t.join(IO_TIMEOUT)
                        code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert echo_client(server.server_address, 2)() is None
    finally:
        stop.set()
        load.join(IO_TIMEOUT)
        server.shutdown()
        thread.join(IO_TIMEOUT)
        server.server_close()
    assert server.errors == []
