import socket

from socketserver_rs.arrivals import Wait
from socketserver_rs.servers import BaseServer, _RetAddress

__all__ = [
    "accept_deferring_handshake",
    "complete_handshake",
    "defers_handshakes",
    "handshake_owed",
]

def defers_handshakes(listener: socket.socket) -> bool: ...
def accept_deferring_handshake(
    listener: socket.socket,
) -> tuple[socket.socket, _RetAddress] | None: ...
def complete_handshake(
    server: BaseServer, request: socket.socket, client_address: _RetAddress
) -> bool: ...
def handshake_owed(
    server: BaseServer, request: socket.socket, client_address: _RetAddress
) -> Wait | None: ...
