"""``wskreplay minimize``: the smallest trace that still shows a divergence.

Delta debugging in three passes, each keeping a candidate only when replaying it (through
the chosen target) still fails by the predicate (predicate.py): over sockets, then calls,
then the bytes of each remaining call (the shortest prefix, by bisection). Candidates are
re-derived so that stream offsets, wire segments and the recorded peer follow the reduced
streams (reduce.py). The result's metadata says what it was minimised from, by which
predicate, and whether the time budget ran out first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wskreplay.diff import DiffOptions, diff_traces
from wskreplay.errors import InputError
from wskreplay.minimize.ddmin import OutOfTime, ddmin, smallest_holding
from wskreplay.minimize.predicate import (
    Check,
    Divergence,
    parse_predicate,
    same_divergence,
    target_divergence,
)
from wskreplay.minimize.reduce import Selection, candidate
from wskreplay.trace.model import Trace

Replay = Callable[[Trace], Trace]
KEPT_CALLS_LISTED = 10_000
"""At most this many of the source's call indices are listed in the result's metadata."""
Progress = Callable[["Status"], None]


@dataclass
class Status:
    """Where a minimisation is: shown while it runs, kept in the result's metadata."""

    phase: str = "original"
    replays: int = 0
    sockets: int = 0
    calls: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        return (
            f"minimize [{self.phase}] {self.sockets} sockets, {self.calls:,} calls, "
            f"{self.bytes:,} bytes; {self.replays} replays, "
            f"{time.monotonic() - self.started:.1f} s"
        )


@dataclass
class Minimized:
    trace: Trace
    rows: np.ndarray
    """The calls of the original the result keeps (their indices there)."""
    predicate: str
    divergence: Divergence | None
    status: Status
    complete: bool
    before: dict[str, int]


class _Search:
    """The candidates' test: replay, diff, predicate; remembers the smallest that failed."""

    def __init__(
        self,
        trace: Trace,
        run: Replay,
        diff_options: DiffOptions,
        check: Check,
        deadline: float | None,
        progress: Progress | None,
    ) -> None:
        self.trace, self.run, self.diff_options = trace, run, diff_options
        self.check, self.deadline, self.progress = check, deadline, progress
        self.best = Selection.everything(trace)
        self.status = Status()
        self._note(self.best)

    def _note(self, selection: Selection) -> None:
        socket = self.trace.calls.column("socket")[selection.rows]
        self.status.sockets = len(np.unique(socket))
        self.status.calls = len(selection.rows)
        self.status.bytes = selection.bytes

    def fails(self, selection: Selection) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise OutOfTime()
        if not len(selection.rows):
            return False
        smaller = candidate(self.trace, selection)
        replayed = self.run(smaller)
        result = diff_traces(smaller, replayed, self.diff_options)
        self.status.replays += 1
        failed = self.check(smaller, replayed, result, selection.rows)
        if failed and (len(selection.rows), selection.bytes) <= (
            len(self.best.rows),
            self.best.bytes,
        ):
            self.best = selection
            self._note(selection)
        if self.progress is not None:
            self.progress(self.status)
        return failed


def minimize(
    trace: Trace,
    run: Replay,
    diff_options: DiffOptions,
    predicate: str = "same",
    *,
    budget_s: float | None = None,
    progress: Progress | None = None,
) -> Minimized:
    """Minimise ``trace`` (see the module docstring). InputError when the original does
    not fail: there is nothing to minimise."""
    description, check = parse_predicate(predicate)
    divergence = None
    if check is None:
        result = diff_traces(trace, run(trace), diff_options)
        divergence = target_divergence(result)
        if divergence is None:
            raise InputError(
                None,
                "the replay shows no divergence from the recording (diff: equal): "
                "nothing to minimize",
            )
        description = f"same divergence: {divergence.describe()}"
        check = same_divergence(divergence)
    deadline = None if budget_s is None else time.monotonic() + budget_s
    search = _Search(trace, run, diff_options, check, deadline, progress)
    status = search.status
    before = {"sockets": status.sockets, "calls": status.calls, "bytes": status.bytes}
    if divergence is None and not search.fails(search.best):
        raise InputError(
            None,
            f"--predicate {predicate}: the original trace does not satisfy it: nothing to minimize",
        )
    complete = _passes(search, trace, divergence)
    best = search.best
    return Minimized(
        candidate(trace, best), best.rows, description, divergence, search.status, complete, before
    )


def _passes(search: _Search, trace: Trace, divergence: Divergence | None) -> bool:
    """Sockets, then calls, then bytes; False when the budget ran out."""
    socket_of = trace.calls.column("socket").astype(np.int64)

    def with_sockets(keep: list[int]) -> bool:
        return search.fails(search.best.of_rows(np.flatnonzero(np.isin(socket_of, keep))))

    def with_calls(keep: list[int]) -> bool:
        return search.fails(search.best.of_rows(np.array(keep, np.int64)))

    try:
        search.status.phase = "sockets"
        if divergence is not None:
            with_sockets([int(socket_of[divergence.call])])
        ddmin(sorted(set(socket_of[search.best.rows].tolist())), with_sockets)
        search.status.phase = "calls"
        if divergence is not None:
            with_calls(search.best.rows[search.best.rows <= divergence.call].tolist())
        ddmin(search.best.rows.tolist(), with_calls)
        search.status.phase = "bytes"
        for row, length in zip(
            search.best.rows.tolist(), search.best.lengths.tolist(), strict=True
        ):

            def with_length(n: int, row: int = row) -> bool:
                return search.fails(search.best.with_length(row, n))

            smallest_holding(0, int(length), with_length)
    except OutOfTime:
        return False
    return search.deadline is None or time.monotonic() <= search.deadline


def provenance(result: Minimized, source: str, sha256: str) -> dict[str, Any]:
    """What the minimised trace records in ``metadata.minimized``."""
    status = result.status
    return {
        "from": source,
        "sha256": sha256,
        "predicate": result.predicate,
        "complete": result.complete,
        "replays": status.replays,
        "seconds": round(time.monotonic() - status.started, 3),
        "before": result.before,
        "after": {"sockets": status.sockets, "calls": status.calls, "bytes": status.bytes},
        "calls_of_source": result.rows[:KEPT_CALLS_LISTED].tolist(),
    }


__all__ = ["Minimized", "Status", "minimize", "provenance"]
