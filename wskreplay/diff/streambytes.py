"""Comparing stream bytes of any kind (assembled, mapped, or left in the trace file) a
window at a time, so memory stays bounded and no stream is copied whole."""

from __future__ import annotations

import numpy as np

from wskreplay.trace.inplace import window
from wskreplay.trace.spill import RELEASE_EVERY, release

COMPARE_WINDOW = 4 << 20
"""Bytes compared at once: one chunk of a trace written with the default chunk size."""


def first_difference(da: object, db: object, start: int, end: int) -> int | None:
    """The first offset in ``[start, end)`` where the two differ; None when they agree (a
    mapped stream's pages are released every RELEASE_EVERY bytes)."""
    since_release = 0
    for lo in range(start, end, COMPARE_WINDOW):
        hi = min(lo + COMPARE_WINDOW, end)
        xa = np.frombuffer(window(da, lo, hi), np.uint8)
        xb = np.frombuffer(window(db, lo, hi), np.uint8)
        if not np.array_equal(xa, xb):
            return lo + int(np.flatnonzero(xa != xb)[0])
        since_release += hi - lo
        if since_release >= RELEASE_EVERY:
            release(da)
            release(db)
            since_release = 0
    release(da)
    release(db)
    return None


def same_bytes(da: object, db: object) -> bool:
    """Whether two streams' data are the same bytes."""
    n = len(da)  # type: ignore[arg-type]
    return n == len(db) and first_difference(da, db, 0, n) is None  # type: ignore[arg-type]
