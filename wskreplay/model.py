"""The trace model: plain data, no I/O.

Times are integer nanoseconds from the trace's zero (``Clock.zero_utc_ns``). Calls and
segments, which can number in the millions, live in column tables (one numpy array per
field); :class:`SendCall` and :class:`Segment` are the friendly per-row views.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum
from itertools import pairwise
from typing import Any, ClassVar, TypeVar

import numpy as np

from wskreplay.formats import ntstatus
from wskreplay.formats.wskt import CALL_COLUMNS, SEGMENT_COLUMNS


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


TableT = TypeVar("TableT", bound="ColumnTable")


class ColumnTable:
    """Rows stored as one numpy array per field; rows read as friendly objects on demand."""

    SCHEMA: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        n = None
        cols: dict[str, np.ndarray] = {}
        for name, dtype in self.SCHEMA:
            arr = np.ascontiguousarray(columns[name], dtype=dtype)
            if arr.ndim != 1 or (n is not None and len(arr) != n):
                raise ValueError(f"column {name!r}: shape {arr.shape}, expected ({n},)")
            n = len(arr)
            cols[name] = arr
        self._cols = cols
        self._n = n or 0

    @classmethod
    def empty(cls: type[TableT]) -> TableT:
        return cls({name: np.empty(0, dtype) for name, dtype in cls.SCHEMA})

    @classmethod
    def concat(cls: type[TableT], tables: Iterable[TableT]) -> TableT:
        tables = list(tables)
        if not tables:
            return cls.empty()
        if len(tables) == 1:
            return tables[0]
        return cls._concat(tables)

    @classmethod
    def _concat(cls: type[TableT], tables: list[TableT]) -> TableT:
        return cls(
            {name: np.concatenate([t._cols[name] for t in tables]) for name, _ in cls.SCHEMA}
        )

    def column(self, name: str) -> np.ndarray:
        """One field of every row, as a read-only numpy array (no per-row objects)."""
        arr = self._cols[name].view()
        arr.flags.writeable = False
        return arr

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {name: self.column(name) for name, _ in self.SCHEMA}

    def __len__(self) -> int:
        return self._n

    def take(self: TableT, index: np.ndarray | slice) -> TableT:
        return type(self)({name: arr[index] for name, arr in self._cols.items()})

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return len(self) == len(other) and all(
            np.array_equal(self._cols[name], other._cols[name]) for name, _ in self.SCHEMA
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} rows={len(self)}>"


CALL_SCHEMA: tuple[tuple[str, str], ...] = tuple((c.name, c.dtype) for c in CALL_COLUMNS)
"""Call columns. Sentinels: ``completed`` is :data:`NOT_COMPLETED` (the IRP never completed
while recorded), :data:`COMPLETED` or :data:`COMPLETION_UNKNOWN` (the recording could not
see it); unless COMPLETED the completion fields are absent (0); ``irql == -1`` unknown;
``control_len == -1`` no ControlInfo (NULL), else its bytes are in the table's control
blob, concatenated in row order."""
NOT_COMPLETED, COMPLETED, COMPLETION_UNKNOWN = 0, 1, 2


class CallTable(ColumnTable):
    SCHEMA = CALL_SCHEMA

    def __init__(self, columns: Mapping[str, np.ndarray], control_blob: bytes = b"") -> None:
        super().__init__(columns)
        lens = self._cols["control_len"]
        if np.any(lens < -1):
            raise ValueError("control_len below -1")
        if int(np.maximum(lens, 0).sum()) != len(control_blob):
            raise ValueError(
                f"control blob holds {len(control_blob)} bytes, control_len sums to "
                f"{int(np.maximum(lens, 0).sum())}"
            )
        self.control_blob = bytes(control_blob)
        self._control_starts: np.ndarray | None = None

    @classmethod
    def _concat(cls, tables: list[CallTable]) -> CallTable:
        cols = {name: np.concatenate([t._cols[name] for t in tables]) for name, _ in cls.SCHEMA}
        return cls(cols, b"".join(t.control_blob for t in tables))

    def take(self, index: np.ndarray | slice) -> CallTable:
        lens = np.maximum(self._cols["control_len"], 0).astype(np.int64)
        starts = self._starts()
        if isinstance(index, slice):
            rows = range(self._n)[index]
            if rows.step == 1:
                lo = int(starts[rows.start]) if len(rows) else 0
                hi = int(starts[rows.stop - 1] + lens[rows.stop - 1]) if len(rows) else 0
                cols = {name: arr[index] for name, arr in self._cols.items()}
                return CallTable(cols, self.control_blob[lo:hi])
            index = np.arange(rows.start, rows.stop, rows.step)
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        sel_lens = lens[index]
        total = int(sel_lens.sum())
        if total:
            first = np.repeat(starts[index] - (np.cumsum(sel_lens) - sel_lens), sel_lens)
            blob = np.frombuffer(self.control_blob, np.uint8)[first + np.arange(total)].tobytes()
        else:
            blob = b""
        return CallTable({name: arr[index] for name, arr in self._cols.items()}, blob)

    def _starts(self) -> np.ndarray:
        if self._control_starts is None:
            lens = np.maximum(self._cols["control_len"], 0).astype(np.int64)
            self._control_starts = np.cumsum(lens) - lens
        return self._control_starts

    def control_info(self, i: int) -> bytes | None:
        n = int(self._cols["control_len"][i])
        if n < 0:
            return None
        start = int(self._starts()[i])
        return self.control_blob[start : start + n]

    def __eq__(self, other: object) -> bool:
        result = super().__eq__(other)
        if result is NotImplemented or not result:
            return result
        assert isinstance(other, CallTable)
        return self.control_blob == other.control_blob

    def row(self, i: int) -> SendCall:
        c = {name: arr[i].item() for name, arr in self._cols.items()}
        done = c["completed"] == COMPLETED
        return SendCall(
            seq=c["seq"],
            socket=c["socket"],
            issue_ns=c["issue_ns"],
            return_ns=c["return_ns"],
            flags=c["flags"],
            offset=c["offset"],
            length=c["length"],
            control_info=self.control_info(i),
            status=c["status"],
            completion_ns=c["completion_ns"] if done else None,
            completion_status=c["completion_status"] if done else None,
            information=c["information"] if done else None,
            irp=c["irp"],
            irql=None if c["irql"] < 0 else c["irql"],
            stream_offset=c["stream_offset"],
            completion_unknown=c["completed"] == COMPLETION_UNKNOWN,
        )

    def __getitem__(self, i: int) -> SendCall:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self.row(i)

    def __iter__(self) -> Iterator[SendCall]:
        for i in range(self._n):
            yield self.row(i)

    @classmethod
    def from_calls(cls, calls: Iterable[SendCall]) -> CallTable:
        calls = list(calls)
        cols: dict[str, list[int]] = {name: [] for name, _ in CALL_SCHEMA}
        blob = bytearray()
        for call in calls:
            done = call.completion_ns is not None
            values = {
                "seq": call.seq,
                "socket": call.socket,
                "issue_ns": call.issue_ns,
                "return_ns": call.return_ns,
                "flags": call.flags,
                "offset": call.offset,
                "length": call.length,
                "status": call.status,
                "completed": COMPLETION_UNKNOWN
                if call.completion_unknown
                else COMPLETED
                if done
                else NOT_COMPLETED,
                "completion_ns": call.completion_ns if done else 0,
                "completion_status": (call.completion_status or 0) if done else 0,
                "information": (call.information or 0) if done else 0,
                "irp": call.irp,
                "irql": -1 if call.irql is None else call.irql,
                "stream_offset": call.stream_offset,
                "control_len": -1 if call.control_info is None else len(call.control_info),
            }
            for name, value in values.items():
                cols[name].append(value)
            if call.control_info is not None:
                blob += call.control_info
        arrays = {name: np.array(cols[name], dtype=dtype) for name, dtype in CALL_SCHEMA}
        return cls(arrays, bytes(blob))


SEGMENT_SCHEMA: tuple[tuple[str, str], ...] = tuple((c.name, c.dtype) for c in SEGMENT_COLUMNS)


class SegmentTable(ColumnTable):
    SCHEMA = SEGMENT_SCHEMA

    def row(self, i: int) -> Segment:
        c = {name: arr[i].item() for name, arr in self._cols.items()}
        c["direction"] = Direction(c["direction"])
        return Segment(**c)

    def __getitem__(self, i: int) -> Segment:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self.row(i)

    def __iter__(self) -> Iterator[Segment]:
        for i in range(self._n):
            yield self.row(i)

    @classmethod
    def from_segments(cls, segments: Iterable[Segment]) -> SegmentTable:
        rows = [tuple(getattr(s, f.name) for f in fields(Segment)) for s in segments]
        names = [f.name for f in fields(Segment)]
        cols = {
            name: np.array([r[k] for r in rows], dtype=dict(SEGMENT_SCHEMA)[name])
            for k, name in enumerate(names)
        }
        return cls(cols)


@dataclass(frozen=True)
class DigestPiece:
    """What a redacted trace keeps of ``length`` stream bytes at ``offset``: their sha256."""

    offset: int
    length: int
    sha256: bytes


@dataclass
class Stream:
    """One direction of one socket: its bytes, stored once, with known gaps.

    ``data`` is ``length`` bytes long; bytes inside a gap are zero and carry no meaning.
    A redacted stream has ``data is None`` and ``digests`` covering what was present.
    """

    socket: int
    direction: Direction
    length: int = 0
    data: bytearray | mmap.mmap | None = field(default_factory=bytearray)
    """In memory, or for a long stream read from a file, a mapped temporary file
    (wskreplay/spill.py): both slice and ``memoryview`` alike."""
    gaps: list[tuple[int, int]] = field(default_factory=list)
    digests: list[DigestPiece] | None = None

    @property
    def redacted(self) -> bool:
        return self.data is None

    @property
    def present_bytes(self) -> int:
        return self.length - sum(end - start for start, end in self.gaps)


@dataclass
class Trace:
    metadata: dict[str, Any] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)
    sockets: dict[int, Socket] = field(default_factory=dict)
    calls: CallTable = field(default_factory=CallTable.empty)
    streams: dict[tuple[int, Direction], Stream] = field(default_factory=dict)
    segments: SegmentTable = field(default_factory=SegmentTable.empty)
    events: list[Event] = field(default_factory=list)

    @property
    def redacted(self) -> bool:
        return any(s.redacted for s in self.streams.values())

    def stream(self, socket: int, direction: Direction) -> Stream:
        key = (socket, Direction(direction))
        if key not in self.streams:
            self.streams[key] = Stream(socket, Direction(direction))
        return self.streams[key]

    def call_payload(self, i: int) -> bytes | None:
        """The bytes call ``i`` handed to WSK, or None when the trace does not hold them."""
        call = self.calls[i]
        stream = self.streams.get((call.socket, call.direction))
        if stream is None or stream.data is None:
            return None
        end = call.stream_offset + call.length
        if end > stream.length or any(s < end and call.stream_offset < e for s, e in stream.gaps):
            return None
        return bytes(stream.data[call.stream_offset : end])


def time_span_ns(trace: Trace, socket: int | None = None) -> tuple[int, int] | None:
    """The first and last moment the trace (or one of its sockets) shows: calls issued
    and returned, completions, segments and events; None when it shows nothing."""
    calls, seg = trace.calls, trace.segments
    mine = calls.column("socket") == socket if socket is not None else np.ones(len(calls), bool)
    times: list[int] = []
    if mine.any():
        times += [
            int(calls.column("issue_ns")[mine].min()),
            int(calls.column("return_ns")[mine].max()),
        ]
        done = mine & (calls.column("completed") == COMPLETED)
        if done.any():
            times.append(int(calls.column("completion_ns")[done].max()))
    if len(seg):
        column = seg.column("time_ns")
        if socket is not None:
            column = column[seg.column("socket") == socket]
        if len(column):
            times += [int(column.min()), int(column.max())]
    times += [e.time_ns for e in trace.events if socket is None or e.socket == socket]
    return (min(times), max(times)) if times else None


def awaited_calls(calls: CallTable) -> np.ndarray:
    """Per call, the call it waited for (index, or -1): the latest of its socket's calls
    that the recording completed at or before it was issued, itself excluded. A driver
    that issues a call after a completion was evidently waiting for it: the replay waits
    for the same completion, and diff measures the call's issue time from it."""
    n = len(calls)
    out = np.full(n, -1, np.int64)
    sockets = calls.column("socket")
    issue = calls.column("issue_ns").astype(np.int64)
    completion = calls.column("completion_ns").astype(np.int64)
    done = calls.column("completed") == COMPLETED
    for sid in np.unique(sockets).tolist():
        mine = np.flatnonzero(sockets == sid)
        finished = mine[done[mine]]
        if not len(finished):
            continue
        finished = finished[np.lexsort((finished, completion[finished]))]
        at = np.searchsorted(completion[finished], issue[mine], side="right") - 1
        awaited = np.where(at >= 0, finished[np.maximum(at, 0)], -1)
        out[mine] = np.where(awaited == mine, -1, awaited)
    return out


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
