import sys

from socketserver_rs.servers import _RequestType, _RetAddress

__all__ = ["ThreadingMixIn"]
if sys.platform != "win32":
    __all__ += ["ForkingMixIn"]

if sys.platform != "win32":
    class ForkingMixIn:
        timeout: float | None
        active_children: set[int] | None
        max_children: int
        block_on_close: bool
        def collect_children(self, *, blocking: bool = False) -> None: ...
        def handle_timeout(self) -> None: ...
        def service_actions(self) -> None: ...
        def process_request(self, request: _RequestType, client_address: _RetAddress) -> None: ...
        def server_close(self) -> None: ...

class ThreadingMixIn:
    daemon_threads: bool
    block_on_close: bool
    # At most this many requests at once; None: no bound.
    max_threads: int | None
    # Seconds an idle worker thread waits for a request before it ends.
    idle_thread_timeout: float
    handshake_timeout: float
    close_timeout: float | None
    def process_request_thread(
        self, request: _RequestType, client_address: _RetAddress
    ) -> None: ...
    def process_request(self, request: _RequestType, client_address: _RetAddress) -> None: ...
    def server_close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
