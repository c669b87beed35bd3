"""Length-prefixed messages over a stream: the sticky-packet problem solved.

TCP carries a stream of bytes, not messages: one ``send`` may arrive in
several ``recv`` calls and several sends in one, and a peer that closes
reads as ``b""``.  Here a message is a 4-byte big-endian unsigned length
followed by that many bytes, so the receiver knows where each one ends.

* ``recv_message`` / ``read_message`` return the payload, or ``None`` when
  the peer closed cleanly between messages.
* ``EOFError`` when the peer closed in the middle of a message (as
  ``asyncio.IncompleteReadError``, an ``EOFError`` subclass, does).
* ``ValueError`` when the announced length exceeds the limit
  (``DEFAULT_MAX_MESSAGE_SIZE`` by default): nothing of the payload is read
  or allocated, so the stream is out of step and the connection should be
  closed.
* Header and payload leave in one send, so a small message is one segment.
* A socket timeout raises TimeoutError, on 3.9 too (where socket.timeout is
  an OSError of its own, an exception that is both).
* ``MessageClient`` connects and speaks the protocol for a client;
  ``recv_exactly`` is the receive loop for protocols of your own.

Over a plain ``socket.socket`` (and the core's ``rfile``/``wfile``) the Rust
core does the work with the GIL released; anything else (an SSL socket, the
standard library's file objects) takes a Python path with the same results.
Both follow the core's codec (the header, the limit, how a body is read,
the error texts); the Python path only moves the bytes.
"""

import contextlib
import errno
import functools
import operator
import os
import socket
import sys

from socketserver_rs import _core
from socketserver_rs._cooperative import cooperative
from socketserver_rs.handlers import StreamRequestHandler

__all__ = [
    "MessageRequestHandler",
    "MessageClient",
    "send_message",
    "recv_message",
    "recv_exactly",
    "DEFAULT_MAX_MESSAGE_SIZE",
]

DEFAULT_MAX_MESSAGE_SIZE = _core.DEFAULT_MAX_MESSAGE_SIZE

# A payload up to this size is copied behind its header into one write;
# a larger one goes as header plus its first chunk, then the rest.
_JOIN_LIMIT = 64 * 1024


if sys.version_info >= (3, 10):  # socket.timeout is TimeoutError

    def _timeout_error(function):
        return function

else:

    class _Timeout(socket.timeout, TimeoutError):
        """A socket timeout that is also a TimeoutError."""

    def _timeout_error(function):
        """On 3.9, make function's socket timeouts TimeoutErrors too."""

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except socket.timeout as exc:
                if isinstance(exc, TimeoutError):
                    raise
                raise _Timeout(*exc.args) from exc

        return wrapper


class MessageRequestHandler(StreamRequestHandler):
    """A StreamRequestHandler speaking length-prefixed messages.

    Override handle_message(message): it is called for each message the
    client sends, and when it returns a bytes-like object, that is sent
    back as a message.  handle() returns when the client closes between
    messages; a message cut short (EOFError) or longer than
    max_message_size (ValueError) goes to the server's handle_error().
    Or override handle() and use read_message(), messages() and
    write_message() directly.

    To hang up, set close_connection = True in handle_message(): the
    connection ends once its reply, if any, is sent.

    A handler that only overrides handle_message() is served from one
    readiness loop, without a thread per connection, unless it sets
    event_driven = False (see _message_loop.py for what that changes).
    """

    max_message_size = DEFAULT_MAX_MESSAGE_SIZE

    # Set to True (in handle_message()) to end the connection once the
    # reply returned, if any, is sent.
    close_connection = False

    # Served by the message loop: seconds a connection may stay idle
    # between messages before it is closed (None: no limit). ``timeout``
    # bounds a message or reply that stalls half-way.
    idle_timeout = None

    # A handler that only overrides handle_message() is served from one
    # readiness loop, without a thread per connection (see _message_loop.py);
    # False keeps the thread model.
    event_driven = True

    @_timeout_error
    def read_message(self):
        """The next message, or None when the client closed between messages."""
        if type(self.rfile) is _core.SocketReader:
            return self.rfile.read_message(self.max_message_size)
        return _read_message(self.rfile.read, self.max_message_size)

    @_timeout_error
    def write_message(self, data):
        """Write data as one message (buffered when wbufsize != 0);
        returns its length in bytes."""
        if type(self.wfile) is _core.SocketWriter:
            return self.wfile.write_message(data)
        write = self.wfile.write
        return _write_message(lambda chunk: _write_all(write, chunk), data)

    def messages(self):
        """Iterate over the messages until the client closes."""
        while True:
            message = self.read_message()
            if message is None:
                return
            yield message

    def handle(self):
        for message in self.messages():
            reply = self.handle_message(message)
            if reply is not None:
                self.write_message(reply)
                self.wfile.flush()
            if self.close_connection:
                return

    def handle_message(self, message):
        """Called with each message's payload (bytes); return bytes to
        reply with, or None to send nothing."""
        raise NotImplementedError(
            f"{type(self).__name__} must override handle_message() or handle()"
        )


@_timeout_error
def send_message(sock, data):
    """Send data over a connected stream socket as one length-prefixed
    message; returns the payload length.  The socket's timeout covers the
    whole call, as for sendall()."""
    if type(sock) is socket.socket and not cooperative():
        return _core.send_message(sock, data)
    return _write_message(sock.sendall, data)


@_timeout_error
def recv_message(sock, max_size=DEFAULT_MAX_MESSAGE_SIZE):
    """Receive one length-prefixed message from a connected stream socket,
    reading no byte past it.  Returns the payload, or None when the peer
    closed before its first byte.  EOFError when the peer closed in the
    middle of a message; ValueError, without reading the payload, when its
    length exceeds max_size.  The socket's timeout bounds each wait."""
    if type(sock) is socket.socket and not cooperative():
        return _core.recv_message(sock, max_size)
    return _read_message(sock.recv, max_size)


@_timeout_error
def recv_exactly(sock, n):
    """Receive exactly n bytes from a connected stream socket, calling
    recv() until they have all arrived; b"" when n is 0.  EOFError, saying
    how many of the n bytes arrived, when the peer closes first (as
    asyncio.IncompleteReadError, an EOFError subclass, does); ValueError
    when n is negative.  The socket's timeout bounds each wait.  Memory
    grows with the bytes that arrive, not with n."""
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, not {n}")
    chunks = []
    got = 0
    while got < n:
        chunk = sock.recv(min(n - got, _RECV_CHUNK))
        if not chunk:
            raise EOFError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


_RECV_CHUNK = 1024 * 1024


class MessageClient:
    """A connection to a server speaking length-prefixed messages (a
    MessageRequestHandler, or any server using the same format).

    address is what a server's server_address is: (host, port), or an
    IPv6 server's (host, port, flowinfo, scope_id), for TCP; a path (str,
    bytes, another bytes-like object or os.PathLike) for a Unix socket.
    timeout (seconds, or None to wait without bound) covers connecting and
    then each send and receive; an expired one raises TimeoutError.
    max_message_size bounds the messages received (a class attribute, as
    on MessageRequestHandler; the keyword sets it for one client).

    An error while sending or receiving (a timeout, a message cut short,
    one over the limit, a reset) leaves the stream out of step, so the
    client closes its connection: connect a new one to go on.  Only a
    TypeError (data that is not bytes-like: nothing was sent) leaves it
    open.

    Methods: send_message(data), recv_message(), request(data), close();
    a context manager that closes on exit.  The connected socket is the
    socket attribute.
    """

    max_message_size = DEFAULT_MAX_MESSAGE_SIZE

    def __init__(self, address, timeout=None, *, max_message_size=None):
        if max_message_size is not None:
            _core.check_max_size(max_message_size)
            self.max_message_size = max_message_size
        self.socket = _connect(address, timeout)

    def send_message(self, data):
        """Send data as one message; returns its length in bytes."""
        with self._failures_close():
            return send_message(self.socket, data)

    def recv_message(self):
        """The next message, or None once the server has closed the
        connection between messages."""
        with self._failures_close():
            return recv_message(self.socket, self.max_message_size)

    def request(self, data):
        """Send data as one message and return the reply message.
        ConnectionResetError when the server closes instead of replying."""
        self.send_message(data)
        reply = self.recv_message()
        if reply is None:
            self.close()
            raise ConnectionResetError("the server closed the connection without replying")
        return reply

    def close(self):
        """Close the connection; calling it again does nothing."""
        self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.socket!r}>"

    @contextlib.contextmanager
    def _failures_close(self):
        try:
            yield
        except TypeError:
            raise
        except BaseException:
            self.close()
            raise


@_timeout_error
def _connect(address, timeout):
    # Whatever a server's server_address is: a path (str, bytes, os.PathLike
    # or another bytes-like object), (host, port), or an IPv6 server's
    # (host, port, flowinfo, scope_id).
    if isinstance(address, (bytearray, memoryview)):
        address = bytes(address)
    if isinstance(address, (str, bytes, os.PathLike)):
        return _connected(socket.AF_UNIX, os.fspath(address), timeout)
    if isinstance(address, tuple) and len(address) == 4:
        return _connected(socket.AF_INET6, address, timeout)
    return socket.create_connection(address, timeout)


def _connected(family, address, timeout):
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


# The Python path, for other sockets and file objects: the core's codec
# decides, this code moves the bytes.


def _write_message(write_all, data):
    """Write one message with write_all(bytes-like), which takes everything."""
    with memoryview(data) as view, view.cast("B") as payload:
        length = payload.nbytes
        header = _core.encode_header(length)
        if length <= _JOIN_LIMIT:
            write_all(header + payload)
        else:
            write_all(header + payload[:_JOIN_LIMIT])
            write_all(payload[_JOIN_LIMIT:])
    return length


def _write_all(write, data):
    # A buffered file's write() takes everything; a raw one's may take part.
    with memoryview(data) as view:
        while view:
            written = write(view)
            if written is None:
                # Only a non-blocking stream can take nothing.
                raise _would_block()
            view = view[written:]


def _read_message(read, max_size):
    _core.check_max_size(max_size)
    header = _read_full(read, _core.MESSAGE_HEADER_SIZE)
    if not header:
        return None
    length = _core.decode_header(header, max_size)
    body = bytearray()
    while len(body) < length:
        want = _core.body_read_size(len(body), length)
        chunk = _read_full(read, want)
        body += chunk
        if len(chunk) < want:
            raise _core.truncated_body(len(body), length)
    return bytes(body)


def _read_full(read, n):
    """Up to n bytes: fewer only at EOF."""
    chunks = []
    got = 0
    while got < n:
        chunk = read(n - got)
        if chunk is None:
            raise _would_block()
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _would_block():
    return BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
