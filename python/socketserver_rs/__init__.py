"""Python's socketserver module on a Rust core.

``import socketserver_rs as socketserver`` and programs written for the
standard module keep working: same classes, hierarchy, attributes and hooks.
The serve loop, accept and recvfrom, the worker pool of ThreadingMixIn and
the rfile/wfile of StreamRequestHandler run in Rust.
"""

import os
import socket
import sys

from socketserver_rs._patching import patch as patch
from socketserver_rs.handlers import (
    BaseRequestHandler,
    DatagramRequestHandler,
    StreamRequestHandler,
)
from socketserver_rs.messages import MessageClient as MessageClient
from socketserver_rs.messages import MessageRequestHandler as MessageRequestHandler
from socketserver_rs.messages import recv_exactly as recv_exactly
from socketserver_rs.messages import recv_message as recv_message
from socketserver_rs.messages import send_message as send_message
from socketserver_rs.mixins import ThreadingMixIn
from socketserver_rs.servers import BaseServer, TCPServer, UDPServer

__all__ = [
    "BaseServer",
    "TCPServer",
    "UDPServer",
    "ThreadingUDPServer",
    "ThreadingTCPServer",
    "BaseRequestHandler",
    "StreamRequestHandler",
    "DatagramRequestHandler",
    "ThreadingMixIn",
]
if hasattr(os, "fork"):
    from socketserver_rs.mixins import ForkingMixIn

    __all__.extend(["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"])
if hasattr(socket, "AF_UNIX"):
    from socketserver_rs.servers import UnixDatagramServer, UnixStreamServer

    __all__.extend(
        [
            "UnixStreamServer",
            "UnixDatagramServer",
            "ThreadingUnixStreamServer",
            "ThreadingUnixDatagramServer",
        ]
    )
    if hasattr(os, "fork"):
        __all__.extend(["ForkingUnixStreamServer", "ForkingUnixDatagramServer"])


if hasattr(os, "fork"):

    class ForkingUDPServer(ForkingMixIn, UDPServer):
        pass

    class ForkingTCPServer(ForkingMixIn, TCPServer):
        pass


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    pass


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    pass


if hasattr(socket, "AF_UNIX"):

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
        pass

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
        pass

    if hasattr(os, "fork"):

        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
            pass

        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
            pass


def __getattr__(name):
    # The standard module's __version__ is "0.4", deprecated from 3.15 on.
    # This package's own version: importlib.metadata.version("socketserver_rs").
    if name == "__version__":
        if sys.version_info >= (3, 15):
            import warnings

            warnings.warn(
                "'__version__' is deprecated and slated for removal in Python 3.20",
                DeprecationWarning,
                stacklevel=2,
            )
        return "0.4"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _present_as_socketserver():
    # Like decimal.Decimal (implemented in _decimal) reports the module it
    # stands for, the public classes report "socketserver": code that
    # introspects the standard module's names sees the same answer.
    for name in __all__:
        globals()[name].__module__ = "socketserver"


_present_as_socketserver()
