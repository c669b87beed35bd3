"""A server's state, in one object with one owner.

Each server of ours has one ServerState, made with it (or on first use by a
subclass that never called BaseServer.__init__()) and reached through
of(server); no other module reads a server's private attributes. It holds:

* the serve loop (the core's ServeLoop, with the server's counters) and the
  event serve_forever() sets when it returns;
* the registry of open thread-model connections (_connections.py);
* the message loop serving event-driven connections (_message_loop.py);
* the connections still owing a TLS handshake or a PROXY header
  (_arrivals.py);
* a threading server's worker pool and the threads it started.

Who may close a connection is decided here: close_idle() (drain(),
server_close() of a threading server) and cut() (a deadline) act on the
registry and the message loop, each of which is the one owner of its own
connections' descriptors.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Optional

from socketserver_rs import _core
from socketserver_rs._connections import Connections

__all__ = ["ServerState", "of", "existing", "new_serve_loop", "hand_off", "handed_off"]

# The attribute BaseServer.__init__() sets (self.__state).
_KEY = "_BaseServer__state"


def new_serve_loop() -> _core.ServeLoop:
    """A serve loop with fresh counters. What the paths taken when
    descriptors run out need is loaded now, while there are descriptors to
    load it with: the logger the core reports accept failures through, and
    the traceback module of handle_error()."""
    import logging
    import traceback  # noqa: F401 -- imported for handle_error()

    return _core.ServeLoop(logging.getLogger("socketserver_rs"), _core.ServerStats())


class ServerState:
    """One server's state (see the module)."""

    def __init__(self) -> None:
        self.loop = new_serve_loop()
        self.is_shut_down = threading.Event()
        self.connections = Connections()
        # _message_loop.Messages, once event-driven connections are served.
        self.messages: Any = None
        # _arrivals.Arrivals, once a connection had something to owe.
        self.arrivals: Any = None
        # ThreadingMixIn: the worker pool, the fork generation it was made
        # in, and the threads it (or the per-request path) started.
        self.pool: Optional[_core.WorkerPool] = None
        self.pool_generation = -1
        self.threads: set[threading.Thread] = set()

    @property
    def stats(self) -> _core.ServerStats:
        return self.loop.stats

    def renew_loop(self) -> None:
        """A serve loop of this process's own (a pre-forked worker: the
        master's shares its wake descriptor with every worker)."""
        self.loop = new_serve_loop()

    def close_arrivals(self, server: Any) -> None:
        arrivals, self.arrivals = self.arrivals, None
        if arrivals is not None:
            arrivals.close(server)

    def close_idle(self) -> None:
        """Shut the read side of each thread-model connection whose handler
        waits idle between two requests, with nothing buffered: it reads
        b"" and ends."""
        for connection, reader in self.connections.items():
            if reader is not None and reader.idle:
                _shut(connection, socket.SHUT_RD)

    def cut(self, what: str) -> int:
        """At `what`'s deadline: shut down every connection still open, and
        return how many requests were still running (logged if any)."""
        running: int = self.stats.snapshot()["requests_active"]
        for connection in self.connections:
            _shut(connection, socket.SHUT_RDWR)
        if self.messages is not None:
            self.messages.close_all(shut=True)
        if running:
            import logging

            logging.getLogger("socketserver_rs").warning(
                "%s: %d request(s) still running at the deadline; their connections were shut down",
                what,
                running,
            )
        return running


def of(server: Any) -> ServerState:
    """The state of `server`, one of ours."""
    state = server.__dict__.get(_KEY)
    if state is None:
        state = server.__dict__.setdefault(_KEY, ServerState())
    assert type(state) is ServerState
    return state


def existing(server: Any) -> Optional[ServerState]:
    """The state of `server` if it is one of ours that has one (a handler
    may be given any server)."""
    state = getattr(server, "__dict__", {}).get(_KEY)
    return state if type(state) is ServerState else None


# Per thread: whether the request it took went on to another thread (or
# the arrivals) that counts its finish.
_handoffs = threading.local()


def hand_off() -> None:
    """The request this thread is taking goes on to something that will
    count it finished (a worker; the arrivals): the taker does not."""
    _handoffs.pending = True


def handed_off() -> bool:
    """Whether hand_off() was called since the last call; clears it."""
    pending: bool = getattr(_handoffs, "pending", False)
    _handoffs.pending = False
    return pending


def _shut(sock: Any, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # closed meanwhile, or never connected
