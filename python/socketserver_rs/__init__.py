"""Python's socketserver module on a Rust core.

``import socketserver_rs as socketserver`` and programs written for the
standard module keep working: same classes, hierarchy, attributes and hooks.
The serve loop, accept and recvfrom, the worker pool of ThreadingMixIn and
the rfile/wfile of StreamRequestHandler run in Rust.
"""

import os
import selectors as selectors
import socket
import sys
import threading as threading
from io import BufferedIOBase as BufferedIOBase
from time import monotonic as time  # noqa: F401 -- the standard module has it so

from socketserver_rs._patching import patch as patch
from socketserver_rs.handlers import (
    BaseRequestHandler,
    DatagramRequestHandler,
    StreamRequestHandler,
)
from socketserver_rs.handlers import _SocketWriter as _SocketWriter
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


# Private names of the standard module that programs import from it (not in
# __all__ there either): the selector its waits use, a writer usable as an
# unbuffered wfile (handlers.py), and, below, the thread lists of its
# ThreadingMixIn.
_ServerSelector: "type[selectors.BaseSelector]"
if hasattr(selectors, "PollSelector"):
    _ServerSelector = selectors.PollSelector
else:
    _ServerSelector = selectors.SelectSelector

# Taken from the standard module itself, on first use, where the running
# Python has them.
_FROM_STANDARD_MODULE = ("_Threads", "_NoThreads")


def _standard_module():
    """The standard library's socketserver: the one imported, else a copy
    loaded from its file and registered nowhere (patch() may have made the
    name "socketserver" this package)."""
    import importlib.machinery
    import importlib.util

    # socketserver.py sits beside selectors.py, wherever the library lives.
    where = [os.path.dirname(selectors.__file__)]
    spec = importlib.machinery.PathFinder.find_spec("socketserver", where)
    if spec is None or spec.loader is None:
        return None
    loaded = sys.modules.get("socketserver")
    if loaded is not None and getattr(loaded, "__file__", None) == spec.origin:
        return loaded
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def __getattr__(name):
    if name in _FROM_STANDARD_MODULE:
        standard = _standard_module()
        if standard is not None and hasattr(standard, name):
            value = getattr(standard, name)
            globals()[name] = value
            return value
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
