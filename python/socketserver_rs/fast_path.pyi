from typing import Final, TypeVar

__all__ = ["FAST_PATH_HOOKS", "standard_hooks", "hooks_are_standard"]

_C = TypeVar("_C", bound=type[object])

FAST_PATH_HOOKS: Final[tuple[str, ...]]

def standard_hooks(cls: _C) -> _C: ...
def hooks_are_standard(server: object) -> bool: ...
