"""Connections that still owe something before they are requests.

A TLS client owes its handshake, a client behind a load balancer its PROXY
protocol header. Until those arrive there is nothing for a handler to do,
so serve_forever() keeps such connections here rather than on a worker:
its loop waits on them beside the listening socket, advances each with
non-blocking steps as its bytes arrive, and closes it at its deadline. A
client that connects and stays silent then holds a descriptor until its
timeout, never one of the max_threads workers that serve requests, nor the
serving thread of a non-threading server. A connection whose wait is over
goes on to process_request() on the serving thread, as if just accepted.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import threading
import time
from typing import Any, Callable, Generator, NamedTuple, Optional

__all__ = ["Arrivals", "Wait"]


class Wait(NamedTuple):
    """What a connection still owes.

    ``steps`` does non-blocking work and yields the ``selectors`` event it
    waits for (EVENT_READ or EVENT_WRITE) until it returns; ``timeout`` is
    the seconds it has for all of them (None: no limit); ``failed(error)``
    is called once when a step raised or the time ran out, to log it.
    """

    steps: Generator[int, None, None]
    timeout: Optional[float]
    failed: Callable[[BaseException], None]


class _Arrival:
    __slots__ = ("request", "client_address", "wait", "event", "done")

    def __init__(self, request: Any, client_address: Any, wait: Wait) -> None:
        self.request = request
        self.client_address = client_address
        self.wait = wait
        self.event = 0  # what the selector watches for it; 0: not registered
        self.done = False


class Arrivals:
    """The connections of one server that still owe their wait, each with
    its deadline. The serving thread admits them, waits on fileno() with
    the listener and calls step() after each wait; no lock is held while
    a server hook runs."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._deadlines: list[tuple[float, int, _Arrival]] = []
        self._order = itertools.count()
        self._waiting: set[_Arrival] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def fileno(self) -> int:
        """Readable while a waiting connection is ready for its next step."""
        # Windows' DefaultSelector (select()) has no fileno() in the stubs.
        return self._selector.fileno()  # type: ignore[attr-defined,no-any-return,unused-ignore]

    def timeout(self, poll_interval: Optional[float]) -> Optional[float]:
        """How long the serve loop may wait: poll_interval, or less when a
        deadline comes first."""
        with self._lock:
            while self._deadlines and self._deadlines[0][2].done:
                heapq.heappop(self._deadlines)
            if not self._deadlines:
                return poll_interval
            left = max(0.0, self._deadlines[0][0] - time.monotonic())
        return left if poll_interval is None else min(left, poll_interval)

    def admit(self, server: Any, request: Any, client_address: Any, wait: Wait) -> None:
        """Take the first step of `wait` now; what is left waits here."""
        arrival = _Arrival(request, client_address, wait)
        with self._lock:
            self._waiting.add(arrival)
            if wait.timeout is not None:
                deadline = time.monotonic() + wait.timeout
                heapq.heappush(self._deadlines, (deadline, next(self._order), arrival))
            outcome = self._advance(arrival)
        if outcome is not None:
            self._settle(server, arrival, outcome)

    def step(self, server: Any) -> None:
        """Advance the connections that are ready, end those past their
        deadline, and hand on or close each one whose wait ended."""
        ended = []
        with self._lock:
            for key, _ in self._selector.select(0):
                arrival = key.data
                outcome = self._advance(arrival)
                if outcome is not None:
                    ended.append((arrival, outcome))
            now = time.monotonic()
            while self._deadlines and self._deadlines[0][0] <= now:
                arrival = heapq.heappop(self._deadlines)[2]
                if not arrival.done:
                    self._end(arrival)
                    arrival.wait.steps.close()
                    ended.append((arrival, socket.timeout("timed out")))
        for arrival, outcome in ended:
            self._settle(server, arrival, outcome)

    def close(self, server: Any) -> None:
        """Close every connection still waiting (the server closes or
        drains: they never became requests)."""
        with self._lock:
            waiting = list(self._waiting)
            for arrival in waiting:
                self._end(arrival)
                arrival.wait.steps.close()
            self._deadlines.clear()
        for arrival in waiting:
            _close(server, arrival.request)

    def _advance(self, arrival: _Arrival) -> Any:
        # One step, under the lock: None while it still waits, True when
        # done, else the exception that ended it.
        try:
            event = next(arrival.wait.steps)
        except StopIteration:
            self._end(arrival)
            return True
        except Exception as err:
            self._end(arrival)
            return err
        if arrival.event == 0:
            self._selector.register(arrival.request, event, arrival)
        elif arrival.event != event:
            self._selector.modify(arrival.request, event, arrival)
        arrival.event = event
        return None

    def _end(self, arrival: _Arrival) -> None:
        # Forget the descriptor before anyone may close it.
        arrival.done = True
        self._waiting.discard(arrival)
        if arrival.event:
            self._selector.unregister(arrival.request)
            arrival.event = 0

    def _settle(self, server: Any, arrival: _Arrival, outcome: Any) -> None:
        request, client_address, wait = arrival.request, arrival.client_address, arrival.wait
        # Its deadline may stay queued a while: let it not hold the socket.
        arrival.request = arrival.client_address = None
        if outcome is True:
            server._process_taken(request, client_address)
            return
        wait.failed(outcome)
        _close(server, request)


def _close(server: Any, request: Any) -> None:
    server._serve_loop().stats.request_finished()
    server.shutdown_request(request)
