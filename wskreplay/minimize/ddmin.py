"""Delta debugging (Zeller and Hildebrandt's ddmin): the smallest subset of a list for which
a test still holds, found by removing chunks of halving size. Pure: the test is given."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


class OutOfTime(Exception):
    """Raised by a test when the minimisation's time budget is spent."""


def ddmin(items: Sequence[T], holds: Callable[[list[T]], bool]) -> list[T]:
    """A 1-minimal subset of ``items`` (distinct values; removing any single one breaks
    ``holds``), assuming ``holds(list(items))``; order is kept; no subset is tested twice.

    On :class:`OutOfTime` from ``holds`` the smallest subset found so far is returned."""
    current = list(items)
    chunks = 2
    seen: set[tuple[T, ...]] = set()

    def test(subset: list[T]) -> bool:
        key = tuple(subset)
        if key in seen:
            return False
        seen.add(key)
        return holds(subset)

    try:
        while len(current) >= 2:
            size = len(current) / chunks
            parts = [current[round(i * size) : round((i + 1) * size)] for i in range(chunks)]
            reduced = False
            for part in parts:
                if part and test(part):
                    current, chunks, reduced = part, 2, True
                    break
            if not reduced:
                for i in range(len(parts)):
                    rest = [x for j, p in enumerate(parts) if j != i for x in p]
                    if rest and len(rest) < len(current) and test(rest):
                        current, chunks, reduced = rest, max(chunks - 1, 2), True
                        break
            if not reduced:
                if chunks >= len(current):
                    break
                chunks = min(len(current), chunks * 2)
    except OutOfTime:
        pass
    return current


def smallest_holding(lo: int, hi: int, holds: Callable[[int], bool]) -> int:
    """The smallest value in [lo, hi] for which ``holds`` is true, by bisection, assuming
    it holds at ``hi`` (and, as for a prefix length, then at every larger value)."""
    try:
        while lo < hi:
            mid = (lo + hi) // 2
            if holds(mid):
                hi = mid
            else:
                lo = mid + 1
    except OutOfTime:
        pass
    return hi
