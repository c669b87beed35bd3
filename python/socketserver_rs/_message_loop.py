"""Framed messages without a thread per connection.

A MessageRequestHandler that only answers messages (it overrides
handle_message() and not handle()) keeps no stack between them, so it needs
no thread of its own. When serve_forever() would take the fast path on a
stream server, the core's MessageLoop waits on the listening socket and
every connection at once, reads and decodes the messages, and writes the
replies; this module runs the handlers:

* per connection, the handler object is built without handle():
  setup() once when the connection opens, finish() once when it ends, then
  the server's shutdown_request();
* each message goes to handler.handle_message() inline on the serving
  thread (plain servers), or on a worker of the pool (ThreadingMixIn);
  a connection has one message with its handler at a time, so replies keep
  their order;
* an exception from handle_message(), a message over max_message_size,
  one cut short, or a socket error ends that connection through the
  server's handle_error(), as it would end handle() in the thread model;
* the loop reads the connection, so the handler's rfile refuses reads
  (io.UnsupportedOperation, saying why) rather than wait for bytes the
  loop holds;
* once a request hook is set or patched while serving (see _fast_path.py),
  each new connection leaves the loop, before anything is read from it,
  for the server's hooks: verify_request(), process_request() and on,
  which build its handler in the thread model. (The loop still accepts the
  connection itself: fileno(), get_request() and _handle_request_noblock()
  set while serving apply from the next serve_forever().)

Deadlines: with ``timeout`` set on the handler class, a connection whose
message or reply makes no progress for that many seconds is closed (one
INFO line through the socketserver_rs logger, then finish()), and with
``idle_timeout`` one that stays idle between messages for that long.

The default; ``event_driven = False`` on the handler class keeps a thread
per connection. One that overrides __init__(), handle(), messages(),
read_message() or write_message() takes the thread model all the same: the
loop stands in for those.
"""

from __future__ import annotations

import io
import os
import socket
import weakref
from typing import Any, Callable, NoReturn, Optional

from socketserver_rs import _core, _state
from socketserver_rs._fast_path import HookWatch, hooks_are_standard
from socketserver_rs.messages import MessageRequestHandler

__all__ = ["event_driven", "serving", "stop_accepting", "close_connections"]

_OPENED = _core.EVENT_OPENED
_MESSAGE = _core.EVENT_MESSAGE
_CLOSED = _core.EVENT_CLOSED
_EXPIRED = _core.EVENT_EXPIRED

_STOOD_IN_FOR = ("__init__", "handle", "messages", "read_message", "write_message")


def event_driven(server: Any) -> bool:
    """Whether the server's handler class answers messages without a
    thread of its own (see the module's docstring)."""
    cls = getattr(server, "RequestHandlerClass", None)
    if not isinstance(cls, type) or not issubclass(cls, MessageRequestHandler):
        return False
    if not getattr(cls, "event_driven", False):
        return False
    if cls.handle_message is MessageRequestHandler.handle_message:
        return False
    # The loop stands in for handle() and the reading and writing it does.
    for name in _STOOD_IN_FOR:
        if getattr(cls, name) is not getattr(MessageRequestHandler, name):
            return False
    for name in ("timeout", "idle_timeout"):
        if not _is_deadline(getattr(cls, name, None)):
            return False  # the thread model says what is wrong with it
    max_size = cls.max_message_size
    return type(max_size) is int and max_size >= 0


def serving(server: Any, loop: _core.ServeLoop, nodelay: bool) -> Messages:
    """The server's Messages, made on first use and kept across
    serve_forever() calls, so that connections outlive a shutdown()."""
    state = _state.of(server)
    messages: Optional[Messages] = state.messages
    sock = server.socket
    if messages is not None and messages.pid != os.getpid():
        # A forked child: the loop and its connections are the parent's.
        messages.forget()
        messages = None
    if messages is None or messages.core.listener_fd != sock.fileno():
        cls = server.RequestHandlerClass
        core = _core.MessageLoop(
            sock, loop, cls.max_message_size, nodelay, cls.timeout, cls.idle_timeout
        )
        messages = state.messages = Messages(server, core, loop.stats)
    return messages


def stop_accepting(server: Any) -> Optional[Messages]:
    """drain(), before it closes the listening socket: the server's
    Messages, which drain() then serves with drain_step(); None if its
    connections have a thread each."""
    messages: Optional[Messages] = _state.of(server).messages
    if messages is not None:
        messages.core.stop_accepting()
    return messages


def _is_deadline(seconds: Any) -> bool:
    if seconds is None:
        return True
    return type(seconds) in (int, float) and 0 < seconds < 1e9


def close_connections(server: Any) -> None:
    """server_close(): end every event-driven connection (see
    Messages.close_all())."""
    messages = _state.of(server).messages
    if messages is not None:
        messages.close_all()


def _send_last_reply(sock: Any, reply: bytes) -> None:
    """server_close() forgot the connection while its handler ran (on a
    worker): the reply to the message in flight goes out here, before the
    connection ends. It waits as a thread-model handler's write would; a
    client gone, or the cut at close_timeout, ends it."""
    try:
        sock.settimeout(None)
        _core.send_message(sock, reply)
    except OSError:
        pass  # the client went away, or the connection was cut


def _shut_down(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed meanwhile, or never connected


class Messages:
    """The Python half of a server's message loop: the handler of each
    connection, and what runs them."""

    def __init__(self, server: Any, core: _core.MessageLoop, stats: _core.ServerStats) -> None:
        # Weak: the server's state holds this, and a cycle would keep the
        # loop's descriptors open after server_close() until a collection.
        self._server = weakref.ref(server)
        self.core = core
        self.stats = stats
        self.handlers: dict[int, MessageRequestHandler] = {}
        # Each connection's socket as accepted, held open (_hold()) until
        # the loop forgot the connection and its handler is done.
        self.sockets: dict[int, Any] = {}
        self.pid = os.getpid()
        # Whether new connections go to the server's hooks instead, as
        # decided when `hooks` last moved.
        self.hooks = HookWatch(server)
        self.hooked = False

    @property
    def server(self) -> Any:
        return self._server()

    def forget(self) -> None:
        """In a forked child: close this process's copies of the parent's
        connections (the parent still serves them), without finish()."""
        for handler in self.handlers.values():
            try:
                handler.request.close()
            except OSError:
                pass
        for sock in self.sockets.values():
            _release(sock)
        self.handlers.clear()
        self.sockets.clear()

    def close_all(self, shut: bool = False) -> None:
        """End every connection. One whose handler has a message is ended
        by whoever runs that handler, once it returns; with shut (a
        deadline) its socket is shut down first."""
        for conn_id, busy in self.core.close_all():
            if not busy:
                self.end(conn_id)
            elif shut:
                handler = self.handlers.get(conn_id)
                if handler is not None:
                    _shut_down(handler.request)

    def serve(
        self, poll_interval: Optional[float], actions: Optional[Callable[[], Any]], hooks: HookWatch
    ) -> None:
        """serve_forever()'s loop: wait, then run what happened. `hooks`:
        a HookWatch made before the hooks were found standard."""
        wait = self.core.wait
        handle = self.handle
        self.hooks = hooks
        self.hooked = False
        while True:
            events = wait(poll_interval)
            if events is None:
                return
            handle(events)
            if actions is not None:
                actions()

    def handle(self, events: list[tuple[int, int, Any]]) -> None:
        pool = getattr(self.server, "_worker_pool", None)
        submit = pool().submit if pool is not None else None
        handlers = self.handlers
        run = self.run
        # Taken one by one, so that each payload is freed once its handler
        # is done with it, not at the end of the batch.
        events.reverse()
        while events:
            kind, conn_id, payload = events.pop()
            if kind == _MESSAGE:
                handler = handlers.get(conn_id)
                if handler is None:
                    continue
                if submit is None:
                    run(conn_id, handler, payload)
                else:
                    self.submit(submit, conn_id, handler, payload)
            elif kind == _OPENED:
                self.opened(conn_id, *payload)
            elif kind == _CLOSED:
                self.end(conn_id)
            elif kind == _EXPIRED:
                self.expired(conn_id, payload)
            else:
                self.end(conn_id, payload)

    def drain_step(self, timeout: float) -> None:
        """One step of drain(), after shutdown(): end the connections now
        between messages, then serve the others for up to timeout seconds."""
        core = self.core
        for conn_id in core.idle():
            if core.close(conn_id):
                self.end(conn_id)
        events = core.wait(timeout, True)
        if events:
            self.handle(events)

    def submit(
        self,
        submit: Callable[..., Any],
        conn_id: int,
        handler: MessageRequestHandler,
        message: bytes | _core.Message,
    ) -> None:
        try:
            submit(self.run, (conn_id, handler, message))
        except Exception as exc:
            # No worker could start, or the pool was closed.
            self.core.close(conn_id)
            self.end(conn_id, exc)

    def opened(self, conn_id: int, request: Any, client_address: Any) -> None:
        server = self.server
        if self.hooks.moved():
            self.hooks = HookWatch(server)
            self.hooked = not hooks_are_standard(server)
        if self.hooked:
            # Forgotten by the loop before the hooks see it.
            self.core.close(conn_id)
            server._handle_taken(request, client_address)
            return
        _hold(request)
        self.sockets[conn_id] = request
        cls = server.RequestHandlerClass
        handler = cls.__new__(cls)
        handler.request = request
        handler.client_address = client_address
        handler.server = server
        try:
            handler.setup()
        except Exception:
            self.core.close(conn_id)
            self.stats.error()
            self.stats.request_finished()
            server.handle_error(request, client_address)
            server.shutdown_request(request)
            _release(self.sockets.pop(conn_id))
            return
        except BaseException:
            self.core.close(conn_id)
            self.stats.request_finished()
            server.shutdown_request(request)
            _release(self.sockets.pop(conn_id))
            raise
        handler.rfile = _LoopReadsThis(getattr(handler, "rfile", None), request)
        _state.of(server).connections.owned_elsewhere(getattr(handler, "connection", request))
        self.handlers[conn_id] = handler

    def run(
        self, conn_id: int, handler: MessageRequestHandler, message: bytes | _core.Message
    ) -> None:
        """One message through its handler, and the reply out."""
        reply: Optional[bytes]
        try:
            sock = self.sockets[conn_id]
            if _closed(sock):
                # Closed (by its handler, or anyone) between messages.
                reply, hangup = None, True
            else:
                if type(message) is _core.Message:
                    # A large one becomes bytes on this thread (see _core.Message).
                    message = message.take()
                answer = handler.handle_message(message)
                if answer is None or type(answer) is bytes:
                    reply = answer
                else:
                    with memoryview(answer) as view:
                        reply = view.tobytes()
                hangup = handler.close_connection
                if _closed(sock):
                    # The socket the reply was for is gone: so is the reply.
                    reply, hangup = None, True
            if self.core.reply(conn_id, reply, hangup):
                return
            if reply is not None and not _closed(sock):
                _send_last_reply(sock, reply)
        except Exception as exc:
            self.core.close(conn_id)
            self.end(conn_id, exc)
            return
        except BaseException:
            self.core.close(conn_id)
            self.end(conn_id, None, reraise=True)
            raise
        # Closed meanwhile by server_close(): ending it is ours.
        self.end(conn_id)

    def expired(self, conn_id: int, why: str) -> None:
        handler = self.handlers.get(conn_id)
        if handler is not None:
            import logging

            logging.getLogger("socketserver_rs").info(
                "closed the connection from %s: %s", handler.client_address, why
            )
        self.end(conn_id)

    def end(
        self, conn_id: int, error: Optional[BaseException] = None, reraise: bool = False
    ) -> None:
        """finish(), handle_error() if error, then shutdown_request(): once
        per connection, by whoever takes its handler."""
        handler = self.handlers.pop(conn_id, None)
        if handler is None:
            return
        server = self.server
        request = handler.request
        stats = self.stats
        try:
            try:
                if error is not None:
                    raise error
            finally:
                handler.finish()
        except Exception:
            if not reraise:
                stats.error()
                server.handle_error(request, handler.client_address)
        finally:
            stats.request_finished()
            try:
                server.shutdown_request(request)
            finally:
                _release(self.sockets.pop(conn_id))


def _hold(sock: Any) -> None:
    """Keep sock's descriptor open until _release(), even if it is closed
    meanwhile: close() defers the real close while a file made by
    makefile() uses the socket, and the loop is counted as one."""
    sock._io_refs += 1


def _release(sock: Any) -> None:
    sock._decref_socketios()


def _closed(sock: Any) -> bool:
    """Whether sock was closed, even if _hold() keeps its descriptor open."""
    closed: bool = sock._closed or sock.fileno() == -1
    return closed


def _refuse_read(*args: object, **kwargs: object) -> NoReturn:
    raise io.UnsupportedOperation(
        "not readable: this handler is event-driven, the server's message loop "
        "reads its connection and hands each message to handle_message(); "
        "override handle(), or set event_driven = False, to read rfile yourself"
    )


class _LoopReadsThis:
    """An event-driven handler's rfile: reads are refused (the loop may
    hold the bytes already). The file setup() made is closed at once, so an
    idle connection holds no read buffer; closed, close() and fileno() keep
    their meaning."""

    read = read1 = readline = readlines = readinto = readinto1 = peek = _refuse_read
    read_message = __next__ = _refuse_read

    def __init__(self, rfile: Any, sock: Any) -> None:
        self._rfile = rfile
        self._sock = sock
        self._closed = False
        if type(rfile) in (_core.SocketReader, io.BufferedReader):
            rfile.close()

    def __iter__(self) -> NoReturn:
        _refuse_read()

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        if self._rfile is not None:
            self._rfile.close()

    def fileno(self) -> int:
        return self._sock.fileno()  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)
