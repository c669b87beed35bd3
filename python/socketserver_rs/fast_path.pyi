from typing import Final, TypeVar

__all__ = [
    "FAST_PATH_HOOKS",
    "HookWatch",
    "hook_set",
    "hooks_version",
    "standard_hooks",
    "hooks_are_standard",
]

_C = TypeVar("_C", bound=type[object])

FAST_PATH_HOOKS: Final[tuple[str, ...]]

class HookWatch:
    def __init__(self, server: object) -> None: ...
    def moved(self) -> bool: ...

def hook_set(name: str) -> None: ...
def hooks_version() -> int: ...
def standard_hooks(cls: _C) -> _C: ...
def hooks_are_standard(server: object) -> bool: ...
