"""When serve_forever() may take the core's fast path.

The fast path accepts (or receives) requests in Rust and calls the handler
class without the Python request hooks. It stands in for exactly the hooks
named in FAST_PATH_HOOKS, in the versions this package defines: if a server
class or instance overrides any of them, or mixes in one from elsewhere
(the standard library's ThreadingMixIn, ForkingMixIn), serve_forever()
calls the Python hooks one by one instead, as the standard module does.
It also copies the attributes in FAST_PATH_SETTINGS, which the standard
module reads for each request; they are watched as the hooks are.

The choice is made when serve_forever() starts, and made again when a
HookWatch made then sees one of these hooks set, patched or deleted:
* on the server: BaseServer.__setattr__/__delattr__ bump hooks_version(),
  which the core also checks before each request it takes, so the hook
  applies from the next request on;
* on its class or a base (mock.patch.object, say): the hooks the class
  has are read again each time the serve loop wakes (the message loop:
  before each new connection) and compared with those read before, so the
  hook applies from the loop's next wake on; within a batch of connections
  or datagrams taken in a row, the core stops the batch when the class's
  version tag changes (dispatch.rs).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Final, TypeVar

from socketserver_rs._core import hooks_changed, hooks_version

__all__ = [
    "FAST_PATH_HOOKS",
    "FAST_PATH_SETTINGS",
    "HookWatch",
    "hook_set",
    "hooks_version",
    "standard_hooks",
    "hooks_are_standard",
]

_C = TypeVar("_C", bound=type[object])

FAST_PATH_HOOKS: Final[tuple[str, ...]] = (
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

# Attributes the fast path copies when it is built, which the standard
# module reads for each request: setting one rebuilds it, as a hook does.
FAST_PATH_SETTINGS: Final[tuple[str, ...]] = ("max_packet_size",)

# Each hook's name and the functions of ours the fast path stands in for.
_STANDARD: dict[str, set[object]] = {name: set() for name in FAST_PATH_HOOKS}


def hook_set(name: str) -> None:
    """An attribute `name` of a server was set or deleted."""
    # A new __class__ brings hooks of its own.
    if name in _STANDARD or name in FAST_PATH_SETTINGS or name == "__class__":
        hooks_changed()


class HookWatch:
    """Whether a request hook of `server` was set, patched or deleted since
    this was made, on the server or on its class or a base."""

    __slots__ = ("_version", "_cls", "_hooks_of", "_hooks")

    def __init__(self, server: object) -> None:
        # Made before the hooks are checked, so that a change made while
        # they are is seen.
        self._version = hooks_version()
        cls = self._cls = type(server)
        # A hook the class lacks is one its serve loop never calls
        # (process_request_thread without ThreadingMixIn).
        watched = FAST_PATH_HOOKS + FAST_PATH_SETTINGS
        self._hooks_of = attrgetter(*[name for name in watched if hasattr(cls, name)])
        self._hooks = self._hooks_of(cls)

    def moved(self) -> bool:
        # Plain functions, compared by identity; a classmethod's bound
        # methods, by equality.
        return hooks_version() != self._version or self._hooks_of(self._cls) != self._hooks


def standard_hooks(cls: _C) -> _C:
    """Class decorator: the hooks `cls` defines are ones the fast path may
    stand in for."""
    for name in FAST_PATH_HOOKS:
        if name in vars(cls):
            _STANDARD[name].add(vars(cls)[name])
    return cls


def hooks_are_standard(server: object) -> bool:
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
