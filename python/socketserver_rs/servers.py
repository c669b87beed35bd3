"""The server classes: BaseServer, TCPServer, UDPServer and the Unix ones.

They keep the standard library's hierarchy, attributes and hooks. The waits
of serve_forever() and handle_request() happen in the Rust core, and when no
request hook is overridden the core also accepts (or receives) each request
and queues it for a worker, so that only the handler itself runs in Python.
Handlers always run under Python frames, never below a Rust one (see
src/detach.rs for why).
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import time
from functools import partial

from socketserver_rs import _core, _message_loop, _state
from socketserver_rs._arrivals import Arrivals
from socketserver_rs._cooperative import cooperative
from socketserver_rs._fast_path import (
    HookWatch,
    hook_set,
    hooks_are_standard,
    hooks_version,
    standard_hooks,
)
from socketserver_rs._tls import accept_deferring_handshake, defers_handshakes, handshake_owed
from socketserver_rs.handlers import _keeps_nagle

__all__ = ["BaseServer", "TCPServer", "UDPServer"]
if hasattr(socket, "AF_UNIX"):
    __all__.extend(["UnixStreamServer", "UnixDatagramServer"])

# Families whose addresses the core turns into Python objects itself.
_FAST_FAMILIES = {socket.AF_INET, socket.AF_INET6}
if hasattr(socket, "AF_UNIX"):
    _FAST_FAMILIES.add(socket.AF_UNIX)

_TCP_FAMILIES = {socket.AF_INET, socket.AF_INET6}

# Most datagrams a single-threaded server takes per readiness.
_DATAGRAM_BATCH = 32


def _is_tcp(sock):
    # TCP connections get TCP_NODELAY, on either path.
    return sock.family in _TCP_FAMILIES and sock.type == socket.SOCK_STREAM


def _inherited_from(server, name, owner):
    """Whether `name` is `owner`'s own value, set on neither the instance
    nor a subclass: our better default may then stand in for it."""
    if name in vars(server):
        return False
    return next((cls for cls in type(server).__mro__ if name in vars(cls)), None) is owner


def _reuse_by_default(server):
    sock = server.socket
    return (
        os.name == "posix"
        and sock.family in _TCP_FAMILIES
        and sock.type == socket.SOCK_STREAM
        and _inherited_from(server, "allow_reuse_address", TCPServer)
    )


def _backlog(server):
    if _inherited_from(server, "request_queue_size", TCPServer):
        return socket.SOMAXCONN
    return server.request_queue_size


def _client_went_away(exc):
    """A broken pipe, a reset, a timeout, a message cut short (EOFError), or a
    TLS connection cut short: the client's doing, not the handler's."""
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
        return True
    if isinstance(exc, EOFError):
        return True
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return True
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLEOFError)


def _owner(server, fd):
    """The server's socket, if it owns `fd`: closing it ends the waits."""
    sock = getattr(server, "socket", None)
    return sock if isinstance(sock, socket.socket) and sock.fileno() == fd else None


@standard_hooks
class BaseServer:
    """Base class for server classes.

    Methods for the caller:

    - __init__(server_address, RequestHandlerClass)
    - serve_forever(poll_interval=0.5)
    - shutdown()
    - handle_request()  # if you do not use serve_forever()
    - fileno() -> int   # for selector

    Methods that may be overridden:

    - server_bind()
    - server_activate()
    - get_request() -> request, client_address
    - handle_timeout()
    - verify_request(request, client_address)
    - server_close()
    - process_request(request, client_address)
    - shutdown_request(request)
    - close_request(request)
    - service_actions()
    - handle_error()

    Methods for derived classes:

    - finish_request(request, client_address)

    Class variables that may be overridden by derived classes or
    instances:

    - timeout
    - address_family
    - socket_type
    - allow_reuse_address
    - allow_reuse_port

    Instance variables:

    - RequestHandlerClass
    - socket
    """

    timeout: float | None = None

    # Opt-in: handle_error() logs a client that went away in one line
    # instead of printing a traceback (see _client_went_away()).
    quiet_disconnects = False

    def __init__(self, server_address, RequestHandlerClass):
        """Constructor.  May be extended, do not override."""
        # The serve loop, connections, counters: see _state.py.
        self.__state = _state.ServerState()
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass

    def __setattr__(self, name, value):
        # A request hook set on the instance applies from the next request.
        object.__setattr__(self, name, value)
        hook_set(name)

    def __delattr__(self, name):
        object.__delattr__(self, name)
        hook_set(name)

    def _serve_loop(self):
        return _state.of(self).loop

    # The standard library's event, set when serve_forever() returns.
    @property
    def _BaseServer__is_shut_down(self):
        return _state.of(self).is_shut_down

    # The standard library keeps the request in this name-mangled attribute;
    # code that sets it to stop the loop from a handler keeps working.
    @property
    def _BaseServer__shutdown_request(self):
        return self._serve_loop().shutdown_requested

    @_BaseServer__shutdown_request.setter
    def _BaseServer__shutdown_request(self, value):
        self._serve_loop().request_shutdown(bool(value))

    def server_activate(self):
        """Called by constructor to activate the server.

        May be overridden.
        """

    def serve_forever(self, poll_interval=0.5):
        """Handle one request at a time until shutdown.

        Polls for shutdown every poll_interval seconds. Ignores
        self.timeout. If you need to do periodic tasks, do them in
        another thread.

        The wait happens in the core with the GIL released; shutdown()
        wakes it at once, and signals are handled within 100 ms. Closing
        the server's socket (server_close() from another thread) makes it
        return within 100 ms.
        """
        loop = self._serve_loop()
        is_shut_down = _state.of(self).is_shut_down
        is_shut_down.clear()
        loop.enter()
        try:
            if loop.shutdown_requested:
                return
            if cooperative():
                return self._serve_cooperatively(poll_interval)
            hooks = HookWatch(self)
            handle, arrivals = self._request_taker(loop)
            actions = self.service_actions if self._has_service_actions() else None
            if type(handle) is _message_loop.Messages:
                return handle.serve(poll_interval, actions, hooks)
            fd = self.fileno()
            sock = _owner(self, fd)
            wait = loop.wait
            pool = self._bounded_pool()
            while True:
                if arrivals:
                    # Connections owe a handshake or a header: wait on them
                    # too, and no longer than their first deadline.
                    timeout = arrivals.timeout(poll_interval)
                    event = wait(fd, timeout, pool, sock, arrivals.fileno())
                else:
                    event = wait(fd, poll_interval, pool, sock)
                if event == _core.STOP or event == _core.CLOSED:
                    break
                if event == _core.READY:
                    if hooks.moved():
                        # A request hook was set, patched or deleted.
                        hooks = HookWatch(self)
                        handle, arrivals = self._request_taker(loop)
                        if type(handle) is _message_loop.Messages:
                            return handle.serve(poll_interval, actions, hooks)
                    handle()
                if arrivals:
                    arrivals.step(self)
                if actions is not None:
                    actions()
        finally:
            loop.leave()
            is_shut_down.set()

    def shutdown(self):
        """Stops the serve_forever loop.

        Blocks until the loop has finished. Returns at once if no loop is
        running (the next serve_forever() then returns immediately), and
        raises RuntimeError instead of deadlocking when called from the
        thread running serve_forever().
        """
        loop = self._serve_loop()
        if cooperative() and loop.serving:
            # Wait on the Event, which the hub can switch away from.
            loop.request_shutdown(True)
            _state.of(self).is_shut_down.wait()
            return
        loop.shutdown()

    def _serve_cooperatively(self, poll_interval):
        # serve_forever() as the standard module writes it, waiting through
        # the (monkey-patched) selectors module; see _cooperative.py.
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            loop = self._serve_loop()
            while not loop.shutdown_requested:
                ready = selector.select(poll_interval)
                if loop.shutdown_requested:
                    break
                if ready:
                    self._handle_request_noblock()
                self.service_actions()

    def _wait_readable(self, timeout):
        # None: the socket was closed meanwhile.
        if not cooperative():
            fd = self.fileno()
            return self._serve_loop().wait_readable(fd, timeout, _owner(self, fd))
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            return bool(selector.select(timeout))

    def drain(self, timeout):
        """Stop serving gracefully within `timeout` seconds.

        Stops serve_forever() (as shutdown(), so not from the thread that
        runs it) and closes the listening socket, so new clients are
        refused; lets the requests in flight finish, closing the read side
        of each idle keep-alive connection (one whose handler waits in the
        core's rfile, with nothing buffered, for the start of a line or a
        message after its reply went out through wfile: the next request);
        at the deadline shuts down the
        connections still open. Returns how many requests were still
        running then (0: all finished), and logs them.
        """
        deadline = time.monotonic() + timeout
        self.shutdown()
        messages = _message_loop.stop_accepting(self)
        self.socket.close()
        state = _state.of(self)
        state.close_arrivals(self)
        while state.stats.snapshot()["requests_active"]:
            if time.monotonic() >= deadline:
                return state.cut("drain()")
            if messages is not None:
                # Event-driven connections: served here until each is idle.
                messages.drain_step(0.01)
                continue
            state.close_idle()
            time.sleep(0.01)
        return 0

    def stats(self):
        """Live counters, kept in the core with atomics (always on):
        requests_total and requests_active (a request is a connection on a
        stream server, a datagram on a datagram server), errors (requests
        whose exception went to handle_error()), accept_errors,
        bytes_received and bytes_sent (through a StreamRequestHandler's
        rfile/wfile; over TLS the application's bytes);
        threading servers add workers_busy and workers_idle."""
        return self._serve_loop().stats.snapshot()

    def service_actions(self):
        """Called by the serve_forever() loop.

        May be overridden by a subclass / Mixin to implement any code that
        needs to be run during the loop.
        """

    def handle_request(self):
        """Handle one request, possibly blocking.

        Respects self.timeout. Returns None, without waiting out the
        timeout, once the server's socket is closed from another thread.
        """
        timeout = self.socket.gettimeout()
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        ready = self._wait_readable(timeout)
        if ready is None:
            return None
        if ready:
            return self._handle_request_noblock()
        return self.handle_timeout()

    def _handle_request_noblock(self):
        """Handle one request, without blocking.

        I assume that selector.select() has returned that the socket is
        readable before this function was called, so there should be no risk of
        blocking in get_request().
        """
        self._take_request(None)

    def _take_request(self, arrivals):
        # _handle_request_noblock(); with `arrivals`, a connection that
        # still owes a handshake or a header waits there between
        # verify_request() and process_request().
        loop = self._serve_loop()
        try:
            request, client_address = self.get_request()
        except OSError as err:
            # Out of descriptors, the loop backs off instead of spinning.
            loop.accept_failed(err.errno or 0)
            return
        loop.stats.request_taken()
        self._handle_taken(request, client_address, arrivals=arrivals)

    def _handle_taken(self, request, client_address, failure=None, arrivals=None):
        """The rest of _handle_request_noblock(), for a request counted as
        taken: verify_request(), then process_request(), or handle_error()
        for `failure` (what kept the core from queueing the request). Every
        way out counts the request finished, here and only here, unless it
        was handed on to what counts its finish instead (a ThreadingMixIn
        worker; the Arrivals where it waits for a handshake or a PROXY
        header: see _state.hand_off())."""
        _state.handed_off()  # nothing stale from a call outside this one
        try:
            if failure is None and not self.verify_request(request, client_address):
                self.shutdown_request(request)
                return
            wait = failure is None and arrivals is not None
            wait = wait and self._arrival_wait(request, client_address)
            if wait:
                arrivals.admit(self, request, client_address, wait)
                _state.hand_off()
                return
            self._process_counted(request, client_address, failure)
        finally:
            if not _state.handed_off():
                self._serve_loop().stats.request_finished()
            self._request_done(request)

    def _process_taken(self, request, client_address):
        """process_request() for a request that waited in Arrivals, which
        handed it on counted (see _handle_taken())."""
        _state.handed_off()
        try:
            self._process_counted(request, client_address)
        finally:
            if not _state.handed_off():
                self._serve_loop().stats.request_finished()
            self._request_done(request)

    def _request_done(self, request):
        # What a handler run on this thread registered and left open.
        state = _state.existing(self)
        if state is not None:
            state.connections.request_done(request)

    def _process_counted(self, request, client_address, failure=None):
        # process_request(), or handle_error() for `failure`; the caller
        # counts the request finished.
        try:
            if failure is not None:
                raise failure
            self.process_request(request, client_address)
        except Exception:
            self._serve_loop().stats.error()
            self.handle_error(request, client_address)
            self.shutdown_request(request)
        except:  # noqa: E722 -- the standard library's exact semantics
            self.shutdown_request(request)
            raise

    def handle_timeout(self):
        """Called if no new request arrives within self.timeout.

        Overridden by ForkingMixIn.
        """

    def verify_request(self, request, client_address):
        """Verify the request.  May be overridden.

        Return True if we should proceed with this request.
        """
        return True

    def process_request(self, request, client_address):
        """Call finish_request.

        Overridden by ForkingMixIn and ThreadingMixIn.
        """
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self):
        """Called to clean-up the server.

        May be overridden.
        """

    def finish_request(self, request, client_address):
        """Finish one request by instantiating RequestHandlerClass."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""

    def handle_error(self, request, client_address):
        """Handle an error gracefully.  May be overridden.

        The default is to print a traceback and continue. With
        quiet_disconnects, a client that went away (broken pipe, reset,
        timeout, a message cut short) is one INFO line through the socketserver_rs logger instead.
        """
        if self.quiet_disconnects and _client_went_away(sys.exc_info()[1]):
            import logging

            logging.getLogger("socketserver_rs").info(
                "client %s went away: %r", client_address, sys.exc_info()[1]
            )
            return
        print("-" * 40, file=sys.stderr)
        print(
            "Exception occurred during processing of request from",
            client_address,
            file=sys.stderr,
        )
        import traceback

        traceback.print_exc()
        print("-" * 40, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.server_close()

    def _bounded_pool(self):
        # The worker pool the loop must not outrun (ThreadingMixIn.max_threads).
        return None

    def _has_service_actions(self):
        overridden = type(self).service_actions is not BaseServer.service_actions
        return overridden or "service_actions" in vars(self)

    def _request_taker(self, loop):
        """What the loop calls when the socket is readable, chosen when
        serve_forever() starts and again after a hook was set, and the
        Arrivals it waits on too (or None): the core's fast path when the
        request hooks are ours (see _fast_path.py) and the socket a plain
        socket.socket, else _handle_request_noblock() and the hooks, exactly
        as written."""
        fast = self._fast_path(loop)
        if fast is None:
            arrivals = self._arrivals()
            if arrivals is None:
                return self._handle_request_noblock, None
            return partial(self._take_request, arrivals), arrivals
        if fast.stream and _message_loop.event_driven(self):
            # Handlers that only answer messages share one readiness loop
            # instead of a thread each (see _message_loop.py).
            nodelay = _is_tcp(self.socket) and not _keeps_nagle(self.RequestHandlerClass)
            return _message_loop.serving(self, loop, nodelay), None
        return self._fast_request_taker(fast), None

    def _arrivals(self):
        """Where connections wait for what they still owe (_arrivals.py), if
        this server's connections may owe anything and its own
        _handle_request_noblock() takes them."""
        if "_handle_request_noblock" in vars(self):
            return None
        if type(self)._handle_request_noblock is not BaseServer._handle_request_noblock:
            return None
        if not self._defers_arrivals():
            return None
        state = _state.of(self)
        if state.arrivals is None:
            state.arrivals = Arrivals()
        return state.arrivals

    def _defers_arrivals(self):
        # Whether accepted connections may still owe something: a TLS
        # handshake left for later (ThreadingMixIn), a PROXY header (proxy.py).
        return getattr(self, "_handshake_in_worker", False) and defers_handshakes(
            getattr(self, "socket", None)
        )

    def _arrival_wait(self, request, client_address):
        # What `request` still owes before process_request(), as an
        # _arrivals.Wait, or None.
        return handshake_owed(self, request, client_address)

    def _close_arrivals(self):
        _state.of(self).close_arrivals(self)

    def _fast_request_taker(self, fast):
        """The fast path of a server that runs each request itself.
        ThreadingMixIn supplies its own, which queues requests for workers."""
        # Datagrams waiting in the socket are taken in a row without going
        # back to poll(2) for each, unless service_actions() must run between
        # requests. (Connections are not: accept() would block when none waits.)
        batch = 1 if fast.stream or self._has_service_actions() else _DATAGRAM_BATCH
        return partial(self._handle_fast, fast.take, batch)

    def _handle_fast(self, take, batch):
        # _handle_request_noblock() with get_request() done by the core and
        # verify_request(), process_request() and finish_request() inlined.
        end_request = self.shutdown_request
        stats = self._serve_loop().stats
        registry = _state.of(self).connections
        # A hook patched on the class meanwhile stops the batch (see take()).
        since = _core.class_tag(self)
        for _ in range(batch):
            taken = take(self, since)
            if taken is None:
                return
            request, client_address = taken
            try:
                self.RequestHandlerClass(request, client_address, self)
            except Exception:
                stats.error()
                self.handle_error(request, client_address)
                end_request(request)
            except:  # noqa: E722 -- the standard library's exact semantics
                end_request(request)
                raise
            else:
                end_request(request)
            finally:
                stats.request_finished()
                registry.request_done(request)

    def _fast_path(self, loop):
        sock = getattr(self, "socket", None)
        if type(sock) is not socket.socket or sock.family not in _FAST_FAMILIES:
            return None
        if sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            return None
        # Read first: a hook set while they are checked stops this fast path.
        hooks = hooks_version()
        if not hooks_are_standard(self):
            return None
        max_packet_size = getattr(self, "max_packet_size", 0)
        if type(max_packet_size) is not int or max_packet_size < 0:
            return None
        stream = sock.type == socket.SOCK_STREAM
        return _core.FastPath(sock, stream, max_packet_size, loop, _is_tcp(sock), hooks)


@standard_hooks
class TCPServer(BaseServer):
    """Base class for various socket-based server classes.

    Defaults to synchronous IP stream (i.e., TCP).

    Methods for the caller:

    - __init__(server_address, RequestHandlerClass, bind_and_activate=True)
    - serve_forever(poll_interval=0.5)
    - shutdown()
    - handle_request()  # if you don't use serve_forever()
    - fileno() -> int   # for selector

    Methods that may be overridden:

    - server_bind()
    - server_activate()
    - get_request() -> request, client_address
    - handle_timeout()
    - verify_request(request, client_address)
    - process_request(request, client_address)
    - shutdown_request(request)
    - close_request(request)
    - handle_error()

    Methods for derived classes:

    - finish_request(request, client_address)

    Class variables that may be overridden by derived classes or
    instances:

    - timeout
    - address_family
    - socket_type
    - request_queue_size (only for stream sockets)
    - allow_reuse_address
    - allow_reuse_port

    Instance variables:

    - server_address
    - RequestHandlerClass
    - socket
    """

    address_family = socket.AF_INET

    socket_type = socket.SOCK_STREAM

    # 3.15's standard module listens with socket.SOMAXCONN; before, 5 (which
    # server_activate() takes as SOMAXCONN all the same).
    request_queue_size = getattr(socket, "SOMAXCONN", 5) if sys.version_info >= (3, 15) else 5

    allow_reuse_address = False

    allow_reuse_port = False

    # Opt-in: an ssl.SSLContext that server_activate() wraps the listening
    # socket with; a threading server then completes each handshake on the
    # request's worker, within handshake_timeout (see _tls.py).
    ssl_context = None

    # Opt-in: with address_family = AF_INET6, accept IPv4 clients on the
    # same socket (IPV6_V6ONLY off), as socket.create_server(...,
    # dualstack_ipv6=True) does; they appear as ('::ffff:a.b.c.d', port, 0, 0).
    dualstack_ipv6 = False

    # Whether a TLS handshake may wait for the request's worker (_tls.py).
    _handshake_in_worker = False

    def __init__(
        self, server_address, RequestHandlerClass, bind_and_activate=True, *, ssl_context=None
    ):
        """Constructor.  May be extended, do not override."""
        if ssl_context is not None:
            self.ssl_context = ssl_context
        BaseServer.__init__(self, server_address, RequestHandlerClass)
        self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except:  # noqa: E722 -- close on anything, then re-raise
                self.server_close()
                raise

    def server_bind(self):
        """Called by constructor to bind the socket.

        May be overridden.

        A stream socket of an IP family gets SO_REUSEADDR on POSIX (as
        asyncio does) while allow_reuse_address is left at the standard
        default: a restarted server can bind its port at once despite
        connections in TIME_WAIT, and it still cannot bind a port another
        socket listens on. A value set by a subclass or instance is used as
        given.
        """
        reuse_address = bool(self.allow_reuse_address) or _reuse_by_default(self)
        reuse_address = reuse_address and hasattr(socket, "SO_REUSEADDR")
        # Linux (6.12.9 on) refuses SO_REUSEPORT for families other than
        # AF_INET/AF_INET6; the standard module skips it there from 3.14.
        reuse_port = (
            bool(self.allow_reuse_port)
            and hasattr(socket, "SO_REUSEPORT")
            and self.address_family in _TCP_FAMILIES
        )
        if reuse_address or reuse_port:
            _core.set_reuse(self.socket.fileno(), reuse_address, reuse_port)
        if self.dualstack_ipv6:
            if self.address_family != getattr(socket, "AF_INET6", None):
                raise ValueError("dualstack_ipv6 requires address_family = socket.AF_INET6")
            if not socket.has_dualstack_ipv6():
                raise ValueError("dualstack_ipv6 is not supported on this platform")
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self):
        """Called by constructor to activate the server.

        May be overridden.

        A request_queue_size left at the standard default of 5 listens
        with the system's maximum backlog instead, so that a burst of
        connections is not refused or left waiting for a SYN retransmit;
        a value set by a subclass or instance is used as given.
        """
        self.socket.listen(_backlog(self))
        if self.ssl_context is not None:
            self.socket = self.ssl_context.wrap_socket(self.socket, server_side=True)

    def server_close(self):
        """Called to clean-up the server.

        May be overridden.
        """
        self.socket.close()
        _message_loop.close_connections(self)
        self._close_arrivals()

    def fileno(self):
        """Return socket file number.

        Interface required by selector.
        """
        return self.socket.fileno()

    def get_request(self):
        """Get the request and client address from the socket.

        May be overridden.

        TCP connections get TCP_NODELAY, so that a reply written in
        several pieces is not held back by Nagle's algorithm. A threading
        server whose socket is wrapped for TLS leaves the handshake to the
        request's worker (see _tls.py).
        """
        deferred = self._handshake_in_worker and accept_deferring_handshake(self.socket)
        request, client_address = deferred or self.socket.accept()
        if _is_tcp(request):
            try:
                request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return request, client_address

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        try:
            # explicitly shutdown.  socket.close() merely releases
            # the socket and waits for GC to perform the actual close.
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # some platforms may raise ENOTCONN here
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""
        request.close()


@standard_hooks
class UDPServer(TCPServer):
    """UDP server class."""

    allow_reuse_address = False

    allow_reuse_port = False

    socket_type = socket.SOCK_DGRAM

    max_packet_size = 8192

    def get_request(self):
        data, client_addr = self.socket.recvfrom(self.max_packet_size)
        return (data, self.socket), client_addr

    def server_activate(self):
        # No need to call listen() for UDP.
        pass

    def shutdown_request(self, request):
        # No need to shutdown anything.
        self.close_request(request)

    def close_request(self, request):
        # No need to close anything.
        pass


if hasattr(socket, "AF_UNIX"):

    class UnixStreamServer(TCPServer):
        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        address_family = socket.AF_UNIX
