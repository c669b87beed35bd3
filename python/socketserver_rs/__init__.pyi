import selectors as selectors
import sys
import threading as threading
from io import BufferedIOBase as BufferedIOBase
from socket import socket as _socket
from typing import Any

from socketserver_rs._patching import patch as patch
from socketserver_rs.handlers import BaseRequestHandler as BaseRequestHandler
from socketserver_rs.handlers import DatagramRequestHandler as DatagramRequestHandler
from socketserver_rs.handlers import StreamRequestHandler as StreamRequestHandler
from socketserver_rs.messages import MessageClient as MessageClient
from socketserver_rs.messages import MessageRequestHandler as MessageRequestHandler
from socketserver_rs.messages import recv_exactly as recv_exactly
from socketserver_rs.messages import recv_message as recv_message
from socketserver_rs.messages import send_message as send_message
from socketserver_rs.mixins import ThreadingMixIn as ThreadingMixIn
from socketserver_rs.servers import BaseServer as BaseServer
from socketserver_rs.servers import TCPServer as TCPServer
from socketserver_rs.servers import UDPServer as UDPServer

# The standard module's "0.4" (deprecated from 3.15); not this package's version.
__version__: str

# Private names of the standard module that programs import from it.
def time() -> float: ...  # time.monotonic, as the standard module has it

_ServerSelector: type[selectors.BaseSelector]

class _SocketWriter(BufferedIOBase):
    def __init__(self, sock: _socket, stats: object = None) -> None: ...
    def write(self, b: Any) -> int: ...

class _Threads(list[threading.Thread]):
    def append(self, thread: threading.Thread) -> None: ...
    def pop_all(self) -> list[threading.Thread]: ...
    def join(self) -> None: ...
    def reap(self) -> None: ...

class _NoThreads:
    def append(self, thread: threading.Thread) -> None: ...
    def join(self) -> None: ...

if sys.platform != "win32":
    from socketserver_rs.mixins import ForkingMixIn as ForkingMixIn
    from socketserver_rs.servers import UnixDatagramServer as UnixDatagramServer
    from socketserver_rs.servers import UnixStreamServer as UnixStreamServer

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
if sys.platform != "win32":
    __all__ += [
        "ForkingUDPServer",
        "ForkingTCPServer",
        "ForkingMixIn",
        "UnixStreamServer",
        "UnixDatagramServer",
        "ThreadingUnixStreamServer",
        "ThreadingUnixDatagramServer",
        # The standard module has these two from Python 3.12 on; this one on
        # every version.
        "ForkingUnixStreamServer",
        "ForkingUnixDatagramServer",
    ]

if sys.platform != "win32":
    class ForkingUDPServer(ForkingMixIn, UDPServer): ...
    class ForkingTCPServer(ForkingMixIn, TCPServer): ...

class ThreadingUDPServer(ThreadingMixIn, UDPServer): ...
class ThreadingTCPServer(ThreadingMixIn, TCPServer): ...

if sys.platform != "win32":
    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer): ...
    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer): ...
    class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer): ...
    class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer): ...
