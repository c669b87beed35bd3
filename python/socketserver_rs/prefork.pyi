from typing import Any, Callable, Union

__all__ = ["serve_prefork"]

def serve_prefork(
    server: Union[Any, Callable[[], Any]],
    workers: int = 2,
    *,
    graceful_timeout: float = 30.0,
    poll_interval: float = 0.5,
) -> int:
    """Serve server (or the servers server() builds, one per worker) on
    workers forked processes until SIGTERM (graceful), SIGINT or SIGQUIT
    (quick); SIGHUP restarts the workers, SIGTTIN/SIGTTOU add or remove
    one. The exit code: 0, or 1 when a worker had to be killed."""
