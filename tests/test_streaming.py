"""Lines streamed through rfile and an unbuffered wfile: when the bytes of a
write are on the wire. A write is sent at once, whatever the handler does
next (sleeps, waits on a lock, reads, returns), even while rfile still holds
more of the client's input; `writelines()` of a list or tuple gathers its
lines into few sends, and of an iterator sends each line as it comes."""

import socket
import socketserver
import struct
import sys
import threading
import time

import pytest
from conftest import IO_TIMEOUT, require, tcp_pair

import socketserver_rs
from socketserver_rs import _core

# "At once": within this, below the 200 ms a corked segment may wait (the
# mutation of setting TCP_CORK in the handler fails these tests), and far
# below how long the handler blocks.
PROMPT = 0.15
SLEEP = 2.0


def read_exactly(sock, size, timeout):
    """The first `size` bytes from sock, or fewer when `timeout` passes first."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while len(data) < size and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(size - len(data))
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data


class Blocking:
    """What the handler does after writing the reply to b"block\\n", and how
    the test lets it go on once the reply has arrived."""

    def __init__(self, kind):
        self.kind = kind
        self.lock = threading.Lock()
        if kind == "lock":
            self.lock.acquire()

    def block(self, handler):
        if self.kind == "sleep":
            time.sleep(SLEEP)
        elif self.kind == "lock":
            if self.lock.acquire(timeout=IO_TIMEOUT):
                self.lock.release()
        elif self.kind == "rfile read":
            handler.wfile.write(handler.rfile.readline())
        elif self.kind == "socket recv":
            handler.request.sendall(handler.request.recv(100))
        # "return": the handler returns, the line after b"block\n" unread.

    def release(self, client):
        if self.kind == "lock":
            self.lock.release()
        elif self.kind in ("rfile read", "socket recv"):
            client.sendall(b"more\n")

    @property
    def pipelined(self):
        """What the client sends at first, all in one send: a line after
        b"block\\n", except where the handler's next read must wait."""
        if self.kind in ("rfile read", "socket recv"):
            return b"one\nblock\n"
        return b"one\nblock\nthree\n"


@pytest.mark.parametrize("kind", ["sleep", "lock", "rfile read", "socket recv", "return"])
@pytest.mark.parametrize("server_class", ["TCPServer", "ThreadingTCPServer"])
def test_a_write_is_on_the_wire_before_the_handler_blocks(runner, server_class, kind):
    blocking = Blocking(kind)

    class Handler(socketserver_rs.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)
                if line == b"block\n":
                    blocking.block(self)
                    if blocking.kind == "return":
                        return

    server = getattr(socketserver_rs, server_class)(("127.0.0.1", 0), Handler)
    runner.start(server)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        client.sendall(blocking.pipelined)
        began = time.monotonic()
        got = read_exactly(client, len(b"one\nblock\n"), PROMPT)
        took = time.monotonic() - began
        assert got == b"one\nblock\n", f"after {took:.3f}s the client had {got!r}"
        blocking.release(client)
        if kind in ("rfile read", "socket recv"):
            assert read_exactly(client, len(b"more\n"), PROMPT) == b"more\n"


def data_segments_out(sock):
    """TCP_INFO's tcpi_data_segs_out (Linux 4.6+): data segments sent."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 156)[0]


def test_writelines_of_a_list_leaves_in_few_segments():
    require(
        sys.platform == "linux" and hasattr(socket, "TCP_INFO"),
        "TCP_INFO segment counters (Linux)",
    )
    client, server = tcp_pair()  # no timeout: only then are lines gathered
    with client, server:
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wfile = _core.SocketWriter(server, 0)
        lines = [b"%063d\n" % i for i in range(200)]
        before = data_segments_out(server)
        wfile.writelines(lines)
        sent = data_segments_out(server) - before
        assert read_exactly(client, 64 * 200, IO_TIMEOUT) == b"".join(lines)
        # One send of 12,800 bytes (at most two segments), not 200.
        assert sent <= 2, f"{sent} segments for 200 lines"
        before = data_segments_out(server)
        wfile.writelines(tuple(lines[:3]))
        assert data_segments_out(server) - before == 1
        assert read_exactly(client, 64 * 3, IO_TIMEOUT) == b"".join(lines[:3])


def test_writelines_gathers_lines_larger_than_one_send():
    client, server = tcp_pair()  # no timeout: only then are lines gathered
    with client, server:
        wfile = _core.SocketWriter(server, 0)
        sizes = [10, 70_000, 5, 60_000, 9000]
        lines = [bytes([65 + i]) * size for i, size in enumerate(sizes)]
        received = []
        reader = threading.Thread(
            target=lambda: received.append(read_exactly(client, 139_015, IO_TIMEOUT))
        )
        reader.start()
        wfile.writelines([lines[0], bytearray(lines[1]), memoryview(lines[2]), *lines[3:]])
        reader.join()
        assert received == [b"".join(lines)]


@pytest.mark.parametrize("source", ["generator", "list subclass"])
def test_writelines_of_an_iterator_sends_each_line_as_it_comes(source):
    """Between two lines the program's own code runs (a query, a lock), in
    a generator or a list subclass's __iter__: the first line must not wait
    for it."""
    client, server = tcp_pair()  # no timeout, where a list would be gathered
    first_arrived = threading.Event()

    def lines():
        yield b"first\n"
        first_arrived.wait(IO_TIMEOUT)
        yield b"second\n"

    class Lazy(list):
        def __iter__(self):
            return lines()

    with client, server:
        wfile = _core.SocketWriter(server, 0)
        given = lines() if source == "generator" else Lazy()
        writer = threading.Thread(target=wfile.writelines, args=(given,))
        writer.start()
        got = read_exactly(client, len(b"first\n"), PROMPT)
        first_arrived.set()
        writer.join(IO_TIMEOUT)
        assert got == b"first\n"
        assert read_exactly(client, len(b"second\n"), IO_TIMEOUT) == b"second\n"


@pytest.mark.parametrize("module", ["socketserver", "socketserver_rs"])
def test_writelines_on_a_socket_with_a_timeout_times_each_line(module):
    """sendall()'s timeout bounds one call; the standard module's
    writelines() makes one per line. A client that drains slowly but
    steadily keeps every line within the timeout, where the lines gathered
    into one send would not be."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        # Small buffers, the client's before the window is agreed, so that
        # the sends wait on the client.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        server.settimeout(0.3)
        if module == "socketserver":
            wfile = socketserver._SocketWriter(server)
        else:
            wfile = _core.SocketWriter(server, 0)
        lines = [bytes([65 + i % 26]) * 1023 + b"\n" for i in range(40)]
        received = []

        def drain_slowly():
            data = b""
            while len(data) < 40 * 1024:
                time.sleep(0.02)
                chunk = client.recv(1024)
                if not chunk:
                    break
                data += chunk
            received.append(data)

        reader = threading.Thread(target=drain_slowly)
        reader.start()
        wfile.writelines(lines)
        reader.join(IO_TIMEOUT)
        assert received == [b"".join(lines)]


@pytest.mark.parametrize("module", ["socketserver", "socketserver_rs"])
def test_writelines_sends_the_lines_before_a_bad_one(module):
    client, server = tcp_pair()  # no timeout, where a list is gathered
    with client, server:
        if module == "socketserver":
            wfile = socketserver._SocketWriter(server)
        else:
            wfile = _core.SocketWriter(server, 0)
        with pytest.raises(TypeError):
            wfile.writelines([b"a", b"b", "not bytes", b"c"])
        assert read_exactly(client, 3, 0.5) == b"ab"
