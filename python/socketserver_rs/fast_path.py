"""When serve_forever() may take the core's fast path.

The fast path accepts (or receives) requests in Rust and calls the handler
class without the Python request hooks. It stands in for exactly the hooks
named in FAST_PATH_HOOKS, in the versions this package defines: if a server
class or instance overrides any of them, or mixes in one from elsewhere
(the standard library's ThreadingMixIn, ForkingMixIn), serve_forever()
calls the Python hooks one by one instead, as the standard module does.
The choice is made once each time serve_forever() starts.
"""

from __future__ import annotations

__all__ = ["FAST_PATH_HOOKS", "standard_hooks", "hooks_are_standard"]

FAST_PATH_HOOKS = (
    "fileno",
    "_handle_request_noblock",
    "get_request",
    "verify_request",
    "process_request",
    "process_request_thread",
    "finish_request",
    "shutdown_request",
    "close_request",
)

# Each hook's name and the functions of ours the fast path stands in for.
_STANDARD: dict[str, set[object]] = {name: set() for name in FAST_PATH_HOOKS}


def standard_hooks(cls):
    """Class decorator: the hooks `cls` defines are ones the fast path may
    stand in for."""
    for name in FAST_PATH_HOOKS:
        if name in vars(cls):
            _STANDARD[name].add(vars(cls)[name])
    return cls


def hooks_are_standard(server):
    """True when no hook of FAST_PATH_HOOKS is set on the instance, and each
    one the class has is ours."""
    own = vars(server)
    cls = type(server)
    for name, ours in _STANDARD.items():
        if name in own:
            return False
        hook = getattr(cls, name, None)
        if hook is not None and hook not in ours:
            return False
    return True
