from typing import Any, Callable, Optional

from socketserver_rs import _core
from socketserver_rs.messages import MessageRequestHandler

__all__ = ["event_driven", "serving", "close_connections"]

def event_driven(server: Any) -> bool: ...
def serving(server: Any, loop: _core.ServeLoop, nodelay: bool) -> Messages: ...
def close_connections(server: Any) -> None: ...

class Messages:
    server: Any
    core: _core.MessageLoop
    stats: _core.ServerStats
    handlers: dict[int, MessageRequestHandler]
    def __init__(self, server: Any, core: _core.MessageLoop, stats: _core.ServerStats) -> None: ...
    def serve(
        self, poll_interval: Optional[float], actions: Optional[Callable[[], Any]]
    ) -> None: ...
    def submit(
        self,
        submit: Callable[..., Any],
        conn_id: int,
        handler: MessageRequestHandler,
        message: bytes,
    ) -> None: ...
    def opened(self, conn_id: int, request: Any, client_address: Any) -> None: ...
    def run(self, conn_id: int, handler: MessageRequestHandler, message: bytes) -> None: ...
    def end(
        self, conn_id: int, error: Optional[BaseException] = None, reraise: bool = False
    ) -> None: ...
