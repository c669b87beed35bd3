"""ThreadingMixIn (on the core's worker pool) and ForkingMixIn."""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
import weakref
from contextvars import Context
from functools import partial

from socketserver_rs import _core, _state
from socketserver_rs._cooperative import cooperative
from socketserver_rs._fast_path import standard_hooks
from socketserver_rs._tls import complete_handshake

__all__ = ["ThreadingMixIn"]
if hasattr(os, "fork"):
    __all__.append("ForkingMixIn")


if hasattr(os, "fork"):

    class ForkingMixIn:
        """Mix-in class to handle each request in a new process."""

        timeout: float | None = 300
        active_children: set | None = None
        max_children = 40
        # If true, server_close() waits until all child processes complete.
        block_on_close = True

        def collect_children(self, *, blocking=False):
            """Internal routine to wait for children that have exited."""
            if self.active_children is None:
                return

            # If we're above the max number of children, wait and reap them until
            # we go back below threshold. Note that we use waitpid(-1) below to be
            # able to collect children in size(<defunct children>) syscalls instead
            # of size(<children>): the downside is that this might reap children
            # which we didn't spawn, which is why we only resort to this when we're
            # above max_children.
            while len(self.active_children) >= self.max_children:
                try:
                    pid, _ = os.waitpid(-1, 0)
                    self.active_children.discard(pid)
                except ChildProcessError:
                    # we don't have any children, we're done
                    self.active_children.clear()
                except OSError:
                    break

            # Now reap all defunct children.
            for pid in self.active_children.copy():
                try:
                    flags = 0 if blocking else os.WNOHANG
                    pid, _ = os.waitpid(pid, flags)
                    # if the child hasn't exited yet, pid will be 0 and ignored by
                    # discard() below
                    self.active_children.discard(pid)
                except ChildProcessError:
                    # someone else reaped it
                    self.active_children.discard(pid)
                except OSError:
                    pass

        def handle_timeout(self):
            """Wait for zombies after self.timeout seconds of inactivity.

            May be extended, do not override.
            """
            self.collect_children()

        def service_actions(self):
            """Collect the zombie child processes regularly in the ForkingMixIn.

            service_actions is called in the BaseServer's serve_forever loop.
            """
            self.collect_children()

        def process_request(self, request, client_address):
            """Fork a new subprocess to process the request."""
            pid = os.fork()
            if pid:
                # Parent process
                if self.active_children is None:
                    self.active_children = set()
                self.active_children.add(pid)
                self.close_request(request)
                return
            else:
                # Child process.
                # This must never return, hence os._exit()!
                status = 1
                try:
                    self.finish_request(request, client_address)
                    status = 0
                except Exception:
                    self.handle_error(request, client_address)
                finally:
                    try:
                        self.shutdown_request(request)
                    finally:
                        os._exit(status)

        def server_close(self):
            super().server_close()
            self.collect_children(blocking=self.block_on_close)


class _WorkerThreads:
    """``server._threads``: the live worker threads (the standard module
    keeps its request threads there). Instance assignments still win."""

    def __get__(self, server, owner=None):
        if server is None:
            return self
        state = _state.existing(server)
        return list(state.threads) if state is not None else []


# Seconds between two looks for idle connections while server_close() waits.
_IDLE_CHECK = 0.01

_pool_lock = threading.Lock()
_live_pools: weakref.WeakSet[_core.WorkerPool] = weakref.WeakSet()
_worker_numbers = itertools.count(1)


def _close_live_pools():
    # At interpreter exit idle workers leave at once; busy non-daemon ones
    # finish their request first, as the standard module's threads would.
    for pool in list(_live_pools):
        pool.close()


threading._register_atexit(_close_live_pools)  # type: ignore[attr-defined]

# Pools belong to the process that made them: a child of fork() has none of
# their threads, so its servers make new pools (see _worker_pool()). The old
# ones are left untouched there: a lock held by a parent's thread at the
# fork would never be released in the child.
_fork_generation = 0


def _forget_pools_after_fork():
    global _fork_generation
    _fork_generation += 1
    _live_pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _idle_timeout(server):
    seconds = server.idle_thread_timeout
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"idle_thread_timeout must be a positive number of seconds, not {seconds!r}"
        )
    return float(seconds)


def _thread_bound(server):
    bound = server.max_threads
    if bound is None:
        return None
    if type(bound) is not int or bound < 1:
        raise ValueError(f"max_threads must be a positive int or None, not {bound!r}")
    return bound


class _WorkerThread(threading.Thread):
    """A pool worker. Its body is run() itself, not a target, and jobs are
    called with plain positional arguments: Python then runs the handler
    without extra interpreter frames on the C stack, which keeps each idle
    worker's resident stack (one per open connection) small."""

    def __init__(self, worker, threads, name, daemon):
        super().__init__(name=name, daemon=daemon)
        self._worker = worker
        self._threads = threads

    def run(self):
        """A job that raises ends the worker, and the exception goes to
        threading.excepthook, as it would end the request's own thread in
        the standard library."""
        worker = self._worker
        try:
            while _run(worker.take()):
                pass
        finally:
            worker.exit()
            self._threads.discard(self)


def _run(job):
    if job is None:
        return False
    func, args = job
    # Each request starts in an empty context, as a new thread does: a
    # ContextVar a handler set (the current user, say) must not be seen by
    # the next request this worker serves.
    Context().run(func, *args)
    return True


def _spawner(server, threads):
    """The pool's spawn(worker): start a thread running `worker`, named for
    the server's class and daemonic as server.daemon_threads says when it
    starts. It holds the server weakly: the server holds the pool."""
    server_ref = weakref.ref(server)
    prefix = f"{type(server).__name__}-worker-"

    def spawn(worker):
        server = server_ref()
        daemon = bool(server.daemon_threads) if server is not None else True
        thread = _WorkerThread(worker, threads, prefix + str(next(_worker_numbers)), daemon)
        threads.add(thread)
        try:
            thread.start()
        except BaseException:
            threads.discard(thread)
            raise

    return spawn


def _process_request_thread(server, request, client_address):
    state = _state.of(server)
    _serve_on_worker(state.stats, state.connections, server, request, client_address)


def _serve_on_worker(stats, registry, server, request, client_address):
    # What a worker does with a request: the TLS handshake still owed, if
    # any, then process_request_thread(); the fast path binds the first two
    # arguments once per serve_forever().
    try:
        if complete_handshake(server, request, client_address):
            server.process_request_thread(request, client_address)
    finally:
        stats.request_finished()
        registry.request_done(request)


@standard_hooks
class ThreadingMixIn:
    """Mix-in class to handle each request in a new thread.

    Requests run on a pool of reusable worker threads that grows whenever
    every worker is busy (so no request waits for another to finish) and
    shrinks when workers stay idle. How a request gets a thread: the pool's
    submit() (src/pool.rs) hands it to an idle worker or starts a new one
    through _spawner(); on the fast path the core submits straight from
    accept().
    """

    # Decides how threads will act upon termination of the
    # main process
    daemon_threads = False
    # If true, server_close() waits until all non-daemonic threads terminate.
    block_on_close = True
    # At most this many requests run at once (None: no bound). At the bound
    # the server stops accepting and waiting clients stay in the kernel's
    # listen backlog (datagrams in the socket's buffer) until a worker frees.
    max_threads: int | None = None
    # Seconds a worker waits for another request before it retires.
    idle_thread_timeout: float = 10.0
    # Seconds a TLS client has to finish its handshake, on the worker, when
    # the server's socket was wrapped for TLS (see _tls.py).
    handshake_timeout: float = 5.0
    # Seconds server_close() waits for requests in flight (block_on_close)
    # before it shuts their connections down; None: as long as they take.
    close_timeout: float | None = None
    _handshake_in_worker = True

    _threads = _WorkerThreads()

    def process_request_thread(self, request, client_address):
        """Same as in BaseServer but as a thread.

        In addition, exception handling is done here.
        """
        try:
            self.finish_request(request, client_address)
        except Exception:
            self._serve_loop().stats.error()
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request, client_address):
        """Run process_request_thread() on a worker thread. At the bound
        (max_threads) this waits for a worker to become free."""
        if cooperative():
            self._start_request_thread(request, client_address)
        else:
            self._worker_pool().submit(_process_request_thread, (self, request, client_address))
        # The worker counts the request finished, not whoever took it.
        _state.hand_off()

    def _start_request_thread(self, request, client_address):
        # A (green) thread per request, as the standard module does: a pool
        # worker would wait in the core, out of the hub's sight.
        threads = _state.of(self).threads

        def run():
            try:
                _process_request_thread(self, request, client_address)
            finally:
                threads.discard(thread)

        thread = threading.Thread(target=run, daemon=bool(self.daemon_threads))
        threads.add(thread)
        thread.start()

    def server_close(self):
        super().server_close()
        state = _state.of(self)
        pool, state.pool = state.pool, None
        # Not the pool of the process this one was forked from: its locks
        # may have been held at the fork.
        if pool is not None and state.pool_generation == _fork_generation:
            pool.close()
        if self.block_on_close and not self.daemon_threads:
            self._join_workers()

    def _join_workers(self):
        # Wait for the requests in flight: without end, as the standard
        # module does, or until close_timeout; then cut what is left. A
        # connection idle between two requests (a keep-alive client) is
        # closed instead of waited for, now or once its request is done,
        # or a program would hang in server_close() after Ctrl-C.
        current = threading.current_thread()
        state = _state.of(self)
        threads = [thread for thread in list(state.threads) if thread is not current]
        timeout = self.close_timeout
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        for thread in threads:
            while thread.is_alive():
                state.close_idle()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                thread.join(min(left, _IDLE_CHECK))
        if any(thread.is_alive() for thread in threads):
            state.cut("server_close()")
            for thread in threads:
                thread.join(1.0)

    def stats(self):
        counters = super().stats()
        pool = _state.of(self).pool
        idle = pool.idle if pool is not None else 0
        counters["workers_busy"] = (pool.size if pool is not None else 0) - idle
        counters["workers_idle"] = idle
        return counters

    def _worker_pool(self):
        state = _state.of(self)
        pool = state.pool
        if pool is None or state.pool_generation != _fork_generation:
            with _pool_lock:
                pool = state.pool
                if pool is None or state.pool_generation != _fork_generation:
                    threads = state.threads = set()
                    pool = state.pool = _core.WorkerPool(
                        _spawner(self, threads),
                        idle_timeout=_idle_timeout(self),
                        max_workers=_thread_bound(self),
                    )
                    state.pool_generation = _fork_generation
                    _live_pools.add(pool)
        return pool

    def _bounded_pool(self):
        pool = self._worker_pool()
        return pool if pool.max_workers is not None else None

    def _fast_request_taker(self, fast):
        # The core accepts the waiting requests and queues each for a worker.
        state = _state.of(self)
        runner = partial(_serve_on_worker, state.stats, state.connections)
        return partial(self._dispatch_fast, fast, self._worker_pool(), runner)

    def _dispatch_fast(self, fast, pool, runner):
        untaken = fast.dispatch(self, pool, runner)
        if untaken is None:
            return
        # Its worker could not start, or the pool was closed under us
        # (server_close() from a handler): then this server's current pool
        # takes it, as process_request() would.
        request, client_address, error = untaken
        self._handle_taken(request, client_address, error)
