"""Pre-forked workers: one server on several processes, each with its own GIL.

``serve_prefork(server, workers=4)`` forks ``workers`` processes that all
serve the same listening socket (inherited from the master, which never
serves itself), and supervises them as gunicorn's master does:

- a worker that dies is replaced; one that dies again within a second of
  starting waits before its replacement, 0.1 s doubling up to 10 s, so a
  worker that cannot start does not spin the machine;
- SIGTERM: graceful stop. Each worker drains its server (``drain()``):
  it stops accepting, closes idle keep-alive connections, finishes the
  requests in flight, and exits; workers still running after
  ``graceful_timeout`` seconds are killed.
- SIGINT, SIGQUIT: quick stop. Workers exit at once, in-flight requests are
  cut.
- SIGHUP: new workers are started, then the old ones stopped gracefully.
- SIGTTIN / SIGTTOU: one worker more / one fewer (never fewer than one).

It returns the exit code for the process: 0 when every worker ended by
itself, 1 when one had to be killed at the deadline.

Instead of a server, ``serve_prefork()`` takes a callable that builds one;
it is then called in each worker, so that each binds its own socket. With
``allow_reuse_port = True`` on the server class and a fixed port, the
kernel spreads the connections evenly over the workers' sockets (Linux's
SO_REUSEPORT); a worker that exits loses the connections still waiting in
its own backlog, which the shared socket of the first form never does.

Forking and threads do not mix (a lock held by another thread at fork()
stays held in the child for ever; 3.12 warns), so ``serve_prefork()``
must be called from the main thread before any other thread starts: it
raises RuntimeError when ``threading.active_count()`` is not 1. Build
the server (which starts no thread) and call it first thing. Inside a
worker, a threading server starts its pool as usual; each worker also
runs one thread that ends it gracefully should the master die.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Union

from socketserver_rs import _state

if not hasattr(os, "fork"):
    # Like ForkingMixIn, which the standard module leaves out there.
    raise ImportError("socketserver_rs.prefork needs os.fork(), which this platform lacks")

__all__ = ["serve_prefork"]

_logger = logging.getLogger("socketserver_rs")

# A worker that dies sooner than this after its start counts as failing to start.
_MIN_UPTIME = 1.0
_FIRST_DELAY = 0.1
_MAX_DELAY = 10.0

_MASTER_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)


def serve_prefork(
    server: Union[Any, Callable[[], Any]],
    workers: int = 2,
    *,
    graceful_timeout: float = 30.0,
    poll_interval: float = 0.5,
) -> int:
    """Serve ``server`` (or the servers ``server()`` builds, one per worker)
    on ``workers`` forked processes until a stop signal; the exit code.
    See the module's documentation for the signals."""
    if type(workers) is not int or workers < 1:
        raise ValueError(f"workers must be a positive int, not {workers!r}")
    if not graceful_timeout >= 0:
        raise ValueError(f"graceful_timeout must be >= 0, not {graceful_timeout!r}")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve_prefork() handles signals: call it from the main thread")
    if threading.active_count() != 1:
        raise RuntimeError(
            "serve_prefork() forks, and forking with threads running can deadlock the "
            f"workers: call it before any thread starts ({threading.active_count()} running)"
        )
    return _Master(server, workers, graceful_timeout, poll_interval).run()


class _Worker:
    __slots__ = ("pid", "started", "retiring", "deadline")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.retiring = False
        self.deadline = float("inf")


class _Master:
    def __init__(self, server: Any, workers: int, graceful_timeout: float, poll: float) -> None:
        self.server = server
        self.shared = not callable(server) or hasattr(server, "serve_forever")
        self.target = workers
        self.graceful_timeout = graceful_timeout
        self.poll_interval = poll
        self.workers: dict[int, _Worker] = {}
        self.signals: list[int] = []
        self.failures = 0
        self.next_spawn = 0.0
        self.pid = os.getpid()

    # The loop.

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self.wake_read, self.wake_write = wake_read, wake_write
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _MASTER_SIGNALS}
        previous_wakeup = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        try:
            while True:
                self._reap()
                while self.signals:
                    sig = self.signals.pop(0)
                    if sig == signal.SIGTERM:
                        return self._stop(graceful=True)
                    if sig in (signal.SIGINT, signal.SIGQUIT):
                        return self._stop(graceful=False)
                    self._on_control(sig)
                self._retire_extra()
                self._spawn_missing()
                self._kill_overdue()
                self._wait(self.poll_interval)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_read)
            os.close(wake_write)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum != signal.SIGCHLD:
            self.signals.append(signum)

    def _on_control(self, sig: int) -> None:
        if sig == signal.SIGHUP:
            _logger.info("prefork: restarting %d workers", self.target)
            old = [w for w in self.workers.values() if not w.retiring]
            self._spawn_missing(count_from=0, force=True)
            for worker in old:
                self._retire(worker)
        elif sig == signal.SIGTTIN:
            self.target += 1
            _logger.info("prefork: %d workers", self.target)
        elif sig == signal.SIGTTOU and self.target > 1:
            self.target -= 1
            _logger.info("prefork: %d workers", self.target)

    def _wait(self, timeout: float) -> None:
        if self.next_spawn > time.monotonic():
            timeout = min(timeout, self.next_spawn - time.monotonic())
        try:
            select.select([self.wake_read], [], [], max(timeout, 0.0))
        except InterruptedError:
            pass
        try:
            while os.read(self.wake_read, 512):
                pass
        except BlockingIOError:
            pass

    # Workers.

    def _active(self) -> list[_Worker]:
        return [w for w in self.workers.values() if not w.retiring]

    def _spawn_missing(self, count_from: int | None = None, force: bool = False) -> None:
        have = len(self._active()) if count_from is None else count_from
        for _ in range(self.target - have):
            if not force and time.monotonic() < self.next_spawn:
                return
            self._spawn()

    def _retire_extra(self) -> None:
        active = sorted(self._active(), key=lambda w: w.started)
        for worker in active[: max(0, len(active) - self.target)]:
            self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        worker.retiring = True
        worker.deadline = time.monotonic() + self.graceful_timeout
        self._signal(worker.pid, signal.SIGTERM)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.retiring and now >= worker.deadline:
                _logger.warning("prefork: worker %d still busy, killed", worker.pid)
                self._signal(worker.pid, signal.SIGKILL)
                worker.deadline = float("inf")

    def _signal(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None or worker.retiring:
                continue
            lived = time.monotonic() - worker.started
            self.failures = self.failures + 1 if lived < _MIN_UPTIME else 1
            delay = 0.0 if self.failures <= 1 else _FIRST_DELAY * 2 ** (self.failures - 2)
            self.next_spawn = time.monotonic() + min(delay, _MAX_DELAY)
            _logger.warning(
                "prefork: worker %d %s; replacing it in %.1f s",
                pid,
                _describe(status),
                min(delay, _MAX_DELAY),
            )

    def _spawn(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            self.workers[pid] = _Worker(pid)
            return
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            os.close(self.wake_read)
            os.close(self.wake_write)
            for sig in _MASTER_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            code = _serve_in_worker(
                self.server, self.shared, self.pid, self.poll_interval, self.graceful_timeout
            )
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _stop(self, graceful: bool) -> int:
        if self.shared:
            # The master's copy of the listening socket: once the workers
            # close theirs, new connections are refused.
            self.server.server_close()
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for worker in self.workers.values():
            self._signal(worker.pid, sig)
        deadline = time.monotonic() + self.graceful_timeout
        killed = False
        while self.workers:
            for worker in list(self.workers.values()):
                worker.retiring = True
            self._reap()
            if not self.workers:
                break
            if time.monotonic() >= deadline:
                for worker in self.workers.values():
                    _logger.warning("prefork: worker %d still busy, killed", worker.pid)
                    self._signal(worker.pid, signal.SIGKILL)
                for pid in list(self.workers):
                    os.waitpid(pid, 0)
                killed = True
                break
            self._wait(min(0.1, max(deadline - time.monotonic(), 0.0)))
        return 1 if killed else 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _serve_in_worker(
    server: Any, shared: bool, master: int, poll_interval: float, graceful_timeout: float
) -> int:
    if not shared:
        server = server()
    else:
        # A serve loop of this process's own: the master's shares its wake
        # descriptor with every worker, where one's shutdown() could wake
        # (and be taken by) another.
        _state.of(server).renew_loop()
    stopping = threading.Event()
    draining: list[threading.Thread] = []

    def graceful(signum: Any, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            # drain() waits for serve_forever(), which this thread runs. It
            # closes idle keep-alive connections and lets the requests in
            # flight finish, whether or not the server joins its threads.
            drain = threading.Thread(
                target=server.drain, args=(graceful_timeout,), name="prefork-stop", daemon=True
            )
            draining.append(drain)
            drain.start()

    def quick(signum: Any, frame: Any) -> None:
        os._exit(0)

    def watch_master() -> None:
        while not stopping.wait(1.0):
            if os.getppid() != master:
                _logger.warning("prefork: master %d is gone, worker %d stops", master, os.getpid())
                # graceful() runs on the main thread, between serving and cleaning up.
                os.kill(os.getpid(), signal.SIGTERM)
                return

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, quick)
    signal.signal(signal.SIGQUIT, quick)
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=watch_master, name="prefork-watch", daemon=True).start()
    try:
        server.serve_forever(poll_interval)
    finally:
        stopping.set()
        for drain in draining:
            drain.join()
        server.server_close()
    return 0
