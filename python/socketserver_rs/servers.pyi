import ssl
import sys
import types
from collections.abc import Callable
from socket import socket as _socket
from typing import Any, ClassVar

from _typeshed import ReadableBuffer
from typing_extensions import Self, TypeAlias

from socketserver_rs.handlers import BaseRequestHandler

__all__ = ["BaseServer", "TCPServer", "UDPServer"]
if sys.platform != "win32":
    __all__ += ["UnixStreamServer", "UnixDatagramServer"]

# The standard module's types, as its stubs spell them: a request is a
# connection, or a datagram and the socket it came in on; addresses are what
# the socket module takes and returns.
_RequestType: TypeAlias = _socket | tuple[bytes, _socket]
_Address: TypeAlias = tuple[Any, ...] | str | ReadableBuffer
_RetAddress: TypeAlias = Any
_AfUnixAddress: TypeAlias = str | ReadableBuffer
_AfInetAddress: TypeAlias = tuple[str | bytes | bytearray, int]
_AfInet6Address: TypeAlias = tuple[str | bytes | bytearray, int, int, int]

class BaseServer:
    server_address: _Address
    timeout: float | None
    quiet_disconnects: bool
    RequestHandlerClass: Callable[[Any, _RetAddress, Self], BaseRequestHandler]
    def __init__(
        self,
        server_address: _Address,
        RequestHandlerClass: Callable[[Any, _RetAddress, Self], BaseRequestHandler],
    ) -> None: ...
    def server_activate(self) -> None: ...
    def serve_forever(self, poll_interval: float = 0.5) -> None: ...
    def shutdown(self) -> None: ...
    def service_actions(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def drain(self, timeout: float) -> int: ...
    def handle_request(self) -> None: ...
    # Not defined here: each server class supplies it.
    def get_request(self) -> tuple[Any, Any]: ...
    def handle_timeout(self) -> None: ...
    def verify_request(self, request: _RequestType, client_address: _RetAddress) -> bool: ...
    def process_request(self, request: _RequestType, client_address: _RetAddress) -> None: ...
    def server_close(self) -> None: ...
    def finish_request(self, request: _RequestType, client_address: _RetAddress) -> None: ...
    def shutdown_request(self, request: _RequestType) -> None: ...
    def close_request(self, request: _RequestType) -> None: ...
    def handle_error(self, request: _RequestType, client_address: _RetAddress) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: types.TracebackType | None,
    ) -> None: ...

class TCPServer(BaseServer):
    address_family: int
    socket_type: int
    request_queue_size: int
    allow_reuse_address: bool
    # The standard module has it from Python 3.11 on; this one on every version.
    allow_reuse_port: bool
    ssl_context: ssl.SSLContext | None
    dualstack_ipv6: bool
    socket: _socket
    server_address: _AfInetAddress | _AfInet6Address
    def __init__(
        self,
        server_address: _AfInetAddress | _AfInet6Address,
        RequestHandlerClass: Callable[[Any, _RetAddress, Self], BaseRequestHandler],
        bind_and_activate: bool = True,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None: ...
    def server_bind(self) -> None: ...
    def fileno(self) -> int: ...
    def get_request(self) -> tuple[_socket, _RetAddress]: ...

class UDPServer(TCPServer):
    max_packet_size: ClassVar[int]
    def get_request(self) -> tuple[tuple[bytes, _socket], _RetAddress]: ...  # type: ignore[override]

if sys.platform != "win32":
    class UnixStreamServer(TCPServer):
        server_address: _AfUnixAddress  # type: ignore[assignment]
        def __init__(
            self,
            server_address: _AfUnixAddress,
            RequestHandlerClass: Callable[[Any, _RetAddress, Self], BaseRequestHandler],
            bind_and_activate: bool = True,
            *,
            ssl_context: ssl.SSLContext | None = None,
        ) -> None: ...

    class UnixDatagramServer(UDPServer):
        server_address: _AfUnixAddress  # type: ignore[assignment]
        def __init__(
            self,
            server_address: _AfUnixAddress,
            RequestHandlerClass: Callable[[Any, _RetAddress, Self], BaseRequestHandler],
            bind_and_activate: bool = True,
            *,
            ssl_context: ssl.SSLContext | None = None,
        ) -> None: ...
