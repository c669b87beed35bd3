import socket
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

__all__ = [
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyProtocolMixIn",
    "parse_proxy_header",
    "read_proxy_header",
]

class ProxyHeaderError(ValueError):
    """The connection does not start with a valid PROXY protocol header."""

@dataclass(frozen=True)
class ProxyHeader:
    """A PROXY protocol header (version 1 or 2)."""

    version: int
    length: int
    command: str
    family: int
    protocol: int
    source: Any
    destination: Any
    tlvs: tuple[tuple[int, bytes], ...] = ()
    def client_address(self, real: Any, family: Optional[int] = None) -> Any:
        """source (in the shape of family, when given) for a PROXY header
        over TCP or UDP, else real; ProxyHeaderError when family cannot
        hold the source."""

def parse_proxy_header(data: bytes) -> Union[ProxyHeader, int]:
    """The header data starts with, or how many more bytes at least belong
    to it; ProxyHeaderError when data cannot start a header."""

def read_proxy_header(sock: socket.socket, timeout: Optional[float] = 3.0) -> ProxyHeader:
    """Read the PROXY header that starts a connection, and nothing after it."""

def peer_allowed(peers: Optional[Iterable[str]], client_address: Any) -> bool:
    """Whether client_address is in the allow-list peers (None: all)."""

class ProxyProtocolMixIn:
    """Mix-in for stream servers behind a proxy that sends the PROXY header."""

    proxy_protocol_peers: Optional[Iterable[str]]
    proxy_header_timeout: Optional[float]
    def verify_request(self, request: Any, client_address: Any) -> bool: ...
    def finish_request(self, request: Any, client_address: Any) -> None: ...
