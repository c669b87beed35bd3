"""Socket activation: serve on listening sockets someone else opened.

systemd (``.socket`` units), and tools that speak its protocol (s6,
``systemd-socket-activate``, launchers and supervisors that keep a port
open across restarts), start a server with its listening sockets already
open as descriptors 3, 4, ..., and describe them in the environment:
``LISTEN_PID`` (the process they are meant for), ``LISTEN_FDS`` (how many)
and ``LISTEN_FDNAMES`` (their names, colon-separated). A server adopts
them instead of binding::

    from socketserver_rs import ThreadingTCPServer
    from socketserver_rs.activation import adopt, listen_fds

    (sock,) = listen_fds()
    with adopt(ThreadingTCPServer, Handler, sock) as server:
        server.serve_forever()

``listen_fds()`` follows ``sd_listen_fds(unset_environment=1)``: the
sockets are returned only when ``LISTEN_PID`` is this process (variables
inherited from a parent are ignored), each descriptor is made
close-on-exec, and the three variables are removed from ``os.environ``
whatever they said, so that the process's own children do not take the
sockets as theirs. ``adopt()`` also takes a descriptor number, for
launchers that document one (``--fd 5``).
"""

from __future__ import annotations

import os
import socket
from typing import Any, Union

__all__ = ["SD_LISTEN_FDS_START", "adopt", "listen_fds", "listen_fds_with_names"]

# The first descriptor passed (sd-daemon.h).
SD_LISTEN_FDS_START = 3

_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds_with_names(unset_environment: bool = True) -> list[tuple[str, socket.socket]]:
    """The sockets passed to this process, each with its name from
    ``LISTEN_FDNAMES`` (``"unknown"`` where none was given), in descriptor
    order from 3; an empty list when none were passed or ``LISTEN_PID``
    names another process. ValueError when the variables are malformed.
    """
    environ = os.environ
    try:
        pid, count = environ.get("LISTEN_PID"), environ.get("LISTEN_FDS")
        if pid is None or count is None:
            return []
        if not pid.isdigit() or not count.isdigit():
            raise ValueError(f"LISTEN_PID={pid!r}, LISTEN_FDS={count!r}: not numbers")
        if int(pid) != os.getpid():
            return []
        names = environ.get("LISTEN_FDNAMES")
        names_list = names.split(":") if names is not None else []
        if names is not None and len(names_list) != int(count):
            raise ValueError(f"LISTEN_FDNAMES names {len(names_list)} sockets, LISTEN_FDS {count}")
        sockets = []
        for index in range(int(count)):
            fd = SD_LISTEN_FDS_START + index
            os.set_inheritable(fd, False)
            sockets.append(socket.socket(fileno=fd))
        return list(zip(names_list or ["unknown"] * len(sockets), sockets))
    finally:
        if unset_environment:
            for name in _VARIABLES:
                environ.pop(name, None)


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The sockets passed to this process (see listen_fds_with_names())."""
    return [sock for _, sock in listen_fds_with_names(unset_environment)]


def _kind(family: int, sock_type: int) -> str:
    def name(value: int) -> str:
        return getattr(value, "name", str(value))

    return f"{name(family)} {name(sock_type)}"


def adopt(
    ServerClass: Any,
    RequestHandlerClass: Any,
    sock_or_fd: Union[socket.socket, int],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """A server of ``ServerClass`` serving on an open socket instead of one
    it binds: ``ServerClass(address, RequestHandlerClass,
    bind_and_activate=False, ...)``, the socket that constructor made
    closed, then ``server.socket`` and ``server.server_address`` set to the
    adopted socket and its address. Further arguments go to the
    constructor.

    ``sock_or_fd`` is a ``socket.socket`` or a descriptor number; either way
    the server owns it from then on (``server_close()`` closes it), and a
    descriptor is made close-on-exec. Its family and type must be the
    class's ``address_family`` and ``socket_type``, and a stream socket must
    be listening: ValueError otherwise (a descriptor number given is left
    open then).
    """
    given_fd = isinstance(sock_or_fd, int)
    sock = socket.socket(fileno=sock_or_fd) if isinstance(sock_or_fd, int) else sock_or_fd
    try:
        wanted = (ServerClass.address_family, ServerClass.socket_type)
        if (sock.family, sock.type) != wanted:
            raise ValueError(
                f"cannot adopt a {_kind(sock.family, sock.type)} socket into "
                f"{ServerClass.__name__}, which serves {_kind(*wanted)} sockets"
            )
        if sock.type == socket.SOCK_STREAM and not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            raise ValueError(f"cannot adopt a stream socket that is not listening: {sock!r}")
        sock.set_inheritable(False)
        address = sock.getsockname()
        server = ServerClass(address, RequestHandlerClass, *args, bind_and_activate=False, **kwargs)
    except BaseException:
        if given_fd:
            sock.detach()  # the caller's descriptor stays open
        raise
    # The constructor made a socket of its own: close it before taking ours.
    server.socket.close()
    server.socket = sock
    server.server_address = address
    return server
