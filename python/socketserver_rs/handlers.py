"""The request handler classes."""

import io
import socket
from io import BufferedIOBase, BytesIO

from socketserver_rs import _core, _state
from socketserver_rs._cooperative import cooperative

__all__ = ["BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler"]


class BaseRequestHandler:
    """Base class for request handler classes.

    This class is instantiated for each request to be handled.  The
    constructor sets the instance variables request, client_address
    and server, and then calls the handle() method.  To implement a
    specific service, all you need to do is to derive a class which
    defines a handle() method.

    The handle() method can find the request as self.request, the
    client address as self.client_address, and the server (in case it
    needs access to per-server information) as self.server.  Since a
    separate instance is created for each request, the handle() method
    can define other arbitrary instance variables.
    """

    def __init__(self, request, client_address, server):
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self):
        pass

    def handle(self):
        pass

    def finish(self):
        pass


class StreamRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for stream sockets.

    Over a plain socket.socket, rfile and wfile are the core's buffered
    reader and writer; over anything else (an SSL socket, say) they are
    what makefile() makes, as in the standard library, counting their
    bytes for the server's stats().
    """

    # Default buffer sizes for rfile, wfile.
    # We default rfile to buffered because otherwise it could be
    # really slow for large data (a getc() call per byte); we make
    # wfile unbuffered because (a) often after a write() we want to
    # read and we need to flush the line; (b) big writes to unbuffered
    # files are typically optimized by stdio even when big reads
    # aren't.
    rbufsize = -1
    wbufsize = 0

    # A timeout to apply to the request socket, if not None.
    timeout = None

    # Disable nagle algorithm for this socket, if True.
    # Use only when wbufsize != 0, to avoid small packets.
    disable_nagle_algorithm = False

    def setup(self):
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        elif _keeps_nagle(type(self)) and getattr(self.connection, "family", None) in _TCP:
            # The server set TCP_NODELAY when it accepted the connection.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, False)
        if (
            type(self.connection) is socket.socket
            and not cooperative()
            and _core_buffering(self.rbufsize)
            and _core_buffering(self.wbufsize)
        ):
            server = getattr(self, "server", None)
            stats = _stats_of(server)
            self.rfile = _core.SocketReader(self.connection, self.rbufsize, stats)
            # The rfile learns when a reply went out: waiting for a line
            # after that, the handler is between requests (_state.py).
            self.wfile = _core.SocketWriter(self.connection, self.wbufsize, stats, self.rfile)
            _track(server, self.connection, self.rfile)
            return
        server = getattr(self, "server", None)
        counted = isinstance(self.connection, socket.socket) and not cooperative()
        stats = _stats_of(server) if counted else None
        self.rfile = _makefile(self.connection, "rb", self.rbufsize, stats)
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection, stats)
        else:
            self.wfile = _makefile(self.connection, "wb", self.wbufsize, stats)
        _track(server, self.connection, None)

    def finish(self):
        try:
            self._finish_files()
        finally:
            _untrack(getattr(self, "server", None), self.connection)

    def _finish_files(self):
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                # A final socket error may have occurred here, such as
                # the local error ECONNABORTED.
                pass
        self.wfile.close()
        self.rfile.close()


_TCP = (socket.AF_INET, socket.AF_INET6)


def _keeps_nagle(handler_class):
    """Whether the handler class asks for Nagle's algorithm with a
    disable_nagle_algorithm = False of its own (or of a class between it and
    StreamRequestHandler), as the standard module's connections have it.
    Left as inherited, connections keep the TCP_NODELAY the server set."""
    owner = next(
        (cls for cls in handler_class.__mro__ if "disable_nagle_algorithm" in vars(cls)), None
    )
    return owner not in (None, StreamRequestHandler) and not handler_class.disable_nagle_algorithm


def _stats_of(server):
    # The server's counters, if it is one of ours that has them.
    state = _state.existing(server)
    return state.stats if state is not None else None


def _track(server, connection, reader):
    # The server's open connections (see _connections.py): the connection
    # and, over the core's rfile, its reader.
    state = _state.existing(server)
    if state is not None:
        state.connections.track(connection, reader)


def _untrack(server, connection):
    state = _state.existing(server)
    if state is not None:
        state.connections.untrack(connection)


def _makefile(sock, mode, bufsize, stats):
    """sock.makefile(mode, bufsize), as socket.makefile() builds a binary
    one, with its bytes counted in `stats` (if not None). Sizes it may
    treat apart (1: line buffering) are left to makefile()."""
    if stats is None or type(bufsize) is not int or bufsize == 1:
        return sock.makefile(mode, bufsize)
    raw = _CountingSocketIO(sock, mode[0], stats)
    sock._io_refs += 1
    if bufsize < 0:
        bufsize = io.DEFAULT_BUFFER_SIZE
    if bufsize == 0:
        return raw
    return (io.BufferedReader if mode == "rb" else io.BufferedWriter)(raw, bufsize)


class _CountingSocketIO(socket.SocketIO):
    """A SocketIO counting the bytes it moves in a server's stats."""

    def __init__(self, sock, mode, stats):
        super().__init__(sock, mode)
        self._stats = stats

    def readinto(self, b):
        n = super().readinto(b)
        if n:
            self._stats.count_received(n)
        return n

    def write(self, b):
        n = super().write(b)
        if n:
            self._stats.count_sent(n)
        return n


def _core_buffering(size):
    # Sizes the core's files take as makefile() does; makefile() handles the
    # rest itself (None, and 1, which it warns about in binary mode).
    return type(size) is int and size != 1


class _SocketWriter(BufferedIOBase):
    """Simple writable BufferedIOBase implementation for a socket

    Does not hold data in a buffer, avoiding any need to call flush()."""

    def __init__(self, sock, stats=None):
        self._sock = sock
        self._stats = stats

    def writable(self):
        return True

    def write(self, b):
        self._sock.sendall(b)
        with memoryview(b) as view:
            if self._stats is not None:
                self._stats.count_sent(view.nbytes)
            return view.nbytes

    def fileno(self):
        return self._sock.fileno()


class DatagramRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for datagram sockets."""

    def setup(self):
        self.packet, self.socket = self.request
        self.rfile = BytesIO(self.packet)
        self.wfile = BytesIO()

    def finish(self):
        self.socket.sendto(self.wfile.getvalue(), self.client_address)


# The core's reader and writer are file objects of these kinds.
BufferedIOBase.register(_core.SocketReader)
BufferedIOBase.register(_core.SocketWriter)
