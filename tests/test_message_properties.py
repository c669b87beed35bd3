"""The message decoders against random byte streams, split at random points.

A stream is some encoded messages (some longer than the limit), then a tail
that may be anything: nothing, a cut-off message, random bytes.  Fed in
pieces to every reader the package has, the decoder must return exactly the
messages encoded and then None, or stop with the EOFError or ValueError a
simple reference decoder predicts; a length over the limit must consume the
header only, leaving the payload unread.  Every socket has a timeout, so a
decoder that waited for bytes that never come fails instead of hanging.
The event-driven message loop gets the same streams over TCP: it must
answer exactly the messages encoded, then end the connection, through
handle_error() with the same error when the stream ends in one.
"""

import fcntl
import socket
import struct
import termios
import threading
import time
from datetime import timedelta

import pytest
from conftest import RecordingErrors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import socketserver_rs
from socketserver_rs import _core, _message_loop

TIMEOUT = 5.0

pytestmark = pytest.mark.timeout(120)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def expected(stream, max_size):
    """What decoding stream gives, message by message, and how many bytes
    a decoder may have consumed when it stops on a length over the limit."""
    outcomes = []
    pos = 0
    while True:
        rest = len(stream) - pos
        if rest == 0:
            outcomes.append(("end", None))
            return outcomes, pos
        if rest < 4:
            detail = f"message header (got {rest} of 4 bytes)"
            outcomes.append(("EOFError", f"connection closed in the middle of a {detail}"))
            return outcomes, len(stream)
        (length,) = struct.unpack_from(">I", stream, pos)
        if length > max_size:
            text = f"message length {length} exceeds max_message_size {max_size}"
            outcomes.append(("ValueError", text))
            return outcomes, pos + 4
        if rest - 4 < length:
            detail = f"message (got {rest - 4} of {length} bytes)"
            outcomes.append(("EOFError", f"connection closed in the middle of a {detail}"))
            return outcomes, len(stream)
        outcomes.append(("message", stream[pos + 4 : pos + 4 + length]))
        pos += 4 + length


def decode(read_one, count):
    got = []
    for _ in range(count):
        try:
            message = read_one()
        except (EOFError, ValueError) as exc:
            got.append((type(exc).__name__, str(exc)))
            break
        got.append(("end", None) if message is None else ("message", message))
        if message is None:
            break
    return got


def same(got, want):
    """Equal, allowing a ValueError's text to add to the expected start."""
    if len(got) != len(want):
        return False
    for (kind, value), (want_kind, want_value) in zip(got, want):
        if kind != want_kind:
            return False
        if kind == "ValueError" and not value.startswith(want_value):
            return False
        if kind != "ValueError" and value != want_value:
            return False
    return True


class SocketSubclass(socket.socket):
    """Not exactly socket.socket (as an SSL socket is): the Python path."""


class Chunks:
    """A duck-typed socket whose recv() never crosses a chunk boundary:
    the Python path, with the splits exactly where they were drawn."""

    def __init__(self, chunks):
        self.chunks = [c for c in chunks if c]

    def recv(self, n):
        if not self.chunks:
            return b""
        chunk = self.chunks[0]
        self.chunks[0] = chunk[n:]
        if not self.chunks[0]:
            self.chunks.pop(0)
        return chunk[:n]

    def rest(self):
        return b"".join(self.chunks)


def unread(fd):
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def send_chunks(sock, peer_fd, chunks):
    # Each chunk waits until the reader has taken the previous one, so the
    # decoder meets the splits rather than one coalesced stream.
    try:
        for chunk in chunks:
            deadline = time.monotonic() + 1.0
            while unread(peer_fd) and time.monotonic() < deadline:
                time.sleep(0.0001)
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the reader closed early: its assertions say why


def read_rest(read):
    out = bytearray()
    while True:
        chunk = read(65536)
        if not chunk:
            return bytes(out)
        out += chunk


def handler_over(rfile, max_size):
    handler = socketserver_rs.MessageRequestHandler.__new__(socketserver_rs.MessageRequestHandler)
    handler.rfile = rfile
    handler.max_message_size = max_size
    return handler


READERS = [
    "core recv_message",
    "python recv_message",
    "core read_message",
    "python read_message",
]


def run_over_socketpair(reader, bufsize, chunks, max_size, count):
    """The outcomes and the bytes left after them, read by reader."""
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    b.settimeout(TIMEOUT)
    sender = threading.Thread(target=send_chunks, args=(a, b.fileno(), chunks), daemon=True)
    sender.start()
    try:
        if reader == "core recv_message":
            got = decode(lambda: socketserver_rs.recv_message(b, max_size), count)
            rest = read_rest(b.recv)
        elif reader == "python recv_message":
            b = SocketSubclass(fileno=b.detach())
            b.settimeout(TIMEOUT)
            got = decode(lambda: socketserver_rs.recv_message(b, max_size), count)
            rest = read_rest(b.recv)
        else:
            if reader == "core read_message":
                rfile = _core.SocketReader(b, bufsize)
            else:
                rfile = b.makefile("rb", bufsize)
            with rfile:
                handler = handler_over(rfile, max_size)
                got = decode(handler.read_message, count)
                rest = read_rest(rfile.read)
    finally:
        sender.join(TIMEOUT)
        a.close()
        b.close()
    assert not sender.is_alive()
    return got, rest


@st.composite
def streams(draw):
    max_size = draw(st.integers(0, 300))
    messages = draw(st.lists(st.binary(max_size=400), max_size=6))
    tail = draw(
        st.one_of(
            st.just(b""),
            st.binary(max_size=12),
            st.binary(max_size=50).flatmap(
                lambda p: st.integers(1, len(p) + 3).map(lambda cut: frame(p)[:cut])
            ),
        )
    )
    stream = b"".join(frame(m) for m in messages) + tail
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    chunks = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)])]
    chunks = [c for c in chunks if c]
    return stream, chunks, max_size


@settings(
    max_examples=200,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(streams(), st.sampled_from([-1, 0, 2, 7, 8192]))
def test_the_decoder_gives_the_messages_encoded_or_a_clean_error(case, bufsize):
    stream, chunks, max_size = case
    want, consumed = expected(stream, max_size)

    results = {}
    source = Chunks(chunks)
    results["python recv_message, exact splits"] = (
        decode(lambda: socketserver_rs.recv_message(source, max_size), len(want)),
        source.rest(),
    )
    for reader in READERS:
        results[reader] = run_over_socketpair(reader, bufsize, chunks, max_size, len(want))

    for reader, (got, rest) in results.items():
        assert same(got, want), (reader, got, want)
        if want[-1][0] == "ValueError":
            # Only the header was read: the payload is still there.
            assert rest == stream[consumed:], reader
        else:
            assert rest == b"", reader


class LoopEcho(socketserver_rs.MessageRequestHandler):
    """Event-driven (the default): the core's message loop decodes."""

    def handle_message(self, message):
        return message


def read_frames(sock):
    """Every message the server sent, until it closed (or reset: then what
    arrived before)."""
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    messages = []
    while data:
        (length,) = struct.unpack_from(">I", data)
        messages.append(data[4 : 4 + length])
        data = data[4 + length :]
    return messages


@settings(
    max_examples=100,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(streams(), st.sampled_from(["TCPServer", "ThreadingTCPServer"]))
def test_the_message_loop_answers_the_messages_encoded_then_ends_cleanly(case, server_name):
    stream, chunks, max_size = case
    want, _ = expected(stream, max_size)
    handler = type("Handler", (LoopEcho,), {"max_message_size": max_size})
    server_class = type("Server", (RecordingErrors, getattr(socketserver_rs, server_name)), {})
    with server_class(("127.0.0.1", 0), handler) as server:
        assert _message_loop.event_driven(server)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            with socket.create_connection(server.server_address, timeout=TIMEOUT) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                try:
                    for chunk in chunks:
                        sock.sendall(chunk)
                        time.sleep(0.0005)  # the loop meets the splits, not one stream
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the server ended the connection early: checked below
                replies = read_frames(sock)
            deadline = time.monotonic() + TIMEOUT
            while server.stats()["requests_active"] and time.monotonic() < deadline:
                time.sleep(0.001)
            assert server.stats()["requests_active"] == 0
        finally:
            server.shutdown()
            thread.join(TIMEOUT)
    messages = [value for kind, value in want if kind == "message"]
    last_kind, last_value = want[-1]
    if last_kind == "ValueError":
        # Closed on the bad header, maybe with bytes of ours unread: the
        # reset that sends may discard replies the client had not read.
        assert replies == messages[: len(replies)]
    else:
        assert replies == messages
    if last_kind == "end":
        assert server.errors == []
    else:
        (error,) = server.errors
        assert same([(type(error).__name__, str(error))], [(last_kind, last_value)]), error
