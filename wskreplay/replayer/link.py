"""The conditions of the socket target's link, and a sans-IO model of a link that applies
them to frames: the user-space stand-in for ``tc netem`` (the kernels here have none).

A :class:`LinkDirection` is told each frame as it arrives, with the time, and answers when
to deliver it, or None to drop it. Deterministic for a seed: the same frames at the same
times give the same fates. The forwarder process (:mod:`~wskreplay.replayer.link_forwarder`)
runs two of them between two TAP devices.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from wskreplay.errors import InputError

FRAME_OVERHEAD = 24
"""Bytes an Ethernet frame costs on the wire beyond what the TAP device hands over: the
preamble and start delimiter (8), the FCS (4) and the inter-frame gap (12)."""


@dataclass(frozen=True)
class LinkSpec:
    delay_ns: int = 0
    """Round-trip delay the link adds: half of it in each direction (so a capture shows
    RTTs of about ``delay``, as with netem's delay on one side)."""
    jitter_ns: int = 0
    """Each frame's one-way delay varies uniformly by up to this much either way."""
    loss: float = 0.0
    """Probability that a frame is dropped, each direction, independently per frame."""
    reorder: float = 0.0
    """Probability that a frame is held back by ``reorder_gap_ns`` more, letting later
    frames overtake it."""
    reorder_gap_ns: int = 1_000_000
    rate_bps: int | None = None
    """Bottleneck rate of each direction; None: no serialization delay."""
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return self == LinkSpec(seed=self.seed)

    def text(self) -> str:
        parts = [f"delay={self.delay_ns}ns"] if self.delay_ns else []
        if self.jitter_ns:
            parts.append(f"jitter={self.jitter_ns}ns")
        if self.loss:
            parts.append(f"loss={self.loss * 100:g}%")
        if self.reorder:
            parts.append(f"reorder={self.reorder * 100:g}%")
        if self.rate_bps:
            parts.append(f"rate={self.rate_bps}bit")
        parts.append(f"seed={self.seed}")
        return " ".join(parts)


_TIME = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_RATE = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
KEYS = ("delay", "jitter", "loss", "reorder", "reorder_gap", "rate", "seed")


def _number(text: str, units: dict[str, int], what: str, source: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", text.lower())
    if not m or m.group(2) not in units:
        raise InputError(source, f"{what}={text}: expected a number with one of {sorted(units)}")
    return round(float(m.group(1)) * units[m.group(2)])


def _fraction(text: str, what: str, source: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", text)
    if not m:
        raise InputError(source, f"{what}={text}: expected a percentage like 0.1%")
    value = float(m.group(1)) / (100 if m.group(2) else 1)
    if not 0 <= value < 1:
        raise InputError(source, f"{what}={text}: must be below 100%")
    return value


def parse_link(text: str, base: LinkSpec | None = None, source: str = "--link") -> LinkSpec:
    """``"delay=20ms loss=0.1% rate=100mbit"`` over ``base`` (keys: delay, jitter, loss,
    reorder, reorder_gap, rate, seed; ``rate=0`` or ``delay=0`` remove a condition)."""
    spec = base or LinkSpec()
    for item in text.replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise InputError(source, f"{item!r}: expected KEY=VALUE with KEY one of {KEYS}")
        if key in ("delay", "jitter", "reorder_gap"):
            spec = replace(spec, **{f"{key}_ns": _number(value, _TIME, key, source)})
        elif key in ("loss", "reorder"):
            spec = replace(spec, **{key: _fraction(value, key, source)})
        elif key == "rate":
            rate = _number(value, _RATE, key, source)
            spec = replace(spec, rate_bps=rate or None)
        else:
            if not value.isdigit():
                raise InputError(source, f"seed={value}: expected a non-negative integer")
            spec = replace(spec, seed=int(value))
    return spec


class LinkDirection:
    """One direction of the link."""

    def __init__(self, spec: LinkSpec, direction: int) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed * 2 + direction)
        self.free_at = 0
        self.one_way_ns = spec.delay_ns // 2
        self.forwarded = 0
        self.dropped = 0

    def admit(self, now_ns: int, size: int) -> int | None:
        """When a frame of ``size`` bytes arriving at ``now_ns`` leaves the far end, or
        None when the link loses it."""
        spec = self.spec
        if spec.loss and self.rng.random() < spec.loss:
            self.dropped += 1
            return None
        start = max(now_ns, self.free_at)
        if spec.rate_bps:
            start += (size + FRAME_OVERHEAD) * 8 * 1_000_000_000 // spec.rate_bps
        self.free_at = start
        due = start + self.one_way_ns
        if spec.jitter_ns:
            due += self.rng.randint(-spec.jitter_ns, spec.jitter_ns)
        if spec.reorder and self.rng.random() < spec.reorder:
            due += spec.reorder_gap_ns
        self.forwarded += 1
        return max(due, now_ns)
