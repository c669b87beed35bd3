"""The Rust core of socketserver_rs. Private: use the socketserver_rs package."""

from typing import Any, Callable, Iterator, NoReturn, Optional, final, type_check_only

__all__ = [
    "__version__",
    "STOP",
    "IDLE",
    "READY",
    "CLOSED",
    "set_reuse",
    "ServeLoop",
    "FastPath",
    "hooks_changed",
    "hooks_version",
    "class_tag",
    "MessageLoop",
    "Message",
    "EVENT_OPENED",
    "EVENT_MESSAGE",
    "EVENT_CLOSED",
    "EVENT_FAILED",
    "EVENT_EXPIRED",
    "WorkerPool",
    "ServerStats",
    "Worker",
    "SocketReader",
    "SocketWriter",
    "send_message",
    "recv_message",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MESSAGE_HEADER_SIZE",
    "encode_header",
    "decode_header",
    "check_max_size",
    "body_read_size",
    "truncated_body",
    "parse_proxy_header",
    "PROXY_V1_MAX",
]
__version__: str

STOP: int
IDLE: int
READY: int
CLOSED: int

def set_reuse(fd: int, address: bool, port: bool) -> None:
    """Set SO_REUSEADDR / SO_REUSEPORT on a socket before it is bound."""

@final
class ServeLoop:
    """One per server: the shutdown request, the wake descriptor and the
    threads currently inside serve_forever()."""

    def __new__(cls, logger: Any, stats: ServerStats) -> ServeLoop:
        """logger: where accept failures and dropped requests are reported
        (a logging.Logger, taken when the server is built); stats: the
        server's counters."""
    @property
    def stats(self) -> ServerStats: ...
    def enter(self) -> None:
        """Register the calling thread as running serve_forever()."""
    def leave(self) -> None:
        """Unregister the calling thread; once none serves, clear the
        shutdown request and release whoever waits in shutdown()."""
    def wait(
        self,
        fd: int,
        poll_interval: Optional[float],
        pool: Optional[WorkerPool] = None,
        sock: Optional[Any] = None,
        also: Optional[int] = None,
    ) -> int:
        """READY when fd is readable, IDLE when poll_interval passed (or a
        bounded pool stayed full, or also became readable), STOP once
        shutdown is requested, CLOSED once fd is closed (or sock, the socket
        owning it, no longer does). GIL released; signals checked. Backs off
        after accept() ran out of resources; while pool is at its bound,
        waits for a free worker instead of the listener."""
    def accept_failed(self, errno: int) -> None:
        """Report an accept() failure (backs off on EMFILE and the like,
        logging once)."""
    def shutdown(self) -> None:
        """Request shutdown and wait until no thread serves; RuntimeError
        from the serving thread itself."""
    def request_shutdown(self, requested: bool) -> None:
        """Set or clear the shutdown request without waiting."""
    @property
    def shutdown_requested(self) -> bool: ...
    @property
    def serving(self) -> bool: ...
    def wait_readable(
        self, fd: int, timeout: Optional[float], sock: Optional[Any] = None
    ) -> Optional[bool]:
        """Wait until fd is readable (True) or timeout seconds pass (None:
        no limit; False); None once fd (or sock, as for wait()) is closed."""

def hooks_changed() -> None:
    """A request hook was set or deleted on a server."""

def hooks_version() -> int:
    """How many times hooks_changed() was called."""

def class_tag(server: Any) -> int:
    """The version tag of server's class: it changes when an attribute of
    the class or of a base is set or deleted."""

@final
class FastPath:
    """Takes requests from the server socket without the Python hooks."""

    def __new__(
        cls,
        socket: Any,
        stream: bool,
        max_packet_size: int,
        serve_loop: ServeLoop,
        nodelay: bool,
        hooks_version: int,
    ) -> FastPath: ...
    @property
    def stream(self) -> bool:
        """Whether requests are connections (else datagrams)."""
    def take(self, server: Any = None, since: int = 0) -> Optional[tuple[Any, Any]]:
        """One (request, client_address), or None when none could be taken
        (or shutdown was requested, or hooks_version() moved since this was
        built, or server's class_tag() is no longer since)."""
    def dispatch(
        self, server: Any, pool: WorkerPool, runner: Callable[[Any, Any, Any], Any]
    ) -> Optional[tuple[Any, Any, Optional[BaseException]]]:
        """Queue the waiting requests on pool as runner(server, request,
        client_address); return (request, client_address, error) for one it
        did not take (error: what starting its worker raised; None: the pool
        was closed), or None."""

EVENT_OPENED: int
EVENT_MESSAGE: int
EVENT_CLOSED: int
EVENT_FAILED: int
EVENT_EXPIRED: int

@final
class Message:
    """A large message's payload, made bytes by take() on the thread that
    handles it (so they are allocated and freed there)."""

    def take(self) -> bytes:
        """The payload as bytes; RuntimeError if it was taken already."""
    def __len__(self) -> int: ...

@final
class MessageLoop:
    """The readiness loop of a server whose handlers answer framed
    messages: accepts, reads and decodes messages, writes replies, and
    reports what happened; handlers run in Python."""

    def __new__(
        cls,
        socket: Any,
        serve_loop: ServeLoop,
        max_message_size: int,
        nodelay: bool,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
    ) -> MessageLoop: ...
    def wait(
        self, timeout: Optional[float] = None, draining: bool = False
    ) -> Optional[list[tuple[int, int, Any]]]:
        """Wait up to timeout seconds (None: no limit); the events, as
        (kind, conn_id, payload): EVENT_OPENED with (socket, client_address),
        EVENT_MESSAGE with the payload (bytes, or a Message from 16 KiB on:
        its take() makes the bytes), EVENT_CLOSED with None (the
        client closed between messages), EVENT_EXPIRED with why (a str: a
        deadline passed), EVENT_FAILED with the exception
        that ended the connection. Empty when the time passed; None once
        shutdown is requested, unless draining (drain() serves what is left
        after the shutdown). GIL released, signals checked every 100 ms.
        An ended connection is no longer watched: its socket is the
        caller's to close."""
    def reply(self, conn_id: int, data: Optional[bytes], close: bool = False) -> bool:
        """The handler of conn_id is done with its message: send data as a
        message (None: no reply) and read the next one, or with close end
        the connection once data is out (reported as CLOSED). Thread-safe. False
        when the connection was closed meanwhile (close_all()); an error
        sending is raised, the connection left for close()."""
    def close(self, conn_id: int) -> bool:
        """Stop watching conn_id before its socket is closed; whether it
        was still open. Thread-safe."""
    def close_all(self) -> list[tuple[int, bool]]:
        """Forget every connection: (conn_id, busy) for each, busy when its
        handler still has a message (its reply() then returns False)."""
    def stop_accepting(self) -> None:
        """Stop watching the listening socket (before drain() closes it)."""
    def idle(self) -> list[int]:
        """The connections between messages: no message with their handler,
        nothing received of the next one (by the loop or the system), no
        reply left to send."""
    @property
    def connections(self) -> int:
        """Connections open."""
    @property
    def buffered_bytes(self) -> int:
        """Bytes held for all connections: received and not yet delivered,
        plus replies not yet sent."""
    @property
    def listener_fd(self) -> int:
        """The listening socket's descriptor."""

@final
class ServerStats:
    """A server's live counters (atomics in the core)."""

    def __new__(cls) -> ServerStats: ...
    def request_taken(self) -> None: ...
    def request_finished(self) -> None: ...
    def error(self) -> None: ...
    def count_received(self, n: int) -> None:
        """Bytes received through a file the core does not make (over TLS)."""
    def count_sent(self, n: int) -> None:
        """Bytes sent through a file the core does not make (over TLS)."""
    def snapshot(self) -> dict[str, int]:
        """requests_total, requests_active, errors, accept_errors,
        bytes_received, bytes_sent."""

@final
class WorkerPool:
    """Reusable worker threads fed by a channel."""

    def __new__(
        cls,
        spawn: Callable[[Worker], Any],
        idle_timeout: float = 10.0,
        max_workers: Optional[int] = None,
    ) -> WorkerPool: ...
    def submit(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run func(*args) on an idle worker, or on a new one started with
        spawn(worker); at the bound, wait for a worker to free. RuntimeError
        once closed; what spawn raised if no thread could start."""
    @property
    def is_full(self) -> bool:
        """Every worker busy and no more may start."""
    @property
    def max_workers(self) -> Optional[int]: ...
    def close(self) -> None:
        """Accept no more work; workers leave once the queue is empty."""
    @property
    def size(self) -> int: ...
    @property
    def idle(self) -> int:
        """Workers waiting for a job."""

@final
class Worker:
    """One worker thread's view of its pool."""

    def take(self) -> Optional[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """The next job, or None when the worker should leave."""
    def exit(self) -> None:
        """The worker thread is ending."""

@type_check_only
class _SocketFile:
    """The io methods both socket files have (src/socket_file.rs)."""

    @property
    def closed(self) -> bool: ...
    @property
    def mode(self) -> str: ...
    @property
    def name(self) -> int: ...
    def fileno(self) -> int: ...
    def isatty(self) -> bool: ...
    def readable(self) -> bool: ...
    def writable(self) -> bool: ...
    def seekable(self) -> bool: ...
    def seek(self, *_args: Any) -> int: ...
    def tell(self) -> int: ...
    def truncate(self, *_args: Any) -> int: ...
    def __exit__(self, *_args: Any) -> None: ...
    def close(self) -> None:
        """Close the file, and raw if it was asked for."""
    @property
    def _sock(self) -> Any:
        """The socket, as the standard library's socket files keep it."""
    @property
    def raw(self) -> Any:
        """A socket.SocketIO over the socket (made when first asked for)."""
    def detach(self) -> Any:
        """Flush and let go of the file; return raw, which stays open."""

@final
class SocketReader(_SocketFile):
    """``StreamRequestHandler.rfile``: behaves as ``sock.makefile('rb',
    bufsize)`` (an io.BufferedReader; unbuffered with bufsize 0, reading no
    byte ahead), reading with the GIL released and honouring the socket's
    timeout."""

    def __new__(
        cls, sock: Any, bufsize: int = ..., stats: Optional[ServerStats] = None
    ) -> SocketReader: ...
    def read(self, size: Optional[int] = None) -> Optional[bytes]: ...
    def read1(self, size: Optional[int] = None) -> Optional[bytes]: ...
    def readinto(self, b: Any) -> Optional[int]: ...
    def readinto1(self, b: Any) -> Optional[int]: ...
    def readline(self, size: Optional[int] = None) -> bytes: ...
    def readlines(self, hint: Optional[int] = None) -> list[bytes]: ...
    def peek(self, size: int = 0) -> bytes: ...
    def read_message(self, max_size: int = ...) -> Optional[bytes]:
        """One length-prefixed message (4-byte big-endian length, then the
        payload), or None when the peer closed before its first byte.
        max_size defaults to DEFAULT_MAX_MESSAGE_SIZE.
        EOFError when the peer closed in the middle of it; ValueError,
        without reading the payload, when the length exceeds max_size."""
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...
    def flush(self) -> None: ...
    def write(self, *_args: Any) -> NoReturn:
        """Not writable: io.UnsupportedOperation."""
    def writelines(self, *_args: Any) -> NoReturn:
        """Not writable: io.UnsupportedOperation."""
    def __enter__(self) -> SocketReader: ...
    @property
    def idle(self) -> bool:
        """A read waits, with nothing buffered, for the start of a line or
        a message (the handler is between requests)."""

@final
class SocketWriter(_SocketFile):
    """``StreamRequestHandler.wfile``: with bufsize 0 every write is a
    sendall (as socketserver._SocketWriter); otherwise a BufferedWriter
    over the connection. Writes with the GIL released, honouring the
    socket's timeout; a signal handler runs during a long send."""

    def __new__(
        cls,
        sock: Any,
        bufsize: int = 0,
        stats: Optional[ServerStats] = None,
        reader: Optional[SocketReader] = None,
    ) -> SocketWriter: ...
    def write(self, b: Any) -> int: ...
    def write_message(self, data: Any) -> int:
        """Write data as one length-prefixed message, header and payload in
        a single send (or into the buffer); returns len(data) in bytes."""
    def writelines(self, lines: Any) -> None: ...
    # Not readable: io.UnsupportedOperation, as BufferedWriter raises it.
    def read(self, *_args: Any) -> NoReturn: ...
    def read1(self, *_args: Any) -> NoReturn: ...
    def readinto(self, *_args: Any) -> NoReturn: ...
    def readinto1(self, *_args: Any) -> NoReturn: ...
    def readline(self, *_args: Any) -> NoReturn: ...
    def readlines(self, *_args: Any) -> NoReturn: ...
    def __iter__(self) -> SocketWriter: ...
    def __next__(self) -> NoReturn: ...
    def flush(self) -> None: ...
    def __enter__(self) -> SocketWriter: ...

def send_message(sock: Any, data: Any) -> int:
    """Send data over a connected stream socket as one length-prefixed
    message; returns the payload length."""

def recv_message(sock: Any, max_size: int = ...) -> Optional[bytes]:
    """Receive one length-prefixed message from a connected stream socket
    (None at a clean EOF), reading no byte past it; max_size defaults to
    DEFAULT_MAX_MESSAGE_SIZE."""

# The message format without I/O (src/stream/codec.rs), for the Python
# fallback in messages.py.

DEFAULT_MAX_MESSAGE_SIZE: int
"""The longest payload accepted unless the caller says otherwise (16 MiB)."""
MESSAGE_HEADER_SIZE: int
"""Bytes in a message header (4: a big-endian unsigned payload length)."""

def encode_header(length: int) -> bytes:
    """The header of a payload of length bytes; ValueError when that does
    not fit in 4 bytes."""

def decode_header(header: bytes, max_size: int) -> int:
    """The payload length a header announces. EOFError when it is shorter
    than 4 bytes (the peer closed in its middle); ValueError when the
    length exceeds max_size or max_size is negative."""

def check_max_size(max_size: int) -> None:
    """ValueError when max_size is negative."""

def body_read_size(received: int, length: int) -> int:
    """How many bytes to read next of a payload of length bytes, once
    received of them have arrived."""

def truncated_body(received: int, length: int) -> EOFError:
    """The EOFError for a payload cut short after received of length bytes."""

PROXY_V1_MAX: int
"""The longest PROXY protocol version 1 header, CRLF included (107)."""

def parse_proxy_header(
    data: bytes,
) -> int | tuple[int, int, str, str, str, Any, Any, list[tuple[int, bytes]]]:
    """The PROXY protocol header (version 1 or 2) data starts with, as
    (version, length, command, family, protocol, source, destination, tlvs);
    or, while incomplete, how many more bytes at least belong to it.
    ValueError as soon as data cannot start a header."""
