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
import struct
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
    port_delays: tuple[tuple[int, int], ...] = ()
    """``(port, delay_ns)`` pairs: the round trip of a TCP connection to or from the peer's
    ``port``, in place of ``delay_ns`` (the socket target gives each recorded socket its
    own recorded RTT; ``delay@PORT=`` in the text)."""

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
        parts += [f"delay@{port}={ns}ns" for port, ns in self.port_delays]
        return " ".join(parts)


_TIME = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_RATE = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
KEYS = ("delay", "jitter", "loss", "reorder", "reorder_gap", "rate", "seed")
"""The condition keys, besides ``delay@PORT``."""


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


NONE = "none"
"""The ``--link`` item that turns every condition off (the seed stays): the socket target's
link is then a plain veth pair, the kernel's own forwarding."""


def keys_given(text: str) -> set[str]:
    """The condition keys ``text`` sets (``delay@PORT`` keys as ``delay@``; ``none`` sets
    them all)."""
    keys = {item.partition("=")[0] for item in text.replace(",", " ").split()}
    if NONE in keys:
        keys |= {*KEYS, "delay@"}
    return {"delay@" if k.startswith("delay@") else k for k in keys}


def parse_link(text: str, base: LinkSpec | None = None, source: str = "--link") -> LinkSpec:
    """``"delay=20ms loss=0.1% rate=100mbit"`` over ``base`` (keys: delay, jitter, loss,
    reorder, reorder_gap, rate, seed, and ``delay@PORT`` for one connection's round trip;
    ``rate=0`` or ``delay=0`` remove a condition, ``none`` every one)."""
    spec = base or LinkSpec()
    for item in text.replace(",", " ").split():
        if item == NONE:
            spec = LinkSpec(seed=spec.seed)
            continue
        key, sep, value = item.partition("=")
        port = re.fullmatch(r"delay@(\d{1,5})", key)
        if not sep or (key not in KEYS and port is None):
            keys = (*KEYS, "delay@PORT")
            raise InputError(
                source, f"{item!r}: expected KEY=VALUE with KEY one of {keys}, or {NONE}"
            )
        if port is not None:
            number = int(port.group(1))
            if not 0 < number < 65536:
                raise InputError(source, f"{item!r}: the port must be 1 to 65535")
            delays = dict(spec.port_delays)
            delays[number] = _number(value, _TIME, key, source)
            spec = replace(spec, port_delays=tuple(sorted(delays.items())))
        elif key == "delay":
            spec = replace(spec, delay_ns=_number(value, _TIME, key, source))
        elif key == "jitter":
            spec = replace(spec, jitter_ns=_number(value, _TIME, key, source))
        elif key == "reorder_gap":
            spec = replace(spec, reorder_gap_ns=_number(value, _TIME, key, source))
        elif key == "loss":
            spec = replace(spec, loss=_fraction(value, key, source))
        elif key == "reorder":
            spec = replace(spec, reorder=_fraction(value, key, source))
        elif key == "rate":
            rate = _number(value, _RATE, key, source)
            spec = replace(spec, rate_bps=rate or None)
        else:
            if not value.isdigit():
                raise InputError(source, f"seed={value}: expected a non-negative integer")
            spec = replace(spec, seed=int(value))
    return spec


_ETHERNET = struct.Struct("!12xH")
_IPV4, _IPV6 = 0x0800, 0x86DD
_TCP = 6


def tcp_ports(frame: bytes | memoryview) -> tuple[int, int] | None:
    """The source and destination ports of an Ethernet frame carrying TCP over IPv4 or
    IPv6 (no extension headers: the socket target's kernels send none), or None."""
    if len(frame) < _ETHERNET.size:
        return None
    (ethertype,) = _ETHERNET.unpack_from(frame)
    if ethertype == _IPV4 and len(frame) >= 14 + 20 and frame[14 + 9] == _TCP:
        start = 14 + (frame[14] & 0x0F) * 4
    elif ethertype == _IPV6 and len(frame) >= 14 + 40 and frame[14 + 6] == _TCP:
        start = 14 + 40
    else:
        return None
    if len(frame) < start + 4:
        return None
    sport, dport = struct.unpack_from("!HH", frame, start)
    return sport, dport


class LinkDirection:
    """One direction of the link: ``direction`` 0 towards the peer (the peer's port is a
    TCP frame's destination), 1 from it (its source)."""

    def __init__(self, spec: LinkSpec, direction: int) -> None:
        self.rng = random.Random(spec.seed * 2 + direction)
        self.direction = direction
        self.free_at = 0
        self.forwarded = 0
        self.dropped = 0
        self.reconfigure(spec)

    def reconfigure(self, spec: LinkSpec) -> None:
        """New conditions from now on (the random sequence goes on)."""
        self.spec = spec
        self.one_way_ns = spec.delay_ns // 2
        self.port_one_way = {port: ns // 2 for port, ns in spec.port_delays}

    def admit(self, now_ns: int, size: int, ports: tuple[int, int] | None = None) -> int | None:
        """When a frame of ``size`` bytes arriving at ``now_ns`` leaves the far end, or
        None when the link loses it. ``ports``: its TCP ports (:func:`tcp_ports`), which
        choose a connection's own delay."""
        spec = self.spec
        if spec.loss and self.rng.random() < spec.loss:
            self.dropped += 1
            return None
        start = max(now_ns, self.free_at)
        if spec.rate_bps:
            start += (size + FRAME_OVERHEAD) * 8 * 1_000_000_000 // spec.rate_bps
        self.free_at = start
        one_way = self.one_way_ns
        if ports is not None and self.port_one_way:
            one_way = self.port_one_way.get(ports[1 - self.direction], one_way)
        due = start + one_way
        if spec.jitter_ns:
            due += self.rng.randint(-spec.jitter_ns, spec.jitter_ns)
        if spec.reorder and self.rng.random() < spec.reorder:
            due += spec.reorder_gap_ns
        self.forwarded += 1
        return max(due, now_ns)
