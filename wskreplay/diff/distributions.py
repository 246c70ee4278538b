"""Timing as distributions: how a latency's median, p90 and p99 moved from trace A to B,
with a bootstrap confidence interval, and whether the move exceeds the noise.

For two recordings of one scenario (two driver versions) single calls are not
comparable, their latencies are: "p99 completion latency +38% (95% CI +30..+46%)". With a
second recording of the baseline (``noise``), a move no larger than baseline-vs-baseline
is noise, not a regression: the primary/secondary/candidate idea of Twitter's Diffy,
applied to timing. Deterministic: the resampling has a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wskreplay.diff.align import calls_of
from wskreplay.trace.model import Trace

QUANTILES = {"median": 0.5, "p90": 0.9, "p99": 0.99}
METRICS = {
    "completion": "issue-to-completion latency",
    "return": "issue-to-return latency",
    "wire": "issue-to-wire latency",
}
RESAMPLES = 200
MAX_SAMPLE = 2000
"""Calls per side a bootstrap resamples at most (a fixed-seed subsample beyond that): the
bootstrap's cost per socket stays constant, so 1M-call traces diff in seconds; the CI of a
p99 from 2,000 values is wider than from all of them, never narrower."""
MIN_CALLS = 20
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Shift:
    metric: str
    socket: int | None
    """The socket of A, or None for all sockets pooled."""
    quantile: str
    a_ns: int
    b_ns: int
    change: float
    """Relative change of the quantile, B / A - 1."""
    ci: tuple[float, float]
    noise: float | None
    """The same quantile's change from A to the second baseline, when one was given."""
    verdict: str
    """``regression`` / ``improvement`` (the CI excludes 0, the noise and the minimum
    shift), ``noise`` (it would be, but the baseline moves as much), ``unchanged``."""

    def describe(self) -> str:
        where = "all sockets" if self.socket is None else f"socket {self.socket}"
        lo, hi = self.ci
        text = (
            f"{self.quantile} {METRICS[self.metric]} ({where}) {self.change:+.0%} "
            f"({CONFIDENCE:.0%} CI {lo:+.0%}..{hi:+.0%})"
        )
        return text + (f", baseline noise {self.noise:+.0%}" if self.noise is not None else "")

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "socket": self.socket,
            "quantile": self.quantile,
            "a_ns": self.a_ns,
            "b_ns": self.b_ns,
            "change": round(self.change, 6),
            "ci": [round(self.ci[0], 6), round(self.ci[1], 6)],
            "noise": None if self.noise is None else round(self.noise, 6),
            "verdict": self.verdict,
        }


def latencies(trace: Trace, metric: str, wire_ns: np.ndarray, sid: int | None) -> np.ndarray:
    """The metric's values (ns) for the socket's calls (every socket's when None)."""
    calls = trace.calls
    index: slice | np.ndarray = slice(None) if sid is None else calls_of(trace, sid)
    issue = calls.column("issue_ns")[index].astype(np.int64)
    if metric == "completion":
        done = calls.column("completed")[index] == 1
        return (calls.column("completion_ns")[index].astype(np.int64) - issue)[done]
    if metric == "return":
        return calls.column("return_ns")[index].astype(np.int64) - issue
    seen = wire_ns[index]
    return (seen - issue)[seen >= 0]


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= MAX_SAMPLE:
        return values
    return rng.choice(values, MAX_SAMPLE, replace=False)


def _changes(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> dict[str, tuple]:
    """Per quantile: (A's, B's, relative change, CI) with both sides resampled."""
    qs = np.array(list(QUANTILES.values()))
    qa, qb = np.quantile(a, qs), np.quantile(b, qs)
    sa, sb = _sample(a, rng), _sample(b, rng)
    boot_a = np.quantile(sa[rng.integers(0, len(sa), (RESAMPLES, len(sa)))], qs, axis=1)
    boot_b = np.quantile(sb[rng.integers(0, len(sb), (RESAMPLES, len(sb)))], qs, axis=1)
    ratio = boot_b / np.maximum(boot_a, 1) - 1
    tail = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(ratio, [tail, 1 - tail], axis=1)
    return {
        name: (
            int(qa[k]),
            int(qb[k]),
            float(qb[k] / max(qa[k], 1) - 1),
            (float(lo[k]), float(hi[k])),
        )
        for k, name in enumerate(QUANTILES)
    }


def shifts(
    a: Trace,
    b: Trace,
    pairs: list[tuple[int | None, int | None]],
    wire: tuple[np.ndarray, np.ndarray],
    *,
    noise: tuple[Trace, np.ndarray, dict[int, int]] | None = None,
    min_shift: float = 0.05,
    floor_ns: dict[str, int] | None = None,
    seed: int = 0,
) -> list[Shift]:
    """Every metric and quantile, per matched socket and pooled. ``noise``: the second
    baseline, its first-wire times and A's socket -> its socket. A move counts only if it
    is at least ``min_shift`` relative and more than ``floor_ns[metric]`` absolute (a 100%
    change of a 2 us return time is no finding)."""
    rng = np.random.default_rng(seed)
    out: list[Shift] = []
    scopes: list[tuple[int | None, int | None]] = [
        (sa, sb) for sa, sb in pairs if sa is not None and sb is not None
    ]
    scopes.append((None, None))
    for metric in METRICS:
        for sa, sb in scopes:
            xa = latencies(a, metric, wire[0], sa)
            xb = latencies(b, metric, wire[1], sb)
            if len(xa) < MIN_CALLS or len(xb) < MIN_CALLS:
                continue
            moved = _changes(xa, xb, rng)
            baseline = None
            if noise is not None and (sa is None or sa in noise[2]):
                xc = latencies(noise[0], metric, noise[1], None if sa is None else noise[2][sa])
                if len(xc) >= MIN_CALLS:
                    baseline = _changes(xa, xc, rng)
            floor = (floor_ns or {}).get(metric, 0)
            for name, (qa, qb, change, ci) in moved.items():
                level = None if baseline is None else baseline[name][2]
                if abs(qb - qa) <= floor:
                    change_counts = 0.0
                else:
                    change_counts = change
                out.append(
                    Shift(
                        metric,
                        sa,
                        name,
                        qa,
                        qb,
                        change,
                        ci,
                        level,
                        _verdict(change_counts, ci, level, min_shift),
                    )
                )
    return out


def _verdict(change: float, ci: tuple[float, float], noise: float | None, min_shift: float) -> str:
    lo, hi = ci
    if lo <= 0 <= hi or abs(change) < min_shift:
        return "unchanged"
    if noise is not None and (lo <= noise <= hi or abs(change) <= abs(noise)):
        return "noise"
    return "regression" if change > 0 else "improvement"
