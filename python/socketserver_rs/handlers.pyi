from io import BufferedIOBase
from socket import socket as _socket
from typing import Any, ClassVar

from socketserver_rs.servers import BaseServer, _RequestType, _RetAddress

__all__ = ["BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler"]

class BaseRequestHandler:
    # Any rather than _RequestType, as the standard module's stubs have it:
    # a handler knows which of the two kinds it serves.
    request: Any
    client_address: _RetAddress
    server: BaseServer
    def __init__(
        self, request: _RequestType, client_address: _RetAddress, server: BaseServer
    ) -> None: ...
    def setup(self) -> None: ...
    def handle(self) -> None: ...
    def finish(self) -> None: ...

class StreamRequestHandler(BaseRequestHandler):
    rbufsize: ClassVar[int]
    wbufsize: ClassVar[int]
    timeout: ClassVar[float | None]
    disable_nagle_algorithm: ClassVar[bool]
    connection: Any
    rfile: BufferedIOBase
    wfile: BufferedIOBase

class DatagramRequestHandler(BaseRequestHandler):
    packet: bytes
    socket: _socket
    rfile: BufferedIOBase
    wfile: BufferedIOBase
