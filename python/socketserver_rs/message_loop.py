"""Framed messages without a thread per connection.

A MessageRequestHandler that only answers messages (it overrides
handle_message() and not handle()) keeps no stack between them, so it needs
no thread of its own. When such a handler sets ``event_driven = True`` and
serve_forever() would take the fast path on a stream server, the core's MessageLoop waits on the
listening socket and every connection at once, reads and decodes the
messages, and writes the replies; this module runs the handlers:

* per connection, the handler object is built without handle():
  setup() once when the connection opens, finish() once when it ends, then
  the server's shutdown_request();
* each message goes to handler.handle_message() inline on the serving
  thread (plain servers), or on a worker of the pool (ThreadingMixIn);
  a connection has one message with its handler at a time, so replies keep
  their order;
* an exception from handle_message(), a message over max_message_size,
  one cut short, or a socket error ends that connection through the
  server's handle_error(), as it would end handle() in the thread model.

Opt-in: a handler class takes this path with ``event_driven = True`` (the
default, False, keeps a thread per connection). One that overrides
handle(), or has a ``timeout``, takes the thread model all the same: there
the timeout is a socket timeout of its own thread.
"""

from __future__ import annotations

from socketserver_rs import _core
from socketserver_rs.messages import MessageRequestHandler

__all__ = ["event_driven", "serving", "close_connections"]

_OPENED = _core.EVENT_OPENED
_MESSAGE = _core.EVENT_MESSAGE
_CLOSED = _core.EVENT_CLOSED

# Where a server keeps its MessageLoop and the handlers of its connections.
_ATTRIBUTE = "_BaseServer__messages"


def event_driven(server):
    """Whether the server's handler class answers messages without a
    thread of its own (see the module's docstring)."""
    cls = getattr(server, "RequestHandlerClass", None)
    if not isinstance(cls, type) or not issubclass(cls, MessageRequestHandler):
        return False
    if not getattr(cls, "event_driven", False):
        return False
    if cls.handle is not MessageRequestHandler.handle:
        return False
    if cls.handle_message is MessageRequestHandler.handle_message:
        return False
    if cls.__init__ is not MessageRequestHandler.__init__:
        return False
    if getattr(cls, "timeout", None) is not None:
        return False
    max_size = cls.max_message_size
    return type(max_size) is int and max_size >= 0


def serving(server, loop, nodelay):
    """The server's Messages, made on first use and kept across
    serve_forever() calls, so that connections outlive a shutdown()."""
    messages = server.__dict__.get(_ATTRIBUTE)
    sock = server.socket
    if messages is None or messages.core.listener_fd != sock.fileno():
        max_size = server.RequestHandlerClass.max_message_size
        core = _core.MessageLoop(sock, loop, max_size, nodelay)
        messages = server.__dict__[_ATTRIBUTE] = Messages(server, core, loop.stats)
    return messages


def close_connections(server):
    """server_close(): end every connection. One whose handler has a
    message is ended by whoever runs that handler, once it returns."""
    messages = server.__dict__.get(_ATTRIBUTE)
    if messages is None:
        return
    for conn_id, busy in messages.core.close_all():
        if not busy:
            messages.end(conn_id)


class Messages:
    """The Python half of a server's message loop: the handler of each
    connection, and what runs them."""

    def __init__(self, server, core, stats):
        self.server = server
        self.core = core
        self.stats = stats
        self.handlers = {}

    def serve(self, poll_interval, actions):
        """serve_forever()'s loop: wait, then run what happened."""
        pool = getattr(self.server, "_worker_pool", None)
        submit = pool().submit if pool is not None else None
        run = self.run
        opened = self.opened
        end = self.end
        handlers = self.handlers
        wait = self.core.wait
        while True:
            events = wait(poll_interval)
            if events is None:
                return
            for kind, conn_id, payload in events:
                if kind == _MESSAGE:
                    handler = handlers.get(conn_id)
                    if handler is None:
                        continue
                    if submit is None:
                        run(conn_id, handler, payload)
                    else:
                        self.submit(submit, conn_id, handler, payload)
                elif kind == _OPENED:
                    opened(conn_id, *payload)
                elif kind == _CLOSED:
                    end(conn_id)
                else:
                    end(conn_id, payload)
            if actions is not None:
                actions()

    def submit(self, submit, conn_id, handler, message):
        try:
            submit(self.run, (conn_id, handler, message))
        except Exception as exc:
            # No worker could start, or the pool was closed.
            self.core.close(conn_id)
            self.end(conn_id, exc)

    def opened(self, conn_id, request, client_address):
        server = self.server
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
            return
        except BaseException:
            self.core.close(conn_id)
            self.stats.request_finished()
            server.shutdown_request(request)
            raise
        self.handlers[conn_id] = handler

    def run(self, conn_id, handler, message):
        """One message through its handler, and the reply out."""
        try:
            reply = handler.handle_message(message)
            if reply is not None and type(reply) is not bytes:
                with memoryview(reply) as view:
                    reply = view.tobytes()
            if self.core.reply(conn_id, reply):
                return
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

    def end(self, conn_id, error=None, reraise=False):
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
            server.shutdown_request(request)
