import socket
from typing import Any, TypeVar, Union

__all__ = ["SD_LISTEN_FDS_START", "adopt", "listen_fds", "listen_fds_with_names"]

_S = TypeVar("_S")

SD_LISTEN_FDS_START: int
"""The first descriptor passed (3)."""

def listen_fds_with_names(unset_environment: bool = True) -> list[tuple[str, socket.socket]]:
    """The sockets passed to this process with their LISTEN_FDNAMES names;
    empty when none were, or LISTEN_PID names another process."""

def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The sockets passed to this process (systemd socket activation)."""

def adopt(
    ServerClass: type[_S],
    RequestHandlerClass: Any,
    sock_or_fd: Union[socket.socket, int],
    *args: Any,
    **kwargs: Any,
) -> _S:
    """A ServerClass server serving on an open listening socket (or
    descriptor number) instead of binding one; it owns the socket."""
