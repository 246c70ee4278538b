"""The column tables of calls and segments: one numpy array per field, since a trace can
hold millions of each; rows are read as :class:`~wskreplay.trace.records.SendCall` and
:class:`~wskreplay.trace.records.Segment`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from typing import ClassVar, TypeVar

import numpy as np

from wskreplay.formats.wskt import CALL_COLUMNS, SEGMENT_COLUMNS
from wskreplay.trace.records import Direction, Segment, SendCall

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
