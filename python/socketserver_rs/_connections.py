"""A server's open stream connections, for drain() and server_close()'s
deadline, and for closing what a handler leaves open. Each server's
registry lives in its state (_state.py).

StreamRequestHandler.setup() registers its connection (and, over the
core's rfile, its reader) and finish() forgets it. A handler may replace
the socket it was given (websocket-server wraps it for TLS) and a finish()
that does not call super() forgets nothing: once the server has closed the
request it handed out, request_done() forgets and closes whatever handlers
registered on that thread meanwhile and did not forget, as the standard
module's handler would have closed it on being collected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Connections"]


class Connections:
    """The registry: each connection with its reader (or None)."""

    def __init__(self) -> None:
        self._readers: dict[Any, Any] = {}
        # Per thread: the connections registered since its last request
        # ended that finish() has not forgotten.
        self._local = threading.local()

    def track(self, connection: Any, reader: Any) -> None:
        self._readers[connection] = reader
        self._registered().append(connection)

    def untrack(self, connection: Any) -> None:
        self._readers.pop(connection, None)
        registered = self._registered()
        if registered and registered[-1] is connection:
            registered.pop()

    def owned_elsewhere(self, connection: Any) -> None:
        """`connection` outlives the request that registered it on this
        thread (an event-driven one: the message loop ends it)."""
        registered = self._registered()
        for i in range(len(registered) - 1, -1, -1):
            if registered[i] is connection:
                del registered[i]
                return

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._readers.items())

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._readers))

    def request_done(self, request: object) -> None:
        """After the server closed `request` on this thread: forget what
        handlers registered here meanwhile and did not forget themselves,
        closing what took its place."""
        registered = self._registered()
        while registered:
            connection = registered.pop()
            self._readers.pop(connection, None)
            if connection is not request:
                try:
                    connection.close()
                except OSError:
                    pass  # already closed or reset

    def _registered(self) -> list[Any]:
        registered: list[Any]
        try:
            registered = self._local.registered
        except AttributeError:
            self._local.registered = registered = []
        return registered
