"""Timing tolerances: how far a replayed or re-recorded time may move before it counts.

A tolerance is absolute (ns) plus relative (a fraction of the baseline's value): a
difference counts when ``|b - a| > absolute + relative * |a|``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wskreplay.errors import InputError

METRICS = {
    "issue": "issue time (from the first call)",
    "return": "issue to return",
    "completion": "issue to completion",
    "wire": "issue to the call's first byte on the wire",
}
UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


@dataclass(frozen=True)
class Tolerance:
    absolute_ns: int
    relative: float = 0.0

    def allows(self, a: int, b: int) -> bool:
        return abs(b - a) <= self.absolute_ns + self.relative * abs(a)

    def __str__(self) -> str:
        text = _duration(self.absolute_ns)
        return f"{text} + {self.relative:.0%}" if self.relative else text


DEFAULT_TOLERANCES = {
    "issue": Tolerance(100_000, 0.0),
    "return": Tolerance(50_000, 0.05),
    "completion": Tolerance(50_000, 0.05),
    "wire": Tolerance(50_000, 0.05),
}
"""docs/diff.md: the emulator reproduces its shipped traces' completion times within 25 us
+ 2% (docs/emulator.md); twice that leaves room for a real target's scheduling noise."""

REAL_STACK_TOLERANCES = {
    "issue": Tolerance(1_000_000, 0.0),
    "return": Tolerance(500_000, 0.10),
    "completion": Tolerance(2_000_000, 0.25),
    "wire": Tolerance(1_000_000, 0.25),
}
"""The defaults when either trace ran on a real stack (the socket or agent target),
measured on the shared real captures replayed through the socket target: docs/targets.md,
"Timing tolerance"."""

REAL_STACK_TARGETS = ("socket", "agent")


def default_tolerances(*metadata: Mapping[str, Any]) -> tuple[str, dict[str, Tolerance]]:
    """The tolerances a diff starts from, and what they are for: ``real stack`` when either
    trace's metadata says it ran on one, else ``emulator``."""
    for m in metadata:
        target = m.get("target")
        if isinstance(target, Mapping) and target.get("kind") in REAL_STACK_TARGETS:
            return "real stack", dict(REAL_STACK_TOLERANCES)
    return "emulator", dict(DEFAULT_TOLERANCES)


_SPEC = re.compile(r"^(\w+)=(\d+(?:\.\d+)?)(ns|us|ms|s)(?:,(\d+(?:\.\d+)?)%)?$")


def parse_tolerance(text: str) -> tuple[str, Tolerance]:
    """``completion=50us,5%`` -> ("completion", Tolerance(50000, 0.05))."""
    m = _SPEC.match(text.strip())
    if not m:
        raise InputError(
            None, f"--tolerance {text!r}: expected METRIC=NUMBER(ns|us|ms|s)[,PERCENT%]"
        )
    metric, number, unit, percent = m.groups()
    if metric not in METRICS:
        raise InputError(
            None, f"--tolerance {text!r}: unknown metric {metric!r} (one of {', '.join(METRICS)})"
        )
    return metric, Tolerance(int(float(number) * UNITS[unit]), float(percent or 0) / 100)


def _duration(ns: int) -> str:
    for unit, scale in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if abs(ns) >= scale:
            return f"{ns / scale:g} {unit}"
    return f"{ns} ns"
