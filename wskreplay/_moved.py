"""Old module paths kept importable for one release: each forwards its names to the
module that holds them now, with a DeprecationWarning naming the new path."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def forwarder(
    old: str, new: str, elsewhere: Mapping[str, str] | None = None
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that finds each name in ``new`` (or in the
    module ``elsewhere`` names for it)."""
    moved = dict(elsewhere or {})

    def __getattr__(name: str) -> Any:
        home = importlib.import_module(moved.get(name, new))
        if not hasattr(home, name):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} is deprecated: import it from {home.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(home, name)

    return __getattr__
