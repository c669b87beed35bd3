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

Over a plain ``socket.socket`` (and the core's ``rfile``/``wfile``) the Rust
core does the work with the GIL released; anything else (an SSL socket, the
standard library's file objects) takes a Python path with the same results.
Both follow the core's codec (the header, the limit, how a body is read,
the error texts); the Python path only moves the bytes.
"""

import errno
import os
import socket

from socketserver_rs import _core
from socketserver_rs.cooperative import cooperative
from socketserver_rs.handlers import StreamRequestHandler

__all__ = ["MessageRequestHandler", "send_message", "recv_message", "DEFAULT_MAX_MESSAGE_SIZE"]

DEFAULT_MAX_MESSAGE_SIZE = _core.DEFAULT_MAX_MESSAGE_SIZE

# A payload up to this size is copied behind its header into one write;
# a larger one goes as header plus its first chunk, then the rest.
_JOIN_LIMIT = 64 * 1024


class MessageRequestHandler(StreamRequestHandler):
    """A StreamRequestHandler speaking length-prefixed messages.

    Override handle_message(message): it is called for each message the
    client sends, and when it returns a bytes-like object, that is sent
    back as a message.  handle() returns when the client closes between
    messages; a message cut short (EOFError) or longer than
    max_message_size (ValueError) goes to the server's handle_error().
    Or override handle() and use read_message(), messages() and
    write_message() directly.
    """

    max_message_size = DEFAULT_MAX_MESSAGE_SIZE

    def read_message(self):
        """The next message, or None when the client closed between messages."""
        if type(self.rfile) is _core.SocketReader:
            return self.rfile.read_message(self.max_message_size)
        return _read_message(self.rfile.read, self.max_message_size)

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

    def handle_message(self, message):
        """Called with each message's payload (bytes); return bytes to
        reply with, or None to send nothing."""
        raise NotImplementedError(
            f"{type(self).__name__} must override handle_message() or handle()"
        )


def send_message(sock, data):
    """Send data over a connected stream socket as one length-prefixed
    message; returns the payload length.  The socket's timeout covers the
    whole call, as for sendall()."""
    if type(sock) is socket.socket and not cooperative():
        return _core.send_message(sock, data)
    return _write_message(sock.sendall, data)


def recv_message(sock, max_size=DEFAULT_MAX_MESSAGE_SIZE):
    """Receive one length-prefixed message from a connected stream socket,
    reading no byte past it.  Returns the payload, or None when the peer
    closed before its first byte.  EOFError when the peer closed in the
    middle of a message; ValueError, without reading the payload, when its
    length exceeds max_size.  The socket's timeout bounds each wait."""
    if type(sock) is socket.socket and not cooperative():
        return _core.recv_message(sock, max_size)
    return _read_message(sock.recv, max_size)


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
