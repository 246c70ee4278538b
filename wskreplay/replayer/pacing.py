"""Pacing on the monotonic clock: every call is scheduled against the replay's start, never
against the previous call's actual time, so lateness never accumulates into drift (the
mistake tcpreplay's ``--multiplier`` once made). A wait sleeps most of the way, letting the
target handle its I/O meanwhile, and spins the last :data:`SPIN_NS`."""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SPIN_NS = 300_000
PR_SET_TIMERSLACK = 29


def precise_sleeps() -> None:
    """Ask the kernel to wake this thread when it asked (timer slack 1 ns, not 50 us)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def wait_until(deadline_ns: int, meanwhile: Callable[[int], None]) -> None:
    """Return at ``deadline_ns`` (monotonic); ``meanwhile(ns)`` is given the time to spend
    (it may return early) until the last stretch, which is spun."""
    approach(deadline_ns, meanwhile)
    spin_until(deadline_ns)


def approach(deadline_ns: int, meanwhile: Callable[[int], None]) -> None:
    """Return once ``deadline_ns`` is at most SPIN_NS away (or past), ``meanwhile(ns)``
    given the time until then: what ``wait_until`` does before it spins."""
    clock = time.monotonic_ns
    while (left := deadline_ns - clock()) > SPIN_NS:
        meanwhile(left - SPIN_NS)


def spin_until(deadline_ns: int) -> None:
    """Return at ``deadline_ns`` (monotonic), spinning: no sleep's wake-up to wait for."""
    clock = time.monotonic_ns
    while clock() < deadline_ns:
        pass


def lateness_summary(lateness_ns: np.ndarray) -> dict[str, int]:
    """Percentiles of how late calls went out against their schedule (ns)."""
    import numpy as np  # here, not at the top: the link forwarder waits with this module

    if not len(lateness_ns):
        return {"calls": 0}
    q = np.percentile(lateness_ns, [50, 90, 99])
    return {
        "calls": int(len(lateness_ns)),
        "median_ns": int(q[0]),
        "p90_ns": int(q[1]),
        "p99_ns": int(q[2]),
        "max_ns": int(lateness_ns.max()),
    }
