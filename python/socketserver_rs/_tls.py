"""TLS handshakes off the serving thread and off the workers.

A server whose listening socket was wrapped with ``SSLContext.wrap_socket()``
(as http.server's HTTPS server of 3.14 does, and as the ssl documentation
shows) would do every handshake inside ``accept()``, on the thread that runs
``serve_forever()``: one client that connects and sends nothing stops all
the others. A threading server instead accepts the connection as an
``ssl.SSLSocket`` whose handshake is still to come. serve_forever() does
that handshake in non-blocking steps among the connections that still owe
something (see _arrivals.py), so a silent client holds no worker; a request
taken otherwise (handle_request()) completes it on the request's worker.
Either way it has ``handshake_timeout`` seconds; a failed or silent
handshake costs that connection only and is logged in one line (INFO)
through the ``socketserver_rs`` logger, as quietly as the standard module
drops it.
"""

from __future__ import annotations

import selectors
import socket
import sys
import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

from socketserver_rs._arrivals import Wait

if TYPE_CHECKING:
    from ssl import SSLSocket

    from socketserver_rs.mixins import ThreadingMixIn
    from socketserver_rs.servers import BaseServer

__all__ = [
    "accept_deferring_handshake",
    "complete_handshake",
    "defers_handshakes",
    "handshake_owed",
]

# A client's address, typed as servers.pyi types it (the standard module's
# stubs do the same): whatever the socket module returns.
_RetAddress = Any

# Accepted connections whose handshake is still to be done.
_pending: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def defers_handshakes(listener: socket.socket) -> bool:
    """Whether `listener` is an SSLSocket that would do the handshake inside
    accept(), which accept_deferring_handshake() leaves for later."""
    ssl = sys.modules.get("ssl")
    if ssl is None or not isinstance(listener, ssl.SSLSocket):
        return False
    return bool(listener.do_handshake_on_connect)


def accept_deferring_handshake(
    listener: socket.socket,
) -> tuple[socket.socket, _RetAddress] | None:
    """`listener.accept()` without the handshake when the listener is an
    SSLSocket that would do it at once; None for any other socket."""
    if not defers_handshakes(listener):
        return None
    tls = cast("SSLSocket", listener)
    sock, client_address = socket.socket.accept(tls)
    request = tls.context.wrap_socket(
        sock,
        server_side=True,
        do_handshake_on_connect=False,
        # Set by wrap_socket(), undeclared in the ssl stubs.
        suppress_ragged_eofs=tls.suppress_ragged_eofs,  # type: ignore[attr-defined]
    )
    _pending.add(request)
    return request, client_address


def complete_handshake(
    server: BaseServer, request: socket.socket, client_address: _RetAddress
) -> bool:
    """Do the handshake `request` still owes, within server.handshake_timeout.
    False when it failed: the connection is then shut down and closed."""
    if not _pending or request not in _pending:
        return True
    _pending.discard(request)
    tls = cast("SSLSocket", request)
    timeout = tls.gettimeout()
    try:
        tls.settimeout(_handshake_timeout(server))
        tls.do_handshake()
        tls.settimeout(timeout)
        return True
    except (OSError, ValueError) as err:
        _log_failure(client_address, err)
        server.shutdown_request(request)
        return False


def handshake_owed(
    server: BaseServer, request: socket.socket, client_address: _RetAddress
) -> Wait | None:
    """The handshake `request` still owes, as a Wait of non-blocking steps
    (see _arrivals.py); None when it owes none."""
    if not _pending or request not in _pending:
        return None
    _pending.discard(request)
    return Wait(
        _handshake_steps(cast("SSLSocket", request)),
        _handshake_timeout(server),
        lambda err: _log_failure(client_address, err),
    )


def _handshake_timeout(server: BaseServer) -> float:
    # Only a threading server defers handshakes (_handshake_in_worker).
    return cast("ThreadingMixIn", server).handshake_timeout


def _handshake_steps(request: SSLSocket) -> Generator[int, None, None]:
    ssl = sys.modules["ssl"]
    timeout = request.gettimeout()
    request.setblocking(False)
    try:
        while True:
            try:
                request.do_handshake()
                return
            except ssl.SSLWantReadError:
                yield selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                yield selectors.EVENT_WRITE
    finally:
        try:
            request.settimeout(timeout)
        except OSError:
            pass


def _log_failure(client_address: _RetAddress, err: BaseException) -> None:
    import logging  # not at import time: the package must not load logging

    logging.getLogger("socketserver_rs").info(
        "TLS handshake with %s failed: %s", client_address, err
    )
