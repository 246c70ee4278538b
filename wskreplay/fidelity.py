"""How faithfully real captures replay: each imported with ``--infer-calls`` on a side,
replayed through the emulator, and diffed against itself (what ``check`` does), with the
replay's completion-time error. Used by the tests and ``benchmarks/bench_replay.py``, and
for the table of docs/emulator.md."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wskreplay.diff.compare import DiffOptions, diff_traces
from wskreplay.errors import WskReplayError
from wskreplay.recorder.importer import ImportOptions, import_sources
from wskreplay.replayer.engine import ReplayOptions, replay
from wskreplay.replayer.profile import load_profile
from wskreplay.trace.model import COMPLETED, Trace

STATUS_KINDS = ("status", "completed", "completion_status", "information", "inserted",
                "removed", "socket")  # fmt: skip
SOCKET_TARGET_SECONDS = 20
"""A real-time replay of a longer recording runs faster, to last about this long."""


@dataclass
class Fidelity:
    capture: str
    side: str
    calls: int = 0
    verdict: str = ""
    """``EQUAL``, ``DIFFERENT: ...`` (the classes counted) or ``not imported: ...``."""
    errors_ns: np.ndarray | None = None
    """|replayed - recorded| issue-to-completion time of calls completed in both."""
    replay_s: float = 0.0
    speed: float = 1.0
    kinds: dict[str, int] | None = None
    """Differences counted per class."""
    traces: tuple[Trace, Trace] | None = field(default=None, repr=False)
    """The imported trace and its replay."""

    @property
    def statuses_equal(self) -> bool:
        return not any((self.kinds or {}).get(k) for k in STATUS_KINDS)

    @property
    def equal(self) -> bool:
        return self.verdict == "EQUAL"

    def error_text(self) -> str:
        e = self.errors_ns
        if e is None or not len(e):
            return "-"
        us = [np.median(e) / 1e3, np.percentile(e, 99) / 1e3, e.max() / 1e3]
        return " / ".join(f"{v:.1f}" for v in us)


def completion_errors(a: Trace, b: Trace) -> np.ndarray:
    """|B - A| issue-to-completion time of each call both traces completed (B a replay of
    A, calls in the same order)."""
    ca, cb = a.calls, b.calls
    n = min(len(ca), len(cb))
    done = (ca.column("completed")[:n] == COMPLETED) & (cb.column("completed")[:n] == COMPLETED)
    la = ca.column("completion_ns")[:n].astype(np.int64) - ca.column("issue_ns")[:n]
    lb = cb.column("completion_ns")[:n].astype(np.int64) - cb.column("issue_ns")[:n]
    return np.abs(lb - la)[done]


def measure(capture: Path, side: str, target: str = "emulator") -> Fidelity:
    """Import, replay and diff one capture on one side, through the emulator or the socket
    target (real kernel TCP, root; a recording longer than :data:`SOCKET_TARGET_SECONDS`
    replayed faster to last about that long)."""
    row = Fidelity(capture.name, side)
    try:
        imported = import_sources([str(capture)], ImportOptions(infer_calls=True, side=side))
    except WskReplayError as exc:
        row.verdict = f"not imported: {str(exc).split(': ', 1)[-1]}"
        return row
    trace = imported.materialised()
    row.calls = len(trace.calls)
    t = time.perf_counter()
    if target == "socket":
        from wskreplay.replayer.realtime import recorded_end, replay_origin
        from wskreplay.replayer.targets.socket import SocketTargetOptions, replay_socket

        span_s = (recorded_end(trace) - replay_origin(trace)) / 1e9
        row.speed = max(1.0, span_s / SOCKET_TARGET_SECONDS)
        options = ReplayOptions(load_profile(), speed=row.speed)
        replayed = replay_socket(trace, options, SocketTargetOptions())
    else:
        replayed = replay(trace, ReplayOptions(load_profile()))
    row.replay_s = time.perf_counter() - t
    result = diff_traces(trace, replayed, DiffOptions())
    row.kinds = {}
    for d in result.differences:
        row.kinds[d.kind] = row.kinds.get(d.kind, 0) + 1
    if result.equal:
        row.verdict = "EQUAL"
    else:
        row.verdict = f"DIFFERENT: {', '.join(sorted(row.kinds))}"
    row.errors_ns = completion_errors(trace, replayed)
    row.traces = (trace, replayed)
    return row


def table(rows: list[Fidelity]) -> str:
    """The Markdown table of docs/emulator.md."""
    lines = [
        "| capture | side | calls | result | completion error median / p99 / max (us) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r.capture}` | {r.side} | {r.calls} | {r.verdict} | {r.error_text()} |")
    return "\n".join(lines)
