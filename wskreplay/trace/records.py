"""The trace's records: a socket, its streams and events, and the per-row views of the
call and segment tables (:class:`SendCall`, :class:`Segment`); plain data, no I/O.

Times are integer nanoseconds from the trace's zero (``Clock.zero_utc_ns``).
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise
from typing import Any

import numpy as np

from wskreplay.formats import ntstatus
from wskreplay.trace.inplace import StreamInFile


class Direction(IntEnum):
    """Which byte stream of a socket."""

    OUT = 0
    """Sent by the recorded driver and accepted by the transport."""
    IN = 1
    """Received from the peer."""
    UNSENT = 2
    """Bytes of calls the transport refused, in call order, kept so a replay can re-issue them."""


@dataclass(frozen=True)
class Clock:
    zero_utc_ns: int = 0
    """Absolute UTC time (ns since 1970) of the trace's time zero."""
    clock_type: str = "synthetic"
    """Where times came from: ``qpc``, ``system-time``, ``cycles``, ``pcap``, ``synthetic``."""
    qpc_frequency: int | None = None


@dataclass(frozen=True)
class Socket:
    id: int
    category: str = "connection"
    """``connection`` or ``stream`` (the WSK socket category)."""
    family: int = 2
    """AF_INET (2) or AF_INET6 (23)."""
    local_addr: str = ""
    local_port: int = 0
    remote_addr: str = ""
    remote_port: int = 0
    origin: str = "connect"
    """``connect``, ``socket-connect`` or ``accept``."""
    open_ns: int = 0
    close_ns: int | None = None
    handle: int = 0
    """The recorded native WSK_SOCKET pointer, for reference only."""


@dataclass(frozen=True)
class Event:
    time_ns: int
    kind: str
    """``disconnect``, ``close``, ``reset``, or a source-specific name."""
    socket: int | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendCall:
    seq: int
    socket: int
    issue_ns: int
    return_ns: int
    flags: int
    offset: int
    length: int
    control_info: bytes | None
    status: int
    completion_ns: int | None
    completion_status: int | None
    information: int | None
    irp: int
    irql: int | None
    stream_offset: int
    """Position of the call's bytes in its socket's OUT stream (UNSENT when refused)."""
    completion_unknown: bool = False
    """The recording could not see whether or when the IRP completed (a capture that ended
    first, or that never saw the peer's acknowledgements): no completion fields."""

    @property
    def completed(self) -> bool:
        return self.completion_ns is not None

    @property
    def status_name(self) -> str:
        return ntstatus.describe(self.status)

    @property
    def direction(self) -> Direction:
        return Direction.OUT if ntstatus.is_success(self.status) else Direction.UNSENT


@dataclass(frozen=True)
class Segment:
    socket: int
    time_ns: int
    direction: Direction
    seq: int
    """Stream offset of the segment's first byte in its direction (tshark's relative seq - 1)."""
    length: int
    flags: int
    ack: int
    """Stream offset in the other direction up to which bytes are acknowledged."""
    window: int
    """Advertised receive window in bytes (already scaled)."""


@dataclass(frozen=True)
class DigestPiece:
    """What a redacted trace keeps of ``length`` stream bytes at ``offset``: their sha256."""

    offset: int
    length: int
    sha256: bytes


StreamData = bytearray | mmap.mmap | StreamInFile
"""A stream's bytes: in memory; for a long stream read from a file, a mapped temporary
file (wskreplay/trace/spill.py); or left in the trace file (``streams="in-place"``). The
first two slice and take ``memoryview`` alike; :func:`wskreplay.trace.inplace.window`
reads a range of any of them."""


@dataclass
class Stream:
    """One direction of one socket: its bytes, stored once, with known gaps.

    ``data`` is ``length`` bytes long; bytes inside a gap are zero and carry no meaning.
    A redacted stream has ``data is None`` and ``digests`` covering what was present.
    """

    socket: int
    direction: Direction
    length: int = 0
    data: StreamData | None = field(default_factory=bytearray)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    digests: list[DigestPiece] | None = None

    @property
    def redacted(self) -> bool:
        return self.data is None

    @property
    def present_bytes(self) -> int:
        return self.length - sum(end - start for start, end in self.gaps)


def split_points(offset: int, length: int, boundaries: np.ndarray, max_piece: int) -> list[int]:
    """Cut points of [offset, offset+length) at ``boundaries`` and every ``max_piece`` bytes."""
    end = offset + length
    inside = boundaries[(boundaries > offset) & (boundaries < end)]
    cuts = sorted(set(inside.tolist()) | set(range(offset + max_piece, end, max_piece)))
    return [offset, *cuts, end]


def digest_pieces(
    offset: int, data: bytes | memoryview, boundaries: np.ndarray, max_piece: int
) -> list[DigestPiece]:
    """Redact ``data`` (stream bytes at ``offset``) into sha256 pieces.

    Pieces end at every call boundary inside the range, so two redacted traces of the same
    calls can still be compared call by call, and at most every ``max_piece`` bytes.
    """
    view = memoryview(data)
    points = split_points(offset, len(view), boundaries, max_piece)
    return [
        DigestPiece(a, b - a, hashlib.sha256(view[a - offset : b - offset]).digest())
        for a, b in pairwise(points)
    ]
