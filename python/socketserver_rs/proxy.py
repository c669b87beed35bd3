"""The PROXY protocol (versions 1 and 2): the real client behind a load balancer.

A proxy such as HAProxy (``send-proxy`` / ``send-proxy-v2``), nginx's stream
module (``proxy_protocol on``), AWS's Network Load Balancer or Envoy opens
each connection to the server with a short header that names the client it
relays. ``ProxyProtocolMixIn`` reads that header before the handler runs and
gives the handler the client's address as ``client_address``::

    class Server(ProxyProtocolMixIn, ThreadingTCPServer):
        proxy_protocol_peers = ("10.0.0.0/8",)  # where the balancers are

It is opt-in and never guessed: a server with the mix-in requires the header
on every connection, and a server without it never looks for one. The
header is parsed by the Rust core (src/proxy.rs), read by serve_forever() in
non-blocking steps before process_request() (see _arrivals.py: a stalled
header holds no worker and stops no server), and read exactly: the bytes
after it are left for the handler.

- A connection from a peer outside ``proxy_protocol_peers`` is refused in
  ``verify_request()`` (closed without reading) and logged. The default
  allows loopback only; ``None`` allows every peer, for a server that only
  the proxy can reach. Unix socket servers accept every peer (the socket
  file's permissions decide who connects).
- A missing, malformed or truncated header, or one that takes longer than
  ``proxy_header_timeout`` seconds, closes the connection and is logged; the
  handler never runs.
- PROXY headers replace ``client_address`` with the source they name, in
  the shape the server's family gives (ProxyHeader.client_address()): an
  IPv4 client on an IPv6 server as ``("::ffff:a.b.c.d", port, 0, 0)``; on
  an IPv4 server an IPv4-mapped IPv6 client as IPv4, another IPv6 client
  refused (closed and logged). UNIX headers, LOCAL ones (the proxy's own
  health checks) and UNKNOWN ones keep the connection's real peer; UDP and
  UNIX datagram headers are refused.
- ``verify_request()`` runs before the header is read, so it sees the
  proxy's address; check the client in the handler.

Each log line goes to the ``socketserver_rs`` logger at WARNING.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import selectors
import socket
import time
import weakref
from dataclasses import dataclass
from typing import Any, Generator, Iterable, Optional, Union

from socketserver_rs import _core
from socketserver_rs._arrivals import Wait

__all__ = [
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyProtocolMixIn",
    "parse_proxy_header",
    "read_proxy_header",
]

_logger = logging.getLogger("socketserver_rs")

# What one peek asks for: every version 1 header, and a version 2 one with
# its addresses and some TLVs, fit (the size the protocol's text suggests).
_PEEK_SIZE = 536

_FAMILIES = {
    "AF_UNSPEC": socket.AF_UNSPEC,
    "AF_INET": socket.AF_INET,
    "AF_INET6": socket.AF_INET6,
    "AF_UNIX": getattr(socket, "AF_UNIX", 1),
}
_PROTOCOLS = {"UNSPEC": 0, "STREAM": socket.SOCK_STREAM, "DGRAM": socket.SOCK_DGRAM}


class ProxyHeaderError(ValueError):
    """The connection does not start with a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """A PROXY protocol header.

    ``command`` is ``"PROXY"`` or ``"LOCAL"``; ``family`` is
    ``socket.AF_UNSPEC`` for version 1's UNKNOWN and for LOCAL headers;
    ``source`` and ``destination`` are ``None`` then, else addresses as
    ``socket.accept()`` gives them (IPv6 ones as ``(host, port, 0, 0)``);
    ``tlvs`` holds version 2's extra fields as ``(type, value)`` pairs.
    """

    version: int
    length: int
    command: str
    family: int
    protocol: int
    source: Any
    destination: Any
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def client_address(self, real: Any, family: Optional[int] = None) -> Any:
        """The address to serve as the client's.

        ``real`` (the connection's own peer) for LOCAL, UNKNOWN and UNIX
        headers; else ``source``, in the shape of ``family`` when it is
        given: for ``AF_INET6`` an IPv4 source becomes
        ``("::ffff:a.b.c.d", port, 0, 0)``, as a dual-stack socket's
        ``accept()`` gives it; for ``AF_INET`` an IPv4-mapped IPv6 source
        becomes IPv4, and any other IPv6 source raises ProxyHeaderError (no
        IPv4 address names that client).
        """
        if self.command != "PROXY" or self.family not in (socket.AF_INET, socket.AF_INET6):
            return real
        host, port = self.source[:2]
        if family == socket.AF_INET6 and self.family == socket.AF_INET:
            return ("::ffff:" + host, port, 0, 0)
        if family == socket.AF_INET and self.family == socket.AF_INET6:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
            if mapped is None:
                raise ProxyHeaderError(f"an IPv6 client ({host}) cannot be served as IPv4")
            return (str(mapped), port)
        return self.source


def _address(family: int, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes):
        # A Unix path; an abstract one (leading NUL) stays bytes, as Python
        # reports it.
        return value if value[:1] == b"\0" else os.fsdecode(value)
    host, port = value
    return (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)


def parse_proxy_header(data: bytes) -> Union[ProxyHeader, int]:
    """Parse the start of a connection's bytes.

    Returns the header when ``data`` starts with a whole one (it takes the
    first ``header.length`` bytes), or, while it is incomplete, how many
    more bytes at least belong to it: reading at most that many never takes
    a byte after the header. Raises ProxyHeaderError as soon as ``data``
    cannot be the start of a header.
    """
    try:
        parsed = _core.parse_proxy_header(data)
    except ValueError as err:
        raise ProxyHeaderError(str(err)) from None
    if isinstance(parsed, int):
        return parsed
    version, length, command, family_name, protocol, source, destination, tlvs = parsed
    family = _FAMILIES[family_name]
    if command == "LOCAL":
        family = socket.AF_UNSPEC
    return ProxyHeader(
        version=version,
        length=length,
        command=command,
        family=family,
        protocol=_PROTOCOLS[protocol],
        source=_address(family, source),
        destination=_address(family, destination),
        tlvs=tuple(tlvs),
    )


def read_proxy_header(sock: socket.socket, timeout: Optional[float] = 3.0) -> ProxyHeader:
    """Read the PROXY header that starts a connection, and nothing after it.

    A plain socket is peeked at, then exactly the header's bytes are
    consumed (usually two calls); other sockets are read in steps that
    never pass the header's end. ``timeout`` bounds the whole read
    (``socket.timeout``, a ``TimeoutError``, when it runs out); the
    socket's own timeout is restored afterwards. Raises ProxyHeaderError
    for a malformed header or a peer that closes in its middle.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    saved = sock.gettimeout()
    peek = type(sock) is socket.socket
    received = b""
    try:
        while True:
            parsed = parse_proxy_header(received)
            if not isinstance(parsed, int):
                return parsed
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                sock.settimeout(left)
            if not peek:
                chunk = sock.recv(parsed)
                if not chunk:
                    raise ProxyHeaderError("connection closed in the PROXY header")
                received += chunk
                continue
            received = _take_peeked(sock, received, parsed)
    finally:
        try:
            sock.settimeout(saved)
        except OSError:
            pass


def _header_steps(sock: socket.socket) -> Generator[int, None, ProxyHeader]:
    """read_proxy_header() in non-blocking steps on a plain socket: yields
    selectors.EVENT_READ while it waits for bytes, returns the header."""
    saved = sock.gettimeout()
    sock.setblocking(False)
    received = b""
    try:
        while True:
            parsed = parse_proxy_header(received)
            if not isinstance(parsed, int):
                return parsed
            try:
                received = _take_peeked(sock, received, parsed)
            except BlockingIOError:
                yield selectors.EVENT_READ
    finally:
        try:
            sock.settimeout(saved)
        except OSError:
            pass


def _take_peeked(sock: socket.socket, received: bytes, wanted: int) -> bytes:
    # Peek at what waits, then take the header's bytes among it: all of
    # them while the header is still incomplete, else up to its end.
    waiting = sock.recv(max(wanted, _PEEK_SIZE), socket.MSG_PEEK)
    if not waiting:
        raise ProxyHeaderError("connection closed in the PROXY header")
    parsed = parse_proxy_header(received + waiting)
    take = len(waiting) if isinstance(parsed, int) else parsed.length - len(received)
    return received + _recv_exactly(sock, take)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ProxyHeaderError("connection closed in the PROXY header")
        data += chunk
    return data


@functools.lru_cache(maxsize=32)
def _networks(peers: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(peer, strict=False) for peer in peers)


def peer_allowed(peers: Optional[Iterable[str]], client_address: Any) -> bool:
    """Whether a connection from ``client_address`` may send a PROXY header
    under the allow-list ``peers`` (networks such as ``"10.0.0.0/8"`` or
    single addresses; ``None`` allows all)."""
    if peers is None:
        return True
    if not isinstance(client_address, tuple):
        return True  # a Unix socket peer
    try:
        address = ipaddress.ip_address(str(client_address[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(peers)))


class ProxyProtocolMixIn:
    """Mix-in for stream servers behind a proxy that sends the PROXY
    protocol header (version 1 or 2, both accepted). Put it first among
    the bases: ``class Server(ProxyProtocolMixIn, ThreadingTCPServer)``.

    Class variables that may be overridden by derived classes or
    instances:

    - proxy_protocol_peers: the peers allowed to connect (networks or
      addresses as strings; None: every peer). Default: loopback only.
    - proxy_header_timeout: seconds a peer has to send the whole header.

    It overrides verify_request() (the allow-list) and finish_request()
    (the header), so the server's requests take the hooks' path rather
    than the core's fast path. Under serve_forever() the header is read
    before process_request(), among the connections that still owe
    something (see _arrivals.py), so a stalled header holds no worker and
    does not stop a non-threading server.
    """

    proxy_protocol_peers: Optional[Iterable[str]] = ("127.0.0.0/8", "::1/128")
    proxy_header_timeout: Optional[float] = 3.0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse (close and log) a peer outside proxy_protocol_peers, then
        ask the server's own verify_request()."""
        if getattr(self, "socket_type", socket.SOCK_STREAM) != socket.SOCK_STREAM:
            raise TypeError("ProxyProtocolMixIn serves stream sockets only")
        if not peer_allowed(self.proxy_protocol_peers, client_address):
            _logger.warning(
                "connection from %s refused: not in proxy_protocol_peers", client_address
            )
            return False
        return super().verify_request(request, client_address)  # type: ignore[misc,no-any-return]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Run the handler with the client's address from the PROXY header,
        reading the header first unless serve_forever() already did. A bad,
        truncated or slow header ends the request here: the connection is
        closed by the server's shutdown_request()."""
        address = _client_addresses.pop(request, None)
        if address is None:
            try:
                header = read_proxy_header(request, self.proxy_header_timeout)
                address = self._proxied_address(header, client_address)
            except (OSError, ProxyHeaderError) as err:
                _header_failed(client_address, err)
                return
        super().finish_request(request, address)  # type: ignore[misc]

    def _defers_arrivals(self) -> bool:
        return True

    def _arrival_wait(self, request: Any, client_address: Any) -> Any:
        if type(request) is not socket.socket:
            return super()._arrival_wait(request, client_address)  # type: ignore[misc]
        return Wait(
            self._header_steps(request, client_address),
            self.proxy_header_timeout,
            functools.partial(_header_failed, client_address),
        )

    def _header_steps(
        self, request: socket.socket, client_address: Any
    ) -> Generator[int, None, None]:
        header = yield from _header_steps(request)
        _client_addresses[request] = self._proxied_address(header, client_address)

    def _proxied_address(self, header: ProxyHeader, real: Any) -> Any:
        # The client's address, in the shape of the server's family; a
        # header this server cannot serve raises ProxyHeaderError.
        if header.command == "PROXY" and header.protocol == socket.SOCK_DGRAM:
            raise ProxyHeaderError("a DGRAM header on a stream server")
        return header.client_address(real, getattr(self, "address_family", None))


# The client address each connection's header gave, from when serve_forever()
# read it until finish_request() uses it.
_client_addresses: weakref.WeakKeyDictionary[socket.socket, Any] = weakref.WeakKeyDictionary()


def _header_failed(client_address: Any, err: BaseException) -> None:
    reason = "timed out" if isinstance(err, socket.timeout) else str(err) or repr(err)
    _logger.warning("connection from %s closed: PROXY header: %s", client_address, reason)
