"""Differences grouped for a person: one line per run of consecutive calls of one socket
with the same class of difference ("socket 1, calls 518-613: issue to completion 0.1 to
0.9 ms early, median 0.5 ms"), and what each class depended on. The JSON report keeps
every single difference; the terminal and HTML reports show runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from wskreplay.diff.tolerance import METRICS, _duration

if TYPE_CHECKING:
    from wskreplay.diff.compare import Difference

DEPENDS_ON: dict[str, str] = {
    "status": "the WSK layer's rules (flags, ControlInfo, socket state) and the reset policy "
    "(reset.acceptance)",
    "completed": "the completion policy (completion.policy) and the peer's acknowledgements",
    "completion_status": "the reset policy (reset.ack_acknowledges) and the completion policy",
    "information": "the reset policy (reset.ack_acknowledges) and completion.partial",
    "timing:issue": "the dependency waits (a call issued after a completion waits for it)",
    "timing:return": "the host's return time (recorded per call)",
    "timing:completion": "completion.latency_ns (calibrated), the path's RTT and rate, and "
    "the recorded peer's ACK timing",
    "timing:wire": "the host stack delay (calibrated per call) and Nagle",
    "wire": "the calls' bytes (the capture's gaps are not compared)",
    "segmentation": "the MSS, Nagle and the congestion window",
    "distribution": "the same as the timing of its metric",
}


@dataclass(frozen=True)
class Run:
    kind: str
    socket: int | None
    first: int | None
    last: int | None
    differences: tuple[Difference, ...]

    @property
    def key(self) -> str:
        metric = _metric(self.differences[0])
        return f"{self.kind}:{metric}" if metric else self.kind

    def describe(self) -> str:
        where = f"socket {self.socket}" if self.socket is not None else "all sockets"
        if self.first is not None:
            span = (
                f"call {self.first}"
                if self.first == self.last
                else (f"calls {self.first}-{self.last}")
            )
            where += f", {span}"
        if len(self.differences) == 1:
            detail = self.differences[0].detail
            named = f"call {self.first}: "
            return f"{where}: {detail[len(named) :] if detail.startswith(named) else detail}"
        return f"{where}: {self._summary()}"

    def _summary(self) -> str:
        ds = self.differences
        metric = _metric(ds[0])
        if self.kind == "timing" and metric:
            deltas = np.array([d.b["ns"] - d.a["ns"] for d in ds], np.int64)
            lo, hi = int(np.abs(deltas).min()), int(np.abs(deltas).max())
            way = "late" if (deltas > 0).all() else "early" if (deltas < 0).all() else "off"
            return (
                f"{len(ds)} calls, {METRICS[metric]} {_duration(lo)} to {_duration(hi)} {way}, "
                f"median {_duration(int(np.median(np.abs(deltas))))}"
            )
        pairs = {(repr(d.a), repr(d.b)) for d in ds}
        if len(pairs) == 1:
            detail = ds[0].detail.split(": ", 1)[-1]
            return f"{len(ds)} calls, each: {detail}"
        return f"{len(ds)} calls ({self.kind.replace('_', ' ')})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "socket": self.socket,
            "first_call": self.first,
            "last_call": self.last,
            "differences": len(self.differences),
            "summary": self.describe(),
            "depends_on": DEPENDS_ON.get(self.key, DEPENDS_ON.get(self.kind)),
        }


def _metric(d: Difference) -> str | None:
    return d.a.get("metric") if isinstance(d.a, Mapping) else None


def runs(
    differences: Sequence[Difference],
    kinds: Sequence[str],
    call_rank: Mapping[int, int] | None = None,
) -> list[Run]:
    """Consecutive differences of one class (and metric) on one socket, whose calls follow
    each other in the socket (``call_rank``: call index -> its position among its socket's
    calls; without it, call indices themselves). ``kinds`` orders the classes."""
    out: list[Run] = []
    current: list[Difference] = []
    order = {kind: k for k, kind in enumerate(kinds)}
    differences = sorted(
        differences,
        key=lambda d: (
            order.get(d.kind, len(order)),
            d.socket if d.socket is not None else -1,
            _metric(d) or "",
            d.call_a if d.call_a is not None else -1,
        ),
    )

    def rank(d: Difference) -> int | None:
        if d.call_a is None:
            return None
        return call_rank.get(d.call_a, d.call_a) if call_rank is not None else d.call_a

    def close() -> None:
        if current:
            calls = [d.call_a for d in current if d.call_a is not None]
            first, last = (min(calls), max(calls)) if calls else (None, None)
            out.append(Run(current[0].kind, current[0].socket, first, last, tuple(current)))

    for d in differences:
        if current:
            prev = current[-1]
            same = d.kind == prev.kind and d.socket == prev.socket and _metric(d) == _metric(prev)
            r, pr = rank(d), rank(prev)
            adjacent = r is not None and pr is not None and 0 <= r - pr <= 1
            if same and adjacent:
                current.append(d)
                continue
            close()
            current = []
        current.append(d)
    close()
    return out
