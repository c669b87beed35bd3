"""Length-prefixed messages: MessageRequestHandler, send_message, recv_message.

Every server test runs over the core's rfile/wfile and over the standard
library's file objects (the path an SSL socket takes), buffered and not;
both must give the same messages and raise the same errors.
"""

import queue
import resource
import socket
import socketserver
import struct
import sys
import threading
import time

import pytest
from conftest import IO_TIMEOUT, require, tcp_pair, tcp_queues, wait_until

import socketserver_rs
from socketserver_rs import _core
from socketserver_rs.handlers import _SocketWriter
from socketserver_rs.messages import DEFAULT_MAX_MESSAGE_SIZE

MiB = 1024 * 1024
SIZES = [0, 1, 4096, 5 * MiB]

pytestmark = pytest.mark.timeout(120)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def payload_of(size, seed=0):
    pattern = bytes((seed + i) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


def recv_exactly(sock, n):
    """n bytes from sock, independently of the code under test."""
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(n - len(out), 1 << 20))
        if not chunk:
            raise AssertionError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def recv_frame(sock):
    (length,) = struct.unpack(">I", recv_exactly(sock, 4))
    return recv_exactly(sock, length)


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class SocketSubclass(socket.socket):
    """Not exactly socket.socket, as an SSL socket: the Python path."""


def as_subclass(sock):
    return SocketSubclass(fileno=sock.detach())


# (rfile/wfile implementation, rbufsize, wbufsize)
VARIANTS = [
    ("core", -1, 0),
    ("core", 0, 0),
    ("core", 64, 8192),
    ("python", -1, 0),
    ("python", 0, 0),
    ("python", 64, 8192),
]


class MessageServer(socketserver_rs.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, handler, files):
        self.files = files
        self.errors = queue.Queue()
        self.clean = queue.Queue()
        super().__init__(("127.0.0.1", 0), handler)

    def handle_error(self, request, client_address):
        self.errors.put(sys.exc_info()[1])


class UpperHandler(socketserver_rs.MessageRequestHandler):
    def setup(self):
        super().setup()
        if self.server.files == "python":
            # What StreamRequestHandler builds for a socket that is not a
            # plain socket.socket.
            self.rfile.close()
            self.wfile.close()
            self.rfile = self.connection.makefile("rb", self.rbufsize)
            if self.wbufsize == 0:
                self.wfile = _SocketWriter(self.connection)
            else:
                self.wfile = self.connection.makefile("wb", self.wbufsize)

    def handle(self):
        super().handle()
        self.server.clean.put(self.client_address)

    def handle_message(self, message):
        if message == b"segments?":
            return struct.pack("<I", self.segments)
        if message.startswith(b"reply "):
            # Count the data segments the reply took.
            before = data_segs_out(self.connection)
            self.write_message(message[6:])
            self.wfile.flush()
            self.segments = data_segs_out(self.connection) - before
            return None
        return message.upper()


@pytest.fixture(params=VARIANTS, ids=["-".join(map(str, v)) for v in VARIANTS])
def serve(request, runner):
    files, rbufsize, wbufsize = request.param

    def start(timeout=None, max_message_size=DEFAULT_MAX_MESSAGE_SIZE):
        handler = type(
            "Handler",
            (UpperHandler,),
            {
                "rbufsize": rbufsize,
                "wbufsize": wbufsize,
                "timeout": timeout,
                "max_message_size": max_message_size,
            },
        )
        server = MessageServer(handler, files)
        runner.start(server)
        return server

    start.files = files
    return start


def connect(server):
    sock = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    return sock


def send_in_pieces(sock, data):
    """Tiny pieces first (each its own segment), then larger ones."""
    view = memoryview(data)
    sizes = [1, 2, 1, 3, 5, 7, 11, 1000, 65536]
    i = 0
    while view:
        n = sizes[min(i, len(sizes) - 1)]
        sock.sendall(view[:n])
        view = view[n:]
        if n < 100:
            time.sleep(0.002)
        i += 1


def data_segs_out(sock):
    """tcpi_data_segs_out: the segments carrying data this socket sent."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    require(len(info) >= 160, "a kernel whose tcp_info has tcpi_data_segs_out (Linux 4.6+)")
    return struct.unpack_from("<I", info, 156)[0]


def no_errors(server):
    assert server.errors.empty(), server.errors.get_nowait()


# ---------------------------------------------------------------------------
# Through a server
# ---------------------------------------------------------------------------


def test_every_size_round_trips_sent_in_pieces(serve):
    server = serve()
    messages = [payload_of(size, seed) for seed, size in enumerate(SIZES)]
    stream = b"".join(frame(m) for m in messages)
    with connect(server) as client:
        # Another thread sends while this one reads, so a 5 MiB echo
        # cannot fill both directions' buffers and stall.
        sender = threading.Thread(target=send_in_pieces, args=(client, stream))
        sender.start()
        try:
            replies = [recv_frame(client) for _ in messages]
        finally:
            sender.join(IO_TIMEOUT)
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1) == b""
    assert [len(r) for r in replies] == SIZES
    assert replies == [m.upper() for m in messages]
    server.clean.get(timeout=IO_TIMEOUT)
    no_errors(server)


def test_sticky_messages_in_one_send_come_back_whole_and_in_order(serve):
    server = serve()
    messages = [b"", b"a", b"hello", b"\x00\x00\x00\x05", b"x" * 10000, b"last"]
    with connect(server) as client:
        client.sendall(b"".join(frame(m) for m in messages))
        replies = [recv_frame(client) for _ in messages]
    assert replies == [m.upper() for m in messages]
    server.clean.get(timeout=IO_TIMEOUT)
    no_errors(server)


def test_clean_eof_between_messages_ends_handle(serve):
    server = serve()
    with connect(server) as client:
        client.sendall(frame(b"one") + frame(b"two"))
        client.shutdown(socket.SHUT_WR)
        assert recv_frame(client) == b"ONE"
        assert recv_frame(client) == b"TWO"
        assert client.recv(1) == b""
    server.clean.get(timeout=IO_TIMEOUT)
    no_errors(server)


def test_eof_right_after_connecting_ends_handle(serve):
    server = serve()
    with connect(server) as client:
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1) == b""
    server.clean.get(timeout=IO_TIMEOUT)
    no_errors(server)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "message header (got 2 of 4 bytes)"),
        (frame(b"0123456789")[:7], "message (got 3 of 10 bytes)"),
        (frame(b"fine") + b"\x00", "message header (got 1 of 4 bytes)"),
    ],
    ids=["mid-header", "mid-body", "after-a-message"],
)
def test_eof_in_the_middle_of_a_message_reaches_handle_error(serve, data, message):
    server = serve()
    with connect(server) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        if data.startswith(frame(b"fine")):
            assert recv_frame(client) == b"FINE"
        assert client.recv(1) == b""
    err = server.errors.get(timeout=IO_TIMEOUT)
    assert type(err) is EOFError
    assert str(err) == f"connection closed in the middle of a {message}"
    assert server.clean.empty()


def test_a_4_gib_length_is_refused_without_allocating(serve):
    server = serve()
    before = rss()
    with connect(server) as client:
        client.sendall(b"\xff\xff\xff\xff" + b"payload that is never read")
        err = server.errors.get(timeout=IO_TIMEOUT)
        assert client.recv(1) == b""  # the server closed the connection
    assert type(err) is ValueError
    assert "4294967295" in str(err) and str(DEFAULT_MAX_MESSAGE_SIZE) in str(err)
    assert rss() - before < 64 * MiB


def server_has_read(client):
    """Everything the client sent reached the server and was read there."""
    port, server_port = client.getsockname()[1], client.getpeername()[1]
    return tcp_queues(port, server_port)[0] == 0 and tcp_queues(server_port, port)[1] == 0


def test_memory_follows_the_bytes_received_not_the_length_claimed(serve):
    server = serve(max_message_size=1024 * MiB)
    with connect(server) as client:
        client.sendall(struct.pack(">I", 512 * MiB) + b"x" * 100)
        assert wait_until(lambda: server_has_read(client))
        before = rss()
        client.sendall(b"y" * 1000)
        assert wait_until(lambda: server_has_read(client))
        assert rss() - before < 64 * MiB
        client.shutdown(socket.SHUT_WR)
        err = server.errors.get(timeout=IO_TIMEOUT)
    assert type(err) is EOFError
    assert f"got 1100 of {512 * MiB} bytes" in str(err)


def test_a_custom_limit_is_inclusive(serve):
    server = serve(max_message_size=10)
    with connect(server) as client:
        client.sendall(frame(b"0123456789"))
        assert recv_frame(client) == b"0123456789"
        client.sendall(frame(b"0123456789a"))
        err = server.errors.get(timeout=IO_TIMEOUT)
        assert client.recv(1) == b""
    assert type(err) is ValueError
    assert str(err).startswith("message length 11 exceeds max_message_size 10")


def test_the_socket_timeout_applies(serve):
    server = serve(timeout=0.3)
    with connect(server) as client:
        client.sendall(frame(b"abc")[:5])
        started = time.monotonic()
        err = server.errors.get(timeout=IO_TIMEOUT)
        assert time.monotonic() - started < 5
        assert client.recv(1) == b""
    assert isinstance(err, TimeoutError)


def test_a_reply_that_is_not_bytes_like_reaches_handle_error(serve):
    class Handler(socketserver_rs.MessageRequestHandler):
        def handle_message(self, message):
            return "text"

    server = MessageServer(Handler, serve.files)
    try:
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
            threading.Thread(target=server.handle_request).start()
            client.sendall(frame(b"x"))
            assert client.recv(1) == b""
            err = server.errors.get(timeout=IO_TIMEOUT)
        assert type(err) is TypeError
    finally:
        server.server_close()


def test_header_and_payload_leave_in_one_segment(serve):
    server = serve()
    with connect(server) as client:
        for payload in [b"", b"ping", b"p" * 1000]:
            client.sendall(frame(b"reply " + payload))
            # One blocking peek sees the whole message: it arrived at once.
            expected = frame(payload)
            assert client.recv(65536, socket.MSG_PEEK) == expected
            assert recv_frame(client) == payload
            client.sendall(frame(b"segments?"))
            (segments,) = struct.unpack("<I", recv_frame(client))
            assert segments == 1


def test_the_handler_requires_handle_message(runner):
    server = MessageServer(socketserver_rs.MessageRequestHandler, "core")
    runner.start(server)
    with connect(server) as client:
        client.sendall(frame(b"x"))
        err = server.errors.get(timeout=IO_TIMEOUT)
    assert type(err) is NotImplementedError


# ---------------------------------------------------------------------------
# Client helpers
# ---------------------------------------------------------------------------


@pytest.fixture(params=["core", "python"])
def pair(request):
    """A connected pair; the receiving end is a socket subclass for the
    Python path."""
    a, b = tcp_pair(IO_TIMEOUT)
    if request.param == "python":
        b = as_subclass(b)
        a = as_subclass(a)
        for sock in (a, b):
            sock.settimeout(IO_TIMEOUT)
    yield a, b
    a.close()
    b.close()


def test_client_round_trip(pair):
    a, b = pair
    messages = [payload_of(size, seed) for seed, size in enumerate(SIZES)]

    def send():
        for m in messages:
            assert socketserver_rs.send_message(a, m) == len(m)

    sender = threading.Thread(target=send)
    sender.start()
    got = [socketserver_rs.recv_message(b) for _ in messages]
    sender.join(IO_TIMEOUT)
    assert got == messages
    a.shutdown(socket.SHUT_WR)
    assert socketserver_rs.recv_message(b) is None


def test_client_reads_no_byte_past_the_message(pair):
    a, b = pair
    a.sendall(frame(b"one") + b"rest")
    assert socketserver_rs.recv_message(b) == b"one"
    assert recv_exactly(b, 4) == b"rest"


def test_client_accepts_any_bytes_like(pair):
    a, b = pair
    socketserver_rs.send_message(a, bytearray(b"ba"))
    socketserver_rs.send_message(a, memoryview(b"mv"))
    socketserver_rs.send_message(a, memoryview(struct.pack("<2I", 1, 2)).cast("I"))
    assert [socketserver_rs.recv_message(b) for _ in range(3)] == [
        b"ba",
        b"mv",
        struct.pack("<2I", 1, 2),
    ]


CLOSED = "connection closed in the middle of a message"


@pytest.mark.parametrize(
    "data, exc, message",
    [
        (b"\x00", EOFError, CLOSED + " header (got 1 of 4 bytes)"),
        (frame(b"abcdef")[:6], EOFError, CLOSED + " (got 2 of 6 bytes)"),
        (b"\xff" * 4, ValueError, "message length 4294967295 exceeds max_message_size 1000"),
    ],
    ids=["mid-header", "mid-body", "oversized"],
)
def test_client_errors(pair, data, exc, message):
    a, b = pair
    a.sendall(data)
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(exc) as info:
        socketserver_rs.recv_message(b, 1000)
    assert str(info.value).startswith(message)


def test_client_timeout(pair):
    a, b = pair
    b.settimeout(0.2)
    a.sendall(b"\x00\x00")
    with pytest.raises(TimeoutError):
        socketserver_rs.recv_message(b)


def test_client_negative_limit(pair):
    a, b = pair
    with pytest.raises(ValueError, match=r"max_message_size \(max_size\) must be non-negative"):
        socketserver_rs.recv_message(b, -1)


def test_send_message_is_one_segment(pair):
    a, b = pair
    a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    before = data_segs_out(a)
    socketserver_rs.send_message(a, b"small message")
    assert b.recv(100, socket.MSG_PEEK) == frame(b"small message")
    assert data_segs_out(a) - before == 1


def test_closed_socket(pair):
    a, b = pair
    a.close()
    with pytest.raises(OSError):
        socketserver_rs.send_message(a, b"x")


# ---------------------------------------------------------------------------
# recv_exactly
# ---------------------------------------------------------------------------


def test_recv_exactly_gathers_pieces_and_reads_no_further(pair):
    a, b = pair
    sender = threading.Thread(target=send_in_pieces, args=(a, b"0123456789" * 3 + b"rest"))
    sender.start()
    assert socketserver_rs.recv_exactly(b, 30) == b"0123456789" * 3
    sender.join(IO_TIMEOUT)
    assert recv_exactly(b, 4) == b"rest"


def test_recv_exactly_a_large_payload(pair):
    a, b = pair
    payload = payload_of(5 * MiB)
    sender = threading.Thread(target=a.sendall, args=(payload,))
    sender.start()
    got = socketserver_rs.recv_exactly(b, len(payload))
    sender.join(IO_TIMEOUT)
    assert got == payload


def test_recv_exactly_zero_and_negative(pair):
    a, b = pair
    b.settimeout(0.2)
    assert socketserver_rs.recv_exactly(b, 0) == b""  # without waiting
    with pytest.raises(ValueError, match="non-negative"):
        socketserver_rs.recv_exactly(b, -1)


def test_recv_exactly_peer_closes_early(pair):
    a, b = pair
    a.sendall(b"abc")
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError, match="connection closed after 3 of 10 bytes"):
        socketserver_rs.recv_exactly(b, 10)


def test_recv_exactly_timeout(pair):
    a, b = pair
    b.settimeout(0.2)
    a.sendall(b"ab")
    with pytest.raises(TimeoutError):
        socketserver_rs.recv_exactly(b, 3)


# ---------------------------------------------------------------------------
# MessageClient
# ---------------------------------------------------------------------------


class OneShotHandler(socketserver_rs.MessageRequestHandler):
    """Answers b"upper ..." with the rest in capitals, b"close" by closing,
    b"silent" with nothing, b"big N" with N bytes; one message per call."""

    def handle(self):
        for message in self.messages():
            if message == b"close":
                return
            if message == b"silent":
                continue
            if message.startswith(b"big "):
                self.write_message(b"b" * int(message[4:]))
            else:
                self.write_message(message.upper())
            self.wfile.flush()


@pytest.fixture
def message_server(runner):
    server = MessageServer(OneShotHandler, "core")
    runner.start(server)
    return server


def test_message_client_round_trips(message_server):
    with socketserver_rs.MessageClient(message_server.server_address, IO_TIMEOUT) as client:
        assert client.request(b"hello") == b"HELLO"
        assert client.request(b"") == b""
        assert client.send_message(b"one") == 3
        client.send_message(bytearray(b"two"))
        assert client.recv_message() == b"ONE"
        assert client.recv_message() == b"TWO"
        assert client.socket.getpeername() == message_server.server_address
        big = payload_of(3 * MiB)
        assert client.request(big) == big.upper()
    assert client.socket.fileno() == -1
    no_errors(message_server)


def test_message_client_over_a_unix_socket(runner, tmp_path):
    class Server(socketserver_rs.ThreadingUnixStreamServer):
        daemon_threads = True

    path = tmp_path / "messages.sock"
    server = runner.track(Server(str(path), OneShotHandler))
    runner.start(server)
    for address in (str(path), path, bytes(path)):
        with socketserver_rs.MessageClient(address, IO_TIMEOUT) as client:
            assert client.socket.family == socket.AF_UNIX
            assert client.request(b"unix") == b"UNIX"


def test_message_client_takes_any_server_address(runner, tmp_path):
    # server.server_address as an IPv6 server gives it, (host, port,
    # flowinfo, scope_id), and a Unix socket path as any bytes-like object.
    require(socket.has_ipv6, "no IPv6 here")

    class Server6(socketserver_rs.ThreadingTCPServer):
        address_family = socket.AF_INET6
        daemon_threads = True

    class ServerUnix(socketserver_rs.ThreadingUnixStreamServer):
        daemon_threads = True

    server6 = runner.track(Server6(("::1", 0), OneShotHandler))
    runner.start(server6)
    assert len(server6.server_address) == 4
    path = bytes(tmp_path / "messages.sock")
    unix = runner.track(ServerUnix(path, OneShotHandler))
    runner.start(unix)
    for address in (server6.server_address, bytearray(path), memoryview(path)):
        with socketserver_rs.MessageClient(address, IO_TIMEOUT) as client:
            assert client.request(b"any") == b"ANY"


def test_message_client_stays_open_after_a_type_error(message_server):
    with socketserver_rs.MessageClient(message_server.server_address, IO_TIMEOUT) as client:
        with pytest.raises(TypeError):
            client.send_message("text")
        assert client.request(b"still here") == b"STILL HERE"


def test_message_client_sees_the_server_close(message_server):
    with socketserver_rs.MessageClient(message_server.server_address, IO_TIMEOUT) as client:
        client.send_message(b"close")
        assert client.recv_message() is None
        assert client.recv_message() is None
    with socketserver_rs.MessageClient(message_server.server_address, IO_TIMEOUT) as client:
        with pytest.raises(ConnectionResetError, match="server closed the connection"):
            client.request(b"close")
        assert client.socket.fileno() == -1


def test_message_client_timeout_closes_it(message_server):
    with socketserver_rs.MessageClient(message_server.server_address, 0.2) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.request(b"silent")
        assert time.monotonic() - started < 5
        # A late reply must not pass for the next request's.
        assert client.socket.fileno() == -1
        with pytest.raises(OSError):
            client.request(b"again")


def test_message_client_limit(message_server):
    class Small(socketserver_rs.MessageClient):
        max_message_size = 10

    address = message_server.server_address
    with socketserver_rs.MessageClient(address, IO_TIMEOUT, max_message_size=10) as client:
        assert client.request(b"big 10") == b"b" * 10
        with pytest.raises(ValueError, match="message length 11 exceeds max_message_size 10"):
            client.request(b"big 11")
        assert client.socket.fileno() == -1
    with Small(address, IO_TIMEOUT) as client:
        with pytest.raises(ValueError, match="exceeds max_message_size 10"):
            client.request(b"big 11")
    assert socketserver_rs.MessageClient.max_message_size == DEFAULT_MAX_MESSAGE_SIZE
    with pytest.raises(ValueError, match="non-negative"):
        socketserver_rs.MessageClient(address, max_message_size=-1)


def test_message_client_connect_errors(tmp_path):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = unused.getsockname()
        with pytest.raises(ConnectionRefusedError):
            socketserver_rs.MessageClient(address, IO_TIMEOUT)
    with pytest.raises(FileNotFoundError):
        socketserver_rs.MessageClient(str(tmp_path / "missing.sock"), IO_TIMEOUT)


def test_timeouts_are_timeout_error_on_every_version():
    from socketserver_rs.messages import _timeout_error

    @_timeout_error
    def times_out():
        raise socket.timeout("timed out")

    with pytest.raises(TimeoutError) as info:
        times_out()
    assert isinstance(info.value, socket.timeout)


# ---------------------------------------------------------------------------
# The core's files against the Python path, byte for byte
# ---------------------------------------------------------------------------


def handler_over(rfile=None, wfile=None, max_size=DEFAULT_MAX_MESSAGE_SIZE):
    """A MessageRequestHandler around given files, without a server."""
    handler = socketserver_rs.MessageRequestHandler.__new__(socketserver_rs.MessageRequestHandler)
    handler.rfile = rfile
    handler.wfile = wfile
    handler.max_message_size = max_size
    return handler


def outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return ("raised", type(exc), str(exc))


STREAMS = {
    "messages then eof": frame(b"a") + frame(b"") + frame(b"bc" * 5000),
    "mid-header": frame(b"a") + b"\x00\x00\x01",
    "mid-body": frame(b"abc" * 1000)[:2000],
    "oversized": frame(b"ok") + struct.pack(">I", 101) + b"z" * 101,
    "at the limit": frame(b"q" * 100) + frame(b""),
}


@pytest.mark.parametrize("bufsize", [-1, 0, 1, 7, 8192])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_core_and_python_paths_agree(name, bufsize):
    data = STREAMS[name]
    results = []
    for files in ("core", "python"):
        a, b = socket.socketpair()
        try:
            a.sendall(data)
            a.shutdown(socket.SHUT_WR)
            if files == "core":
                rfile = _core.SocketReader(b, bufsize)
            else:
                rfile = b.makefile("rb", bufsize if bufsize != 1 else 2)
            with rfile:
                handler = handler_over(rfile, max_size=100)
                results.append([outcome(handler.read_message) for _ in range(5)])
        finally:
            a.close()
            b.close()
    assert results[0] == results[1]
    assert ("ok", None) in results[0] or results[0][-1][0] == "raised"


@pytest.mark.parametrize("bufsize", [0, 16])
def test_unbuffered_core_reader_reads_exactly_the_message(bufsize):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frame(b"message") + b"after")
        with _core.SocketReader(b, bufsize) as rfile:
            assert rfile.read_message() == b"message"
            if bufsize == 0:
                assert b.recv(100) == b"after"
            else:
                assert rfile.read(5) == b"after"


@pytest.mark.parametrize("files", ["core", "python"])
@pytest.mark.parametrize("bufsize", [0, 16, 8192])
def test_write_message_honours_buffering(files, bufsize):
    a, b = socket.socketpair()
    with a, b:
        if files == "core":
            wfile = _core.SocketWriter(a, bufsize)
        elif bufsize == 0:
            wfile = _SocketWriter(a)
        else:
            wfile = a.makefile("wb", bufsize)
        handler = handler_over(wfile=wfile)
        b.setblocking(False)
        assert wfile.write(b"pending") == 7
        assert handler.write_message(b"small") == 5
        assert handler.write_message(bytearray(b"L" * 100)) == 100
        sent = b"pending" + frame(b"small") + frame(b"L" * 100)
        try:
            early = b.recv(1000)
        except BlockingIOError:
            early = b""
        if bufsize == 0:
            assert early == sent
        elif bufsize == 16:
            # The large message cannot wait in the buffer: all went out.
            assert early == sent
        else:
            assert early == b""
        wfile.write(b"tail")
        wfile.flush()
        b.setblocking(True)
        assert early + recv_exactly(b, len(sent) + 4 - len(early)) == sent + b"tail"
        wfile.close()


def test_core_write_message_big_with_pending_bytes():
    a, b = tcp_pair(IO_TIMEOUT)
    with a, b:
        payload = payload_of(3 * MiB)
        wfile = _core.SocketWriter(a, 8192)
        received = []
        reader = threading.Thread(target=lambda: received.append(recv_exactly(b, 3 + 4 + 3 * MiB)))
        reader.start()
        wfile.write(b"abc")
        assert wfile.write_message(payload) == 3 * MiB
        wfile.flush()
        reader.join(IO_TIMEOUT)
        assert received == [b"abc" + frame(payload)]
        wfile.close()


def test_read_message_on_a_closed_reader():
    a, b = socket.socketpair()
    with a, b:
        rfile = _core.SocketReader(b)
        rfile.close()
        with pytest.raises(ValueError, match="closed file"):
            rfile.read_message()
        wfile = _core.SocketWriter(a)
        wfile.close()
        with pytest.raises(ValueError, match="closed file"):
            wfile.write_message(b"x")


# ---------------------------------------------------------------------------
# The package
# ---------------------------------------------------------------------------


def test_exported_outside_all():
    # The standard module's names (3.12 added the ForkingUnix servers).
    for name in socketserver_rs.__all__:
        assert name in socketserver.__all__ or name.startswith("ForkingUnix"), name
    for name in (
        "MessageRequestHandler",
        "MessageClient",
        "send_message",
        "recv_message",
        "recv_exactly",
    ):
        assert name not in socketserver_rs.__all__
        assert getattr(socketserver_rs, name).__module__ == "socketserver_rs.messages"
    assert issubclass(socketserver_rs.MessageRequestHandler, socketserver_rs.StreamRequestHandler)
    assert socketserver_rs.MessageRequestHandler.max_message_size == 16 * MiB
