"""Serving under gevent's or eventlet's monkey-patching.

Those libraries run many green threads on one OS thread and switch between
them only when one waits through their patched socket, select and threading
modules. The core waits in Rust (poll(2), recv(2), a channel), which they
cannot see: the hub would stop. So once either has patched the socket
module, servers wait, read and start request threads in Python, as the
standard module does, and nothing of theirs blocks in the core.
"""

import sys

__all__ = ["cooperative"]


def cooperative() -> bool:
    """True when gevent or eventlet has monkey-patched the socket module."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        return True
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("socket"))
