"""TLS handshakes on the worker, not the serving thread.

A server whose listening socket was wrapped with ``SSLContext.wrap_socket()``
(as http.server's HTTPS server of 3.14 does, and as the ssl documentation
shows) would do every handshake inside ``accept()``, on the thread that runs
``serve_forever()``: one client that connects and sends nothing stops all
the others. A threading server instead accepts the connection as an
``ssl.SSLSocket`` whose handshake is still to come and completes it on the
request's worker, with ``handshake_timeout``; a failed or silent handshake
costs that connection only and is logged in one line (INFO) through the
``socketserver_rs`` logger, as quietly as the standard module drops it.
"""

import socket
import sys
import weakref

__all__ = ["accept_deferring_handshake", "complete_handshake"]

# Accepted connections whose handshake is still to be done.
_pending: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()


def accept_deferring_handshake(listener):
    """`listener.accept()` without the handshake when the listener is an
    SSLSocket that would do it at once; None for any other socket."""
    ssl = sys.modules.get("ssl")
    if ssl is None or not isinstance(listener, ssl.SSLSocket):
        return None
    if not listener.do_handshake_on_connect:
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
        import logging

        logging.getLogger("socketserver_rs").info(
            "TLS handshake with %s failed: %s", client_address, err
        )
        server.shutdown_request(request)
        return False
