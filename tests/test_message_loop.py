"""Handlers that only answer framed messages are served from one readiness
loop instead of a thread per connection (_message_loop.py, the core's
MessageLoop)."""

import io
import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import IO_TIMEOUT, RecordingErrors, Serving, require, wait_until

import socketserver_rs
from socketserver_rs import MessageClient, MessageRequestHandler, _message_loop, _state

SERVERS = {"plain": socketserver_rs.TCPServer, "threading": socketserver_rs.ThreadingTCPServer}


class Upper(MessageRequestHandler):
    def handle_message(self, message):
        return message.upper()


class Counted(MessageRequestHandler):
    """Counts setup() and finish() calls on the class."""

    setups = 0
    finishes = 0
    lock = threading.Lock()

    def setup(self):
        super().setup()
        with self.lock:
            type(self).setups += 1

    def finish(self):
        with self.lock:
            type(self).finishes += 1
        super().finish()

    def handle_message(self, message):
        return message


def serve(server):
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread


def messages_of(server):
    return _state.of(server).messages


@pytest.fixture(params=sorted(SERVERS))
def server_class(request):
    return SERVERS[request.param]


def make(server_class, handler, recording=False):
    bases = (RecordingErrors, server_class) if recording else (server_class,)
    cls = type("Server", bases, {})
    return cls(("127.0.0.1", 0), handler)


def test_echo_over_many_connections(server_class):
    with make(server_class, Upper) as server:
        thread = serve(server)
        clients = [MessageClient(server.server_address, timeout=IO_TIMEOUT) for _ in range(200)]
        try:
            for round_ in range(3):
                for i, client in enumerate(clients):
                    client.send_message(b"msg %d %d" % (i, round_))
                for i, client in enumerate(clients):
                    assert client.recv_message() == b"MSG %d %d" % (i, round_)
            assert messages_of(server) is not None
            assert messages_of(server).core.connections == 200
            if server_class is socketserver_rs.TCPServer:
                # Handlers ran on the serving thread; a threading server's
                # pool grows with the messages in flight at once instead.
                assert threading.active_count() < 20
        finally:
            for client in clients:
                client.close()
            server.shutdown()
            thread.join(IO_TIMEOUT)


@pytest.mark.parametrize("size", [0, 1, 16 * 1024 - 1, 16 * 1024, 65536, 3 * 1024 * 1024 + 7])
def test_message_sizes(server_class, size):
    with make(server_class, Upper) as server:
        thread = serve(server)
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
            data = bytes(range(97, 123)) * (size // 26) + b"a" * (size % 26)
            assert client.request(data) == data.upper()
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_replies_keep_their_order_on_one_connection(server_class):
    class Slow(MessageRequestHandler):
        def handle_message(self, message):
            time.sleep((int(message) % 3) * 0.001)
            return message

    with make(server_class, Slow) as server:
        thread = serve(server)
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
            for i in range(300):
                client.send_message(b"%d" % i)
            assert [int(client.recv_message()) for _ in range(300)] == list(range(300))
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_a_client_speaking_text_is_told_apart(server_class):
    # An HTTP request to a message server: its first 4 bytes, read as a
    # length, are named as text in the error handle_error() gets.
    with make(server_class, Upper, recording=True) as server:
        thread = serve(server)
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(1) == b""
        assert wait_until(lambda: server.errors)
        [error] = server.errors
        assert isinstance(error, ValueError)
        text = str(error)
        assert "message length 1195725856 exceeds max_message_size 16777216" in text
        assert "b'GET '" in text and "not sending length-prefixed messages" in text
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_quiet_disconnects_makes_a_message_cut_short_one_line(server_class, capfd, caplog):
    caplog.set_level(logging.INFO, logger="socketserver_rs")
    cls = type("Server", (server_class,), {"quiet_disconnects": True})
    with cls(("127.0.0.1", 0), Upper) as server:
        thread = serve(server)
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
            client.sendall(struct.pack(">I", 10) + b"abc")
        assert wait_until(lambda: server.stats()["requests_total"] == 1)
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
        server.shutdown()
        thread.join(IO_TIMEOUT)
    assert capfd.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 1 and "got 3 of 10 bytes" in lines[0], lines


def test_a_message_over_the_limit_fails_that_connection_only(server_class):
    class Small(Upper):
        max_message_size = 16

    with make(server_class, Small, recording=True) as server:
        thread = serve(server)
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as good:
            with MessageClient(server.server_address, timeout=IO_TIMEOUT) as bad:
                assert bad.request(b"a" * 16) == b"A" * 16
                bad.socket.sendall(struct.pack(">I", 17) + b"b" * 17)
                assert bad.recv_message() is None
            assert good.request(b"still here") == b"STILL HERE"
        assert wait_until(lambda: server.errors)
        [error] = server.errors
        assert isinstance(error, ValueError) and "exceeds max_message_size 16" in str(error)
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
        assert server.stats()["errors"] == 1
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_an_exception_from_handle_message_closes_that_connection(server_class):
    class Picky(MessageRequestHandler):
        def handle_message(self, message):
            if message == b"boom":
                raise RuntimeError("boom")
            return message

    with make(server_class, Picky, recording=True) as server:
        thread = serve(server)
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as other:
            with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
                client.send_message(b"boom")
                assert client.recv_message() is None
            assert other.request(b"ok") == b"ok"
        assert wait_until(lambda: server.errors)
        assert [type(error) for error in server.errors] == [RuntimeError]
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_a_message_cut_short_goes_to_handle_error(server_class):
    with make(server_class, Upper, recording=True) as server:
        thread = serve(server)
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as sock:
            sock.sendall(struct.pack(">I", 10) + b"abc")
        assert wait_until(lambda: server.errors)
        assert isinstance(server.errors[0], EOFError)
        assert "got 3 of 10 bytes" in str(server.errors[0])
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_a_client_that_does_not_read_holds_bounded_memory(server_class):
    class Big(MessageRequestHandler):
        def handle_message(self, message):
            return b"r" * 65536

    with make(server_class, Big) as server:
        thread = serve(server)
        hog = socket.create_connection(server.server_address)
        hog.settimeout(0.5)
        request = struct.pack(">I", 1000) + b"q" * 1000
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sent += hog.send(request * 16)
        except TimeoutError:
            pass  # the server stopped reading: back-pressure
        assert sent < 64 * 1024 * 1024
        core = messages_of(server).core
        assert core.buffered_bytes < 512 * 1024
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
            assert len(client.request(b"x")) == 65536
        assert core.buffered_bytes < 512 * 1024
        hog.close()
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_setup_and_finish_run_once_per_connection(server_class):
    class Handler(Counted):
        setups = 0
        finishes = 0

    with make(server_class, Handler) as server:
        thread = serve(server)
        for _ in range(20):
            with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
                for _ in range(3):
                    assert client.request(b"x") == b"x"
        assert wait_until(lambda: Handler.finishes == 20)
        assert Handler.setups == 20
        assert wait_until(lambda: server.stats()["requests_active"] == 0)
        server.shutdown()
        thread.join(IO_TIMEOUT)
        assert Handler.finishes == 20


def test_shutdown_is_prompt_and_server_close_finishes_open_connections(server_class):
    class Handler(Counted):
        setups = 0
        finishes = 0

    server = make(server_class, Handler)
    thread = serve(server)
    clients = [MessageClient(server.server_address, timeout=IO_TIMEOUT) for _ in range(5)]
    for client in clients:
        assert client.request(b"x") == b"x"
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < 0.5
    thread.join(IO_TIMEOUT)
    assert Handler.finishes == 0
    # The connections outlive shutdown(), and the next serve_forever() serves them.
    thread = serve(server)
    assert clients[0].request(b"again") == b"again"
    server.shutdown()
    thread.join(IO_TIMEOUT)
    server.server_close()
    assert Handler.finishes == 5
    for client in clients:
        assert client.recv_message() is None
        client.close()


@pytest.mark.parametrize(
    ("poll_interval", "error"),
    [
        (float("inf"), OverflowError),
        (1e300, OverflowError),
        (1e9, OverflowError),
        (float("nan"), ValueError),
    ],
)
def test_a_poll_interval_the_selector_refuses_raises_as_in_the_standard_module(
    server_class, poll_interval, error
):
    # The standard module's serve_forever() raises these from its selector.
    with make(server_class, Upper) as server:
        assert _message_loop.event_driven(server)
        with Serving(server, poll_interval) as serving:
            serving.returned.wait(IO_TIMEOUT / 10)
        assert [type(exc) for exc in serving.errors] == [error]


def test_server_close_waits_for_a_message_in_flight():
    class Slow(Counted):
        setups = 0
        finishes = 0

        def handle_message(self, message):
            time.sleep(0.2)
            return message

    server = socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Slow)
    thread = serve(server)
    with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
        client.send_message(b"x")
        assert wait_until(lambda: server.stats()["workers_busy"] == 1)
        server.shutdown()
        thread.join(IO_TIMEOUT)
        server.server_close()
        assert Slow.finishes == 1
        assert client.recv_message() == b"x"  # its reply, then the close
        assert client.recv_message() is None


@pytest.mark.parametrize("opt_out", ["handle", "event_driven", "write_message"])
def test_handlers_that_opt_out_keep_the_thread_model(server_class, opt_out):
    reply = b"ABC"
    if opt_out == "handle":

        class Handler(Upper):
            def handle(self):
                self.thread = threading.current_thread()
                super().handle()

    elif opt_out == "event_driven":

        class Handler(Upper):
            event_driven = False

    else:
        # The loop would bypass it: the handler is served by its own code.
        reply = b"CBA"

        class Handler(Upper):
            def write_message(self, data):
                return super().write_message(data[::-1])

    with make(server_class, Handler) as server:
        assert not _message_loop.event_driven(server)
        thread = serve(server)
        with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
            assert client.request(b"abc") == reply
        server.shutdown()
        thread.join(IO_TIMEOUT)
        assert messages_of(server) is None


def test_event_driven_is_the_default():
    class Plain(MessageRequestHandler):
        def handle_message(self, message):
            return message

    server = socketserver_rs.TCPServer(("127.0.0.1", 0), Plain, bind_and_activate=False)
    assert _message_loop.event_driven(server)
    server.server_close()


def test_reading_rfile_in_an_event_driven_handler_is_refused_clearly(server_class):
    class Reader(MessageRequestHandler):
        def handle_message(self, message):
            if message == b"line":
                self.rfile.readline()
            elif message == b"iterate":
                next(iter(self.rfile))
            return b"closed" if self.rfile.closed else b"open"

    with make(server_class, Reader, recording=True) as server:
        thread = serve(server)
        for how in (b"line", b"iterate"):
            with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
                assert client.request(b"other") == b"open"
                client.send_message(how)
                assert client.recv_message() is None
        assert wait_until(lambda: len(server.errors) == 2)
        for error in server.errors:
            assert isinstance(error, io.UnsupportedOperation)
            assert "event_driven = False" in str(error)
        server.shutdown()
        thread.join(IO_TIMEOUT)


def test_which_handlers_are_event_driven():
    server = socketserver_rs.TCPServer(("127.0.0.1", 0), Upper, bind_and_activate=False)
    assert _message_loop.event_driven(server)

    class WithTimeout(Upper):
        timeout = 5
        idle_timeout = 60.5

    class BadTimeout(Upper):
        timeout = "5"  # the thread model's settimeout() says what is wrong

    class Plain(socketserver_rs.StreamRequestHandler):
        pass

    # The loop stands in for these: a handler that changes one keeps its thread.
    class OwnReading(Upper):
        def read_message(self):
            return super().read_message()

    class OwnWriting(Upper):
        def write_message(self, data):
            return super().write_message(data[::-1])

    class OwnIteration(Upper):
        def messages(self):
            yield from super().messages()

    class OwnInit(Upper):
        def __init__(self, *args):
            super().__init__(*args)

    assert _message_loop.event_driven(server) is True
    server.RequestHandlerClass = WithTimeout
    assert _message_loop.event_driven(server) is True
    thread_model = (BadTimeout, Plain, MessageRequestHandler, OwnReading, OwnWriting)
    for handler in thread_model + (OwnIteration, OwnInit):
        server.RequestHandlerClass = handler
        assert not _message_loop.event_driven(server)
    server.server_close()


CLIENT_SCRIPT = """
import resource, socket, struct, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, count = int(sys.argv[1]), int(sys.argv[2])
clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
for client in clients[::97]:
    client.sendall(struct.pack(">I", 5) + b"hello")
    assert client.recv(9) == struct.pack(">I", 5) + b"hello"
print("connected", flush=True)
sys.stdin.read()
"""

IDLE_SCRIPT = textwrap.dedent(
    """
    import resource, subprocess, sys, threading, time
    import socketserver_rs

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count = min(10_000, hard - 100)

    class Echo(socketserver_rs.MessageRequestHandler):

        def handle_message(self, message):
            return message

    server = socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clients = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], str(server.server_address[1]), str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert clients.stdout.readline() == "connected\\n"
    core = socketserver_rs._state.of(server).messages.core
    deadline = time.monotonic() + 30
    while core.connections < count and time.monotonic() < deadline:
        time.sleep(0.01)
    print(count, core.connections, threading.active_count(), flush=True)
    clients.stdin.close()
    clients.wait()
    server.shutdown()
    server.server_close()
    """
)


def test_ten_thousand_idle_connections_hold_few_threads():
    # As many as the descriptor limit allows, up to 10,000 (at least 2000).
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    require(
        hard == resource.RLIM_INFINITY or hard - 100 >= 2000,
        f"an RLIMIT_NOFILE hard limit of at least 2100 descriptors (it is {hard})",
    )
    result = subprocess.run(
        [sys.executable, "-c", IDLE_SCRIPT, CLIENT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    count, held, threads = map(int, result.stdout.split())
    assert count >= 2000
    assert held == count
    assert threads < 10


def test_drain_serves_messages_in_flight_then_closes_every_connection(server_class):
    class Handler(Counted):
        setups = 0
        finishes = 0

        def handle_message(self, message):
            if message == b"slow":
                time.sleep(0.3)
            return message

    server = make(server_class, Handler)
    serve(server)
    address = server.server_address
    idle = [MessageClient(address, timeout=IO_TIMEOUT) for _ in range(10)]
    for client in idle:
        assert client.request(b"x") == b"x"
    busy = [MessageClient(address, timeout=IO_TIMEOUT) for _ in range(3)]
    for client in busy:
        client.send_message(b"slow")
    # A message whose body is still arriving when drain() starts.
    partial = socket.create_connection(address, timeout=IO_TIMEOUT)
    partial.sendall(struct.pack("!I", 4) + b"pa")
    assert wait_until(lambda: server.stats()["requests_total"] == 14)
    finisher = threading.Timer(0.2, partial.sendall, args=(b"rt",))
    finisher.start()
    try:
        assert server.drain(timeout=IO_TIMEOUT) == 0
        finisher.join()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=IO_TIMEOUT)
        for client in busy:
            assert client.recv_message() == b"slow"
            assert client.recv_message() is None
        for client in idle:
            assert client.recv_message() is None
        assert partial.recv(64) == struct.pack("!I", 4) + b"part"
        assert partial.recv(64) == b""
        assert Handler.setups == Handler.finishes == 14
        assert server.stats()["requests_active"] == 0
    finally:
        for client in idle + busy:
            client.close()
        partial.close()
        server.server_close()


def test_drain_cuts_a_message_still_running_at_the_deadline(server_class, caplog):
    release = threading.Event()

    class Stuck(Counted):
        setups = 0
        finishes = 0

        def handle_message(self, message):
            release.wait(IO_TIMEOUT)
            return message

    server = make(server_class, Stuck)
    thread = serve(server)
    idle = MessageClient(server.server_address, timeout=IO_TIMEOUT)
    stuck = MessageClient(server.server_address, timeout=IO_TIMEOUT)
    try:
        assert wait_until(lambda: server.stats()["requests_total"] == 2)
        stuck.send_message(b"x")
        if server_class is socketserver_rs.ThreadingTCPServer:
            assert wait_until(lambda: server.stats()["workers_busy"] == 1)
            with caplog.at_level(logging.WARNING, logger="socketserver_rs"):
                assert server.drain(timeout=0.3) == 1
            assert "1 request(s) still running" in caplog.text
            assert idle.recv_message() is None
            # Its socket was shut down: the client sees the end at once.
            assert stuck.recv_message() is None
            release.set()
            assert wait_until(lambda: Stuck.finishes == 2)
        else:
            # A plain server runs the handler on its serving thread: drain()
            # waits for shutdown() and so for the handler, then ends the rest.
            threading.Timer(0.3, release.set).start()
            assert server.drain(timeout=IO_TIMEOUT) == 0
            assert stuck.recv_message() == b"x"
            assert idle.recv_message() is None
            assert Stuck.finishes == 2
        thread.join(IO_TIMEOUT)
    finally:
        release.set()
        idle.close()
        stuck.close()
        server.server_close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
def test_a_forked_child_serves_from_a_loop_of_its_own():
    class Pid(MessageRequestHandler):
        def handle_message(self, message):
            return str(os.getpid()).encode()

    server = socketserver_rs.TCPServer(("127.0.0.1", 0), Pid)
    thread = serve(server)
    parent_client = MessageClient(server.server_address, timeout=IO_TIMEOUT)
    try:
        assert parent_client.request(b"x") == str(os.getpid()).encode()
        server.shutdown()
        thread.join(IO_TIMEOUT)
        pid = os.fork()
        if pid == 0:  # the child: serve one client, while the parent's sends
            status = 1
            try:
                thread = serve(server)
                parent_client.send_message(b"for the parent")
                with MessageClient(server.server_address, timeout=IO_TIMEOUT) as client:
                    if client.request(b"y") == str(os.getpid()).encode():
                        status = 0
                time.sleep(0.2)  # time to steal the parent's message, were it shared
                server.shutdown()
                thread.join(IO_TIMEOUT)
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        thread = serve(server)
        # The message sent while the child served is the parent's to answer.
        assert parent_client.recv_message() == str(os.getpid()).encode()
        server.shutdown()
        thread.join(IO_TIMEOUT)
    finally:
        parent_client.close()
        server.server_close()
