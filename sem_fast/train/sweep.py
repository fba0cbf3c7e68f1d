"""Deprecated: the sweep moved to `sem_fast.sweep`. ``from sem_fast.train.sweep import NAME`` still
gives `sem_fast.sweep`'s public names, with a ``DeprecationWarning`` naming the new import."""

import warnings
from typing import Any

import sem_fast.sweep

__all__ = list(sem_fast.sweep.__all__)


def __getattr__(name: str) -> Any:
    if name in __all__:
        warnings.warn(
            f"sem_fast.train.sweep is deprecated; use `from sem_fast.sweep import {name}`",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(sem_fast.sweep, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
