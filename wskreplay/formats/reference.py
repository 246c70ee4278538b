"""Fast paths or their references: ``WSKREPLAY_PURE_PYTHON=1`` makes wskreplay take every
reference path (the Python loops the C accelerators twin, the block-at-a-time pcapng walk,
connection-at-a-time reassembly, whole-trace diffs), which the tests keep identical to
the fast ones."""

from __future__ import annotations

import importlib
import os
from typing import Any


def reference_asked() -> bool:
    return os.environ.get("WSKREPLAY_PURE_PYTHON") == "1"


def accelerator(name: str) -> Any:
    """The compiled module ``wskreplay.formats.<name>``, or None: not built, or the
    references asked for."""
    if reference_asked():
        return None
    try:
        return importlib.import_module(f"wskreplay.formats.{name}")
    except ImportError:
        return None
