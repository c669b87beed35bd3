"""When serve_forever() may take the core's fast path.

The fast path accepts (or receives) requests in Rust and calls the handler
class without the Python request hooks. It stands in for exactly the hooks
named in FAST_PATH_HOOKS, in the versions this package defines: if a server
class or instance overrides any of them, or mixes in one from elsewhere
(the standard library's ThreadingMixIn, ForkingMixIn), serve_forever()
calls the Python hooks one by one instead, as the standard module does.

The choice is made when serve_forever() starts, and made again when one of
these hooks is set or deleted on a server (BaseServer.__setattr__) or on a
class with WatchesHooks for metaclass (the server classes, ThreadingMixIn
and their subclasses): each bumps hooks_version(), which the core checks
before it takes a request and the serve loop at each wake, so that the hook
applies from the next request on.
"""

from __future__ import annotations

from socketserver_rs._core import hooks_changed, hooks_version

__all__ = [
    "FAST_PATH_HOOKS",
    "WatchesHooks",
    "hook_set",
    "hooks_version",
    "standard_hooks",
    "hooks_are_standard",
]

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


def hook_set(name):
    """An attribute `name` of a server or server class was set or deleted."""
    if name in _STANDARD:
        hooks_changed()


class WatchesHooks(type):
    """Metaclass of the server classes: a hook set or deleted on the class
    (as mock.patch.object() does) applies from the next request on."""

    def __setattr__(cls, name, value):
        super().__setattr__(name, value)
        hook_set(name)

    def __delattr__(cls, name):
        super().__delattr__(name)
        hook_set(name)


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
