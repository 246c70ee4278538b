"""How faithfully real captures replay: each imported with ``--infer-calls`` on a side,
replayed through the emulator, and diffed against itself (what ``check`` does), with the
replay's completion-time error. Used by the tests and ``benchmarks/bench_replay.py``, and
for the table of docs/emulator.md."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wskreplay.diff.compare import DiffOptions, diff_traces
from wskreplay.errors import WskReplayError
from wskreplay.model import COMPLETED, Trace
from wskreplay.recorder.importer import ImportOptions, import_sources
from wskreplay.replayer.engine import ReplayOptions, replay
from wskreplay.replayer.profile import load_profile


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


def measure(capture: Path, side: str) -> Fidelity:
    """Import, replay and diff one capture on one side."""
    row = Fidelity(capture.name, side)
    try:
        imported = import_sources([str(capture)], ImportOptions(infer_calls=True, side=side))
    except WskReplayError as exc:
        row.verdict = f"not imported: {str(exc).split(': ', 1)[-1]}"
        return row
    trace = imported.materialised()
    row.calls = len(trace.calls)
    t = time.perf_counter()
    replayed = replay(trace, ReplayOptions(load_profile()))
    row.replay_s = time.perf_counter() - t
    result = diff_traces(trace, replayed, DiffOptions())
    if result.equal:
        row.verdict = "EQUAL"
    else:
        kinds = sorted({d.kind for d in result.differences})
        row.verdict = f"DIFFERENT: {', '.join(kinds)}"
    row.errors_ns = completion_errors(trace, replayed)
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
