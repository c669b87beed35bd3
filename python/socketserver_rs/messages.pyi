from collections.abc import Iterator
from socket import socket
from types import TracebackType
from typing import Final, SupportsIndex

from _typeshed import ReadableBuffer, StrOrBytesPath
from typing_extensions import Self, TypeAlias

from socketserver_rs.handlers import StreamRequestHandler

__all__ = [
    "MessageRequestHandler",
    "MessageClient",
    "send_message",
    "recv_message",
    "recv_exactly",
    "DEFAULT_MAX_MESSAGE_SIZE",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 16777216

# What the servers' server_address is typed as: (host, port), an IPv6
# server's (host, port, flowinfo, scope_id), or a Unix socket's path.
_Address: TypeAlias = (
    tuple[str | bytes | bytearray, int]
    | tuple[str | bytes | bytearray, int, int, int]
    | StrOrBytesPath
    | ReadableBuffer
)

class MessageRequestHandler(StreamRequestHandler):
    max_message_size: int
    close_connection: bool
    idle_timeout: float | None
    event_driven: bool
    def read_message(self) -> bytes | None: ...
    def write_message(self, data: ReadableBuffer) -> int: ...
    def messages(self) -> Iterator[bytes]: ...
    def handle(self) -> None: ...
    def handle_message(self, message: bytes) -> ReadableBuffer | None: ...

def send_message(sock: socket, data: ReadableBuffer) -> int: ...
def recv_message(sock: socket, max_size: int = 16777216) -> bytes | None: ...
def recv_exactly(sock: socket, n: SupportsIndex) -> bytes:
    """Receive exactly n bytes; EOFError (saying how many arrived) when the
    peer closes first, ValueError when n is negative."""

class MessageClient:
    """A connection to a server speaking length-prefixed messages: (host,
    port) for TCP, a path for a Unix socket. An error while sending or
    receiving closes it (a TypeError for data not bytes-like excepted);
    timeouts raise TimeoutError on every version."""

    max_message_size: int
    socket: socket
    def __init__(
        self,
        address: _Address,
        timeout: float | None = None,
        *,
        max_message_size: int | None = None,
    ) -> None: ...
    def send_message(self, data: ReadableBuffer) -> int: ...
    def recv_message(self) -> bytes | None: ...
    def request(self, data: ReadableBuffer) -> bytes:
        """Send one message and return the reply; ConnectionResetError when
        the server closes instead of replying."""
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
