"""A server's open stream connections, for drain() and server_close()'s
deadline, and for closing what a handler leaves open.

StreamRequestHandler.setup() registers its connection (and, over the
core's rfile, its reader) and finish() forgets it. A handler may replace
the socket it was given (websocket-server wraps it for TLS) and a finish()
that does not call super() forgets nothing: once the server has closed the
request it handed out, request_done() forgets and closes whatever handlers
registered on that thread meanwhile, as the standard module's handler
would have closed it on being collected.
"""

import threading
import weakref

__all__ = ["Connections", "of"]


class Connections:
    """The registry: each connection with its reader (or None)."""

    def __init__(self):
        self._readers = {}
        # Per thread: the connections registered since its last request
        # ended, held weakly (a thread whose requests the server does not
        # end, as under a process_request() of its own, keeps none alive).
        self._local = threading.local()

    def track(self, connection, reader):
        self._readers[connection] = reader
        try:
            self._registered().add(connection)
        except TypeError:
            pass  # no weak reference to it: finish() alone forgets it

    def untrack(self, connection):
        self._readers.pop(connection, None)

    def items(self):
        return list(self._readers.items())

    def __iter__(self):
        return iter(list(self._readers))

    def request_done(self, request):
        """After the server closed `request` on this thread: forget every
        connection registered here meanwhile, closing those that took its
        place."""
        registered = self._registered()
        for connection in list(registered):
            registered.discard(connection)
            self._readers.pop(connection, None)
            if connection is not request:
                try:
                    connection.close()
                except OSError:
                    pass  # already closed or reset

    def _registered(self):
        try:
            return self._local.registered
        except AttributeError:
            self._local.registered = registered = weakref.WeakSet()
            return registered


def of(server):
    """The registry of `server`, if it is one of ours that has one."""
    registry = getattr(server, "__dict__", {}).get("_BaseServer__connections")
    return registry if type(registry) is Connections else None
