"""SocketReader / SocketWriter against the standard library over the same bytes.

Every reader test drives two identical connections: one is read through
``sock.makefile('rb', n)``, the other through ``_core.SocketReader(sock, n)``,
and both get the same bytes and the same close/shutdown/reset events.
"""

import contextlib
import errno
import io
import os
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time

import pytest
from conftest import tcp_pair, wait_until

import socketserver_rs
from socketserver_rs import _core

BUFSIZES = [-1, 0, 1, 5, 64, 8192]
TCP_CLOSE = 7  # tcpi_state, the first byte of TCP_INFO, once a reset arrived


def make_pair(kind):
    return tcp_pair() if kind == "tcp" else socket.socketpair()


def outcome(fn, f):
    """What fn(f) returned, or the type and errno of what it raised."""
    try:
        return ("ok", fn(f))
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return ("raised", type(exc), getattr(exc, "errno", None))


class RawAdapter:
    """socket.SocketIO plus the buffered-only methods SocketReader also has
    when unbuffered: read1/readinto1 are one recv, peek is MSG_PEEK."""

    def __init__(self, raw, sock):
        self._raw = raw
        self._sock = sock

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __iter__(self):
        return iter(self._raw)

    def __next__(self):
        return next(self._raw)

    def read(self, n=-1):
        return self._raw.read(-1 if n is None else n)

    def read1(self, n=-1):
        return self._raw.read(n if n >= 0 else io.DEFAULT_BUFFER_SIZE)

    def readinto1(self, b):
        return self._raw.readinto(b)

    def peek(self, n=0):
        return self._sock.recv(max(n, io.DEFAULT_BUFFER_SIZE), socket.MSG_PEEK)


class Twin:
    """Two identical connections: [0] read by the stdlib, [1] by _core."""

    def __init__(self, bufsize, kind="unix", timeout=None):
        self.pairs = [make_pair(kind) for _ in range(2)]
        self.senders = [p[0] for p in self.pairs]
        self.receivers = [p[1] for p in self.pairs]
        for sock in self.receivers:
            sock.settimeout(timeout)
        self.std = self.receivers[0].makefile("rb", bufsize)
        if bufsize == 0:
            self.std = RawAdapter(self.std, self.receivers[0])
        self.rs = _core.SocketReader(self.receivers[1], bufsize)

    def send(self, data):
        for sock in self.senders:
            sock.sendall(data)

    def eof(self):
        for sock in self.senders:
            sock.shutdown(socket.SHUT_WR)

    def reset(self):
        for sock in self.senders:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        # Wait until both receivers have taken the reset.
        deadline = time.monotonic() + 5
        for sock in self.receivers:
            while sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_CLOSE:
                assert time.monotonic() < deadline, "the reset did not arrive"
                time.sleep(0.001)

    def same(self, fn):
        a = outcome(fn, self.std)
        b = outcome(fn, self.rs)
        assert a == b
        return a

    def close(self):
        self.std.close()
        self.rs.close()
        for a, b in self.pairs:
            a.close()
            b.close()


@pytest.fixture
def twins():
    made = []

    def make(*args, **kwargs):
        twin = Twin(*args, **kwargs)
        made.append(twin)
        return twin

    yield make
    for twin in made:
        twin.close()


TEXT = b"line one\nline two\n\n" + b"x" * 300 + b"\nshort\n" + b"tail without newline"


def into(n, one=False):
    def op(f):
        buf = bytearray(b"?" * n)
        got = (f.readinto1 if one else f.readinto)(buf)
        return got, bytes(buf)

    return op


SEQUENCES = {
    "lines": [lambda f: f.readline() for _ in range(8)],
    "limited lines": [lambda f: f.readline(3), lambda f: f.readline(0), lambda f: f.readline(7)]
    + [lambda f: f.readline(50) for _ in range(10)],
    "reads": [lambda f: f.read(4), lambda f: f.read(0), lambda f: f.read(100), lambda f: f.read()]
    + [lambda f: f.read(), lambda f: f.read(5)],
    "read None": [lambda f: f.read(None), lambda f: f.read(None)],
    "read1": [lambda f: f.read1(3), lambda f: f.read1(), lambda f: f.read1(0)]
    + [lambda f: f.read1(1000) for _ in range(6)],
    "readinto": [into(0), into(1), into(7), into(100), into(1000), into(10)],
    "readinto1": [into(1, True), into(7, True), into(100, True), into(1000, True), into(10, True)],
    "iteration": [lambda f: f.readline(2), list],
    "readlines": [lambda f: f.readlines()],
    "readlines hint 1": [lambda f: f.readlines(1), lambda f: f.readlines(1), lambda f: f.read()],
    "readlines hint 20": [lambda f: f.readlines(20), lambda f: f.readlines(0)],
    "readlines hint 400": [lambda f: f.readlines(400), lambda f: f.readlines(None)],
    "mixed": [
        lambda f: f.readline(),
        lambda f: f.read(3),
        lambda f: f.read1(2),
        into(5),
        lambda f: f.readline(4),
        lambda f: f.read(310),
        lambda f: next(f),
        lambda f: f.read(),
        lambda f: f.readline(),
        lambda f: list(f),
    ],
}


@pytest.mark.parametrize("bufsize", BUFSIZES)
@pytest.mark.parametrize("name", sorted(SEQUENCES))
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_sequences_at_eof(twins, bufsize, name, timeout):
    twin = twins(bufsize, timeout=timeout)
    twin.send(TEXT)
    twin.eof()
    for op in SEQUENCES[name]:
        twin.same(op)
    # At EOF everything returns empty.
    for op in (lambda f: f.read(), lambda f: f.read(10), lambda f: f.readline(), into(4), list):
        twin.same(op)


def random_ops(rng):
    ops = []
    for _ in range(60):
        n = rng.choice([0, 1, 2, 3, 7, 64, 100, 1000, 5000, 20000])
        ops.append(
            rng.choice(
                [
                    lambda f, n=n: f.read(n),
                    lambda f, n=n: f.read1(n),
                    lambda f: f.readline(),
                    lambda f, n=n: f.readline(n),
                    into(n),
                    into(n, True),
                    lambda f: next(f, b"<stop>"),
                    "peek",
                ]
            )
        )
    return ops


def random_data(rng):
    lines = []
    for _ in range(rng.randrange(20, 120)):
        size = rng.choice([0, 1, 5, 40, 200, 3000, 12000]) if rng.random() < 0.3 else 20
        lines.append(bytes(rng.randrange(32, 127) for _ in range(min(size, 64))) * (size // 64 + 1))
        lines[-1] = lines[-1][:size] + b"\n"
    return b"".join(lines)[: 48 * 1024]


def check_peek(twin, size):
    peeked = twin.rs.peek(size)
    other = twin.std.peek(size)
    common = min(len(peeked), len(other))
    assert peeked[:common] == other[:common]
    # Peeking consumed nothing: the same bytes come next.
    assert twin.same(lambda f: f.read(len(peeked))) == ("ok", peeked)
    return peeked


@pytest.mark.parametrize("bufsize", BUFSIZES)
@pytest.mark.parametrize("seed", range(6))
def test_random_sequences(twins, bufsize, seed):
    rng = random.Random(seed * 100 + bufsize)
    twin = twins(bufsize)
    data = random_data(rng)
    twin.send(data)
    twin.eof()
    for op in random_ops(rng):
        if op == "peek":
            check_peek(twin, rng.choice([0, 1, 10, 100000]))
        else:
            twin.same(op)
    twin.same(lambda f: f.read())
    assert twin.rs.read() == b""


@pytest.mark.parametrize("bufsize", BUFSIZES)
def test_peek_is_a_nonempty_prefix(twins, bufsize):
    twin = twins(bufsize)
    twin.send(b"abcdef\nghi")
    for size in (0, 1, 3, 100):
        peeked = twin.rs.peek(size)
        assert peeked and b"abcdef\nghi".startswith(peeked)
    assert twin.same(lambda f: f.read(4)) == ("ok", b"abcd")
    peeked = twin.rs.peek()
    assert peeked and b"ef\nghi".startswith(peeked)
    twin.same(lambda f: f.readline())
    twin.eof()
    twin.same(lambda f: f.read())
    assert twin.rs.peek() == b""


@pytest.mark.parametrize("bufsize", BUFSIZES)
def test_partial_data_then_more(twins, bufsize):
    # (readinto1 asks for no more than is buffered: with more buffered data
    # than that, BufferedReader may block in a second raw read.)
    twin = twins(bufsize)
    twin.send(b"ab")
    twin.same(lambda f: f.read1(10))
    twin.send(b"cd\nef")
    twin.same(lambda f: f.readline())
    twin.same(into(2, True))
    twin.send(b"gh")
    twin.same(lambda f: f.read1())
    twin.send(b"ijk\n")
    twin.same(lambda f: f.read(2))
    twin.same(lambda f: f.readline())


@pytest.mark.parametrize("bufsize", BUFSIZES)
@pytest.mark.parametrize(
    "op",
    [lambda f: f.read(10), lambda f: f.read(), lambda f: f.readline(), into(10), list],
    ids=["read", "readall", "readline", "readinto", "iter"],
)
def test_peer_reset(twins, bufsize, op):
    twin = twins(bufsize, kind="tcp")
    twin.send(b"first line\nsecond")
    twin.same(lambda f: f.readline())
    twin.reset()
    twin.same(op)
    twin.same(op)
    twin.same(lambda f: f.read())


@pytest.mark.parametrize("bufsize", BUFSIZES)
def test_reset_error_is_connection_reset(twins, bufsize):
    twin = twins(bufsize, kind="tcp")
    twin.reset()
    result = twin.same(lambda f: f.read(10))
    assert result[1:] == (ConnectionResetError, errno.ECONNRESET)


@pytest.mark.parametrize("bufsize", BUFSIZES)
@pytest.mark.parametrize(
    "op",
    [
        lambda f: f.read(10),
        lambda f: f.read(),
        lambda f: f.readline(),
        into(10),
        lambda f: f.peek(),
    ],
    ids=["read", "readall", "readline", "readinto", "peek"],
)
def test_timeout(twins, bufsize, op):
    twin = twins(bufsize, timeout=0.05)
    twin.send(b"partial")
    start = time.monotonic()
    result = twin.same(op)
    assert time.monotonic() - start < 2
    if result[0] == "raised":
        assert result[1] is socket.timeout
    # A timed-out raw object refuses to read again.
    twin.send(b" more\n" * 3000)
    twin.same(lambda f: f.read(100000))


@pytest.mark.parametrize("bufsize", BUFSIZES)
def test_timeout_nothing_sent(twins, bufsize):
    twin = twins(bufsize, timeout=0.05)
    assert twin.same(lambda f: f.read(1))[1] is socket.timeout
    twin.send(b"late\n")
    assert twin.same(lambda f: f.readline()) == ("raised", OSError, None)


@pytest.mark.parametrize("bufsize", BUFSIZES)
def test_data_arriving_within_timeout(twins, bufsize):
    twin = twins(bufsize, timeout=2.0)
    timer = threading.Timer(0.05, twin.send, (b"delayed line\n",))
    timer.start()
    try:
        assert twin.rs.readline() == b"delayed line\n"
        assert twin.std.readline() == b"delayed line\n"
    finally:
        timer.join()


@pytest.mark.parametrize("bufsize", BUFSIZES)
def test_nonblocking_socket(twins, bufsize):
    twin = twins(bufsize, timeout=0.0)
    twin.same(lambda f: f.read(5))
    twin.same(lambda f: f.read())
    twin.same(lambda f: f.readline())
    twin.same(into(5))
    twin.send(b"abc\nde")
    twin.same(lambda f: f.readline())
    twin.same(lambda f: f.read(10))


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_unbuffered_leaves_bytes_in_kernel(twins, kind):
    twin = twins(0, kind=kind)
    twin.send(b"one\ntwo\nthree")
    assert twin.same(lambda f: f.readline()) == ("ok", b"one\n")
    assert twin.same(lambda f: f.read(2)) == ("ok", b"tw")
    for sock in twin.receivers:
        assert sock.recv(100, socket.MSG_DONTWAIT) == b"o\nthree"
    twin.send(b"abc\ndef\n")
    assert twin.same(lambda f: f.readline(2)) == ("ok", b"ab")
    assert twin.same(lambda f: f.readline()) == ("ok", b"c\n")
    for sock in twin.receivers:
        assert sock.recv(100, socket.MSG_DONTWAIT) == b"def\n"


def test_unbuffered_long_line(twins):
    twin = twins(0)
    line = b"y" * 50000 + b"\n"
    twin.send(line + b"rest")
    assert twin.rs.readline() == line
    assert twin.receivers[1].recv(100, socket.MSG_DONTWAIT) == b"rest"


@pytest.mark.parametrize("limit", [sys.maxsize, 2**40])
def test_unbuffered_readline_limit_bounds_the_line(twins, limit):
    # readline(sys.maxsize) is a common "no limit": nothing of the limit's
    # size may be set aside up front.
    twin = twins(0)
    twin.send(b"one\n" + b"z" * 20000 + b"\nrest")
    assert twin.same(lambda f: f.readline(limit)) == ("ok", b"one\n")
    assert twin.same(lambda f: f.readline(limit)) == ("ok", b"z" * 20000 + b"\n")
    for sock in twin.receivers:
        assert sock.recv(100, socket.MSG_DONTWAIT) == b"rest"


@pytest.mark.parametrize("bufsize", BUFSIZES)
def test_large_reads_with_writer_thread(bufsize):
    payload = bytes(range(256)) * 12000  # ~3 MB
    a, b = socket.socketpair()
    try:
        sender = threading.Thread(target=lambda: (a.sendall(payload), a.shutdown(socket.SHUT_WR)))
        sender.start()
        r = _core.SocketReader(b, bufsize)
        got = [r.read(100000), r.read(1), r.read(5000)]
        buf = bytearray(300000)
        n = r.readinto(buf)
        got.append(bytes(buf[:n]))
        got.append(r.read())
        sender.join()
        assert b"".join(got) == payload
        r.close()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("bufsize", BUFSIZES)
def test_attributes_and_close(twins, bufsize):
    twin = twins(bufsize)
    for f in (twin.std, twin.rs):
        assert f.mode == "rb"
        assert f.readable() and not f.writable() and not f.seekable() and not f.isatty()
        assert f.fileno() == f.name >= 0
        assert not f.closed
        assert f.flush() is None
    sock = twin.receivers[1]
    assert sock._io_refs == 1
    with twin.rs as f:
        assert f is twin.rs
    assert twin.rs.closed and twin.rs.name == -1
    assert sock._io_refs == 0
    twin.rs.close()  # twice is fine
    assert sock._io_refs == 0
    for op in (
        lambda f: f.read(),
        lambda f: f.read(1),
        lambda f: f.read1(1),
        lambda f: f.readline(),
        lambda f: f.readlines(),
        lambda f: f.peek(),
        into(3),
        iter,
        lambda f: f.fileno(),
        lambda f: f.readable(),
        lambda f: f.flush(),
        lambda f: f.__enter__(),
    ):
        with pytest.raises(ValueError):
            op(twin.rs)


@pytest.mark.parametrize("bufsize", [-1, 0, 16])
def test_reader_keeps_socket_open(bufsize):
    a, b = socket.socketpair()
    try:
        r = _core.SocketReader(b, bufsize)
        b.close()  # the handler closes the socket while the file is open
        a.sendall(b"still here\n")
        assert r.readline() == b"still here\n"
        assert b.fileno() != -1
        r.close()
        assert b.fileno() == -1
    finally:
        a.close()
        b.close()


def test_readinto_rejects_readonly(twins):
    twin = twins(-1)
    with pytest.raises(TypeError):
        twin.rs.readinto(b"immutable")


def test_readinto_memoryview(twins):
    twin = twins(4)
    twin.send(b"0123456789")
    buf = bytearray(8)
    assert twin.rs.readinto(memoryview(buf)[2:]) == 6
    assert buf == b"\x00\x00012345"


def test_concurrent_readlines():
    lines = [b"%06d\n" % i for i in range(20000)]
    a, b = socket.socketpair()
    try:
        r = _core.SocketReader(b, -1)
        sender = threading.Thread(target=lambda: (a.sendall(b"".join(lines)), a.shutdown(1)))
        sender.start()
        results = [[] for _ in range(4)]

        def consume(out):
            for line in r:
                out.append(line)

        threads = [threading.Thread(target=consume, args=(out,)) for out in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sender.join()
        assert sorted(sum(results, [])) == lines
        r.close()
    finally:
        a.close()
        b.close()


# -- signals -------------------------------------------------------------------


@pytest.fixture
def usr1_counter():
    hits = []
    old = signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))
    yield hits
    signal.signal(signal.SIGUSR1, old)


def kill_main_until(hits, deadline=5.0):
    main = threading.main_thread().ident
    end = time.monotonic() + deadline
    while not hits and time.monotonic() < end:
        signal.pthread_kill(main, signal.SIGUSR1)
        time.sleep(0.02)


@pytest.mark.parametrize("bufsize", [-1, 0])
def test_read_interrupted_by_signal_continues(usr1_counter, bufsize):
    a, b = socket.socketpair()
    try:
        r = _core.SocketReader(b, bufsize)

        def poke():
            time.sleep(0.05)
            kill_main_until(usr1_counter)
            a.sendall(b"after the signal\n")

        t = threading.Thread(target=poke)
        t.start()
        assert r.readline() == b"after the signal\n"
        t.join()
        assert usr1_counter
        r.close()
    finally:
        a.close()
        b.close()


def test_signal_handler_exception_propagates():
    a, b = socket.socketpair()
    hits = []

    def boom(*_):
        hits.append(1)
        raise KeyError("from handler")

    old = signal.signal(signal.SIGUSR1, boom)
    try:
        r = _core.SocketReader(b, -1)
        t = threading.Thread(target=lambda: (time.sleep(0.1), kill_main_until(hits)))
        t.start()
        with pytest.raises(KeyError):
            r.read(10)
        t.join()
        r.close()
    finally:
        signal.signal(signal.SIGUSR1, old)
        a.close()
        b.close()


@pytest.mark.parametrize("bufsize", [0, -1, 100])
@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_big_write_interrupted_by_signal(usr1_counter, bufsize, kind):
    """As CPython's SocketWriterTest.test_write: nothing lost or truncated."""
    a, b = make_pair(kind)
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB
    received = []
    try:
        w = _core.SocketWriter(a, bufsize)
        assert w.write(b"write data\n") == 11
        if bufsize:
            w.flush()

        def client():
            with b.makefile("rb") as reader:
                received.append(reader.readline())
                received.append(reader.read(100))
                # The main thread is now blocked in send(): interrupt it.
                kill_main_until(usr1_counter)
                received.append(reader.read())

        t = threading.Thread(target=client)
        t.start()
        assert w.write(big) == len(big)
        w.close()
        a.shutdown(socket.SHUT_WR)
        t.join()
        assert usr1_counter
        assert received[0] == b"write data\n"
        assert received[1] + received[2] == big
    finally:
        a.close()
        b.close()


# -- writer --------------------------------------------------------------------


def available(sock):
    chunks = []
    while True:
        try:
            data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@pytest.fixture
def wpair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize(
    "data",
    [
        b"bytes",
        bytearray(b"bytearray"),
        memoryview(b"memoryview"),
        memoryview(b"..sliced..")[2:-2],
        memoryview(bytes(range(16))).cast("I"),
        b"",
    ],
    ids=["bytes", "bytearray", "memoryview", "sliced", "cast", "empty"],
)
def test_unbuffered_write_sends_at_once(wpair, data):
    a, b = wpair
    w = _core.SocketWriter(a, 0)
    assert w.write(data) == memoryview(data).nbytes
    assert available(b) == bytes(data)
    assert a._io_refs == 0
    w.close()
    assert a._io_refs == 0


def test_unbuffered_writer_attributes(wpair):
    a, b = wpair
    w = _core.SocketWriter(a, 0)
    assert w.writable() and not w.readable() and not w.seekable()
    assert w.mode == "wb" and w.fileno() == a.fileno()
    w.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
    assert available(b) == b"abc"
    w.flush()
    with w:
        pass
    assert w.closed
    # As socketserver._SocketWriter: a write after close() still sends.
    assert w.write(b"x") == 1
    assert available(b) == b"x"
    with pytest.raises(ValueError):
        w.writelines([b"x"])
    with pytest.raises(ValueError):
        w.flush()


def test_write_rejects_non_buffers(wpair):
    w = _core.SocketWriter(wpair[0], 0)
    with pytest.raises(TypeError):
        w.write("text")
    w.close()


@pytest.mark.parametrize("bufsize", [1, 16, -1])
def test_buffered_writer_matches_stdlib(bufsize):
    (a1, b1), (a2, b2) = socket.socketpair(), socket.socketpair()
    try:
        std = a1.makefile("wb", bufsize)
        rs = _core.SocketWriter(a2, bufsize)
        assert a2._io_refs == 1
        steps = [b"abc", b"", b"defghijklmn", b"o" * 15, b"p", b"q" * 40, b"r" * 9000, b"s"]
        for data in steps:
            assert rs.write(data) == std.write(data)
            assert available(b2) == available(b1)
        rs.writelines([b"t", b"u"])
        std.writelines([b"t", b"u"])
        assert available(b2) == available(b1)
        rs.flush()
        std.flush()
        assert available(b2) == available(b1)
        rs.write(b"held until close")
        std.write(b"held until close")
        rs.close()
        std.close()
        assert available(b2) == available(b1)
        assert a2._io_refs == 0
        with pytest.raises(ValueError):
            rs.write(b"x")
        with pytest.raises(ValueError):
            rs.flush()
        rs.close()
    finally:
        for s in (a1, b1, a2, b2):
            s.close()


def test_buffered_writer_holds_data(wpair):
    a, b = wpair
    w = _core.SocketWriter(a, 64)
    w.write(b"hello")
    assert available(b) == b""
    w.flush()
    assert available(b) == b"hello"
    w.write(b"x" * 60)
    assert available(b) == b""
    w.write(b"y" * 10)  # overflow: the buffer goes out first
    assert available(b) == b"x" * 60
    w.close()
    assert available(b) == b"y" * 10


def test_buffered_writer_keeps_socket_open(wpair):
    a, b = wpair
    w = _core.SocketWriter(a, -1)
    a.close()
    w.write(b"after close")
    w.close()
    assert a.fileno() == -1
    assert available(b) == b"after close"


def test_unbuffered_write_after_socket_close(wpair):
    a, b = wpair
    w = _core.SocketWriter(a, 0)
    a.close()
    with pytest.raises(OSError) as info:
        w.write(b"x")
    assert info.value.errno == errno.EBADF


def socketserver_writer(sock):
    import socketserver

    return socketserver._SocketWriter(sock)


@contextlib.contextmanager
def writer_twins(bufsize, timeout=None):
    """(std, rs, std_peer, rs_peer): the standard module's wfile (or
    BufferedWriter) and ours, each over its own socket pair."""
    (a1, b1), (a2, b2) = socket.socketpair(), socket.socketpair()
    a1.settimeout(timeout)
    a2.settimeout(timeout)
    std = socketserver_writer(a1) if bufsize == 0 else a1.makefile("wb", bufsize)
    rs = _core.SocketWriter(a2, bufsize)
    try:
        yield std, rs, b1, b2
    finally:
        for f in (std, rs):
            try:
                f.close()
            except OSError:
                pass  # a buffered writer's last flush may fail like its writes
        for s in (a1, b1, a2, b2):
            s.close()


@pytest.mark.parametrize("bufsize", [0, 16])
def test_write_to_closed_peer(bufsize):
    with writer_twins(bufsize) as (std, rs, std_peer, rs_peer):
        std_peer.close()
        rs_peer.close()

        def go(f):
            f.write(b"z" * 100)
            f.flush()

        assert outcome(go, rs) == outcome(go, std)
        assert outcome(go, rs)[1] is BrokenPipeError


@pytest.mark.parametrize("bufsize", [0, 16])
def test_write_timeout(bufsize):
    with writer_twins(bufsize, timeout=0.05) as (std, rs, _, _):
        big = b"w" * (4 << 20)
        start = time.monotonic()
        assert outcome(lambda f: f.write(big), rs) == outcome(lambda f: f.write(big), std)
        assert outcome(lambda f: f.write(big), rs)[1] is socket.timeout
        assert time.monotonic() - start < 3


IO_CLASSES = (io.IOBase, io.RawIOBase, io.BufferedIOBase, io.TextIOBase)


@pytest.mark.parametrize("bufsize", [0, -1])
def test_writer_io_classes_equal_stdlib(bufsize):
    # The standard module's wfile is an io.BufferedIOBase either way (its
    # _SocketWriter unbuffered, a BufferedWriter else), never a text file.
    # The package registers the core's class likewise.
    with writer_twins(bufsize) as (std, rs, _, _):
        assert isinstance(rs, io.BufferedIOBase)
        assert [isinstance(rs, c) for c in IO_CLASSES] == [isinstance(std, c) for c in IO_CLASSES]


def test_reader_io_classes_equal_stdlib(twins):
    # rfile at the default rbufsize: a BufferedReader in the standard module.
    twin = twins(-1)
    assert isinstance(twin.rs, io.BufferedIOBase)
    assert [isinstance(twin.rs, c) for c in IO_CLASSES] == [
        isinstance(twin.std, c) for c in IO_CLASSES
    ]


@pytest.mark.parametrize("bufsize", [-1, 0])
def test_not_seekable(twins, wpair, bufsize):
    twin = twins(bufsize)
    w = _core.SocketWriter(wpair[0], bufsize)
    for f in (twin.std, twin.rs, w):
        for op in (lambda f: f.tell(), lambda f: f.seek(0), lambda f: f.truncate()):
            with pytest.raises(io.UnsupportedOperation):
                op(f)
    w.close()


CLOSED_FILE_CALLS = {
    "rfile.read": lambda h: h.rfile.read(1),
    "rfile.read1": lambda h: h.rfile.read1(1),
    "rfile.readline": lambda h: h.rfile.readline(),
    "rfile.readlines": lambda h: h.rfile.readlines(),
    "rfile.peek": lambda h: h.rfile.peek(),
    "rfile.readinto": lambda h: h.rfile.readinto(bytearray(1)),
    "rfile.fileno": lambda h: h.rfile.fileno(),
    "next(rfile)": lambda h: next(h.rfile),
    "wfile.write": lambda h: h.wfile.write(b"x"),
    "wfile.writelines": lambda h: h.wfile.writelines([b"x"]),
    "wfile.flush": lambda h: h.wfile.flush(),
    "wfile.fileno": lambda h: h.wfile.fileno() >= 0,
}


def _after_close(mod, a, b, rbufsize, wbufsize):
    handler = mod.StreamRequestHandler.__new__(mod.StreamRequestHandler)
    handler.request = a
    handler.rbufsize, handler.wbufsize = rbufsize, wbufsize
    handler.setup()
    handler.finish()
    outcome = {}
    for what, call in CLOSED_FILE_CALLS.items():
        try:
            outcome[what] = ("returned", call(handler))
        except Exception as exc:  # noqa: BLE001 -- compared with the stdlib
            outcome[what] = (type(exc).__name__, str(exc))
    outcome["sent"] = available(b)
    return outcome


@pytest.mark.parametrize("rbufsize, wbufsize", [(-1, 0), (-1, -1), (0, 0), (8192, 8192)])
def test_files_after_close_behave_as_the_standard_ones(rbufsize, wbufsize):
    a, b = socket.socketpair()
    with a, b:
        expected = _after_close(socketserver, a, b, rbufsize, wbufsize)
        got = _after_close(socketserver_rs, a, b, rbufsize, wbufsize)
        if rbufsize == 0:
            # The standard rfile is then a bare SocketIO, without read1() and
            # peek(); ours keeps them.
            for name in ("rfile.read1", "rfile.peek"):
                assert expected.pop(name)[0] == "AttributeError"
                assert got.pop(name) == ("ValueError", "I/O operation on closed file.")
        assert got == expected


def _noncontiguous():
    return memoryview(bytearray(8))[::2]


# What a file offers beyond its direction, and the io queries: the standard
# files raise io.UnsupportedOperation (an OSError and a ValueError) for the
# other direction and for seeking, some of it before the closed check.
OTHER_DIRECTION_CALLS = {
    "rfile.write": lambda h: h.rfile.write(b"x"),
    "rfile.writelines": lambda h: h.rfile.writelines([b"x"]),
    "rfile.seek": lambda h: h.rfile.seek(0),
    "rfile.tell": lambda h: h.rfile.tell(),
    "rfile.truncate": lambda h: h.rfile.truncate(),
    "rfile.readable": lambda h: h.rfile.readable(),
    "rfile.writable": lambda h: h.rfile.writable(),
    "rfile.seekable": lambda h: h.rfile.seekable(),
    "rfile.readinto noncontiguous": lambda h: h.rfile.readinto(_noncontiguous()),
    "rfile.read(-2)": lambda h: h.rfile.read(-2),
    "rfile.__exit__": lambda h: h.rfile.__exit__(None, None, None),
    "wfile.read": lambda h: h.wfile.read(1),
    "wfile.read()": lambda h: h.wfile.read(),
    "wfile.read1": lambda h: h.wfile.read1(1),
    "wfile.readinto": lambda h: h.wfile.readinto(bytearray(1)),
    "wfile.readinto1": lambda h: h.wfile.readinto1(bytearray(1)),
    "wfile.readline": lambda h: h.wfile.readline(),
    "wfile.readlines": lambda h: h.wfile.readlines(),
    "iter(wfile)": lambda h: iter(h.wfile) is h.wfile,
    "next(wfile)": lambda h: next(h.wfile),
    "wfile.seek": lambda h: h.wfile.seek(0),
    "wfile.tell": lambda h: h.wfile.tell(),
    "wfile.truncate": lambda h: h.wfile.truncate(),
    "wfile.readable": lambda h: h.wfile.readable(),
    "wfile.writable": lambda h: h.wfile.writable(),
    "wfile.seekable": lambda h: h.wfile.seekable(),
    "wfile.write noncontiguous": lambda h: h.wfile.write(_noncontiguous()),
    "wfile.__exit__": lambda h: h.wfile.__exit__(None, None, None),
}


def _other_direction(mod, a, b, rbufsize, wbufsize, closed):
    outcome = {}
    for what, call in OTHER_DIRECTION_CALLS.items():
        handler = mod.StreamRequestHandler.__new__(mod.StreamRequestHandler)
        handler.request = a
        handler.rbufsize, handler.wbufsize = rbufsize, wbufsize
        handler.setup()
        if closed:
            handler.finish()
        try:
            outcome[what] = ("returned", call(handler))
        except Exception as exc:  # noqa: BLE001 -- compared with the stdlib
            outcome[what] = (type(exc), str(exc))
        handler.finish()
    return outcome


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
@pytest.mark.parametrize("rbufsize, wbufsize", [(-1, 0), (0, -1), (8192, 8192)])
def test_files_refuse_the_other_direction_as_the_standard_ones(rbufsize, wbufsize, closed):
    a, b = socket.socketpair()
    with a, b:
        b.shutdown(socket.SHUT_WR)  # read(-2) reads to EOF
        expected = _other_direction(socketserver, a, b, rbufsize, wbufsize, closed)
        got = _other_direction(socketserver_rs, a, b, rbufsize, wbufsize, closed)
        if rbufsize == 0 and not closed:
            # recv_into() names itself in the standard message.
            name = "rfile.readinto noncontiguous"
            assert expected.pop(name)[0] is got.pop(name)[0] is TypeError
        # The standard message names the memoryview's own check.
        name = "wfile.write noncontiguous"
        assert expected.pop(name)[0] is got.pop(name)[0] is BufferError
        assert got == expected


@pytest.mark.parametrize("mod", [socketserver, socketserver_rs], ids=lambda m: m.__name__)
def test_files_reach_their_socket_as_the_standard_ones_do(mod):
    """ws4py and others take the socket from rfile.raw._sock or wfile._sock."""
    a, b = socket.socketpair()
    with a, b:
        handler = mod.StreamRequestHandler.__new__(mod.StreamRequestHandler)
        handler.request = a
        handler.setup()
        assert handler.rfile.raw._sock is a
        assert handler.wfile._sock is a
        b.sendall(b"line\nrest")
        assert handler.rfile.readline() == b"line\n"
        raw = handler.rfile.detach()
        assert isinstance(raw, socket.SocketIO) and not raw.closed
        with pytest.raises(ValueError):
            handler.rfile.read()
        b.sendall(b"!")
        handler.wfile.close()
        # What the buffer had read ahead stays behind; the raw stream goes on.
        assert raw.read(16) in (b"!", b"rest!")
        raw.close()
        assert a._io_refs == 0
        assert not a._closed


@pytest.mark.parametrize("wbufsize", [0, 1024])
def test_files_fail_once_the_handler_detached_the_socket(ssmod, runner, wbufsize):
    # After self.request.detach() the descriptor is no longer the socket's:
    # closed and reused by another socket, it must not be read from or
    # written to through rfile/wfile. Both fail with EBADF, as the standard
    # module's do (they go through the socket object, whose fileno() is -1).
    seen = {}

    class Handler(ssmod.StreamRequestHandler):
        def handle(self):
            seen["line"] = self.rfile.readline()
            self.wfile.write(b"pending reply\n")
            fd = self.request.detach()
            os.close(fd)
            other, peer = socket.socketpair()
            with other, peer:
                seen["reused"] = other.fileno() == fd
                other.setblocking(False)  # were it read, no hang
                peer.sendall(b"another socket's data\n")
                seen["fileno"] = self.rfile.fileno()
                for name, op in [
                    ("readline", self.rfile.readline),
                    ("peek", self.rfile.peek),
                    ("flush", self.wfile.flush),
                ]:
                    try:
                        op()
                    except OSError as err:
                        seen[name] = err.errno
                    else:
                        seen[name] = None
                peer.settimeout(0.2)
                try:
                    seen["other got"] = peer.recv(100)
                except socket.timeout:
                    seen["other got"] = b""
                seen["other unread"] = other.recv(100)

        def setup(self):
            self.request.settimeout(1)  # were the descriptor read, no hang
            super().setup()

        def finish(self):
            try:
                super().finish()
            except OSError:
                pass  # the buffered reply, still pending

    Handler.wbufsize = wbufsize
    server = runner.track(ssmod.TCPServer(("127.0.0.1", 0), Handler))
    runner.start(server)
    with socket.create_connection(server.server_address, timeout=10) as client:
        client.sendall(b"hello\n")
        assert wait_until(lambda: "other unread" in seen)
    assert seen["line"] == b"hello\n"
    assert seen["reused"]
    assert seen["fileno"] == -1
    assert seen["readline"] == errno.EBADF
    assert seen["peek"] == errno.EBADF
    # An unbuffered wfile sent its line at once, before the detach.
    assert seen["flush"] == (errno.EBADF if wbufsize else None)
    assert seen["other got"] == b""
    assert seen["other unread"] == b"another socket's data\n"


@pytest.mark.parametrize("wbufsize", [0, 1024])
def test_a_handler_handing_its_connection_off_finishes_cleanly(ssmod, runner, wbufsize):
    # detach() after the reply was flushed: finish() closes rfile and wfile
    # without touching the descriptor, which now belongs to someone else.
    errors = []
    handed_off = []

    class Handler(ssmod.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())
            self.wfile.flush()
            handed_off.append(socket.socket(fileno=self.request.detach()))

    class Server(ssmod.TCPServer):
        def handle_error(self, request, client_address):
            errors.append(sys.exc_info()[1])

    Handler.wbufsize = wbufsize
    server = runner.track(Server(("127.0.0.1", 0), Handler))
    runner.start(server)
    with socket.create_connection(server.server_address, timeout=10) as client:
        client.sendall(b"hello\n")
        assert client.recv(100) == b"HELLO\n"
        assert wait_until(lambda: handed_off)
        with handed_off[0] as conn:
            conn.sendall(b"still connected\n")
            assert client.recv(100) == b"still connected\n"
    assert errors == []
