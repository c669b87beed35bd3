from typing import Any, Final, TypeVar

__all__ = [
    "FAST_PATH_HOOKS",
    "WatchesHooks",
    "hook_set",
    "hooks_version",
    "standard_hooks",
    "hooks_are_standard",
]

_C = TypeVar("_C", bound=type[object])

FAST_PATH_HOOKS: Final[tuple[str, ...]]

class WatchesHooks(type):
    def __setattr__(cls, name: str, value: Any) -> None: ...
    def __delattr__(cls, name: str) -> None: ...

def hook_set(name: str) -> None: ...
def hooks_version() -> int: ...
def standard_hooks(cls: _C) -> _C: ...
def hooks_are_standard(server: object) -> bool: ...
