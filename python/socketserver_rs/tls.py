"""TLS handshakes off the serving thread and off the workers.

A server whose listening socket was wrapped with ``SSLContext.wrap_socket()``
(as http.server's HTTPS server of 3.14 does, and as the ssl documentation
shows) would do every handshake inside ``accept()``, on the thread that runs
``serve_forever()``: one client that connects and sends nothing stops all
the others. A threading server instead accepts the connection as an
``ssl.SSLSocket`` whose handshake is still to come. serve_forever() does
that handshake in non-blocking steps among the connections that still owe
something (see arrivals.py), so a silent client holds no worker; a request
taken otherwise (handle_request()) completes it on the request's worker.
Either way it has ``handshake_timeout`` seconds; a failed or silent
handshake costs that connection only and is logged in one line (INFO)
through the ``socketserver_rs`` logger, as quietly as the standard module
drops it.
"""

import selectors
import socket
import sys
import weakref

from socketserver_rs.arrivals import Wait

__all__ = [
    "accept_deferring_handshake",
    "complete_handshake",
    "defers_handshakes",
    "handshake_owed",
]

# Accepted connections whose handshake is still to be done.
_pending: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()


def defers_handshakes(listener):
    """Whether `listener` is an SSLSocket that would do the handshake inside
    accept(), which accept_deferring_handshake() leaves for later."""
    ssl = sys.modules.get("ssl")
    if ssl is None or not isinstance(listener, ssl.SSLSocket):
        return False
    return bool(listener.do_handshake_on_connect)


def accept_deferring_handshake(listener):
    """`listener.accept()` without the handshake when the listener is an
    SSLSocket that would do it at once; None for any other socket."""
    if not defers_handshakes(listener):
        return None
    sock, client_address = socket.socket.accept(listener)
    request = listener.context.wrap_socket(
        sock,
        server_side=True,
        do_handshake_on_connect=False,
        suppress_ragged_eofs=listener.suppress_ragged_eofs,
    )
    _pending.add(request)
    return request, client_address


def complete_handshake(server, request, client_address):
    """Do the handshake `request` still owes, within server.handshake_timeout.
    False when it failed: the connection is then shut down and closed."""
    if not _pending or request not in _pending:
        return True
    _pending.discard(request)
    timeout = request.gettimeout()
    try:
        request.settimeout(server.handshake_timeout)
        request.do_handshake()
        request.settimeout(timeout)
        return True
    except (OSError, ValueError) as err:
        _log_failure(client_address, err)
        server.shutdown_request(request)
        return False


def handshake_owed(server, request, client_address):
    """The handshake `request` still owes, as a Wait of non-blocking steps
    (see arrivals.py); None when it owes none."""
    if not _pending or request not in _pending:
        return None
    _pending.discard(request)
    return Wait(
        _handshake_steps(request),
        server.handshake_timeout,
        lambda err: _log_failure(client_address, err),
    )


def _handshake_steps(request):
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


def _log_failure(client_address, err):
    import logging  # not at import time: the package must not load logging

    logging.getLogger("socketserver_rs").info(
        "TLS handshake with %s failed: %s", client_address, err
    )
